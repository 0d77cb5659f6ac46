"""Signs and powers of two carried through a replayed graph instead of computed.

Autograd's backward pass of a log-density writes many products by numbers: the gradient of
``-0.5 * z ** 2`` is ``(g * -0.5) * (z * 2.0)``, a subtraction's gives a ``neg``, the seed of
the backward pass, a constant of ones or of -0.5 (folded by simplify.py), multiplies what it
meets. Each is one more pass over its tensor, ~3 µs over gauss_mix's (4, 2, 1000) terms and
~0.7 µs on a small one (replay.py), for a value a sign or a factor of two away from one
computed already. :func:`carry_scales` rewrites the graph so that each value is computed as
a *core* times a scale ``s = ±2^k``, the scale carried along rather than applied:

- ``neg(x)``, ``x * c`` and ``x / c`` for a number ``c = ±2^k`` (or a constant tensor every
  element of which is that number and that broadcasts nothing) compute nothing: the scale of
  ``x`` times ``-1``, ``c`` or ``1 / c``; ``c / x`` is the reciprocal of ``x``'s core;
- a product, a quotient, ``pow(x, 2)``, a sum or mean, a view (``unsqueeze``, ``permute``,
  ``select``...) and the backward pass of ``sigmoid`` or ``tanh`` (linear in the gradient) run
  on the cores, the scales multiplied (``(s x) * (t y) = s t (x y)``); so does the scatter of
  a gradient into zeros (``select_backward``, ``slice_backward``) where the scale is positive
  (``-1 * 0.0`` would be ``-0.0``);
- ``add`` and ``sub`` run on the cores, one scale carried and the ratio of the two given as
  ``add``'s ``alpha``: ``s x + t y = s (x + (t/s) y)``, a subtraction where it is ``-1``;
- every other use, and the graph's outputs, read the value itself: the core times its scale,
  one multiplication (or ``neg``), made once for all such uses, or the node as traced where its
  own input carries no scale.

A product by ``±2^k`` rounds exactly (``round(2^k a) = 2^k round(a)``), so a sum with
``alpha`` still rounds once and a sign moves freely (``x - y = x + (-y)``): each rewrite gives
the graph's values: equal numbers, NaN where
it gave NaN. Two differences are left, neither of which a sampler sees: the sign of a zero
(``-(x + y)`` is ``-0.0`` where ``(-x) + (-y)`` is ``+0.0``), and a value whose scaled
intermediate would have overflowed or fallen among the subnormal numbers, which here does
not. The rewritten graph is held to the original's outputs on the example, else the original
runs. Replayed leapfrog steps (best of 5 x 2,000 calls; operations, then µs): at 4 chains,
eight schools 57 -> 49, 42 -> 36 µs; arK 68 -> 58, 46 -> 40 µs; diamonds 99 -> 87, 68 -> 58 µs;
gauss_mix 124 -> 111, 122 -> 103 µs; gauss_mix at one chain 82 -> 72 µs, at 32 chains 640 ->
473 µs (benchmarks/README.md, with assemble.py's rewrite after this one).
"""

from __future__ import annotations

import copy
import math

import torch

from latentfit.mcmc.simplify import _bitwise, _kept, _same_outputs, _values

__all__ = ["carry_scales"]

_aten = torch.ops.aten

#: a scaled value times or over a number or constant: only the scale changes
_MUL = {_aten.mul.Tensor, _aten.mul.Scalar}
_DIV = {_aten.div.Tensor, _aten.div.Scalar}
#: operations linear in their first argument alone, run on its core: ``op(s x, ...) = s op(x)``
_LINEAR = {
    _aten.sum.dim_IntList,
    _aten.sum.default,
    _aten.mean.dim,
    _aten.unsqueeze.default,
    _aten.squeeze.dim,
    _aten.view.default,
    _aten.permute.default,
    _aten.expand.default,
    _aten.select.int,
    _aten.slice.Tensor,
    _aten.sigmoid_backward.default,
    _aten.tanh_backward.default,
}
#: scatters of a gradient into zeros: run on the core of a positive scale only (``-1 * 0`` is
#: ``-0.0``, not the scatter's ``+0.0``)
_SCATTERS = {_aten.select_backward.default, _aten.slice_backward.default}
_SUMS = {_aten.add.Tensor, _aten.sub.Tensor}


def _power_of_two(c: object) -> float | None:
    """``c`` as a float where it is a nonzero finite ``±2^k`` (a bool is no number)."""
    if isinstance(c, bool) or not isinstance(c, int | float):
        return None
    c = float(c)
    return c if math.isfinite(c) and c != 0 and abs(math.frexp(c)[0]) == 0.5 else None


