"""The HMM estimators against hmmlearn from identical starting parameters, and on their own."""

import warnings

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hl
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.base import clone

import latentfit
from latentfit import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from latentfit.em.driver import EMMonotonicityWarning
from latentfit.em.hmm import UnvisitedStateWarning
from latentfit.errors import DataError
from latentfit.select import n_free_parameters

COVARS = {
    "diag": lambda k, d: np.linspace(0.8, 1.6, k * d).reshape(k, d),
    "spherical": lambda k, d: np.linspace(0.8, 1.6, k),
    "full": lambda k, d: np.stack([np.eye(d) * (1 + 0.2 * i) + 0.3 for i in range(k)]),
    "tied": lambda k, d: np.eye(d) * 1.2 + 0.3,
}


def gaussian_data(seed=0, n=360, d=2):
    rng = np.random.default_rng(seed)
    z = (np.arange(n) // 30) % 3
    centers = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])[:, :d]
    return centers[z] + rng.normal(size=(n, d)), [n // 3, 1, n // 3, n - 2 * (n // 3) - 1]


def start_params(k, d, ct, seed=1):
    rng = np.random.default_rng(seed)
    return dict(
        startprob_=rng.dirichlet(np.ones(k)),
        transmat_=rng.dirichlet(np.ones(k) * 2, size=k),
        means_=rng.normal(size=(k, d)) * 2,
        covars_=COVARS[ct](k, d),
    )


def set_params(model, params):
    for name, value in params.items():
        setattr(model, name, value)
    return model


def quiet_fit(model, X, lengths=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, lengths)


@pytest.mark.parametrize("ct", ["diag", "spherical", "full", "tied"])
def test_gaussian_baum_welch_equals_hmmlearn(ct):
    X, lengths = gaussian_data()
    k, d = 3, 2
    kw = dict(
        covariance_type=ct,
        n_iter=12,
        tol=-np.inf,
        init_params="",
        means_prior=0.5,
        means_weight=0.1,
        covars_prior=0.05,
        covars_weight=3.0,
        transmat_prior=1.3,
        startprob_prior=1.1,
    )
    start = start_params(k, d, ct)
    ref = quiet_fit(set_params(hl.GaussianHMM(k, **kw), start), X, lengths)
    ours = quiet_fit(set_params(GaussianHMM(k, **kw), start), X, lengths)
    # log-likelihood before every M-step, from the same start: exact algorithms in float64
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-7, atol=1e-10)
    ref_cov = ref._covars_[:, 0] if ct == "spherical" else ref._covars_
    np.testing.assert_allclose(ours._covars_, ref_cov, rtol=1e-7)
    assert ours.score(X, lengths) == pytest.approx(ref.score(X, lengths), rel=1e-10)
    lp, path = ours.decode(X, lengths)
    ref_lp, ref_path = ref.decode(X, lengths)
    np.testing.assert_array_equal(path, ref_path)
    assert lp == pytest.approx(ref_lp, rel=1e-10)
    np.testing.assert_allclose(
        ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), rtol=1e-8, atol=1e-12
    )
    map_lp, map_path = ours.decode(X, lengths, algorithm="map")
    ref_map = ref.decode(X, lengths, algorithm="map")
    np.testing.assert_array_equal(map_path, ref_map[1])
    assert map_lp == pytest.approx(ref_map[0], rel=1e-10)
    assert ours.bic(X, lengths) == pytest.approx(ref.bic(X, lengths), rel=1e-10)
    assert ours.aic(X, lengths) == pytest.approx(ref.aic(X, lengths), rel=1e-10)
    np.testing.assert_allclose(
        ours.covars_,
        ref.covars_ if ct != "spherical" else np.stack([np.eye(d) * c for c in ref_cov]),
        rtol=1e-7,
    )


def test_categorical_baum_welch_equals_hmmlearn():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.integers(0, 3, 200), rng.integers(2, 6, 200)])[:, None]
    lengths = [150, 250]
    k = 3
    start = dict(
        startprob_=rng.dirichlet(np.ones(k)),
        transmat_=rng.dirichlet(np.ones(k), k),
        emissionprob_=rng.dirichlet(np.ones(6), k),
    )
    kw = dict(n_iter=15, tol=-np.inf, init_params="", emissionprob_prior=1.2, transmat_prior=1.5)
    ref = quiet_fit(set_params(hl.CategoricalHMM(k, **kw), start), X, lengths)
    ours = quiet_fit(set_params(CategoricalHMM(k, **kw), start), X, lengths)
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-7, atol=1e-12)
    lp, path = ours.decode(X, lengths)
    ref_lp, ref_path = ref.decode(X, lengths)
    np.testing.assert_array_equal(path, ref_path)
    assert lp == pytest.approx(ref_lp, rel=1e-10)


