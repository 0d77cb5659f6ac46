"""Operations a replayed graph need not run: the traced leapfrog's no-ops and constants.

A replayed graph (replay.py) costs ~0.9 µs for every aten operation it holds, whatever the
operation does, and the leapfrog's graph, traced through autograd (compiled._trace), holds many
that compute nothing new: ``detach`` of every saved value, ``pow(x, 1.0)`` where the backward
pass of ``x ** 2`` multiplies by ``2 * x ** 1``, the ``ones_like`` seed of the backward pass and
the chain of ``expand``, ``neg`` and ``mul`` made from it, the reciprocals of constants, and
``sum(keepdim=True)`` followed by ``squeeze``. Inductor removes them when it compiles; the
replay, which runs the graph as it is, would not. :func:`simplify` does it first:

- a value that depends on no input (computed from the graph's constants, or a creation op such
  as ``ones_like`` whose value is fixed by a static shape) is computed once, here, and kept as
  a constant of the graph;
- an identity (``detach``, ``alias``, ``pow(x, 1)``, ``mul(x, 1)``, ``div(x, 1)``,
  ``sub(x, 0)``) is replaced by its input;
- ``squeeze(sum(x, dims, keepdim=True), dim)`` over that one dimension becomes
  ``sum(x, dims)``;
- ``mul(neg(x), k)`` for a number or constant ``k`` becomes ``mul(x, -k)``;
- an operation repeated on the same arguments runs once.

Each rewrite gives the value the graph computed, bit for bit: a folded constant is the
operation's own result on the example, which cannot differ on another input; an identity is
skipped only where its result has the input's dtype, shape and strides, or every user is
pointwise (an elementwise operation's values do not depend on its inputs' layout). The graph's
outputs keep their own tensors (an input is never returned in place of a new tensor).
Eight schools' leapfrog, 4 chains: 79 operations -> 57, a replayed step 69 -> 56 µs; the last
three rewrites take diamonds' 102 -> 99 and gauss_mix's 126 -> 123 (best of 5 at 4 chains:
73.8 -> 68.6 µs and 191 -> 180 µs).
"""

from __future__ import annotations

import copy

import torch

__all__ = ["simplify"]

_aten = torch.ops.aten

#: operations that return their input's values
_IDENTITIES = {_aten.detach.default, _aten.alias.default}
#: operations with a number argument that return their input's values at that number
#: (not ``add(x, 0)``: ``-0.0 + 0`` is ``+0.0``; ``-0.0 - 0`` is ``-0.0``)
_UNIT = {
    _aten.pow.Tensor_Scalar: 1,
    _aten.mul.Scalar: 1,
    _aten.mul.Tensor: 1,
    _aten.div.Tensor: 1,
    _aten.div.Scalar: 1,
    _aten.sub.Tensor: 0,
    _aten.sub.Scalar: 0,
}
#: creation operations whose tensor input gives only a size, dtype and device
_SIZED_BY_INPUT = {
    _aten.ones_like.default,
    _aten.zeros_like.default,
    _aten.full_like.default,
    _aten.new_ones.default,
    _aten.new_zeros.default,
    _aten.new_full.default,
}
#: creation operations whose value follows from sizes alone (the graph's sizes are static)
_CREATIONS = _SIZED_BY_INPUT | {
    _aten.full.default,
    _aten.ones.default,
    _aten.zeros.default,
    _aten.scalar_tensor.default,
}


def _pure(op) -> bool:
    """An aten operation that neither writes to a tensor nor draws random numbers."""
    return (
        isinstance(op, torch._ops.OpOverload)
        and not op._schema.is_mutable
        and torch.Tag.nondeterministic_seeded not in op.tags
    )


#: views whose values are their input's, rearranged: a value read through them ends in a
#: pointwise operation or not according to their own users
_VIEWS = {
    _aten.expand.default,
    _aten.unsqueeze.default,
    _aten.squeeze.dim,
    _aten.view.default,
    _aten.select.int,
    _aten.slice.Tensor,
}

#: elementwise operations torch does not tag ``pointwise``, and the scatters of a slice's
#: gradient into zeros, whose values do not depend on their inputs' layout either
_ELEMENTWISE = {
    _aten.log_sigmoid_backward.default,
    _aten.softplus_backward.default,
    _aten.slice_backward.default,
    _aten.select_backward.default,
}


