"""How many CPU threads the HMM inference uses: one intra-op thread for the torch step loops
(:func:`step_loop_threads`), and torch's own thread count, as it was outside them, for the
compiled kernels (:func:`compiled_workers`), which run whole passes per thread."""

from __future__ import annotations

import contextlib
import contextvars
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["compiled_workers", "run_threads", "step_loop_threads"]


@contextlib.contextmanager
def step_loop_threads(device: torch.device):
    """Run HMM inference on one intra-op CPU thread, restoring the setting after.

    Every operation inside the step loops touches a few thousand numbers, below torch's
    parallel grain, so extra threads cannot speed them up; BLAS threads would only spin-wait
    between the thousands of tiny products. The one-shot passes over the (t, k) arrays
    (emission densities with their thin (rows, 2d) @ (2d, k) products, statistics) gain
    little from threads too and lose badly when the cores are shared: on 2 busy cores one
    Baum-Welch iteration of 10⁶ steps measured 0.61 s of CPU with two threads against 0.19 s
    with one. The model classes therefore run whole calls (fit, score, decode) inside this."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    token = _outer_threads.set(before)
    try:
        yield
    finally:
        _outer_threads.reset(token)
        torch.set_num_threads(before)


_outer_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "latentfit_outer_threads", default=None
)


def compiled_workers() -> int:
    """Threads for the compiled CPU kernels, which run whole passes per thread (not the tiny
    per-step calls that :func:`step_loop_threads` keeps on one): torch's thread count as it
    was outside the innermost ``step_loop_threads``."""
    outer = _outer_threads.get()
    return outer if outer is not None else torch.get_num_threads()


def run_threads(fn, n: int, workers: int) -> None:
    """``fn(0) … fn(n − 1)`` on up to ``workers`` threads (the compiled kernels release the
    GIL), or in order on this one."""
    if workers > 1 and n > 1:
        with ThreadPoolExecutor(min(workers, n)) as pool:
            list(pool.map(fn, range(n)))
    else:
        for i in range(n):
            fn(i)
