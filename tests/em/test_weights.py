"""Every estimator that takes ``sample_weight`` held to the three laws of frequency weights.

(a) integer weights fit, score and count in BIC/AIC as the rows repeated; (b) a weight of 0
is the row removed; (c) all weights times c leave the fitted parameters (and the mean
log-likelihood ``score``, ``lower_bound_``) unchanged, while the total log-likelihood, and
BIC's n = Σ w, scale by c. BayesianGaussianMixture's priors have a strength fixed in rows,
so there (c) holds only in the limit: the weights scaled up, its fit tends to the maximum
likelihood fit of GaussianMixture.

Zero-weight rows: X is checked whole before the weights are read, so a NaN or inf in a row of
weight 0 is refused, by every model, as it is in any other row (drop the row, or use
``missing="marginalize"`` where the model has it). Every path that takes weights (an array
source, ``n_init`` restarts, float32, ``missing="marginalize"``, ``partial_fit``) gives the
fit's answer.

The reference is each model fitted to the rows repeated (or removed): the same EM, without
weights. Starts are equivalent by construction: FA and PPCA start from the weighted PCA
(deterministic), the mixtures from k-means on well-separated clusters, which finds the same
partition (up to labels) with and without weights; fits run a fixed number of iterations
(``tol=0``), so their lower-bound histories must agree, not only their optima.
"""

import math
import warnings

import numpy as np
import pytest

from latentfit import (
    PPCA,
    ArraySource,
    BayesianGaussianMixture,
    BernoulliMixture,
    FactorAnalysis,
    GaussianMixture,
    MixtureModel,
    PoissonMixture,
)
from latentfit.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N = 60


