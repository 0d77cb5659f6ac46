"""Viterbi decoding (Viterbi 1967; Rabiner 1989, eqs. 30-35): the sequential recursion and
its chunked, parallel twin with the same signature. Inputs as in
:mod:`latentfit.em.hmm.kernels`: per-step emission log-likelihoods (t, k), ``startprob``,
``transmat`` and the sequence lengths (sequences laid end to end)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit.em.hmm.kernels import (
    _chunked,
    _restart_steps,
    _segment_sum,
    _unchunk,
    chunk_length,
    sequence_starts,
    step_loop_threads,
)

__all__ = ["HMMViterbi", "parallel_viterbi", "viterbi"]


class HMMViterbi(NamedTuple):
    """Most probable state path and its joint log-probability log p(x, z*)."""

    log_prob: torch.Tensor  # ()
    sequence_log_probs: torch.Tensor  # (n_sequences,)
    path: torch.Tensor  # (t,) int64


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.zeros_like(x)).log().masked_fill(x <= 0, -math.inf)


def _path_log_prob(log_likelihoods, log_start, log_trans, path, starts) -> torch.Tensor:
    """log p(x, z) of the given path, per step (t,)."""
    t = path.shape[0]
    emit = log_likelihoods.gather(1, path.unsqueeze(1)).squeeze(1)  # (t,)
    trans = torch.empty_like(emit)
    trans[0] = 0.0
    if t > 1:
        trans[1:] = log_trans[path[:-1], path[1:]]
    trans = torch.where(starts, log_start[path], trans)
    return emit + trans


def viterbi(log_likelihoods, startprob, transmat, lengths=None) -> HMMViterbi:
    """Viterbi decoding (Viterbi 1967; Rabiner 1989, eqs. 30-35) in log space, sequentially."""
    t, k = log_likelihoods.shape
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    log_start, log_trans = _log(startprob), _log(transmat)
    bp = torch.empty(t, k, dtype=torch.int64, device=log_likelihoods.device)
    starts_cpu = starts.cpu().tolist()
    delta = log_start
    for i in range(t):
        if starts_cpu[i]:
            best = delta.argmax()
            bp[i] = best
            delta = log_start + log_likelihoods[i]
        else:
            delta, bp[i] = (delta.unsqueeze(1) + log_trans).max(0)
            delta = delta + log_likelihoods[i]
    path = torch.empty(t, dtype=torch.int64, device=log_likelihoods.device)
    state = delta.argmax()
    for i in range(t - 1, -1, -1):
        path[i] = state
        state = bp[i, state]
    per_step = _path_log_prob(log_likelihoods, log_start, log_trans, path, starts)
    seq = _segment_sum(per_step, starts)
    return HMMViterbi(seq.sum(), seq, path)


def _max_plus_chunks(ll_lb, delta, log_trans_t, log_start, restarts, bp=None):
    """The max-plus recursion over every step of ``ll_lb`` (l, b, k) for all chunks at once
    from ``delta`` (b, k); fills back-pointers ``bp`` (l, b, k) and returns the final delta,
    shifted to a maximum of 0. ``log_trans_t`` is log Aᵀ (row j: log A_ij over i)."""
    length, b, k = ll_lb.shape
    cand = torch.empty(b, k, k, dtype=ll_lb.dtype, device=ll_lb.device)  # (b, j, i)
    for i in range(length):
        prev = delta
        torch.add(prev.unsqueeze(1), log_trans_t, out=cand)
        delta, a = torch.max(cand, 2)  # (b, k)
        if i in restarts:
            idx = restarts[i]
            best, where = prev[idx].max(1)  # the previous sequence's best final state
            delta[idx] = log_start + best.unsqueeze(1)
            a[idx] = where.unsqueeze(1).expand(-1, k)
        delta.add_(ll_lb[i])
        if bp is not None:
            bp[i] = a
    return delta - delta.amax(1, keepdim=True).clamp_min(-1e300)


def _same_messages(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per chunk: are two max-plus messages (shifted to a maximum of 0) equal, with the same
    -inf pattern and finite entries equal to 1e-9 relative? Equal entering messages give
    equal back-pointers."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    same_support = (fa == fb).all(1)
    both = fa & fb
    diff = torch.where(both, (a - b).abs(), 0.0).amax(1)
    scale = torch.where(both, a.abs(), 0.0).amax(1).clamp_min(1.0)
    return same_support & (diff <= 1e-9 * scale)


def parallel_viterbi(
    log_likelihoods,
    startprob,
    transmat,
    lengths=None,
    *,
    chunk: int | None = None,
    warmup: int = 64,
) -> HMMViterbi:
    """Viterbi decoding over chunks in parallel; the same path as :func:`viterbi`.

    Max-plus transfer matrices cost ``k³`` per step, so the entering message of every chunk is
    instead *proposed* by running the recursion over the last ``warmup`` steps of the previous
    chunk from a flat start (max-plus messages forget their start once the survivor paths
    merge), every chunk is decoded from its proposal, and the proposal is *checked* against the
    exact message leaving the previous chunk. Chunks whose proposal was wrong are decoded
    again from the corrected message until every entering message is exact (a fixed point
    reached in at most ``b`` rounds; usually none is needed). The chunk-level back-pointers
    are then composed into the chunk boundary states, and every chunk is traced back at once.
    """
    t, k = log_likelihoods.shape
    device = log_likelihoods.device
    starts = sequence_starts(lengths, t, device)
    log_start, log_trans = _log(startprob), _log(transmat)
    log_trans_t = log_trans.T.contiguous()
    length = chunk or chunk_length(t, k)
    ll_lb, starts_lb, b = _chunked(log_likelihoods, starts, length, 0.0)
    restarts = _restart_steps(starts_lb)
    with step_loop_threads(log_likelihoods.device):
        path = _decode_chunks(
            ll_lb, starts_lb, restarts, log_start, log_trans_t, b, length, k, warmup
        )
    path = _unchunk(path, t)
    per_step = _path_log_prob(log_likelihoods, log_start, log_trans, path, starts)
    seq = _segment_sum(per_step, starts)
    return HMMViterbi(seq.sum(), seq, path)


def _decode_chunks(ll_lb, starts_lb, restarts, log_start, log_trans_t, b, length, k, warmup):
    """Viterbi over the step-major chunks (l, b, k) with checked entering messages; returns
    the path (l, b)."""
    device = ll_lb.device
    entering = torch.zeros(b, k, dtype=ll_lb.dtype, device=device)
    if b > 1:  # proposals from the tail of the previous chunk
        w = min(warmup, length)
        tail_restarts = _restart_steps(starts_lb[length - w :, :-1])
        entering[1:] = _max_plus_chunks(
            ll_lb[length - w :, :-1], entering[1:], log_trans_t, log_start, tail_restarts
        )
    bp = torch.empty(length, b, k, dtype=torch.int64, device=device)
    leaving = _max_plus_chunks(ll_lb, entering, log_trans_t, log_start, restarts, bp)
    while b > 1:
        proposal = torch.cat([entering[:1], leaving[:-1]])  # (b, k)
        todo = (~_same_messages(entering, proposal)).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        entering[todo] = proposal[todo]
        sub_bp = torch.empty(length, len(todo), k, dtype=torch.int64, device=device)
        leaving[todo] = _max_plus_chunks(
            ll_lb[:, todo],
            entering[todo],
            log_trans_t,
            log_start,
            _restart_steps(starts_lb[:, todo]),
            sub_bp,
        )
        bp[:, todo] = sub_bp
    # chunk maps: end state of chunk j -> end state of chunk j-1
    cur = torch.arange(k, device=device).expand(b, k).contiguous()
    for i in range(length - 1, 0, -1):
        cur = bp[i].gather(1, cur)
    maps = bp[0].gather(1, cur).cpu().numpy()  # (b, k)
    ends = [0] * b
    ends[-1] = int(leaving[-1].argmax())
    for j in range(b - 1, 0, -1):
        ends[j - 1] = int(maps[j, ends[j]])
    state = torch.tensor(ends, device=device).unsqueeze(1)  # (b, 1)
    path = torch.empty(length, b, dtype=torch.int64, device=device)
    for i in range(length - 1, -1, -1):
        path[i] = state.squeeze(1)
        state = bp[i].gather(1, state)
    return path
