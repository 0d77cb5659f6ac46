"""AutoregressiveHMM against brute force, GaussianHMM, numpy least squares and simulations."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

import latentfit
from latentfit import AutoregressiveHMM, GaussianHMM
from latentfit.errors import DataError, ParameterError


def _random_model(k, d, p, seed, scale=0.4):
    rng = np.random.default_rng(seed)
    m = AutoregressiveHMM(k, order=p)
    m.startprob_ = rng.dirichlet(np.ones(k))
    m.transmat_ = rng.dirichlet(np.ones(k), size=k)
    m.coefs_ = scale * rng.standard_normal((k, p, d, d)) / (p * d)
    m.intercepts_ = rng.standard_normal((k, d))
    B = rng.standard_normal((k, d, d))
    m.covars_ = B @ B.transpose(0, 2, 1) / d + 0.3 * np.eye(d)
    return m


def _state_log_densities(m, x):
    """(t − p, k) log N(x_t; sum_l A_{k,l} x_{t-l} + b_k, Sigma_k) by scipy, for one sequence."""
    p, k = m.order, m.n_components
    out = np.empty((len(x) - p, k))
    for t in range(p, len(x)):
        for s in range(k):
            mean = m.intercepts_[s] + sum(
                m.coefs_[s, lag - 1] @ x[t - lag] for lag in range(1, p + 1)
            )
            out[t - p, s] = multivariate_normal(mean, m.covars_[s]).logpdf(x[t])
    return out


def _brute_force(m, x):
    """log p(x_p.. | x_..p), posteriors (t, k), best path and its log joint: every path of
    states over all t rows, the first p rows unscored (emission factor 1)."""
    dens = np.r_[np.zeros((m.order, m.n_components)), _state_log_densities(m, x)]
    n, k = dens.shape
    logs, paths = [], list(itertools.product(range(k), repeat=n))
    for path in paths:
        lp = np.log(m.startprob_[path[0]]) + dens[0, path[0]]
        for t in range(1, n):
            lp += np.log(m.transmat_[path[t - 1], path[t]]) + dens[t, path[t]]
        logs.append(lp)
    logs = np.array(logs)
    total = logsumexp(logs)
    post = np.zeros((n, k))
    for lp, path in zip(logs, paths, strict=True):
        post[np.arange(n), path] += np.exp(lp - total)
    best = int(np.argmax(logs))
    return total, post, np.array(paths[best]), logs[best]


@pytest.mark.parametrize(("k", "d", "p", "t"), [(2, 2, 1, 7), (3, 1, 2, 7), (2, 3, 3, 8)])
def test_brute_force_score_posteriors_viterbi(k, d, p, t):
    m = _random_model(k, d, p, seed=k + 10 * p)
    x = np.random.default_rng(1).standard_normal((t, d))
    total, post, path, best = _brute_force(m, x)
    assert m.score(x) == pytest.approx(total, rel=1e-10)
    ll, got = m.score_samples(x)
    assert ll == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(got, post, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(m.predict_proba(x), post, rtol=1e-8, atol=1e-12)
    logp, states = m.decode(x, algorithm="viterbi")
    assert logp == pytest.approx(best, rel=1e-10)
    np.testing.assert_array_equal(states, path)
    logp_map, states_map = m.decode(x, algorithm="map")
    np.testing.assert_array_equal(states_map, post.argmax(1))
    assert logp_map == pytest.approx(post.max(1).sum(), rel=1e-10)


def test_several_sequences_are_the_sum_of_separate_ones():
    m = _random_model(3, 2, 2, seed=3)
    rng = np.random.default_rng(4)
    seqs = [rng.standard_normal((n, 2)) for n in (5, 9, 3)]
    X, lengths = np.vstack(seqs), [len(s) for s in seqs]
    assert m.score(X, lengths) == pytest.approx(sum(m.score(s) for s in seqs), rel=1e-12)
    post = m.predict_proba(X, lengths)
    np.testing.assert_allclose(post, np.vstack([m.predict_proba(s) for s in seqs]), atol=1e-12)
    np.testing.assert_array_equal(
        m.predict(X, lengths), np.concatenate([m.predict(s) for s in seqs])
    )


@pytest.mark.parametrize("p", [1, 3])
def test_zero_dynamics_equal_gaussian_hmm_after_the_conditioning_rows(p):
    k, d = 3, 2
    ar = _random_model(k, d, p, seed=5)
    ar.coefs_ = np.zeros_like(ar.coefs_)
    g = GaussianHMM(k, covariance_type="full")
    # the unscored rows only move the chain: the state at row p has law startprob T^p
    g.startprob_ = ar.startprob_ @ np.linalg.matrix_power(ar.transmat_, p)
    g.transmat_ = ar.transmat_
    g.means_, g.covars_ = ar.intercepts_, ar.covars_
    rng = np.random.default_rng(6)
    lengths = [8, 12, 5]
    X = rng.standard_normal((sum(lengths), d)) + 1.5
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    rest = np.vstack([X[s + p : s + n] for s, n in zip(starts, lengths, strict=True)])
    rest_lengths = [n - p for n in lengths]
    assert ar.score(X, lengths) == pytest.approx(g.score(rest, rest_lengths), rel=1e-12)
    keep = np.ones(len(X), dtype=bool)
    for s in starts:
        keep[s : s + p] = False
    np.testing.assert_allclose(
        ar.predict_proba(X, lengths)[keep], g.predict_proba(rest, rest_lengths), atol=1e-12
    )
    np.testing.assert_array_equal(ar.predict(X, lengths)[keep], g.predict(rest, rest_lengths))


@pytest.mark.parametrize("ridge", [0.0, 2.5])
def test_mstep_is_weighted_least_squares_by_numpy(ridge):
    """One EM iteration from given parameters: the AR weights are numpy's least squares on the
    sqrt(gamma)-weighted rows [x_{t-1}, .., x_{t-p}, 1] (ridge: sqrt(ridge) rows appended on
    the lags), the covariances the weighted residual scatter (+ ridge A A^T) over N_k."""
    k, d, p = 2, 2, 2
    m = _random_model(k, d, p, seed=7)
    # the process moved to 100 (far from the origin: the fit's centring is exercised)
    m.intercepts_ = m.intercepts_ + (np.eye(d) - m.coefs_.sum(1)) @ np.full(d, 100.0)
    lengths = [40, 25]
    hist = np.full((p, d), 100.0)
    X = np.vstack([m.sample(n, random_state=n, history=hist)[0] for n in lengths])
    gamma = m.predict_proba(X, lengths)
    keep = np.ones(len(X), dtype=bool)
    keep[[0, 1, 40, 41]] = False  # the conditioning rows of the two sequences (p = 2)
    rows, ys = [], []
    start = 0
    for n in lengths:
        seq = X[start : start + n]
        for t in range(p, n):
            rows.append(np.concatenate([seq[t - lag] for lag in range(1, p + 1)]))
            ys.append(seq[t])
        start += n
    Z = np.c_[np.array(rows), np.ones(len(rows))]
    Y = np.array(ys)
    g = gamma[keep]
    m.n_iter, m.tol, m.init_params, m.params, m.ridge, m.min_covar = (
        1,
        -np.inf,
        "",
        "ac",
        ridge,
        1e-12,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one iteration cannot converge
        m.fit(X, lengths)
    for s in range(k):
        w = np.sqrt(g[:, s])
        Zw, Yw = Z * w[:, None], Y * w[:, None]
        if ridge:
            extra = np.c_[np.sqrt(ridge) * np.eye(p * d), np.zeros((p * d, 1))]
            Zw, Yw = np.vstack([Zw, extra]), np.vstack([Yw, np.zeros((p * d, d))])
        W, *_ = np.linalg.lstsq(Zw, Yw, rcond=None)  # (p d + 1, d)
        coefs = np.stack([W[lag * d : (lag + 1) * d].T for lag in range(p)])
        np.testing.assert_allclose(m.coefs_[s], coefs, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(m.intercepts_[s], W[-1], rtol=1e-8)
        r = Y - Z @ W
        A = W[:-1].T  # (d, p d)
        cov = ((g[:, s, None] * r).T @ r + ridge * A @ A.T) / g[:, s].sum()
        np.testing.assert_allclose(m.covars_[s], cov, rtol=1e-8)


@pytest.mark.parametrize(("seed", "ridge"), [(0, 0.0), (1, 0.0), (2, 5.0)])
def test_em_never_lowers_the_penalised_log_likelihood(seed, ridge):
    rng = np.random.default_rng(seed)
    lengths = [60, 45, 30]
    X = np.cumsum(rng.standard_normal((sum(lengths), 2)), 0) * 0.3 + rng.standard_normal((1, 2))
    m = AutoregressiveHMM(3, order=2, ridge=ridge, n_iter=25, tol=-np.inf, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.em.hmm.UnvisitedStateWarning)
        warnings.simplefilter("ignore", UserWarning)
        m.fit(X, lengths)
    lb = np.array(m.lower_bounds_)
    assert len(lb) == 25
    assert (np.diff(lb) >= -1e-9 * np.abs(lb[1:])).all()
    if not ridge:  # the bound is the log-likelihood of the parameters before each M-step
        assert m.score(X, lengths) >= lb[-1] - 1e-9 * abs(lb[-1])


def test_parameters_recovered_on_a_switching_ar1():
    A = np.array([[[0.9, 0.2], [0.0, 0.6]], [[-0.6, 0.0], [0.4, -0.5]]])
    b = np.array([[1.0, -0.5], [-1.0, 2.0]])
    cov = np.array([[[0.10, 0.03], [0.03, 0.08]], [[0.05, 0.0], [0.0, 0.20]]])
    P = np.array([[0.95, 0.05], [0.08, 0.92]])
    truth = AutoregressiveHMM(2, order=1)
    truth.startprob_, truth.transmat_ = np.array([0.5, 0.5]), P
    truth.coefs_, truth.intercepts_, truth.covars_ = A[:, None], b, cov
    seqs = [truth.sample(2000, random_state=r)[0] for r in range(3)]
    X, lengths = np.vstack(seqs), [2000] * 3
    m = AutoregressiveHMM(2, order=1, n_iter=100, n_init=3, random_state=0).fit(X, lengths)
    order = np.argsort(m.intercepts_[:, 0])[::-1]  # state 0 has the larger first intercept
    # ~6000 steps: standard errors of the AR weights are about 0.01-0.02; 0.06 is 3-6 of them
    np.testing.assert_allclose(m.coefs_[order, 0], A, atol=0.06)
    np.testing.assert_allclose(m.intercepts_[order], b, atol=0.1)
    np.testing.assert_allclose(m.covars_[order], cov, atol=0.02)
    np.testing.assert_allclose(m.transmat_[np.ix_(order, order)], P, atol=0.02)
    # the fitted model explains the data at least as well as the truth (it is the MLE)
    assert m.score(X, lengths) >= truth.score(X, lengths)


def test_sample_from_history_is_scored_by_the_model():
    m = _random_model(2, 2, 2, seed=9)
    hist = np.array([[5.0, -5.0], [4.0, -4.0]])
    X, states = m.sample(6, random_state=1, history=hist)
    assert X.shape == (6, 2) and states.shape == (6,)
    # the first drawn step follows its state's regression on the given history
    X2, states2 = m.sample(6, random_state=1)  # zero history: same noise, same states
    np.testing.assert_array_equal(states, states2)
    s = states[0]
    mean_h = m.intercepts_[s] + m.coefs_[s, 0] @ hist[1] + m.coefs_[s, 1] @ hist[0]
    np.testing.assert_allclose(X[0] - mean_h, X2[0] - m.intercepts_[s], atol=1e-12)
    with pytest.raises(ParameterError, match="history must be 2 finite row"):
        m.sample(3, history=np.zeros((1, 2)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_history_with_a_missing_or_infinite_value_is_refused_naming_it(value):
    """A NaN in a history of the right shape was said as a wrong shape: "history must be 2
    finite row(s) of 2 values ..., got shape (2, 2)"."""
    m = _random_model(2, 2, 2, seed=9)
    hist = np.array([[5.0, -5.0], [4.0, -4.0]])
    hist[1, 0] = value
    with pytest.raises(ParameterError, match=r"history\[1, 0\] is (nan|-?inf): the 2 row") as err:
        m.sample(3, history=hist)
    assert "shape" not in str(err.value)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(10)
    X = np.cumsum(rng.standard_normal((120, 2)), 0)
    m = AutoregressiveHMM(2, order=2, ridge=0.5, n_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(pd_frame(X), [70, 50])
    m.save(tmp_path / "ar.safetensors")
    back = latentfit.load(tmp_path / "ar.safetensors")
    assert isinstance(back, AutoregressiveHMM) and back.get_params() == m.get_params()
    for name in ("startprob_", "transmat_", "coefs_", "intercepts_", "covars_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert list(back.feature_names_in_) == ["a", "b"]
    assert back.score(pd_frame(X), [70, 50]) == m.score(pd_frame(X), [70, 50])
    assert back.lower_bounds_ == m.lower_bounds_


def pd_frame(X):
    import pandas as pd

    return pd.DataFrame(X, columns=["a", "b"])


def test_bad_input_names_the_problem():
    X = np.random.default_rng(11).standard_normal((20, 2))
    with pytest.raises(ParameterError, match="order must be a positive integer"):
        AutoregressiveHMM(2, order=0).fit(X)
    with pytest.raises(ParameterError, match="order must be a positive integer"):
        AutoregressiveHMM(2, order=1.5).fit(X)
    with pytest.raises(DataError, match=r"sequence 1 has 2 row\(s\).*of order 2 needs at least 3"):
        AutoregressiveHMM(2, order=2).fit(X, [10, 2, 8])
    with pytest.raises(ParameterError, match="ridge must be a finite number >= 0"):
        AutoregressiveHMM(2, ridge=-1.0).fit(X)
    m = _random_model(2, 2, 1, seed=12)
    with pytest.raises(DataError, match=r"sequence 0 has 1 row"):
        m.score(X[:1])
    with pytest.raises(DataError, match="lengths sum to 19"):
        m.score(X, [10, 9])
    m.coefs_ = np.zeros((2, 2, 2, 2))
    with pytest.raises(ParameterError, match=r"coefs_ must have shape .* \(2, 1, 2, 2\)"):
        m.score(X)
    m = _random_model(2, 2, 1, seed=12)
    m.covars_ = -m.covars_
    with pytest.raises(ParameterError, match=r"covars_\[0\] must be a symmetric positive"):
        m.score(X)
    with pytest.raises(DataError, match="has 3 features"):
        _random_model(2, 2, 1, seed=12).score(np.zeros((5, 3)))
    with pytest.raises(DataError, match="fewer than n_components=4"):
        AutoregressiveHMM(4, order=2).fit(X[:5])


def test_float32_fit_agrees_with_float64():
    rng = np.random.default_rng(13)
    X = np.cumsum(rng.standard_normal((400, 2)), 0) * 0.2 + 1e3
    kw = dict(n_components=2, order=1, n_iter=5, tol=-np.inf, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m64 = AutoregressiveHMM(**kw).fit(X)
        m32 = AutoregressiveHMM(**kw, dtype="float32").fit(X)
    # the fit is centred on the data median: float32 keeps ~1e-4 relative on the scores
    assert m32.score(X) == pytest.approx(m64.score(X), rel=1e-3)


def test_fixed_weights_reestimate_only_the_covariances():
    """params="c": the covariances are the weighted scatter of the residuals of the kept AR
    weights (not of the least squares ones)."""
    m = _random_model(2, 2, 1, seed=14)
    X = m.sample(80, random_state=3)[0]
    gamma = m.predict_proba(X)[1:]
    coefs, b = m.coefs_.copy(), m.intercepts_.copy()
    m.n_iter, m.tol, m.init_params, m.params, m.min_covar = 1, -np.inf, "", "c", 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(X)
    np.testing.assert_allclose(m.coefs_, coefs, rtol=1e-12)
    np.testing.assert_allclose(m.intercepts_, b, rtol=1e-12, atol=1e-12)
    for s in range(2):
        r = X[1:] - X[:-1] @ coefs[s, 0].T - b[s]
        cov = (gamma[:, s, None] * r).T @ r / gamma[:, s].sum()
        np.testing.assert_allclose(m.covars_[s], cov, rtol=1e-8)


def test_min_covar_floors_the_eigenvalues():
    """A state on an exact (noise-free) linear recurrence has a singular residual scatter: its
    covariance's eigenvalues are raised to min_covar, the larger ones kept."""
    x = np.zeros((60, 2))
    x[0] = [1.0, 2.0]
    rng = np.random.default_rng(15)
    for t in range(1, 60):
        x[t] = [0.5 * x[t - 1, 0] + 1.0, x[t - 1, 1] * 0.3 + rng.standard_normal()]
    m = AutoregressiveHMM(1, order=1, min_covar=1e-4, n_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(x)
    # one state: every scored row has weight 1, the M-step is ordinary least squares
    Z = np.c_[x[:-1], np.ones(59)]
    W, *_ = np.linalg.lstsq(Z, x[1:], rcond=None)
    r = x[1:] - Z @ W
    want = np.linalg.eigvalsh(r.T @ r / 59)
    assert want[0] < 1e-20  # the exact recurrence leaves no residual in its direction
    vals = np.linalg.eigvalsh(m.covars_[0])
    assert vals[0] == pytest.approx(1e-4, rel=1e-8)
    assert vals[1] == pytest.approx(want[1], rel=1e-8)  # floored, not shifted


def test_unvisited_state_keeps_its_parameters_and_is_named():
    m = _random_model(2, 2, 1, seed=16)
    m.startprob_ = np.array([1.0, 0.0])
    m.transmat_ = np.array([[1.0, 0.0], [0.5, 0.5]])  # state 1 is never reached
    X = m.sample(50, random_state=0)[0]
    coefs1, cov1 = m.coefs_[1].copy(), m.covars_[1].copy()
    m.n_iter, m.tol, m.init_params = 2, 1e6, ""  # stops at iteration 2, converged
    with pytest.warns(latentfit.em.hmm.UnvisitedStateWarning, match=r"state\(s\) \[1\]"):
        m.fit(X)
    np.testing.assert_allclose(m.coefs_[1], coefs1, rtol=1e-12)
    np.testing.assert_allclose(m.covars_[1], cov1, rtol=1e-12)
    assert np.isfinite(m.coefs_).all() and np.isfinite(m.covars_).all()


def test_a_source_is_refused():
    X = np.random.default_rng(17).standard_normal((30, 2))
    with pytest.raises(ParameterError, match="in memory only"):
        AutoregressiveHMM(2).fit(latentfit.ArraySource(X))


def test_partial_labels_condition_on_the_known_states():
    """Known states (-1 unknown): the score is log p(x, z_known) and the posteriors p(z | x,
    z_known), by brute force over the paths through the known states."""
    m = _random_model(2, 2, 1, seed=3)
    x = np.random.default_rng(2).standard_normal((7, 2))
    y = np.array([-1, 1, -1, -1, 0, -1, -1])
    dens = np.r_[np.zeros((1, 2)), _state_log_densities(m, x)]
    logs, paths = [], []
    for path in itertools.product(range(2), repeat=7):
        if any(y[t] >= 0 and path[t] != y[t] for t in range(7)):
            continue
        lp = np.log(m.startprob_[path[0]]) + dens[0, path[0]]
        for t in range(1, 7):
            lp += np.log(m.transmat_[path[t - 1], path[t]]) + dens[t, path[t]]
        logs.append(lp)
        paths.append(path)
    total = logsumexp(logs)
    post = np.zeros((7, 2))
    for lp, path in zip(logs, paths, strict=True):
        post[np.arange(7), path] += np.exp(lp - total)
    assert m.score(x, y=y) == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(m.predict_proba(x, y=y), post, rtol=1e-8, atol=1e-12)
    assert m.score(x, y=np.full(7, -1)) == m.score(x)
    fitted = AutoregressiveHMM(2, order=1, n_iter=5, random_state=0).fit(x, y=y)
    assert list(fitted.predict(x, y=y)[[1, 4]]) == [1, 0]


def test_data_far_from_the_origin_keep_every_noise_covariance_positive_definite():
    # found by the property tests: rows near 1.4e13 with 20 states on 60 rows floored a
    # near-singular residual covariance at min_covar = 1e-3 beside eigenvalues of 1e25, and
    # the next E-step's Cholesky raised torch's LinAlgError
    X = 1.4e13 + 2e12 * np.random.default_rng(153).normal(size=(60, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = AutoregressiveHMM(n_components=20, n_iter=5, random_state=0).fit(X)
    assert np.isfinite(m.score(X))
    assert (np.linalg.eigvalsh(m.covars_) > 0).all()


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_too_few_scored_rows_are_refused_before_the_design_is_made(monkeypatch, how):
    """The refusal of fewer scored rows than states came only after the whole lagged design
    was computed; it is now made from the lengths, before it. Sequences of 4 and 3 rows at
    order 2 score 2 + 1 rows."""
    from latentfit.em.hmm import autoregressive

    def no_work(*args, **kwargs):
        raise AssertionError("the data were read before the refusal")

    monkeypatch.setattr(autoregressive, "lagged_design", no_work)
    X = np.random.default_rng(0).normal(size=(7, 2))
    m = AutoregressiveHMM(4, order=2)
    with pytest.raises(
        DataError, match="has 3 rows after the first 2 of each sequence, fewer than n_components=4"
    ):
        getattr(m, how)(X, [4, 3])


def _two_groups(offset):
    """Two AR(1) sequences of 60 rows, the second moved by ``offset``: (X, lengths, the
    unmoved sequences)."""
    rng = np.random.default_rng(0)
    seqs = []
    for a, sd in ((0.5, 0.1), (-0.3, 0.2)):
        x = [0.0]
        for _ in range(59):
            x.append(a * x[-1] + sd * rng.standard_normal())
        seqs.append(np.array(x)[:, None])
    return np.vstack([seqs[0], seqs[1] + offset]), [60, 60], seqs


def test_states_far_apart_keep_their_noise_variances():
    """Two groups of rows 1e8 apart (noise sd 0.1 and 0.2): the sums of z z^T, z x^T, x x^T
    about the data's mean lost every digit of each state's variance (fit scored -1201 with
    both variances at min_covar, instead of 70.46). Each state's statistics are now taken
    about its own centre. With the groups ~1e9 noise sds apart the posteriors are one state
    per sequence, so the fit is each sequence's least squares (numpy on the unmoved data):
    the score is 2 log(1/2) (each sequence starts in its own state and stays there) plus
    the Gaussian log-likelihood of each sequence's residuals at their mean square."""
    X, lengths, seqs = _two_groups(1e8)
    want, coefs, icpt, var = 2 * np.log(0.5), [], [], []
    for x in seqs:
        Z = np.c_[x[:-1], np.ones(59)]
        w = np.linalg.lstsq(Z, x[1:, 0], rcond=None)[0]
        s2 = np.mean((x[1:, 0] - Z @ w) ** 2)
        want += -59 / 2 * (np.log(2 * np.pi * s2) + 1)
        coefs.append(w[0])
        icpt.append(w[1])
        var.append(s2)
    icpt[1] += (1 - coefs[1]) * 1e8  # the move's exact effect on the intercept
    m = AutoregressiveHMM(2, order=1, n_iter=50, tol=1e-8, random_state=0).fit(X, lengths)
    order = np.argsort(m.intercepts_[:, 0])  # the state of the first sequence first
    # 1e-6: the rows near 1e8 are held to ~1.5e-8, a 1e-7 part of the noise sd 0.1
    assert m.score(X, lengths) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(m.coefs_[order, 0, 0, 0], coefs, rtol=1e-6)
    np.testing.assert_allclose(m.intercepts_[order, 0], icpt, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.covars_[order, 0, 0], var, rtol=1e-6)

    # online EM: as on the same sequences 100 apart (where the statistics keep their digits)
    near, _, _ = _two_groups(100.0)
    runs = []
    for data in (X, near):
        o = AutoregressiveHMM(2, order=1, random_state=0)
        for _ in range(10):
            o.partial_fit(data, lengths)
        runs.append(o)
    far, ref = runs
    assert far.score(X, lengths) == pytest.approx(ref.score(near, lengths), rel=1e-6)
    np.testing.assert_allclose(far.coefs_, ref.coefs_, rtol=1e-6)
    np.testing.assert_allclose(far.covars_, ref.covars_, rtol=1e-6)
    # online EM's averaged steps stop short of the batch fit: within 1% of its variances
    np.testing.assert_allclose(np.sort(far.covars_.ravel()), np.sort(var), rtol=1e-2)


def test_statistics_moved_to_other_centres_equal_those_taken_there():
    """translate_ar_stats against ar_stats taken directly about the new centres, with the
    end-state axis of online EM (k = 2 states × e = 3 end states, p = 2, d = 2)."""
    from latentfit.em.hmm.autoregressive import ar_stats, lagged_design, translate_ar_stats

    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(30, 2)), dtype=torch.float64)
    D = lagged_design(X, [12, 18], 2)
    W = torch.as_tensor(rng.uniform(size=(30, 2, 3)), dtype=torch.float64)  # (t, k, e)
    old = torch.as_tensor(rng.normal(size=(2, 2)), dtype=torch.float64)
    new = torch.as_tensor(rng.normal(size=(2, 2)), dtype=torch.float64)

    def online(centres):  # (k, ..., e) as online EM keeps them
        s = ar_stats(D, W.reshape(30, 6), 2, centres.repeat_interleave(3, 0))
        return {key: v.view(2, 3, *v.shape[1:]).movedim(1, -1) for key, v in s.items()}

    moved = translate_ar_stats(online(old), old - new)
    for key, v in online(new).items():
        torch.testing.assert_close(moved[key], v, rtol=1e-12, atol=1e-12)
    batch = translate_ar_stats(ar_stats(D, W[:, :, 0], 2, old), old - new)
    for key, v in ar_stats(D, W[:, :, 0], 2, new).items():
        torch.testing.assert_close(batch[key], v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_one_state_over_rows_too_far_apart_warns_that_its_variance_is_lost(how):
    """One state over two sequences 1e8 apart: its regression (a ~ 1 to reach both levels)
    cancels terms of 1e16 against a residual variance of 0.073 (numpy's least squares on the
    lagged rows), and fit returned 2.71, partial_fit min_covar, without a word. It is now a
    PrecisionLossWarning naming the state; 100 apart, the variance is numpy's and nothing
    is said."""
    from latentfit.errors import PrecisionLossWarning

    def run(X, lengths):
        m = AutoregressiveHMM(1, order=1, n_iter=5, random_state=0)
        if how == "fit":
            return m.fit(X, lengths)
        for _ in range(3):
            m.partial_fit(X, lengths)
        return m

    X, lengths, _ = _two_groups(1e8)
    with pytest.warns(PrecisionLossWarning, match=r"state\(s\) \[0\] keeps fewer than 3 digits"):
        run(X, lengths)
    X, lengths, _ = _two_groups(100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionLossWarning)
        m = run(X, lengths)
    if how == "fit":
        Z = np.c_[np.r_[X[:59], X[60:119]], np.ones(118)]
        y = np.r_[X[1:60, 0], X[61:, 0]]
        r = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
        assert m.covars_[0, 0, 0] == pytest.approx(np.mean(r**2), rel=1e-8)


def _exact_wls(Z, y, w):
    """The weighted least squares weights and residual variance of y (t, d) on Z (t, m) with
    weights w (t,), in exact rational arithmetic (the normal equations solved by fractions)."""
    from fractions import Fraction

    Z, y, w = (
        [[Fraction(float(v)) for v in np.atleast_1d(r)] for r in a] for a in (Z, y, w[:, None])
    )
    m, d = len(Z[0]), len(y[0])
    out = []
    for j in range(d):
        A = [
            [sum(wi[0] * zi[a] * zi[b] for wi, zi in zip(w, Z, strict=True)) for b in range(m)]
            + [sum(wi[0] * zi[a] * yi[j] for wi, zi, yi in zip(w, Z, y, strict=True))]
            for a in range(m)
        ]
        for c in range(m):  # Gauss-Jordan elimination
            A[c] = [v / A[c][c] for v in A[c]]
            for r in range(m):
                if r != c:
                    A[r] = [v - A[r][c] * u for v, u in zip(A[r], A[c], strict=True)]
        beta = [A[r][m] for r in range(m)]
        rss = sum(
            wi[0] * (yi[j] - sum(b * z for b, z in zip(beta, zi, strict=True))) ** 2
            for wi, zi, yi in zip(w, Z, y, strict=True)
        )
        out.append(([float(b) for b in beta], float(rss / sum(wi[0] for wi in w))))
    return out


@pytest.mark.parametrize(
    ("d", "dtype", "far"), [(1, "float64", 1e17), (2, "float64", 1e17), (1, "float32", 1e7)]
)
def test_rows_near_one_value_keep_their_digits_beside_one_far_row(d, dtype, far):
    """59 rows of normal(2.4, 1) and one row at 1e17: the design rows were taken about the
    data's mean (1.7e15, spaced by 0.25), so every row near 2.4 was rounded to a multiple of
    0.25 and the state over them fitted the intercept 2.5042 and variance 0.80388 (2.5005
    and 0.81084 are right). Its regression now equals the exact weighted least squares on the
    rows it takes (posteriors 0 or 1 here), float32 with its far row at 1e7 likewise."""
    rng = np.random.default_rng(0)
    X = rng.normal(2.4, 1, (60, d))
    X[30, 0] = far  # in column 0 only: a far row along (1, 1) leaves G_k too ill-conditioned
    X = X.astype(dtype)
    m = AutoregressiveHMM(2, order=1, n_iter=20, init_params="", dtype=dtype)
    # the start: one state per group, no dynamics
    m.startprob_, m.transmat_ = np.full(2, 0.5), np.full((2, 2), 0.5)
    m.coefs_, m.covars_ = np.zeros((2, 1, d, d)), np.stack([np.eye(d)] * 2)
    m.intercepts_ = np.array([[2.4] * d, [far] + [2.4] * (d - 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the far state's single row: its variance is floored
        m.fit(X)
    s = 0  # the state of the rows near 2.4
    g = m.predict_proba(X)[1:, s]
    assert np.all((g < 1e-6) | (g > 1 - 1e-6)) and round(g.sum()) == 58  # row 30: the other
    X64 = X.astype(np.float64)
    exact = _exact_wls(np.c_[X64[:-1], np.ones(59)], X64[1:], np.round(g))
    tol = 1e-9 if dtype == "float64" else 1e-5  # float32: the data's own rounding
    for j, (beta, var) in enumerate(exact):
        assert m.intercepts_[s, j] == pytest.approx(beta[-1], rel=tol)
        np.testing.assert_allclose(m.coefs_[s, 0, j], beta[:-1], rtol=tol, atol=tol / far)
        assert m.covars_[s, j, j] == pytest.approx(var, rel=tol)


@pytest.mark.parametrize(
    ("n_near", "lengths", "d", "dtype", "far"),
    [
        (29, [60], 1, "float64", 1e17),  # the median in the far group
        (29, [29, 15, 16], 1, "float64", 1e17),  # the far group as two sequences
        (29, [60], 2, "float64", 1e17),  # far in column 0 only
        (29, [60], 1, "float32", 1e7),
        (31, [60], 1, "float64", 1e17),  # the median in the near group
    ],
)
def test_every_state_keeps_its_digits_beside_a_group_far_from_the_median(
    n_near, lengths, d, dtype, far
):
    """29 rows near 2.4 and 31 rows near 1e17 (spread 2^20), each group its own state: the
    design rows were taken about every column's median, a value near 1e17, so every row
    near 2.4 became -1e17 and its state fitted the intercept 0, coefficient 0 and variance
    min_covar (1e-3) instead of 1.778, 0.2255 and 0.3231. Every state's regression is now
    held about its own centre: both equal the exact weighted least squares on their rows
    (the states known, so that the posteriors are 0 or 1), whichever group is the larger
    and however the far group is cut into sequences."""
    rng = np.random.default_rng(0)
    X = 2.4 + 0.7 * rng.standard_normal((60, d))
    X[n_near:, 0] = far + (2.0**20 if dtype == "float64" else 16.0) * rng.standard_normal(
        60 - n_near
    )
    X = X.astype(dtype)
    y = (np.arange(60) >= n_near).astype(int)
    m = AutoregressiveHMM(2, order=1, n_iter=20, init_params="", dtype=dtype)
    m.startprob_, m.transmat_ = np.full(2, 0.5), np.full((2, 2), 0.5)
    m.coefs_ = np.zeros((2, 1, d, d))
    m.covars_ = np.stack([np.eye(d), np.diag([(far * 1e-10) ** 2] + [1.0] * (d - 1))])
    m.intercepts_ = np.array([[2.4] * d, [far] + [2.4] * (d - 1)])
    m.fit(X, lengths, y=y)
    X64 = X.astype(np.float64)
    scored = np.ones(60, bool)
    scored[np.cumsum([0, *lengths[:-1]])] = False  # the first row of every sequence
    lag = np.r_[np.zeros((1, d)), X64[:-1]][scored]
    tol = 1e-9 if dtype == "float64" else 1e-5  # float32: its sums' rounding
    for s in range(2):
        exact = _exact_wls(np.c_[lag, np.ones(len(lag))], X64[scored], (y[scored] == s) * 1.0)
        for j, (beta, var) in enumerate(exact):
            assert m.intercepts_[s, j] == pytest.approx(beta[-1], rel=tol)
            np.testing.assert_allclose(m.coefs_[s, 0, j], beta[:-1], rtol=tol)
            assert m.covars_[s, j, j] == pytest.approx(var, rel=tol)


def test_columns_on_different_scales_are_not_taken_for_lost_digits():
    """Two columns of sd 1e6 and 0.7 (white noise, one state): the rounding level of the
    covariance was the trace of the statistics over all columns (~0.01 here), so the
    variance 0.49 of the second column was called unresolved and fit warned
    PrecisionLossWarning at every iteration, while it equals numpy's least squares
    residual variance. Each column is now measured against its own rounding. One state
    over two groups 1e8 apart in the first column (sd 0.1 beside them) still warns."""
    from latentfit.errors import PrecisionLossWarning

    X = np.random.default_rng(0).normal(size=(300, 2)) * [1e6, 0.7]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionLossWarning)
        m = AutoregressiveHMM(1, order=1, n_iter=5).fit(X)
    Z = np.c_[X[:-1], np.ones(299)]
    r = X[1:] - Z @ np.linalg.lstsq(Z, X[1:], rcond=None)[0]
    np.testing.assert_allclose(np.diag(m.covars_[0]), np.mean(r**2, 0), rtol=1e-9)

    far, lengths, _ = _two_groups(1e8)
    far = np.c_[far, 0.7 * np.random.default_rng(1).normal(size=len(far))]
    with pytest.warns(PrecisionLossWarning, match=r"state\(s\) \[0\] keeps fewer than 3 digits"):
        AutoregressiveHMM(1, order=1, n_iter=5, random_state=0).fit(far, lengths)


def _near_and_far(dtype, c):
    """A 2-state VAR(1) model near the origin with exactly representable parameters, 300
    rows drawn from it and moved by c (rounded to ``dtype``), the same rows moved back
    (exact: they lie within a factor 2 of c), and the model moved by c: intercepts
    b + (I − A) c, exact in ``dtype``."""
    m = AutoregressiveHMM(2, order=1)
    m.startprob_, m.transmat_ = np.array([0.75, 0.25]), np.array([[0.875, 0.125], [0.25, 0.75]])
    m.coefs_ = np.array([[[[0.5, -0.25], [0.25, 0.25]]], [[[-0.25, 0.0], [0.5, 0.75]]]])
    m.intercepts_ = np.array([[1.5, -0.75], [-2.0, 3.125]])
    m.covars_ = np.array([[[1.0, 0.25], [0.25, 0.5]], [[2.0, -0.5], [-0.5, 1.0]]])
    X_far = (m.sample(300, random_state=0)[0] + c).astype(dtype)
    X_near = X_far.astype(np.float64) - c
    far = AutoregressiveHMM(2, order=1, dtype=dtype)
    far.startprob_, far.transmat_, far.coefs_, far.covars_ = (
        m.startprob_,
        m.transmat_,
        m.coefs_,
        m.covars_,
    )
    far.intercepts_ = m.intercepts_ + c - m.coefs_[:, 0] @ c
    assert np.array_equal(far.intercepts_.astype(dtype), far.intercepts_)
    return m, X_near, far, X_far


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # n_iter=5, tol=0
@pytest.mark.parametrize(
    ("dtype", "c", "rel", "atol"),
    [  # float32: the rounding of sums of 300 log-densities near -3 (1e-7 each)
        ("float32", [2.0**20, -(2.0**21)], 1e-6, 1e-6),
        ("float64", [2.0**46, -(2.0**45)], 1e-12, 1e-12),
    ],
)
def test_scores_of_data_far_from_the_origin_equal_those_of_the_same_data_near_it(
    dtype, c, rel, atol
):
    """The model is shift-equivariant: moved by c (intercepts b + (I − A) c), it gives the
    rows moved by c the log-likelihood, posteriors and paths it gives them near the origin
    (float64, where nothing rounds). score & co took the residuals x_t − A x_{t-1} − b about
    the origin, differences of numbers near c: float32 rows near 1e6 scored −943.499 for
    −941.212 (posteriors off by 0.015), float64 rows near 7e13 −939.388 for −939.600, and a
    fit from the moved start began 2.3 (float32) below the same fit near the origin. They
    are now taken about every state's centre, as a fit takes them."""
    c = np.array(c)
    m, X_near, far, X_far = _near_and_far(dtype, c)
    assert far.score(X_far) == pytest.approx(m.score(X_near), rel=rel)
    ll, post = far.score_samples(X_far)
    ll0, post0 = m.score_samples(X_near)
    assert ll == pytest.approx(ll0, rel=rel)
    np.testing.assert_allclose(post, post0, atol=atol)
    np.testing.assert_allclose(far.predict_proba(X_far), post0, atol=atol)
    for algorithm in ("viterbi", "map"):
        logp, path = far.decode(X_far, algorithm=algorithm)
        logp0, path0 = m.decode(X_near, algorithm=algorithm)
        assert logp == pytest.approx(logp0, rel=rel)
        np.testing.assert_array_equal(path, path0)
    # a fit from the equivalent starts: the same bounds, its first the score above
    fits = []
    for start, X in ((m, X_near.astype(dtype)), (far, X_far)):
        model = AutoregressiveHMM(2, order=1, dtype=dtype, init_params="", n_iter=5, tol=0)
        for name in ("startprob_", "transmat_", "coefs_", "intercepts_", "covars_"):
            setattr(model, name, getattr(start, name))
        fits.append(model.fit(X))
    np.testing.assert_allclose(fits[1].lower_bounds_, fits[0].lower_bounds_, rtol=rel)
    assert fits[1].lower_bounds_[0] == pytest.approx(far.score(X_far), rel=rel)
    moved = fits[0].intercepts_ + c - fits[1].coefs_[:, 0] @ c
    spacing = np.spacing(np.abs(c).max().astype(dtype))  # the intercepts' own rounding
    np.testing.assert_allclose(fits[1].intercepts_, moved, atol=spacing)


def test_partial_fit_advises_a_lower_order_only_before_the_order_is_fixed():
    # a short sequence in a later partial_fit call was refused with "..., or lower order",
    # which the running fit cannot take: its coefficients are those of its order
    X = np.random.default_rng(0).normal(size=(40, 2))
    model = AutoregressiveHMM(2, order=3, random_state=0)
    with pytest.raises(DataError, match=r"short sequences, or lower order$"):
        model.partial_fit(X[:22], [2, 20])  # the first call: the order is still a choice
    model.partial_fit(X[:20])
    with pytest.raises(DataError, match=r"Join or drop the short sequences$"):
        model.partial_fit(X[20:32], [2, 10], new_sequence=True)
    fitted = AutoregressiveHMM(2, order=3, random_state=0, n_iter=50).fit(X)
    with pytest.raises(DataError, match=r"Join or drop the short sequences$"):
        fitted.partial_fit(X[:22], [2, 20])  # a warm start keeps the fitted order


def _one_regime_noise_free(seed=0):
    """Blocks of 50 rows: a noisy AR(1) (x_t = 0.5 x_{t-1} + N(0, 1)) alternating with an
    exact one (x_t = 0.9 x_{t-1}, no noise)."""
    rng = np.random.default_rng(seed)
    x = [1.0]
    for b in range(20):
        for _ in range(50):
            x.append(0.5 * x[-1] + rng.normal() if b % 2 == 0 else 0.9 * x[-1])
    return np.array(x)[:, None]


def test_a_noise_free_state_is_called_degenerate_and_named():
    # Found by hand: a state on an exact autoregression took the min_covar floor as its noise
    # variance, and nothing said so, while its likelihood is the floor's: 464.9 at
    # min_covar=1e-3, 2184.2 at 1e-6, without bound (GaussianHMM and GMMHMM warned of the same).
    X = _one_regime_noise_free()
    scores = []
    for floor in (1e-3, 1e-6):
        with pytest.warns(latentfit.errors.DegenerateComponentWarning) as caught:
            m = AutoregressiveHMM(2, min_covar=floor, n_iter=20, random_state=0).fit(X)
        scores.append(m.score(X))
        (state,) = m.degenerate_components_
        assert m.coefs_[state, 0, 0, 0] == pytest.approx(0.9, abs=0.01)  # the exact regime's
        text = str(next(w.message for w in caught if "degenerate" in str(w.message)))
        assert f"state {state} (on " in text and "noise variance in feature 0" in text
        assert f"min_covar={floor:g}" in text
    assert scores[1] > scores[0] + 1000  # the likelihood follows the floor: not a fit


def test_noisy_states_and_kept_covariances_are_not_called_degenerate():
    rng = np.random.default_rng(1)
    x = [0.0]
    for b in range(20):
        for _ in range(50):
            x.append((0.5 if b % 2 else -0.5) * x[-1] + rng.normal(0, 1 if b % 2 else 0.1))
    X = np.array(x)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", latentfit.errors.DegenerateComponentWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert AutoregressiveHMM(2, n_iter=20, random_state=0).fit(X).degenerate_components_ == []
        # covariances kept as set ('c' not in params) are the user's, never a collapse
        kept = AutoregressiveHMM(2, n_iter=5, random_state=0, params="sta", init_params="sta")
        kept.covars_ = np.full((2, 1, 1), 1e-3)
        assert kept.fit(_one_regime_noise_free()).degenerate_components_ == []


def test_the_responses_covariance_from_statistics_about_any_centres():
    from latentfit.em.hmm.autoregressive import ar_data_covariance, ar_stats

    rng = np.random.default_rng(2)
    t, d, p, k = 40, 3, 2, 4
    D = torch.from_numpy(np.concatenate([rng.normal(5, 2, (t, d * (p + 1))), np.ones((t, 1))], 1))
    gamma = torch.from_numpy(rng.dirichlet(np.ones(k), t))
    centres = torch.from_numpy(rng.normal(0, 3, (k, d)))
    expected = np.cov(D[:, :d].numpy().T, bias=True)
    for c in (centres, None):
        got = ar_data_covariance(ar_stats(D, gamma, d, c), c).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)
