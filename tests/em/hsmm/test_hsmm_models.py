"""The HSMM estimators: the HMM they contain, EM's monotonicity, duration recovery, several
sequences, save/load, and errors."""

import warnings

import numpy as np
import pytest
import torch

import latentfit
from latentfit import (
    CategoricalHSMM,
    GaussianHMM,
    GaussianHSMM,
    PoissonHSMM,
)
from latentfit.errors import DataError, ParameterError, ResourceLimitError
from tests.em.hsmm.brute import brute_force


def _gaussian_hsmm(k=3, big_d=30, lambdas=(4.0, 9.0, 14.0), **kw):
    m = GaussianHSMM(n_components=k, max_duration=big_d, **kw)
    m.startprob_ = np.full(k, 1.0 / k)
    tm = np.full((k, k), 1.0 / (k - 1))
    np.fill_diagonal(tm, 0)
    m.transmat_ = tm
    m.means_ = np.arange(k, dtype=float).reshape(k, 1) * 3.0
    m.covars_ = np.ones((k, 1))
    m.duration_lambdas_ = np.asarray(lambdas[:k])
    m.n_features = 1
    return m


def _geometric_pair(t, big_d, seed=0):
    """A GaussianHMM with self-transitions a_kk and the HSMM with the same jump chain and
    geometric durations p(d) = a^(d−1) (1 − a) for d < D, the tail mass a^(D−1) at D."""
    rng = np.random.default_rng(seed)
    k = 3
    hmm = GaussianHMM(n_components=k, covariance_type="diag")
    hmm.startprob_ = rng.dirichlet(np.ones(k))
    hmm.transmat_ = rng.dirichlet(np.ones(k), size=k) + np.eye(k) * 2
    hmm.transmat_ /= hmm.transmat_.sum(1, keepdims=True)
    hmm.means_ = rng.normal(size=(k, 2))
    covars = rng.uniform(0.5, 2.0, size=(k, 2))
    hmm.covars_ = covars
    a = np.diag(hmm.transmat_)
    d = np.arange(1, big_d + 1)
    pmf = a[:, None] ** (d - 1) * (1 - a[:, None])
    pmf[:, -1] = a ** (big_d - 1)
    jump = hmm.transmat_ / (1 - a[:, None])
    np.fill_diagonal(jump, 0)
    hsmm = GaussianHSMM(
        n_components=k, max_duration=big_d, duration="nonparametric", right_censoring=True
    )
    hsmm.startprob_, hsmm.transmat_ = hmm.startprob_, jump
    hsmm.means_, hsmm.covars_ = hmm.means_, covars
    hsmm.duration_probs_ = pmf
    X = rng.normal(size=(t, 2)) * 1.5
    return hmm, hsmm, X


