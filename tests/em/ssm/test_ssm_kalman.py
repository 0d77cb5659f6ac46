"""The Kalman filter and RTS smoother against statsmodels' state-space smoother, the dense
multivariate normal of a whole sequence, and each other (torch and compiled kernels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

from latentfit.em.ssm.kalman import SSMParams, kalman_filter, rts_smoother
from latentfit.em.ssm.kalman_cpu import filter_smooth_cpu
from tests.em.ssm.helpers import random_params, with_missing


def statsmodels_smooth(params, Y):
    """statsmodels' Kalman filter and smoother on the same model (x_1 ~ N(mu0, V0) known)."""
    A, C, Q, R, d, mu0, V0 = params
    k = A.shape[0]
    ks = KalmanSmoother(k_endog=C.shape[0], k_states=k, k_posdef=k)
    ks.bind(np.array(Y))
    ks["design"], ks["obs_intercept"], ks["obs_cov"] = C, d[:, None], R
    ks["transition"], ks["selection"], ks["state_cov"] = A, np.eye(k), Q
    ks.initialize_known(mu0, V0)
    return ks.smooth()


def sample(params, T, seed):
    A, C, Q, R, d, mu0, V0 = params
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(mu0, V0)
    Y = []
    for _ in range(T):
        Y.append(C @ x + d + rng.multivariate_normal(np.zeros(len(d)), R))
        x = A @ x + rng.multivariate_normal(np.zeros(len(mu0)), Q)
    return np.array(Y)


def both(params, Y, lengths):
    """(torch filter, torch smoother, compiled filter, compiled smoother)."""
    p = SSMParams(*(torch.tensor(v) for v in params))
    Yt = torch.tensor(Y)
    f = kalman_filter(p, Yt, lengths)
    s = rts_smoother(p, f, lengths)
    fc, sc, bad = filter_smooth_cpu(p, Yt, lengths)
    assert bad == -1
    return f, s, fc, sc


def close(a, b, rtol=1e-8):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("missing", [False, True])
def test_filter_and_smoother_equal_statsmodels(missing):
    params = random_params(seed=1, k=3, d=4)
    Y = sample(params, 80, seed=2)
    if missing:
        Y = with_missing(Y, seed=3)
    ref = statsmodels_smooth(params, Y)
    for f, s in (both(params, Y, [len(Y)])[:2], both(params, Y, [len(Y)])[2:]):
        close(f.step_log_likelihoods, ref.llf_obs)
        close(f.predicted_means, ref.predicted_state.T[:-1])
        close(f.predicted_covariances, ref.predicted_state_cov.transpose(2, 0, 1)[:-1])
        close(f.filtered_means, ref.filtered_state.T)
        close(f.filtered_covariances, ref.filtered_state_cov.transpose(2, 0, 1))
        close(s.smoothed_means, ref.smoothed_state.T)
        close(s.smoothed_covariances, ref.smoothed_state_cov.transpose(2, 0, 1))
        # statsmodels' autocov[t] = Cov[x_{t+1}, x_t | y]
        close(s.cross_covariances[1:], ref.smoothed_state_autocov.transpose(2, 0, 1)[:-1])
        np.testing.assert_array_equal(s.cross_covariances[0].numpy(), 0)
        close(float(f.log_likelihood), ref.llf)


def dense_log_likelihood(params, Y):
    """log N(vec(Y_observed); mean, covariance) with the covariance of the whole stacked
    sequence built by hand: Cov[x_t, x_s] = A^{t-s} Σ_s, Σ_t = A Σ_{t-1} Aᵀ + Q."""
    A, C, Q, R, d, mu0, V0 = params
    T, dim = Y.shape
    k = len(mu0)
    means, sig = [mu0], [V0]
    for _ in range(1, T):
        means.append(A @ means[-1])
        sig.append(A @ sig[-1] @ A.T + Q)
    cov = np.zeros((T * dim, T * dim))
    for t in range(T):
        for s in range(t + 1):
            cx = np.linalg.matrix_power(A, t - s) @ sig[s]  # Cov[x_t, x_s]
            block = C @ cx @ C.T + (R if s == t else 0)
            cov[t * dim : (t + 1) * dim, s * dim : (s + 1) * dim] = block
            cov[s * dim : (s + 1) * dim, t * dim : (t + 1) * dim] = block.T
    mean = np.concatenate([C @ m + d for m in means])
    y = Y.reshape(-1)
    obs = ~np.isnan(y)
    assert k == A.shape[0]
    return multivariate_normal(mean[obs], cov[np.ix_(obs, obs)]).logpdf(y[obs])


