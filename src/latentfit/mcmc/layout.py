"""A replayed graph's (…, points, components[, coordinates]) tensors computed with the points
dimension last.

A mixture's log-density holds its terms in a (chains, points, components) tensor: posteriordb's
gauss_mix computes ``(y - mu[:, None, :]) / sigma[:, None, :]`` over (4, 1000, 2), and
autograd's backward pass stacks the two components' gradients back into that shape; a
full-covariance mixture (``mcmc.gibbs.gmm_log_density``) whitens (chains, points, components,
coordinates) tensors. ATen runs an elementwise operation as a loop whose innermost dimension
is the output's last one, here two (or four) elements long, broadcast against a (4, 1, 2)
tensor: 9-13 µs for 8,000 doubles, against ~3 µs for the same operation over contiguous rows of
1,000; the difference of (272, 1, 2) points and (4, 1, 2, 2) means took 24 µs against 1.6, a
sum over the last two of 2 x 2, 28 µs against 3.1. Inductor chooses its loops itself (and
short_lse.py helps it); the replay (replay.py) runs each operation as ATen does, so this pass
rewrites the graph it replays to hold each such tensor with its points dimension moved last
(a ``permute``), where every operation on it allows:

- an elementwise operation (tagged ``pointwise``) whose output is such a tensor runs on its
  inputs moved the same way: a tensor already held so, a constant moved once here, another
  input through a ``permute`` view (a number or a 0-d tensor as it is, one that lies within
  the trailing dimensions with a 1 added for the points);
- ``stack`` after the points dimension of tensors held moved (or whose points are last) stacks
  them one place earlier;
- a sum, mean, maximum or minimum over some dimensions, ``unbind`` or ``select`` along one, of
  a tensor held moved, runs over the corresponding dimensions; its result is held in its own
  order where the points are gone or nothing follows them, else moved;
- every other use of a tensor held moved reads it through a ``permute`` view, which gives the
  original values.

Only a tensor of three or more dimensions is moved, whose points dimension (at least 64 long)
is followed by dimensions of 2 to 32 elements in all (``short_lse.SMALL``), at most a quarter of
the points. Elementwise values do not depend on the layout; a sum over the points adds them in
a different order (ATen's contiguous reductions use several accumulators), which changes the
last bits: the rewritten graph is held to the original's outputs on the example within the
tolerance every replayed or compiled part is (``compiled._close``), else the original runs.
Replayed leapfrog steps (best of 5 x 2,000 calls): gauss_mix 176-198 -> 131-140 µs at 4
chains, 1,100-1,160 -> 792 µs at 32, 106-111 -> 93 µs at one; the tour's full-covariance
mixture of Old Faithful (272 points, 4 chains) 218 -> 132 µs (benchmarks/README.md).
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
#: operations along one dimension: ``op(x, dim, ...)``
_ALONG = {_aten.unbind.int, _aten.select.int}


def _trailing(value: object) -> int:
    """How many small dimensions follow the points dimension of a tensor worth moving (0: none
    such): rank >= 3, a dimension of at least max(64, 4 m) points followed by dimensions of
    m <= SMALL elements in all (the components, and a Gaussian's coordinates)."""
    if not isinstance(value, torch.Tensor) or value.dim() < 3:
        return 0
    m = 1
    for j, size in enumerate(reversed(value.shape[1:])):
        if size >= max(MIN_POINTS, 4 * m) and j > 0 and m >= 2:
            return j
        m *= size
        if m > SMALL:
            return 0
    return 0


def _order(rank: int, j: int) -> list[int]:
    """The permutation of a tensor of ``rank`` dimensions that moves its points dimension, the
    one with ``j`` dimensions after it, to the last place."""
    at = rank - 1 - j
    return [*range(at), *range(at + 1, rank), at]


def _inverse(order: list[int]) -> list[int]:
    back = [0] * len(order)
    for i, d in enumerate(order):
        back[d] = i
    return back


class _Pass:
    def __init__(self, gm: torch.fx.GraphModule, env: dict):
        self.gm, self.g, self.env = gm, gm.graph, env
        #: node -> (the node holding its values with the points dimension last, j)
        self.held: dict[torch.fx.Node, tuple[torch.fx.Node, int]] = {}
        self.views: dict[tuple, torch.fx.Node] = {}  # (node, j) -> its moved view or constant
        self.backs: dict[torch.fx.Node, torch.fx.Node] = {}  # node -> its original-order view
        self.constants = 0

    def _constant(self, value: torch.Tensor) -> torch.fx.Node:
        name = f"_outward_{self.constants}"
        self.constants += 1
        self.gm.register_buffer(name, value.contiguous())
        return self.g.get_attr(name)

    def _back(self, a: torch.fx.Node) -> torch.fx.Node:
        """``a``'s values in their own order, read from the node holding them moved."""
        if a not in self.backs:
            twin, j = self.held[a]
            rank = self.env[a].dim()
            with self.g.inserting_after(twin):
                self.backs[a] = self.g.call_function(
                    _aten.permute.default, (twin, _inverse(_order(rank, j)))
                )
        return self.backs[a]

    def operand(self, a: object, j: int) -> object:
        """``a`` as an operand of an elementwise operation whose output is computed with the
        points dimension (``j`` from the last) moved last."""
        if not isinstance(a, torch.fx.Node):
            return a
        if a in self.held and self.held[a][1] == j:
            return self.held[a][0]
        value = self.env.get(a)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return a
        if (a, j) not in self.views:
            source = self._back(a) if a in self.held else a
            if value.dim() > j:  # it has the points dimension (or a 1 there): moved last
                op, arg = _aten.permute.default, _order(value.dim(), j)
                moved = value.permute(arg)
            else:  # it lies within the trailing dimensions: a 1 for the points after them
                op, arg = _aten.unsqueeze.default, -1
                moved = value.unsqueeze(-1)
            if a.op == "get_attr":  # a constant: moved once, here
                self.views[(a, j)] = self._constant(moved)
            else:
                self.views[(a, j)] = self.g.call_function(op, (source, arg))
        return self.views[(a, j)]

    def rewrite(self, node: torch.fx.Node) -> None:
        """``node`` computed with the points dimension last where it can be (module
        docstring)."""
        op, value = node.target, self.env.get(node)
        if not isinstance(op, torch._ops.OpOverload) or not _pure(op):
            return
        j = _trailing(value)
        if torch.Tag.pointwise in op.tags and j:
            with self.g.inserting_before(node):
                args = tuple(self.operand(a, j) for a in node.args)
                kwargs = {k: self.operand(v, j) for k, v in node.kwargs.items()}
                self.held[node] = (self.g.call_function(op, args, kwargs), j)
        elif op is _aten.stack.default and j and not node.kwargs:
            self._stack(node, value, j)
        elif op in _REDUCTIONS or op in _ALONG:
            self._reduce(node)

    def _stack(self, node: torch.fx.Node, value: torch.Tensor, j: int) -> None:
        """``stack`` of tensors in their own order, or held with the points dimension last."""
        tensors, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
        rank = value.dim()
        at, dim = rank - 1 - j, dim % rank
        if dim == at:
            return  # the stacked dimension is the long one
        inner = j - 1 if dim > at else j  # the inputs' small dimensions after the points
        moved = []
        with self.g.inserting_before(node):
            for t in tensors:
                if t in self.held and self.held[t][1] == inner:
                    moved.append(self.held[t][0])
                elif inner == 0 and t not in self.held:
                    moved.append(t)  # its points dimension is its last already
                else:
                    return
            self.held[node] = (self.g.call_function(node.target, (moved, dim - (dim > at))), j)

    def _reduce(self, node: torch.fx.Node) -> None:
        x = node.args[0]
        if x not in self.held or node.kwargs:
            return
        twin, j = self.held[x]
        rank = self.env[x].dim()
        at = rank - 1 - j
        where = _inverse(_order(rank, j))  # a dimension's place once the points are last
        if node.target in _ALONG:
            dims, kept = [node.args[1] % rank], False
            args = (twin, where[dims[0]], *node.args[2:])
        else:
            given = node.args[1] if len(node.args) > 1 else None
            dims = [d % rank for d in given] if given else list(range(rank))
            kept = len(node.args) > 2 and bool(node.args[2])
            args = (twin, [where[d] for d in dims], *node.args[2:])
        with self.g.inserting_before(node):
            new = self.g.call_function(node.target, args)
        if at in dims and not kept:  # the points are gone: the rest in their own order
            node.replace_all_uses_with(new)
            return
        left = j if kept else sum(d > at for d in range(rank) if d not in dims)
        if left == 0:  # nothing follows the points any more: its own order
            node.replace_all_uses_with(new)
        elif node.target is _aten.unbind.int:
            return  # a list of tensors each held moved: not written (the graph's own runs)
        else:
            self.held[node] = (new, left)

    def finish(self) -> None:
        """Every remaining use of a node held moved reads it through a view in its own order."""
        for node in list(self.held):
            if node.users:
                node.replace_all_uses_with(self._back(node))


def components_outward(graph: torch.fx.GraphModule, example: tuple) -> torch.fx.GraphModule:
    """A copy of ``graph`` (static sizes, those of ``example``) computing its
    (…, points, components) tensors with the points dimension last (module docstring);
    ``graph`` itself where it holds none, or where the copy's outputs on ``example`` differ."""
    env = _values(graph, example)
    if not any(_trailing(v) for v in env.values()):
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
