"""Catch on the CPU the code that would mix devices on a GPU.

On a machine without CUDA every tensor lives on the CPU, so code that builds a tensor with
``torch.eye(d)`` (no ``device=``) and adds it to the model's parameters passes every CPU test
and fails on the first CUDA fit with torch's "Expected all tensors to be on the same device".
``DeviceTags`` is a ``TorchFunctionMode`` that follows where each tensor *would* live:

- "device": made by a factory given ``device=`` (``torch.zeros(n, device=x.device)``), moved by
  ``.to(device)``/``.to(other)``/``.cuda()``, or computed from such a tensor;
- "host": made by a factory with no ``device=`` (``torch.eye(d)``, ``torch.tensor([...])``,
  ``torch.from_numpy``), moved by ``.cpu()``, or computed from host tensors alone;
- neither: tensors it never saw made (a test's inputs made before it started, vmap's wrappers).

An operation that takes a "device" and a "host" tensor, both with at least one dimension (a
0-dim CPU tensor mixes with CUDA tensors in torch), is recorded with its Python stack. A test
runs the model with ``device="cpu"`` inside the mode and asserts that nothing was recorded.
"""

from __future__ import annotations

import contextlib
import os
import traceback
import weakref

import torch
from torch.overrides import TorchFunctionMode

import latentfit

FACTORIES = {
    "eye", "zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "tensor",
    "as_tensor", "randn", "rand", "randint", "randperm", "normal", "tril_indices",
    "triu_indices", "scalar_tensor", "from_numpy", "asarray", "empty_strided",
}  # fmt: skip
#: functions that take tensors of several devices by design
MOVES = {"copy_", "to", "cpu", "cuda", "numpy", "item", "tolist", "__getitem__", "index_select"}


