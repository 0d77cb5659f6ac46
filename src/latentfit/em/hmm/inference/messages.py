"""What every HMM kernel shares: the named tuples they return and the layout of a stream of
sequences.

Several sequences are laid end to end in one stream: at the first step of a sequence the
transition matrix is replaced by the "restart" matrix ``1 πᵀ`` (every row the start
distribution). The stream is then one chain with time-varying transitions whose likelihood is
the product of the sequences' likelihoods, so a batch of sequences of any lengths runs
through the same code as one long sequence.

Scaling: emissions enter as ``e_t = exp(ℓ_t − max_k ℓ_t)`` and every message is normalised at
every step, keeping the log normalisers, so nothing underflows on sequences of any length.

The chunked kernels cut the stream into ``b`` chunks of ``l`` steps and tie them together
exactly by a two-level scan (Särkkä & García-Fernández 2021, "Temporal parallelization of
Bayesian smoothers", in its blocked form): the (scaled) transfer matrix of every chunk
``M_b = Π_t A_t diag(e_t)`` is accumulated for all chunks at once (``k³`` per step only until
the chain forgets its start, then ``k²``), then a short scan over the ``b`` chunk matrices
gives the exact message entering each chunk (:func:`_boundary_messages`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "HMMBackward",
    "HMMFiltered",
    "HMMPosterior",
    "HMMViterbi",
    "chunk_length",
    "sequence_starts",
]


class HMMFiltered(NamedTuple):
    """Output of the forward filter."""

    log_likelihood: torch.Tensor  # () total log p(x) over all sequences
    sequence_log_likelihoods: torch.Tensor  # (n_sequences,)
    filtered: torch.Tensor  # (t, k) p(z_t | x_1..x_t) within each sequence
    log_normalizers: torch.Tensor  # (t,) log p(x_t | x_1..x_{t-1})


class HMMBackward(NamedTuple):
    """Output of the backward pass: β_t ∝ p(x_{t+1}..x_T | z_t), each row scaled to sum 1."""

    backward: torch.Tensor  # (t, k)


class HMMPosterior(NamedTuple):
    """The E-step of Baum-Welch."""

    log_likelihood: torch.Tensor  # ()
    sequence_log_likelihoods: torch.Tensor  # (n_sequences,)
    posteriors: torch.Tensor  # (t, k) p(z_t | x) (smoothed marginals)
    transition_counts: torch.Tensor  # (k, k) Σ_t p(z_{t-1}=i, z_t=j | x), within sequences
    start_counts: torch.Tensor  # (k,) Σ_sequences p(z_first = i | x)


def sequence_starts(lengths, n_steps: int, device=None) -> torch.Tensor:
    """Boolean (t,) marking the first step of every sequence (``lengths`` sum to ``n_steps``)."""
    starts = torch.zeros(n_steps, dtype=torch.bool, device=device)
    if lengths is None:
        starts[0] = True
        return starts
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    offsets = torch.cumsum(lengths, 0) - lengths
    starts[offsets.to(device)] = True
    return starts


def _segment_sum(values: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` (t,) over every sequence: (n_sequences,)."""
    first = starts.nonzero().squeeze(1)  # (n_sequences,)
    lengths = torch.diff(first, append=first.new_tensor([values.shape[0]]))
    return torch.segment_reduce(values, "sum", lengths=lengths)


