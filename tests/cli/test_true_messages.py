"""What the command line says about DATA and its options is true of the file and of the
options it names: the file's column numbers, values each option accepts, the real limits."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".parquet"])
def test_a_bad_value_is_named_by_the_files_column_not_among_those_picked(
    tmp_path, monkeypatch, suffix
):
    monkeypatch.chdir(tmp_path)
    X = np.array([[1.0, 2.0, 0.5], [3.0, 4.0, np.nan], [4.0, 5.0, 1.5], [6.0, 7.0, 2.5]])
    path = tmp_path / f"nan{suffix}"
    if suffix == ".csv":
        np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
        picked, said = "c", "column 2 ('c')"
    elif suffix == ".npy":
        np.save(path, X)
        picked, said = "2", "column 2"
    else:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        pd.DataFrame(X, columns=["a", "b", "c"]).to_parquet(path)
        picked, said = "c", "column 2 ('c')"
    res = _run("fit", "dist", path, "--column", picked, "--family", "normal")
    assert res.exit_code == 2
    assert f"row 1, {said}" in res.output, res.output


@pytest.mark.parametrize("picked", [["a", "c"], ["0", "2"]])
def test_a_fits_message_about_a_column_names_the_files_column(tmp_path, monkeypatch, picked):
    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).normal(size=(30, 3))
    X[:, 2] = 5.0  # constant: the normal's covariance is singular
    path = tmp_path / "c.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    args = [a for c in picked for a in ("--column", c)]
    res = _run("fit", "dist", path, *args, "--family", "mvn")
    assert res.exit_code == 2
    assert f"column 2 ('c') of {path} is constant" in res.output, res.output


@pytest.mark.parametrize("level", ["1e-09", "1e-17", "0.3"])
def test_the_level_a_small_level_is_told_to_pass_is_one_level_accepts(tmp_path, monkeypatch, level):
    import re

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "g.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(50, 1)), header="x", comments="")
    res = _run("fit", "dist", path, "--family", "normal", "--level", level)
    assert res.exit_code == 0, res.output
    suggested = re.search(r"pass --level (\S+)", res.output)[1]
    # the level statsmodels' alpha means, as near as float64 holds below 1
    assert float(suggested) == pytest.approx(1 - float(level), abs=2**-53)
    res = _run("fit", "dist", path, "--family", "normal", "--level", suggested)
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output


def test_fit_arhmm_takes_every_finite_ridge(tmp_path, monkeypatch):
    """--ridge is refused as "must be a finite number >= 0": 1e300 is one, and the ridge M-step
    ``W = C (G + ridge I)^-1`` holds for it, giving weights of about |C| / ridge."""
    import latentfit

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.csv"
    X = np.random.default_rng(0).normal(size=(60, 2))
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    res = _run("fit", "arhmm", path, "-k", "2", "--ridge", "1e300", "--out", "a.st")
    assert res.exit_code == 0, res.output
    model = latentfit.load("a.st")
    assert np.isfinite(model.lower_bound_)
    # C sums at most 60 products of values below 5 in magnitude: |W| <= 60 * 25 / 1e300
    assert np.abs(model.coefs_).max() <= 60 * 25 / 1e300


def test_online_em_too_few_rows_to_start_names_the_first_chunk_not_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "good.csv"
    X = np.random.default_rng(0).normal(size=(40, 2))
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    online = ["--online", "--burn-in", "0", "--mstep-every", "1", "--out", "o.st"]
    res = _run("fit", "hmm", path, "-k", "3", "--chunk-rows", "2", *online)
    assert res.exit_code == 2
    assert f"{path} has 2 rows" not in res.output  # it has 40
    assert "--chunk-rows 2 gives it 2 rows, fewer than -k 3" in res.output, res.output
    res = _run("fit", "hmm", path, "-k", "3", "--chunk-rows", "3", *online, "--force")
    assert res.exit_code == 0, res.output  # the advice given is enough


@pytest.mark.parametrize(
    "command",
    [
        ["select", "bernoulli", "-k", "1-2"],
        ["select", "poisson", "-k", "1-2"],
        ["fit", "hmm", "-k", "2", "--emission", "poisson"],
        ["fit", "hsmm", "-k", "2", "--emission", "poisson"],
        ["fit", "hmm", "-k", "2", "--variational"],
    ],
)
def test_a_nan_is_never_told_to_take_a_missing_that_the_model_refuses(
    tmp_path, monkeypatch, command
):
    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).poisson(1, size=(40, 2)).astype(float)
    X[3, 1] = np.nan
    path = tmp_path / "cnt.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    res = _run(*command[:2], path, *command[2:])
    assert res.exit_code == 2
    assert "row 3, column 1 ('b')" in res.output
    assert "pass --missing marginalize" not in res.output, res.output
    # what the command did say to pass is taken (and refused) as it says
    if command[0] == "select":
        assert "use latentfit select gmm, select fa or select ppca with --missing" in res.output
    elif "--variational" in command:
        assert "--missing marginalize and without --variational" in res.output, res.output
    else:
        assert "--emission gaussian --missing marginalize" in res.output, res.output
    res = _run(*command[:2], path, *command[2:], "--missing", "marginalize")
    assert res.exit_code == 2
    assert "--missing marginalize" in res.output  # refused: the advice was needed


def test_a_degenerate_ssm_fit_says_what_happened_not_a_fitted_attributes_name(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    rng.normal(size=30)
    x = rng.normal(size=30)
    X = np.c_[x, 2 * x, -x]  # columns that are multiples of one another
    args = ["-k", "2", "--covariance", "diag", "--n-iter", "30", "--quiet"]
    np.savetxt("big.csv", 1e120 * X, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    res = _run("fit", "ssm", "big.csv", *args, "--out", "big.st")
    assert res.exit_code == 2
    assert "observation_covariance_" not in res.output, res.output
    top = np.unravel_index(np.abs(X).argmax(), X.shape)
    assert "the fit of big.csv ended degenerate" in res.output, res.output
    assert f"at row {top[0]}, column {top[1]}). Rescale the data" in res.output, res.output
    # the advice is enough: the same rows at the scale of 1 fit
    np.savetxt("small.csv", X, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    res = _run("fit", "ssm", "small.csv", *args, "--out", "small.st")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("command", [["fit", "fa"], ["fit", "ppca"]])
def test_a_warning_about_a_column_names_the_files_column(tmp_path, monkeypatch, command):
    import re

    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).normal(size=(60, 3))
    X[:, 2] = 5.0  # constant: its noise variance ends at the floor
    path = tmp_path / "c.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    res = _run(*command, path, "--columns", "b,c", "-k", "1")
    assert res.exit_code == 0, res.output
    warning = next(line for line in res.output.splitlines() if line.startswith("warning:"))
    assert "column 2 ('c')" in warning, warning
    # every column it names is the file's, by its position there and its name
    assert re.findall(r"column \d+ \('(\w)'\)", warning) in (["c"], ["b", "c"]), warning
    assert not re.findall(r"column \d+(?! \(')", warning), warning


@pytest.mark.parametrize(
    "family, params, values",
    [
        ("normal", ["loc", "scale"], lambda rng: rng.normal(size=40)),
        ("poisson", ["rate"], lambda rng: rng.poisson(3.0, size=40)),
        ("bernoulli", ["probs"], lambda rng: rng.integers(0, 2, size=40)),
    ],
)
def test_sample_without_a_prior_suggests_priors_for_the_familys_own_parameters(
    tmp_path, monkeypatch, family, params, values
):
    import re

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.csv"
    np.savetxt(path, values(np.random.default_rng(0)), header="x", comments="")
    res = _run("fit", "dist", path, "--family", family, "--sample", "nuts")
    assert res.exit_code == 2
    suggested = re.search(r"\(e\.g\. ((?:--prior \S+ ?)+)\)", res.output)
    assert suggested is not None, res.output
    priors = suggested[1].split()
    assert [p.partition("=")[0] for p in priors[1::2]] == params, res.output
    # each suggested prior is one the option takes for that parameter: the command runs
    short = ["--chains", "1", "--draws", "20", "--warmup", "20", "--seed", "0"]
    res = _run("fit", "dist", path, "--family", family, "--sample", "nuts", *priors, *short)
    assert res.exit_code == 0, res.output