def test_categorical_scoring_leaves_n_features_and_a_refit_takes_new_symbols():
    """Scoring read the symbol count into the constructor's n_features, so a refit on data
    with more symbols was refused (DataError: the model emits symbols 0..3)."""
    rng = np.random.default_rng(5)
    X4 = rng.integers(0, 4, (120, 1))
    X6 = np.concatenate([rng.integers(0, 3, 100), rng.integers(2, 6, 100)])[:, None]
    model = quiet_fit(CategoricalHMM(2, n_iter=3, random_state=0), X4)
    params = model.get_params()
    model.score(X4)
    model.predict(X4)
    assert model.get_params() == params and clone(model).n_features is None
    # the hmmlearn habit: a start set by hand, then fit with init_params=""
    start = dict(
        startprob_=rng.dirichlet(np.ones(2)),
        transmat_=rng.dirichlet(np.ones(2), 2),
        emissionprob_=rng.dirichlet(np.ones(6), 2),
    )
    model.set_params(init_params="", n_iter=5, tol=-np.inf)
    ours = quiet_fit(set_params(model, start), X6)
    ref = quiet_fit(
        set_params(hl.CategoricalHMM(2, init_params="", n_iter=5, tol=-np.inf), start), X6
    )
    assert ours.n_features_ == 6 and ours.n_features is None
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=1e-7, atol=1e-12)


def test_a_parameter_set_by_hand_that_init_params_overwrites_is_said(caplog):
    """hmmlearn's habit: set startprob_ by hand and fit. With 's' still in init_params the fit
    starts elsewhere; hmmlearn says so in its log, latentfit said nothing."""
    from latentfit.em.hmm import OverwrittenParameterWarning

    X, lengths = gaussian_data(seed=2, n=120)
    start = start_params(3, 2, "diag")
    ours = set_params(GaussianHMM(3, n_iter=2, random_state=0), {"startprob_": start["startprob_"]})
    ref = set_params(
        hl.GaussianHMM(3, n_iter=2, random_state=0), {"startprob_": start["startprob_"]}
    )
    with caplog.at_level("WARNING", logger="hmmlearn"):
        quiet_fit(ref, X, lengths)
    assert "'startprob_' attribute is set, it will be overwritten" in caplog.text
    with pytest.warns(OverwrittenParameterWarning, match=r"startprob_ was set by hand.*'tmc'"):
        ours.fit(X, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverwrittenParameterWarning)
        quiet_fit(ours, X, lengths)  # a refit starts afresh, as asked: nothing to say
        # the start set by hand, kept as the warning advises, equals hmmlearn's fit from it
        kw = dict(init_params="", n_iter=3, tol=-np.inf)
        mine = set_params(GaussianHMM(3, **kw), start).fit(X, lengths)
    theirs = quiet_fit(set_params(hl.GaussianHMM(3, **kw), start), X, lengths)
    np.testing.assert_allclose(mine.lower_bounds_, list(theirs.monitor_.history), rtol=1e-8)


@pytest.mark.parametrize("ct", ["diag", "spherical"])  # hmmlearn's full M-step: not PD here
def test_a_start_set_by_hand_fits_fewer_rows_than_states_as_hmmlearn(ct):
    """Fewer rows than states were refused ("X has 3 rows, fewer than n_components=4") even
    with every parameter set by hand and kept (init_params=""), where nothing needs k-means;
    hmmlearn fits them (a short new sequence for a fitted model)."""
    X = np.array([[0.1, 0.2], [1.0, 1.1], [2.0, 1.9]])
    start = start_params(4, 2, ct, seed=3)
    kw = dict(covariance_type=ct, init_params="", n_iter=4, tol=-np.inf)
    ref = quiet_fit(set_params(hl.GaussianHMM(4, **kw), start), X, [2, 1])
    ours = quiet_fit(set_params(GaussianHMM(4, **kw), start), X, [2, 1])
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=1e-8)
    with pytest.raises(DataError, match="fewer than n_components=4: k-means needs a row"):
        GaussianHMM(4, covariance_type=ct, init_params="m").fit(X)


def test_poisson_baum_welch_equals_hmmlearn_without_prior():
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.poisson([1, 6], (150, 2)), rng.poisson([7, 2], (150, 2))])
    start = dict(
        startprob_=np.array([0.6, 0.4]),
        transmat_=np.array([[0.9, 0.1], [0.3, 0.7]]),
        lambdas_=np.array([[2.0, 3.0], [5.0, 1.0]]),
    )
    kw = dict(n_iter=10, tol=-np.inf, init_params="")
    ref = quiet_fit(set_params(hl.PoissonHMM(2, **kw), start), X)
    ours = quiet_fit(set_params(PoissonHMM(2, **kw), start), X)
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(ours.lambdas_, ref.lambdas_, rtol=1e-7)
    # draws are counts, as hmmlearn's: integers that np.bincount and CategoricalHMM take
    draws, states = ours.sample(4000, random_state=0)
    assert draws.dtype.kind == ref.sample(5, random_state=0)[0].dtype.kind == "i"
    for s in range(2):  # per-state means within ~5 standard errors (sqrt(λ/n) <= 0.05)
        np.testing.assert_allclose(draws[states == s].mean(0), ours.lambdas_[s], atol=0.25)
    assert np.bincount(draws[:, 0]).sum() == 4000