@pytest.mark.parametrize("missing", [False, True])
def test_log_likelihood_equals_dense_gaussian(missing):
    params = random_params(seed=4, k=2, d=3)
    Y = sample(params, 12, seed=5)
    if missing:
        Y = with_missing(Y, seed=6)
    ref = dense_log_likelihood(params, Y)
    for f in both(params, Y, [len(Y)])[::2]:
        assert float(f.log_likelihood) == pytest.approx(ref, rel=1e-10)


def test_sequences_are_independent_and_compiled_equals_torch():
    """Several sequences: each result equals that sequence filtered alone; the batched torch
    pass (sequences of different lengths advance together) equals the compiled one."""
    params = random_params(seed=7, k=3, d=2)
    Ys = [with_missing(sample(params, n, seed=n), seed=n) for n in (30, 5, 1, 17)]
    lengths = [len(y) for y in Ys]
    f, s, fc, sc = both(params, np.vstack(Ys), lengths)
    for a, b in zip((*f, *s), (*fc, *sc), strict=True):
        close(a, b, rtol=1e-12)
    start = 0
    total = 0.0
    for y in Ys:
        f1, s1, _, _ = both(params, y, [len(y)])
        rows = slice(start, start + len(y))
        close(s.smoothed_means[rows], s1.smoothed_means, rtol=1e-12)
        close(s.smoothed_covariances[rows], s1.smoothed_covariances, rtol=1e-12)
        close(s.cross_covariances[rows], s1.cross_covariances, rtol=1e-12)
        total += float(f1.log_likelihood)
        start += len(y)
    assert float(f.log_likelihood) == pytest.approx(total, rel=1e-12)


def test_steady_state_shortcut_is_exact_to_rounding():
    """The compiled kernel's steady-state shortcut: with ``ulps=0`` it reuses covariances only
    when they would be recomputed from bit-identical inputs, and its output equals the
    step-by-step one exactly; by default (a few rounding units) it differs from it by rounding
    noise only, around missing values and sequence boundaries too."""
    params = random_params(seed=8, k=4, d=8)
    Y = sample(params, 3000, seed=9)
    Y[1200, 3] = np.nan
    Y[2100] = np.nan
    p = SSMParams(*(torch.tensor(v) for v in params))
    slow = filter_smooth_cpu(p, torch.tensor(Y), [1000, 2000], memo=0)
    exact = filter_smooth_cpu(p, torch.tensor(Y), [1000, 2000], ulps=0)
    for a, b in zip((*exact[0], *exact[1]), (*slow[0], *slow[1]), strict=True):
        assert torch.equal(a, b)
    fast = filter_smooth_cpu(p, torch.tensor(Y), [1000, 2000])
    for a, b in zip((*fast[0], *fast[1]), (*slow[0], *slow[1]), strict=True):
        close(a, b, rtol=1e-12)


def test_float32_close_to_float64():
    params = random_params(seed=10, k=3, d=4)
    Y = with_missing(sample(params, 200, seed=11), seed=12)
    p64 = SSMParams(*(torch.tensor(v) for v in params))
    p32 = SSMParams(*(torch.tensor(v, dtype=torch.float32) for v in params))
    f64, s64, _ = filter_smooth_cpu(p64, torch.tensor(Y), [len(Y)])
    f32, s32, _ = filter_smooth_cpu(p32, torch.tensor(Y, dtype=torch.float32), [len(Y)])
    t32 = rts_smoother(p32, kalman_filter(p32, torch.tensor(Y, dtype=torch.float32), [200]), [200])
    # float32 rounding (1e-7) amplified by a few condition numbers of the 4x4 systems
    for a in (s32.smoothed_means, t32.smoothed_means):
        close(a.double(), s64.smoothed_means, rtol=1e-4)
    assert float(f32.log_likelihood) == pytest.approx(float(f64.log_likelihood), rel=1e-5)