class DeviceTags(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.tags: dict[int, str] = {}  # id(tensor) -> "device" | "host", while it lives
        self.origin: dict[int, str] = {}  # id(host tensor) -> where its host ancestor was made
        # id(torch.device read off a tagged tensor, x.device) -> (that object, its tag): the
        # object is kept so that its id stays its own; torch.zeros(n, device=x.device) then
        # lives where x lives
        self.devices: dict[int, tuple[torch.device, str]] = {}
        self.paused = False
        self.mixed: list[str] = []  # one line per place in latentfit that mixed them
        self.sites: dict[str, str] = {}  # that place -> the stack that reached it

    def _tag(self, out, tag, origin=None):
        if tag is None:  # made where an untagged tensor lives: untagged
            return
        for t in _tensors(out):
            if id(t) not in self.tags:
                weakref.finalize(t, self._forget, id(t))
            self.tags[id(t)] = tag
            if origin:
                self.origin[id(t)] = origin

    def _where(self, device) -> str | None:
        """The tag of a tensor made with ``device=device``: where the tensor that ``device`` was
        read from lives (None: it was untagged); the name "cpu" is the host, unless it is the
        test's (``Simulated``); any other device (a model's, resolved) the device."""
        if isinstance(device, str):  # the test's device; a "cpu" of latentfit's own: the host
            return "device" if isinstance(device, Simulated) or device != "cpu" else "host"
        known = self.devices.get(id(device))
        return known[1] if known and known[0] is device else "device"

    @staticmethod
    def _made(name: str) -> str:
        return f"{name} at {_site(traceback.extract_stack(limit=12)[:-1])}"

    def _forget(self, key):
        self.tags.pop(key, None)
        self.origin.pop(key, None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        out = func(*args, **kwargs)
        if self.paused:
            return out
        if name == "_has_compatible_shallow_copy_type":  # nn.Module.to: param.data = moved
            self._tag(args[0], self.tags.get(id(args[1])), self.origin.get(id(args[1])))
            return out
        if name == "__setitem__":
            # x[index] = value: the index may stay on the host; so may a value put in by basic
            # indexing (a copy_, which crosses devices), not one put in by advanced indexing
            inputs = [] if not _tensors(args[1]) else _tensors((args[0], args[2:]))
        else:
            inputs = _tensors((args, kwargs))
        on_device = [t for t in inputs if self.tags.get(id(t)) == "device"]
        on_host = [t for t in inputs if self.tags.get(id(t)) == "host"]
        if isinstance(out, torch.device):  # x.device: remember where x lives
            if args and isinstance(args[0], torch.Tensor):
                self.devices[id(out)] = (out, self.tags.get(id(args[0])))
            return out
        if name in FACTORIES and not inputs:  # torch.normal(mean, std) follows its inputs
            if kwargs.get("device") is not None:
                self._tag(out, self._where(kwargs["device"]), self._made(name))
            else:
                self._tag(out, "host", self._made(name))
        elif name in ("to", "cuda", "cpu") and (name != "to" or _moves(args[1:], kwargs)):
            if out is args[0]:  # already there on the CPU: on a GPU, a copy on the other side
                out = out.clone()
            target = [t for t in _tensors(args[1:]) + _tensors(kwargs)]
            if name == "cpu" or (target and self.tags.get(id(target[0])) == "host"):
                self._tag(out, "host", self._made(name))
            elif not target:
                dev = kwargs.get("device", next((a for a in args[1:] if _is_device(a)), None))
                self._tag(out, self._where(dev), self._made(name))
            else:
                self._tag(out, "device")
        elif on_device:
            self._tag(out, "device")
        elif on_host:
            self._tag(out, "host", self.origin.get(id(on_host[0])))
        made = [  # host tensors latentfit made (a test's own host tensors are references)
            self.origin.get(id(t), "")
            for t in on_host
            if t.dim() > 0 and " at latentfit/" in self.origin.get(id(t), "")
        ]
        if name not in MOVES and made and any(t.dim() > 0 for t in on_device):
            stack = traceback.extract_stack(limit=12)[:-1]  # without this frame
            key = _site(traceback.extract_stack(limit=12))
            if key not in self.sites:
                self.sites[key] = "".join(traceback.format_list(stack))
                self.mixed.append(
                    f"{name} at {key}: a device tensor with a host tensor ({made[0]})"
                )
        return out

    def __enter__(self):
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def report(self) -> str:
        """Each place that mixed the two, with the stack that first reached it."""
        return "\n".join(
            f"{line}\n{self.sites[line.split(' at ', 1)[1].split(': ', 1)[0]]}"
            for line in self.mixed
        )


class Simulated(str):
    """The device name a test passes (``"cpu"``, equal to it): the device it simulates,
    where a plain ``"cpu"`` written in latentfit means the host."""


_ACTIVE: list[DeviceTags] = []


@contextlib.contextmanager
def paused():
    """A test's own reference computation (on host tensors, through library code that cannot
    tell them from the device's) runs untagged: ``with paused(): ref = K.posterior(ll, ...)``."""
    was = [m.paused for m in _ACTIVE]
    for m in _ACTIVE:
        m.paused = True
    try:
        yield
    finally:
        for m, p in zip(_ACTIVE, was, strict=True):
            m.paused = p


#: latentfit's own source folder: a frame there is the library's, any other (tests, torch) not
LIBRARY = os.path.dirname(latentfit.__file__) + os.sep


def _site(stack) -> str:
    """``latentfit/<file>:<line>`` of the innermost frame in latentfit, else the path and line
    of the innermost frame elsewhere (a test's), in a stack."""
    frames = [f for f in stack[:-1] if not f.filename.endswith("device_tags.py")]
    for f in reversed(frames):
        if f.filename.startswith(LIBRARY):
            return f"latentfit/{f.filename[len(LIBRARY) :]}:{f.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}"


def _is_device(a) -> bool:
    return isinstance(a, (torch.device, str))


def _moves(args, kwargs) -> bool:
    """Whether ``.to(*args, **kwargs)`` names a device (a device, a string, a tensor)."""
    if kwargs.get("device") is not None:
        return True
    return any(_is_device(a) or isinstance(a, torch.Tensor) for a in args)


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []
