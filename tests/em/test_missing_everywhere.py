"""Missing values across every estimator, as one table of models × checks.

The models that take NaN entries (``missing="marginalize"``, and LinearGaussianSSM always)
must give a row the log-density of its observed entries under the model's marginal,
computed here independently: scipy's multivariate normal on the observed block of every
component's or state's mean and covariance, combined by logsumexp, by enumerating every path
(HMM) or segmentation (HSMM) of a short sequence, or as one joint Gaussian of the stacked
observations (SSM). A row with nothing observed adds log 1 = 0; a column observed in no row
is refused by name in fit; inf is never read as missing.

Every other model and function must refuse a NaN or ±inf before any work, in latentfit's
own error classes, naming the row and the column (0-based, as every message of the data
says it) for fit, partial_fit and every scoring and labelling method.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import latentfit as lf
from latentfit.errors import DataError, LatentfitError
from latentfit.mcmc import gibbs_gmm, gibbs_hmm


def _complete(n=80, d=3, seed=0):
    """Two overlapping groups: their posteriors are not all 0 or 1."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + np.repeat([[0.0] * d, [1.0] * d], n // 2, 0)


def _data():
    """:func:`_complete` with gaps: one entry missing (row 0), two (row 1), all (row 2), one
    more (rows 3, 50)."""
    X = _complete()
    X[0, 1] = X[1, 0] = X[1, 2] = X[3, 0] = X[50, 2] = np.nan
    X[2] = np.nan
    return X