@pytest.mark.parametrize(("t", "big_d"), [(7, 7), (40, 45), (200, 200)])
def test_geometric_durations_equal_the_hmm(t, big_d):
    hmm, hsmm, X = _geometric_pair(t, big_d)
    np.testing.assert_allclose(hsmm.score(X), hmm.score(X), rtol=1e-9)
    np.testing.assert_allclose(hsmm.predict_proba(X), hmm.predict_proba(X), atol=1e-9)
    # several sequences, and the Viterbi score (the HMM's best path is a segmentation)
    lengths = [t // 2, t - t // 2]
    np.testing.assert_allclose(hsmm.score(X, lengths), hmm.score(X, lengths), rtol=1e-9)
    lp_hsmm, path_hsmm = hsmm.decode(X)
    lp_hmm, path_hmm = hmm.decode(X)
    np.testing.assert_allclose(lp_hsmm, lp_hmm, rtol=1e-9)
    np.testing.assert_array_equal(path_hsmm, path_hmm)


@pytest.mark.parametrize("censored", [True, False])
def test_model_methods_equal_enumeration(censored):
    """score, predict_proba and decode of a fitted-by-hand GaussianHSMM against brute force."""
    m = _gaussian_hsmm(k=2, big_d=4, lambdas=(1.5, 0.7), right_censoring=censored)
    X = np.random.default_rng(1).normal(size=(7, 1)) * 2 + 1.5
    ll = m._emission_log_likelihood(m._given_params(), torch.as_tensor(X)).numpy()
    ref = brute_force(ll, m.startprob_, m.transmat_, m.duration_pmf_, censored)
    np.testing.assert_allclose(m.score(X), ref["log_likelihood"], rtol=1e-10)
    np.testing.assert_allclose(m.predict_proba(X), ref["posteriors"], atol=1e-10)
    lp, path = m.decode(X)
    np.testing.assert_allclose(lp, ref["viterbi_log_prob"], rtol=1e-10)
    np.testing.assert_array_equal(path, ref["viterbi_path"])


def _fit_models():
    X, _ = _gaussian_hsmm().sample(600, random_state=0)
    counts = np.random.default_rng(0).poisson(np.repeat([1.0, 6.0, 2.0, 9.0], 150))[:, None]
    symbols = (np.repeat([0, 1, 0, 2], 150) + (np.arange(600) % 7 == 0)) % 3
    return [
        (GaussianHSMM, X),
        (PoissonHSMM, counts),
        (CategoricalHSMM, symbols[:, None]),
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol = -inf
@pytest.mark.parametrize("duration", ["poisson", "negative_binomial", "nonparametric"])
@pytest.mark.parametrize("censored", [True, False])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["gaussian", "poisson", "categorical"])
def test_em_never_decreases_the_likelihood(duration, censored, which):
    cls, X = _fit_models()[which]
    m = cls(
        n_components=3,
        max_duration=25,
        duration=duration,
        right_censoring=censored,
        n_iter=15,
        tol=-np.inf,
        random_state=1,
    )
    m.fit(X)
    bounds = np.asarray(m.lower_bounds_)
    assert len(bounds) == 15
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:])), np.diff(bounds)
    # the history is the log-likelihood of the parameters before each M-step
    assert m.monitor_.history[-1] == bounds[-1]
    assert bounds[-1] > bounds[0]
    assert m.score(X) >= bounds[-1] - 1e-9 * abs(bounds[-1])


def test_poisson_durations_are_recovered():
    """Durations from a long simulated series: the fitted Poisson means of d − 1 match the
    generating ones within 5% (about 900 segments per state: the sampling error of a mean of
    4 is ~2%, of 14 ~1.3%), and equal the durations counted on the true segmentation to 3%."""
    truth = _gaussian_hsmm(k=2, big_d=40, lambdas=(4.0, 14.0))
    X, states = truth.sample(18000, random_state=3)
    m = GaussianHSMM(n_components=2, max_duration=40, random_state=0, n_iter=100, tol=1e-6)
    m.fit(X)
    order = np.argsort(m.means_[:, 0])
    np.testing.assert_allclose(m.duration_lambdas_[order], [4.0, 14.0], rtol=0.05)
    cuts = np.flatnonzero(np.diff(states)) + 1
    seg_states = states[np.r_[0, cuts]][:-1]  # complete segments only (the last is cut)
    seg_lengths = np.diff(np.r_[0, cuts])
    counted = [seg_lengths[seg_states == k].mean() - 1 for k in range(2)]
    np.testing.assert_allclose(m.duration_lambdas_[order], counted, rtol=0.03)
    # the fitted model segments the series as the generating one does
    assert (m.predict(X) == order[truth.predict(X)]).mean() > 0.99


def test_several_sequences_are_the_sum_of_separate_ones():
    m = _gaussian_hsmm()
    X, _ = m.sample(90, random_state=2)
    lengths = [30, 1, 59]
    parts = np.split(X, np.cumsum(lengths)[:-1])
    np.testing.assert_allclose(m.score(X, lengths), sum(m.score(p) for p in parts), rtol=1e-12)
    post = np.vstack([m.predict_proba(p) for p in parts])
    np.testing.assert_allclose(m.predict_proba(X, lengths), post, atol=1e-12)
    path = np.concatenate([m.predict(p) for p in parts])
    np.testing.assert_array_equal(m.predict(X, lengths), path)


@pytest.mark.parametrize("duration", ["poisson", "negative_binomial", "nonparametric"])
def test_save_load_round_trip(tmp_path, duration):
    X, _ = _gaussian_hsmm().sample(300, random_state=0)
    m = GaussianHSMM(n_components=3, max_duration=20, duration=duration, n_iter=3, random_state=0)
    m.fit(X)
    path = m.save(tmp_path / "m.lf")
    back = latentfit.load(path)
    assert type(back) is GaussianHSMM and back.get_params() == m.get_params()
    assert back.score(X) == m.score(X)
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    np.testing.assert_array_equal(back.duration_pmf_, m.duration_pmf_)
    for cls, data in _fit_models()[1:]:
        other = cls(n_components=2, max_duration=10, duration=duration, n_iter=2).fit(data)
        again = latentfit.load(other.save(tmp_path / f"{cls.__name__}.lf"))
        assert again.score(data) == other.score(data)


def test_sample_follows_the_durations():
    m = _gaussian_hsmm(k=2, big_d=30, lambdas=(3.0, 10.0))
    X, states = m.sample(20000, random_state=0)
    assert X.shape == (20000, 1)
    cuts = np.flatnonzero(np.diff(states)) + 1
    seg_states = states[np.r_[0, cuts]][:-1]
    seg_lengths = np.diff(np.r_[0, cuts])
    # ~1300 segments per state: standard errors of the means 0.05 and 0.09
    np.testing.assert_allclose(
        [seg_lengths[seg_states == k].mean() - 1 for k in range(2)], [3.0, 10.0], rtol=0.05
    )
    assert np.all(states[cuts] != states[cuts - 1])


def test_feature_names_are_checked():
    pd = pytest.importorskip("pandas")
    X, _ = _gaussian_hsmm().sample(100, random_state=0)
    df = pd.DataFrame(X, columns=["a"])
    m = GaussianHSMM(n_components=2, max_duration=10, n_iter=2).fit(df)
    assert list(m.feature_names_in_) == ["a"]
    with pytest.raises(DataError, match="feature names"):
        m.score(pd.DataFrame(X, columns=["b"]))


def test_bad_settings_name_the_argument():
    X = np.random.default_rng(0).normal(size=(50, 1))
    with pytest.raises(ParameterError, match="max_duration"):
        GaussianHSMM(max_duration=0).fit(X)
    with pytest.raises(ParameterError, match="max_duration"):
        GaussianHSMM(max_duration=2.5).fit(X)
    with pytest.raises(ParameterError, match="duration must be one of"):
        GaussianHSMM(duration="gamma").fit(X)
    with pytest.raises(ParameterError, match="n_components must be at least 2"):
        GaussianHSMM(n_components=1).fit(X)
    with pytest.raises(ParameterError, match="right_censoring"):
        GaussianHSMM(right_censoring="yes").fit(X)
    m = _gaussian_hsmm()
    m.transmat_ = np.full((3, 3), 1 / 3)
    with pytest.raises(ParameterError, match=r"transmat_\[0, 0\]"):
        m.score(X)
    m = _gaussian_hsmm()
    m.duration_lambdas_ = np.array([1.0, -1.0, 2.0])
    with pytest.raises(ParameterError, match="duration_lambdas_"):
        m.score(X)


