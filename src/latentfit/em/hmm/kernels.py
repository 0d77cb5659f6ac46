"""Inference kernels for hidden Markov models: pure functions on tensors.

Every kernel takes the per-step emission log-likelihoods ``log_likelihoods`` (t, k), the start
probabilities ``startprob`` (k,), the transition matrix ``transmat`` (k, k) and the sequence
lengths, so every emission model shares them. Several sequences are laid end to end in one
stream: at the first step of a sequence the transition matrix is replaced by the "restart"
matrix ``1 πᵀ`` (every row the start distribution). The stream is then one chain with
time-varying transitions whose likelihood is the product of the sequences' likelihoods, so a
batch of sequences of any lengths runs through the same code as one long sequence.

Two versions of each recursion live side by side with the same signature:

* ``forward_filter`` / ``backward_pass`` / ``viterbi``: the textbook sequential recursions
  (Rabiner 1989, eqs. 19-25 and 30-35) with per-step scaling, one Python step per time step:
  the reference implementation.
* ``parallel_forward_filter`` / ``parallel_backward_pass`` / ``parallel_viterbi``: the stream
  is cut into ``b`` chunks of ``l`` steps that are processed as a batch, so each of the ``l``
  Python steps is one ``(b, k) @ (k, k)`` product. The chunks are tied together exactly by a
  two-level scan (Särkkä & García-Fernández 2021, "Temporal parallelization of Bayesian
  smoothers", in its blocked form): first the (scaled) transfer matrix of every chunk
  ``M_b = Π_t A_t diag(e_t)`` is accumulated for all chunks at once (``k³`` per step only
  until the chain forgets its start, then ``k²``), then a short scan over the ``b`` chunk
  matrices gives the exact message entering each chunk, then each chunk is filtered from its
  exact entering message. The Viterbi pair lives in :mod:`latentfit.em.hmm.viterbi` (re-exported
  here); :func:`parallel_viterbi` explains how its chunk boundaries are made exact.

Scaling: emissions enter as ``e_t = exp(ℓ_t − max_k ℓ_t)`` and every message is normalised at
every step, keeping the log normalisers, so nothing underflows on sequences of any length.

The smoothed marginals and the summed two-slice statistics are elementwise / matrix-product
functions of the forward and backward messages (:func:`smoothed_marginals`,
:func:`two_slice_counts`); :func:`posterior` chains the whole E-step, by default with the
fused, in-place chunked version of :mod:`latentfit.em.hmm.fused` (chunk boundaries from
checked windows, this module's whole-chunk scan as the exact fallback).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit import _compiled
from latentfit.em.hmm.threads import compiled_workers, step_loop_threads

__all__ = [
    "HMMBackward",
    "HMMFiltered",
    "HMMPosterior",
    "HMMViterbi",
    "backward_pass",
    "chunk_length",
    "compiled_workers",
    "forward_filter",
    "parallel_backward_pass",
    "parallel_forward_filter",
    "parallel_viterbi",
    "posterior",
    "sequence_starts",
    "smoothed_marginals",
    "two_slice_counts",
    "viterbi",
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


# ---------------------------------------------------------------------------------------------
# helpers


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


def _prepare(log_likelihoods, lengths, chunk) -> _Chunks:
    """Scaled emissions written straight into the step-major chunk layout (one pass)."""
    t, k = log_likelihoods.shape
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    length = chunk or chunk_length(t, k)
    b = -(-t // length)
    pad = b * length - t
    ll, st = log_likelihoods, starts
    if pad:  # padding steps restart with a flat emission
        ll = torch.cat([ll, ll.new_zeros(pad, k)])
        st = torch.cat([st, st.new_ones(pad)])
    ll_lb = ll.view(b, length, k).transpose(0, 1)  # (l, b, k) view
    shift = ll_lb.amax(2, keepdim=True)  # (l, b, 1)
    finite = torch.isfinite(shift)
    e = torch.empty(length, b, k, dtype=ll.dtype, device=ll.device)
    torch.sub(ll_lb, torch.where(finite, shift, 0.0), out=e).exp_()
    shift = shift.masked_fill_(~finite, -math.inf).squeeze(2)
    starts_lb = st.view(b, length).T.contiguous()
    return _Chunks(e, shift, starts, starts_lb, _restart_steps(starts_lb), b, length)


# ---------------------------------------------------------------------------------------------
# forward filter


def forward_filter(log_likelihoods, startprob, transmat, lengths=None) -> HMMFiltered:
    """Scaled forward recursion (Rabiner 1989, eqs. 19-21 with the scaling of §V.A).

    ``α_t ∝ (α_{t-1} A) ⊙ p(x_t | z_t)``, normalised at every step; the log normalisers add up
    to log p(x). Sequential reference implementation: one step at a time.
    """
    t, _k = log_likelihoods.shape
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    e, shift = _scaled_emissions(log_likelihoods)
    filtered = torch.empty_like(e)  # (t, k)
    log_c = torch.empty(t, dtype=e.dtype, device=e.device)
    starts_cpu = starts.cpu().tolist()
    alpha = startprob
    for i in range(t):
        pred = startprob if starts_cpu[i] else alpha @ transmat  # (k,)
        alpha, log_c[i] = _safe_log_normalize(pred * e[i])
        filtered[i] = alpha
    log_norm = log_c + shift
    seq = _segment_sum(log_norm, starts)
    return HMMFiltered(seq.sum(), seq, filtered, log_norm)


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
    """The forward filter of :func:`forward_filter`, computed over chunks in parallel.

    Same result (to rounding) in ``O(l + b)`` Python steps instead of ``O(t)``.
    """
    t, k = log_likelihoods.shape
    ch = _prepare(log_likelihoods, lengths, chunk)
    with step_loop_threads(ch.e.device):
        alpha0, _ = _boundary_messages(ch, startprob, transmat, k, backward=False)
        filtered, log_c = _filter_from(ch.e, startprob, transmat, ch.restarts, alpha0)
    log_norm = _unchunk(log_c + ch.shift, t)
    seq = _segment_sum(log_norm, ch.starts)
    return HMMFiltered(seq.sum(), seq, _unchunk(filtered, t), log_norm)


# ---------------------------------------------------------------------------------------------
# backward pass


def backward_pass(
    log_likelihoods, startprob, transmat, lengths=None, *, filtered=None
) -> HMMBackward:
    """Scaled backward recursion (Rabiner 1989, eqs. 23-25): ``β_{t-1} ∝ A (e_t ⊙ β_t)``,
    ``β_T = 1``; rows normalised to sum 1. Sequential reference implementation.

    Given the forward filter's messages ``filtered`` (t, k), each row is divided by
    ``α̂_{t-1} · A (e_t ⊙ β_t)`` instead: rows summing to 1 let the components that matter
    (where α̂ has mass) underflow beside a state the forward filter rules out whose emissions
    fit much better, while this scale keeps them at ``γ / α̂`` (at most 1/α̂); a ruled-out
    state's component may then grow, and is capped at the largest float over 2k (it never
    reaches an allowed state). :func:`posterior` uses this form."""
    t, k = log_likelihoods.shape
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    e, _ = _scaled_emissions(log_likelihoods)
    out = torch.empty_like(e)
    starts_cpu = starts.cpu().tolist()
    last = torch.full((k,), 1.0 / k if filtered is None else 1.0, dtype=e.dtype, device=e.device)
    cap = torch.finfo(e.dtype).max / (2 * k)
    beta = last
    for i in range(t - 1, -1, -1):
        out[i] = beta
        if starts_cpu[i]:  # the previous step ends another sequence
            beta = last
            continue
        nxt = transmat @ (e[i] * beta)
        d = float(filtered[i - 1] @ nxt) if filtered is not None else 0.0
        if d > 0:
            beta = (nxt / d).clamp_max(cap)
        else:  # no filter given, or an impossible sequence
            beta, _ = _safe_log_normalize(nxt)
    return HMMBackward(out)


def parallel_backward_pass(
    log_likelihoods, startprob, transmat, lengths=None, *, chunk: int | None = None
) -> HMMBackward:
    """The backward pass of :func:`backward_pass`, computed over chunks in parallel."""
    t, k = log_likelihoods.shape
    ch = _prepare(log_likelihoods, lengths, chunk)
    out = torch.empty_like(ch.e)  # (l, b, k)
    flat = torch.full((k,), 1.0 / k, dtype=ch.e.dtype, device=ch.e.device)
    with step_loop_threads(ch.e.device):
        _, beta = _boundary_messages(ch, startprob, transmat, k)
        for i in range(ch.length - 1, -1, -1):
            out[i] = beta
            nxt = (ch.e[i] * beta) @ transmat.T  # (b, k)
            if i in ch.restarts:
                nxt[ch.restarts[i]] = flat
            beta, _ = _safe_log_normalize(nxt)
    return HMMBackward(_unchunk(out, t))


# ---------------------------------------------------------------------------------------------
# smoothing and two-slice statistics


def smoothed_marginals(filtered: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """``γ_t = p(z_t | x) ∝ α_t ⊙ β_t`` (Rabiner 1989, eq. 27): (t, k)."""
    gamma, _ = _safe_log_normalize(filtered * backward)
    return gamma


def two_slice_counts(log_likelihoods, transmat, filtered, backward, lengths=None) -> torch.Tensor:
    """``Σ_t ξ_t`` with ``ξ_t(i, j) = p(z_{t-1}=i, z_t=j | x)`` (Rabiner 1989, eq. 37), summed
    over the steps inside every sequence: (k, k). One matrix product over all steps."""
    t, k = log_likelihoods.shape
    if t < 2:
        return torch.zeros(k, k, dtype=filtered.dtype, device=filtered.device)
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    e, _ = _scaled_emissions(log_likelihoods)
    prev = filtered[:-1]  # (t-1, k)
    # a state the filter rules out at t has ξ_{t-1}(·, j) = 0 exactly; masking it keeps its
    # (possibly huge, see backward_pass) backward component out of the product
    right = torch.where(filtered[1:] > 0, e[1:] * backward[1:], 0.0)  # (t-1, k)
    z = ((prev @ transmat) * right).sum(1)  # (t-1,) per-step normaliser
    keep = ~starts[1:] & (z > 0)
    scale = torch.where(keep, 1.0 / torch.where(keep, z, torch.ones_like(z)), torch.zeros_like(z))
    return transmat * (prev.T @ (right * scale.unsqueeze(1)))


def posterior(
    log_likelihoods,
    startprob,
    transmat,
    lengths=None,
    *,
    parallel: bool = True,
    chunk: int | None = None,
    overwrite: bool = False,
    compiled: bool | None = None,
) -> HMMPosterior:
    """The Baum-Welch E-step: log-likelihood, smoothed marginals and the expected start and
    transition counts (Rabiner 1989, §III.C). By default, on CPU tensors the compiled E-step
    (:func:`latentfit.em.hmm.posterior_cpu.posterior_cpu`), elsewhere the parallel kernels
    (fused and in place, :func:`latentfit.em.hmm.fused.fused_posterior`; ``compiled=False``
    asks for them on the CPU too); ``parallel=False``: the sequential torch recursions.
    ``overwrite=True`` lets the E-step reuse the ``log_likelihoods`` buffer (its contents are
    then lost)."""
    t, k = log_likelihoods.shape
    if compiled is None:
        compiled = parallel and log_likelihoods.device.type == "cpu" and _compiled.available()
    if compiled:
        from latentfit.em.hmm.posterior_cpu import posterior_cpu  # imports numba

        return posterior_cpu(
            log_likelihoods, startprob, transmat, lengths, overwrite=overwrite,
            workers=compiled_workers(),
        )  # fmt: skip
    if not parallel:
        fwd = forward_filter(log_likelihoods, startprob, transmat, lengths)
        bwd = backward_pass(
            log_likelihoods, startprob, transmat, lengths, filtered=fwd.filtered
        ).backward
        starts = sequence_starts(lengths, t, log_likelihoods.device)
        gamma = smoothed_marginals(fwd.filtered, bwd)
        xi = two_slice_counts(log_likelihoods, transmat, fwd.filtered, bwd, lengths)
        return HMMPosterior(
            fwd.log_likelihood, fwd.sequence_log_likelihoods, gamma, xi, gamma[starts].sum(0)
        )
    from latentfit.em.hmm.fused import fused_posterior

    starts = sequence_starts(lengths, t, log_likelihoods.device)
    length = chunk or chunk_length(t, k)
    b = -(-t // length)
    padded = torch.cat([starts, starts.new_ones(b * length - t)])  # padding steps restart
    starts_bl = padded.view(b, length)
    restarts = _restart_steps(starts_bl.T)
    with step_loop_threads(log_likelihoods.device):
        gamma, xi, log_norm = fused_posterior(
            log_likelihoods, startprob, transmat, starts_bl, restarts, overwrite=overwrite
        )
        # per-sequence sums from the lengths themselves (no search of the (t,) start mask)
        lens = torch.as_tensor([t] if lengths is None else lengths, dtype=torch.int64)
        first = (torch.cumsum(lens, 0) - lens).to(log_norm.device)  # (n_sequences,)
        seq = torch.segment_reduce(log_norm, "sum", lengths=lens.to(log_norm.device))
        return HMMPosterior(seq.sum(), seq, gamma, xi, gamma.index_select(0, first).sum(0))


# Viterbi lives in its own module; re-exported here so that every kernel is in one namespace.
from latentfit.em.hmm.viterbi import HMMViterbi, parallel_viterbi, viterbi  # noqa: E402