def _pointwise_users(node: torch.fx.Node) -> bool:
    """Every use of ``node``'s values is elementwise: by a pointwise operation, or through
    views that only such operations read."""
    for u in node.users:
        if u.op != "call_function" or not isinstance(u.target, torch._ops.OpOverload):
            return False
        if u.target in _VIEWS:
            if u.args[0] is not node or not _pointwise_users(u):
                return False
        elif torch.Tag.pointwise not in u.target.tags and u.target not in _ELEMENTWISE:
            return False
    return True


def _values(graph: torch.fx.GraphModule, example: tuple) -> dict[torch.fx.Node, object]:
    """Every node's value on ``example``."""
    env: dict[torch.fx.Node, object] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            env[n] = out = super().run_node(n)
            return out

    with torch.no_grad():
        Recorder(graph).run(*example)
    return env


def _same_layout(a: object, b: object) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
    )


def _identity_of(node: torch.fx.Node, env: dict, output: torch.fx.Node) -> torch.fx.Node | None:
    """The input ``node`` can be replaced by, or None."""
    op = node.target
    if op in _UNIT:
        unit = node.args[1] if len(node.args) == 2 and not node.kwargs else None
        if not isinstance(unit, int | float) or isinstance(unit, bool) or unit != _UNIT[op]:
            return None
    elif op not in _IDENTITIES:
        return None
    src = node.args[0]
    if not isinstance(src, torch.fx.Node):
        return None
    if output in node.users and src.op == "placeholder":
        return None  # an input returned as an output: the caller may hold and change it
    got, want = env.get(src), env.get(node)
    if _same_layout(got, want):
        return src
    same_values = (
        isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
        and got.dtype == want.dtype and got.shape == want.shape
    )  # fmt: skip
    return src if same_values and output not in node.users and _pointwise_users(node) else None


def _one_sum(node: torch.fx.Node) -> torch.fx.Node | None:
    """For ``squeeze(s, dim)`` where ``s = sum(x, [dim], keepdim=True)`` has no other user,
    the sum without the kept dimension's node, inserted; else None."""
    if node.target is not _aten.squeeze.dim or len(node.args) != 2:
        return None
    s, dim = node.args
    if not (
        isinstance(s, torch.fx.Node)
        and s.target is _aten.sum.dim_IntList
        and len(s.users) == 1
        and len(s.args) == 3
        and s.args[2] is True
        and not s.kwargs
        and list(s.args[1] or []) == [dim]
    ):
        return None
    with node.graph.inserting_before(node):
        return node.graph.call_function(_aten.sum.dim_IntList, (s.args[0], s.args[1]))


def _foldable(node: torch.fx.Node, constant: set, env: dict, output: torch.fx.Node) -> bool:
    op = node.target
    if not _pure(op) or not isinstance(env.get(node), torch.Tensor):
        return False
    if output in node.users:
        return False  # the caller gets a new tensor every call, as from the graph
    inputs = node.all_input_nodes
    if op in _CREATIONS:
        sized = op in _SIZED_BY_INPUT
        return all(i in constant for i in (inputs[1:] if sized else inputs))
    if not inputs or not all(i in constant for i in inputs):
        return False
    # a constant is kept dense: its layout may differ from the operation's (an ``expand``)
    return env[node].is_contiguous() or _pointwise_users(node)


def simplify(graph: torch.fx.GraphModule, example: tuple) -> torch.fx.GraphModule:
    """A copy of ``graph`` (static sizes, those of ``example``) without the operations that
    compute nothing new at run time (module docstring); ``graph`` itself is left as it is."""
    gm = copy.deepcopy(graph)
    g = gm.graph
    env = _values(gm, example)
    output = next(n for n in g.nodes if n.op == "output")
    constant: set[torch.fx.Node] = set()
    folded = 0
    for node in list(g.nodes):
        if node.op == "get_attr":
            constant.add(node)
            continue
        if node.op != "call_function":
            continue
        src = _identity_of(node, env, output)
        if src is None:
            src = _one_sum(node)
            if src is not None:
                env[src] = env[node]
        if src is not None:
            node.replace_all_uses_with(src)
            g.erase_node(node)
            continue
        if _foldable(node, constant, env, output):
            name = f"_folded_{folded}"
            folded += 1
            value = env[node]
            gm.register_buffer(name, value.clone(memory_format=torch.contiguous_format))
            with g.inserting_before(node):
                new = g.get_attr(name)
            env[new] = getattr(gm, name)
            constant.add(new)
            node.replace_all_uses_with(new)
            g.erase_node(node)
    _fold_negations(gm, constant)
    g.eliminate_dead_code(is_impure_node=_kept)
    _merge_repeats(g, output)
    g.eliminate_dead_code(is_impure_node=_kept)
    g.lint()
    gm.recompile()
    return gm if _same_outputs(gm, env[output], example) else graph


