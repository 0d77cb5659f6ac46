"""select_model: criteria equal the models' own, the best is marked, failures never abort."""

import math

import numpy as np
import pytest

from latentfit import BernoulliMixture, GaussianMixture, select_model
from latentfit.datasets import load_faithful
from latentfit.errors import DataError
from latentfit.select import SelectionResult


@pytest.fixture(scope="module")
def faithful():
    return load_faithful().data.numpy()


def test_gmm_sweep_table_and_criteria(faithful):
    X = faithful
    res = select_model(X, n_components=[1, 2, 3], covariance_types=["full", "diag"])
    assert len(res.rows) == 6 and all(r["error"] is None for r in res.rows)
    n = len(X)
    for row, model in zip(res.rows, res.models, strict=True):
        assert math.isclose(row["bic"], model.bic(X), rel_tol=1e-10)
        assert math.isclose(row["aic"], model.aic(X), rel_tol=1e-10)
        # ICL = BIC − 2 Σ log max_k p(k | x), computed here from predict_proba.
        icl = model.bic(X) - 2 * np.log(model.predict_proba(X).max(1)).sum()
        assert math.isclose(row["icl"], icl, rel_tol=1e-10)
        assert row["icl"] >= row["bic"] - 1e-9
        assert math.isclose(row["loglik"], model.score(X) * n, rel_tol=1e-10)
    best = res.best_row_
    assert best["bic"] == min(r["bic"] for r in res.rows)
    assert (best["n_components"], best["variant"]) == (2, "full")  # the known answer for faithful
    table = res.table()
    lines = table.splitlines()
    assert "full" in lines[1] and "diag" in lines[1]
    assert sum("*" in line for line in lines[2:]) == 1
    assert next(line for line in lines if line.strip().startswith("2")).count("*") == 1
    assert "best by BIC: full K=2" in res.summary()
    fig = res.plot()
    assert len(fig.axes[0].lines) == 3  # two covariance types and the best point


def test_failed_fits_are_reported_and_never_abort(faithful):
    X = faithful[:6]
    res = select_model(X, n_components=[1, 2, 8], covariance_types=["full"])
    failed = [r for r in res.rows if r["error"]]
    assert [r["n_components"] for r in failed] == [8]  # more components than samples
    assert "n_samples" in failed[0]["error"]
    assert math.isnan(failed[0]["bic"])
    assert res.models[2] is None
    assert "NA" in res.table()
    assert res.best_row_["n_components"] in (1, 2)
    assert "1 of 3 fits failed" in res.summary()


def test_all_failing_sweep_has_no_best():
    # every fit collapses onto the two distinct points (degenerate, shown as NA): a result,
    # no best
    data = np.r_[np.zeros((30, 2)), [[1.0, 1.0]]]
    res = select_model(data, n_components=[3, 4], covariance_types=["full"])
    assert res.best_index() is None and res.best_model_ is None
    # no fit can start (more components than rows): the model's own error, not a result
    with pytest.raises(DataError, match="n_samples >= n_components"):
        select_model(np.zeros((3, 2)), n_components=[5], covariance_types=["full"])


def test_candidate_list_and_other_families():
    rng = np.random.default_rng(0)
    mu = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.9, 0.7]])
    z = rng.integers(0, 2, 600)
    X = (rng.uniform(size=(600, 4)) < mu[z]).astype(float)
    res = select_model(X, family="bernoulli", n_components=[1, 2, 3], criterion="icl")
    assert res.best_row_["n_components"] == 2
    assert all(r["variant"] == "bernoulli" for r in res.rows)
    cands = [("two", BernoulliMixture(2, random_state=0)), GaussianMixture(2, random_state=0)]
    res = select_model(X, candidates=cands)
    assert [r["label"] for r in res.rows] == ["two", "GaussianMixture K=2"]
    res = select_model(X[:, :3] + rng.normal(size=(600, 3)), family="ppca", n_components=[1, 2])
    assert res.rows[0]["icl"] is None and res.rows[0]["error"] is None


