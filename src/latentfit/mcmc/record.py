"""The leapfrog's static graph recorded from one eager step, without torch's tracer.

A first run of ``compile=True`` needs the leapfrog step as a graph of aten operations, every
size fixed: for the child that compiles it (builds.py) and for the replay that samples
meanwhile (replay.py). ``make_fx`` writes such a graph, but it gives every node a fake value,
and its fake-tensor mode imports dynamo on first use: ~0.55 s of a first run before its first
transition (eight schools' whole first run took 3.0 s; the trace itself ~0.06 s). A dispatch
mode sees the very operations ``make_fx`` records on real tensors (those of the backward pass
included, where autograd launches them), so one eager step under it writes the same graph in
~10 ms: an input is a placeholder, a tensor the step holds (a density's data) is a constant of
the graph, every operation a node whose tensor arguments are the nodes that made them, and a
multi-output operation is followed by a ``getitem`` node per output, as ``make_fx`` writes.
Each node's ``meta["val"]`` is an empty tensor on the meta device, with the value's shape and
dtype, which is all the graph passes use (reciprocal.py).

The recording is refused (``record_graph`` returns None) where the step launches an operation
a fixed graph of its inputs cannot hold: one that returns a number (``item``, ``is_nonzero``:
a Python branch on a value), one whose output size depends on the values (``nonzero``,
``masked_select``, ``unique``, indexing by a boolean mask), or one that writes into a tensor in
place. The caller then traces the step with ``make_fx`` as before, whose fake tensors refuse
the same steps or record them faithfully. Written here because torch offers no tracer without
fake tensors; the graph is held to the eager step before it is used, as every compiled or
replayed part is (compiled.py).
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from latentfit.errors import LatentfitError
from latentfit.mcmc.compiled_cache import without_validation
from latentfit.mcmc.short_lse import ShortLogSumExp

__all__ = ["record_graph"]

# operations whose output sizes depend on the values: a fixed graph would replay wrong sizes
_VALUE_SIZED = frozenset(
    {"nonzero", "nonzero_static", "masked_select", "unique", "_unique", "_unique2",
     "unique_consecutive", "unique_dim", "repeat_interleave", "argwhere"}
)  # fmt: skip


def _is_mask(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


class _NotAGraph(LatentfitError):  # caught here, never raised to the user
    """The step did something a fixed graph of its inputs cannot hold."""


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # the mode runs eagerly, never under torch.compile: wrapping its handler for dynamo
        # would import dynamo, the cost this module exists to avoid
        return False

    def __init__(self, inputs: tuple[torch.Tensor, ...]):
        super().__init__()
        self.root = torch.nn.Module()
        self.graph = torch.fx.Graph()
        # a value's node by the value's id, with a weak reference that tells a live value from
        # a later one at a freed value's address: intermediates are not kept alive (a step over
        # a large data set would hold every one of them)
        self.nodes: dict[int, tuple[weakref.ref, torch.fx.Node]] = {}
        for i, x in enumerate(inputs):
            self._bind(x, self.graph.placeholder(f"arg{i}"))

    def _bind(self, value: torch.Tensor, node: torch.fx.Node) -> None:
        node.meta["val"] = torch.empty_like(value, device="meta")
        self.nodes[id(value)] = (weakref.ref(value), node)

    def _node(self, value):
        if not isinstance(value, torch.Tensor):
            return value
        ref, node = self.nodes.get(id(value), (None, None))
        if ref is None or ref() is not value:  # a tensor the step holds: a graph constant
            name = f"_tensor_constant{len(self.root._buffers)}"
            self.root.register_buffer(name, value.detach())
            node = self.graph.get_attr(name)
            self._bind(value, node)
        return node

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        schema, name = func._schema, func.__name__.split(".")[0]
        if (
            schema.is_mutable
            or name in _VALUE_SIZED
            or (name == "index" and any(_is_mask(i) for i in args[1]))  # x[mask]
            or any("Tensor" not in str(r.type) for r in schema.returns)
        ):
            raise _NotAGraph(str(func))
        out = func(*args, **kwargs)
        node = self.graph.call_function(func, *tree_map(self._node, (args, kwargs)))
        if isinstance(out, torch.Tensor):
            self._bind(out, node)
        else:  # a tuple or list of tensors: one getitem node per output
            for i, value in enumerate(out):
                if isinstance(value, torch.Tensor):
                    self._bind(value, self.graph.call_function(operator.getitem, (node, i)))
        return out


def record_graph(fn: Callable, example: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule | None:
    """``fn``, a function of the tensors ``example`` returning a tuple of tensors, as a graph
    of the aten operations one eager call on ``example`` ran (module docstring); None where
    that call did something a fixed graph cannot hold, or raised."""
    recorder = _Recorder(example)
    try:
        with without_validation(), ShortLogSumExp(), recorder:
            out = fn(*example)
    except Exception:  # _NotAGraph, or the step raised: make_fx's trace decides
        return None
    if not isinstance(out, tuple) or not all(isinstance(x, torch.Tensor) for x in out):
        return None
    recorder.graph.output(tuple(recorder._node(x) for x in out))
    return torch.fx.GraphModule(recorder.root, recorder.graph)