def test_memory_is_checked_before_allocating():
    """A max_duration whose durations cannot be held (a nonparametric pmf is a (k, D)
    parameter), and messages T·K·min(D, T) beyond the memory: ResourceLimitError giving the
    bytes, raised before anything that size exists."""
    X = np.zeros((20, 1))
    with pytest.raises(ResourceLimitError, match=r"max_duration=1,000,000,000,000.*bytes"):
        GaussianHSMM(max_duration=10**12, duration="nonparametric").fit(X)
    long = np.zeros((2_000_000, 1))
    m = _gaussian_hsmm(k=2, big_d=1_000_000, lambdas=(5.0, 5.0))
    with pytest.raises(ResourceLimitError, match=r"2,000,000 steps.*bytes"):
        m.predict_proba(long)
    with pytest.raises(ResourceLimitError, match=r"2,000,000 steps.*bytes"):
        GaussianHSMM(n_components=2, max_duration=1_000_000).fit(long)


def test_impossible_sequence_is_named():
    """Without censoring, a sequence whose last segment cannot end at its last step."""
    m = _gaussian_hsmm(k=2, big_d=3, right_censoring=False, duration="nonparametric")
    m.duration_probs_ = np.array([[0, 0, 1.0], [0, 0, 1.0]])  # every segment lasts 3 steps
    X = np.zeros((4, 1))
    assert m.score(X) == -np.inf
    with pytest.raises(DataError, match=r"sequence 1 \(rows 3..6\).*right_censoring"):
        m.predict_proba(np.zeros((7, 1)), [3, 4])
    with pytest.raises(DataError, match="sequence 0"):
        m.predict(X)
    m.set_params(right_censoring=True)
    assert np.isfinite(m.score(X))


def test_stationary_distribution_weights_the_durations():
    m = _gaussian_hsmm(k=2, big_d=60, lambdas=(1.0, 9.0))
    _, states = m.sample(50000, random_state=0)
    np.testing.assert_allclose(
        m.get_stationary_distribution(), np.bincount(states) / len(states), atol=0.02
    )


@pytest.mark.parametrize("duration", ["poisson", "negative_binomial", "nonparametric"])
def test_short_segments_are_found(duration):
    """States that change at nearly every step (mean durations 1.3 and 1.6): the fit reaches
    at least the generating model's likelihood and its mean durations (the starting durations
    come from the data's run lengths; from long segments EM stayed near 6-10 steps)."""
    truth = _gaussian_hsmm(k=2, big_d=20, lambdas=(0.3, 0.6))
    X, _ = truth.sample(2000, random_state=0)
    m = GaussianHSMM(
        n_components=2, max_duration=20, duration=duration, random_state=0, n_iter=100, tol=1e-6
    ).fit(X)
    assert m.score(X) >= truth.score(X)
    d = np.arange(1, 21)
    order = np.argsort(m.means_[:, 0])
    # ~700 segments per state: the sampling error of a mean duration is about 0.03
    np.testing.assert_allclose((m.duration_pmf_ @ d)[order], [1.3, 1.6], atol=0.1)


def test_torch_path_fits_as_the_compiled_one(monkeypatch):
    """Without the compiled kernels (other devices, or no numba) the torch recursions give
    the same fit, scores, posteriors and Viterbi path."""
    X, _ = _gaussian_hsmm().sample(200, random_state=4)
    kw = dict(n_components=3, max_duration=15, n_iter=4, random_state=0)
    a = GaussianHSMM(**kw, right_censoring=False).fit(X)
    import latentfit._compiled

    monkeypatch.setattr(latentfit._compiled, "available", lambda: False)
    b = GaussianHSMM(**kw, right_censoring=False).fit(X)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(b.duration_lambdas_, a.duration_lambdas_, rtol=1e-8)
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), atol=1e-8)
    np.testing.assert_array_equal(b.predict(X), a.predict(X))


def test_float32_agrees_with_float64():
    X, _ = _gaussian_hsmm().sample(500, random_state=5)
    m64 = _gaussian_hsmm()
    m32 = _gaussian_hsmm(dtype="float32")
    # float32 log-likelihood terms summed over 500 steps: ~1e-6 relative
    np.testing.assert_allclose(m32.score(X), m64.score(X), rtol=1e-5)
    np.testing.assert_allclose(m32.predict_proba(X), m64.predict_proba(X), atol=1e-4)
    fitted = GaussianHSMM(n_components=3, max_duration=30, dtype="float32", n_iter=5).fit(X)
    assert fitted.means_.dtype == np.float32 and np.isfinite(fitted.score(X))