def test_cross_validated_heldout_loglik(faithful):
    X = faithful
    res = select_model(
        X, n_components=[1, 2], covariance_types=["full"], cv=3, criterion="cv_loglik"
    )
    from sklearn.model_selection import KFold

    total = 0.0
    for train, test in KFold(3, shuffle=True, random_state=0).split(X):
        m = GaussianMixture(2, random_state=0).fit(X[train])
        total += m.score_samples(X[test]).sum()
    np.testing.assert_allclose(res.rows[1]["cv_loglik"], total / len(X), rtol=1e-10)
    assert res.best_row_["n_components"] == 2
    with pytest.raises(ValueError, match="needs cv"):
        select_model(X, criterion="cv_loglik")
    with pytest.raises(ValueError, match="criterion must be"):
        select_model(X, criterion="mdl")


def test_result_from_rows_only():
    rows = [
        {"label": "a", "n_components": 1, "variant": "v", "bic": 3.0, "error": None},
        {"label": "b", "n_components": 2, "variant": "v", "bic": float("nan"), "error": "x"},
    ]
    res = SelectionResult(rows, [None, None])
    assert res.best_index() == 0
    assert "NA" in res.table() and "3.00*" in res.table()


def test_categorical_sweep_with_a_rare_category_cross_validates():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, (120, 4)).astype(float)
    X[7, 2] = 5  # a code seen once: some training folds never see it
    # its maximum-likelihood probability is 0 in the fold that holds it out; each
    # candidate's held-out log-likelihood was finite (log 0 clamped to -708), and is -inf
    with pytest.raises(
        DataError, match=r"fold 1 of 3: row 7 of X holds 5 in column 2.*never show.*'bic'"
    ):
        select_model(X, family="categorical", n_components=[1, 2], cv=3)
    res = select_model(X, family="categorical", n_components=[1, 2], cv=3, prob_concentration=2)
    assert all(r["error"] is None and "cv_error" not in r for r in res.rows)
    assert all(np.isfinite(r["cv_loglik"]) for r in res.rows)
    assert list(res.models[0].n_categories_) == [3, 3, 6, 3]
    # by an in-sample criterion, the fits stand
    res = select_model(X, family="categorical", n_components=[1, 2])
    assert res.best_index() is not None


@pytest.mark.parametrize(
    ("family", "X", "lengths", "match"),
    [
        ("poisson", np.c_[np.arange(60) % 5, np.zeros(60)], None, r"holds 3 in column 1"),
        ("bernoulli", np.c_[np.arange(60) % 2, np.zeros(60)], None, r"holds 1 in column 1"),
        ("multinomial", np.c_[np.arange(60) % 5 + 1, np.zeros(60)], None, r"holds 3 in column 1"),
        ("categorical_hmm", (np.arange(60) % 3)[:, None], [15] * 4, r"holds 3 in column 0"),
        ("poisson_hmm", np.c_[np.arange(60) % 5, np.zeros(60)], [15] * 4, r"holds 3 in column 1"),
    ],
)
def test_a_held_out_value_the_training_folds_never_show_is_named(family, X, lengths, match):
    X = np.asarray(X, dtype=float)
    X[[17], -1] = 3 if family != "bernoulli" else 1
    with pytest.raises(DataError, match=r"row 17 of X " + match + r".*criterion='bic'"):
        kw = {"n_iter": 5} if family.endswith("hmm") else {"max_iter": 5}
        select_model(X, lengths, family=family, n_components=[1, 2], cv=3, **kw)


