"""mcmc/scales.py: signs and factors of two carried through a replayed graph rather than
computed: fewer operations and the graph's values, on the four posteriordb leapfrogs (away
from the example they were rewritten on) and on generated graphs of products, quotients, sums,
views and scatters; a scatter's zeros keep their sign, outputs stay tensors of their own, and
a rewrite that would change a value leaves the graph as it was."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, event, given
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from latentfit.mcmc import scales, simplify
from tests.mcmc.test_simplify import _calls, _leapfrog_graph
from tests.property.oracle import budget

F64 = torch.float64
_aten = torch.ops.aten


def _graph(fn, *example):
    return make_fx(fn)(*example)


def _same(got, want) -> bool:
    return all(scales._equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize(
    "name, fewer", [("eight_schools", 5), ("arK", 6), ("gauss_mix", 8), ("diamonds", 7)]
)
def test_posteriordb_leapfrogs_lose_operations_and_keep_their_values(name, fewer):
    _, _, _, graph, example = _leapfrog_graph(name)
    simple = simplify.simplify(graph, example)
    carried = scales.carry_scales(simple, example)
    assert _calls(carried) <= _calls(simple) - fewer, (_calls(simple), _calls(carried))
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # other states, momenta and step sizes than the example's
        u, grad, p, e, half, inv = example
        moved = (
            u + 0.3 * torch.randn(u.shape, generator=g, dtype=F64),
            grad,
            torch.randn(p.shape, generator=g, dtype=F64),
            e + 0.05,
            half + 0.025,
            inv,
        )
        assert _same(carried(*moved), graph(*moved))


def test_signs_and_twos_go_and_the_values_stay():
    k = torch.full((3, 2), -0.5, dtype=F64)  # a constant of one value: a factor
    ones = torch.ones(3, 2, dtype=F64)

    def f(x, y):
        a = -(x * 2.0) * k  # x, its scale 2 * -1 * -0.5 = 1
        b = (-y * 4.0).sum(-1) / 8  # sum(y) * -0.5
        c = (a * y).unsqueeze(0).permute(0, 2, 1)  # a view of a scaled product
        d = y - 0.5 * x**2  # add(y, x ** 2, alpha=-0.5)
        return a.exp() + (-x), b + (-(y.sum(-1))), c, d, ones / (-x * 4.0)  # a reciprocal

    x, y = torch.randn(3, 2, dtype=F64), torch.randn(3, 2, dtype=F64)
    graph = _graph(f, x, y)
    carried = scales.carry_scales(graph, (x, y))
    ops = [n.target for n in carried.graph.nodes if n.op == "call_function"]
    assert _aten.neg.default not in ops and _aten.div.Tensor not in ops
    assert _aten.reciprocal.default in ops
    assert _calls(carried) == _calls(graph) - 9, (_calls(graph), _calls(carried))
    for z in (torch.randn(3, 2, dtype=F64), torch.tensor([[0.0, -0.0], [1e300, -3.0], [2, 5]])):
        w = torch.randn(3, 2, dtype=F64)
        assert _same(carried(z.to(F64), w), graph(z.to(F64), w))


def test_a_scatter_of_a_negated_gradient_keeps_its_zeros_positive():
    def f(x, y):
        scattered = _aten.select_backward(-(x[:, 0] * 2.0), [3, 2], 1, 0)  # (3, 2), zeros
        doubled = _aten.slice_backward(x[:, 1:] * 2.0, [3, 2], 1, 1, 2, 1)
        return scattered / y, doubled / y  # 1 / +0.0 is +inf; 1 / -0.0 would be -inf

    x, y = torch.randn(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64)
    graph = _graph(f, x, y)
    carried = scales.carry_scales(graph, (x, y))
    for got, want in zip(carried(x, y), graph(x, y), strict=True):
        assert torch.equal(got.signbit(), want.signbit()) and scales._equal(got, want)


def test_an_operation_on_cores_reads_its_other_arguments_values():
    def f(x, y):
        b = ((-x) * y) * 2.0  # a product on the cores x * y, its scale -2 carried
        return _aten.sigmoid_backward(x * 4.0, b)  # the gradient's scale carried, b read

    x, y = torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    graph = _graph(f, x, y)
    carried = scales.carry_scales(graph, (x, y))
    assert carried is not graph
    z, w = torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    assert scales._equal(carried(z, w), graph(z, w))


def test_outputs_are_new_tensors_and_not_the_inputs():
    def f(x):
        return torch.neg(-x), x * 2.0 * 0.5, torch.neg(-(x * 2.0))

    x = torch.randn(3, dtype=F64)
    graph = _graph(f, x)
    carried = scales.carry_scales(graph, (x,))
    got = carried(x)
    assert all(scales._equal(a, b) for a, b in zip(got, graph(x), strict=True))
    assert all(t is not x for t in got)
    assert len({id(t) for t in got}) == 3


def test_a_rewrite_that_would_change_an_output_leaves_the_graph_as_it_was(monkeypatch):
    def f(x):
        return -(x * 2.0) * 0.5

    x = torch.randn(3, dtype=F64)
    graph = _graph(f, x)
    assert scales.carry_scales(graph, (x,)) is not graph
    monkeypatch.setattr(scales, "_equal", lambda a, b: False)
    assert scales.carry_scales(graph, (x,)) is graph


def test_a_graph_with_nothing_to_carry_is_left_as_it_is():
    def f(x):
        return (x * 3.0).exp() / 5.0

    x = torch.randn(3, dtype=F64)
    graph = _graph(f, x)
    assert scales.carry_scales(graph, (x,)) is graph


# generated graphs: each step makes a (3, 4) value from two earlier ones and a number
ROW = torch.tensor([0.5, -3.0, 1.5, 7.0], dtype=F64)
STEPS = {
    "neg": lambda a, b, c: -a,
    "times": lambda a, b, c: a * c,
    "over": lambda a, b, c: a / c,
    "times uniform": lambda a, b, c: a * torch.full((3, 4), c, dtype=F64),
    "times row": lambda a, b, c: a * ROW,
    "product": lambda a, b, c: a * b,
    "quotient": lambda a, b, c: a / b,
    "add": lambda a, b, c: a + b,
    "sub": lambda a, b, c: a - b,
    "square": lambda a, b, c: a**2,
    "sum": lambda a, b, c: a.sum(-1, keepdim=True) * b,
    "mean": lambda a, b, c: a.mean(0) + b,
    "view": lambda a, b, c: a.t().unsqueeze(0)[0].t() + b,
    "select": lambda a, b, c: a.select(1, 2).unsqueeze(1) - b,
    "scatter": lambda a, b, c: _aten.select_backward(a[:, 1], [3, 4], 1, 1) + b,
    "sigmoid backward": lambda a, b, c: _aten.sigmoid_backward(a, b),
    "tanh backward": lambda a, b, c: _aten.tanh_backward(b, a),
    "tanh": lambda a, b, c: torch.tanh(a) * b,
    "where": lambda a, b, c: torch.where(b > 0, a, -a),
}
NUMBERS = [2.0, -0.5, -1.0, 0.25, -8.0, 3.0, 0.1, -1.5]


@st.composite
def programs(draw):
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(STEPS)),
                st.integers(0, 50),
                st.integers(0, 50),
                st.sampled_from(NUMBERS),
            ),
            min_size=1,
            max_size=12,
        )
    )
    return steps, draw(st.integers(1, 3)), draw(st.integers(0, 2**16))


def _run(program):
    steps, n_out, _ = program

    def f(x, y):
        values = [x, y]
        for name, i, j, c in steps:
            values.append(STEPS[name](values[i % len(values)], values[j % len(values)], c))
        return tuple(values[-n_out:])

    return f


def _cancels_or_leaves_range(graph, inputs) -> bool:
    """Whether a sum or difference in ``graph`` is exactly zero on ``inputs`` (its sign is
    the module's stated difference) or a value leaves [1e-150, 1e150] (where a scaled
    intermediate's overflow or subnormal rounding is the other)."""
    sums = {_aten.add.Tensor, _aten.sub.Tensor, _aten.sum.dim_IntList, _aten.mean.dim}
    for node, v in simplify._values(graph, inputs).items():
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            continue
        a = v[torch.isfinite(v)].abs()
        if ((a > 1e150) | ((a < 1e-150) & (a > 0))).any():
            return True
        if node.op == "call_function" and node.target in sums and (v == 0).any():
            return True
    return False


@budget(60)
@given(programs())
def test_generated_graphs_keep_their_values_with_no_more_operations(program):
    g = torch.Generator().manual_seed(program[2])
    x, y = (torch.randn(3, 4, generator=g, dtype=F64) for _ in range(2))
    graph = _graph(_run(program), x, y)
    assume(not _cancels_or_leaves_range(graph, (x, y)))
    carried = scales.carry_scales(graph, (x, y))
    event("rewritten" if carried is not graph else "left as traced")
    assert _calls(carried) <= _calls(graph)
    for _ in range(3):
        a, b = (2 * torch.randn(3, 4, generator=g, dtype=F64) for _ in range(2))
        if _cancels_or_leaves_range(graph, (a, b)):
            continue
        assert _same(carried(a, b), graph(a, b)), (carried.code, graph.code)
