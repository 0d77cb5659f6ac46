"""A gradient assembled from scatters into zeros, replayed as one concatenation.

Autograd writes the gradient of a vector read in pieces (``u[:, :8]``, ``u[:, 8]``,
``u[:, 9]``: each parameter of a density sliced out of the unconstrained vector) as one
scatter per piece into a tensor of zeros (``slice_backward``, ``select_backward``) and the sum
of those: eight schools' leapfrog ends with three scatters and two additions, five operations
of the replay (~0.7 µs each, replay.py) for a gradient that is the pieces side by side.
:func:`assembled_gradients` rewrites every such sum, whose terms are scatters along one
dimension of one shape over ranges that do not overlap, as one ``cat`` of the pieces in order
(neighbouring ``select`` pieces stacked together first, the gaps filled by constant zeros):
eight schools' and diamonds' five operations become two, arK's three.

Each element of the sum is its piece's value plus zeros, which is that value, except that
``-0.0 + 0.0`` is ``+0.0``: the concatenation keeps a piece's ``-0.0``, a difference no sampler
sees. The rewritten graph is held to the original's outputs on the example (numbers equal, a
zero of either sign), else the original runs.
"""

from __future__ import annotations

import copy
import itertools
from typing import NamedTuple

import torch

from latentfit.mcmc.scales import _same_values
from latentfit.mcmc.simplify import _kept, _values

__all__ = ["assembled_gradients"]

_aten = torch.ops.aten


class _Piece(NamedTuple):
    grad: torch.fx.Node  # the values scattered: the piece itself (a slice) or one row (select)
    start: int  # along ``dim`` of the full shape: [start, stop)
    stop: int
    select: bool


def _scatter(node: object, env: dict) -> tuple[tuple, int, _Piece] | None:
    """``node`` as (full shape, dimension, piece) where it scatters into zeros, else None."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function" or node.kwargs:
        return None
    if node.target is _aten.select_backward.default and len(node.args) == 4:
        grad, sizes, dim, index = node.args
        stop, step = None, 1
    elif node.target is _aten.slice_backward.default and len(node.args) == 6:
        grad, sizes, dim, index, stop, step = node.args
    else:
        return None
    out = env.get(node)
    if not isinstance(grad, torch.fx.Node) or not isinstance(out, torch.Tensor) or step != 1:
        return None
    sizes = tuple(out.shape)
    dim = dim % len(sizes)
    n = sizes[dim]
    start = min(max(index + n if index < 0 else index, 0), n)
    if stop is None:
        stop = start + 1
    else:
        stop = min(max(stop + n if stop < 0 else stop, start), n)
    return sizes, dim, _Piece(grad, start, stop, node.target is _aten.select_backward.default)


def _terms(node: torch.fx.Node, env: dict, root: bool) -> list[torch.fx.Node] | None:
    """The scatters summed by the tree of additions at ``node`` (each inner addition used only
    there), or None where a term is anything else."""
    if _scatter(node, env) is not None:
        return [node]
    if (
        node.op != "call_function"
        or node.target is not _aten.add.Tensor
        or node.kwargs
        or len(node.args) != 2
        or (not root and len(node.users) != 1)
    ):
        return None
    terms = []
    for arg in node.args:
        if not isinstance(arg, torch.fx.Node):
            return None
        sub = _terms(arg, env, False)
        if sub is None:
            return None
        terms += sub
    return terms


def assembled_gradients(graph: torch.fx.GraphModule, example: tuple) -> torch.fx.GraphModule:
    """A copy of ``graph`` (static sizes, those of ``example``) with its sums of scatters
    written as concatenations (module docstring); ``graph`` itself where it has none, or where
    the copy's outputs on ``example`` differ."""
    values = _values(graph, example)
    gm = copy.deepcopy(graph)
    by_name = {n.name: n for n in graph.graph.nodes}
    env = {n: values[by_name[n.name]] for n in gm.graph.nodes if n.name in by_name}
    done: set[torch.fx.Node] = set()
    rewritten = 0
    for node in reversed(list(gm.graph.nodes)):  # outermost sums first
        if node in done or node.target is not _aten.add.Tensor:
            continue
        terms = _terms(node, env, True)
        if terms is None or len(terms) < 2:
            continue
        cat = _concatenation(gm, node, terms, env)
        if cat is None:
            continue
        node.replace_all_uses_with(cat)
        done.update(_inner(node))
        rewritten += 1
    if not rewritten:
        return graph
    gm.graph.eliminate_dead_code(is_impure_node=_kept)
    gm.graph.lint()
    gm.recompile()
    return gm if _same_values(gm, values[graph.graph.output_node()], example) else graph


def _inner(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The additions of the tree at ``node``."""
    found = [node]
    for arg in node.args:
        if isinstance(arg, torch.fx.Node) and arg.target is _aten.add.Tensor:
            found += _inner(arg)
    return found


def _concatenation(
    gm: torch.fx.GraphModule, root: torch.fx.Node, terms: list, env: dict
) -> torch.fx.Node | None:
    """A ``cat`` node, inserted before ``root``, of the pieces the ``terms`` scatter, or None
    where they are not of one shape and dimension, overlap, or differ in dtype."""
    found = [_scatter(t, env) for t in terms]
    sizes, dim = found[0][0], found[0][1]
    out = env.get(root)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != sizes:
        return None
    if any(f[0] != sizes or f[1] != dim for f in found):
        return None
    if any(env[t].dtype != out.dtype for t in terms):
        return None
    pieces = sorted((f[2] for f in found), key=lambda p: p.start)
    if any(a.stop > b.start for a, b in itertools.pairwise(pieces)):
        return None
    g = gm.graph
    parts: list[torch.fx.Node] = []
    at, rows = 0, []  # neighbouring selected rows, stacked together
    with g.inserting_before(root):

        def flush():
            if rows:
                parts.append(
                    g.call_function(_aten.stack.default, (rows[:], dim))
                    if len(rows) > 1
                    else g.call_function(_aten.unsqueeze.default, (rows[0], dim))
                )
                rows.clear()

        for piece in pieces:
            if piece.start > at:  # a gap: zeros
                flush()
                shape = list(sizes)
                shape[dim] = piece.start - at
                name = f"_assembled_zeros_{len(list(gm.buffers()))}"
                gm.register_buffer(name, torch.zeros(shape, dtype=out.dtype, device=out.device))
                parts.append(g.get_attr(name))
            if piece.select:
                rows.append(piece.grad)
            else:
                flush()
                parts.append(piece.grad)
            at = piece.stop
        flush()
        if at < sizes[dim]:
            shape = list(sizes)
            shape[dim] = sizes[dim] - at
            name = f"_assembled_zeros_{len(list(gm.buffers()))}"
            gm.register_buffer(name, torch.zeros(shape, dtype=out.dtype, device=out.device))
            parts.append(g.get_attr(name))
        return g.call_function(_aten.cat.default, (parts, dim))
