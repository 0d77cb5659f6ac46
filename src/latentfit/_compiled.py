"""numba, the compiler of the few CPU kernels that torch calls cannot express efficiently
(recursions over time steps, densities of a handful of features): loaded once, optional at
run time.

Every compiled kernel has a torch twin that computes the same thing on any device; callers
use the kernel for CPU tensors when :func:`available` and the twin otherwise. Kernels release
the GIL (``nogil``) so that threads can run them side by side, and are cached on disk
(``cache=True``) so that a new process does not compile them again; ``latentfit compile``
(:mod:`latentfit._warm`) fills that cache ahead of any call. The modules that define
kernels are imported when first needed (importing numba takes a quarter of a second).
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["available", "jit"]


@functools.cache
def available() -> bool:
    """Whether the compiled CPU kernels can run here (without importing numba)."""
    return importlib.util.find_spec("numba") is not None


def jit(fn):
    """Compile ``fn`` as a CPU kernel (no Python objects, GIL released, cached on disk), when
    it is first called. Only modules used when :func:`available` define kernels."""
    import numba

    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
