"""The Baum-Welch E-step over chunks, fused and in place: the fast path of
:func:`latentfit.em.hmm.inference.posterior.posterior`.

Same mathematics as the chunked kernels of :mod:`latentfit.em.hmm.inference.posterior` (the stream cut
into ``b`` chunks of ``l`` steps, each Python step one batched ``(b, k) @ (k, k)`` product),
arranged so that an iteration makes as few passes over the (t, k) arrays, and as few fresh
allocations of them, as possible; on a CPU a fresh 64 MB array costs more in page faults than
the arithmetic done on it.

* Layout: chunk ``j`` is rows ``j·l .. j·l + l − 1`` of the stream, so the (t, k) arrays are
  viewed as (b, l, k) without copying; step ``i`` of every chunk is the strided slice
  ``[:, i]``.
* Emissions are scaled in place, ``e_t = exp(ℓ_t − max_k ℓ_t)``, in the caller's buffer when
  it hands it over (``overwrite=True``), else in one new buffer.
* Chunk boundaries by *windows* (Särkkä & García-Fernández 2021, blocked form, with the
  forgetting of Birkhoff 1957): the forward message entering chunk ``j + 1`` depends only on
  the last ``w`` steps of chunk ``j`` once the transfer matrix of those steps has rank one to
  1e-13 in Hilbert's projective metric (every start leads to the same message); likewise the
  backward message leaving chunk ``j`` depends only on the first ``w`` steps of chunk
  ``j + 1``. The windows are checked, and widened fourfold for the chunks that have not yet
  forgotten their start; if some chunk never does within the whole chunk, the exact
  whole-chunk transfer-matrix scan of :mod:`~latentfit.em.hmm.inference.posterior` is used instead.
* The forward pass divides the emissions by its normalisers in place, and the backward pass
  then runs with Rabiner's scaling (1989, §V.A), writing the smoothed marginals ``γ`` over the
  forward messages and accumulating ``Σ ξ`` (eq. 37) by one ``(k, b) @ (b, k)`` product per
  step, with no further (t, k) buffers; if a scaled backward message overflows (a state the
  forward filter rules out completely), the backward pass is redone normalising every step.
"""

from __future__ import annotations

import math

import torch

from latentfit.em.hmm.inference.messages import (
    HMMFiltered,
    _boundary_messages,
    _chunk_transfer,
    _entering_backward,
    _entering_forward,
    _prepare,
    _restart_steps,
    _segment_sum,
    _unchunk,
)
from latentfit.em.hmm.inference.runtime import empty_large

__all__ = ["fused_posterior"]


def _coalesced_rows(P: torch.Tensor, tol: float = 1e-13) -> torch.Tensor:
    """Per matrix of P (b, k, k): are all rows equal up to a common factor (Hilbert's
    projective metric below ``tol``, zero patterns equal)? (b,) bool."""
    ref = P[:, :1, :]  # (b, 1, k)
    zero, ref_zero = P == 0, ref == 0
    same_zeros = ~(zero ^ ref_zero).flatten(1).any(1)
    both = zero & ref_zero
    ratio = torch.where(both, 1.0, P / torch.where(both, 1.0, ref)).log()
    spread = (ratio.amax(-1) - ratio.amin(-1)).amax(-1)  # (b,)
    return same_zeros & (spread <= tol)