def carry_scales(graph: torch.fx.GraphModule, example: tuple) -> torch.fx.GraphModule:
    """A copy of ``graph`` (static sizes, those of ``example``) whose signs and factors of two
    are carried rather than computed (module docstring); ``graph`` itself where that saves no
    operation, or where the copy's outputs on ``example`` differ from the graph's."""
    env = _values(graph, example)
    gm = copy.deepcopy(graph)
    by_name = {n.name: n for n in graph.graph.nodes}
    work = _Pass(gm, {n: env[by_name[n.name]] for n in gm.graph.nodes if n.name in by_name})
    before = sum(n.op == "call_function" for n in gm.graph.nodes)
    for node in list(gm.graph.nodes):
        if node.op in ("call_function", "output"):
            work.rewrite(node)
    gm.graph.eliminate_dead_code(is_impure_node=_kept)
    if sum(n.op == "call_function" for n in gm.graph.nodes) >= before:
        return graph
    gm.graph.lint()
    gm.recompile()
    return gm if _same_values(gm, env[graph.graph.output_node()], example) else graph


def _same_values(gm: torch.fx.GraphModule, want: object, example: tuple) -> bool:
    """``gm``'s outputs on ``example`` are ``want``: equal numbers (a zero of either sign),
    NaN where it holds NaN, the same dtypes and shapes."""
    return _same_outputs(gm, want, example, lambda a, b: _equal(a, b))


def _equal(a: object, b: object) -> bool:
    return _bitwise(a, b, zero_sign=False)


