"""Diagonal-covariance Gaussian log-densities compiled for the CPU: the same numbers as
:func:`~latentfit.em.hmm.emissions.gaussian_log_likelihood`, faster for long sequences of a
few features (benchmarks/README.md).

With d and k of a few each, the torch form (a (rows, 2d) @ (2d, k) product after building the
features ``[(x − c)², x − c]``) runs at a small fraction of the machine's speed: the product is
too thin for BLAS and the features are a pass of their own. Here every block of rows is
centred once and each state's density is accumulated over the rows in a vector loop.
"""

from __future__ import annotations

import numpy as np

from latentfit._compiled import jit
from latentfit._kernel_ops import minimum

__all__ = ["diag_gaussian_log_likelihood"]

_ROWS = 64  # rows per block: (d + k) × 64 numbers stay in registers and the first-level cache


@jit
def diag_gaussian_log_likelihood(X, c, W, const, out):
    """``out[t, j] = const[j] + Σ_e (W[e, j] (x_te − c_e) + W[d + e, j]) (x_te − c_e)``: the
    log-density of a Gaussian with diagonal covariance written as in Bishop (2006, eq. 2.43)
    expanded, with ``W[:d] = −½ λ`` and ``W[d:] = λ (μ − c)`` per state (λ the precisions).

    X (t, d), c (d,), W (2d, k), const (k,), out (t, k), all of one float dtype."""
    n, d = X.shape
    k = const.shape[0]
    xc = np.empty((d, _ROWS), X.dtype)
    acc = np.empty((k, _ROWS), X.dtype)
    for t0 in range(0, n, _ROWS):
        m = minimum(_ROWS, n - t0)
        for r in range(m):
            for e in range(d):
                xc[e, r] = X[t0 + r, e] - c[e]
        for j in range(k):
            for r in range(m):
                acc[j, r] = const[j]
            for e in range(d):
                wq = W[e, j]
                wl = W[d + e, j]
                for r in range(m):  # the vector loop
                    v = xc[e, r]
                    acc[j, r] += (wq * v + wl) * v
        for r in range(m):
            for j in range(k):
                out[t0 + r, j] = acc[j, r]
