"""mcmc/assemble.py: a sum of scatters into zeros replayed as one concatenation: fewer
operations and the graph's values on the four posteriordb leapfrogs (away from the example)
and on generated sums of slice and select pieces; overlapping pieces, pieces along different
dimensions and shared partial sums are left as they are."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from latentfit.mcmc import assemble, scales, simplify
from tests.mcmc.test_scales import _same
from tests.mcmc.test_simplify import _calls, _leapfrog_graph
from tests.property.oracle import budget

F64 = torch.float64
_aten = torch.ops.aten


def _ops(graph) -> list:
    return [n.target for n in graph.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize(
    "name, fewer", [("eight_schools", 3), ("arK", 2), ("gauss_mix", 3), ("diamonds", 3)]
)
def test_posteriordb_gradients_are_concatenated_with_their_values(name, fewer):
    _, _, _, graph, example = _leapfrog_graph(name)
    simple = scales.carry_scales(simplify.simplify(graph, example), example)
    joined = assemble.assembled_gradients(simple, example)
    assert _calls(joined) == _calls(simple) - fewer, (_calls(simple), _calls(joined))
    assert _aten.cat.default in _ops(joined)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        u, grad, p, e, half, inv = example
        moved = (u + 0.3 * torch.randn(u.shape, generator=g, dtype=F64), grad,
                 torch.randn(p.shape, generator=g, dtype=F64), e + 0.05, half + 0.025, inv)  # fmt: skip
        assert _same(joined(*moved), graph(*moved))


def test_pieces_in_any_order_with_gaps_become_one_concatenation():
    def f(x):  # (3, 7): pieces at 1:3, 4 and 5; 0, 3 and 6 left zero
        a = _aten.select_backward(x[:, 5].exp(), [3, 7], 1, 5)
        b = _aten.slice_backward(x[:, 1:3] * 3.0, [3, 7], 1, 1, 3, 1)
        c = _aten.select_backward(-x[:, 4], [3, 7], 1, -3)  # index 4, counted from the end
        return (a + b) + c

    x = torch.randn(3, 7, dtype=F64)
    graph = make_fx(f)(x)
    joined = assemble.assembled_gradients(graph, (x,))
    ops = _ops(joined)
    assert _aten.select_backward.default not in ops and _aten.slice_backward.default not in ops
    assert ops.count(_aten.cat.default) == 1 and ops.count(_aten.stack.default) == 1
    for z in (torch.randn(3, 7, dtype=F64), torch.zeros(3, 7, dtype=F64)):
        got, want = joined(z), graph(z)
        assert scales._equal(got, want) and bool((got[:, [0, 3, 6]] == 0).all())


@pytest.mark.parametrize("case", ["overlap", "dims", "shared"])
def test_sums_that_are_not_side_by_side_pieces_are_left(case):
    def f(x):
        a = _aten.slice_backward(x[:, :3], [3, 4], 1, 0, 3, 1)
        if case == "overlap":
            return a + _aten.select_backward(x[:, 2], [3, 4], 1, 2)
        if case == "dims":
            return a + _aten.select_backward(x[0], [3, 4], 0, 1)
        partial = a + _aten.select_backward(x[:, 3], [3, 4], 1, 3)
        return partial + 1.0, partial.exp()  # the sum read twice, and no scatter sum at the top

    x = torch.randn(3, 4, dtype=F64)
    graph = make_fx(f)(x)
    joined = assemble.assembled_gradients(graph, (x,))
    if case == "shared":  # the partial sum itself is one: concatenated, read by both
        assert _aten.cat.default in _ops(joined)
        assert all(scales._equal(a, b) for a, b in zip(joined(x), graph(x), strict=True))
    else:
        assert joined is graph


@st.composite
def layouts(draw):
    n = draw(st.integers(2, 9))
    cuts = sorted(draw(st.sets(st.integers(0, n), min_size=2, max_size=6)))
    pieces = []
    for a, b in itertools.pairwise(cuts):
        kind = draw(st.sampled_from(["slice", "select", "skip"]))
        if kind == "select":
            pieces.append(("select", a, a + 1))
        elif kind == "slice":
            pieces.append(("slice", a, b))
    order = draw(st.permutations(range(len(pieces))))
    return n, [pieces[i] for i in order], draw(st.integers(0, 2))


@budget(40)
@given(layouts())
def test_generated_sums_of_pieces_keep_their_values(layout):
    n, pieces, dim = layout
    shape = [2, 3, 4]
    shape[dim] = n

    def f(x):
        total = None
        for kind, a, b in pieces:
            if kind == "select":
                term = _aten.select_backward(x.select(dim, a).sin(), shape, dim, a)
            else:
                term = _aten.slice_backward(x.narrow(dim, a, b - a) * 2.5, shape, dim, a, b, 1)
            total = term if total is None else total + term
        return (x * 0.0 if total is None else total) + 0.0  # the sum is not an output itself

    x = torch.randn(shape, dtype=F64)
    graph = make_fx(f)(x)
    joined = assemble.assembled_gradients(graph, (x,))
    assert _calls(joined) <= _calls(graph)
    if len(pieces) >= 2:
        assert _aten.cat.default in _ops(joined)
    z = torch.randn(shape, dtype=F64)
    assert scales._equal(joined(z), graph(z))