def _gauss(seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 0.6, size=(N // 3, 2)) for c in (-8, 0, 8)])
    return X @ np.array([[1.0, 0.4], [0.0, 1.0]])


def _factors(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, 2)) @ rng.normal(size=(2, 4)) + rng.normal(size=(N, 4)) * 0.3


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.poisson(lam, size=(N // 2, 3)) for lam in (1, 12)]).astype(float)


def _binary(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random((N // 2, 5)) < p for p in (0.1, 0.9)]).astype(float)


MIX = dict(tol=0, max_iter=15, random_state=0)
FAC = dict(tol=0, max_iter=40, random_state=0)
#: name -> (a fresh estimator from keyword settings, its data, whether it has BIC/AIC)
MODELS = {
    "gmm-full": (lambda **kw: GaussianMixture(3, **{**MIX, **kw}), _gauss),
    "gmm-diag": (lambda **kw: GaussianMixture(3, covariance_type="diag", **{**MIX, **kw}), _gauss),
    "gmm-tied": (lambda **kw: GaussianMixture(3, covariance_type="tied", **{**MIX, **kw}), _gauss),
    "mixture-normal": (lambda **kw: MixtureModel("normal", 3, **{**MIX, **kw}), _gauss),
    "mixture-mvn": (lambda **kw: MixtureModel("mvn", 3, **{**MIX, **kw}), _gauss),
    "poisson": (lambda **kw: PoissonMixture(2, **{**MIX, **kw}), _counts),
    "bernoulli": (lambda **kw: BernoulliMixture(2, **{**MIX, **kw}), _binary),
    "bgmm": (lambda **kw: BayesianGaussianMixture(n_components=3, **{**MIX, **kw}), _gauss),
    "fa": (lambda **kw: FactorAnalysis(2, **{**FAC, **kw}), _factors),
    "ppca": (lambda **kw: PPCA(2, **{**FAC, **kw}), _factors),
}
CRITERIA = [m for m in MODELS if m != "bgmm"]  # BGMM has no BIC/AIC
SCALED = [m for m in MODELS if m != "bgmm"]  # BGMM: (c) in the limit, below
MISSING = ["gmm-full", "gmm-diag", "fa", "ppca"]  # the models with missing="marginalize"
ONLINE = [m for m in MODELS if m != "bgmm"]  # partial_fit


def _data(name):
    make, data = MODELS[name]
    return make, data()


def _int_weights(n, seed=1):
    w = np.random.default_rng(seed).integers(0, 4, size=n)
    w[0] = 0  # a row left out
    return w


def _float_weights(n, seed=2):
    return np.random.default_rng(seed).uniform(0.2, 3.0, size=n)


def _same_fit(a, b, X, rtol=1e-8):
    """The same fitted density (score_samples does not depend on the components' labels) and,
    for a batch fit, the same lower-bound history."""
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=rtol, atol=rtol)
    if hasattr(a, "lower_bounds_") and hasattr(b, "lower_bounds_"):
        np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol)


# ---------------------------------------------------------------------- (a) integer weights
@pytest.mark.parametrize("name", MODELS)
def test_integer_weights_fit_as_repeated_rows(name):
    make, X = _data(name)
    w = _int_weights(len(X))
    a = make().fit(X, sample_weight=w)
    b = make().fit(np.repeat(X, w, 0))
    _same_fit(a, b, X)
    np.testing.assert_allclose(a.score(X, sample_weight=w), b.score(np.repeat(X, w, 0)), rtol=1e-10)


@pytest.mark.parametrize("name", CRITERIA)
def test_weighted_bic_and_aic_count_the_rows_repeated(name):
    # A weighted BIC's n is Σ w (frequency weights), its log-likelihood Σ w_n log p(x_n):
    # before, n was the number of rows and the log-likelihood the weighted mean times it.
    make, X = _data(name)
    w = _int_weights(len(X))
    model = make().fit(X, sample_weight=w)
    R = np.repeat(X, w, 0)
    assert model.bic(X, sample_weight=w) == pytest.approx(model.bic(R), rel=1e-10)
    assert model.aic(X, sample_weight=w) == pytest.approx(model.aic(R), rel=1e-10)
    p = model._n_parameters()
    log_l = float(np.sum(w * model.score_samples(X)))
    assert model.bic(X, sample_weight=w) == pytest.approx(-2 * log_l + p * math.log(w.sum()))
    # the weights by position, as score(X, y, sample_weight) takes them: counted rows before
    assert model.bic(X, None, w) == pytest.approx(model.bic(R), rel=1e-10)


# ---------------------------------------------------------------------- (b) zero weights
@pytest.mark.parametrize("name", MODELS)
def test_zero_weight_is_the_row_removed(name):
    make, X = _data(name)
    w = _int_weights(len(X)).astype(float)
    keep = w > 0
    a = make().fit(X, sample_weight=w)
    b = make().fit(X[keep], sample_weight=w[keep])
    _same_fit(a, b, X)
    assert a.score(X, sample_weight=w) == pytest.approx(b.score(X[keep], sample_weight=w[keep]))
    if name in CRITERIA:
        assert a.bic(X, sample_weight=w) == pytest.approx(b.bic(X[keep], sample_weight=w[keep]))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_zero_weight_row_is_still_checked(name, bad):
    # The rule every model keeps: X is checked whole, whatever its weights.
    make, X = _data(name)
    w = _int_weights(len(X))
    X = X.copy()
    X[0, 1] = bad
    with pytest.raises(DataError, match=r"row 0, column 1"):
        make().fit(X, sample_weight=w)


@pytest.mark.parametrize("name", MISSING)
def test_a_missing_value_in_a_zero_weight_row_is_the_row_removed(name):
    make, X = _data(name)
    w = _int_weights(len(X)).astype(float)
    keep = w > 0
    Xm = X.copy()
    Xm[0, 1] = np.nan
    a = make(missing="marginalize").fit(Xm, sample_weight=w)
    b = make(missing="marginalize").fit(X[keep], sample_weight=w[keep])
    _same_fit(a, b, X)


# ---------------------------------------------------------------------- (c) scaled weights
@pytest.mark.parametrize("name", SCALED)
@pytest.mark.parametrize("c", [1e-300, 1e-12, 1e-3, 7.0, 1e6])
def test_scaled_weights_leave_the_fit_unchanged(name, c):
    make, X = _data(name)
    w = _float_weights(len(X))
    a = make().fit(X, sample_weight=w)
    b = make().fit(X, sample_weight=c * w)
    _same_fit(a, b, X, rtol=1e-7)
    assert b.score(X, sample_weight=c * w) == pytest.approx(a.score(X, sample_weight=w))
    # the total log-likelihood scales by c (AIC = −2 log L + 2p)
    p = a._n_parameters()
    log_l = (2 * p - a.aic(X, sample_weight=w)) / 2
    assert (2 * p - b.aic(X, sample_weight=c * w)) / 2 == pytest.approx(c * log_l, rel=1e-7)


def test_bgmm_scaled_weights_tend_to_the_maximum_likelihood_fit():
    # BGMM's priors count as a fixed number of rows, so scaled weights change its fit (the
    # documented exception to (c)); as they grow, the prior's share vanishes and the fit
    # tends to GaussianMixture's maximum-likelihood fit of the same weights.
    X = _gauss()
    w = _float_weights(len(X))
    ref = GaussianMixture(3, tol=1e-12, max_iter=500, random_state=0).fit(X, sample_weight=w)
    gaps = []
    for c in (1.0, 1e3, 1e6):
        b = BayesianGaussianMixture(n_components=3, tol=1e-12, max_iter=500, random_state=0)
        b.fit(X, sample_weight=c * w)
        gaps.append(np.abs(b.score_samples(X) - ref.score_samples(X)).max())
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-4  # the prior's weight is O(1/c) of the data's: ~1e-6 here


# ---------------------------------------------------------------------- every weighted path
@pytest.mark.parametrize("name", [m for m in MODELS if m != "bgmm"])
def test_an_array_source_with_weights_fits_as_the_array(name):
    make, X = _data(name)
    w = _float_weights(len(X))
    a = make().fit(X, sample_weight=w)
    b = make().fit(ArraySource(X, sample_weight=w, chunk_rows=7))
    _same_fit(a, b, X, rtol=1e-9)


@pytest.mark.parametrize("name", [m for m in MODELS if m != "bgmm"])
def test_too_few_weighted_rows_are_refused_from_a_source_as_from_the_array(name):
    # Rows of weight 0 are rows removed: with fewer weighted rows than the model needs to
    # start from (one per component; FA/PPCA: 2), the array is refused, and so must the
    # same rows read from a source be (before, the source fit went on: copies of one
    # component, or a component of weight 1e-15).
    make, X = _data(name)
    need = 2 if name in ("fa", "ppca") else make().n_components
    w = np.zeros(len(X))
    w[np.linspace(0, len(X) - 1, need - 1).astype(int)] = 1.0
    with pytest.raises(DataError, match="positive") as in_memory:
        make().fit(X, sample_weight=w)
    with pytest.raises(DataError, match="positive") as from_source:
        make().fit(ArraySource(X, sample_weight=w, chunk_rows=7))
    assert type(from_source.value) is type(in_memory.value)


@pytest.mark.parametrize("name", MODELS)
def test_restarts_float32_and_missing_keep_the_weighted_fit(name):
    make, X = _data(name)
    w = _float_weights(len(X))
    a = make().fit(X, sample_weight=w)
    if "n_init" in a.get_params():
        _same_fit(make(n_init=2).fit(X, sample_weight=w), a, X, rtol=1e-9)
    single = make(dtype="float32").fit(X, sample_weight=w)
    ll, ref = single.score_samples(X), a.score_samples(X)
    np.testing.assert_allclose(ll, ref, rtol=1e-4, atol=1e-4)  # float32 rounding
    if name in MISSING:
        _same_fit(make(missing="marginalize").fit(X, sample_weight=w), a, X, rtol=1e-9)


@pytest.mark.parametrize("name", ONLINE)
def test_partial_fit_weights_keep_the_laws(name):
    make, X = _data(name)
    w = _int_weights(len(X))
    a = make().partial_fit(X, sample_weight=w)
    b = make().partial_fit(np.repeat(X, w, 0))
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=1e-9)
    c = make().partial_fit(X, sample_weight=1e6 * w)
    np.testing.assert_allclose(a.score_samples(X), c.score_samples(X), rtol=1e-9)


# ---------------------------------------------------------------------- refusals
BAD = {
    "negative": (lambda n: np.where(np.arange(n) == 3, -1.0, 1.0), r"sample 3"),
    "nan": (lambda n: np.where(np.arange(n) == 3, np.nan, 1.0), r"entry 3"),
    "inf": (lambda n: np.where(np.arange(n) == 3, np.inf, 1.0), r"entry 3"),
    "all zero": (lambda n: np.zeros(n), r"sums to zero"),
    "wrong length": (lambda n: np.ones(n - 1), r"shape \(60,\)"),
    "huge sum": (lambda n: np.full(n, 1e307), r"overflows float64.*Rescale sample_weight"),
    "subnormal": (lambda n: np.full(n, 1e-310), r"smallest normal.*Rescale sample_weight"),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("what", BAD)
def test_bad_weights_are_refused_in_latentfit_words(name, what):
    make, X = _data(name)
    weights, says = BAD[what]
    w = weights(len(X))
    with pytest.raises(DataError, match=says):
        make().fit(X, sample_weight=w)
    fitted = make(max_iter=2).fit(X)
    with pytest.raises(DataError, match=says):
        fitted.score(X, sample_weight=w)
    if name in CRITERIA:
        with pytest.raises(DataError, match=says):
            fitted.bic(X, sample_weight=w)
    if name in ONLINE:
        with pytest.raises(DataError, match=says):
            make().partial_fit(X, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError):
            make().fit(ArraySource(X, sample_weight=w))


@pytest.mark.parametrize("name", ["gmm-full", "bgmm", "fa", "ppca"])
def test_weights_that_overflow_the_moments_are_named_as_the_cause(name):
    # Σ w = 6e307 fits float64, Σ w (x − c)² does not; the same rows of weight 1 are fine, so
    # the weights must be what the message tells to rescale (before: "rescale X (e.g. divide
    # it by 1e1 ...)", data whose span is 14).
    make, X = _data(name)
    w = np.full(len(X), 1e306)
    with pytest.raises(DataError, match=r"Σ w = 6e\+307.*rescale sample_weight") as err:
        make().fit(X, sample_weight=w)
    assert "rescale X" not in str(err.value)
    if name != "bgmm":
        with pytest.raises(DataError, match=r"rescale sample_weight"):
            make().fit(ArraySource(X, sample_weight=w, chunk_rows=7))


@pytest.mark.parametrize("family", ["poisson", "exponential", "gamma", "PoissonMixture"])
def test_weights_that_overflow_a_familys_statistics_are_named_as_the_cause(family):
    # Σ w = 6e307 fits float64; Σ w x (poisson, gamma) or Σ w log p(x) (exponential) does not,
    # and the same rows of weight 1 are fine. Before: NonFiniteLowerBoundError, "too few or too
    # extreme rows ... scaling the data", which names neither the weights nor what to do.
    rng = np.random.default_rng(0)
    X = {
        "exponential": rng.exponential(2.0, (N, 2)),
        "gamma": rng.gamma(2.0, 2.0, (N, 2)),
    }.get(family, rng.poisson(3.0, (N, 2)).astype(float))

    def make():
        if family == "PoissonMixture":
            return PoissonMixture(2, random_state=0)
        return MixtureModel(family, n_components=2, random_state=0)

    w = np.full(N, 1e306)
    pattern = r"Σ w = 6e\+307, the largest 1e\+306.*Rescale sample_weight"
    with pytest.raises(DataError, match=pattern):
        make().fit(X, sample_weight=w)
    with pytest.raises(DataError, match=pattern):
        make().partial_fit(X, sample_weight=w)
    # the advice works: the weights divided by their maximum fit as the rows of weight 1
    rescaled = make().fit(X, sample_weight=w / 1e306)
    np.testing.assert_allclose(rescaled.weights_, make().fit(X).weights_, rtol=1e-8)