class _Pass:
    """The walk over the graph's nodes, in order. ``scaled[n] = (core, s)``: ``n``'s value is
    ``core``'s times ``s``, where ``core`` is ``n`` itself (its arguments rewritten to cores)
    or a node before it; a node absent from it holds its own value (``s = 1``). ``own`` holds
    the nodes with a scale whose own computation, as traced, still gives their value."""

    def __init__(self, gm: torch.fx.GraphModule, env: dict) -> None:
        self.gm, self.g, self.env = gm, gm.graph, env
        self.scaled: dict[torch.fx.Node, tuple[torch.fx.Node, float]] = {}
        self.own: set[torch.fx.Node] = set()
        self.made: dict[tuple[torch.fx.Node, float], torch.fx.Node] = {}
        self.returned: set[torch.fx.Node] = set()

    def _float(self, node: object) -> bool:
        v = self.env.get(node)
        return isinstance(v, torch.Tensor) and v.is_floating_point()

    def _scale_of(self, node: object) -> tuple[object, float]:
        return (
            self.scaled.get(node, (node, 1.0)) if isinstance(node, torch.fx.Node) else (node, 1.0)
        )

    def _number(self, arg: object, like: torch.fx.Node, out: torch.fx.Node) -> float | None:
        """``arg`` as a ``±2^k`` factor of ``like`` in ``out``: a number, or a constant of
        that one value whose shape and dtype change nothing of ``like``'s."""
        if not isinstance(arg, torch.fx.Node):
            return _power_of_two(arg)
        if arg.op != "get_attr":
            return None
        value = getattr(self.gm, arg.target, None)
        x, y = self.env.get(like), self.env.get(out)
        if not (
            isinstance(value, torch.Tensor)
            and isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and value.numel() > 0
            and value.dtype == x.dtype == y.dtype
            and x.shape == y.shape
        ):
            return None
        first = value.reshape(-1)[0]
        if not bool((value == first).all()):
            return None
        return _power_of_two(float(first))

    def value_of(self, arg: object, before: torch.fx.Node) -> object:
        """A node that holds ``arg``'s own value, for a use of it at ``before``."""
        if not isinstance(arg, torch.fx.Node) or arg not in self.scaled or arg in self.own:
            return arg
        core, s = self.scaled[arg]
        if s == 1.0:
            return core
        if (core, s) not in self.made:
            with self.g.inserting_before(before):
                if s == -1.0:
                    made = self.g.call_function(_aten.neg.default, (core,))
                else:
                    made = self.g.call_function(_aten.mul.Tensor, (core, s))
            self.made[core, s] = made
        return self.made[core, s]

    def rewrite(self, node: torch.fx.Node) -> None:
        if node.op == "call_function" and self._float(node) and not node.kwargs:
            if self._carry(node):
                return
        if node.op == "output":
            node.args = torch.fx.node.map_arg(node.args, lambda a: self._output(a, node))
            return
        # any other use reads its arguments' own values
        node.args = torch.fx.node.map_arg(node.args, lambda a: self.value_of(a, node))
        node.kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: self.value_of(a, node))

    def _output(self, arg: torch.fx.Node, output: torch.fx.Node) -> torch.fx.Node:
        """What the graph returns for ``arg``: its value, in a tensor of its own (not an input,
        nor a tensor another output returns), as the traced graph returned."""
        got = self.value_of(arg, output)
        if got is not arg and (got.op == "placeholder" or got in self.returned):
            with self.g.inserting_before(output):
                got = self.g.call_function(_aten.clone.default, (got,))
        self.returned.add(got)
        return got

    def _carry(self, node: torch.fx.Node) -> bool:
        """Rewrite ``node`` to carry a scale, if it is one of the module docstring's; else
        False (``node`` untouched)."""
        op, args = node.target, node.args
        if op is _aten.neg.default:
            return self._scale_only(node, args[0], -1.0)
        if op in _MUL and len(args) == 2:
            for i in (0, 1):
                c = self._number(args[1 - i], args[i], node)
                if c is not None and isinstance(args[i], torch.fx.Node):
                    return self._scale_only(node, args[i], c)
            return self._on_cores(node, lambda s, t: s * t, (0, 1))
        if op in _DIV and len(args) == 2:
            c = self._number(args[1], args[0], node)
            if c is not None and isinstance(args[0], torch.fx.Node):
                return self._scale_only(node, args[0], 1.0 / c)
            c = self._number(args[0], args[1], node)
            if c is not None and isinstance(args[1], torch.fx.Node) and self._float(args[1]):
                # c / x: the reciprocal, one operand fewer to read (the seed of ones)
                core, t = self._scale_of(args[1])
                node.target, node.args = _aten.reciprocal.default, (core,)
                if c / t != 1.0:
                    self.scaled[node] = (node, c / t)
                return True
            return self._on_cores(node, lambda s, t: s / t, (0, 1))
        if op is _aten.pow.Tensor_Scalar and len(args) == 2 and args[1] == 2:
            return self._on_cores(node, lambda s: s * s, (0,))
        if op in _LINEAR:
            return self._on_cores(node, lambda s: s, (0,))
        if op in _SCATTERS and self._scale_of(args[0])[1] > 0:
            return self._on_cores(node, lambda s: s, (0,))
        if op in _SUMS and len(args) == 2 and all(isinstance(a, torch.fx.Node) for a in args):
            return self._sum_of_two(node)
        return False

    def _sum_of_two(self, node: torch.fx.Node) -> bool:
        """``add`` or ``sub`` of two values on their cores, one scale carried and the ratio
        of the two given to the operation: ``s x + t y = s (x + (t/s) y)``, ``add``'s
        ``alpha`` (a product by ``±2^k`` rounds exactly, so the sum rounds once, as before)."""
        (a, s), (b, t) = map(self._scale_of, node.args)
        if (s, t) == (1.0, 1.0) or not all(map(self._float, node.args)):
            return False
        if node.target is _aten.sub.Tensor:
            t = -t
        if t == 1.0 and s != 1.0:  # carry the scale 1: t y + s x
            (a, s), (b, t) = (b, t), (a, s)
        ratio = t / s
        if abs(ratio) == 1.0:
            node.target = _aten.add.Tensor if ratio == 1.0 else _aten.sub.Tensor
            node.args, node.kwargs = (a, b), {}
        else:
            node.target, node.args, node.kwargs = _aten.add.Tensor, (a, b), {"alpha": ratio}
        if s != 1.0:
            self.scaled[node] = (node, s)
        return True

    def _scale_only(self, node: torch.fx.Node, x: object, c: float) -> bool:
        """``node`` is ``x`` times ``c``: nothing to compute."""
        if not isinstance(x, torch.fx.Node) or not self._float(x):
            return False
        core, s = self._scale_of(x)
        self.scaled[node] = (core, s * c)
        if x not in self.scaled:  # as traced, ``node`` computes its value in one operation
            self.own.add(node)
        return True

    def _on_cores(self, node: torch.fx.Node, scale, where: tuple[int, ...]) -> bool:
        """``node`` run on the cores of its arguments at ``where``, its scale ``scale`` of
        theirs (an argument that is no node has scale 1); its other arguments read their own
        values (``sigmoid_backward``'s output, say)."""
        scales = [self._scale_of(node.args[i]) for i in where]
        if all(s == 1.0 for _, s in scales):
            return False
        if not all(
            self._float(node.args[i]) for i in where if isinstance(node.args[i], torch.fx.Node)
        ):
            return False
        args = [
            torch.fx.node.map_arg(a, lambda n: self.value_of(n, node)) if i not in where else a
            for i, a in enumerate(node.args)
        ]
        for i, (core, _) in zip(where, scales, strict=True):
            args[i] = core
        node.args = tuple(args)
        s = scale(*(s for _, s in scales))
        if s == 1.0:
            return True  # the node's own value: its users read it as it is
        self.scaled[node] = (node, s)
        return True
