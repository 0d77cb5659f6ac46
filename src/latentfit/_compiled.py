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

__all__ = ["available", "cache_missing", "interpreted", "jit"]

#: the kernels this process compiled without a disk cache (numba found no writable folder)
_UNCACHED: list[str] = []


@functools.cache
def available() -> bool:
    """Whether the compiled CPU kernels can run here: numba is installed and imports. Callers
    ask only where a kernel would run (importing numba takes a quarter of a second). A numba
    that is installed but fails to import (one built for another numpy: "Numba needs NumPy
    2.3 or less") is not used: the torch twins run instead, and a
    :class:`~latentfit.errors.CompileFallbackWarning` (once a process) says why."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import numba  # noqa: F401
    except Exception as err:  # whatever numba's import raises: the kernels are optional
        import warnings

        from latentfit.errors import CompileFallbackWarning, user_stacklevel

        warnings.warn(
            f"numba is installed but does not import ({type(err).__name__}: {err}), so "
            "latentfit runs its torch kernels on the CPU instead of the compiled ones (the "
            "same results up to rounding; slower on long sequences). Install a numba that matches this "
            "numpy (pip install -U numba) to get them back.",
            CompileFallbackWarning,
            stacklevel=user_stacklevel(),
        )
        return False
    return True


def jit(fn):
    """Compile ``fn`` as a CPU kernel (no Python objects, GIL released, cached on disk), when
    it is first called. Only modules used when :func:`available` define kernels.

    Where numba finds no writable folder for its cache (latentfit installed read-only and no
    writable user cache folder: a container run as another user), it raises as the kernel is
    defined; the kernel is then compiled in every process instead, and a
    :class:`~latentfit.errors.CompileCacheWarning` (once a process) says so."""
    import numba

    try:
        return _tolerate_damaged_cache(numba.njit(nogil=True, cache=True, error_model="numpy")(fn))
    except RuntimeError as err:
        if "no locator available" not in str(err):
            raise
    if not _UNCACHED:
        import warnings

        from latentfit.errors import CompileCacheWarning, user_stacklevel

        warnings.warn(
            "numba has no writable folder for its disk cache here (latentfit's install folder "
            "and the user's cache folder are read-only), so latentfit's CPU kernels are "
            "compiled again in every new process (seconds at their first call). Set "
            "NUMBA_CACHE_DIR to a writable folder, then `latentfit compile` keeps them.",
            CompileCacheWarning,
            stacklevel=user_stacklevel(),
        )
    _UNCACHED.append(f"{fn.__module__}.{fn.__qualname__}")
    return numba.njit(nogil=True, error_model="numpy")(fn)


def _tolerate_damaged_cache(dispatcher):
    """``dispatcher`` whose disk cache treats a damaged file as a miss. numba unpickles its
    index and compiled entries unguarded: a truncated or garbled file (a cache folder copied
    in part, a disk error) raised pickle's UnpicklingError at every first call of the kernel,
    in every process, until the file was deleted by hand. A load that fails now deletes the
    kernel's index and compiles, and numba's save after the compile writes a fresh index.
    (numba's ``Cache.load_overload`` is wrapped on this dispatcher's instance; a numba without
    it is left as it is.)"""
    import os

    cache = getattr(dispatcher, "_cache", None)
    load = getattr(cache, "load_overload", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    if load is None or index is None:
        return dispatcher

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception:  # whatever unpickling a damaged file raises
            try:
                os.remove(index)
            except OSError:
                pass
            return None

    cache.load_overload = load_overload
    return dispatcher


def cache_missing() -> bool:
    """Whether a kernel of this process could not be cached on disk (see :func:`jit`)."""
    return bool(_UNCACHED)


def interpreted(module):
    """The interpreted twins of ``module``'s kernels: each kernel's Python function, calling
    the twins of the kernels it calls (numba resolves a kernel's calls through its module's
    globals; each twin gets a copy of them in which every kernel is its twin). A twin does the
    kernel's float64 arithmetic operation for operation, with the C library's ``math``
    functions that the compiled code calls too, so its results are the kernel's bit for bit
    where every float in it is float64 (tests/mcmc/test_paced.py), at Python's speed. Call
    twins under ``numpy.errstate(all="ignore")``: numpy scalars warn where the kernel wraps
    (unsigned 64-bit products) or divides by zero."""
    import types

    space = dict(vars(module))
    for name, value in list(space.items()):
        fn = getattr(value, "py_func", None)
        if fn is not None:
            space[name] = types.FunctionType(
                fn.__code__, space, fn.__name__, fn.__defaults__, fn.__closure__
            )
    return types.SimpleNamespace(**space)