def _kept(node: torch.fx.Node) -> bool:
    """Whether dead-code elimination must keep ``node`` though nothing uses its value: fx's
    rule (``Node.is_impure``), and every operation that returns nothing, which runs only for
    what it does. ``aten._linalg_check_errors`` is one: it raises where a Cholesky factor or an
    inverse failed, and fx's rule dropped it, so that a replayed density gave the failed
    factor's values (the semicircle's: NaN; a density using the factor only in a solve: finite
    numbers) instead of raising, which rejects those chains (Target.log_prob_and_grad)."""
    if node.is_impure():
        return True
    schema = getattr(node.target, "_schema", None)
    return node.op == "call_function" and schema is not None and not schema.returns


def _fold_negations(gm: torch.fx.GraphModule, constant: set) -> None:
    """``mul(neg(x), k)`` -> ``mul(x, -k)`` for a number or constant ``k``: a product's
    rounding is symmetric in sign, so the values are the same bit for bit (the backward pass
    of a subtraction writes such pairs)."""
    g = gm.graph
    for node in list(g.nodes):
        if node.target is not _aten.mul.Tensor or len(node.args) != 2 or node.kwargs:
            continue
        for i in (0, 1):
            neg, k = node.args[i], node.args[1 - i]
            if not (isinstance(neg, torch.fx.Node) and neg.target is _aten.neg.default):
                continue
            if isinstance(k, int | float) and not isinstance(k, bool):
                negated = -k
            elif k in constant:
                name = f"_negated_{k.name}"
                if not hasattr(gm, name):
                    gm.register_buffer(name, -getattr(gm, k.target))
                with g.inserting_before(node):
                    negated = g.get_attr(name)
                constant.add(negated)
            else:
                continue
            node.args = (neg.args[0], negated) if i == 0 else (negated, neg.args[0])
            break


def _key(arg):
    if isinstance(arg, list | tuple):
        return tuple(map(_key, arg))
    return ("node", arg) if isinstance(arg, torch.fx.Node) else (type(arg), arg)


def _merge_repeats(g: torch.fx.Graph, output: torch.fx.Node) -> None:
    """A pure operation repeated on the same arguments runs once (common subexpressions:
    diamonds' gradient computes ``neg`` of one value twice); not for the graph's outputs,
    each of which the caller gets as a tensor of its own."""
    seen: dict = {}
    for node in list(g.nodes):
        if node.op == "get_attr":
            key = ("get_attr", node.target)
        elif node.op == "call_function" and _pure(node.target) and output not in node.users:
            key = (node.target, _key(node.args), _key(tuple(sorted(node.kwargs.items()))))
        else:
            continue
        if key in seen:
            node.replace_all_uses_with(seen[key])
            g.erase_node(node)
        else:
            seen[key] = node


def _same_outputs(gm: torch.fx.GraphModule, want: object, example: tuple, equal=None) -> bool:
    """The simplified graph gives the original's outputs on the example bit for bit (a NaN
    where it gave a NaN): every rewrite is meant to, and this holds it to that. ``equal``
    compares two outputs instead (scales.py: a zero of either sign)."""
    leaves = torch.utils._pytree.tree_leaves
    with torch.no_grad():
        got = leaves(gm(*example))
    want = leaves(want)
    return len(got) == len(want) and all(map(equal or _bitwise, got, want))


def _bitwise(a: object, b: object, zero_sign: bool = True) -> bool:
    """Equal values, NaN where NaN, and (``zero_sign``) zeros of the same sign."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return a == b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    same = torch.eq(a, b)
    if zero_sign:
        same &= torch.eq(a.signbit(), b.signbit())
    return bool((same | (a.isnan() & b.isnan())).all())
