"""The forward-backward recursions in log space, for the sequences the scaled kernels lose.

Every fast kernel (sequential.py, chunked.py, compiled.py) scales a step's emission
likelihoods by their largest, ``e_t = exp(log p(x_t | z) − max_z log p(x_t | z))``. A state
whose emission is further below the best than the dtype's smallest normal number then reads
0. That is harmless while the best state is one the chain can be in; when it is not (a start
or transition probability of 0 to it) and every state it can be in reads 0, the kernel's
step sums to 0 and the sequence's log-likelihood is −inf, its posteriors 0, where the exact
answer is finite (a point ~12,000 nats from every state of a fitted GaussianHMM).

:func:`posterior` and :func:`log_likelihood` (posterior.py) redo the sequences whose
log-likelihood came out non-finite, with ``logsumexp`` at every step (Rabiner 1989, eqs.
19-25, in logarithms): exact at any spread, one step at a time. Where the kernel may reuse the
emissions' buffer (the E-step of a fit, the compiled filter), they are copied first, but only
when :func:`underflow_possible` (one pass over them) says the spread allows a loss.
"""

from __future__ import annotations

import math

import torch

from latentfit.em.hmm.inference.messages import HMMFiltered, HMMPosterior

__all__ = ["redo_filter", "redo_posterior", "underflow_possible"]


def underflow_possible(log_likelihoods: torch.Tensor) -> bool:
    """Whether the emission log-likelihoods (t, k) spread further than the scaled kernels
    resolve (exp of the spread below the dtype's smallest normal number), over the whole array:
    one pass, a bound on every step's own spread (a −inf entry, a state ruled out by a known
    state, counts as a spread too)."""
    if log_likelihoods.numel() == 0:
        return False
    lo, hi = torch.aminmax(log_likelihoods)
    limit = -math.log(torch.finfo(log_likelihoods.dtype).tiny) - 2 * math.log(
        max(2, log_likelihoods.shape[1])
    )
    return not bool(hi - lo <= limit)  # NaN (inf - inf) counts as possible


def _bounds(lengths, t: int) -> list[tuple[int, int]]:
    lens = [t] if lengths is None else [int(n) for n in lengths]
    out, a = [], 0
    for n in lens:
        out.append((a, a + n))
        a += n
    return out


def _forward(ll, log_pi, log_a):
    """log α (T, k): log p(x_1..x_t, z_t)."""
    la = torch.empty_like(ll)
    la[0] = log_pi + ll[0]
    for i in range(1, ll.shape[0]):
        la[i] = torch.logsumexp(la[i - 1].unsqueeze(1) + log_a, 0) + ll[i]
    return la


def _sequence_posterior(ll, startprob, transmat):
    """log p(x), posteriors (T, k), transition counts (k, k) of one sequence, in log space."""
    log_pi, log_a = startprob.log(), transmat.log()
    la = _forward(ll, log_pi, log_a)
    total = torch.logsumexp(la[-1], 0)
    lb = torch.zeros_like(ll)
    xi = torch.zeros_like(transmat)
    for i in range(ll.shape[0] - 2, -1, -1):
        ahead = (ll[i + 1] + lb[i + 1]).unsqueeze(0)  # (1, k)
        lb[i] = torch.logsumexp(log_a + ahead, 1)
        pair = la[i].unsqueeze(1) + log_a + ahead  # (k, k)
        # every step normalised by itself, as hmmlearn does: at log-likelihoods of ~1e18
        # nats, subtracting the total would leave errors of ~100 nats in the exponent
        xi += (pair - torch.logsumexp(pair.flatten(), 0)).exp()
    return total, torch.softmax(la + lb, 1), xi


def redo_posterior(post: HMMPosterior, ll, startprob, transmat, lengths, fast) -> HMMPosterior:
    """``post`` with every sequence the kernel lost redone in log space: its log-likelihood
    is not finite, or a step's posteriors do not sum to 1 (within the square root of the
    dtype's epsilon: the backward pass underflowed there). ``fast(ll, lengths)`` reruns the
    kernel on the other sequences for their transition and start counts (the kernel's sums
    hold the lost sequences' errors)."""
    seq = post.sequence_log_likelihoods
    bounds = _bounds(lengths, ll.shape[0])
    tol = torch.finfo(post.posteriors.dtype).eps ** 0.5
    off = ~((post.posteriors.sum(1) - 1).abs() <= tol)  # (t,), NaN rows included
    lens = torch.as_tensor([b - a for a, b in bounds], device=off.device)
    off_seq = torch.segment_reduce(off.to(post.posteriors.dtype), "max", lengths=lens) > 0
    bad = ((~torch.isfinite(seq)) | off_seq.to(seq.device)).nonzero().flatten().tolist()
    if not bad:
        return post
    redone = {s: _sequence_posterior(ll[slice(*bounds[s])], startprob, transmat) for s in bad}
    redone = {s: r for s, r in redone.items() if bool(torch.isfinite(r[0]))}
    if not redone:  # impossible in exact arithmetic too (a known state ruled out): as it was
        return post
    seq, gamma = seq.clone(), post.posteriors
    xi = torch.zeros_like(post.transition_counts)
    start = torch.zeros_like(post.start_counts)
    good = [s for s in range(len(bounds)) if s not in set(bad)]
    if good:
        rows = torch.cat([torch.arange(*bounds[s], device=ll.device) for s in good])
        again = fast(ll.index_select(0, rows), [bounds[s][1] - bounds[s][0] for s in good])
        xi, start = again.transition_counts.clone(), again.start_counts.clone()
    for s, (total, g, x) in redone.items():
        a, b = bounds[s]
        seq[s], gamma[a:b] = total, g
        xi, start = xi + x, start + g[0]
    return HMMPosterior(seq.sum(), seq, gamma, xi, start)


def redo_filter(filt: HMMFiltered, ll, startprob, transmat, lengths) -> HMMFiltered:
    """``filt`` with every sequence whose log-likelihood is not finite redone in log space."""
    seq = filt.sequence_log_likelihoods
    bad = (~torch.isfinite(seq)).nonzero().flatten().tolist()
    if not bad:
        return filt
    seq, filtered, log_norm = seq.clone(), filt.filtered, filt.log_normalizers
    bounds = _bounds(lengths, ll.shape[0])
    for s in bad:
        a, b = bounds[s]
        la = _forward(ll[a:b], startprob.log(), transmat.log())
        running = torch.logsumexp(la, 1)  # (T,): log p(x_1..x_t)
        if not bool(torch.isfinite(running[-1])):
            continue
        seq[s] = running[-1]
        filtered[a:b] = (la - running.unsqueeze(1)).exp()
        log_norm[a:b] = torch.diff(running, prepend=running.new_zeros(1))
    return HMMFiltered(seq.sum(), seq, filtered, log_norm)