def _window_product(e_bl, steps, transmat, restarts, restart_row, right: bool):
    """Row-normalised product of the per-step matrices over the given window ``steps`` of
    every chunk, for all chunks at once: forward (``right=False``) ``Π A_t diag(e_t)`` in
    time order, or backward (``right=True``) the transposed ``Π A_t diag(e_t)`` accumulated
    from the end (rows of the result = columns of the product). Returns (P (b, k, k),
    coalesced (b,): has every chunk's window forgotten where it started?)."""
    b, _, k = e_bl.shape
    tiny = torch.finfo(e_bl.dtype).tiny
    P = torch.eye(k, dtype=e_bl.dtype, device=e_bl.device).repeat(b, 1, 1)  # (b, k, k)
    At = transmat.T
    for i in steps:
        e = e_bl[:, i].unsqueeze(1)  # (b, 1, k)
        if right:  # S ← (S diag(e_i)) Aᵀ; a restart makes β flat whatever follows
            P = (P * e).view(b * k, k).mm(At).view(b, k, k)
            if i in restarts:
                P[restarts[i]] = restart_row
        else:  # P ← (P A) diag(e_i); a restart makes α ∝ π ⊙ e_i from every start
            P = P.view(b * k, k).mm(transmat).view(b, k, k)
            if i in restarts:
                P[restarts[i]] = restart_row
            P.mul_(e)
        P.div_(P.sum(-1, keepdim=True).clamp_min_(tiny))
    return P, _coalesced_rows(P)


def _widening(todo: torch.Tensor, window: int, length: int, attempt) -> bool:
    """``attempt(todo, w)`` (a bool mask of the chunks it settled) on windows of ``window``
    steps, widened fourfold for the chunks not yet settled, up to the whole chunk
    (``length``). True when every chunk of ``todo`` was settled."""
    w = window
    while len(todo):
        w = min(w, length)
        todo = todo[~attempt(todo, w)]
        if w == length:
            break
        w *= 4
    return not len(todo)


def _windowed_boundaries(e_bl, startprob, transmat, starts_bl, window):
    """Forward messages entering and backward messages leaving every chunk from windows of
    ``window`` steps, widened fourfold for the chunks that have not forgotten their start
    (up to the whole chunk); None if some chunk never does."""

    b, length, k = e_bl.shape
    flat = torch.full((k,), 1.0 / k, dtype=e_bl.dtype, device=e_bl.device)
    alpha0 = torch.empty(b, k, dtype=e_bl.dtype, device=e_bl.device)
    alpha0[0] = startprob  # unused: the stream starts a sequence
    beta_end = torch.empty_like(alpha0)
    beta_end[-1] = flat  # the end of the stream

    def forward(todo, w):  # the tail of chunk j gives the message entering chunk j + 1
        tail = starts_bl[todo, length - w :]  # (m, w)
        P, ok = _window_product(
            e_bl[todo, length - w :], range(w), transmat, _restart_steps(tail.T), startprob, False
        )
        alpha0[todo[ok] + 1] = P[ok, 0]
        return ok

    def backward(todo, w):  # the head of chunk j + 1 gives the message leaving chunk j
        head = starts_bl[todo, :w]  # (m, w)
        S, ok = _window_product(
            e_bl[todo, :w], range(w - 1, -1, -1), transmat, _restart_steps(head.T), flat, True
        )
        beta_end[todo[ok] - 1] = S[ok, 0]
        return ok

    chunks = torch.arange(b, device=e_bl.device)
    if not _widening(chunks[:-1], window, length, forward):
        return None
    if not _widening(chunks[1:], window, length, backward):
        return None
    return alpha0, beta_end


def _filter_in_place(e_bl, startprob, transmat, restarts, alpha, filtered, c, rescale=False):
    """Forward filter of every chunk from its entering message ``alpha`` (b, k): normalised
    messages into ``filtered`` (b, l, k), per-step normalisers into ``c`` (b, l). With
    ``rescale`` the emissions are divided by the normalisers in place, ``ê_t = e_t / c_t``,
    for :func:`_smooth_scaled`."""
    b, length, k = e_bl.shape
    tiny = torch.finfo(e_bl.dtype).tiny
    pred = torch.empty(b, k, dtype=e_bl.dtype, device=e_bl.device)
    s = torch.empty(b, 1, dtype=e_bl.dtype, device=e_bl.device)
    ones = torch.ones(k, dtype=e_bl.dtype, device=e_bl.device)
    for i in range(length):
        torch.mm(alpha, transmat, out=pred)  # (b, k)
        if i in restarts:
            pred[restarts[i]] = startprob
        e = e_bl[:, i]
        pred.mul_(e)
        # row sums as a product: faster than a reduction into the strided column c[:, i]
        torch.clamp_min(torch.mv(pred, ones, out=c[:, i]).unsqueeze(1), tiny, out=s)  # (b, 1)
        alpha = torch.div(pred, s, out=filtered[:, i])
        if rescale:
            e.div_(s)