def test_statistics_equal_the_dense_gaussian_posterior():
    """EM's expected statistics, missing observations included, equal the moments of the
    joint Gaussian of all states and observations conditioned on the observed entries."""
    from latentfit.em.ssm.steps import sufficient_statistics

    params = random_params(seed=13, k=2, d=3)
    A, C, Q, R, d, mu0, V0 = params
    T, k, dim = 7, 2, 3
    Y = sample(params, T, seed=14)
    Y[1, 0] = Y[2, 1:] = Y[4] = np.nan
    sig, means = [V0], [mu0]
    for _ in range(1, T):
        sig.append(A @ sig[-1] @ A.T + Q)
        means.append(A @ means[-1])
    Cxx = np.zeros((T * k, T * k))
    for t in range(T):
        for s in range(t + 1):
            block = np.linalg.matrix_power(A, t - s) @ sig[s]
            Cxx[t * k : (t + 1) * k, s * k : (s + 1) * k] = block
            Cxx[s * k : (s + 1) * k, t * k : (t + 1) * k] = block.T
    big_C = np.kron(np.eye(T), C)
    cov = np.block(
        [[Cxx, Cxx @ big_C.T], [big_C @ Cxx, big_C @ Cxx @ big_C.T + np.kron(np.eye(T), R)]]
    )
    mean = np.concatenate([np.concatenate(means), big_C @ np.concatenate(means) + np.tile(d, T)])
    obs = np.concatenate([np.zeros(T * k, bool), ~np.isnan(Y.reshape(-1))])
    gain = cov[:, obs] @ np.linalg.inv(cov[np.ix_(obs, obs)])
    mu = mean + gain @ (Y.reshape(-1)[obs[T * k :]] - mean[obs])
    post = cov - gain @ cov[obs]
    second = post + np.outer(mu, mu)  # E[z zᵀ | observed]

    def x(t):
        return slice(t * k, (t + 1) * k)

    def y(t):
        return slice(T * k + t * dim, T * k + (t + 1) * dim)

    p = SSMParams(*(torch.tensor(v) for v in params))
    _, s, _, _ = both(params, Y, [T])
    st = sufficient_statistics(p, torch.tensor(Y), s, [T])
    expected = {
        "xx": sum(second[x(t), x(t)] for t in range(T)),
        "x1x0": sum(second[x(t), x(t - 1)] for t in range(1, T)),
        "y": sum(mu[y(t)] for t in range(T)),
        "yx": sum(second[y(t), x(t)] for t in range(T)),
        "yy": sum(second[y(t), y(t)] for t in range(T)),
        "x_first": mu[x(0)],
    }
    for name, value in expected.items():
        close(st[name], value, rtol=1e-10)


def test_the_torch_filter_holds_the_rows_not_sequences_padded_to_the_longest(monkeypatch):
    """The torch filter (any device; the CPU without numba) padded every sequence to the
    longest: b x t_max rows of (k, k) moments, so 20,000 single steps beside one series of
    20,000 (n = 40,000) asked for 4e8 rows, past any memory check of n. No tensor it makes
    now is larger than the n rows' own moments."""
    params = random_params(seed=7, k=3, d=2)
    lengths = [1] * 60 + [60]
    Y = with_missing(sample(params, sum(lengths), seed=8), seed=9)
    p = SSMParams(*(torch.tensor(v) for v in params))
    sizes = []
    for name in ("new_empty", "new_full", "new_zeros"):
        made = getattr(torch.Tensor, name)

        def spy(self, *args, _made=made, **kwargs):
            out = _made(self, *args, **kwargs)
            sizes.append(out.numel())
            return out

        monkeypatch.setattr(torch.Tensor, name, spy)
    f = kalman_filter(p, torch.tensor(Y), lengths)
    monkeypatch.undo()
    assert max(sizes) <= len(Y) * 3 * 3  # an (n, k, k) array
    _, _, fc, _ = both(params, Y, lengths)
    for a, b in zip(f, fc, strict=True):
        close(a, b, rtol=1e-12)
