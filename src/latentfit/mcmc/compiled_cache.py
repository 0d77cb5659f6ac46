"""Compiled graphs kept on disk: a second run of the same model loads its compiled code in
milliseconds instead of compiling it again.

A compiled graph is an AOTInductor package (``torch._inductor.aoti_compile_and_package``): the
graph exported with ``torch.export`` and compiled ahead of time into a shared library, which
a C++ runner (``torch._C._aoti``) loads and calls. Loading needs neither dynamo nor inductor,
whose imports alone take ~3 s, and a call costs ~5 µs beyond its arithmetic instead of ~15 µs
through inductor's Python wrapper. Compiling a package takes ~12 s on a CPU, once per model,
number of chains and dtype; NUTS needs two (the leapfrog and the tree bookkeeping), 25-35 s of
a first run of ``compile=True``.

The key of a package is a fingerprint of the computation, not of the Python code that produced
it: the function runs once eagerly on the example under a dispatch mode that records every
aten operation it launches (the backward pass included), each operation's non-tensor
arguments, which earlier result each tensor argument is, and the bytes of every tensor the
function holds (the data a log-density closes over). The same operations on the same data and
shapes give the same key; a different prior, data set, number of chains or dtype gives a new
one. The key also names the torch version, the device and the CPU's vector instruction set,
which decide the generated code. A package found on disk is still checked against the eager
function before it is used (compiled.py), and replaced if it disagrees.

Written by hand rather than taken from inductor's own cache because that cache keys on a
graph traced through dynamo and inductor, whose imports alone cost the ~3 s a warm run is
trying to save.

Where: ``$LATENTFIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/latentfit``, else
``~/.cache/latentfit``; a ``compiled`` folder there. A package is written to a temporary file
and renamed into place, so a crash, or two processes compiling the same graph, never leave a
half-written one. Past 2 GiB the least recently used packages are removed; deleting the folder
only costs the next run its compiling.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = [
    "build",
    "cache_dir",
    "discard",
    "exists",
    "fingerprint",
    "load",
    "narrow_vectors",
    "prune",
    "without_validation",
]

#: bumped when what a package holds, how it is called, or what its key covers changes
FORMAT = 4

#: the folder's size beyond which the least recently used packages are removed (a package is
#: 1-5 MB, more where the density holds a large data set)
LIMIT_BYTES = 2 * 1024**3


def cache_dir() -> Path:
    """The folder that holds compiled packages (created when first written to)."""
    root = os.environ.get("LATENTFIT_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = Path(xdg) / "latentfit" if xdg else Path.home() / ".cache" / "latentfit"
    return Path(root) / "compiled"


@contextlib.contextmanager
def without_validation():
    """``torch.distributions``' argument checks off: each is a Python branch on a value (raise
    if outside the support), which no graph can hold; without them a value outside the support
    gives a NaN or infinite log-density, which the sampler rejects as it rejects a raise."""
    from torch.distributions import Distribution

    validate = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(validate)


class _Recorder(TorchDispatchMode):
    """Hashes every aten operation run under it: its name, its arguments (a tensor argument as
    the index of the input or earlier result it is; a tensor seen for the first time, which
    the function holds, by its metadata and bytes) and keyword arguments."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # the mode runs eagerly, never under torch.compile: wrapping its handler for dynamo
        # would import dynamo (~1 s), the cost this module exists to avoid
        return False

    def __init__(self, inputs: tuple[torch.Tensor, ...]):
        super().__init__()
        self.index = {id(x): i for i, x in enumerate(inputs)}
        self.alive = list(inputs)  # held, so that no id is reused while recording
        self.hash = hashlib.sha256()
        for x in inputs:  # a package is compiled for its inputs' sizes, layouts and dtypes
            self.hash.update(f"in{_meta(x)}".encode())

    def _name(self, value):
        if not isinstance(value, torch.Tensor):
            return value
        i = self.index.get(id(value))
        if i is None:  # a tensor the function holds: its values are part of the computation
            i = self._keep(value)
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            self.hash.update(f"c{i}{_meta(value)}".encode())
            self.hash.update(data.numpy().tobytes())
        return f"%{i}"

    def _keep(self, value: torch.Tensor) -> int:
        self.index[id(value)] = len(self.alive)
        self.alive.append(value)
        return len(self.alive) - 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.hash.update(f"{func}{tree_map(self._name, (args, kwargs))!r};".encode())
        out = func(*args, **kwargs)
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._keep(value)
        return out