def _with_boundary_counts(acc, e_bl, beta, last, At, transmat, starts_first):
    """Σ ξ (k, k) from the accumulated within-chunk products ``acc``, adding the transitions
    into the first step of chunks 1..b-1 (chunk 0 starts the stream) from the forward messages
    ``last`` (b, k) at every chunk's last step and the backward messages ``beta`` (b, k) at
    every chunk's first step."""
    if e_bl.shape[0] > 1:
        tiny = torch.finfo(e_bl.dtype).tiny
        r = e_bl[1:, 0] * beta[1:]  # (b-1, k)
        prev = last[:-1]
        zinv = (prev * (r @ At)).sum(1, keepdim=True).clamp_min_(tiny).reciprocal_()
        zinv.masked_fill_(starts_first[1:].unsqueeze(1), 0.0)
        acc.addmm_((prev * zinv).T, r)
    return torch.where(transmat > 0, transmat * acc, 0.0)  # a zero transition has no count


def _smooth_scaled(e_bl, filtered, transmat, restarts, beta, starts_first):
    """Backward pass with Rabiner's scaling (Rabiner 1989, §V.A): from the emissions already
    divided by the forward normalisers, ``ê_t = e_t / c_t``, the backward messages
    ``β̂_{t-1} = A (ê_t ⊙ β̂_t)`` keep ``α̂_t · β̂_t = 1``, so ``γ_t = α̂_t ⊙ β̂_t`` and
    ``ξ_t = α̂_{t-1} A ⊙ (ê_t ⊙ β̂_t)`` need no normaliser of their own: four (b, k)
    operations per step. Overwrites ``filtered`` with γ and returns Σ ξ (k, k), or None if
    a backward message overflowed (possible only in states the forward filter rules out
    completely); the caller then uses :func:`_smooth_in_place`."""
    b, length, k = e_bl.shape
    tiny = torch.finfo(e_bl.dtype).tiny
    At = transmat.T.contiguous()
    acc = torch.zeros(k, k, dtype=e_bl.dtype, device=e_bl.device)  # Σ α̂_{t-1}ᵀ (ê_t ⊙ β̂_t)
    r = torch.empty(b, k, dtype=e_bl.dtype, device=e_bl.device)
    last = filtered[:, -1].clone()  # α̂ at every chunk's last step, for the boundary terms
    beta = beta / (last * beta).sum(1, keepdim=True).clamp_min_(tiny)  # α̂ · β̂ = 1
    filtered[:, -1].mul_(beta)
    nxt = torch.empty_like(r)
    for i in range(length - 1, 0, -1):
        torch.mul(e_bl[:, i], beta, out=r)  # (b, k): ê_t ⊙ β̂_t
        if i in restarts:  # no transition into the first step of a sequence
            r[restarts[i]] = 0.0
        beta = torch.mm(r, At, out=nxt)  # β̂_{t-1}
        if i in restarts:
            beta[restarts[i]] = 1.0  # the sequence before ends here: α̂ · 1 = 1
        prev = filtered[:, i - 1]  # α̂_{t-1}
        acc.addmm_(prev.T, r)
        prev.mul_(beta)  # γ_{t-1} over α̂_{t-1}
    if not bool(torch.isfinite(beta).all()) or not bool(torch.isfinite(acc).all()):
        return None
    return _with_boundary_counts(acc, e_bl, beta, last, At, transmat, starts_first)


