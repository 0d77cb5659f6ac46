"""The own-pace kernels (paced_kernel.py) without waiting for their compiler.

numba compiles ``leaf`` and ``start`` at their first call after an install (~4.5 s of CPU),
then loads them from its disk cache (a few hundredths of a second, done at once). A run does
not wait for the compiler: it begins both compiles as it starts (``prepare``), and until the
kernels are ready it calls their interpreted twins (``_compiled.interpreted``: the same float64
arithmetic, operation for operation, at Python's speed, ~8x slower) while a thread has a child
process compile both kernels into numba's cache (``paced_kernel.warm``, as ``latentfit
compile`` does); the run loads them from the first step after the child is done. The child
compiles on another core; a compile in a thread of the run's own process, or a load there,
waits for the interpreter that the twin holds. A first run of 4 chains, 1,000 + 1,000
transitions of a 6-dimensional normal, in an empty cache: 5.6-6.0 s, against 5.3-5.8 s
waiting for the compiler and 8.3-8.6 s with the compile in a thread (0.5-0.8 s with the
kernels cached), its steps made meanwhile; most of its 15,000 steps were the twin's
(benchmarks/README.md). The twin and the kernel agree bit for bit
(tests/mcmc/test_paced.py), so a first run's draws are those of every later run with the same
seed, wherever the compiler finished. A compile that fails leaves the twin running, with a
:class:`~latentfit.errors.CompileFallbackWarning`.

The threads (one a kernel, ended with their work: none is left to a later ``fork``) are
daemons and the child runs in a session of its own: a process that ends, or is stopped by
Ctrl-C, before the child is done does not wait for it, and the child still leaves the kernels
in the cache for the next run. Where numba has no disk cache (``_compiled.cache_missing``) or
the child fails, the thread compiles.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

__all__ = ["Kernel", "prepare"]

_LOCK = threading.Lock()
#: the compile of each (kernel, argument types) asked for in this process
_JOBS: dict[tuple, Future] = {}


class Kernel:
    """``paced_kernel.<name>``: call ``kernel.fn(*args)``, which is the twin until the
    compiled kernel is ready, then the compiled kernel itself (no wrapper on the way)."""

    def __init__(self, name: str):
        self.name = name
        self.job: Future | None = None
        self.fn = self._first

    def _first(self, *args):
        self.job = _compile(self.name, args)
        self.fn = self._twin
        return self._twin(*args)

    def _twin(self, *args):
        if self.job.done():
            self.fn = _outcome(self.name, self.job)
            return self.fn(*args)
        with np.errstate(all="ignore"):  # numpy scalars warn where the kernel wraps
            return getattr(_twins(), self.name)(*args)


def prepare() -> None:
    """Begin both kernels' compiles now (a run calls this as it starts, so that the child
    compiles while the run sets up): for the argument types of ``paced_kernel.warm_args``,
    which are the run's."""
    from latentfit.mcmc import paced_kernel

    begun, stepped = paced_kernel.warm_args()
    _compile("start", begun)
    _compile("leaf", stepped)


def _compile(name: str, args: tuple) -> Future:
    """The compile of ``name`` for the types of ``args``: loaded here where numba's cache
    holds it, else begun on a thread of its own if it is new."""
    import numba

    from latentfit.mcmc import paced_kernel

    kernel = getattr(paced_kernel, name)
    types = tuple(numba.typeof(a) for a in args)
    with _LOCK:
        job = _JOBS.get((name, types))
        if job is None and _cached(kernel, types):  # loading it is no wait for a compiler
            job = _JOBS[(name, types)] = Future()
            try:
                kernel.compile(types)
            except Exception as err:  # whatever numba raises: the twin runs instead
                job.set_exception(err)
            else:
                job.set_result(None)
        if job is None:
            job = _JOBS[(name, types)] = Future()
            threading.Thread(
                target=_build, args=(job, kernel, types), name="latentfit-compile", daemon=True
            ).start()
    return job


def _build(job: Future, kernel, types: tuple) -> None:
    """``kernel`` for ``types`` put into numba's cache by a child (once a process: the child
    compiles both kernels), for the run to load (``job``'s result: the kernel and the types),
    or, where the cache cannot hold it or the child failed, compiled here (the result: None).
    The run loads it itself: a load here would wait for the interpreter at each of its file
    reads while the twin holds it (measured: 1.1 s, against a few hundredths)."""
    from latentfit import _compiled

    try:
        with _CHILD_LOCK:
            if not _CHILD and not _compiled.cache_missing():
                _CHILD.append(_child())
        if _CHILD and _CHILD[0] == 0:
            job.set_result((kernel, types))
            return
        kernel.compile(types)
    except BaseException as err:  # whatever numba raises: the twin runs on
        job.set_exception(err)
    else:
        job.set_result(None)


#: the exit status of this process's child (at most one), and who may start it
_CHILD: list = []
_CHILD_LOCK = threading.Lock()


def _cached(kernel, types: tuple) -> bool:
    """Whether numba's disk cache holds ``kernel`` compiled for ``types`` (numba's own
    ``Dispatcher.compile`` looks there first the same way)."""
    try:
        return kernel._cache.load_overload(types, kernel.targetctx) is not None
    except Exception:  # a numba without this cache interface: let the child compile
        return False


def _child() -> int | str:
    """Run ``paced_kernel.warm`` in a child process of this very latentfit (which imports
    numba, not torch: half a second before it compiles)."""
    src = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(x for x in (src, os.environ.get("PYTHONPATH")) if x)
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from latentfit.mcmc.paced_kernel import warm; warm()"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
            start_new_session=True,  # not stopped by the terminal's Ctrl-C with the run
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as err:  # no interpreter, a child that hangs
        return f"{type(err).__name__}: {err}"
    return done.returncode


def _outcome(name: str, job: Future):
    """The kernel to call from now on: the compiled one, or the twin where compiling failed."""
    from latentfit.mcmc import paced_kernel

    err = job.exception()
    if err is None and job.result() is not None:
        kernel, types = job.result()
        try:
            kernel.compile(types)  # from the cache where the child left it
        except Exception as failed:  # whatever numba raises: the twin runs on
            err = failed
    if err is None:
        return getattr(paced_kernel, name)
    _warn_once(name, err)
    twin = getattr(_twins(), name)

    def quiet(*args):
        with np.errstate(all="ignore"):
            return twin(*args)

    return quiet


@functools.cache
def _twins():
    """The kernels' interpreted twins (``_compiled.interpreted``), made once."""
    from latentfit import _compiled
    from latentfit.mcmc import paced_kernel

    return _compiled.interpreted(paced_kernel)


_WARNED: set[str] = set()


def _warn_once(name: str, err: BaseException) -> None:
    import warnings

    from latentfit.errors import CompileFallbackWarning, user_stacklevel

    if name in _WARNED:
        return
    _WARNED.add(name)
    warnings.warn(
        f"numba could not compile the own-pace NUTS kernel {name!r} ({type(err).__name__}: "
        f"{err}); the chains run with its interpreted twin instead (the same draws, slower). "
        'pace="batch" needs no numba.',
        CompileFallbackWarning,
        stacklevel=user_stacklevel(),
    )
