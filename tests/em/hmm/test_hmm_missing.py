"""GaussianHMM with missing values (missing="marginalize"): NaN entries are marginalised out."""

import itertools
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from latentfit import GaussianHMM

from .test_hmm_models import COVARS, gaussian_data, quiet_fit, set_params, start_params

CTS = ["diag", "spherical", "full", "tied"]


def _full(covars, ct, k, d):
    c = np.asarray(covars, dtype=float)
    return {
        "diag": lambda: np.stack([np.diag(v) for v in c]),
        "spherical": lambda: np.stack([np.eye(d) * v for v in c]),
        "full": lambda: c,
        "tied": lambda: np.broadcast_to(c, (k, d, d)),
    }[ct]()


def _brute_force(X, lengths, params, ct):
    """log p(x) and the best path, by enumerating every state path of every sequence, with
    the marginal density of each row's observed coordinates from scipy."""
    k, d = params["means_"].shape
    cov = _full(params["covars_"], ct, k, d)
    logb = np.zeros((len(X), k))
    for t, row in enumerate(X):
        o = ~np.isnan(row)
        for s in range(k):
            if o.any():
                logb[t, s] = multivariate_normal(
                    params["means_"][s, o], cov[s][np.ix_(o, o)]
                ).logpdf(row[o])
    logA, logpi = np.log(params["transmat_"]), np.log(params["startprob_"])
    total, best_lp, best_path, start = 0.0, 0.0, [], 0
    for n in lengths:
        scores = {}
        for path in itertools.product(range(k), repeat=n):
            lp = logpi[path[0]] + sum(logA[a, b] for a, b in itertools.pairwise(path))
            scores[path] = lp + sum(logb[start + i, s] for i, s in enumerate(path))
        vals = np.array(list(scores.values()))
        total += logsumexp(vals)
        path = max(scores, key=scores.get)
        best_lp += scores[path]
        best_path += list(path)
        start += n
    return total, best_lp, np.array(best_path)


@pytest.mark.parametrize("ct", CTS)
def test_complete_data_fit_is_the_ordinary_fit(ct):
    X, lengths = gaussian_data()
    start = start_params(3, 2, ct)
    kw = dict(covariance_type=ct, n_iter=4, tol=-np.inf, init_params="")
    plain = quiet_fit(set_params(GaussianHMM(3, **kw), start), X, lengths)
    marg = quiet_fit(set_params(GaussianHMM(3, missing="marginalize", **kw), start), X, lengths)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(marg, name), getattr(plain, name))
    assert marg.lower_bounds_ == plain.lower_bounds_


@pytest.mark.parametrize("ct", CTS)
def test_score_and_decode_with_gaps_equal_brute_force(ct):
    rng = np.random.default_rng(3)
    k, d = 2, 3
    params = start_params(k, d, ct, seed=4)
    params["covars_"] = {
        "diag": lambda: COVARS["diag"](k, d),
        "spherical": lambda: COVARS["spherical"](k, d),
        "full": lambda: np.stack([np.eye(d) * (1 + 0.3 * i) + 0.4 for i in range(k)]),
        "tied": lambda: np.eye(d) + 0.5,
    }[ct]()
    X = rng.normal(size=(9, d)) * 2
    X[rng.random(X.shape) < 0.35] = np.nan
    X[4] = np.nan  # a step with nothing observed
    lengths = [5, 4]
    m = set_params(GaussianHMM(k, covariance_type=ct, missing="marginalize"), params)
    m.n_features = d
    logp, best_lp, best_path = _brute_force(X, lengths, params, ct)
    np.testing.assert_allclose(m.score(X, lengths), logp, rtol=1e-10)
    lp, path = m.decode(X, lengths)
    np.testing.assert_array_equal(path, best_path)
    np.testing.assert_allclose(lp, best_lp, rtol=1e-10)
    np.testing.assert_array_equal(m.predict(X, lengths), best_path)
    post = m.predict_proba(X, lengths)
    np.testing.assert_allclose(post.sum(1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("ct", ["diag", "full"])
def test_parameters_recovered_with_entries_missing_at_random(ct):
    truth = GaussianHMM(2, covariance_type=ct, random_state=0)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transmat_ = np.array([[0.95, 0.05], [0.1, 0.9]])
    truth.means_ = np.array([[0.0, 0.0], [3.0, -2.0]])
    truth.covars_ = (
        np.array([[1.0, 0.5], [0.6, 1.2]])
        if ct == "diag"
        else np.array([[[1.0, 0.4], [0.4, 0.8]], [[0.7, -0.3], [-0.3, 1.1]]])
    )
    truth.n_features = 2
    X, _ = truth.sample(6000, random_state=1)
    rng = np.random.default_rng(2)
    X[rng.random(X.shape) < 0.2] = np.nan  # 20% of entries missing completely at random
    m = GaussianHMM(2, covariance_type=ct, missing="marginalize", n_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no monotonicity or unvisited-state warning
        m.fit(X)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-8 * abs(m.lower_bounds_[-1]))  # exact EM
    order = np.argsort(m.means_[:, 0])
    # 6000 steps, 80% observed: standard errors of a few hundredths; 0.1-0.15 is > 4 of them
    np.testing.assert_allclose(m.means_[order], truth.means_, atol=0.1)
    np.testing.assert_allclose(m.covars_[order], truth.covars_, atol=0.15)
    np.testing.assert_allclose(m.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.03)


def test_nan_is_refused_by_default_naming_row_and_column():
    X, _ = gaussian_data()
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 7, column 1.*missing='marginalize'"):
        GaussianHMM(3).fit(X)
    m = quiet_fit(GaussianHMM(3, n_iter=2, random_state=0), gaussian_data()[0])
    with pytest.raises(ValueError, match="row 7, column 1"):
        m.predict(X)
    with pytest.raises(ValueError, match="missing must be"):
        GaussianHMM(3, missing="drop").fit(gaussian_data()[0])


def test_infinite_values_are_refused_even_when_marginalising():
    X, _ = gaussian_data()
    X[2, 0] = np.inf
    with pytest.raises(ValueError, match="row 2, column 0"):
        GaussianHMM(3, missing="marginalize").fit(X)
