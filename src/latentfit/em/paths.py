"""The hidden paths that the sequence models' ``sample`` draws, from uniforms and noise drawn
beforehand in bulk: a Markov chain of states (HMMs), a chain of segments (HSMMs), and the
linear recursions x_t = A x_{t-1} + w_t (linear-Gaussian state-space models) and
x_t = W_{s_t} [x_{t-1} .. x_{t-p}, 1] + e_t (autoregressive HMMs).

Each step depends on the one before, so a path is a loop over steps: a compiled kernel
(:mod:`latentfit.em.paths_compiled`, numba) for a path of at least :data:`COMPILE_FROM` steps
where :func:`latentfit._compiled.available`, the plain loops here otherwise (the same numbers,
tested against the kernels). A Python step costs microseconds, so that 10**8 steps took 30 to
60 minutes; compiled, they take seconds. A short path keeps the plain loop: loading numba and
its cached kernels costs ~1 s (more on the first run, which compiles them), which a path of a
few thousand steps would wait on for nothing.

A discrete draw is by inverse CDF, ``u`` scaled by the row's total so that rounding in the
cumulative sums never picks a state (or duration) of probability 0.
"""

from __future__ import annotations

import numpy as np

from latentfit import _compiled

__all__ = ["ar_path", "linear_path", "markov_chain", "segment_chain"]


#: Steps from which a path runs compiled (``compiled=None``): the plain loops take ~4-10 µs a
#: step, so 50,000 steps cost ~0.2-0.5 s, about what loading the kernels costs.
COMPILE_FROM = 50_000


def _use_kernels(n: int, compiled) -> bool:
    if compiled is not None:
        return bool(compiled)
    return n >= COMPILE_FROM and _compiled.available()


def _kernels():
    from latentfit.em import paths_compiled  # imports numba

    return paths_compiled


def _pick(cdf_row: np.ndarray, u: float) -> int:
    return int(np.searchsorted(cdf_row, u * cdf_row[-1], side="right"))


def markov_chain(trans_cdf: np.ndarray, u: np.ndarray, first: int, *, compiled=None) -> np.ndarray:
    """States (n,) of a Markov chain from ``first``: states[i] drawn from row states[i-1] of
    the transition matrix by ``u[i]`` (``u`` (n,) uniforms on [0, 1); u[0] unused);
    ``trans_cdf`` (k, k) the rows' cumulative sums."""
    trans_cdf = np.ascontiguousarray(trans_cdf, dtype=np.float64)
    u = np.ascontiguousarray(u, dtype=np.float64)
    states = np.empty(len(u), dtype=np.int64)
    if _use_kernels(len(u), compiled):
        _kernels().markov_chain_kernel(trans_cdf, u, int(first), states)
        return states
    s = int(first)
    states[0] = s
    for i in range(1, len(u)):
        s = _pick(trans_cdf[s], u[i])
        states[i] = s
    return states


def segment_chain(
    dur_cdf: np.ndarray,
    trans_cdf: np.ndarray,
    u_dur: np.ndarray,
    u_trans: np.ndarray,
    state: int,
    pos: int,
    states: np.ndarray,
    *,
    compiled=None,
) -> tuple[int, int]:
    """Fill ``states`` (n,) from ``pos`` with segments of the semi-Markov chain: a duration
    1 + (index drawn by ``u_dur[j]`` from the row of ``dur_cdf`` (k, W) of the state), then
    the next state drawn by ``u_trans[j]`` from ``trans_cdf`` (k, k); the last segment is cut
    at n. Returns (pos, state) after the segments that ``u_dur`` (m,) drew, or once states is
    full, so that the uniforms can be drawn in batches."""
    dur_cdf = np.ascontiguousarray(dur_cdf, dtype=np.float64)
    trans_cdf = np.ascontiguousarray(trans_cdf, dtype=np.float64)
    if _use_kernels(len(states) - int(pos), compiled):
        u_dur = np.ascontiguousarray(u_dur, dtype=np.float64)
        u_trans = np.ascontiguousarray(u_trans, dtype=np.float64)
        out = _kernels().segment_chain_kernel(
            dur_cdf, trans_cdf, u_dur, u_trans, int(state), int(pos), states
        )
        return int(out[0]), int(out[1])
    n, s = len(states), int(state)
    for j in range(len(u_dur)):
        if pos >= n:
            break
        d = _pick(dur_cdf[s], u_dur[j]) + 1
        states[pos : pos + d] = s
        pos += d
        s = _pick(trans_cdf[s], u_trans[j])
    return min(pos, n), s


def linear_path(A: np.ndarray, x0: np.ndarray, w: np.ndarray, *, compiled=None) -> np.ndarray:
    """x (n, k) with x[0] = x0 and x[t] = A x[t-1] + w[t] (``w`` (n, k); w[0] unused)."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    x = np.array(w, dtype=np.float64, order="C")  # (n, k)
    x[0] = x0
    if _use_kernels(len(x), compiled):
        _kernels().linear_path_kernel(A, x)
        return x
    for t in range(1, len(x)):
        x[t] += A @ x[t - 1]
    return x


def ar_path(
    W: np.ndarray, states: np.ndarray, eps: np.ndarray, history: np.ndarray, *, compiled=None
) -> np.ndarray:
    """x (n, d) with x[t] = W[s_t] [x[t-1], .., x[t-p], 1] + eps[t]: ``W`` (k, d, p d + 1) the
    regression weights, ``states`` (n,), ``eps`` (n, d) the noise, ``history`` (p, d) the
    values before x[0], oldest first."""
    W = np.ascontiguousarray(W, dtype=np.float64)
    p = history.shape[0]
    buf = np.concatenate([np.asarray(history, dtype=np.float64), eps])  # (p + n, d)
    states = np.ascontiguousarray(states, dtype=np.int64)
    if _use_kernels(len(states), compiled):
        _kernels().ar_path_kernel(W, states, p, buf)
        return buf[p:]
    for t in range(len(states)):
        lags = buf[t : t + p][::-1].reshape(-1)  # [x_{t-1}, .., x_{t-p}]
        buf[p + t] += W[states[t], :, :-1] @ lags + W[states[t], :, -1]
    return buf[p:]