def test_bad_data_names_the_problem():
    from sklearn.exceptions import NotFittedError

    X = np.random.default_rng(0).normal(size=(30, 1))
    with pytest.raises(NotFittedError):
        GaussianHSMM().score(X)
    m = GaussianHSMM(n_components=2, max_duration=5)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
    m.means_, m.covars_ = np.zeros((2, 1)), np.ones((2, 1))
    with pytest.raises(NotFittedError, match="duration_lambdas_"):
        m.score(X)
    m.duration_lambdas_ = np.ones(3)
    with pytest.raises(ParameterError, match=r"duration_lambdas_ must have shape \(2,\)"):
        m.score(X)
    with pytest.raises(DataError, match="lengths sum to 29"):
        GaussianHSMM(n_components=2).fit(X, [10, 19])
    bad = X.copy()
    bad[4, 0] = np.nan
    with pytest.raises(DataError, match="row 4"):
        GaussianHSMM(n_components=2).fit(bad)
    with pytest.raises(DataError, match="non-negative"):
        PoissonHSMM(n_components=2).fit(-np.ones((10, 1)))
    cat = CategoricalHSMM(n_components=2, n_features=3)
    with pytest.raises(DataError, match="row 2 of X holds symbol 5"):
        cat.fit(np.array([[0], [1], [5], [2]]))
    fitted = _gaussian_hsmm()
    with pytest.raises(ParameterError, match="decoder"):
        fitted.decode(X, algorithm="forward")
    with pytest.raises(ParameterError, match="n_samples"):
        fitted.sample(0)
    with pytest.raises(DataError, match="features"):
        fitted.score(np.zeros((5, 2)))


@pytest.mark.parametrize("censored", [True, False])
def test_known_states_equal_enumeration_through_them(censored):
    """y= (known states, -1 unknown), as every HMM takes it: score, predict_proba and decode
    equal the enumeration of the segmentations whose path passes through the known states;
    y all -1 is the unlabelled model exactly."""
    from tests.em.hsmm.brute import enumerate_hsmm

    m = _gaussian_hsmm(k=2, big_d=4, lambdas=(1.5, 0.7), right_censoring=censored)
    X = np.random.default_rng(1).normal(size=(7, 1)) * 2 + 1.5
    y = np.array([-1, 1, -1, -1, 0, -1, -1])
    ll = m._emission_log_likelihood(m._given_params(), torch.as_tensor(X)).numpy()
    rows = [
        (lp, np.repeat(states, durs), (states, durs))
        for lp, states, durs, _ in enumerate_hsmm(
            ll, m.startprob_, m.transmat_, m.duration_pmf_, censored
        )
    ]
    rows = [r for r in rows if np.all((y < 0) | (r[1] == y))]
    logs = np.array([r[0] for r in rows])
    log_l = np.logaddexp.reduce(logs)
    post = np.zeros((7, 2))
    segs: dict = {}
    for lp, path, key in rows:
        post[np.arange(7), path] += np.exp(lp - log_l)
        segs[key] = (np.logaddexp(segs.get(key, (-np.inf,))[0], lp), path)
    best_lp, best_path = max(segs.values(), key=lambda v: v[0])
    np.testing.assert_allclose(m.score(X, y=y), log_l, rtol=1e-10)
    np.testing.assert_allclose(m.predict_proba(X, y=y), post, atol=1e-10)
    lp, path = m.decode(X, y=y)
    np.testing.assert_allclose(lp, best_lp, rtol=1e-10)
    np.testing.assert_array_equal(path, best_path)
    np.testing.assert_array_equal(m.predict(X, y=y), best_path)
    unknown = np.full(7, -1)
    assert m.score(X, y=unknown) == m.score(X)
    np.testing.assert_array_equal(m.predict_proba(X, y=unknown), m.predict_proba(X))


