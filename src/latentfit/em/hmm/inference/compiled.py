"""The Baum-Welch E-step compiled for the CPU (numba): forward filter, backward pass, smoothed
marginals and expected transition counts, the same result as
:func:`~latentfit.em.hmm.inference.chunked.fused_posterior` (the torch version, kept for other devices).

Why compiled and sequential: compiled, one step of the forward or backward recursion is a few
dozen operations, so a plain pass over a long sequence is fast and needs none of the
chunk-boundary machinery of the torch version. Sequences are independent and run on separate
threads; the scaling of the emissions (torch) is split over the threads by rows.

The recursions (Rabiner 1989, §III.C and §V.A) with every message normalised:

* forward: ``α̂_t = (α̂_{t−1} A) ⊙ e_t / c_t`` with ``e_t = exp(ℓ_t − m_t)``, ``m_t = max_k ℓ_t``
  and ``c_t`` the sum, so that ``log p(x) = Σ_t log c_t + m_t``;
* backward, from ``b_{T−1} = 1``: ``v = e_{t+1} ⊙ b_{t+1}``, ``β̃_t = A v``, ``d_t = α̂_t · β̃_t``,
  then ``γ_t = α̂_t ⊙ β̃_t / d_t``, ``ξ_t = (α̂_t / d_t) vᵀ ⊙ A`` (eqs. 27 and 37: constant factors
  cancel in the ratios) and ``b_t = β̃_t / d_t``.

Dividing by ``d_t`` keeps the components of b that matter in range: where α̂ has mass,
``b_t(i) = γ_t(i) / α̂_t(i)``, at most 1/α̂_t(i) and small only where the smoothed probability
is, whatever states the data rule out (a normalisation by the sum of b lets them vanish beside
a ruled-out state whose emissions fit better). A ruled-out state's component may grow without
bound: it is capped at the largest float over 2k, which changes nothing, since it never
reaches a state the forward filter allows.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from latentfit._compiled import jit
from latentfit._kernel_ops import minimum
from latentfit.em.hmm.inference.messages import HMMFiltered, HMMPosterior
from latentfit.em.hmm.inference.runtime import empty_large, run_threads

__all__ = ["UNROLL_STATES", "forward_filter_cpu", "n_states", "posterior_cpu", "states_arg"]


# The number of states as a compile-time constant: a kernel takes ``states``, either the int k
# or a tuple of k zeros, whose length is part of the tuple's numba type. Given the tuple, numba
# compiles the kernel for that exact k: the loops over states unroll and running values stay in
# registers (benchmarks/README.md). Each k then compiles once (cached on disk), so only the
# common range is specialised.
UNROLL_STATES = (4, 16)  # k in this range: kernels compiled for the exact k


def n_states(states):
    """k from a kernel's ``states`` argument (an int, or a tuple of k items)."""
    return states if isinstance(states, int) else len(states)


@numba.extending.overload(n_states)
def _n_states_overload(states):
    if isinstance(states, numba.types.Integer):
        return lambda states: states
    return lambda states: len(states)


def states_arg(k: int):
    """The ``states`` argument for k states: a tuple of k zeros in :data:`UNROLL_STATES`, else
    the int k."""
    lo, hi = UNROLL_STATES
    return (0,) * k if lo <= k <= hi else k


@jit
def _forward(e, shift, start, A, alpha, lognorm, states):
    """Forward filter of one sequence: scaled emissions e (t, k) (``exp(ℓ − shift)``), shift
    (t,); writes α̂ (t, k) into ``alpha`` and ``log c_t + m_t`` into ``lognorm`` (t,) and
    returns log p(x) (−inf, with α̂ = 0, if the sequence is impossible)."""
    k = n_states(states)
    t = e.shape[0]
    cur = np.empty(k, e.dtype)
    loglik = 0.0
    for u in range(t):
        if u == 0:
            for j in range(k):
                cur[j] = start[j] * e[0, j]
        else:
            for j in range(k):
                cur[j] = 0.0
            for i in range(k):
                p = alpha[u - 1, i]
                for j in range(k):
                    cur[j] += p * A[i, j]
            for j in range(k):
                cur[j] *= e[u, j]
        c = 0.0
        for j in range(k):
            c += cur[j]
        if not c > 0.0:  # no state can emit x_u given the past: p(x) = 0
            alpha[:] = 0.0
            lognorm[u:] = -np.inf
            return -np.inf
        lognorm[u] = math.log(c) + shift[u]
        loglik += lognorm[u]
        inv = 1.0 / c
        for j in range(k):
            alpha[u, j] = cur[j] * inv
    return loglik


