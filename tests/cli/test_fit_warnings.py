"""The warnings of a command's fit reach the user; only those that the command's own report
says in its words are left out."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import latentfit.em.base
from latentfit.cli import app


@pytest.mark.parametrize(
    "command", [["fit", "hmm"], ["fit", "hsmm"], ["fit", "arhmm"], ["fit", "ssm"]]
)
def test_a_sequence_fit_shows_its_warnings_but_not_the_one_its_report_replaces(
    command, tmp_path, monkeypatch
):
    """fit hmm/hsmm/arhmm/ssm ignored every UserWarning of the fit to leave out the EM
    driver's ConvergenceWarning, which their "NOT converged" line says: any other UserWarning
    of the fit (here one the EM driver is made to give) was dropped with it."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savetxt("x.csv", rng.normal(size=(60, 2)), delimiter=",")
    run_em = latentfit.em.base.run_em

    def warning_run_em(*args, **kwargs):
        warnings.warn("X has a feature the fit cannot use; rescale it", UserWarning, stacklevel=2)
        return run_em(*args, **kwargs)

    monkeypatch.setattr(latentfit.em.base, "run_em", warning_run_em)
    k = ["-k", "1"] if command[1] == "ssm" else ["-k", "2"]
    res = CliRunner().invoke(app, [*command, "x.csv", *k, "--n-iter", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning: x.csv has a feature the fit cannot use; rescale it" in text, text
    assert "NOT converged (try --n-iter or --tol)" in text, text
    assert "did not converge" not in text, text  # said once, by the report's line


def test_fit_dist_shows_the_warning_of_a_level_under_one_half(tmp_path, monkeypatch):
    """fit dist showed only the RuntimeWarnings of its fit: --level 0.05 (a 5% interval, a
    level mistaken for statsmodels' alpha) printed 5% intervals without the library's
    UserWarning that says so. Said once, though both the table and the rows ask for them."""
    monkeypatch.chdir(tmp_path)
    np.savetxt("n.csv", np.random.default_rng(0).normal(size=100))
    res = CliRunner().invoke(app, ["fit", "dist", "n.csv", "--family", "normal", "--level", "0.05"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert text.count("warning: --level 0.05 asks for a 5% interval.") == 1, text
    assert "conf_int(0.05) pass --level 0.95" in text, text


def test_select_says_each_failed_fit_in_full_below_its_table(tmp_path, monkeypatch):
    """select cut each failed fit's error to 160 characters in its table and in --json, which
    lost the remedy at the end of the message; the table row now shows its start and a
    number, the message follows the table in full, and --json holds it whole."""
    import json

    monkeypatch.chdir(tmp_path)
    np.savetxt("square.csv", np.random.default_rng(0).normal(size=(3, 3)), delimiter=",")
    args = ["select", "fa", "square.csv", "-k", "1-3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    rows = [line for line in lines if line.startswith(("fa K=2 ", "fa K=3 "))]
    assert [len(row) < 120 and "failed [" in row for row in rows] == [True, True], lines
    text = " ".join(res.output.split())
    for k in (2, 3):
        assert (
            f"[{k - 1}] fa K={k} failed: DataError: square.csv has 3 row(s) of 3 column(s)"
        ) in text, text
        assert f"give at least {k + 2} rows, or a smaller -k" in text, text
    doc = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    errors = [r["error"] for r in doc["rows"][1:]]
    assert [
        e.endswith(f"give at least {k + 2} rows, or a smaller -k")
        for e, k in zip(errors, (2, 3), strict=True)
    ] == [True, True], errors


def test_select_shows_each_warning_of_its_fits_once(tmp_path, monkeypatch):
    """select recorded the warnings of its fits and kept only their class names (in --json):
    a column of sd 1e-4 beside one of sd 1, whose variances every fit took from reg_covar
    and not from the data, was said nowhere in the text."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), rng.normal(size=300) * 1e-4]  # column 1: under reg_covar
    np.savetxt("s.csv", X, delimiter=",")
    res = CliRunner().invoke(app, ["select", "gmm", "s.csv", "-k", "1-2", "--covariance", "diag"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    said = (
        "warning: GaussianMixture: reg_covar=1e-06 is 105 times the variance of column 1 of "
        "s.csv (9.51e-09), so the variances fitted there are reg_covar's, not the data's."
    )
    assert text.count(said) == 1, text
    assert "(below 9.51e-11) (in every fit)" in text, text


def test_bgmm_shows_its_fit_s_warnings_before_the_error_that_ends_it(tmp_path, monkeypatch):
    """fit bgmm on 3 rows whose third column varies by 1e-4: the fit warns that reg_covar
    swamps that column's variance, then refuses the singular covariance prior. The warning,
    which says which column is the cause, was dropped with the failure."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(3, 2)), 1e-4 * rng.normal(size=3)]
    np.savetxt("sq.csv", X, delimiter=",")
    res = CliRunner().invoke(app, ["fit", "bgmm", "sq.csv", "-k", "1", "--quiet"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "warning: BayesianGaussianMixture: --reg-covar 1e-06 is 131 times the variance of " in (
        text
    ), text
    assert "column 2 of sq.csv" in text, text
    assert text.index("warning:") < text.index("error: the rows of sq.csv"), text


def test_fit_dist_shows_its_fit_s_warnings_before_the_error_that_ends_it(tmp_path, monkeypatch):
    """A warning of fit dist's fit followed by an error (here a fit made to warn, then
    fail) was dropped with the failure; it is shown first, once."""
    import latentfit.estimate

    monkeypatch.chdir(tmp_path)
    np.savetxt("n.csv", np.random.default_rng(0).normal(size=20))

    def warning_fit_mle(*args, **kwargs):
        for _ in range(2):
            warnings.warn("the Normal fit met a flat stretch", RuntimeWarning, stacklevel=2)
        raise latentfit.errors.DataError("the Normal fit failed")

    monkeypatch.setattr(latentfit.estimate, "fit_mle", warning_fit_mle)
    res = CliRunner().invoke(app, ["fit", "dist", "n.csv", "-f", "normal"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert text.count("warning: the Normal fit met a flat stretch") == 1, text
    assert text.index("warning:") < text.index("error: the Normal fit failed"), text


def test_fit_arhmm_names_a_collapsed_state_in_the_commands_words(tmp_path, monkeypatch):
    # Found by the property hunt: the new warning of an autoregressive state at its noise
    # floor spoke of min_covar, which the command has no option for; it names the floor and
    # the command's remedy (the data) instead.
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = [1.0]
    for b in range(20):
        for _ in range(50):
            x.append(0.5 * x[-1] + rng.normal() if b % 2 == 0 else 0.9 * x[-1])
    np.savetxt("ar.csv", np.array(x)[:, None], delimiter=",")
    res = CliRunner().invoke(app, ["fit", "arhmm", "ar.csv", "-k", "2", "--seed", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "has its noise variance in feature 0 at the variance floor" in text, text
    assert "smaller than the floor (then rescale ar.csv, e.g. standardise its columns)" in text
    assert "min_covar" not in text and "degenerate_components_" not in text, text


@pytest.mark.parametrize(
    "command",
    [["fit", "gmm"], ["fit", "hmm"], ["fit", "hsmm"], ["fit", "arhmm"], ["fit", "ssm"],
     ["select", "gmm"]],
)  # fmt: skip
def test_a_constant_column_is_named_in_the_files_words(command, tmp_path, monkeypatch):
    """A column of one value gets the variance floor as its variance (ConstantColumnWarning):
    the command names it by its position and header in the file, among the picked columns."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(size=30), rng.normal(size=30) + 5]
    data = np.column_stack([x, np.full(60, 7.0), x**2])
    np.savetxt("x.csv", data, delimiter=",", header="a,b,c", comments="")
    k = ["-k", "1"] if command[1] == "ssm" else ["-k", "1-2" if command[0] == "select" else "2"]
    res = CliRunner().invoke(app, [*command, "x.csv", *k, "--columns", "b,a", "--quiet"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "column 1 ('b') of x.csv holds one value (7) in every row" in text, text
    assert "Drop the column" in text, text


def test_fit_vae_names_a_constant_column_of_its_training_rows(tmp_path, monkeypatch):
    """A Gaussian decoder's variance falls to its floor on a constant column: the warning
    names the training rows of DATA and leaves out the settings only Python has."""
    monkeypatch.chdir(tmp_path)
    data = np.random.default_rng(0).normal(size=(60, 3))
    data[:, 1] = 7.0
    np.savetxt("x.csv", data, delimiter=",")
    argv = ["fit", "vae", "--dataset", "x.csv", "--likelihood", "gaussian", "--epochs", "1",
            "--hidden", "8", "--latent", "1", "--quiet", "--out", "v.lf"]  # fmt: skip
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning: column 1 (7) of the training rows of the x.csv data set holds one" in text
    assert "Drop the column(s)" in text and "min_logvar" not in text and "fixed" not in text
