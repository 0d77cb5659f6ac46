"""The HSMM recursions over time compiled for the CPU: the same numbers as the torch twins in
:mod:`latentfit.em.hsmm.inference` (tested against them), without a dozen torch calls of a
few numbers each per time step (about 100 µs a step in torch, well under 1 µs here for K = 4,
D = 50). Arguments as the twins', as float arrays; the outputs are written in place.
"""

from __future__ import annotations

import math

import numpy as np

from latentfit._compiled import jit
from latentfit._kernel_ops import maximum

__all__ = [
    "backward_kernel",
    "forward_kernel",
    "log_likelihood_kernel",
    "posterior_kernel",
    "viterbi_kernel",
]


@jit
def _logaddexp(a, b):
    m = maximum(a, b)
    if m == -np.inf:
        return m
    return m + math.log1p(math.exp(-abs(a - b)))


@jit
def _logsumexp_sum(x, y, n):
    """log Σ_{i < n} exp(x[i] + y[i]), the largest term taken out first (−inf when every term
    is): the sum over a state's elapsed times or over the states of every recursion below."""
    m = -np.inf
    for i in range(n):
        v = x[i] + y[i]
        if v > m:
            m = v
    if m == -np.inf:
        return m
    s = 0.0
    for i in range(n):
        s += math.exp(x[i] + y[i] - m)
    return m + math.log(s)


@jit
def forward_kernel(ll, log_start, log_trans, log_h, log_stay, alpha, leave):
    """log α (t, k, dt) and the segment-end messages ``leave`` (t, k) of
    :func:`~latentfit.em.hsmm.inference.hsmm_forward`."""
    t, k = ll.shape
    dt = alpha.shape[2]
    alpha[:] = -np.inf
    for j in range(k):
        alpha[0, j, 0] = log_start[j] + ll[0, j]
    for i in range(t):
        for j in range(k):  # leave[i, j] = logsumexp_e α_i(j, e) + log h_j(e)
            leave[i, j] = _logsumexp_sum(alpha[i, j], log_h[j], dt)
        if i + 1 == t:
            break
        for j in range(k):
            enter = _logsumexp_sum(leave[i], log_trans[:, j], k)
            x = ll[i + 1, j]
            alpha[i + 1, j, 0] = enter + x
            for e in range(1, dt):
                alpha[i + 1, j, e] = alpha[i, j, e - 1] + log_stay[j, e - 1] + x


@jit
def backward_kernel(ll, log_trans, log_h, log_stay, censored, beta, jump):
    """log β (t, k, dt) and ``jump`` (t − 1, k) of
    :func:`~latentfit.em.hsmm.inference.hsmm_backward`."""
    t, k = ll.shape
    dt = beta.shape[2]
    for j in range(k):
        for e in range(dt):
            beta[t - 1, j, e] = 0.0 if censored else log_h[j, e]
    enter = np.empty(k, ll.dtype)
    for i in range(t - 2, -1, -1):
        for j in range(k):
            enter[j] = ll[i + 1, j] + beta[i + 1, j, 0]
        for a in range(k):
            jump[i, a] = _logsumexp_sum(log_trans[a], enter, k)
            x = ll[i + 1, a]
            for e in range(dt):
                v = log_h[a, e] + jump[i, a]
                if e + 1 < dt:
                    v = _logaddexp(v, log_stay[a, e] + x + beta[i + 1, a, e + 1])
                beta[i, a, e] = v


@jit
def viterbi_kernel(ll, log_start, log_trans, log_h, log_stay, censored, from_state, from_elapsed):
    """Max-product over the elapsed-time states (the recursion of
    :func:`~latentfit.em.hsmm.inference.hsmm_viterbi`): fills the back-pointers (t, k) and
    returns (best log-probability, its state, its elapsed index) at the last step."""
    t, k = ll.shape
    dt = log_h.shape[1]
    delta = np.full((k, dt), -np.inf)
    new = np.empty((k, dt))
    leave = np.empty(k)
    arg_e = np.zeros(k, np.int64)
    for j in range(k):
        delta[j, 0] = log_start[j] + ll[0, j]
    for i in range(1, t):
        for j in range(k):
            best, arg = -np.inf, 0
            for e in range(dt):
                v = delta[j, e] + log_h[j, e]
                if v > best:
                    best, arg = v, e
            leave[j], arg_e[j] = best, arg
        for j in range(k):
            best, arg = -np.inf, 0
            for a in range(k):
                v = leave[a] + log_trans[a, j]
                if v > best:
                    best, arg = v, a
            from_state[i, j] = arg
            from_elapsed[i, j] = arg_e[arg]
            x = ll[i, j]
            new[j, 0] = best + x
            for e in range(1, dt):
                new[j, e] = delta[j, e - 1] + log_stay[j, e - 1] + x
        for j in range(k):  # element by element: see latentfit._kernel_ops
            for e in range(dt):
                delta[j, e] = new[j, e]
    best, bs, be = -np.inf, 0, 0
    for j in range(k):
        for e in range(dt):
            v = delta[j, e] if censored else delta[j, e] + log_h[j, e]
            if v > best:
                best, bs, be = v, j, e
    return best, bs, be