def _smooth_in_place(e_bl, filtered, transmat, restarts, beta, starts_first):
    """Backward pass over every chunk from the backward message ``beta`` (b, k) leaving it,
    overwriting ``filtered`` (b, l, k) with the smoothed marginals γ; returns Σ ξ (k, k).

    ``p(z_{t-1}=i, z_t=j | x) = α̂_{t-1}(i) A_ij e_t(j) β̂_t(j) / z_t`` with
    ``z_t = α̂_{t-1} · A (e_t ⊙ β̂_t)``, which also normalises γ_{t-1}."""
    b, length, k = e_bl.shape
    tiny = torch.finfo(e_bl.dtype).tiny
    cap = torch.finfo(e_bl.dtype).max / (2 * k)  # with e ≤ 1, A (e ⊙ β) stays finite
    At = transmat.T.contiguous()
    acc = torch.zeros(k, k, dtype=e_bl.dtype, device=e_bl.device)  # Σ (α̂/z)ᵀ (e ⊙ β̂)
    r = torch.empty(b, k, dtype=e_bl.dtype, device=e_bl.device)
    nxt = torch.empty_like(r)
    g = torch.empty_like(r)
    last = filtered[:, -1].clone()  # α̂ at every chunk's last step, for the boundary terms
    gl = filtered[:, -1]
    gl.mul_(beta).div_(gl.sum(1, keepdim=True).clamp_min_(tiny))
    for i in range(length - 1, 0, -1):
        torch.mul(e_bl[:, i], beta, out=r)  # (b, k): e_t ⊙ β̂_t
        torch.mm(r, At, out=nxt)  # (b, k): unnormalised β_{t-1}
        if i in restarts:
            nxt[restarts[i]] = 1.0
        prev = filtered[:, i - 1]  # α̂_{t-1}
        torch.mul(prev, nxt, out=g)
        zinv = g.sum(1, keepdim=True).clamp_min_(tiny).reciprocal_()  # (b, 1)
        lz = zinv
        if i in restarts:  # no transition into the first step of a sequence
            lz = zinv.clone()
            lz[restarts[i]] = 0.0
        acc.addmm_((prev * lz).T, r)
        torch.mul(g, zinv, out=prev)  # γ_{t-1} over α̂_{t-1}
        # divided by α̂ · β (not by its sum, which lets the states that matter underflow beside
        # a ruled-out state that fits better); a ruled-out state's component is capped
        beta = nxt.mul_(zinv).clamp_max_(cap)  # nxt's buffer is reused
    return _with_boundary_counts(acc, e_bl, beta, last, At, transmat, starts_first)