@jit
def _backward(e, A, AT, gamma, outer, cap, states):
    """Backward pass of one possible sequence: turns α̂ (t, k) in ``gamma`` into γ in place
    and adds Σ_t ξ_t = Σ_t (α̂_t / d_t) v_tᵀ ⊙ A to ``outer`` (k, k); AT is the transposed
    transition matrix (contiguous), ``cap`` the bound on ruled-out states' components. Inner
    loops run along contiguous rows (vector instructions)."""
    k = n_states(states)
    t = e.shape[0]
    cur = np.empty(k, e.dtype)
    b = np.empty(k, e.dtype)
    v = np.empty(k, e.dtype)
    for j in range(k):  # γ_{T−1} = α̂_{T−1}
        b[j] = 1.0
    for u in range(t - 2, -1, -1):
        for j in range(k):
            v[j] = e[u + 1, j] * b[j]
            cur[j] = 0.0
        for j in range(k):  # β̃_u = A v, column by column (contiguous rows of AT)
            x = v[j]
            for i in range(k):
                cur[i] += AT[j, i] * x
        d = 0.0
        for i in range(k):  # b and so β̃ are finite (capped): ruled-out states add 0 · finite
            d += gamma[u, i] * cur[i]
        w = 1.0 / d
        for i in range(k):
            a = gamma[u, i] * w
            for j in range(k):  # ⊙ A here: a ruled-out state's huge v_j meets A_ij = 0
                outer[i, j] += a * A[i, j] * v[j]
            gamma[u, i] = a * cur[i]
            b[i] = minimum(cur[i] * w, cap)


@jit
def _sequences(
    e, shift, start, A, AT, gamma, lognorm, outer, offsets, ids, seq_ll, smooth, cap, states
):
    """The sequences ``ids`` (rows ``offsets[s] .. offsets[s+1]``): forward filter, then, if
    ``smooth``, the backward pass; their log-likelihoods into ``seq_ll``."""
    for s in ids:
        a, z = offsets[s], offsets[s + 1]
        seq_ll[s] = _forward(e[a:z], shift[a:z], start, A, gamma[a:z], lognorm[a:z], states)
        if smooth and seq_ll[s] > -np.inf:
            _backward(e[a:z], A, AT, gamma[a:z], outer, cap, states)


def _run(ll, startprob, transmat, lengths, overwrite, workers, smooth):
    """Scale the emissions, then run every sequence on up to ``workers`` threads: returns
    (sequence log-likelihoods (n,), α̂ or γ (t, k), log normalisers (t,), Σξ (k, k))."""
    ll = ll if overwrite else ll.clone()
    t, k = ll.shape
    lens = np.asarray([t] if lengths is None else lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    n = len(lens)
    workers = max(1, min(workers, t))
    cuts = np.linspace(0, t, workers + 1).astype(np.int64)
    shift = torch.empty(t, dtype=ll.dtype, device=ll.device)  # the CPU: numba reads them
    gamma = empty_large(t, k, dtype=ll.dtype, device=ll.device)
    lognorm = torch.empty(t, dtype=ll.dtype, device=ll.device)
    e, sh, g, ln = ll.numpy(), shift.numpy(), gamma.numpy(), lognorm.numpy()
    seq = np.empty(n)
    start = startprob.detach().cpu().numpy()
    A = transmat.detach().cpu().numpy()
    AT = np.ascontiguousarray(A.T)
    states = states_arg(k)  # see latentfit.em.hmm.inference.compiled
    outers = np.zeros((workers, k, k), A.dtype)
    cap = float(np.finfo(e.dtype).max) / (2 * k)  # A (e ⊙ b) stays finite
    # sequences to threads, longest first to the least loaded
    loads = np.zeros(workers)
    owner = np.empty(n, np.int64)
    for s in np.argsort(-lens, kind="stable"):
        owner[s] = int(loads.argmin())
        loads[owner[s]] += lens[s]

    def scale(p: int):  # e_t = exp(ℓ_t − m_t) in [0, 1], in place, rows of part p
        rows, m = ll[cuts[p] : cuts[p + 1]], shift[cuts[p] : cuts[p + 1]]
        torch.amax(rows, 1, out=m)
        m.masked_fill_(~torch.isfinite(m), 0.0)
        rows.sub_(m.unsqueeze(1)).exp_()

    def run(p: int):
        ids = np.flatnonzero(owner == p)
        _sequences(e, sh, start, A, AT, g, ln, outers[p], offsets, ids, seq, smooth, cap, states)

    run_threads(scale, workers, workers)
    run_threads(run, workers, workers)
    xi = torch.from_numpy(outers.sum(0))
    return torch.as_tensor(seq, dtype=ll.dtype), gamma, lognorm, xi, offsets


def posterior_cpu(
    log_likelihoods, startprob, transmat, lengths=None, *, overwrite=False, workers=1
) -> HMMPosterior:
    """The Baum-Welch E-step on CPU tensors (see the module docstring), as
    :func:`~latentfit.em.hmm.inference.posterior.posterior`. ``overwrite=True`` lets it scale the emissions
    in the ``log_likelihoods`` buffer; sequences run on up to ``workers`` threads."""
    seq, gamma, _, xi, offsets = _run(
        log_likelihoods, startprob, transmat, lengths, overwrite, workers, smooth=True
    )
    first = torch.as_tensor(offsets[:-1], dtype=torch.int64)
    return HMMPosterior(seq.sum(), seq, gamma, xi, gamma.index_select(0, first).sum(0))


def forward_filter_cpu(
    log_likelihoods, startprob, transmat, lengths=None, *, overwrite=False, workers=1
) -> HMMFiltered:
    """The forward filter on CPU tensors, as
    :func:`~latentfit.em.hmm.inference.posterior.forward_filter`: the first half of the E-step."""
    seq, alpha, lognorm, _, _ = _run(
        log_likelihoods, startprob, transmat, lengths, overwrite, workers, smooth=False
    )
    return HMMFiltered(seq.sum(), seq, alpha, lognorm)