def test_fit_with_known_states_keeps_them():
    """fit(X, y=...) conditions every E-step on the known states: the fitted model's
    posteriors given y put all their mass on them, and the fit's log-likelihood is log p(X,
    z_known) (at most the unlabelled one)."""
    X, states = _gaussian_hsmm().sample(300, random_state=0)
    y = np.full(len(X), -1)
    y[::10] = states[::10]
    m = GaussianHSMM(3, max_duration=30, n_iter=5, random_state=0).fit(X, y=y)
    post = m.predict_proba(X, y=y)
    np.testing.assert_allclose(post[y >= 0, y[y >= 0]], 1.0, atol=1e-12)
    assert m.score(X, y=y) <= m.score(X) + 1e-9
    assert np.all(np.diff(m.lower_bounds_) > -1e-6)
    with pytest.raises(DataError, match="y has 3 entries"):
        m.fit(X, y=[0, 1, 2])


def test_a_max_duration_far_beyond_the_data_starts_from_the_data_durations():
    # found by a helper's hunt: max_duration=10**6 on 30 rows spread the starting smoothing
    # count over a million durations, started the mean duration at 5e4 and ended at
    # lambda 5556 / 6251 with a lower score (-36.22 against -35.82), after 16 s of bisection
    # over every duration; it now starts, and ends, where max_duration=30 does
    import warnings

    X = np.random.default_rng(0).normal(size=(30, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = GaussianHSMM(2, max_duration=10**6, random_state=0, n_iter=5).fit(X)
        fit = GaussianHSMM(2, max_duration=30, random_state=0, n_iter=5).fit(X)
    np.testing.assert_allclose(wide.duration_lambdas_, fit.duration_lambdas_, rtol=1e-9)
    assert wide.score(X) == pytest.approx(fit.score(X), abs=1e-9)


@pytest.mark.parametrize("make", [GaussianHSMM, PoissonHSMM, CategoricalHSMM])
def test_partial_fit_is_refused(make):
    # the HMM's online EM ran on the semi-Markov model, its durations ignored and its zero
    # diagonal read as a chain that changes state at every step: a GaussianHSMM fitted to
    # two halves at 0 and 5 (score -79.4) had its means pulled to 3.50 and 3.13 (-146.3)
    X = np.abs(np.random.default_rng(0).normal(size=(40, 1))).round().astype(int)
    m = make(2, max_duration=10, random_state=0, n_iter=2)
    with pytest.raises(ParameterError, match=r"has no partial_fit.*fit\(\)"):
        m.partial_fit(X)
    fitted = m.fit(X)
    with pytest.raises(ParameterError, match="has no partial_fit"):
        fitted.partial_fit(X)


def test_a_huge_max_duration_costs_what_the_data_need():
    """Durations past the longest sequence reach a fit only through the survival of its
    censored last segments. A nonparametric pmf gives them no probability (its smoothing
    count spreads over 1..min(D, longest sequence)), so any max_duration at or past the
    longest sequence gives the fit of max_duration = that length, with zeros past it. A
    Poisson pmf is computed over the durations its mass reaches, not D of them: D = 1e15
    fits as D = 1e4 does. The negative binomial's M-step needs all D durations: a D whose
    work is too large is refused by name."""
    # Before: a nonparametric max_duration of 1e7 on 30 rows took 43 s and 2.3 GB (the fit
    # differing from D = 30: score -33.98237 against -33.98084); Poisson 1e7 ran past 120 s;
    # negative binomial 1e6 took 68 s, 1e7 past 120 s and 1e8 could pass the memory check
    # with a 1.6 GB pmf and then need some 100 GB for its gradient.
    import warnings

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (12, 1)), rng.normal(4, 1, (8, 1)), rng.normal(0, 1, (10, 1))]
    X = np.r_[X, X[:17] + 0.1]
    lengths = [30, 17]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(n_components=2, random_state=0, n_iter=5)
        for censored in (True, False):
            opts = dict(kw, duration="nonparametric", right_censoring=censored)
            wide = GaussianHSMM(max_duration=10**6, **opts).fit(X, lengths)
            fit = GaussianHSMM(max_duration=30, **opts).fit(X, lengths)
            np.testing.assert_allclose(wide.duration_probs_[:, :30], fit.duration_probs_)
            assert not wide.duration_probs_[:, 30:].any()
            np.testing.assert_allclose(wide.means_, fit.means_, rtol=1e-12)
            assert wide.score(X, lengths) == pytest.approx(fit.score(X, lengths), abs=1e-12)
        wide = GaussianHSMM(max_duration=10**15, **kw).fit(X, lengths)
        fit = GaussianHSMM(max_duration=10**4, **kw).fit(X, lengths)
    np.testing.assert_allclose(wide.duration_lambdas_, fit.duration_lambdas_, rtol=1e-12)
    assert wide.score(X, lengths) == pytest.approx(fit.score(X, lengths), abs=1e-10)
    assert wide.sample(5, random_state=0)[0].shape == (5, 1)
    with pytest.raises(ResourceLimitError, match=r"duration_pmf_ .*max_duration="):
        wide.duration_pmf_  # noqa: B018 (the (k, D) array itself)
    with pytest.raises(ParameterError, match=r"negative_binomial.*at most 1,048,576 with 2"):
        GaussianHSMM(2, duration="negative_binomial", max_duration=10**7).fit(X, lengths)