@pytest.mark.parametrize("ct", ["diag", "spherical", "full", "tied"])
def test_gmmhmm_density_equals_hmmlearn_and_em_is_monotone(ct):
    X, lengths = gaussian_data(seed=5, n=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("error", category=EMMonotonicityWarning)
        ours = GMMHMM(2, n_mix=2, covariance_type=ct, n_iter=15, tol=-np.inf, random_state=0)
        ours.fit(X, lengths)
    assert np.all(np.diff(ours.lower_bounds_) > -1e-8)
    ref = set_params(
        hl.GMMHMM(2, n_mix=2, covariance_type=ct, init_params=""),
        dict(
            startprob_=ours.startprob_,
            transmat_=ours.transmat_,
            weights_=ours.weights_,
            means_=ours.means_,
            covars_=ours.covars_,
        ),
    )
    assert ours.score(X, lengths) == pytest.approx(ref.score(X, lengths), rel=1e-10)
    np.testing.assert_array_equal(ours.predict(X, lengths), ref.predict(X, lengths))


def test_parameters_recovered_from_a_long_sample():
    truth = GaussianHMM(3, covariance_type="full")
    truth.startprob_ = np.array([0.5, 0.3, 0.2])
    truth.transmat_ = np.array([[0.90, 0.05, 0.05], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]])
    truth.means_ = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    truth.covars_ = np.array([np.eye(2), [[1.0, 0.5], [0.5, 1.0]], np.eye(2) * 0.5])
    truth.n_features = 2
    X, z = truth.sample(20000, random_state=0)
    model = quiet_fit(
        GaussianHMM(3, covariance_type="full", n_iter=100, tol=1e-6, n_init=2, random_state=0), X
    )
    order = np.argsort(model.means_[:, 0] + 2 * model.means_[:, 1])
    assert np.array_equal(np.argsort(truth.means_[:, 0] + 2 * truth.means_[:, 1]), [0, 1, 2])
    # standard errors with ~6000 steps per state are ~0.02 (means, variances) and ~0.005
    # (transition probabilities); tolerances are about four of them.
    np.testing.assert_allclose(model.means_[order], truth.means_, atol=0.08)
    np.testing.assert_allclose(model.covars_[order], truth.covars_, atol=0.1)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.02)
    # the decoded path agrees with the true one almost everywhere (overlap is small)
    assert np.mean(order.argsort()[model.predict(X)] == z) > 0.97


def test_categorical_and_poisson_recovery():
    truth = CategoricalHMM(2)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transmat_ = np.array([[0.95, 0.05], [0.1, 0.9]])
    truth.emissionprob_ = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    X, _ = truth.sample(10000, random_state=1)
    m = quiet_fit(CategoricalHMM(2, n_iter=200, tol=1e-6, n_init=2, random_state=0), X)
    order = np.argsort(m.emissionprob_[:, 2])
    # ~5000 symbols per state: standard errors ~0.007; tolerance ~5 of them
    np.testing.assert_allclose(m.emissionprob_[order], truth.emissionprob_, atol=0.035)
    np.testing.assert_allclose(m.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.03)
    p = PoissonHMM(2)
    p.startprob_, p.transmat_ = truth.startprob_, truth.transmat_
    p.lambdas_ = np.array([[1.0, 8.0], [6.0, 2.0]])
    p.n_features = 2
    Xp, _ = p.sample(10000, random_state=2)
    fitted = quiet_fit(PoissonHMM(2, n_iter=200, tol=1e-6, random_state=0), Xp)
    order = np.argsort(fitted.lambdas_[:, 0])
    # rates near 5 from ~5000 counts: standard error ~0.03
    np.testing.assert_allclose(fitted.lambdas_[order], p.lambdas_, atol=0.15)


