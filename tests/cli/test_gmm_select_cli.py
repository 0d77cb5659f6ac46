"""`latentfit fit gmm` and `latentfit select FAMILY` end to end on small files."""

import numpy as np
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app

runner = CliRunner()


def test_fit_gmm_prints_parameters_and_saves(faithful_csv, tmp_path):
    path, X = faithful_csv
    out = tmp_path / "model.lf"
    res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    model = latentfit.load(out)
    ref = latentfit.GaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose(model.means_, ref.means_, rtol=1e-12)
    for text in ("weights:", "means:", "covariances (full):", "EM iterations:", "converged"):
        assert text in res.output
    assert f"log-likelihood: {ref.score(X) * len(X):.6f}" in res.output
    assert f"BIC: {ref.bic(X):.4f}" in res.output


def test_fit_gmm_with_missing_values(tmp_path, faithful_csv):
    _, X = faithful_csv
    X = X.copy()
    X[::9, 1] = np.nan
    path = tmp_path / "gaps.csv"
    np.savetxt(path, X, delimiter=",")
    res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--quiet"])
    assert res.exit_code == 2 and "--missing marginalize" in res.output
    res = runner.invoke(
        app, ["fit", "gmm", str(path), "-k", "2", "--missing", "marginalize", "--quiet"]
    )
    assert res.exit_code == 0, res.output


def test_fit_gmm_bad_options(faithful_csv):
    path, _ = faithful_csv
    res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--covariance", "round"])
    assert res.exit_code == 2 and "--covariance must be one of" in res.output
    res = runner.invoke(app, ["fit", "gmm", str(path) + ".missing", "-k", "2"])
    assert res.exit_code == 2 and "no data file" in res.output


def test_select_gmm_table_and_plot(faithful_csv, tmp_path):
    path, _ = faithful_csv
    fig = tmp_path / "bic.png"
    res = runner.invoke(
        app,
        ["select", "gmm", str(path), "-k", "1-3", "--covariance", "full,diag", "--plot", str(fig)],
    )
    assert res.exit_code == 0, res.output
    assert "BIC (lower is better" in res.output
    assert "best by BIC: full K=2" in res.output
    assert fig.exists() and fig.stat().st_size > 1000


def test_select_other_families(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.poisson([[2.0, 9.0]] * 100 + [[8.0, 1.0]] * 100).astype(float)
    path = tmp_path / "counts.npy"
    np.save(path, X)
    res = runner.invoke(app, ["select", "poisson", str(path), "-k", "1-3"])
    assert res.exit_code == 0, res.output
    assert "best by BIC: poisson K=2" in res.output
    # counts are no data for a Bernoulli mixture: every fit refuses them, said as the model says it
    res = runner.invoke(app, ["select", "bernoulli", str(path), "-k", "1-2"])
    assert res.exit_code == 2 and "needs binary data" in res.output
    res = runner.invoke(app, ["select", "poisson", str(path), "-k", "0-2"])
    assert res.exit_code == 2 and "at least 1" in res.output


def test_select_says_the_criterion_is_na_not_that_every_fit_failed(tmp_path):
    # -k 40 --cv 2 on 40 rows fitted K=40 (the held-out folds of 20 rows failed) and said
    # "every fit failed"; here K=21 spherical on 40 rows of 3 columns (104 parameters for
    # 120 values: ranked, where K=40 of 2 columns is refused for its parameters)
    path = tmp_path / "g.csv"
    X = np.random.default_rng(0).normal(size=(40, 3))
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    args = ["select", "gmm", str(path), "-k", "21", "--covariance", "spherical", "--cv", "2"]
    args += ["--criterion", "heldout"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "no fit has a heldout score" in res.output
    assert "every fit failed" not in res.output and "Traceback" not in res.output


def test_select_cv_with_a_code_a_training_fold_never_shows_is_refused(tmp_path, monkeypatch):
    # each candidate's held-out log-likelihood was finite (log 0 clamped to about -708)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, (120, 4)).astype(float)
    X[7, 2] = 5
    np.savetxt("codes.csv", X, delimiter=",", fmt="%d")
    res = runner.invoke(app, ["select", "categorical", "codes.csv", "-k", "1-2", "--cv", "3"])
    assert res.exit_code == 2, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("error:"))
    assert "row 7 of codes.csv holds 5 in column 2" in line
    assert "fold 1 of 3" in line and "(--criterion bic, aic or icl)" in line
    assert "prob_concentration" not in res.output  # not an option of the command
    res = runner.invoke(app, ["select", "categorical", "codes.csv", "-k", "1-2"])
    assert res.exit_code == 0, res.output


def test_select_quiet_leaves_out_the_progress_bar(tmp_path, monkeypatch):
    # every fit command took --quiet; select and select hmm had none, so scripts and logs got
    # the progress bar's lines on standard error with no way to turn them off
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savetxt("x.csv", np.r_[rng.normal(0, 1, (40, 2)), rng.normal(6, 1, (40, 2))], delimiter=",")
    for command in (["select", "gmm", "x.csv", "--covariance", "diag"], ["select", "hmm", "x.csv"]):
        loud = runner.invoke(app, [*command, "-k", "1-2", "--max-iter", "20"])
        quiet = runner.invoke(app, [*command, "-k", "1-2", "--max-iter", "20", "--quiet"])
        assert loud.exit_code == quiet.exit_code == 0, (loud.output, quiet.output)
        assert f"{command[0]} " in loud.stderr  # the bar, named "select gmm", "select ..."
        assert "it/s" in loud.stderr and "it/s" not in quiet.stderr, quiet.stderr
        assert quiet.stdout == loud.stdout  # the same table
