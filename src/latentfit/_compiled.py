"""numba, the compiler of the few CPU kernels that torch calls cannot express efficiently
(recursions over time steps, densities of a handful of features): loaded once, optional at
run time.

Every compiled kernel has a torch twin that computes the same thing on any device; callers
use the kernel for CPU tensors when :func:`available` and the twin otherwise. Kernels release
the GIL (``nogil``) so that threads can run them side by side, and are cached on disk
(``cache=True``) so that a new process does not compile them again.
"""

from __future__ import annotations

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this guards odd platforms
    numba = None

__all__ = ["available", "jit", "numba"]


def available() -> bool:
    """Whether the compiled CPU kernels can run here."""
    return numba is not None


def jit(fn):
    """Compile ``fn`` as a CPU kernel (no Python objects, GIL released, cached on disk); the
    plain function where numba is missing (it is then never called)."""
    if numba is None:  # pragma: no cover
        return fn
    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
