"""Viterbi decoding (Viterbi 1967; Rabiner 1989, eqs. 30-35): the sequential recursion and
its chunked, parallel twin with the same signature. Inputs as in
:mod:`latentfit.em.hmm.inference.posterior`: per-step emission log-likelihoods (t, k), ``startprob``,
``transmat`` and the sequence lengths (sequences laid end to end)."""

from __future__ import annotations

import math

import torch

from latentfit.em.hmm.inference.messages import (
    HMMViterbi,
    _log,
    _path_log_prob,
    _restart_steps,
    _segment_sum,
    padded_chunks,
    sequence_starts,
)
from latentfit.em.hmm.inference.runtime import empty_large

__all__ = ["parallel_viterbi"]


def _max_plus_chunks(ll_bl, delta, log_trans, log_start, restarts, out):
    """The max-plus recursion over every step of ``ll_bl`` (b, l, k) for all chunks at once
    from ``delta`` (b, k), writing every step's message ``δ_t`` into ``out`` (b, l, k).

    ``δ_t(j) = max_i (δ_{t-1}(i) + log A_ij) + ℓ_t(j)``; for few states as ``k`` running
    maxima of (b, k) slices (no (b, k, k) temporary), for many as one (b, k, k) reduction.
    At a restart the message is ``log π + max δ_{t-1}`` (the previous sequence ends at its
    best state; the max is taken as 0 when that sequence is impossible)."""
    b, length, k = ll_bl.shape
    v = torch.empty(b, k, dtype=ll_bl.dtype, device=ll_bl.device)
    if k <= _UNROLL_STATES:
        tmp = torch.empty_like(v)
    else:
        cand = torch.empty(b, k, k, dtype=ll_bl.dtype, device=ll_bl.device)  # (b, i, j)
    for i in range(length):
        if k <= _UNROLL_STATES:
            torch.add(delta[:, :1], log_trans[0], out=v)
            for s in range(1, k):
                torch.maximum(v, torch.add(delta[:, s : s + 1], log_trans[s], out=tmp), out=v)
        else:
            torch.amax(torch.add(delta.unsqueeze(2), log_trans, out=cand), 1, out=v)
        if i in restarts:  # after an impossible sequence (max −inf) the next starts from 0
            idx = restarts[i]
            top = delta[idx].amax(1, keepdim=True)
            v[idx] = log_start + torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        delta = torch.add(v, ll_bl[:, i], out=out[:, i])
    return delta


_UNROLL_STATES = 16


def _shifted(delta: torch.Tensor) -> torch.Tensor:
    """A max-plus message shifted to a maximum of 0 (an all -inf row stays -inf)."""
    return delta - delta.amax(1, keepdim=True).clamp_min(torch.finfo(delta.dtype).min)


