"""``latentfit fit ssm``: prints the fitted model, writes the smoothed states, refuses bad
input with ``error: ...`` and exit code 2."""

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app
from tests.em.ssm.helpers import model_from, random_params


def test_fit_ssm_with_lengths_and_missing_values(tmp_path):
    Y, _ = model_from(random_params(seed=0, k=2, d=3)).sample(120, random_state=1)
    Y[5, 1] = np.nan
    Y[9] = np.nan
    data = tmp_path / "y.csv"
    np.savetxt(data, Y, delimiter=",", header="a,b,c", comments="")
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("70\n50\n")
    states, out = tmp_path / "states.csv", tmp_path / "m.safetensors"
    args = ["fit", "ssm", str(data), "-k", "2", "--lengths", str(lengths), "--n-iter", "5",
            "--states", str(states), "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 sequence(s)" in result.output and "4 missing value(s)" in result.output
    assert "transition matrix A" in result.output
    means = np.loadtxt(states, skiprows=1, delimiter=",")
    import latentfit

    model = latentfit.load(out)
    np.testing.assert_allclose(means, model.predict(Y, [70, 50]), rtol=1e-6, atol=1e-8)
    ll = float(result.output.split("log-likelihood: ")[1].split()[0])
    assert ll == np.float64(model.score(Y, [70, 50])).round(6)


def test_fit_ssm_errors(tmp_path):
    data = tmp_path / "x.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(30, 2)), delimiter=",")
    bad = tmp_path / "bad.txt"
    bad.write_text("10\n10\n")
    runner = CliRunner()
    result = runner.invoke(app, ["fit", "ssm", str(data), "-k", "2", "--lengths", str(bad)])
    assert result.exit_code == 2 and f"lengths sum to 20 but {data} has 30 rows" in result.output
    result = runner.invoke(app, ["fit", "ssm", str(data), "-k", "1", "--covariance", "tied"])
    assert result.exit_code == 2 and "--covariance must be full or diag" in result.output
    nan = tmp_path / "nan.csv"
    np.savetxt(nan, np.full((5, 2), np.nan), delimiter=",")
    result = runner.invoke(
        app, ["fit", "ssm", str(nan), "-k", "1", "--states", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "NaN everywhere" in result.output


def test_fit_ssm_fits_on_the_device_it_is_given(tmp_path, device):
    # fit ssm had no --device, while every other fit command with a torch model has one
    Y, _ = model_from(random_params(seed=0, k=1, d=2)).sample(80, random_state=1)
    data = tmp_path / "y.csv"
    np.savetxt(data, Y, delimiter=",", header="a,b", comments="")
    out = tmp_path / "m.lf"
    args = ["fit", "ssm", str(data), "-k", "1", "--n-iter", "3", "--out", str(out), "--quiet",
            "--states", str(tmp_path / "s.csv"), "--device", str(device), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    import json

    import latentfit

    model = latentfit.load(out, device=str(device))
    assert json.loads(result.stdout)["log_likelihood"] == pytest.approx(model.score(Y), rel=1e-9)
    res = CliRunner().invoke(app, [*args[:-3], "--device", "tpu", "--force"])
    assert res.exit_code == 2 and "--device" in res.output and "'tpu'" in res.output
