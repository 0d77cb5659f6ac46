"""HMM inference by device and size: the one place that chooses a kernel.

Every kernel takes the per-step emission log-likelihoods ``log_likelihoods`` (t, k), the start
probabilities ``startprob`` (k,), the transition matrix ``transmat`` (k, k) and the sequence
lengths, so every emission model shares them (the stream layout is described in
:mod:`~latentfit.em.hmm.inference.messages`). Three questions are asked of a model, and each
is answered here:

Compiled kernels serve CPU tensors: float64 ones of at least :data:`COMPILE_MIN_STEPS` steps
(below it the torch kernels, so that a short sequence never waits for the compiler) and every
float32 one.

* :func:`posterior`, the Baum-Welch E-step: on a CPU with numba the compiled kernel
  (:mod:`~latentfit.em.hmm.inference.compiled`), elsewhere the fused chunked torch kernel
  (:mod:`~latentfit.em.hmm.inference.chunked`); ``parallel=False`` runs the sequential
  recursions of :mod:`~latentfit.em.hmm.inference.sequential`.
* :func:`log_likelihood`, the forward filter alone (``score``): compiled on a CPU, chunked
  elsewhere.
* :func:`diag_gaussian_densities`, the diagonal-Gaussian emission densities: compiled on a
  CPU, torch products elsewhere.
* :func:`decode`, Viterbi: compiled on a CPU, asking for the emission log-likelihoods block by
  block (:mod:`~latentfit.em.hmm.inference.compiled_viterbi`); elsewhere the chunked torch
  kernel (:mod:`~latentfit.em.hmm.inference.chunked_viterbi`) on the whole (t, k) array.

Known states (partial labels): :func:`posterior`, :func:`log_likelihood` and :func:`decode`
take ``states`` (t,), the state of every step that is known and −1 elsewhere, and condition
exactly on them: at a known step the emission log-likelihood of every other state is set to
−inf (:func:`condition_on_states`), so that only the paths through the known states keep any
probability. Every kernel takes such rows (their scaled emissions are 0 there); ``compiled``
and ``chunk`` force a kernel for the tests that compare them.

The sequential and chunked versions of each recursion have the same signature and are tested
against each other; the kernels are re-exported here so that one namespace holds them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from latentfit import _compiled
from latentfit.em.hmm.inference.chunked import fused_posterior, parallel_forward_filter
from latentfit.em.hmm.inference.chunked_viterbi import parallel_viterbi
from latentfit.em.hmm.inference.log_space import redo_filter, redo_posterior, underflow_possible
from latentfit.em.hmm.inference.messages import (
    HMMBackward,
    HMMFiltered,
    HMMPosterior,
    HMMViterbi,
    _restart_steps,
    chunk_length,
    sequence_starts,
)
from latentfit.em.hmm.inference.runtime import compiled_workers
from latentfit.em.hmm.inference.sequential import (
    backward_pass,
    forward_filter,
    smoothed_marginals,
    two_slice_counts,
    viterbi,
)

__all__ = [
    "COMPILE_MIN_STEPS",
    "HMMBackward",
    "HMMFiltered",
    "HMMPosterior",
    "HMMViterbi",
    "backward_pass",
    "chunk_length",
    "compiled_workers",
    "condition_on_states",
    "decode",
    "diag_gaussian_densities",
    "forward_filter",
    "log_likelihood",
    "parallel_forward_filter",
    "parallel_viterbi",
    "posterior",
    "sequence_starts",
    "smoothed_marginals",
    "two_slice_counts",
    "viterbi",
]


#: Below this many steps a float64 call runs the torch kernels even on a CPU with numba:
#: compiling the kernels (the first time after an install; then they are cached on disk) costs
#: seconds, more than they can save on a short sequence, and a small fit then needs no compiler
#: at all. Lower precisions keep the compiled kernels, whose float32 results stay closer to
#: float64's than the torch kernels' (data far from the origin).
COMPILE_MIN_STEPS = 1 << 12


def _use_compiled(x: torch.Tensor, n_steps: int) -> bool:
    if x.device.type != "cpu" or (n_steps < COMPILE_MIN_STEPS and x.dtype == torch.float64):
        return False
    return _compiled.available()  # imports numba: asked only where a kernel would run


def condition_on_states(log_likelihoods, states, *, overwrite: bool = False) -> torch.Tensor:
    """The emission log-likelihoods (t, k) conditioned on the known ``states`` (t,) (−1:
    unknown): at a step whose state j is known every other state's entry becomes −inf, so
    that the forward-backward and Viterbi recursions run over the paths through the known
    states only (their likelihood is p(x, z_known), the posteriors p(z | x, z_known)).
    ``states=None`` returns the input. ``overwrite=True`` writes into ``log_likelihoods``."""
    if states is None:
        return log_likelihoods
    states = torch.as_tensor(states, dtype=torch.int64, device=log_likelihoods.device)
    known = (states >= 0).nonzero().squeeze(1)  # (m,) steps with a known state
    if len(known) == 0:
        return log_likelihoods
    out = log_likelihoods if overwrite else log_likelihoods.clone()
    k = out.shape[1]
    rows = out.index_select(0, known)  # (m, k)
    other = torch.arange(k, device=out.device) != states[known].unsqueeze(1)  # (m, k)
    out.index_copy_(0, known, rows.masked_fill_(other, -math.inf))
    return out


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
    workers: int | None = None,
    states=None,
) -> HMMPosterior:
    """The Baum-Welch E-step: log-likelihood, smoothed marginals and the expected start and
    transition counts (Rabiner 1989, §III.C). By default, on CPU tensors the compiled E-step
    (:func:`latentfit.em.hmm.inference.compiled.posterior_cpu`), elsewhere the parallel kernels
    (fused and in place, :func:`latentfit.em.hmm.inference.chunked.fused_posterior`; ``compiled=False``
    asks for them on the CPU too); ``parallel=False``: the sequential torch recursions.
    ``overwrite=True`` lets the E-step reuse the ``log_likelihoods`` buffer (its contents are
    then lost); ``workers``: threads for the compiled kernel (default: torch's thread count);
    ``states`` (t,): known states, −1 where unknown (see :func:`condition_on_states`)."""
    log_likelihoods = condition_on_states(log_likelihoods, states, overwrite=overwrite)
    options = dict(parallel=parallel, chunk=chunk, compiled=compiled, workers=workers)
    # the sequences the scaled kernels lose to underflow are redone in log space
    # (log_space.py), from the emissions themselves: copied first when the kernel may reuse
    # their buffer and their spread allows a loss
    if overwrite and not underflow_possible(log_likelihoods):
        return _posterior(log_likelihoods, startprob, transmat, lengths, overwrite, **options)
    kept = log_likelihoods.clone() if overwrite else log_likelihoods
    post = _posterior(log_likelihoods, startprob, transmat, lengths, overwrite, **options)

    def fast(ll, lens):
        return _posterior(ll, startprob, transmat, lens, False, **options)

    return redo_posterior(post, kept, startprob, transmat, lengths, fast)


def _posterior(
    log_likelihoods, startprob, transmat, lengths, overwrite, *, parallel, chunk, compiled, workers
) -> HMMPosterior:
    """:func:`posterior` by the kernel of this device and size (scaled recursions)."""
    t, k = log_likelihoods.shape
    if compiled is None:
        compiled = parallel and _use_compiled(log_likelihoods, t)
    if compiled:
        from latentfit.em.hmm.inference.compiled import posterior_cpu  # imports numba

        return posterior_cpu(
            log_likelihoods, startprob, transmat, lengths, overwrite=overwrite,
            workers=compiled_workers(workers),
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
    starts = sequence_starts(lengths, t, log_likelihoods.device)
    length = chunk or chunk_length(t, k)
    b = -(-t // length)
    padded = torch.cat([starts, starts.new_ones(b * length - t)])  # padding steps restart
    starts_bl = padded.view(b, length)
    restarts = _restart_steps(starts_bl.T)
    gamma, xi, log_norm = fused_posterior(
        log_likelihoods, startprob, transmat, starts_bl, restarts, overwrite=overwrite
    )
    # per-sequence sums from the lengths themselves (no search of the (t,) start mask)
    lens = torch.as_tensor([t] if lengths is None else lengths, dtype=torch.int64)
    first = (torch.cumsum(lens, 0) - lens).to(log_norm.device)  # (n_sequences,)
    seq = torch.segment_reduce(log_norm, "sum", lengths=lens.to(log_norm.device))
    return HMMPosterior(seq.sum(), seq, gamma, xi, gamma.index_select(0, first).sum(0))


def diag_gaussian_densities(X, c, W, const, out, *, rows: int = 1 << 16) -> torch.Tensor:
    """Diagonal-Gaussian emission log-densities in their affine form (see
    :class:`~latentfit.em.hmm.emissions.DiagGaussianTerms`): ``const + [(x − c)², x − c] @ W``
    for every row of X (t, d), written into ``out`` (t, k). On a CPU with numba the compiled
    kernel (:mod:`~latentfit.em.hmm.inference.compiled_densities`), elsewhere torch products
    over blocks of ``rows`` rows."""
    if _use_compiled(X, X.shape[0]):
        from latentfit.em.hmm.inference.compiled_densities import diag_gaussian_log_likelihood

        X_, c_, W_, const_ = (a.detach().contiguous().numpy() for a in (X, c, W, const))
        diag_gaussian_log_likelihood(X_, c_, W_, const_, out.numpy())
        return out
    for i in range(0, X.shape[0], rows):
        Xc = X[i : i + rows] - c  # (r, d)
        torch.addmm(const, torch.cat([Xc * Xc, Xc], 1), W, out=out[i : i + rows])
    return out


def log_likelihood(
    log_likelihoods,
    startprob,
    transmat,
    lengths=None,
    *,
    workers: int | None = None,
    compiled: bool | None = None,
    chunk: int | None = None,
    states=None,
) -> HMMFiltered:
    """The forward filter (Rabiner 1989, eqs. 19-21): log p(x) and the filtered messages. On a
    CPU with numba the compiled kernel (it may reuse the ``log_likelihoods`` buffer), elsewhere
    (or ``compiled=False``)
    :func:`~latentfit.em.hmm.inference.chunked.parallel_forward_filter` with chunks of
    ``chunk`` steps. ``states`` (t,): known states, −1 where unknown (the result is then
    log p(x, z_known); see :func:`condition_on_states`)."""
    log_likelihoods = condition_on_states(log_likelihoods, states, overwrite=True)
    # beyond the spread the scaled kernels resolve, the sequences they lose are redone in log
    # space (log_space.py) from a copy (the compiled filter reuses the buffer)
    kept = log_likelihoods.clone() if underflow_possible(log_likelihoods) else None
    if compiled is None:
        compiled = _use_compiled(log_likelihoods, log_likelihoods.shape[0])
    if compiled:
        from latentfit.em.hmm.inference.compiled import forward_filter_cpu  # imports numba

        filt = forward_filter_cpu(
            log_likelihoods, startprob, transmat, lengths, overwrite=True,
            workers=compiled_workers(workers),
        )  # fmt: skip
    else:
        filt = parallel_forward_filter(log_likelihoods, startprob, transmat, lengths, chunk=chunk)
    return filt if kept is None else redo_filter(filt, kept, startprob, transmat, lengths)


def decode(
    emission: Callable[[int, int], torch.Tensor],
    n_steps: int,
    startprob,
    transmat,
    lengths=None,
    *,
    workers: int | None = None,
    compiled: bool | None = None,
    chunk: int | None = None,
    states=None,
) -> HMMViterbi:
    """Viterbi decoding (Rabiner 1989, eqs. 30-35) of ``n_steps`` steps whose emission
    log-likelihoods ``emission(a, b)`` gives for rows ``a .. b − 1`` ((b − a, k), on the
    model's device). On a CPU with numba the compiled kernel asks for them block by block;
    elsewhere (or ``compiled=False``) the chunked torch kernel takes them all at once;
    ``chunk``: steps per chunk of either. ``states`` (t,): known states, −1 where unknown (the
    path then passes through them; see :func:`condition_on_states`)."""
    if states is not None:
        given = emission
        states = torch.as_tensor(states, dtype=torch.int64)

        def emission(a: int, b: int) -> torch.Tensor:
            return condition_on_states(given(a, b), states[a:b])

    if compiled is None:
        compiled = _use_compiled(startprob, n_steps)
    if compiled:
        from latentfit.em.hmm.inference.compiled_viterbi import viterbi_cpu_blocks  # numba

        return viterbi_cpu_blocks(
            emission, n_steps, startprob, transmat, lengths, workers=compiled_workers(workers),
            chunk=chunk,
        )  # fmt: skip
    return parallel_viterbi(emission(0, n_steps), startprob, transmat, lengths, chunk=chunk)
