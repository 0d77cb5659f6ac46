"""What the HMM kernels ask of the machine: threads for the compiled kernels and large
scratch tensors.

Threads: the compiled CPU kernels run whole passes per thread and take their count as an
argument (``workers``; default torch's thread count, :func:`compiled_workers`). Nothing here
changes torch's own thread count: a caller that wants the torch step loops on fewer threads
sets that around its own call (benchmarks/README.md has the measurements).

Memory: the kernels write a few (t, k) arrays per call (emission log-likelihoods, forward
messages, Viterbi messages): 64 MB each for a million steps of eight states. A fresh
allocation of that size is a new memory mapping, and on Linux its first touch costs one page
fault per 4 KiB page, more than the arithmetic done on it. :func:`empty_large` asks the
kernel for 2 MiB pages (``madvise(MADV_HUGEPAGE)``, honoured when
``/sys/kernel/mm/transparent_hugepage/enabled`` is ``always`` or ``madvise``); the hint
changes no value, and where it is unavailable (other systems, other devices, small arrays)
this is plain :func:`torch.empty`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["compiled_workers", "empty_large", "run_threads"]


def compiled_workers(workers: int | None = None) -> int:
    """Threads for the compiled CPU kernels: ``workers`` when given, else torch's thread
    count."""
    return torch.get_num_threads() if workers is None else max(1, int(workers))


def run_threads(fn, n: int, workers: int) -> None:
    """``fn(0) … fn(n − 1)`` on up to ``workers`` threads (the compiled kernels release the
    GIL), or in order on this one."""
    if workers > 1 and n > 1:
        with ThreadPoolExecutor(min(workers, n)) as pool:
            list(pool.map(fn, range(n)))
    else:
        for i in range(n):
            fn(i)


_HUGE = 2 << 20  # 2 MiB
_MADV_HUGEPAGE = 14
_THRESHOLD = 8 << 20  # below this the page faults cost little


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise_fn = _madvise()


def empty_large(*shape: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.empty(shape)``, with its memory advised to use huge pages when it is a large
    CPU array on Linux (uninitialised, contiguous, like :func:`torch.empty`)."""
    device = torch.device(device)
    n = math.prod(shape)
    item = torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or _madvise_fn is None or n * item < _THRESHOLD:
        return torch.empty(shape, dtype=dtype, device=device)
    pad = _HUGE // item
    raw = torch.empty(n + pad, dtype=dtype)  # not yet touched: no page is mapped
    addr = raw.data_ptr()
    start = -(-addr // _HUGE) * _HUGE  # first 2 MiB boundary inside the allocation
    offset = (start - addr) // item
    length = (n * item) // _HUGE * _HUGE
    if (start - addr) % item == 0 and length:
        _madvise_fn(ctypes.c_void_p(start), length, _MADV_HUGEPAGE)  # a hint: errors ignored
        return raw[offset : offset + n].view(shape)
    return raw[:n].view(shape)
