"""A replayed graph's (…, points, components) tensors computed as (…, components, points).

A mixture's log-density holds its terms in a (chains, points, components) tensor: posteriordb's
gauss_mix computes ``(y - mu[:, None, :]) / sigma[:, None, :]`` over (4, 1000, 2), and
autograd's backward pass stacks the two components' gradients back into that shape. ATen runs
an elementwise operation as a loop whose innermost dimension is the output's last one, here
two elements long, broadcast against a (4, 1, 2) tensor: 9-13 µs for 8,000 doubles, against
~3 µs for the same operation over contiguous rows of 1,000. Inductor chooses its loops itself
(and short_lse.py helps it); the replay (replay.py) runs each operation as ATen does, so this
pass rewrites the graph it replays to hold each such tensor transposed, its small last
dimension moved before the long one, where every operation on it allows:

- an elementwise operation (tagged ``pointwise``) whose output is such a tensor runs on its
  inputs transposed the same way: a tensor already held so, a constant transposed once here,
  another input through a ``transpose`` view (a number or a 0-d tensor as it is, a vector
  ``(K,)`` as ``(K, 1)``);
- ``stack`` along the last dimension of tensors held as they are stacks along the one before;
- a sum, mean, maximum or minimum over some dimensions, ``unbind`` or ``select`` along either
  of the last two, of a tensor held transposed, runs over the corresponding dimension; its
  result is then held as it is (the reduced dimension gone) or transposed (``keepdim``);
- every other use of a tensor held transposed reads it through a ``transpose`` view, which
  gives the original values.

Only a tensor of three or more dimensions whose last is 2 to 32 long (``short_lse.SMALL``) and
whose one before is at least 64 long and four times the last is moved. Elementwise values do
not depend on the layout; a sum over the points adds them in a different order (ATen's
contiguous reductions use several accumulators), which changes the last bits: the rewritten
graph is held to the original's outputs on the example within the tolerance every replayed or
compiled part is (``compiled._close``), else the original runs. gauss_mix's replayed leapfrog
(best of 5 x 2,000 calls): 176-198 -> 131-140 µs a step at 4 chains, 1,100-1,160 -> 792 µs
at 32, 106-111 -> 93 µs at one; a 500 + 500 run at 32 chains 36.4 -> 27.4 s
(benchmarks/README.md).
"""

from __future__ import annotations

import copy

import torch

from latentfit.mcmc.short_lse import SMALL
from latentfit.mcmc.simplify import _kept, _pure, _values

__all__ = ["components_outward"]

_aten = torch.ops.aten

#: the shortest points dimension worth moving
MIN_POINTS = 64

#: reductions over a list of dimensions: ``op(x, dims, keepdim, ...)``
_REDUCTIONS = {
    _aten.sum.dim_IntList,
    _aten.mean.dim,
    _aten.amax.default,
    _aten.amin.default,
}
#: operations along one dimension: ``op(x, dim, ...)``, results held as they are
_ALONG = {_aten.unbind.int, _aten.select.int}


def _wide(value: object) -> bool:
    """A tensor worth holding transposed: (…, n, K), 2 <= K <= SMALL, n >= max(64, 4K)."""
    if not isinstance(value, torch.Tensor) or value.dim() < 3:
        return False
    n, k = value.shape[-2], value.shape[-1]
    return 2 <= k <= SMALL and n >= max(MIN_POINTS, 4 * k)


def _swap(dim: int, rank: int) -> int:
    """A dimension of the original tensor, as a dimension of the one held transposed."""
    dim = dim % rank
    return {rank - 1: rank - 2, rank - 2: rank - 1}.get(dim, dim)


class _Pass:
    def __init__(self, gm: torch.fx.GraphModule, env: dict):
        self.gm, self.g, self.env = gm, gm.graph, env
        self.held: dict[torch.fx.Node, torch.fx.Node] = {}  # node -> its transposed twin
        self.views: dict[torch.fx.Node, torch.fx.Node] = {}  # node -> its transposed view
        self.constants = 0

    def _constant(self, value: torch.Tensor) -> torch.fx.Node:
        name = f"_outward_{self.constants}"
        self.constants += 1
        self.gm.register_buffer(name, value.contiguous())
        return self.g.get_attr(name)

    def operand(self, a: object) -> object:
        """``a`` as an operand of an elementwise operation computed transposed."""
        if not isinstance(a, torch.fx.Node):
            return a
        if a in self.held:
            return self.held[a]
        value = self.env.get(a)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return a
        if a not in self.views:
            if a.op == "get_attr":  # a constant: transposed once, here
                moved = value.transpose(-1, -2) if value.dim() >= 2 else value.unsqueeze(-1)
                self.views[a] = self._constant(moved)
            elif value.dim() >= 2:
                self.views[a] = self.g.call_function(_aten.transpose.int, (a, -1, -2))
            else:
                self.views[a] = self.g.call_function(_aten.unsqueeze.default, (a, -1))
        return self.views[a]

    def rewrite(self, node: torch.fx.Node) -> None:
        """``node`` computed on transposed tensors where it can be (module docstring)."""
        op, value = node.target, self.env.get(node)
        if not isinstance(op, torch._ops.OpOverload) or not _pure(op):
            return
        if torch.Tag.pointwise in op.tags and _wide(value):
            with self.g.inserting_before(node):
                args = tuple(self.operand(a) for a in node.args)
                kwargs = {k: self.operand(v) for k, v in node.kwargs.items()}
                self.held[node] = self.g.call_function(op, args, kwargs)
        elif op is _aten.stack.default and _wide(value) and not node.kwargs:
            tensors, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
            if dim % value.dim() == value.dim() - 1 and not any(t in self.held for t in tensors):
                with self.g.inserting_before(node):
                    self.held[node] = self.g.call_function(op, (tensors, value.dim() - 2))
        elif op in _REDUCTIONS or op in _ALONG:
            self._reduce(node, value)

    def _reduce(self, node: torch.fx.Node, value: object) -> None:
        x = node.args[0]
        if x not in self.held or node.kwargs:
            return
        rank = self.env[x].dim()
        last = {rank - 2, rank - 1}
        if node.target in _ALONG:
            if node.args[1] % rank not in last:
                return
            args = (self.held[x], _swap(node.args[1], rank), *node.args[2:])
            kept = False
        else:
            dims = node.args[1] if len(node.args) > 1 else None
            if not dims:  # over every dimension: the same reduction of the transposed tensor
                dims, kept = list(range(rank)), False
            else:
                dims = [d % rank for d in dims]
                keepdim = len(node.args) > 2 and bool(node.args[2])
                kept = keepdim or not last & set(dims)
            args = (self.held[x], [_swap(d, rank) for d in dims], *node.args[2:])
        with self.g.inserting_before(node):
            new = self.g.call_function(node.target, args)
        if kept:  # (…, n, K) reduced over leading dimensions, or kept: still transposed
            self.held[node] = new
        else:
            node.replace_all_uses_with(new)

    def finish(self) -> None:
        """Every remaining use of a node held transposed reads its twin through a view."""
        for node, twin in self.held.items():
            if node.users:
                with self.g.inserting_after(twin):
                    back = self.g.call_function(_aten.transpose.int, (twin, -1, -2))
                node.replace_all_uses_with(back)


def components_outward(graph: torch.fx.GraphModule, example: tuple) -> torch.fx.GraphModule:
    """A copy of ``graph`` (static sizes, those of ``example``) computing its
    (…, points, components) tensors as (…, components, points) (module docstring); ``graph``
    itself where it holds none, or where the copy's outputs on ``example`` differ."""
    env = _values(graph, example)
    if not any(_wide(v) for v in env.values()):
        return graph
    gm = copy.deepcopy(graph)
    by_name = {n.name: n for n in graph.graph.nodes}
    work = _Pass(gm, {n: env[by_name[n.name]] for n in gm.graph.nodes if n.name in by_name})
    for node in list(gm.graph.nodes):
        if node.op == "call_function":
            work.rewrite(node)
    if not work.held:
        return graph
    work.finish()
    gm.graph.eliminate_dead_code(is_impure_node=_kept)
    gm.graph.lint()
    gm.recompile()
    return gm if _close_outputs(gm, env, graph, example) else graph


def _close_outputs(gm: torch.fx.GraphModule, env: dict, graph, example: tuple) -> bool:
    from latentfit.mcmc.compiled import _close

    leaves = torch.utils._pytree.tree_leaves
    want = leaves(env[graph.graph.output_node()])
    with torch.no_grad():
        got = leaves(gm(*example))
    return len(got) == len(want) and all(
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and (_close(a, b) if a.is_floating_point() else torch.equal(a, b))
        for a, b in zip(got, want, strict=True)
    )
