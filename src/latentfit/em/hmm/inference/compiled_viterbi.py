"""Viterbi decoding compiled for the CPU (numba): the chunked recursion of
:func:`~latentfit.em.hmm.inference.chunked_viterbi.parallel_viterbi` with the chunks as the lanes of vector
instructions, and the emission log-likelihoods computed block by block so that the (t, k)
array never exists whole.

Why compiled code: one Viterbi step is k² additions and comparisons on a few numbers, far below
what a torch call costs; the torch version batches the chunks into (b, k) tensors but still
makes thousands of calls. Why the blocks: for a million steps the (t, k) log-likelihoods are
64 MB, and writing them to memory and reading them back took longer than the recursion itself.

The layout. The t steps (plus one virtual restart at step t, which yields the best final
state and the last sequence's score) are cut into ``b`` chunks of ``l`` steps; ``lanes``
consecutive chunks form a group, which covers ``lanes · l`` consecutive steps. A group's
emission log-likelihoods are computed at once (they fit in cache), transposed block by block
into (steps, k, lanes) so that the innermost loops run over lanes, and the max-plus recursion
(Rabiner 1989, eqs. 32-33) runs over all lanes together. Groups run on separate threads (the
emission code releases the GIL inside torch, the kernels release it always).

Entering messages are proposed and checked as in :func:`parallel_viterbi`: each chunk starts
from the message reached by running the recursion over the ``warmup`` steps before it from a
flat start (survivor paths merge within a few steps); afterwards every proposal is compared
with the exact message leaving the previous chunk and a chunk whose proposal was wrong is run
again, in order, so that corrections propagate. The back-pointers are then exact. The
trace-back runs the lanes of a group together too, each chunk from the best state of its
leaving message; from the last chunk down, a chunk whose final state is not the predecessor
of the next chunk's first state is traced again from the right one, stopping where it joins
the path already traced.

Scores: inside a chunk messages are relative to its entering message (shifted to a maximum of
0); the offsets between chunks are added back to give every sequence's log p(x, z*).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from latentfit._compiled import jit as _jit
from latentfit._kernel_ops import largest, maximum, minimum, searchsorted_left
from latentfit.em.hmm.inference.compiled import n_states, states_arg
from latentfit.em.hmm.inference.messages import HMMViterbi, _log
from latentfit.em.hmm.inference.runtime import compiled_workers, empty_large, run_threads
from latentfit.errors import DataError

__all__ = ["viterbi_cpu", "viterbi_cpu_blocks"]

LANES = 32  # chunks per group: four 512-bit vectors of float64
BLOCK = 64  # steps transposed at a time: (64, k, 32) numbers stay in the first-level cache
WARMUP = 16  # steps run from a flat start to propose a chunk's entering message
# proposals equal to the exact message to this relative tolerance are accepted: far above the
# rounding of messages that have coalesced, far below the differences of ones that have not
RTOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-5}


@_jit
def _steps(lt, rs, any_rs, delta, new, log_trans, log_start, bp, ends, states):
    """The max-plus recursion over ``lt.shape[0]`` steps for every lane.

    lt (S, k, lanes) emission log-likelihoods, rs (S, lanes) restart flags (any_rs (S,) their
    any over lanes), delta (k, lanes) the message entering the first step, updated in place;
    writes back-pointers bp (S, k, lanes) and, at restarts, the best score of the sequence
    that ended, ends (S, lanes). ``new`` (k, lanes) is scratch.

    ``δ_t(j) = max_i δ_{t-1}(i) + log A_ij + ℓ_t(j)`` with the first maximising ``i`` as the
    back-pointer; at a restart ``δ_t(j) = log π_j + max_i δ_{t-1}(i) + ℓ_t(j)`` (the max taken
    as 0 when the previous sequence is impossible) and every back-pointer is the best final
    state of the previous sequence.
    """
    k = n_states(states)
    lanes = delta.shape[1]
    for s in range(lt.shape[0]):
        lts = lt[s]
        bps = bp[s]
        for j in range(k):
            nj = new[j]
            bj = bps[j]
            lj = lts[j]
            for c in range(lanes):  # the vector loop: one lane per chunk
                best = delta[0, c] + log_trans[0, j]
                arg = 0
                for i in range(1, k):  # unrolled when k is a compile-time constant
                    v = delta[i, c] + log_trans[i, j]
                    if v > best:
                        best = v
                        arg = i
                nj[c] = best + lj[c]
                bj[c] = arg
        if any_rs[s]:
            for c in range(lanes):
                if rs[s, c]:
                    arg = 0
                    for i in range(1, k):
                        if delta[i, c] > delta[arg, c]:
                            arg = i
                    best = delta[arg, c]
                    ends[s, c] = best
                    if best == -np.inf:  # an impossible sequence: the next starts afresh
                        best = 0.0
                    for j in range(k):
                        new[j, c] = log_start[j] + best + lts[j, c]
                        bps[j, c] = arg
        for j in range(k):
            for c in range(lanes):
                delta[j, c] = new[j, c]


@_jit
def _fill(ll, row0, q0, length, s0, ns, t, starts, lt, rs, any_rs):
    """Transpose steps ``s0 .. s0+ns-1`` of every lane's chunk into ``lt`` (ns, k, lanes) and
    their restart flags into ``rs``. ``ll`` holds the emission rows from step ``row0``. Steps
    before 0 (the warm-up of chunk 0) and after t are flat; step t is the virtual restart."""
    k = ll.shape[1]
    lanes = lt.shape[2]
    for s in range(ns):
        any_rs[s] = False
        for c in range(lanes):
            tau = (q0 + c) * length + s0 + s
            if 0 <= tau < t:
                row = ll[tau - row0]
                for j in range(k):
                    lt[s, j, c] = row[j]
                r = starts[tau]
            else:
                for j in range(k):
                    lt[s, j, c] = 0.0
                r = tau == t
            rs[s, c] = r
            any_rs[s] = any_rs[s] or r


@_jit
def _shift_message(m, out):
    """``out = m − max m`` (an all −inf message stays −inf)."""
    top = largest(m)
    if top == -np.inf:
        top = 0.0
    for j in range(m.shape[0]):
        out[j] = m[j] - top


@_jit
def _lanes_forward(
    ll, row0, q0, length, t, starts, log_start, log_trans, entering, propose, warmup,
    bp, exits, end_rel, end_chunk, offsets, states,
):  # fmt: skip
    """The forward pass of the chunks ``q0 .. q0 + lanes − 1`` (lanes = bp.shape[2]):
    proposes their entering messages (if ``propose``), runs the recursion writing bp
    (l, k, lanes), the leaving messages ``exits[q]`` and the scores of the sequences that
    end inside them (``end_rel``, relative to the chunk, and ``end_chunk``)."""
    k = n_states(states)
    lanes = bp.shape[2]
    dt = ll.dtype
    delta = np.zeros((k, lanes), dt)
    new = np.empty((k, lanes), dt)
    lt = np.empty((BLOCK, k, lanes), dt)
    rs = np.zeros((BLOCK, lanes), np.bool_)
    any_rs = np.zeros(BLOCK, np.bool_)
    ends = np.empty((BLOCK, lanes), dt)
    b = entering.shape[0]
    if propose:
        w = minimum(minimum(warmup, length), BLOCK)
        scratch = np.empty((w, k, lanes), bp.dtype)
        _fill(ll, row0, q0, length, -w, w, t, starts, lt, rs, any_rs)
        _steps(lt[:w], rs[:w], any_rs[:w], delta, new, log_trans, log_start, scratch, ends, states)
        for c in range(lanes):
            q = q0 + c
            if q < b:
                if q == 0:
                    entering[q] = 0.0
                else:
                    _shift_message(delta[:, c], entering[q])
    for c in range(lanes):
        q = q0 + c
        for j in range(k):
            delta[j, c] = entering[q, j] if q < b else 0.0
    for s0 in range(0, length, BLOCK):
        ns = minimum(BLOCK, length - s0)
        _fill(ll, row0, q0, length, s0, ns, t, starts, lt, rs, any_rs)
        _steps(
            lt[:ns], rs[:ns], any_rs[:ns], delta, new, log_trans, log_start,
            bp[s0 : s0 + ns], ends, states,
        )  # fmt: skip
        for s in range(ns):
            if any_rs[s]:
                for c in range(lanes):
                    tau = (q0 + c) * length + s0 + s
                    if rs[s, c] and 0 < tau <= t:  # sequence r − 1 ended at step tau − 1
                        r = searchsorted_left(offsets, tau)
                        end_rel[r - 1] = ends[s, c]
                        end_chunk[r - 1] = q0 + c
    for c in range(lanes):
        q = q0 + c
        if q < b:
            for j in range(k):
                exits[q, j] = delta[j, c]


@_jit
def _first_wrong(entering, exits, q_from, rtol):
    """The first chunk q ≥ ``q_from`` whose entering message differs from the exact one (the
    previous chunk's leaving message, shifted): sets it to the exact one and returns q, or −1.
    Messages agree when they have the same −inf entries and the finite ones agree to ``rtol``
    relative to the size of the numbers they were computed from (the leaving message before
    the shift, whose rounding both carry): equal messages give equal back-pointers."""
    b, k = exits.shape
    exact = np.empty(k, exits.dtype)
    for q in range(maximum(q_from, 1), b):
        _shift_message(exits[q - 1], exact)
        top = largest(exits[q - 1])
        scale = maximum(1.0, abs(top)) if top != -np.inf else 1.0
        same = True
        for j in range(k):
            a, e = entering[q, j], exact[j]
            if (a == -np.inf) != (e == -np.inf):
                same = False
            elif e != -np.inf and abs(a - e) > rtol * maximum(scale, abs(e)):
                same = False
        if not same:
            for j in range(k):  # element by element: see latentfit._kernel_ops
                entering[q, j] = exact[j]
            return q
    return -1


@_jit
def _trace_lanes(bp, ends, length, t, q0, path):
    """Trace every lane of one group back from its chunk's final state ``ends`` (lanes,),
    lanes interleaved so that their pointer chains overlap in time; bp (l, k, lanes). The
    states are gathered lane-major first, then written out in order (much faster than writing
    the path lane by lane: benchmarks/README.md)."""
    lanes = bp.shape[2]
    state = np.empty(lanes, np.int64)
    for c in range(lanes):
        state[c] = ends[c]
    buf = np.empty((lanes, length), bp.dtype)
    for s in range(length - 1, -1, -1):
        row = bp[s]
        for c in range(lanes):
            z = state[c]
            buf[c, s] = z
            state[c] = row[z, c]
    for c in range(lanes):
        base = (q0 + c) * length
        for s in range(minimum(length, t - base)):
            path[base + s] = buf[c, s]


@_jit
def _retrace(bp, end, length, t, q, path):
    """Trace chunk ``q`` (lane ``q % lanes`` of bp (groups, l, k, lanes)) back from ``end``,
    stopping where it joins the path already traced (the rest is then the same)."""
    lanes = bp.shape[3]
    g, c = q // lanes, q % lanes
    state = end
    for s in range(minimum(length, t - q * length) - 1, -1, -1):
        tau = q * length + s
        if path[tau] == state:
            return
        path[tau] = state
        state = bp[g, s, state, c]


@_jit
def _predecessor(bp, path, length, t, q):
    """The state at the last step of chunk ``q`` implied by the state at the step after it:
    its back-pointer (after step t − 1: the virtual restart, whose pointers all hold the best
    final state)."""
    lanes = bp.shape[3]
    tau = minimum((q + 1) * length, t)
    p = tau // length
    return bp[p // lanes, tau - p * length, path[tau] if tau < t else 0, p % lanes]


@_jit
def _check_trace(bp, exits, length, t, path):
    """Fix the lane-wise trace-back: each chunk was traced from the best state of its leaving
    message; from the last chunk down, a chunk whose final state is not the predecessor of
    the next chunk's first state is traced again from the right one."""
    b = exits.shape[0]
    last = t // length  # the chunk holding the virtual restart
    for q in range(minimum(last, b - 1), -1, -1):
        if q * length >= t:
            continue
        end = _predecessor(bp, path, length, t, q)
        if path[minimum(t, (q + 1) * length) - 1] != end:
            _retrace(bp, end, length, t, q, path)


def _chunk_length(t1: int, workers: int) -> int:
    """Steps per chunk: a few groups per worker, each small enough to stay in cache."""
    return int(min(1024, max(WARMUP, math.ceil(t1 / (LANES * 4 * workers)))))


def viterbi_cpu_blocks(
    emission: Callable[[int, int], torch.Tensor],
    t: int,
    startprob: torch.Tensor,
    transmat: torch.Tensor,
    lengths=None,
    *,
    workers: int | None = None,
    chunk: int | None = None,
) -> HMMViterbi:
    """Viterbi decoding (Viterbi 1967; Rabiner 1989, eqs. 30-35) of ``t`` steps whose emission
    log-likelihoods ``emission(start, stop)`` (stop − start, k) are asked for block by block;
    the same path as :func:`~latentfit.em.hmm.inference.chunked_viterbi.viterbi` (see the module docstring)."""
    log_start = _log(startprob).cpu().numpy()
    log_trans = _log(transmat).cpu().numpy()
    dtype = log_start.dtype
    k = log_start.shape[0]
    lengths = np.asarray([t] if lengths is None else lengths, dtype=np.int64)
    if (lengths < 1).any() or int(lengths.sum()) != t:
        raise DataError(f"lengths must be positive and sum to {t}")
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # sequence starts, then t
    starts = np.zeros(t, np.bool_)
    starts[offsets[:-1]] = True
    workers = workers or compiled_workers()
    t1 = t + 1  # the virtual restart at step t
    length = chunk or _chunk_length(t1, workers)
    b = -(-t1 // length)
    groups = -(-b // LANES)
    warmup = min(WARMUP, length)
    # large arrays on huge pages: first touches of fresh 4 KiB pages cost more than the work
    bp_dtype = torch.uint8 if k <= 255 else torch.int32
    bp = empty_large(groups, length, k, LANES, dtype=bp_dtype, device="cpu").numpy()
    entering = np.zeros((b, k), dtype)
    exits = np.empty((b, k), dtype)
    n_seq = len(lengths)
    end_rel = np.zeros(n_seq, dtype)
    end_chunk = np.zeros(n_seq, np.int64)
    states = states_arg(k)  # see latentfit.em.hmm.inference.compiled

    def rows(start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(t, stop)
        if stop <= start:
            return np.zeros((0, k), dtype)
        return np.ascontiguousarray(emission(start, stop).detach().cpu().numpy(), dtype=dtype)

    def group(g: int) -> None:
        row0 = max(0, g * LANES * length - warmup)
        ll = rows(row0, (g + 1) * LANES * length)
        _lanes_forward(
            ll, row0, g * LANES, length, t, starts, log_start, log_trans, entering, True,
            warmup, bp[g], exits, end_rel, end_chunk, offsets, states,
        )  # fmt: skip

    run_threads(group, groups, workers)
    rtol = RTOL.get(np.dtype(dtype), 1e-5)
    q = _first_wrong(entering, exits, 1, rtol)
    while q >= 0:  # run a chunk again from its exact entering message
        g, c = divmod(q, LANES)
        ll = rows(q * length, (q + 1) * length)
        _lanes_forward(
            ll, q * length, q, length, t, starts, log_start, log_trans, entering, False,
            warmup, bp[g][:, :, c : c + 1], exits, end_rel, end_chunk, offsets, states,
        )  # fmt: skip
        q = _first_wrong(entering, exits, q + 1, rtol)
    path_t = empty_large(t, dtype=torch.int64, device="cpu")
    path = path_t.numpy()
    ends = np.zeros(groups * LANES, np.int64)  # proposed final states, checked by _check_trace
    ends[:b] = exits.argmax(1)

    def trace(g: int) -> None:
        _trace_lanes(bp[g], ends[g * LANES : (g + 1) * LANES], length, t, g * LANES, path)

    run_threads(trace, groups, workers)
    _check_trace(bp, exits, length, t, path)
    # chunk offsets: chunk q's messages are relative to base[q]
    top = exits.max(1).astype(np.float64)  # chunk offsets summed in float64
    base = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(top), top, 0.0))[:-1]])
    end_abs = end_rel.astype(np.float64) + base[end_chunk]  # best score up to each sequence end
    # what each next sequence starts from: that score, or 0 after an impossible sequence
    carry = np.where(np.isfinite(end_rel), end_rel, 0.0) + base[end_chunk]
    seq = end_abs - np.concatenate([[0.0], carry[:-1]])
    seq_t = torch.as_tensor(seq.astype(dtype))
    return HMMViterbi(seq_t.sum(), seq_t, path_t)


def viterbi_cpu(log_likelihoods, startprob, transmat, lengths=None, **kwargs) -> HMMViterbi:
    """:func:`viterbi_cpu_blocks` on given per-step emission log-likelihoods (t, k) on the CPU:
    the same signature and result as :func:`~latentfit.em.hmm.inference.chunked_viterbi.viterbi`."""
    ll = log_likelihoods
    return viterbi_cpu_blocks(
        lambda a, b: ll[a:b], ll.shape[0], startprob, transmat, lengths, **kwargs
    )
