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
        (["--family", "gamma", "--column", "shifted"], "first value outside it is data["),
        (["--family", "gamma"], "choose one with --column"),
        (["--family", "zipf", "-c", "x"], "unknown family 'zipf'"),
        (["--family", "binomial", "-c", "counts"], "needs fixed="),
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
