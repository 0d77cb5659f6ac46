"""Numba functions the compiled kernels share in place of numba's own, which compile far more
than they compute: the first call of a kernel after an install compiles it (then it is cached
on disk), and a decode or a state-space fit waited ~7 s for that, most of it on code that
runs only to word an error (benchmarks/README.md, "Cold start").

- The builtins ``min``/``max`` of two numbers, written as Python defines them (the first
  argument unless the second is smaller / larger, so a NaN as first argument is kept).
- ``np.searchsorted`` (side "left") by bisection: numba's compiles a generic comparison.
- :func:`largest`: a 1-d array's ``max()``, whose numba version compiles its reductions over
  every layout and the error of an empty array.

The kernels also copy arrays element by element rather than assigning an array to a slice
(``dst[i] = src``): that makes numba compile the ValueError it would raise for shapes that do
not match, whose message formats both shapes as strings (str, join, repr: ~6 s of compiling
the first time, for a copy whose shapes match by construction).

Only kernel modules import this module: it imports numba (:func:`latentfit._compiled.jit`).
"""

from __future__ import annotations

import numpy as np

from latentfit._compiled import jit

__all__ = ["largest", "maximum", "minimum", "searchsorted_left"]


@jit
def minimum(a, b):
    """``min(a, b)``."""
    return b if b < a else a


@jit
def maximum(a, b):
    """``max(a, b)``."""
    return b if b > a else a


@jit
def searchsorted_left(values, x):
    """``np.searchsorted(values, x)`` for ``values`` sorted ascending (1-d)."""
    lo, hi = 0, values.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def largest(values):
    """``values.max()`` of a non-empty 1-d array (NaN if any entry is NaN, as numpy's)."""
    top = -np.inf
    for e in range(values.shape[0]):
        v = values[e]
        if v != v:
            return v
        if v > top:
            top = v
    return top