def test_unvisited_state_warns_and_keeps_finite_parameters():
    X, lengths = gaussian_data(seed=6, n=200)
    k, d = 3, 2
    model = GaussianHMM(k, n_iter=5, tol=-np.inf, init_params="", covars_prior=0.0)
    model.startprob_ = np.array([0.5, 0.5, 0.0])
    model.transmat_ = np.array([[0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]])
    model.means_ = np.array([[0.0, 0.0], [3.0, 1.0], [100.0, 100.0]])
    model.covars_ = np.ones((k, d))
    with pytest.warns(UnvisitedStateWarning, match=r"state\(s\) \[2\]"):
        quiet_fit_keep = model.fit(X, lengths)
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        assert np.all(np.isfinite(getattr(quiet_fit_keep, name))), name
    np.testing.assert_array_equal(model.means_[2], [100.0, 100.0])  # kept, documented
    np.testing.assert_allclose(model.transmat_[2], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(model.transmat_.sum(1), 1.0)
    # hmmlearn gives NaN means here
    ref = hl.GaussianHMM(k, n_iter=5, init_params="", covars_prior=0.0)
    set_params(
        ref,
        dict(
            startprob_=np.array([0.5, 0.5, 0.0]),
            transmat_=np.array([[0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]]),
            means_=np.array([[0.0, 0.0], [3.0, 1.0], [100.0, 100.0]]),
            covars_=np.ones((k, d)),
        ),
    )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            ref.fit(X, lengths)
            assert not np.all(np.isfinite(ref.means_))
        except ValueError:
            pass  # or refuses to continue


def test_n_init_keeps_the_best_run_and_history_is_monotone():
    X, lengths = gaussian_data(seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("error", category=EMMonotonicityWarning)
        m = GaussianHMM(3, n_iter=30, tol=1e-8, n_init=3, random_state=0).fit(X, lengths)
    assert len(m.all_lower_bounds_) == 3
    finals = [b[-1] for b in m.all_lower_bounds_]
    assert m.lower_bound_ == max(finals) == m.lower_bounds_[-1]
    assert m.all_lower_bounds_[m.best_init_] == m.lower_bounds_
    assert np.all(np.diff(m.lower_bounds_) > -1e-9 * abs(m.lower_bounds_[-1]))
    assert list(m.monitor_.history) == m.lower_bounds_
    assert m.n_iter_ == len(m.lower_bounds_)


def test_sklearn_conventions_sampling_and_save(tmp_path):
    X, lengths = gaussian_data(seed=8, n=200)
    model = GaussianHMM(2, covariance_type="tied", n_iter=5, random_state=0, n_init=1)
    params = model.get_params()
    assert {"n_init", "device", "dtype", "params", "init_params"} <= set(params)
    quiet_fit(model, X, lengths)
    assert model.get_params() == params  # fit never changes a constructor argument
    assert clone(model).get_params() == params
    a = model.sample(50, random_state=3)
    b = model.sample(50, random_state=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (50, 2) and a[1].shape == (50,)
    np.testing.assert_allclose(
        model.get_stationary_distribution() @ model.transmat_,
        model.get_stationary_distribution(),
        rtol=1e-10,
    )
    path = model.save(tmp_path / "hmm.safetensors")
    loaded = latentfit.load(path)
    assert loaded.score(X, lengths) == pytest.approx(model.score(X, lengths), rel=1e-12)
    np.testing.assert_array_equal(loaded.predict(X, lengths), model.predict(X, lengths))


def test_float32_and_device(device):
    X, lengths = gaussian_data(seed=9, n=300)
    start = start_params(3, 2, "diag")
    m64 = quiet_fit(
        set_params(GaussianHMM(3, n_iter=5, tol=-np.inf, init_params=""), start), X, lengths
    )
    m32 = quiet_fit(
        set_params(
            GaussianHMM(3, n_iter=5, tol=-np.inf, init_params="", dtype="float32", device=device),
            start,
        ),
        X,
        lengths,
    )
    # float32 rounding (~1e-7 relative per operation) over 300 steps and 5 iterations
    np.testing.assert_allclose(m32.lower_bounds_, m64.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(m32.means_, m64.means_, atol=1e-4)
    assert m32.means_.dtype == np.float32
    dev = quiet_fit(
        set_params(GaussianHMM(3, n_iter=5, tol=-np.inf, init_params="", device=device), start),
        X,
        lengths,
    )
    np.testing.assert_allclose(dev.lower_bounds_, m64.lower_bounds_, rtol=1e-10)
    assert torch.device(device).type in ("cpu", "cuda")


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 4),
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=4),
)
def test_baum_welch_never_lowers_the_log_likelihood(seed, k, lengths):
    """Property: EM's log-likelihood is non-decreasing (the driver's monotonicity check raises
    here as an error), and parameters stay finite probability tables."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(sum(lengths), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("error", category=EMMonotonicityWarning)
        m = CategoricalHMM(k, n_features=4, n_iter=15, tol=-np.inf, random_state=seed)
        m.fit(X, lengths)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-9 * np.abs(m.lower_bounds_[1:]))
    for p in (m.startprob_, m.transmat_, m.emissionprob_):
        assert np.all(np.isfinite(p)) and np.allclose(p.sum(-1), 1.0)


@pytest.mark.parametrize("ct", ["diag", "spherical"])
@pytest.mark.parametrize("budget", [1 << 29, 4000, 0])
def test_gaussian_features_cached_partly_or_not_equal_hmmlearn(ct, budget):
    """The per-fit features [(x − c)², x − c] kept across iterations for every batch, for the
    first batch only (the budget then runs out: later batches recompute them per E-step), or
    never: the same Baum-Welch iterations as hmmlearn's."""
    from latentfit.em.hmm.sequences import batch_sequences

    X, lengths = gaussian_data()
    assert [len(g) for _, g in batch_sequences(torch.as_tensor(X), lengths, 130)] == [2, 1, 1]
    kw = dict(covariance_type=ct, n_iter=8, tol=-np.inf, init_params="")
    start = start_params(3, 2, ct)
    ref = quiet_fit(set_params(hl.GaussianHMM(3, **kw), start), X, lengths)
    ours = set_params(GaussianHMM(3, **kw), start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # 4 sequences in 3 batches
        ours.fit(X, lengths, batch_steps=130, feature_bytes=budget)
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8)
    ref_cov = ref._covars_[:, 0] if ct == "spherical" else ref._covars_
    np.testing.assert_allclose(ours._covars_, ref_cov, rtol=1e-7)


def test_gmmhmm_float32_weights_sum_to_one_and_the_model_file_loads(tmp_path):
    # found by the property tests: thirty identical rows in float32; a state of little mass
    # got mixture weights (0.50048, 0.50048), normalised by its posterior mass rather than by
    # their own sum, and the saved model was refused by the loader
    X = np.ones((30, 3), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = GMMHMM(
            2, n_mix=2, covariance_type="spherical", dtype="float32", n_iter=5, random_state=0
        ).fit(X)
    np.testing.assert_allclose(m.weights_.sum(1), 1.0, atol=1e-6)
    m.save(tmp_path / "m.lf")
    latentfit.load(tmp_path / "m.lf")


def test_a_count_where_a_poisson_rate_is_zero_is_impossible_in_that_state(tmp_path):
    # a state whose rows never count feature 2 has the MLE rate 0 there; the rate was
    # floored at the smallest normal number, so [300, 300, 1] scored -716.65 in that state
    # with probability 1 (scipy, from the other state: -2188.74)
    from scipy import stats

    rng = np.random.default_rng(0)
    X = np.r_[np.c_[rng.poisson(300, (100, 2)), np.zeros(100)], rng.poisson(3, (100, 3))]
    m = quiet_fit(PoissonHMM(2, n_iter=50, random_state=0), X, [100, 100])
    lam = m.lambdas_
    busy = int(np.argmax(lam[:, 2]))
    assert lam[1 - busy, 2] == 0.0
    row = np.array([[300, 300, 1]])
    want = np.logaddexp.reduce(
        [np.log(m.startprob_[k]) + stats.poisson.logpmf(row[0], lam[k]).sum() for k in range(2)]
    )
    assert m.score(row) == pytest.approx(want, rel=1e-12) and want < -2000
    assert m.predict_proba(row)[0, busy] == 1.0
    # the model file keeps the zero rate
    m.save(tmp_path / "p.lf")
    assert latentfit.load(tmp_path / "p.lf").score(row) == pytest.approx(want, rel=1e-12)
    # a count no state can produce scores -inf; its posteriors are undefined and named
    one = quiet_fit(PoissonHMM(1, n_iter=5, random_state=0), X[:100])
    assert one.score(row) == -np.inf
    with pytest.raises(DataError, match=r"row 0 of X .* counts 1 in feature 2 \(column 2\)"):
        one.predict_proba(row)
    # and a fit that goes on from there learns it
    one.init_params = ""
    quiet_fit(one, X[100:])
    assert one.lambdas_[0, 2] > 1 and np.isfinite(one.score(row))


def test_gaussian_sample_matches_a_root_gathered_per_row():
    from latentfit.em.hmm.emissions import gaussian_sample

    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 3, generator=g, dtype=torch.float64)
    roots = torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([3, 0, 0, 2, 3, 3, 0])  # state 1 drawn by no row
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    want = means[labels] + (roots[labels] @ z.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(gaussian_sample(means, roots, labels, z), want, rtol=1e-12, atol=0)


def test_sampling_many_wide_rows_takes_memory_for_the_rows_not_a_root_per_row():
    import subprocess
    import sys

    # 10**5 draws of 30 features: the draws are 24 MB; a 30 x 30 root gathered for every row
    # (as sampling once did) is 720 MB more at its peak
    script = """
import resource
import numpy as np
from latentfit import GMMHMM, GaussianHMM
m = GaussianHMM(2, covariance_type="full")
m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.1, 0.9]])
m.means_, m.covars_, m.n_features = np.zeros((2, 30)), np.stack([np.eye(30)] * 2), 30
g = GMMHMM(2, n_mix=2, covariance_type="diag")
g.startprob_, g.transmat_ = m.startprob_, m.transmat_
g.weights_, g.means_, g.covars_ = np.full((2, 2), 0.5), np.zeros((2, 2, 30)), np.ones((2, 2, 30))
g.n_features = 30
from latentfit.em import paths
paths.COMPILE_FROM = 0  # the kernels loaded below, not while measured
m.sample(10, random_state=0), g.sample(10, random_state=0)  # imports and compiles
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
X, _ = m.sample(100_000, random_state=0)
Y, _ = g.sample(100_000, random_state=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, X.std(), Y.std())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    grown_kb, sx, sy = proc.stdout.split()
    assert float(sx) == pytest.approx(1.0, abs=0.01) and float(sy) == pytest.approx(1.0, abs=0.01)
    assert int(grown_kb) < 300_000  # kilobytes (Linux): the old peak grew by 720 MB or more


@pytest.mark.parametrize("n_mix", [1, 3])
def test_gmmhmm_with_parameters_set_by_hand_scores_as_hmmlearn(n_mix):
    """A GMMHMM whose parameters were set by hand took n_features from weights_ (k, n_mix):
    score and predict refused "means_ must have shape (2, 3, 3), got (2, 3, 2)", and
    partial_fit "X has 2 features but the model was fitted with 3". hmmlearn reads them from
    means_."""
    rng = np.random.default_rng(0)
    start = dict(
        startprob_=np.array([0.6, 0.4]),
        transmat_=np.array([[0.8, 0.2], [0.3, 0.7]]),
        weights_=np.full((2, n_mix), 1.0 / n_mix),
        means_=rng.normal(size=(2, n_mix, 2)),
        covars_=np.full((2, n_mix, 2), 0.5),
    )
    X = rng.normal(size=(20, 2))
    ours = set_params(GMMHMM(2, n_mix=n_mix, init_params=""), start)
    ref = set_params(hl.GMMHMM(2, n_mix=n_mix, init_params=""), start)
    assert ours.score(X) == pytest.approx(ref.score(X), rel=1e-12)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    ours.partial_fit(X)
    assert ours.n_features == 2 and ours.n_steps_ == 20


def _fixed_letter_cases():
    """(model, hmmlearn twin or None, X, lengths, free parameters counted by hand)."""
    rng = np.random.default_rng(11)
    X, lengths = gaussian_data(seed=2, n=120)
    k, d, chain = 3, 2, dict(startprob_=np.full(3, 1 / 3), transmat_=np.full((3, 3), 1 / 3))
    for ct, letters, count in [
        ("diag", "mc", k * d + k * d),
        ("full", "st", (k - 1) + k * (k - 1)),
        ("tied", "tc", k * (k - 1) + d * (d + 1) // 2),
        ("spherical", "sm", (k - 1) + k * d),
    ]:
        start = {**start_params(k, d, ct), "covars_": COVARS[ct](k, d)}
        kw = dict(covariance_type=ct, params=letters, init_params="")
        yield GaussianHMM(k, **kw), hl.GaussianHMM(k, **kw), start, X, lengths, count
    symbols = np.concatenate([rng.integers(0, 3, 60), rng.integers(2, 5, 60)])[:, None]
    start = {**chain, "emissionprob_": rng.dirichlet(np.ones(5), k)}
    kw = dict(params="te", init_params="")
    count = k * (k - 1) + k * 4
    yield CategoricalHMM(k, **kw), hl.CategoricalHMM(k, **kw), start, symbols, [60, 60], count
    counts = rng.poisson([1.0, 5.0], (120, 2))
    start = {**chain, "lambdas_": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 1.0]])}
    kw = dict(params="sl", init_params="")
    yield PoissonHMM(k, **kw), hl.PoissonHMM(k, **kw), start, counts, None, (k - 1) + k * d
    trials = rng.multinomial(6, [0.2, 0.3, 0.5], 120)
    start = {**chain, "emissionprob_": rng.dirichlet(np.ones(3), k)}
    kw = dict(n_trials=6, params="e", init_params="")
    model = latentfit.MultinomialHMM(k, **kw)
    yield model, hl.MultinomialHMM(k, **kw), start, trials, None, k * 2
    # no hmmlearn twin (hmmlearn's GMMHMM counts n_mix - 1 weights for all states together)
    m = 2
    start = {
        **chain,
        "weights_": np.full((k, m), 1 / m),
        "means_": rng.normal(size=(k, m, d)),
        "covars_": np.full((k, m, d), 0.8),
    }
    gmm = GMMHMM(k, n_mix=m, params="tw", init_params="")
    yield gmm, None, start, X, lengths, k * (k - 1) + k * (m - 1)
    ar = latentfit.AutoregressiveHMM(k, order=1, params="sa", init_params="")
    start = {
        **chain,
        "coefs_": np.zeros((k, 1, d, d)) + 0.1,
        "intercepts_": rng.normal(size=(k, d)),
        "covars_": np.stack([np.eye(d)] * k),
    }
    yield ar, None, start, X, [60, 60], (k - 1) + k * (d * d + d)
    hsmm = latentfit.GaussianHSMM(k, max_duration=5, duration="poisson", params="tm")
    hsmm.init_params = ""
    start = {
        **start_params(k, d, "diag"),
        "transmat_": np.full((k, k), 0.5) - 0.5 * np.eye(k),
        "duration_lambdas_": np.array([1.0, 2.0, 3.0]),
    }
    # a zero diagonal: k - 2 free transitions a row
    yield hsmm, None, start, X, lengths, k * (k - 2) + k * d


@pytest.mark.parametrize("case", range(10))
def test_bic_and_aic_do_not_charge_for_parameters_held_fixed(case):
    """bic/aic charged every parameter, those left out of ``params`` (kept fixed, not
    estimated) too: GaussianHMM(3, params="mc") on 2-d data counted 20 (2 + 6 + 6 + 6), not
    its 12 free ones, and disagreed with select_model. The reference: hmmlearn's score and its
    per-letter counts over ``params`` (those its degenerate-fit check counts), else a count by
    hand."""
    ours, ref, start, X, lengths, count = list(_fixed_letter_cases())[case]
    quiet_fit(set_params(ours.set_params(n_iter=3), start), X, lengths)
    n = len(X)
    if ref is not None:
        fitted = {name: getattr(ours, name) for name in start}
        if "covars_" in fitted:  # hmmlearn's setter takes the compact storage
            fitted["covars_"] = ours._covars_
        set_params(ref, fitted)
        ref.n_features = getattr(ours, "n_features_", None) or ours.n_features
        per_letter = ref._get_n_fit_scalars_per_param()
        assert count == sum(per_letter[letter] for letter in ref.params)
        loglik = ref.score(X, lengths)
    else:
        loglik = ours.score(X, lengths)
    assert ours._n_parameters() == count == n_free_parameters(ours)
    assert ours.bic(X, lengths) == pytest.approx(-2 * loglik + count * np.log(n), rel=1e-10)
    assert ours.aic(X, lengths) == pytest.approx(-2 * loglik + 2 * count, rel=1e-10)


def _regimes_1e8_apart(n=200, seed=0):
    """Two regimes of unit noise at 0 and (1e8, 1e8), switching at random: (X, states)."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n)
    return z[:, None] * np.array([1e8, 1e8]) + rng.normal(size=(n, 2)), z


def _labelled_mle(X, z, covars_prior=1e-2):
    """The fixed point of Baum-Welch when every posterior is 0 or 1 (regimes 1e8 noise
    sd apart): each state's mean and (prior-smoothed, as hmmlearn's M-step) covariance of its
    own rows, the transitions' relative counts."""
    means = np.stack([X[z == k].mean(0) for k in (0, 1)])
    covs = []
    for k in (0, 1):
        R = X[z == k] - means[k]
        covs.append((covars_prior + R.T @ R) / (z == k).sum())
    counts = np.zeros((2, 2))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    return means, np.stack(covs), counts / counts.sum(1, keepdims=True)


@pytest.mark.parametrize("ct", ["full", "tied"])
def test_states_1e8_apart_fit_from_the_default_start(ct):
    """From the default start (the data covariance, of condition ~1e15 here) the first
    M-step's covariance keeps no digit of its smallest eigenvalue (11.9 computed, 1.1 exact),
    and the log-likelihood fell by ~110 nats at iteration 2 (hmmlearn's, from the same start,
    fell too): an EMMonotonicityWarning, and the fit stopped there as converged, covariances
    ~1e15 and a score of -4208 where -709 is reached. The decrease lies within the rounding of
    that covariance update: no warning, and the fit goes on to the labelled rows' maximum."""
    X, z = _regimes_1e8_apart()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        model = GaussianHMM(2, covariance_type=ct, random_state=0, n_iter=50).fit(X)
    assert model.converged_ and model.n_iter_ > 2
    order = np.argsort(model.means_[:, 0])  # state 0 at the origin
    means, covs, transmat = _labelled_mle(X, z)
    if ct == "tied":  # the rows' scatter about their own state's mean, pooled; one prior
        pooled = (covs * np.bincount(z)[:, None, None] - 1e-2).sum(0) + 1e-2
        covs = np.stack([pooled / len(z)] * 2)
    # every posterior is 0 or 1 to rounding: the fixed point is exact (the means to the
    # rounding of the data's centre, eps * 5e7 ~ 1e-8)
    np.testing.assert_allclose(model.means_[order], means, rtol=1e-12, atol=1e-7)
    np.testing.assert_allclose(model.covars_[order], covs, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], transmat, rtol=1e-8)
    # the complete-data log-likelihood of the labelled rows (the posterior is certain)
    want = np.log(transmat[z[:-1], z[1:]]).sum() + sum(
        multivariate_normal(means[k], covs[k]).logpdf(X[z == k]).sum() for k in (0, 1)
    )
    assert model.score(X) == pytest.approx(want, rel=1e-9)
    # the same data centred and in units of 1e7 (the floors scaled with them): the same fit
    scale = 1e7
    shifted = GaussianHMM(
        2,
        covariance_type=ct,
        random_state=0,
        n_iter=50,
        min_covar=1e-3 / scale**2,
        covars_prior=1e-2 / scale**2,
    ).fit((X - 5e7) / scale)
    np.testing.assert_allclose(shifted.means_[order] * scale + 5e7, means, rtol=1e-12, atol=1e-7)
    np.testing.assert_allclose(shifted.covars_[order] * scale**2, covs, rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "prior"),  # prior: the covariance prior's default (GMMHMM's adds none)
    [
        (lambda: GaussianHMM(2, covariance_type="full", random_state=0, n_iter=50), 1e-2),
        (lambda: GaussianHMM(2, covariance_type="tied", random_state=0, n_iter=50), 1e-2),
        (lambda: GMMHMM(2, n_mix=1, covariance_type="full", random_state=0, n_iter=50), 0.0),
    ],
    ids=["GaussianHMM-full", "GaussianHMM-tied", "GMMHMM-full"],
)
def test_a_start_covariance_singular_in_float64_is_lifted(make, prior):
    """1000 rows of the regimes 1e8 apart: their data covariance (entries 2.5e15, exact
    smallest eigenvalue ~1) is -3.25 in float64 once min_covar = 1e-3 is lost in its
    rounding, and the first E-step refused the default start ("the covariance of state(s)
    [0, 1] is not positive definite: the state has collapsed onto too few distinct points").
    Lifted as a singular update is, the fit reaches the labelled rows' maximum."""
    X, z = _regimes_1e8_apart(n=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        model = make().fit(X)
    means, covs, _ = _labelled_mle(X, z, prior)
    if model.covariance_type == "tied":
        pooled = (covs * np.bincount(z)[:, None, None] - prior).sum(0) + prior
        covs = np.stack([pooled / len(z)] * 2)
    order = np.argsort(model.means_.reshape(2, -1)[:, 0])
    fitted = np.asarray(model.covars_).reshape(2, 2, 2)[order]
    np.testing.assert_allclose(model.means_.reshape(2, 2)[order], means, rtol=1e-12, atol=1e-7)
    np.testing.assert_allclose(fitted, covs, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("ct", ["diag", "spherical", "full", "tied"])
@pytest.mark.parametrize("d", [1, 2])
def test_gmmhmm_a_group_far_from_the_data_centre_keeps_its_digits_as_hmmlearn(ct, d):
    # rows near 2.4 and one at 1e17: the component means were kept as c + (mu - c) and
    # their moments taken from x - c, c the data's mean (1.7e15, spaced by 0.25), so the
    # group's mean came out 2.5 and its variance 0.7913 (hmmlearn: 2.4957, 0.7987)
    rng = np.random.default_rng(0)
    X = rng.normal(2.4, 1, (60, d))
    X[30] = 1e17
    covars = {
        "spherical": np.ones((2, 1)),
        "diag": np.ones((2, 1, d)),
        "full": np.tile(np.eye(d), (2, 1, 1, 1)),
        "tied": np.tile(np.eye(d), (2, 1, 1)),
    }[ct]
    start = dict(
        startprob_=np.array([0.5, 0.5]),
        transmat_=np.array([[0.9, 0.1], [0.5, 0.5]]),
        weights_=np.ones((2, 1)),
        means_=np.array([[[0.0] * d], [[1e17] * d]]),
        covars_=covars,
    )
    kw = dict(n_mix=1, covariance_type=ct, n_iter=10, tol=-np.inf, init_params="")
    ours = quiet_fit(set_params(GMMHMM(2, **kw), start), X)
    ref = quiet_fit(set_params(hl.GMMHMM(2, **kw), start), X)
    np.testing.assert_allclose(ours.means_[0], ref.means_[0], rtol=1e-9)
    np.testing.assert_allclose(ours.covars_[0], ref.covars_[0], rtol=1e-9)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-9)
    # hmmlearn's far component sits on its one row with variance 0, ours at min_covar
    np.testing.assert_array_equal(ours.means_[1, 0], X[30])
    fitted = {n: getattr(ours, n) for n in start}
    assert ours.score(X) == pytest.approx(set_params(ref, fitted).score(X), rel=1e-10)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical", "GMMHMM-full"])
def test_rows_near_2_4_beside_one_row_at_1e17_in_every_column_fit_the_closed_form(ct):
    """59 rows of normal(2.4, 1) in 2-d and one row at (1e17, 1e17) among them: the data
    covariance (entries 1.6e32) loses its spread along (1, -1) (about 1) in its rounding, and
    the lift of the start measured that spread against the rounding of the far row (22):
    the default full start was refused as "not positive definite" (hmmlearn refuses the same
    start). Each state is then its rows' closed form (hmmlearn's update)."""
    rng = np.random.default_rng(0)
    X = np.insert(rng.normal(2.4, 1, (59, 2)), 30, [1e17, 1e17], axis=0)
    z = (X[:, 0] > 1e16).astype(int)
    if ct == "GMMHMM-full":  # no covariance prior by default
        model, prior = GMMHMM(2, n_mix=1, covariance_type="full", random_state=0), 0.0
    else:
        model, prior = GaussianHMM(2, covariance_type=ct, random_state=0, n_iter=50), 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.errors.DegenerateComponentWarning)
        model.fit(X)
    means, covs, _ = _labelled_mle(X, z, prior)
    order = np.argsort(model.means_.reshape(2, -1)[:, 0])
    np.testing.assert_allclose(model.means_.reshape(2, 2)[order], means, rtol=1e-12)
    fitted = np.asarray(model.covars_).reshape(2, 2, 2)[order]
    if ct == "tied":  # pooled over the states, one prior
        pooled = ((covs * np.bincount(z)[:, None, None] - prior).sum(0) + prior) / len(z)
        np.testing.assert_allclose(fitted, np.stack([pooled] * 2), rtol=1e-10)
        return
    near = covs[0]
    if ct == "diag":
        near = np.diag(np.diag(near))
    elif ct == "spherical":
        near = np.eye(2) * np.diag(near).mean()
    np.testing.assert_allclose(fitted[0], near, rtol=1e-10, atol=1e-14)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # every iteration