def fused_posterior(
    log_likelihoods, startprob, transmat, starts_bl, restarts, *, overwrite, window=16
):
    """The E-step over ``b`` chunks of ``l`` steps (the stream padded with restarting,
    flat-emission steps to ``b · l``). ``starts_bl`` (b, l) marks the first step of every
    sequence in the padded stream; ``restarts`` maps a step within a chunk to the chunks
    whose step starts a sequence there. If ``overwrite``, the log-likelihood buffer may be
    reused (it is then destroyed).

    Returns (γ (t, k), Σ ξ (k, k), per-step log normalisers (t,))."""
    t, k = log_likelihoods.shape
    b, length = starts_bl.shape
    pad = b * length - t
    ll = log_likelihoods
    shift = ll.amax(1, keepdim=True)  # (t, 1)
    # one reduction tells whether every row has a finite maximum (the common case), sparing
    # the (t,) mask and the masked copies
    all_finite = bool(torch.isfinite(shift.sum()))
    finite = None if all_finite else torch.isfinite(shift)
    safe = shift if all_finite else torch.where(finite, shift, 0.0)
    if overwrite and not pad and ll.is_contiguous():
        e = ll  # the caller's buffer, scaled in place
        e.sub_(safe)
    else:
        e = empty_large(b * length, k, dtype=ll.dtype, device=ll.device)
        torch.sub(ll, safe, out=e[:t])
        e[t:] = 0.0  # padding: flat emission
    e.exp_()
    shift = shift.squeeze(1)  # (t,)
    if not all_finite:
        shift = shift.masked_fill_(~finite.squeeze(1), -math.inf)
    e_bl = e.view(b, length, k)
    starts_first = starts_bl[:, 0]  # (b,) does chunk j start with a new sequence?
    if b == 1:
        alpha0 = startprob.unsqueeze(0).clone()
        beta_end = torch.full((1, k), 1.0 / k, dtype=e.dtype, device=e.device)
    else:
        found = _windowed_boundaries(e_bl, startprob, transmat, starts_bl, window)
        if found is None:  # some chunk remembers its start: the exact whole-chunk scan
            e_lb = e_bl.transpose(0, 1)  # (l, b, k) view
            P, log_r = _chunk_transfer(e_lb, transmat, startprob, restarts)
            alpha0, beta_end = _entering_forward(P, log_r, k), _entering_backward(P, log_r, k)
        else:
            alpha0, beta_end = found
    filtered = empty_large(b, length, k, dtype=e.dtype, device=e.device)
    c = torch.empty(b, length, dtype=e.dtype, device=e.device)
    _filter_in_place(e_bl, startprob, transmat, restarts, alpha0, filtered, c, rescale=True)
    xi = _smooth_scaled(e_bl, filtered, transmat, restarts, beta_end, starts_first)
    if xi is None:  # a scaled backward message overflowed: filter again, normalise every step
        # from the emissions themselves (e ≤ 1, which bounds the capped backward messages)
        e_bl.mul_(c.clamp_min(torch.finfo(c.dtype).tiny).unsqueeze(-1))
        scratch = torch.empty_like(c)
        _filter_in_place(e_bl, startprob, transmat, restarts, alpha0, filtered, scratch)
        xi = _smooth_in_place(e_bl, filtered, transmat, restarts, beta_end, starts_first)
    log_norm = c.view(-1)[:t].log_().add_(shift)
    return filtered.view(-1, k)[:t], xi, log_norm


def _filter_from(e_lb, startprob, transmat, restarts, alpha):
    """Forward filter of every chunk (l, b, k) from its entering message ``alpha`` (b, k)."""
    length, b, _ = e_lb.shape
    tiny = torch.finfo(e_lb.dtype).tiny
    filtered = torch.empty_like(e_lb)
    c = torch.empty(length, b, 1, dtype=e_lb.dtype, device=e_lb.device)
    for i in range(length):
        pred = alpha @ transmat  # (b, k)
        if i in restarts:
            pred[restarts[i]] = startprob
        pred.mul_(e_lb[i])
        s = torch.sum(pred, 1, keepdim=True, out=c[i])  # (b, 1)
        alpha = torch.div(pred, s.clamp_min(tiny), out=filtered[i])
    return filtered, c.squeeze(2).log()


def parallel_forward_filter(
    log_likelihoods, startprob, transmat, lengths=None, *, chunk: int | None = None
) -> HMMFiltered:
    """The forward filter of :func:`~latentfit.em.hmm.inference.sequential.forward_filter`, computed over chunks in parallel.

    Same result (to rounding) in ``O(l + b)`` Python steps instead of ``O(t)``.
    """
    t, k = log_likelihoods.shape
    ch = _prepare(log_likelihoods, lengths, chunk)
    alpha0, _ = _boundary_messages(ch, startprob, transmat, k, backward=False)
    filtered, log_c = _filter_from(ch.e, startprob, transmat, ch.restarts, alpha0)
    log_norm = _unchunk(log_c + ch.shift, t)
    seq = _segment_sum(log_norm, ch.starts)
    return HMMFiltered(seq.sum(), seq, _unchunk(filtered, t), log_norm)