def _scaled_emissions(log_likelihoods: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``e_t = exp(ℓ_t − m_t)`` (t, k) in (0, 1] and the shifts ``m_t = max_k ℓ_t`` (t,)."""
    shift = log_likelihoods.amax(1)  # (t,)
    finite = torch.isfinite(shift)
    shift = torch.where(finite, shift, torch.zeros_like(shift))
    e = (log_likelihoods - shift.unsqueeze(1)).exp()  # (t, k)
    return e, torch.where(finite, shift, torch.full_like(shift, -math.inf))


def _safe_log_normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` divided by their sums; a zero row stays zero (its log-sum is -inf)."""
    s = x.sum(-1, keepdim=True)
    out = x / torch.where(s > 0, s, torch.ones_like(s))
    return out, s.squeeze(-1).log()


def chunk_length(n_steps: int, n_states: int) -> int:
    """Steps per chunk for the parallel kernels: about √t, so that the ``l`` batched steps
    and the ``b`` chunk-boundary steps cost about the same; one chunk for very short streams."""
    if n_steps <= 64:
        return max(1, n_steps)
    return math.ceil(math.sqrt(n_steps))


def _chunked(x: torch.Tensor, starts: torch.Tensor, length: int, fill: float):
    """Pad the stream to ``b · l`` steps (padding steps are restarts with a flat emission) and
    lay it out step-major, (l, b, ...), so that step i of every chunk is one contiguous block."""
    t = x.shape[0]
    b = -(-t // length)
    pad = b * length - t
    if pad:
        x = torch.cat([x, x.new_full((pad, *x.shape[1:]), fill)])
        starts = torch.cat([starts, starts.new_ones(pad)])
    x_lb = x.view(b, length, *x.shape[1:]).transpose(0, 1).contiguous()
    return x_lb, starts.view(b, length).T.contiguous(), b


def _unchunk(x_lb: torch.Tensor, t: int) -> torch.Tensor:
    """Inverse of :func:`_chunked`: (l, b, ...) back to the stream (t, ...)."""
    return x_lb.transpose(0, 1).reshape(-1, *x_lb.shape[2:])[:t]


def _restart_steps(starts_lb: torch.Tensor) -> dict[int, torch.Tensor]:
    """For every step index i within a chunk, the chunks (b,) whose step i starts a sequence."""
    idx = starts_lb.nonzero().cpu()  # (m, 2), sorted by step
    if len(idx) == 0:
        return {}
    steps, counts = torch.unique_consecutive(idx[:, 0], return_counts=True)
    device = starts_lb.device
    groups = torch.split(idx[:, 1], counts.tolist())
    return {i: g.to(device) for i, g in zip(steps.tolist(), groups, strict=True)}


class _Chunks(NamedTuple):
    e: torch.Tensor  # (l, b, k) scaled emissions exp(ℓ − m)
    shift: torch.Tensor  # (l, b) per-step log shifts m (-inf where no state can emit)
    starts: torch.Tensor  # (t,)
    starts_lb: torch.Tensor  # (l, b)
    restarts: dict
    b: int
    length: int


def padded_chunks(log_likelihoods, starts, length: int):
    """The stream (t, k) and its start mask (t,) cut into ``b = ⌈t / l⌉`` chunks of ``l``
    steps, (b, l, k) and (b, l), the last one padded with restarting flat-emission steps."""
    t, k = log_likelihoods.shape
    b = -(-t // length)
    pad = b * length - t
    ll, st = log_likelihoods, starts
    if pad:  # padding steps restart with a flat emission
        ll = torch.cat([ll, ll.new_zeros(pad, k)])
        st = torch.cat([st, st.new_ones(pad)])
    return ll.view(b, length, k), st.view(b, length)


def _prepare(log_likelihoods, lengths, chunk) -> _Chunks:
    """Scaled emissions written straight into the step-major chunk layout (one pass)."""
    t, k = log_likelihoods.shape
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    length = chunk or chunk_length(t, k)
    ll_bl, st_bl = padded_chunks(log_likelihoods, starts, length)
    b = ll_bl.shape[0]
    ll_lb = ll_bl.transpose(0, 1)  # (l, b, k) view
    shift = ll_lb.amax(2, keepdim=True)  # (l, b, 1)
    finite = torch.isfinite(shift)
    e = torch.empty(length, b, k, dtype=ll_bl.dtype, device=ll_bl.device)
    torch.sub(ll_lb, torch.where(finite, shift, 0.0), out=e).exp_()
    shift = shift.masked_fill_(~finite, -math.inf).squeeze(2)
    starts_lb = st_bl.T.contiguous()
    return _Chunks(e, shift, starts, starts_lb, _restart_steps(starts_lb), b, length)


def _hilbert_coalesced(P: torch.Tensor) -> bool:
    """Have the rows of every chunk's P (b, k, k) become equal up to a common factor, to
    1e-13 in every entry (Hilbert's projective metric, Birkhoff 1957)? Then the chunk forgets
    where it started and the rest of it can be run on one vector."""
    ref = P[:, :1, :]  # (b, 1, k)
    zero, ref_zero = P == 0, ref == 0
    if bool((zero ^ ref_zero).any()):
        return False
    both = zero & ref_zero
    ratio = torch.where(both, 1.0, P / torch.where(both, 1.0, ref)).log()
    return bool(((ratio.amax(-1) - ratio.amin(-1)) <= 1e-13).all())


def _chunk_transfer(e_lb, transmat, startprob, restarts, check_every: int = 8):
    """Scaled transfer matrices of every chunk: ``M_b = diag(exp(r_b)) P_b`` where row i of
    ``P_b`` (b, k, k) is the normalised forward message after the chunk started in state i.

    Costs ``k³`` per step only until the rows coalesce (the chain forgets its start, checked
    in Hilbert's metric); from then on one message per chunk is carried (``k²``)."""
    length, b, k = e_lb.shape
    tiny = torch.finfo(e_lb.dtype).tiny
    P = torch.eye(k, dtype=e_lb.dtype, device=e_lb.device).repeat(b, 1, 1)  # (b, k, k)
    log_r = torch.zeros(b, k, dtype=e_lb.dtype, device=e_lb.device)  # (b, k)
    i = 0
    while i < length:
        rows = P.sum(-1, keepdim=True) if i in restarts else None
        P = (P.view(b * k, k) @ transmat).view(b, k, k)
        if rows is not None:
            idx = restarts[i]
            P[idx] = rows[idx] * startprob
        P.mul_(e_lb[i].unsqueeze(1))
        s = P.sum(-1)  # (b, k)
        log_r += s.log()
        P.div_(s.clamp_min_(tiny).unsqueeze(-1))
        i += 1
        if i % check_every == 0 and i < length and _hilbert_coalesced(P):
            break
    if i < length:  # every row is the same message: carry one vector per chunk
        v = P[:, 0, :].contiguous()  # (b, k)
        for j in range(i, length):
            v = v @ transmat
            if j in restarts:
                v[restarts[j]] = startprob
            v.mul_(e_lb[j])
            s = v.sum(-1, keepdim=True)  # (b, 1)
            log_r += s.log()
            v.div_(s.clamp_min_(tiny))
        P = v.unsqueeze(1).expand(b, k, k)
    return P, log_r


def _entering_forward(P, log_r, k):
    """Forward message entering every chunk, by a scan over the chunk transfer matrices."""
    b = P.shape[0]
    v = torch.full((k,), 1.0 / k, dtype=P.dtype, device=P.device)
    out = torch.empty(b, k, dtype=P.dtype, device=P.device)
    for j in range(b):
        out[j] = v
        u = v.log() + log_r[j]
        v, _ = _safe_log_normalize((u - u.max()).exp() @ P[j])
    return out


def _entering_backward(P, log_r, k):
    """Backward message leaving every chunk (β at its last step), scanning from the end."""
    b = P.shape[0]
    v = torch.full((k,), 1.0 / k, dtype=P.dtype, device=P.device)
    out = torch.empty(b, k, dtype=P.dtype, device=P.device)
    for j in range(b - 1, -1, -1):
        out[j] = v
        u = (P[j] @ v).log() + log_r[j]
        v, _ = _safe_log_normalize((u - u.max()).exp())
    return out


def _boundary_messages(ch: _Chunks, startprob, transmat, k, backward: bool = True):
    """Exact forward (and backward) messages at every chunk boundary (the two-level scan)."""
    if ch.b == 1:
        alpha0 = startprob.unsqueeze(0).clone()
        beta0 = torch.full((1, k), 1.0 / k, dtype=ch.e.dtype, device=ch.e.device)
        return alpha0, beta0
    P, log_r = _chunk_transfer(ch.e, transmat, startprob, ch.restarts)
    alpha0 = _entering_forward(P, log_r, k)
    return alpha0, (_entering_backward(P, log_r, k) if backward else None)


class HMMViterbi(NamedTuple):
    """Most probable state path and its joint log-probability log p(x, z*)."""

    log_prob: torch.Tensor  # ()
    sequence_log_probs: torch.Tensor  # (n_sequences,)
    path: torch.Tensor  # (t,) int64


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.zeros_like(x)).log().masked_fill(x <= 0, -math.inf)


def _path_log_prob(log_likelihoods, log_start, log_trans, path, starts) -> torch.Tensor:
    """log p(x, z) of the given path, per step (t,)."""
    k = log_trans.shape[0]
    per_step = log_likelihoods.gather(1, path.unsqueeze(1)).squeeze(1)  # (t,) emissions
    if path.shape[0] > 1:  # transitions, by flat index i·k + j
        per_step[1:] += log_trans.reshape(-1).take(path[:-1] * k + path[1:])
    first = starts.nonzero().squeeze(1)  # first steps: the start probability instead
    per_step[first] = log_likelihoods[first, path[first]] + log_start[path[first]]
    return per_step
