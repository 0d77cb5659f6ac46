"""Compile every CPU kernel ahead of its first call (``latentfit compile``).

numba compiles a kernel on its first call in a process that finds no compiled copy in its
disk cache (:mod:`latentfit._compiled`): a user's first decode of a long series, or first fit
of a hidden semi-Markov or state-space model, would wait seconds on the compiler. This module
calls every kernel once, on a few rows, with each argument type a fit or a prediction gives
it (float64 and float32; the HMM kernels for every number of states they are specialised for,
and once for the others), so that the cache holds them all. ``latentfit compile`` runs it
(:mod:`latentfit.cli.kernels`); the Makefile does not (benchmarks/README.md, Cold start).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["compile_kernels", "kernel_groups"]


def _hmm(dtype: torch.dtype, k: int) -> None:
    from latentfit.em.hmm.inference import posterior as hmm

    g = torch.Generator().manual_seed(k)
    t = 64
    ll = torch.randn(t, k, generator=g, dtype=torch.float64).to(dtype)
    start = torch.full((k,), 1.0 / k, dtype=dtype)
    trans = torch.softmax(torch.randn(k, k, generator=g, dtype=torch.float64), 1).to(dtype)
    hmm.posterior(ll.clone(), start, trans, [t // 2, t // 2], compiled=True, workers=1)
    hmm.log_likelihood(ll.clone(), start, trans, compiled=True, workers=1)
    hmm.decode(lambda a, b: ll[a:b], t, start, trans, compiled=True, workers=1, chunk=8)
    # flat emissions and sticky states from an uneven start: every chunk's proposed entering
    # message (from a flat start) is wrong, and the decode runs the chunks again
    flat = torch.zeros(t, k, dtype=dtype)
    sticky = (0.9 * torch.eye(k, dtype=torch.float64) + 0.1 / k).to(dtype)
    uneven = torch.softmax(torch.arange(k, dtype=torch.float64), 0).to(dtype)
    hmm.decode(lambda a, b: flat[a:b], t, uneven, sticky, compiled=True, workers=1, chunk=8)


def _densities(dtype: torch.dtype) -> None:
    from latentfit.em.hmm.inference.compiled_densities import diag_gaussian_log_likelihood

    X = np.zeros((4, 2), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    c, const = X[0].copy(), np.zeros(3, X.dtype)
    W, out = np.zeros((4, 3), X.dtype), np.empty((4, 3), X.dtype)
    diag_gaussian_log_likelihood(X, c, W, const, out)


def _hsmm() -> None:
    from latentfit.em.hsmm import inference as hsmm

    k, t, D = 3, 12, 4
    g = torch.Generator().manual_seed(0)
    ll = torch.randn(t, k, generator=g, dtype=torch.float64)
    log_start = torch.full((k,), -np.log(k), dtype=torch.float64)
    log_trans = torch.log_softmax(torch.randn(k, k, generator=g, dtype=torch.float64), 1)
    terms = hsmm.duration_terms(torch.full((k, D), -np.log(D), dtype=torch.float64))
    for censored in (False, True):
        hsmm.posterior_sequences(ll, log_start, log_trans, terms, [t], censored)
        # the backward pass alone: what the posteriors of an impossible sequence fall back on
        hsmm.hsmm_backward(ll, log_trans, terms, censored)
        hsmm.log_likelihood_sequences(ll, log_start, log_trans, terms, [t], censored)
        hsmm.viterbi_sequences(ll, log_start, log_trans, terms, [t], censored)


def _ssm(dtype: torch.dtype) -> None:
    from latentfit.em.ssm.kalman import SSMParams
    from latentfit.em.ssm.kalman_cpu import filter_smooth_cpu

    k, d, t = 2, 3, 10
    eye_k, eye_d = torch.eye(k, dtype=dtype), torch.eye(d, dtype=dtype)
    p = SSMParams(
        0.5 * eye_k, torch.ones(d, k, dtype=dtype), eye_k, eye_d, torch.zeros(d, dtype=dtype),
        torch.zeros(k, dtype=dtype), eye_k,
    )  # fmt: skip
    Y = torch.randn(t, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Y = Y.to(dtype)
    Y[3, 1] = float("nan")
    filter_smooth_cpu(p, Y, [t // 2, t // 2], smooth=True)


def _paths() -> None:
    from latentfit.em import paths

    rng = np.random.default_rng(0)
    cdf = np.cumsum(np.full((2, 2), 0.5), 1)
    paths.markov_chain(cdf, rng.random(8), 0, compiled=True)
    paths.segment_chain(
        cdf, cdf, rng.random(8), rng.random(8), 0, 0, np.zeros(8, np.int64), compiled=True
    )
    paths.linear_path(np.eye(2), np.zeros(2), rng.standard_normal((8, 2)), compiled=True)
    states = np.zeros(8, np.int64)
    paths.ar_path(np.zeros((1, 2, 5)), states, rng.standard_normal((8, 2)), np.zeros((2, 2)),
                  compiled=True)  # fmt: skip


def _paced() -> None:
    """NUTS with every chain at its own pace (mcmc/paced_kernel.py, float64 arithmetic for
    every dtype)."""
    from latentfit.mcmc import paced_kernel

    paced_kernel.warm()


def kernel_groups(dtypes=("float64", "float32"), states=None) -> list[tuple[str, object]]:
    """The groups of kernels :func:`compile_kernels` prepares, as (description, call) pairs:
    for each of ``dtypes`` the HMM kernels of every number of states in ``states`` (default:
    each count the kernels are specialised for, and 2 for all the others), the diagonal-Gaussian
    densities, the Kalman filter and smoother; then NUTS's tree at its own pace, the semi-Markov
    recursions and the long-path samplers (float64 whatever the model's dtype)."""
    from latentfit.em.hmm.inference.compiled import UNROLL_STATES

    lo, hi = UNROLL_STATES
    wanted = range(1, hi + 2) if states is None else sorted(set(states))
    # every count outside the range shares one build, compiled once on 2 states
    ks = sorted({k if lo <= k <= hi else 2 for k in wanted})
    groups = []
    for name in dtypes:
        dtype = getattr(torch, name)
        for k in ks:
            what = f"{k} states" if lo <= k <= hi else f"every count of states not in {lo}-{hi}"
            groups.append((f"HMM, {what}, {name}", lambda d=dtype, k=k: _hmm(d, k)))
        groups.append((f"HMM densities, {name}", lambda d=dtype: _densities(d)))
        groups.append((f"Kalman filter and smoother, {name}", lambda d=dtype: _ssm(d)))
    groups.append(("NUTS with chains at their own pace, float64", _paced))
    groups.append(("semi-Markov recursions, float64", _hsmm))
    groups.append(("long paths, float64", _paths))
    return groups


def compile_kernels(dtypes=("float64", "float32"), states=None, progress=None) -> int:
    """Compile every CPU kernel of :func:`kernel_groups` (or load it from the disk cache),
    calling ``progress(description)`` before each group; returns the number of groups (0 when
    numba is not installed: the torch twins need no compiling)."""
    from latentfit import _compiled

    if not _compiled.available():
        return 0
    groups = kernel_groups(dtypes, states)
    for what, call in groups:
        if progress is not None:
            progress(what)
        call()
    return len(groups)