def narrow_vectors(device: torch.device) -> dict:
    """Inductor settings for a graph whose loops are short (the tree bookkeeping's, over the
    parameters and the leaves): on a CPU with AVX-512, code for 256-bit vectors (AVX2).

    Inductor sizes its vectors for 16 floats whatever the dtype, so with AVX-512 a float64
    loop works on two 512-bit registers at a time. A loop over 10 parameters then fills 10 of
    16 lanes, and each of its sums ends in a reduction across the lanes through the stack,
    which costs more than the loop (about three quarters of the bookkeeping's time at 32
    chains, by ``perf``). With 256-bit vectors the bookkeeping runs 1.7-2x faster (32 chains,
    10 parameters: 49 µs against 70-78 µs at 2 leaves, 279 µs against 498-520 µs at 32). The
    leapfrog keeps inductor's default: a density over a data set has long loops, where the
    wider vectors win (gauss_mix's run at 32 chains took 8% longer with both parts in 256-bit
    vectors)."""
    if device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return {"cpp.simdlen": 256}
    return {}


def _meta(x: torch.Tensor) -> str:
    return f"{tuple(x.shape)}{x.stride()}{x.dtype}{x.device.type}"


def fingerprint(fn: Callable, example: tuple[torch.Tensor, ...], tag: str) -> str | None:
    """The key of ``fn``'s computation on ``example`` (module docstring), or None where it
    cannot be recorded (the function raises there, or holds a tensor without bytes)."""
    recorder = _Recorder(example)
    try:
        with without_validation(), recorder:
            fn(*example)
    except Exception:  # no key, no cache: the caller compiles (or falls back) as it would
        return None
    device = example[0].device
    isa = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else ""
    where = f"{FORMAT}|{tag}|{torch.__version__}|{device.type}|{isa}|"
    return hashlib.sha256(where.encode() + recorder.hash.digest()).hexdigest()[:40]


def _path(key: str) -> Path:
    return cache_dir() / f"{key}.pt2"


def exists(key: str) -> bool:
    """Whether a package is stored under ``key``."""
    return _path(key).is_file()


def load(key: str, device: torch.device) -> Callable | None:
    """The package of ``key`` as a function of its input tensors returning its output tensors,
    or None when there is none (or it cannot be loaded here)."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        runner = _runner(path, device)
    except Exception:  # unreadable or built by another torch: compiled again and replaced
        return None
    with contextlib.suppress(OSError):  # marks it used, for pruning (a read-only cache is fine)
        os.utime(path)
    return runner


def _runner(path: Path, device: torch.device) -> Callable:
    index = -1 if device.type == "cpu" else (device.index or torch.cuda.current_device())
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)
    except (AttributeError, TypeError):  # another binding in this torch: the public loader
        from torch._inductor import aoti_load_package

        package = aoti_load_package(str(path), device_index=index)
        return lambda *xs: package(*xs)
    return lambda *xs: loader.run(list(xs))


def build(
    key: str,
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    dynamic: dict[int, int] | None = None,
    options: dict | None = None,
) -> Callable:
    """``module`` exported on ``example`` (with ``dynamic``, {input index: dimension}, those
    dimensions left free), compiled ahead of time with inductor's settings ``options`` added
    (``narrow_vectors``), written atomically under ``key``, loaded."""
    from torch._inductor import aoti_compile_and_package

    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)  # where it will write, before the work
    shapes = None
    if dynamic is not None:
        auto = torch.export.Dim.AUTO
        free = tuple({dynamic[i]: auto} if i in dynamic else None for i in range(len(example)))
        shapes = (free,)  # the module takes its inputs as *args
    with without_validation():
        program = torch.export.export(module, tuple(example), dynamic_shapes=shapes, strict=False)
    partial = path.with_name(f"{key}.{os.getpid()}.partial.pt2")
    try:
        # a 0-dim constant (a prior's scale) kept as a tensor: inlined as a number, some
        # lowerings of torch 2.13 (pow of two numbers) fail on it
        aoti_compile_and_package(
            program,
            package_path=str(partial),
            inductor_configs={"always_keep_tensor_constants": True, **(options or {})},
        )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    prune(keep=path)
    return _runner(path, example[0].device)


def prune(limit: int = LIMIT_BYTES, keep: Path | None = None) -> None:
    """Remove the least recently used packages until the folder holds at most ``limit``
    bytes (never ``keep``, the package just written)."""
    with contextlib.suppress(OSError):  # another process pruning at once: its removals win
        packages = sorted(cache_dir().glob("*.pt2"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in packages)
        for f in packages:
            if total <= limit:
                break
            if f != keep:
                total -= f.stat().st_size
                f.unlink(missing_ok=True)


def discard(key: str) -> None:
    """Remove the package of ``key`` (one that disagreed with the eager function)."""
    _path(key).unlink(missing_ok=True)
