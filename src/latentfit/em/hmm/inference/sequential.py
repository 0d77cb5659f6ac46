"""The textbook HMM recursions, one Python step per time step (Rabiner 1989, eqs. 19-25,
27, 30-35 and 37, with the per-step scaling of §V.A): the reference every other kernel is
tested against, and the E-step of ``posterior(..., parallel=False)``."""

from __future__ import annotations

import torch

from latentfit.em.hmm.inference.messages import (
    HMMBackward,
    HMMFiltered,
    HMMViterbi,
    _log,
    _path_log_prob,
    _safe_log_normalize,
    _scaled_emissions,
    _segment_sum,
    sequence_starts,
)

__all__ = ["backward_pass", "forward_filter", "smoothed_marginals", "two_slice_counts", "viterbi"]


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