@pytest.mark.parametrize("ct", ["full", "diag", "spherical", "tied"])
def test_a_float64_fit_far_from_the_origin_is_that_of_the_same_rows_near_it(ct):
    """The model moves with the data: 300 rows moved by c = (2^46, -2^45), fitted from the
    start moved by c, give the bounds of the same rows fitted near the origin. The M-step
    returned every mean about the origin, whose spacing near 7e13 is 1/64, and the next
    E-step took μ − c from it: the bounds after the first M-step differed by up to 6.1e-3
    (full), 2.7e-3 (diag), 6.0e-3 (spherical), 7.3e-3 (tied). The means now stay about
    their centres through the M-step."""
    c = np.array([2.0**46, -(2.0**45)])
    covars = {
        "full": np.array([[[1.0, 0.25], [0.25, 0.5]], [[2.0, -0.5], [-0.5, 1.0]]]),
        "diag": np.array([[1.0, 0.5], [2.0, 1.0]]),
        "spherical": np.array([1.0, 2.0]),
        "tied": np.array([[1.0, 0.25], [0.25, 0.5]]),
    }[ct]

    def model(shift):
        m = GaussianHMM(2, covariance_type=ct, init_params="", n_iter=5, tol=-np.inf)
        m.startprob_, m.transmat_ = np.array([0.75, 0.25]), np.array([[0.75, 0.25], [0.5, 0.5]])
        m.means_ = np.array([[1.5, -0.75], [-2.0, 3.125]]) + shift
        m.covars_ = covars
        return m

    X_far = model(0).sample(300, random_state=0)[0] + c  # rounded to 1/64
    X_near = X_far - c  # exact: within a factor 2 of c
    near, far = model(0).fit(X_near), model(c).fit(X_far)
    np.testing.assert_allclose(far.lower_bounds_, near.lower_bounds_, rtol=1e-13)
    np.testing.assert_allclose(far.covars_, near.covars_, rtol=1e-10)
    np.testing.assert_allclose(far.means_ - c, near.means_, atol=np.spacing(2.0**46))