def test_a_state_far_from_the_centre_is_computed_about_its_own_mean():
    # GaussianHSMM takes GaussianHMM's emission functions, with their rule for states far
    # from the fit's centre (em.gaussian.far_components): checked here because its E-step is
    # its own. Rows 3, 5, 7 and two rows of 1e8 (float64), and a cluster of sd 0.01 a
    # hundred from one of sd 1 (float32 against float64), fit as GaussianHMM's do.
    import warnings

    from latentfit.errors import DegenerateComponentWarning

    far = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]] * 4)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(100, 1, (200, 2))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the rows of 1e8
        m = GaussianHSMM(2, max_duration=20, random_state=0, n_iter=50).fit(far)
        kw = dict(n_components=2, max_duration=400, random_state=0, n_iter=30)
        ref = GaussianHSMM(**kw).fit(X)
        m32 = GaussianHSMM(**kw, dtype="float32").fit(X)
    order = np.argsort(m.means_[:, 0])
    np.testing.assert_allclose(m.means_[order, 0], [5.0, 1e8], rtol=1e-12)
    np.testing.assert_allclose(m.covars_[order, 0, 0], [32.01 / 12, 0.01 / 8], rtol=1e-9)
    order, ref_order = np.argsort(m32.means_[:, 0]), np.argsort(ref.means_[:, 0])
    var, ref_var = m32.covars_[order, 0, 0], ref.covars_[ref_order, 0, 0]
    np.testing.assert_allclose(var[0], ref_var[0], rtol=1e-5)  # the tight state
    np.testing.assert_allclose(var[1], ref_var[1], rtol=2e-3)  # float32 statistics about 50
    assert m32.score(X) == pytest.approx(ref.score(X), rel=1e-4)