def _fitted(make, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short fits: convergence is not what is tested
        return make().fit(X)


def _observed_logpdf(x, mean, cov):
    """log N(x_o | mean_o, cov_oo) of the observed entries o of x; 0 when none is."""
    o = ~np.isnan(x)
    if not o.any():
        return 0.0
    return multivariate_normal(mean[o], cov[np.ix_(o, o)]).logpdf(x[o])


def _dense(cov, ct, k, d):
    """Covariances in any covariance_type as (k, d, d)."""
    cov = np.asarray(cov)
    return {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([c * np.eye(d) for c in cov]),
    }[ct]()


# ---------------------------------------------------------------------- the laws
@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_gaussian_mixture_scores_the_marginal_of_the_observed_entries(ct):
    X = _data()
    g = _fitted(lambda: lf.GaussianMixture(2, covariance_type=ct, missing="marginalize"), X)
    cov = _dense(g.covariances_, ct, 2, 3)
    joint = np.array(
        [
            [np.log(g.weights_[j]) + _observed_logpdf(x, g.means_[j], cov[j]) for j in range(2)]
            for x in X[:6]
        ]
    )
    ref = logsumexp(joint, axis=1)
    np.testing.assert_allclose(g.score_samples(X[:6]), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.predict_proba(X[:6]), np.exp(joint - ref[:, None]), atol=1e-12)
    np.testing.assert_array_equal(g.predict(X[:6]), joint.argmax(1))
    assert g.score_samples(X[2:3])[0] == pytest.approx(0.0, abs=1e-12)  # nothing observed
    np.testing.assert_allclose(g.predict_proba(X[2:3])[0], g.weights_, rtol=1e-12)


@pytest.mark.parametrize("cls", [lf.FactorAnalysis, lf.PPCA])
def test_factor_models_score_the_marginal_of_the_observed_entries(cls):
    X = _data()
    m = _fitted(lambda: cls(2, missing="marginalize"), X)
    cov = m.get_covariance()
    ref = [_observed_logpdf(x, m.mean_, cov) for x in X[:6]]
    np.testing.assert_allclose(m.score_samples(X[:6]), ref, rtol=1e-10, atol=1e-12)
    assert m.score_samples(X[2:3])[0] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(m.transform(X[2:3]), 0.0, atol=1e-12)  # the prior's mean


def _brute_hmm(seq, start, trans, emission):
    """log p(seq) summed over every state path."""
    k, terms = len(start), []
    for path in itertools.product(range(k), repeat=len(seq)):
        lp = np.log(start[path[0]]) + sum(np.log(trans[a, b]) for a, b in itertools.pairwise(path))
        terms.append(lp + sum(emission(x, s) for x, s in zip(seq, path, strict=True)))
    return logsumexp(terms)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_gaussian_hmm_scores_the_marginal_of_the_observed_entries(ct):
    X = _data()
    h = _fitted(
        lambda: lf.GaussianHMM(
            2, covariance_type=ct, missing="marginalize", n_iter=3, random_state=0
        ),
        X,
    )
    seq = X[:5]  # rows with one, two, all and no entries missing
    ref = _brute_hmm(
        seq, h.startprob_, h.transmat_, lambda x, s: _observed_logpdf(x, h.means_[s], h.covars_[s])
    )
    assert h.score(seq) == pytest.approx(ref, rel=1e-10)
    assert h.score(X[2:3]) == pytest.approx(0.0, abs=1e-12)


def _segmentations(t):
    if t == 0:
        yield ()
        return
    for d in range(1, t + 1):
        for rest in _segmentations(t - d):
            yield (d, *rest)


def _brute_hsmm(seq, m, emission):
    """log p(seq) summed over every segmentation and state sequence (no self-transitions;
    the last segment censored with right_censoring)."""
    pmf, terms = m.duration_pmf_, []
    for durations in _segmentations(len(seq)):
        for states in itertools.product(range(m.n_components), repeat=len(durations)):
            if any(a == b for a, b in itertools.pairwise(states)):
                continue
            lp, t = np.log(m.startprob_[states[0]]), 0
            for i, (s, d) in enumerate(zip(states, durations, strict=True)):
                if i:
                    lp += np.log(m.transmat_[states[i - 1], s])
                last = i == len(durations) - 1
                p = pmf[s, d - 1 :].sum() if last and m.right_censoring else pmf[s, d - 1]
                lp += np.log(p) + sum(emission(x, s) for x in seq[t : t + d])
                t += d
            terms.append(lp)
    return logsumexp(terms)


@pytest.mark.parametrize("ct", ["full", "diag"])
@pytest.mark.parametrize("censored", [True, False])
def test_gaussian_hsmm_scores_the_marginal_of_the_observed_entries(ct, censored):
    X = _data()
    m = _fitted(
        lambda: lf.GaussianHSMM(
            2,
            max_duration=6,
            right_censoring=censored,
            covariance_type=ct,
            missing="marginalize",
            n_iter=3,
            random_state=0,
        ),
        X,
    )
    seq = X[:5]
    ref = _brute_hsmm(seq, m, lambda x, s: _observed_logpdf(x, m.means_[s], m.covars_[s]))
    assert m.score(seq) == pytest.approx(ref, rel=1e-10)
    if censored:  # one segment that may go on: P(d >= 1) = 1, and nothing observed
        assert m.score(X[2:3]) == pytest.approx(0.0, abs=1e-12)


def test_ssm_scores_the_joint_marginal_of_the_observed_entries():
    X = _data()
    s = _fitted(lambda: lf.LinearGaussianSSM(2, n_iter=3, random_state=0), X)
    A, C, Q = s.transition_matrix_, s.observation_matrix_, s.transition_covariance_
    R, d = s.observation_covariance_, s.observation_offset_
    T, k = 5, A.shape[0]
    # the states' joint law: E x_t = A^t mu0, Cov(x_u, x_t) = A^(u-t) Cov(x_t) for u >= t
    means, covs = [s.initial_state_mean_], [s.initial_state_covariance_]
    for _ in range(T - 1):
        means.append(A @ means[-1])
        covs.append(A @ covs[-1] @ A.T + Q)
    Sx = np.zeros((T * k, T * k))
    for t in range(T):
        for u in range(t, T):
            c = np.linalg.matrix_power(A, u - t) @ covs[t]
            Sx[u * k : (u + 1) * k, t * k : (t + 1) * k] = c
            Sx[t * k : (t + 1) * k, u * k : (u + 1) * k] = c.T
    Cb = np.kron(np.eye(T), C)
    mean_y = Cb @ np.concatenate(means) + np.tile(d, T)
    cov_y = Cb @ Sx @ Cb.T + np.kron(np.eye(T), R)
    ref = _observed_logpdf(X[:T].ravel(), mean_y, cov_y)
    assert s.score(X[:T]) == pytest.approx(ref, rel=1e-10)
    assert s.score_samples(X[:T])[2] == 0.0  # nothing observed at step 2
    assert s.score(X[2:3]) == 0.0


MARGINALISING = {
    "GaussianMixture": lambda: lf.GaussianMixture(2, missing="marginalize", random_state=0),
    "FactorAnalysis": lambda: lf.FactorAnalysis(1, missing="marginalize"),
    "PPCA": lambda: lf.PPCA(1, missing="marginalize"),
    "GaussianHMM": lambda: lf.GaussianHMM(2, missing="marginalize", n_iter=2, random_state=0),
    "GaussianHSMM": lambda: lf.GaussianHSMM(
        2, max_duration=5, missing="marginalize", n_iter=2, random_state=0
    ),
    "LinearGaussianSSM": lambda: lf.LinearGaussianSSM(1, n_iter=2, random_state=0),
}


@pytest.mark.parametrize("name", MARGINALISING)
def test_a_column_observed_in_no_row_is_refused_by_name(name):
    X = _data()
    X[:, 1] = np.nan
    with pytest.raises(DataError, match=r"column 1\b"):
        _fitted(MARGINALISING[name], X)


@pytest.mark.parametrize("name", MARGINALISING)
@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("method", ["fit", "score"])
def test_inf_is_never_read_as_missing(name, value, method):
    X = _data()
    bad = X.copy()
    bad[4, 1] = value
    model = MARGINALISING[name]() if method == "fit" else _fitted(MARGINALISING[name], X)
    with pytest.raises(
        DataError,
        match=r"contains -?inf at row 4, column 1: an infinite value is not a missing one",
    ) as err:
        getattr(model, method)(bad)
    assert ("-inf" in str(err.value)) == (value < 0)


def test_rows_with_nothing_observed_leave_the_converged_mixture_unchanged():
    """They add 0 to the log-likelihood, so its maximum is where it was (EM reaches it more
    slowly: such rows keep their prior responsibilities)."""
    X = _data()[3:]  # row 2 is the one with nothing observed
    gaps = np.insert(X, [10, 40, 40], np.nan, axis=0)
    kw = dict(
        covariance_type="diag",
        missing="marginalize",
        weights_init=[0.5, 0.5],  # every starting value given: the start is not drawn
        means_init=[[0.0] * 3, [1.0] * 3],
        precisions_init=np.ones((2, 3)),
        random_state=0,
        tol=1e-14,  # to the fixed point: both runs then stop at it
        max_iter=5000,
    )
    a = lf.GaussianMixture(2, **kw).fit(X)
    b = lf.GaussianMixture(2, **kw).fit(gaps)
    for attr in ("weights_", "means_", "covariances_"):
        # EM converges linearly: stopped at a gain of 1e-14 it is ~1e-7 from the fixed point
        np.testing.assert_allclose(getattr(b, attr), getattr(a, attr), rtol=1e-6)
    assert b.score(gaps) * len(gaps) == pytest.approx(a.score(X) * len(X), rel=1e-10)


# ---------------------------------------------------------------------- the refusals
def _counts(X):
    return np.round(np.abs(X) * 2)


REFUSING = {
    "GaussianMixture": (lambda: lf.GaussianMixture(2, random_state=0), None),
    "FactorAnalysis": (lambda: lf.FactorAnalysis(1), None),
    "PPCA": (lambda: lf.PPCA(1), None),
    "BayesianGaussianMixture": (
        lambda: lf.BayesianGaussianMixture(n_components=2, random_state=0),
        None,
    ),
    "MixtureModel": (lambda: lf.MixtureModel("poisson", 2, random_state=0), _counts),
    "PoissonMixture": (lambda: lf.PoissonMixture(2, random_state=0), _counts),
    "BernoulliMixture": (
        lambda: lf.BernoulliMixture(2, random_state=0),
        lambda X: (X > 0.5) * 1.0,
    ),
    "MultinomialMixture": (lambda: lf.MultinomialMixture(2, random_state=0), _counts),
    "CategoricalMixture": (
        lambda: lf.CategoricalMixture(2, random_state=0),
        lambda X: _counts(X) % 3,
    ),
    "GaussianHMM": (lambda: lf.GaussianHMM(2, n_iter=2, random_state=0), None),
    "GMMHMM": (lambda: lf.GMMHMM(2, n_mix=1, n_iter=2, random_state=0), None),
    "PoissonHMM": (lambda: lf.PoissonHMM(2, n_iter=2, random_state=0), _counts),
    "MultinomialHMM": (lambda: lf.MultinomialHMM(2, n_iter=2, random_state=0), _counts),
    "AutoregressiveHMM": (lambda: lf.AutoregressiveHMM(2, n_iter=2, random_state=0), None),
    "VariationalGaussianHMM": (
        lambda: lf.VariationalGaussianHMM(2, n_iter=2, random_state=0),
        None,
    ),
    "GaussianHSMM": (
        lambda: lf.GaussianHSMM(2, max_duration=5, n_iter=2, random_state=0),
        None,
    ),
    "PoissonHSMM": (
        lambda: lf.PoissonHSMM(2, max_duration=5, n_iter=2, random_state=0),
        _counts,
    ),
    "MAF": (
        lambda: lf.FlowDensity("maf", n_layers=1, hidden=4, epochs=1, random_state=0),
        None,
    ),
    "DDPM": (
        lambda: lf.DDPM(n_steps=5, hidden=8, n_hidden=1, discrete=False, epochs=1, random_state=0),
        None,
    ),
}
METHODS = [
    "fit",
    "partial_fit",
    "score",
    "score_samples",
    "predict",
    "predict_proba",
    "decode",
    "transform",
]
_clean: dict = {}


def _clean_fit(name):
    """The model of ``name`` fitted once on complete data (for the scoring methods)."""
    if name not in _clean:
        make, convert = REFUSING[name]
        X = np.abs(_complete(60, 2, seed=1))
        X = convert(X) if convert else X
        _clean[name] = (_fitted(make, X), X)
    return _clean[name]


def _cases():
    for name, (make, _) in REFUSING.items():
        for method in METHODS:
            if hasattr(make(), method):
                yield name, method


@pytest.mark.parametrize("name, method", list(_cases()))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_nan_or_inf_is_refused_naming_its_row_and_column(name, method, value):
    model, X = _clean_fit(name)
    bad = X.copy()
    col = 0 if name == "CategoricalMixture" else 1
    bad[3, col] = value
    target = REFUSING[name][0]() if method in ("fit", "partial_fit") else model
    try:
        getattr(target, method)(bad)
    except LatentfitError as err:
        if method == "partial_fit" and "has no partial_fit" in str(err):
            return  # refused whatever the data (HSMMs, variational HMMs)
        assert isinstance(err, DataError), err
        assert f"row 3, column {col}" in str(err), err
    else:
        pytest.fail(f"{name}.{method} took {value} at row 3")


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize(
    "call",
    [
        lambda X: lf.fit_mle("normal", X[:, 1]),
        lambda X: lf.fit_map("normal", X[:, 1], prior={"loc": ("normal", 0, 10)}),
        lambda X: gibbs_gmm(X, 2, num_warmup=1, num_draws=1, num_chains=1),
        lambda X: gibbs_hmm(X, 2, num_warmup=1, num_draws=1, num_chains=1),
        lambda X: lf.select_model(X, family="gmm", n_components=[1]),
    ],
    ids=["fit_mle", "fit_map", "gibbs_gmm", "gibbs_hmm", "select_model"],
)
def test_functions_refuse_a_nan_or_inf_naming_where(call, value):
    X = _complete(40, 2, seed=2)
    X[3, 1] = value
    with pytest.raises(DataError, match=r"(row 3, column 1|entry 3)"):
        call(X)
