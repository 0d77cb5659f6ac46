"""`latentfit fit dist DATA --family NAME` end to end on small files."""

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "x.csv"
    x = rng.gamma(2.0, 1.5, 200)
    counts = rng.binomial(10, 0.3, 200)
    np.savetxt(
        path,
        np.column_stack([x, counts, x - 5]),
        delimiter=",",
        header="x,counts,shifted",
        comments="",
    )
    return path, x, counts


def test_fit_gamma_prints_the_summary(data_csv):
    path, x, _ = data_csv
    res = runner.invoke(app, ["fit", "dist", str(path), "--family", "gamma", "--column", "x"])
    assert res.exit_code == 0, res.output
    a, _, scale = stats.gamma.fit(x, floc=0)
    assert "MLE results: Gamma" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("concentration"))
    assert float(row.split()[1]) == pytest.approx(a, abs=1e-4)
    row = next(line for line in res.output.splitlines() if line.startswith("rate"))
    assert float(row.split()[1]) == pytest.approx(1 / scale, abs=1e-4)
    assert "[0.025" in res.output and "AIC" in res.output


def test_fixed_parameters_and_options(data_csv):
    path, _, counts = data_csv
    res = runner.invoke(
        app,
        [
            "fit",
            "dist",
            str(path),
            "-f",
            "binomial",
            "-c",
            "counts",
            "--fixed",
            "total_count=10",
            "--cov",
            "sandwich",
            "--level",
            "0.9",
        ],
    )
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("probs"))
    assert float(row.split()[1]) == pytest.approx(counts.mean() / 10, abs=1e-4)
    assert "sandwich" in res.output and "[0.05" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--family", "gamma", "--column", "shifted"], "first value outside it is "),
        (["--family", "gamma"], "choose one with --column"),
        (["--family", "zipf", "-c", "x"], "unknown family 'zipf'"),
        (["--family", "binomial", "-c", "counts"], "needs --fixed total_count=NUMBER"),
        (["--family", "binomial", "-c", "counts", "--fixed", "n"], "NAME=NUMBER"),
        (["--family", "weibull", "-c", "x", "--cov", "expected"], "not available"),
        (["--family", "gamma", "-c", "nope"], "no column 'nope'"),
    ],
)
def test_errors_are_reported_without_traceback(data_csv, args, message):
    path, _, _ = data_csv
    res = runner.invoke(app, ["fit", "dist", str(path), *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_a_row_of_the_data_is_named_as_the_file_s_row(tmp_path, monkeypatch):
    """fit dist named the data's rows as fit_mle names its argument's (data[3] = -1.0);
    on the command line they are the file's rows."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("x,y\n1.0,2\n3,4\n2.0,5\n-1,6\n")
    (tmp_path / "c.csv").write_text("x\n3\n3\n3\n")
    res = runner.invoke(app, ["fit", "dist", "d.csv", "-f", "gamma", "-c", "x"])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "the first value outside it is -1.0 (row 3 of d.csv)" in said, said
    res = runner.invoke(app, ["fit", "dist", "c.csv", "-f", "normal"])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "every row of c.csv is the same (3)" in said, said
    assert "data[" not in said and "of data " not in said, said


def test_a_prior_on_some_parameters_samples_as_the_api_does(tmp_path, monkeypatch):
    """`--sample nuts` refused a --prior on only some parameters, while
    fit_map(...).sample_posterior() samples such a posterior with a flat prior on the others.
    Both now draw the same chains, and match the posterior computed by quadrature."""
    import json

    import torch.distributions as D
    from scipy import integrate

    from latentfit import fit_map

    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(1).normal(2.0, 1.5, size=20)
    np.savetxt("x.csv", x, header="x", comments="")
    opts = ["--sample", "nuts", "--chains", "2", "--draws", "300", "--warmup", "200"]
    res = runner.invoke(
        app, ["fit", "dist", "x.csv", "-f", "normal", "--prior", "scale=gamma:2,1", *opts, "--json"]
    )
    assert res.exit_code == 0, res.output
    post = json.loads(res.stdout)["posterior"]
    assert post["flat_prior"] == ["loc"]
    fit = fit_map("normal", x, {"scale": D.Gamma(2.0, 1.0)})
    api = fit.sample_posterior(2, 200, 300, generator=0, progress_bar=False, compile="replay")
    want = api.summary()
    for name in ("loc", "scale"):
        assert post["summary"][name]["mean"] == pytest.approx(want.loc[name, "mean"], rel=1e-12)
    # the posterior with a flat prior on loc, integrated over loc in closed form:
    # p(scale | x) ∝ Gamma(scale; 2, 1) scale^-(n-1) exp(-S / (2 scale²)), E[loc | x] = mean(x)
    n, S = x.size, float(((x - x.mean()) ** 2).sum())

    def moment(k):
        f = lambda s: s**k * s * np.exp(-s) * s ** -(n - 1) * np.exp(-S / (2 * s * s))
        return integrate.quad(f, 0, np.inf)[0]

    exact = {"loc": x.mean(), "scale": moment(1) / moment(0)}
    for name in ("loc", "scale"):
        got = post["summary"][name]
        # Monte Carlo error: within 4 of the chains' own standard errors of the mean
        assert abs(got["mean"] - exact[name]) < 4 * got["mcse_mean"] + 1e-3, (name, got, exact)
