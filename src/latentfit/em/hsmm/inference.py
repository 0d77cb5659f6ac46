"""Inference in explicit-duration hidden semi-Markov models: pure functions on tensors.

A segment of state k lasts d ∈ 1..D steps with probability p_k(d); the next segment's state is
drawn from the transition matrix, whose diagonal is zero (Yu 2010, "Hidden semi-Markov
models", Artificial Intelligence 174). The recursions run over the augmented state (k, e),
e the steps elapsed in the current segment, so that every step costs O(K·D) and a whole
sequence O(T·K·D) (Yu 2010's explicit-duration forward-backward, written over the elapsed
time): from (k, e) the segment goes on with probability S_k(e + 1) / S_k(e) or ends with the
hazard h_k(e) = p_k(d = e) / S_k(e), S_k(e) = P(d ≥ e) the survival function. A finished
segment of length d then carries p_k(d); a last segment cut by the end of the sequence after e
steps carries S_k(e) (right-censoring) — or, without censoring, the last segment must end
exactly at the last step.

Inputs: per-step emission log-likelihoods ``log_likelihoods`` (t, k) of ONE sequence,
``log_start`` (k,), ``log_trans`` (k, k) with a -inf diagonal, ``log_pmf`` (k, D) the duration
log-probabilities of d = 1..D. Everything runs in log space; only min(D, t) elapsed times can
occur in a sequence of t steps, so the (t, k, ·) messages have min(D, t) columns.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit import _compiled

__all__ = [
    "DurationTerms",
    "HSMMPosterior",
    "HSMMViterbi",
    "duration_terms",
    "hsmm_backward",
    "hsmm_forward",
    "hsmm_posterior",
    "hsmm_viterbi",
    "log_likelihood_sequences",
    "message_bytes",
    "posterior_sequences",
    "viterbi_sequences",
]

_NEG_INF = -math.inf
_BLOCK = 1 << 20  # elements per block of the (t, k, k) transition-count temporaries


class DurationTerms(NamedTuple):
    """The duration distribution as the elapsed-time recursions use it, (k, D) each."""

    log_pmf: torch.Tensor  # log p_k(d), d = 1..D
    log_survival: torch.Tensor  # log S_k(e) = log P(d ≥ e)
    log_hazard: torch.Tensor  # log h_k(e) = log p_k(e) − log S_k(e): the segment ends after e
    log_stay: torch.Tensor  # log S_k(e + 1) − log S_k(e): it goes on after e steps


class HSMMPosterior(NamedTuple):
    """The E-step of one sequence (Yu 2010: the smoothed probabilities and the
    expected counts of the EM re-estimation)."""

    log_likelihood: torch.Tensor  # ()
    posteriors: torch.Tensor  # (t, k) p(z_t = k | x)
    start_counts: torch.Tensor  # (k,) p(z_1 = k | x)
    transition_counts: torch.Tensor  # (k, k) expected segment-to-segment transitions
    duration_counts: torch.Tensor  # (k, D) expected number of segments of k lasting d steps


class HSMMViterbi(NamedTuple):
    """The most probable segmentation of one sequence and its log p(x, segmentation)."""

    log_prob: torch.Tensor  # ()
    path: torch.Tensor  # (t,) int64 state of every step
    segment_starts: torch.Tensor  # (n_segments,) int64 first step of every segment


def message_bytes(t: int, k: int, max_duration: int, itemsize: int) -> int:
    """Memory of the forward-backward of one sequence of ``t`` steps: the forward and backward
    messages (t, k, min(D, t)) and two temporaries of that size for the expected counts."""
    return 4 * t * k * min(max_duration, t) * itemsize


def _use_compiled(x: torch.Tensor, compiled: bool | None) -> bool:
    """The compiled CPU kernels (:mod:`~latentfit.em.hsmm.compiled`) for CPU tensors when numba
    is there, unless ``compiled`` says otherwise (False: the torch twin, on any device)."""
    if compiled is None:
        return x.device.type == "cpu" and _compiled.available()
    return bool(compiled) and x.device.type == "cpu"


def _np(x: torch.Tensor):
    return x.detach().contiguous().numpy()


def _where_finite(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, value, torch.full_like(value, _NEG_INF))


def duration_terms(log_pmf: torch.Tensor) -> DurationTerms:
    """Survival, hazard and continuation log-probabilities of the duration pmf (k, D)."""
    pmf = log_pmf.exp()
    # S(e) = Σ_{d ≥ e} p(d), summed from the tail so that small survivals keep their digits
    survival = pmf.flip(-1).cumsum(-1).flip(-1)  # (k, D)
    log_s = _where_finite(survival > 0, survival.clamp_min(torch.finfo(pmf.dtype).tiny).log())
    alive = survival > 0
    log_hazard = _where_finite(alive, log_pmf - torch.where(alive, log_s, 0.0))
    nxt = torch.cat([log_s[:, 1:], torch.full_like(log_s[:, :1], _NEG_INF)], 1)  # log S(e + 1)
    log_stay = _where_finite(alive & (nxt > _NEG_INF), nxt - torch.where(alive, log_s, 0.0))
    return DurationTerms(log_pmf, log_s, log_hazard, log_stay)


def hsmm_forward(log_likelihoods, log_start, log_trans, terms: DurationTerms, compiled=None):
    """Forward messages log α_t(k, e) = log p(x_1..t, state k entered e steps ago at t)
    (t, k, min(D, t)), and the log-probability log Σ_e α_t(k, e) h_k(e) that a segment of k
    ends at every step (t, k)."""
    t, k = log_likelihoods.shape
    dt = min(terms.log_pmf.shape[1], t)
    log_h, log_stay = terms.log_hazard[:, :dt], terms.log_stay[:, : dt - 1]
    alpha = torch.full(
        (t, k, dt), _NEG_INF, dtype=log_likelihoods.dtype, device=log_likelihoods.device
    )
    leave = torch.empty(t, k, dtype=alpha.dtype, device=alpha.device)
    if _use_compiled(log_likelihoods, compiled):
        from latentfit.em.hsmm.compiled import forward_kernel  # imports numba

        args = (log_likelihoods, log_start, log_trans, log_h, log_stay)
        forward_kernel(*(_np(a) for a in args), alpha.numpy(), leave.numpy())
        return alpha, leave
    alpha[0, :, 0] = log_start + log_likelihoods[0]
    for i in range(1, t):
        prev = alpha[i - 1]  # (k, dt)
        leave[i - 1] = torch.logsumexp(prev + log_h, 1)
        cur = alpha[i]
        cur[:, 0] = torch.logsumexp(leave[i - 1].unsqueeze(1) + log_trans, 0)  # enter j
        cur[:, 1:] = prev[:, :-1] + log_stay
        cur += log_likelihoods[i].unsqueeze(1)
    leave[t - 1] = torch.logsumexp(alpha[t - 1] + log_h, 1)
    return alpha, leave


def hsmm_backward(log_likelihoods, log_trans, terms: DurationTerms, censored: bool, compiled=None):
    """Backward messages log β_t(k, e) = log p(x_t+1..T | state k entered e steps ago at t)
    (t, k, min(D, t)), and log p(x_t+1..T | a segment ends at t in state k) (t − 1, k)."""
    t, k = log_likelihoods.shape
    dt = min(terms.log_pmf.shape[1], t)
    log_h, log_stay = terms.log_hazard[:, :dt], terms.log_stay[:, : dt - 1]
    beta = torch.empty(t, k, dt, dtype=log_likelihoods.dtype, device=log_likelihoods.device)
    jump = torch.empty(max(t - 1, 0), k, dtype=beta.dtype, device=beta.device)
    if _use_compiled(log_likelihoods, compiled):
        from latentfit.em.hsmm.compiled import backward_kernel  # imports numba

        args = (log_likelihoods, log_trans, log_h, log_stay)
        backward_kernel(*(_np(a) for a in args), bool(censored), beta.numpy(), jump.numpy())
        return beta, jump
    if censored:  # the last segment may go on after the end: nothing more is asked of it
        beta[t - 1] = 0.0
    else:  # it must end at the last step
        beta[t - 1] = log_h
    for i in range(t - 2, -1, -1):
        nxt = beta[i + 1]
        ll = log_likelihoods[i + 1]
        jump[i] = torch.logsumexp(log_trans + (ll + nxt[:, 0]).unsqueeze(0), 1)  # (k,)
        cur = beta[i]
        torch.add(log_h, jump[i].unsqueeze(1), out=cur)
        cur[:, :-1] = torch.logaddexp(cur[:, :-1], log_stay + ll.unsqueeze(1) + nxt[:, 1:])
    return beta, jump


def _log_likelihood(alpha_last, leave_last, censored: bool) -> torch.Tensor:
    if censored:
        return torch.logsumexp(alpha_last.reshape(-1), 0)
    return torch.logsumexp(leave_last, 0)


def hsmm_posterior(
    log_likelihoods, log_start, log_trans, terms: DurationTerms, censored: bool, compiled=None
) -> HSMMPosterior:
    """Forward-backward of one sequence with the expected counts of EM (Yu 2010):
    state posteriors, first-state probabilities, segment transitions, and
    segment durations. For a censored last segment seen for e steps, its full duration d ≥ e
    has posterior p(d) / S(e), so the duration counts are those of EM with censored data."""
    t, k = log_likelihoods.shape
    alpha, leave = hsmm_forward(log_likelihoods, log_start, log_trans, terms, compiled)
    log_l = _log_likelihood(alpha[t - 1], leave[t - 1], censored)
    dt = alpha.shape[2]
    big_d = terms.log_pmf.shape[1]
    dur = torch.zeros(k, big_d, dtype=alpha.dtype, device=alpha.device)
    trans = torch.zeros(k, k, dtype=alpha.dtype, device=alpha.device)
    if _use_compiled(log_likelihoods, compiled) and bool(torch.isfinite(log_l)):
        from latentfit.em.hsmm.compiled import posterior_kernel  # imports numba

        on = dict(dtype=alpha.dtype, device=alpha.device)  # the CPU: numba writes them
        posteriors = torch.zeros(t, k, **on)
        args = (log_likelihoods, log_trans, terms.log_hazard[:, :dt], terms.log_stay[:, : dt - 1])
        dur_dt = torch.zeros(k, dt, **on)
        posterior_kernel(
            *(_np(a) for a in args), bool(censored), alpha.numpy(), _np(leave), float(log_l),
            posteriors.numpy(), trans.numpy(), dur_dt.numpy(),
        )  # fmt: skip
        dur[:, :dt] += dur_dt
        if censored:
            dur += _censored_durations(alpha[t - 1] - log_l, terms, dt)
        posteriors = _rows_sum_to_one(posteriors)
        return HSMMPosterior(log_l, posteriors, posteriors[0].clone(), trans, dur)
    beta, jump = hsmm_backward(log_likelihoods, log_trans, terms, censored, compiled)
    posteriors = torch.logsumexp(alpha + beta, 2).sub_(log_l).exp_()  # (t, k)
    if t > 1:
        # segments that end at step i < t and are followed by another one
        ends = alpha[:-1] + terms.log_hazard[:, :dt] + jump.unsqueeze(2)  # (t − 1, k, dt)
        dur[:, :dt] += ends.sub_(log_l).exp_().sum(0)
        del ends
        enter = log_likelihoods[1:] + beta[1:, :, 0]  # (t − 1, k): entering j at i + 1
        rows = max(1, _BLOCK // (k * k))
        for a in range(0, t - 1, rows):
            b = min(a + rows, t - 1)
            x = leave[a:b].unsqueeze(2) + log_trans + enter[a:b].unsqueeze(1)  # (r, k, k)
            trans += x.sub_(log_l).exp_().sum(0)
    last = alpha[t - 1] - log_l  # (k, dt): log p(state k entered e steps ago at the end | x)
    if censored:
        dur += _censored_durations(last, terms, dt)
    else:
        dur[:, :dt] += (last + terms.log_hazard[:, :dt]).exp()
    posteriors = _rows_sum_to_one(posteriors)
    return HSMMPosterior(log_l, posteriors, posteriors[0].clone(), trans, dur)


def _rows_sum_to_one(posteriors: torch.Tensor) -> torch.Tensor:
    """The state posteriors (t, k), each row divided by its sum where that sum is off 1 by
    more than rounding. exp(log α + log β − log L) sums to 1 only while log L keeps the
    digits of the log-sum-exp: for a row at -9.2e18 under states a unit apart, two states'
    log-densities (-4.3e39) are equal to the last digit, log L = that value + log 2 rounds back
    to it, and both posteriors came out 1 (a row summing to 2); divided by the sum, 1/2 each,
    the best float64 can tell. Rows of ordinary data are left as computed."""
    total = posteriors.sum(1, keepdim=True)  # (t, 1)
    off = (total - 1).abs() > 1e-6
    if not bool(off.any()):
        return posteriors
    usable = off & torch.isfinite(total) & (total > 0)  # 0 or NaN: left for the caller's check
    return torch.where(usable, posteriors / total.where(usable, 1.0), posteriors)


def _censored_durations(last, terms: DurationTerms, dt: int) -> torch.Tensor:
    """Expected full durations (k, D) of a censored last segment: Σ_{e ≤ d} p(k, e | x)
    p(d) / S(e) for every d = 1..D, ``last`` (k, dt) the log-posterior of (state, elapsed)
    at the last step."""
    k, big_d = terms.log_pmf.shape
    w = _where_finite(last > _NEG_INF, last - terms.log_survival[:, :dt]).exp()
    cum = w.cumsum(1)
    if big_d > dt:
        cum = torch.cat([cum, cum[:, -1:].expand(k, big_d - dt)], 1)
    return cum * terms.log_pmf.exp()


def hsmm_log_likelihood(
    log_likelihoods, log_start, log_trans, terms, censored, compiled=None
) -> torch.Tensor:
    """log p(x) of one sequence by the forward recursion alone (compiled: one step of
    messages at a time)."""
    t = log_likelihoods.shape[0]
    if _use_compiled(log_likelihoods, compiled):
        from latentfit.em.hsmm.compiled import log_likelihood_kernel  # imports numba

        dt = min(terms.log_pmf.shape[1], t)
        args = (log_likelihoods, log_start, log_trans, terms.log_hazard[:, :dt])
        value = log_likelihood_kernel(
            *(_np(a) for a in args), _np(terms.log_stay[:, : dt - 1]), bool(censored), dt
        )
        return torch.tensor(value, dtype=log_likelihoods.dtype)
    alpha, leave = hsmm_forward(log_likelihoods, log_start, log_trans, terms, compiled)
    return _log_likelihood(alpha[t - 1], leave[t - 1], censored)


def hsmm_viterbi(
    log_likelihoods, log_start, log_trans, terms: DurationTerms, censored: bool, compiled=None
) -> HSMMViterbi:
    """The most probable segmentation (Yu 2010: Viterbi over segments) by max-product
    over the elapsed-time states; O(T·K·D) time, O(K·D + T·K) memory. A censored last
    segment seen for e steps scores S(e), as in the likelihood."""
    t, k = log_likelihoods.shape
    dt = min(terms.log_pmf.shape[1], t)
    log_h, log_stay = terms.log_hazard[:, :dt], terms.log_stay[:, : dt - 1]
    dev = log_likelihoods.device
    # entering state j at step i: the state and elapsed time of the segment before
    from_state = torch.zeros(t, k, dtype=torch.int64, device=dev)
    from_elapsed = torch.zeros(t, k, dtype=torch.int64, device=dev)
    if _use_compiled(log_likelihoods, compiled):
        from latentfit.em.hsmm.compiled import viterbi_kernel  # imports numba

        args = (log_likelihoods, log_start, log_trans, log_h, log_stay)
        best, state, elapsed = viterbi_kernel(
            *(_np(a) for a in args), bool(censored), from_state.numpy(), from_elapsed.numpy()
        )
        log_prob = torch.tensor(best, dtype=log_likelihoods.dtype)
        return _backtrack(log_prob, state, elapsed, from_state, from_elapsed, t)
    delta = torch.full((k, dt), _NEG_INF, dtype=log_likelihoods.dtype, device=dev)
    delta[:, 0] = log_start + log_likelihoods[0]
    for i in range(1, t):
        leave, arg_e = (delta + log_h).max(1)  # (k,)
        enter, arg_k = (leave.unsqueeze(1) + log_trans).max(0)  # (k,) over the state left
        from_state[i] = arg_k
        from_elapsed[i] = arg_e[arg_k]
        new = torch.empty_like(delta)
        new[:, 0] = enter
        new[:, 1:] = delta[:, :-1] + log_stay
        delta = new + log_likelihoods[i].unsqueeze(1)
    final = delta if censored else delta + log_h
    log_prob, flat = final.reshape(-1).max(0)
    state, elapsed = divmod(int(flat), dt)
    return _backtrack(log_prob, state, elapsed, from_state, from_elapsed, t)


def _backtrack(log_prob, state, elapsed, from_state, from_elapsed, t) -> HSMMViterbi:
    """The path from the last step's best (state, elapsed index) and the back-pointers."""
    dev = from_state.device
    path = torch.empty(t, dtype=torch.int64, device=dev)
    starts = []
    end = t  # the segment holding the step end − 1 began elapsed steps before it
    fs, fe = from_state.cpu(), from_elapsed.cpu()
    while end > 0:
        begin = end - 1 - elapsed
        path[begin:end] = state
        starts.append(begin)
        if begin > 0:
            state, elapsed = int(fs[begin, state]), int(fe[begin, state])
        end = begin
    return HSMMViterbi(log_prob, path, torch.tensor(starts[::-1], dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# several sequences laid end to end


def _spans(lengths: list[int]):
    start = 0
    for n in lengths:
        yield start, start + n
        start += n


def posterior_sequences(
    log_likelihoods, log_start, log_trans, terms: DurationTerms, lengths, censored: bool
) -> tuple[HSMMPosterior, torch.Tensor]:
    """:func:`hsmm_posterior` of every sequence (rows of ``log_likelihoods`` cut by
    ``lengths``): the total log-likelihood, the posteriors of all rows (t, k) and the counts
    summed over the sequences; and the log-likelihood of every sequence (n_sequences,)."""
    parts = [
        hsmm_posterior(log_likelihoods[a:b], log_start, log_trans, terms, censored)
        for a, b in _spans(lengths)
    ]
    per_seq = torch.stack([p.log_likelihood for p in parts])
    total = HSMMPosterior(
        per_seq.sum(),
        torch.cat([p.posteriors for p in parts]),
        sum(p.start_counts for p in parts),
        sum(p.transition_counts for p in parts),
        sum(p.duration_counts for p in parts),
    )
    return total, per_seq


def log_likelihood_sequences(
    log_likelihoods, log_start, log_trans, terms: DurationTerms, lengths, censored: bool
) -> torch.Tensor:
    """log p(x) of every sequence (n_sequences,) by the forward recursion."""
    return torch.stack(
        [
            hsmm_log_likelihood(log_likelihoods[a:b], log_start, log_trans, terms, censored)
            for a, b in _spans(lengths)
        ]
    )


def viterbi_sequences(
    log_likelihoods, log_start, log_trans, terms: DurationTerms, lengths, censored: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hsmm_viterbi` of every sequence: their log-probabilities (n_sequences,) and
    the paths of all rows (t,)."""
    parts = [
        hsmm_viterbi(log_likelihoods[a:b], log_start, log_trans, terms, censored)
        for a, b in _spans(lengths)
    ]
    return torch.stack([p.log_prob for p in parts]), torch.cat([p.path for p in parts])