def test_bic_counts_the_nonparametric_durations_the_fit_estimated(tmp_path):
    # Two sequences, the longest 7 steps: a nonparametric pmf is fitted over durations 1..7
    # (0 past them whatever max_duration is). BIC counted k (D - 1) = 1998 duration
    # probabilities for D = 1000, and gave 4.9e3 where D = 7 gives 9.6e1 for the same fit.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, 3), rng.normal(5, 1, 4), rng.normal(0, 1, 2), rng.normal(5, 1, 3)]
    X, lengths = X[:, None], [7, 5]
    kw = dict(n_components=2, duration="nonparametric", random_state=0, n_iter=20)
    wide = GaussianHSMM(max_duration=1000, **kw).fit(X, lengths)
    # by hand: start 1, transitions 2 x (2 - 2) = 0 (zero diagonal), durations 2 x (7 - 1),
    # means 2, diagonal variances 2
    log_l = wide.score(X, lengths)
    assert wide.bic(X, lengths) == pytest.approx(-2 * log_l + 17 * np.log(12), rel=1e-12)
    assert wide.aic(X, lengths) == pytest.approx(-2 * log_l + 2 * 17, rel=1e-12)
    assert wide.n_durations_ == 7
    fit = GaussianHSMM(max_duration=7, **kw).fit(X, lengths)
    assert fit.bic(X, lengths) == pytest.approx(wide.bic(X, lengths), rel=1e-10)
    short = GaussianHSMM(max_duration=4, **kw).fit(X, lengths)  # D below the longest: D
    assert short.n_durations_ == 4 and short._n_parameters() == 1 + 2 * 3 + 4
    back = latentfit.load(wide.save(tmp_path / "m.lf"))
    assert back.n_durations_ == 7 and back.bic(X, lengths) == wide.bic(X, lengths)


@pytest.mark.parametrize("name", ["CategoricalHSMM", "PoissonHSMM"])
def test_a_row_no_state_can_emit_scores_minus_inf(name):
    """As the HMMs: score gives -inf for a sequence holding a symbol or count every state
    gives probability 0 (it raised); its posteriors and segmentation are refused by name."""
    if name == "CategoricalHSMM":
        fit_on, X = np.array([[0], [1], [1], [0]] * 5), np.array([[0], [1], [1], [0], [2], [1]])
        m = latentfit.CategoricalHSMM(2, n_features=3, max_duration=4, n_iter=2, random_state=0)
    else:
        fit_on = np.c_[np.arange(20) % 3, np.zeros(20)]
        X = np.array([[1, 0], [0, 0], [2, 0], [1, 0], [1, 2], [0, 0]])
        m = latentfit.PoissonHSMM(2, max_duration=4, n_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(fit_on)
    if name == "CategoricalHSMM":
        m.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])
    assert np.isfinite(m.score(X[:3])) and m.score(X, [3, 3]) == -np.inf
    for call in (m.predict_proba, m.predict, m.score_samples):
        with pytest.raises(DataError, match=r"row 4 of X \(step 1 of sequence 1\) has zero"):
            call(X, [3, 3])


def test_a_fit_that_keeps_its_emissions_names_a_row_no_state_can_emit():
    """It went on over data of probability 0 (log 0 clamped to about -708), score -inf after."""
    m = CategoricalHSMM(2, n_features=3, init_params="", params="st", n_iter=3, max_duration=3)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
    m.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])
    X = np.array([[0], [1], [1], [0], [1], [1], [0], [0], [2], [1]])
    with pytest.raises(DataError, match=r"row 8 of X \(step 2 of sequence 2\).*add 'e' to params"):
        m.fit(X, [3, 3, 4])


def test_posteriors_sum_to_one_where_log_densities_tie_beyond_float64s_digits(monkeypatch):
    """A row at -9.2e18 (int64's minimum standing for a missing value) under states a unit
    apart: their log-densities (-4.3e39) are equal to the last digit, log p(x) = that value +
    log 2 rounded back to it, and predict_proba gave both states 1 (a row summing to 2; found
    by the property tests). Each row of the posteriors now sums to 1."""
    X = np.array([[0.09], [0.99], [1.93]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = latentfit.GaussianHSMM(3, max_duration=1, n_iter=2, random_state=0).fit(X)
    model.startprob_ = np.array([0.5, 0.5, 0.0])
    tied = torch.full((1, 3), -4.25e39, dtype=torch.float64)
    monkeypatch.setattr(model, "_emission_log_likelihood", lambda params, X: tied)
    P = model.predict_proba(np.array([[-9.2e18]]))
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(P, [[0.5, 0.5, 0.0]], rtol=1e-12)