def test_degenerate_fit_is_na_and_never_best(faithful):
    """faithful, diag K=5: one component sits on the 14 rows with waiting = 83 (variance
    exactly reg_covar), whose BIC 2220.6 would beat every real fit (mclust: NA). It is NA in
    the table and the best model is the best real fit, tied K=3 (mclust's EEE, 3 components)."""
    kw = dict(n_init=10, tol=1e-8, max_iter=1000)
    res = select_model(faithful, n_components=[3, 5], covariance_types=["tied", "diag"], **kw)
    row = next(r for r in res.rows if (r["variant"], r["n_components"]) == ("diag", 5))
    model = res.models[res.rows.index(row)]
    assert row["degenerate"] == model.degenerate_components_ and len(row["degenerate"]) == 1
    k = row["degenerate"][0]
    rows = np.flatnonzero(model.predict(faithful) == k)
    assert np.all(faithful[rows, 1] == 83.0) and len(rows) == np.sum(faithful[:, 1] == 83.0)
    assert model.bic(faithful) < min(r["bic"] for r in res.rows if r is not row)  # the trap
    assert math.isnan(row["bic"]) and "DegenerateComponentWarning" in row["warnings"]
    assert (res.best_row_["variant"], res.best_row_["n_components"]) == ("tied", 3)
    line = next(ln for ln in res.table().splitlines() if ln.strip().startswith("5"))
    assert "NA" in line
    assert "NA: degenerate component(s)" in res.summary()


@pytest.mark.parametrize(
    ("X", "match"),
    [
        ([["a", "b"], ["c", "d"]], "row 0, column 0"),
        ([[1.0, 2.0], [3.0]], "rectangular"),
        ("data.csv", "read the file first"),
    ],
)
def test_bad_x_is_a_data_error_naming_the_problem(X, match):
    # numpy's ValueError ("could not convert string to float") used to reach the caller
    from latentfit.errors import DataError

    with pytest.raises(DataError, match=match):
        select_model(X, n_components=[1])


def test_select_is_a_package_of_candidates_and_the_loop_with_the_old_names():
    # latentfit.select was one 734-line module; its public names stay importable from it
    import latentfit
    import latentfit.select as sel
    from latentfit.select import candidates, sweep

    assert latentfit.select_model is sel.select_model is sweep.select_model
    assert sel.SelectionResult is sweep.SelectionResult and sel.COLUMNS is sweep.COLUMNS
    for name in ("CRITERIA", "FAMILY_NAMES", "HMM_FAMILIES", "make_candidates", "sequence_folds"):
        assert getattr(sel, name) is getattr(candidates, name)
    assert set(sel.__all__) <= set(vars(sel))


@pytest.mark.parametrize("covariance_type", ["tied", "full"])
def test_a_gmm_of_no_fewer_parameters_than_values_is_na_not_best(covariance_type):
    """10 rows of 2 columns (20 values): tied K=10 (each mean on one point, 32 parameters)
    scored a log-likelihood of +96.8 and won BIC with -119.8 against K=1's 55.1, as did
    K=9 (29 parameters); no degenerate component was flagged for them. A candidate of at
    least as many parameters as observed values is now refused (NA, its error naming the
    counts), as LinearGaussianSSM refuses such data. Counts by hand: tied K components in
    d = 2 have 2K means + 3 covariance entries + K - 1 weights; full 2K + 3K + K - 1."""
    X = np.random.default_rng(0).normal(size=(10, 2))
    res = select_model(X, n_components=range(1, 11), covariance_types=[covariance_type])
    params = {"tied": lambda k: 3 * k + 2, "full": lambda k: 6 * k - 1}[covariance_type]
    for r in res.rows:
        k = r["n_components"]
        assert r["n_parameters"] == params(k)  # kept for inspection when refused
        if params(k) >= 20:
            assert (
                r["error"] and f"20 observed value(s), no more than the {params(k)}" in r["error"]
            )
            assert math.isnan(r["bic"]) and res.models[k - 1] is None
    assert res.best_row_["n_components"] == 1
    with pytest.raises(DataError, match=r"no more than the 29 parameters .* at least 15 rows"):
        select_model(X, n_components=[9, 10], covariance_types=["tied"])