@jit
def posterior_kernel(
    ll, log_trans, log_h, log_stay, censored, alpha, leave, log_l, post, trans, dur
):
    """The backward recursion of :func:`~latentfit.em.hsmm.inference.hsmm_backward` fused
    with the expected counts of :func:`~latentfit.em.hsmm.inference.hsmm_posterior`: the
    backward messages live one step at a time (memory O(K·D) instead of O(T·K·D)). Adds to
    ``post`` (t, k), ``trans`` (k, k) and the first dt columns of ``dur`` (k, ·) every term
    but the censored last segment's (the caller's)."""
    t, k = ll.shape
    dt = alpha.shape[2]
    nxt = np.empty((k, dt), ll.dtype)
    cur = np.empty((k, dt), ll.dtype)
    enter = np.empty(k, ll.dtype)
    for j in range(k):
        for e in range(dt):
            nxt[j, e] = 0.0 if censored else log_h[j, e]
            a = alpha[t - 1, j, e]
            if a > -np.inf:
                post[t - 1, j] += math.exp(a + nxt[j, e] - log_l)
                if not censored:
                    dur[j, e] += math.exp(a + nxt[j, e] - log_l)
    for i in range(t - 2, -1, -1):
        for j in range(k):
            enter[j] = ll[i + 1, j] + nxt[j, 0]
        for a in range(k):
            jump = _logsumexp_sum(log_trans[a], enter, k)
            if leave[i, a] > -np.inf:
                for j in range(k):
                    if log_trans[a, j] > -np.inf:
                        trans[a, j] += math.exp(leave[i, a] + log_trans[a, j] + enter[j] - log_l)
            x = ll[i + 1, a]
            g = 0.0
            for e in range(dt):
                v = log_h[a, e] + jump
                al = alpha[i, a, e]
                if al > -np.inf and v > -np.inf:
                    dur[a, e] += math.exp(al + v - log_l)  # the segment ends at step i
                if e + 1 < dt:
                    v = _logaddexp(v, log_stay[a, e] + x + nxt[a, e + 1])
                cur[a, e] = v
                if al > -np.inf:
                    g += math.exp(al + v - log_l)
            post[i, a] += g
        nxt, cur = cur, nxt


@jit
def log_likelihood_kernel(ll, log_start, log_trans, log_h, log_stay, censored, dt):
    """log p(x) by the forward recursion of :func:`forward_kernel` keeping one step of
    messages (memory O(K·D) whatever the length)."""
    t, k = ll.shape
    prev = np.full((k, dt), -np.inf)
    cur = np.empty((k, dt))
    leave = np.empty(k)
    for j in range(k):
        prev[j, 0] = log_start[j] + ll[0, j]
    for i in range(1, t + 1):
        for j in range(k):
            leave[j] = _logsumexp_sum(prev[j], log_h[j], dt)
        if i == t:
            break
        for j in range(k):
            enter = _logsumexp_sum(leave, log_trans[:, j], k)
            x = ll[i, j]
            cur[j, 0] = enter + x
            for e in range(1, dt):
                cur[j, e] = prev[j, e - 1] + log_stay[j, e - 1] + x
        prev, cur = cur, prev
    # log p(x) = logsumexp over (j, e) of the last messages (times h when the last segment
    # must end), in the order of the rows of prev
    if censored:
        return _logsumexp_sum(prev.ravel(), np.zeros(k * dt), k * dt)
    return _logsumexp_sum(prev.ravel(), np.ascontiguousarray(log_h[:, :dt]).ravel(), k * dt)
