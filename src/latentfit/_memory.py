"""What an allocation may use: the memory still available, and the checks that refuse a
request sized by one argument (a count, a width) before anything is allocated.

Every size latentfit allocates follows from validated input; where one value sets it (the
draws of ``sample(n_samples)``, a network's layers, a covariance over many columns), the
request is compared with the memory still available and refused with
:class:`~latentfit.errors.ResourceLimitError`, naming what it is for, the bytes and what to
try, so that a bad value is named instead of exhausting the machine.
"""

from __future__ import annotations

import math
import numbers
import os

import torch

from latentfit.errors import ParameterError, ResourceLimitError

#: The arithmetic one call may take, in multiply-adds, before a count that sets it is refused:
#: about a day of one CPU core (Burda et al.'s 784-200-200-50 network ran 1.3e10 multiply-adds
#: a second on one core), so that a count off by digits is named instead of running for days.
MAX_WORK = 10**15

__all__ = [
    "MAX_WORK",
    "allowed_work",
    "available_memory",
    "check_allocation",
    "check_module_memory",
    "check_sample_count",
    "fmt_bytes",
]


def allowed_work(max_work) -> str:
    """How a refusal names the cap ``max_work``: with its meaning where it is the default."""
    day = " (about a day of one CPU core)" if max_work == MAX_WORK else ""
    return f"the {max_work:.2g} allowed{day}"


def check_max_work(max_work) -> int | None:
    """A ``max_work=`` (a sampler's, a flow's or a DDPM's ``sample``): None (no limit) for
    None or ``math.inf``, else the number of multiply-adds as an int >= 1 (``1e16`` too);
    ParameterError naming ``max_work`` otherwise (a flow's and a DDPM's ``sample`` raised
    Python's TypeError from a comparison with 'zzz')."""
    if max_work is None or (isinstance(max_work, numbers.Real) and max_work == math.inf):
        return None
    if isinstance(max_work, bool) or not isinstance(max_work, numbers.Real) or not max_work >= 1:
        raise ParameterError(
            f"max_work must be a number of multiply-adds >= 1 (such as 1e16), or None or "
            f"math.inf for no limit, got {max_work!r}"
        )
    return int(max_work)


def available_memory(device=None) -> int | None:
    """Bytes that can still be allocated on ``device`` (None: the CPU): MemAvailable of
    /proc/meminfo, else free pages by ``os.sysconf``; a CUDA device's free memory. None when
    the platform does not say."""
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    # /proc/meminfo is the host's inside a container, and knows nothing of ulimit -v: what
    # this process may still take is also bounded by its cgroup and its address-space limit
    limits = [v for v in (_cgroup_room(), _address_space_room()) if v is not None]
    if limits:
        found = min(limits) if found is None else min(found, *limits)
    return None if found is None else max(found, 0)


def _cgroup_room() -> int | None:
    """memory.max − memory.current of this process's cgroup (v2), else None."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def _address_space_room() -> int | None:
    """The soft RLIMIT_AS (ulimit -v) less this process's virtual size, else None."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return soft - int(line.split()[1]) * 1024
        return soft
    except (ImportError, OSError, ValueError, IndexError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"  # pragma: no cover


def check_allocation(n_bytes, what: str, *, device=None, hint: str = "") -> int:
    """Refuse up front, with :class:`~latentfit.errors.ResourceLimitError`, a request whose
    ``n_bytes`` exceed the memory still available on ``device`` (the CPU by default), so that
    a bad argument or code is named instead of exhausting the machine. ``what`` says what the
    memory is for; ``hint`` what to try. Returns ``n_bytes`` as an int."""
    n_bytes = int(n_bytes)
    free = available_memory(device)
    if free is not None and n_bytes > free:
        raise ResourceLimitError(
            f"{what} would need {n_bytes:,} bytes ({fmt_bytes(n_bytes)}) but only "
            f"{free:,} bytes ({fmt_bytes(free)}) are available" + (f"; {hint}" if hint else "")
        )
    return n_bytes


def check_module_memory(
    build,
    what: str,
    *,
    layers: int = 1,
    depth: int = 1,
    device=None,
    dtype=torch.float32,
    copies: int = 4,
    hint: str = "",
) -> None:
    """Refuse a network whose weights cannot be held while it trains, before any is allocated.

    ``build(layers, depth)`` constructs a network of ``layers`` blocks of ``depth`` hidden
    layers each. It is built on torch's meta device (shapes only) at 1-2 blocks and 1-2 hidden
    layers, and its size at ``layers`` x ``depth`` extrapolated as base + layers (u + v depth),
    which holds for stacks of identical blocks, so that a count off by digits costs no time
    either. Parameters are counted ``copies`` times (the weights, their gradients and Adam's two
    moments), buffers once. A network whose tensors torch cannot even size (a width off by
    digits, 10**11: the storage size overflows) is refused; one that cannot be built on the
    meta device for another reason is not checked."""

    def size(n_layers: int, n_depth: int) -> tuple[int, int]:
        with torch.device("meta"):
            module = build(n_layers, n_depth)
        return (
            sum(p.numel() for p in module.parameters()),
            sum(b.numel() for b in module.buffers()),
        )

    try:
        c11, c21, c12 = size(1, 1), size(2, 1), size(1, 2)
    except RuntimeError as err:
        if "overflow" not in str(err):  # construction that reads values: left to the build
            return
        raise ResourceLimitError(
            f"{what} would need more than {2**63:,} bytes: torch cannot size its tensors "
            f"({err})" + (f"; {hint}" if hint else "")
        ) from None
    except Exception:  # construction that reads values (not shapes): left to the build itself
        return
    total = []
    for a11, a21, a12 in zip(c11, c21, c12, strict=True):
        v = a12 - a11
        u = (a21 - a11) - v
        total.append(max(0, (2 * a11 - a21) + layers * (u + v * depth)))
    itemsize = torch.empty((), dtype=dtype).element_size()
    check_allocation((copies * total[0] + total[1]) * itemsize, what, device=device, hint=hint)


def check_sample_count(n_samples, per_sample, *, device=None, name: str = "n_samples") -> int:
    """``n_samples`` as an int >= 1 for a ``sample`` method, refused up front
    (:class:`~latentfit.errors.ResourceLimitError`) where its draws would exceed the memory
    available: ``per_sample`` numbers a draw and its label or state, counted three times (the
    draws, their sampling noise, the copy the result is returned in), 8 bytes each."""
    from latentfit._validation import check_positive_int  # _validation re-exports this module

    n = check_positive_int(n_samples, name)
    per = max(1, int(per_sample)) + 1
    check_allocation(
        3 * 8 * n * per,
        f"{name}={n:,} draws of {per - 1} values",
        device=device,
        hint=f"draw in batches of a smaller {name}",
    )
    return n