def _same_messages(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per chunk: are two max-plus messages (shifted to a maximum of 0) equal, with the same
    -inf pattern and finite entries equal to 1e-9 relative (1e-5 below float64)? Equal
    entering messages give equal back-pointers."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    same_support = (fa == fb).all(1)
    both = fa & fb
    diff = torch.where(both, (a - b).abs(), 0.0).amax(1)
    scale = torch.where(both, a.abs(), 0.0).amax(1).clamp_min(1.0)
    rtol = 1e-9 if a.dtype == torch.float64 else 1e-5  # float32 rounds at ~1e-7 relative
    return same_support & (diff <= rtol * scale)


def parallel_viterbi(
    log_likelihoods,
    startprob,
    transmat,
    lengths=None,
    *,
    chunk: int | None = None,
    warmup: int = 16,
) -> HMMViterbi:
    """Viterbi decoding over chunks in parallel; the same path as :func:`viterbi`.

    The stream is cut into ``b`` chunks of ``l`` consecutive steps (a (b, l, k) view) and the
    max-plus recursion runs over all chunks at once, keeping the messages ``δ_t`` instead of
    back-pointers. Max-plus transfer matrices would cost ``k³`` per step, so the entering
    message of every chunk is *proposed* by running the recursion over the last ``warmup``
    steps of the previous chunk from a flat start (max-plus messages forget their start once
    the survivor paths merge), and *checked* against the exact message leaving the previous
    chunk; chunks whose proposal was wrong are run again from the corrected message until
    every entering message is exact (a fixed point reached in at most ``b`` rounds; usually
    none is needed). The trace-back is the same propose-and-check: every chunk is traced back
    at once from its best final state, each back-pointer recomputed from the stored messages
    as ``argmax_i δ_{t-1}(i) + log A_{i, z_t}``; a chunk whose final state disagrees with the
    predecessor of its successor's first state is traced back again, until they all agree.
    """
    t, _k = log_likelihoods.shape
    device = log_likelihoods.device
    starts = sequence_starts(lengths, t, device)
    log_start, log_trans = _log(startprob), _log(transmat)
    # shorter chunks than the E-step's: the max-plus step is elementwise work, so more chunks
    # per Python step (a larger batch) pay off, and the check-and-redo rounds are cheap
    length = chunk or (t if t <= 256 else math.ceil(math.sqrt(t) / 4))
    ll_bl, starts_bl = padded_chunks(log_likelihoods, starts, length)
    path = _decode_chunks(ll_bl, starts_bl, log_start, log_trans, warmup)
    path = path.reshape(-1)[:t]
    per_step = _path_log_prob(log_likelihoods, log_start, log_trans, path, starts)
    seq = _segment_sum(per_step, starts)
    return HMMViterbi(seq.sum(), seq, path)


def _decode_chunks(ll_bl, starts_bl, log_start, log_trans, warmup):
    """Viterbi over the chunks (b, l, k) with checked entering messages and checked
    trace-backs; returns the path (b, l)."""
    b, length, k = ll_bl.shape
    restarts = _restart_steps(starts_bl.T)
    entering = torch.zeros(b, k, dtype=ll_bl.dtype, device=ll_bl.device)
    if b > 1:  # proposals from the tail of the previous chunk
        w = min(warmup, length)
        tail = ll_bl[:-1, length - w :]
        scratch = torch.empty_like(tail)
        tail_restarts = _restart_steps(starts_bl[:-1, length - w :].T)
        last = _max_plus_chunks(tail, entering[1:], log_trans, log_start, tail_restarts, scratch)
        entering[1:] = _shifted(last)
    # (b, l, k) messages δ_t, stored step-major so that every step's slice is contiguous
    delta = empty_large(length, b, k, dtype=ll_bl.dtype, device=ll_bl.device).transpose(0, 1)
    _max_plus_chunks(ll_bl, entering, log_trans, log_start, restarts, delta)
    while b > 1:
        proposal = torch.cat([entering[:1], _shifted(delta[:-1, -1])])  # (b, k)
        todo = (~_same_messages(entering, proposal)).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        entering[todo] = proposal[todo]
        sub = torch.empty(len(todo), length, k, dtype=ll_bl.dtype, device=ll_bl.device)
        sub_restarts = _restart_steps(starts_bl[todo].T)
        _max_plus_chunks(ll_bl[todo], entering[todo], log_trans, log_start, sub_restarts, sub)
        delta[todo] = sub
    return _trace_back(delta, starts_bl, log_trans)


def _trace_back_chunks(delta, ends, log_trans_t, restarts, path):
    """Trace every chunk of ``delta`` (m, l, k) back from its final state ``ends`` (m,)
    into ``path`` (m, l)."""
    length = delta.shape[1]
    state = ends
    path[:, -1] = state
    for i in range(length - 1, 0, -1):
        cand = log_trans_t.index_select(0, state).add_(delta[:, i - 1])  # δ_{t-1}(i) + log A_iz
        if i in restarts:  # the previous sequence ended at its best state
            idx = restarts[i]
            cand[idx] = delta[idx, i - 1]
        state = torch.max(cand, 1).indices  # the first maximum, as torch.argmax
        path[:, i - 1] = state
    return path


def _trace_back(delta, starts_bl, log_trans):
    """The checked trace-back of every chunk (see :func:`parallel_viterbi`): path (b, l)."""
    b, length, _ = delta.shape
    log_trans_t = log_trans.T.contiguous()  # row j: log A_ij over i
    restarts = _restart_steps(starts_bl.T)
    ends = delta[:, -1].argmax(1)  # (b,) proposals; exact for the last chunk
    path = torch.empty(length, b, dtype=torch.int64, device=delta.device).T  # (b, l)
    _trace_back_chunks(delta, ends, log_trans_t, restarts, path)
    restart_first = starts_bl[1:, 0]  # (b-1,): chunk j+1 starts a new sequence
    while b > 1:
        # the true final state of chunk j: predecessor of chunk j+1's first state
        cand = delta[:-1, -1] + log_trans_t[path[1:, 0]]  # (b-1, k)
        cand = torch.where(restart_first.unsqueeze(1), delta[:-1, -1], cand)
        want = cand.argmax(1)
        todo = (want != path[:-1, -1]).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        sub = torch.empty(len(todo), length, dtype=torch.int64, device=delta.device)
        sub_restarts = _restart_steps(starts_bl[todo].T)
        _trace_back_chunks(delta[todo], want[todo], log_trans_t, sub_restarts, sub)
        path[todo] = sub
    return path
