"""The path recursions of :mod:`latentfit.em.paths` compiled for the CPU (numba): the same
numbers as the plain loops there (tested against them), a few nanoseconds a step instead of
microseconds. Outputs are written in place."""

from __future__ import annotations

from latentfit._compiled import jit
from latentfit._kernel_ops import minimum

__all__ = ["ar_path_kernel", "linear_path_kernel", "markov_chain_kernel", "segment_chain_kernel"]


@jit
def _pick(cdf, row, u):
    """The first index whose cumulative probability in ``cdf[row]`` exceeds u times the
    row's total (np.searchsorted side='right')."""
    m = cdf.shape[1]
    x = u * cdf[row, m - 1]
    lo, hi = 0, m
    while lo < hi:
        mid = (lo + hi) // 2
        if cdf[row, mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def markov_chain_kernel(trans_cdf, u, first, states):
    s = first
    states[0] = s
    for i in range(1, u.shape[0]):
        s = _pick(trans_cdf, s, u[i])
        states[i] = s


@jit
def segment_chain_kernel(dur_cdf, trans_cdf, u_dur, u_trans, state, pos, states):
    n = states.shape[0]
    s = state
    for j in range(u_dur.shape[0]):
        if pos >= n:
            break
        d = _pick(dur_cdf, s, u_dur[j]) + 1
        end = minimum(pos + d, n)
        for i in range(pos, end):
            states[i] = s
        pos += d
        s = _pick(trans_cdf, s, u_trans[j])
    return minimum(pos, n), s


@jit
def linear_path_kernel(A, x):
    n, k = x.shape
    for t in range(1, n):
        for i in range(k):
            acc = 0.0
            for j in range(k):
                acc += A[i, j] * x[t - 1, j]
            x[t, i] += acc


@jit
def ar_path_kernel(W, states, p, buf):
    n = states.shape[0]
    d = buf.shape[1]
    for t in range(n):
        s = states[t]
        for i in range(d):
            acc = W[s, i, p * d]
            for lag in range(p):
                for j in range(d):
                    acc += W[s, i, lag * d + j] * buf[t + p - 1 - lag, j]
            buf[p + t, i] += acc
