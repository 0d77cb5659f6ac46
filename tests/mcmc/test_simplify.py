"""mcmc/simplify.py: the replayed leapfrog without the operations that compute nothing new
gives its graph's values bit for bit, on the four posteriordb posteriors and along steps away
from the example it was simplified on; random operations, outputs and a rewrite that would
change a value are left alone."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from latentfit.mcmc import Target, replay, simplify
from latentfit.mcmc.compiled import leapfrog_parts, static_graph, wrap_leapfrog
from latentfit.mcmc.kernels import State
from tests.mcmc.posteriors import POSTERIORS
from tests.mcmc.test_compiled import random_metric
from tests.mcmc.test_replay import _equal

F64 = torch.float64


def _calls(graph: torch.fx.GraphModule) -> int:
    return sum(n.op == "call_function" for n in graph.graph.nodes)


def leapfrog_parts_of(name: str, c: int = 3, seed: int = 1):
    """A posteriordb posterior's leapfrog step at ``c`` chains, random state and metric (dense
    for diamonds): (target, metric, state, the step as a function, its example inputs)."""
    post = POSTERIORS[name]()
    shapes = {k: tuple(torch.as_tensor(v).shape) for k, v in post.init.items()}
    target = Target(post.log_density, shapes, post.constraints, vectorized=True)
    d = target.n_free
    g = torch.Generator().manual_seed(seed)
    u = 0.1 * torch.randn(c, d, generator=g, dtype=F64)
    lp, grad = target.log_prob_and_grad(u)
    state = State(u, lp, grad)
    metric = random_metric(c, d, name == "diamonds", g, scale=0.1)
    step = torch.full((c,), 0.01, dtype=F64)
    raw, example, _, _ = leapfrog_parts(target, metric, state, step)
    return target, metric, state, raw, example


def _leapfrog_graph(name: str, c: int = 3):
    target, metric, state, raw, example = leapfrog_parts_of(name, c)
    return target, metric, state, static_graph(raw, example), example


@pytest.mark.parametrize("name", ["eight_schools", "arK", "gauss_mix", "diamonds"])
def test_the_simplified_leapfrog_is_its_graph_bit_for_bit_with_fewer_operations(name, monkeypatch):
    # the replay without layout.py's rewrite, whose sums over the points round differently
    # (tests/mcmc/test_layout.py holds it to the graph within the replay's tolerance)
    monkeypatch.setattr(replay, "components_outward", lambda graph, example: graph)
    target, metric, state, graph, example = _leapfrog_graph(name)
    before = _calls(graph)
    simple = simplify.simplify(graph, example)
    assert _calls(graph) == before  # the graph given is left as it was
    assert _calls(simple) <= before - 10, (before, _calls(simple))
    # ten steps away from the example (the folded constants hold for every input)
    want, got = ten_steps(target, metric, state, graph, example)
    for w, g in zip(want, got, strict=True):
        assert _equal(g, w)


def ten_steps(target, metric, state, graph, example) -> tuple[tuple, tuple]:
    """Ten leapfrog steps from ``state`` taken by ``graph`` and by its replay
    (``replay.replay_graph``): each one's last (u, log-density, gradient, momentum)."""
    by_graph = wrap_leapfrog(graph)
    by_replay = wrap_leapfrog(replay.replay_graph(graph, example))
    g = torch.Generator().manual_seed(5)
    p = torch.randn(state.u.shape, generator=g, dtype=F64)
    e = torch.full((state.u.shape[0], 1), 0.01, dtype=F64)
    a, pa, b, pb = state, p, state, p
    for _ in range(10):
        a, pa = by_graph(target, metric, a, pa, e, 0.5 * e)
        b, pb = by_replay(target, metric, b, pb, e, 0.5 * e)
    return (*a, pa), (*b, pb)


@pytest.mark.parametrize("c", [1, 4])
@pytest.mark.parametrize("name", ["eight_schools", "arK", "gauss_mix", "diamonds"])
def test_every_posterior_s_leapfrog_runs_in_static_runtime(name, c):
    # Static Runtime is kept only where it gives the trace's values bit for bit
    # (replay._static); diamonds' one-chain step, run from a frozen module, moved in its last
    # bits and ran in the interpreter instead, a third slower, with no sign of it
    _, _, _, graph, example = _leapfrog_graph(name, c)
    assert isinstance(replay.replay_graph(graph, example), torch.StaticModule)


def _graph(fn, *example):
    return make_fx(fn)(*example)


def test_no_ops_and_input_free_values_go_and_the_values_stay():
    w = torch.tensor([2.0, 3.0], dtype=F64)

    def f(x):
        y = x.detach() ** 1.0 * 1.0  # identities
        seed = torch.ones_like(x.sum()).expand(4).neg()  # a value no input changes
        s = (y * seed[:, None]).sum(1, keepdim=True).squeeze(1)
        return s + (w * 2).reciprocal().sum()

    x = torch.randn(4, 2, dtype=F64)
    graph = _graph(f, x)
    simple = simplify.simplify(graph, (x,))
    kinds = {str(n.target) for n in simple.graph.nodes if n.op == "call_function"}
    assert not kinds & {"aten.detach.default", "aten.ones_like.default", "aten.neg.default"}
    assert "aten.squeeze.dim" not in kinds and "aten.reciprocal.default" not in kinds
    assert _calls(simple) < _calls(graph)
    for _ in range(3):
        z = torch.randn(4, 2, dtype=F64)
        assert _equal(simple(z), graph(z))


def test_subtracting_zero_negations_and_repeats_go_bit_for_bit():
    k = torch.tensor([3.0, -0.5], dtype=F64)

    def f(x):
        a = (x - 0.0) / 1  # identities, signed zeros included
        b = (-a) * 2.0 + k * (-a)  # a negation folded into each product with a constant
        c = a.exp() * x.exp()  # exp(x) twice: once
        return b + c, x + 0.0, a * k, x * k  # x + 0 is not x for x = -0.0; outputs kept apart

    x = torch.tensor([[0.5, -0.0], [-2.0, 0.0]], dtype=F64)
    graph = _graph(f, x)
    simple = simplify.simplify(graph, (x,))
    ops = [n.target for n in simple.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.neg.default not in ops and torch.ops.aten.div.Tensor not in ops
    assert ops.count(torch.ops.aten.sub.Tensor) == 0 and ops.count(torch.ops.aten.exp.default) == 1
    assert ops.count(torch.ops.aten.add.Tensor) == 3  # x + 0 stays
    assert _calls(simple) == _calls(graph) - 5  # sub, div, two neg, an exp
    for z in (x, torch.randn(2, 2, dtype=F64), torch.tensor([[-0.0, 0.0], [1e308, -1e308]])):
        z = z.to(F64)
        got, want = simple(z), graph(z)
        assert all(simplify._bitwise(p, q) for p, q in zip(got, want, strict=True))
        assert got[2] is not got[3]


def test_random_draws_are_not_made_constants():
    def f(x):
        return x + torch.rand(3, dtype=F64)  # no input, but a new value each call

    x = torch.zeros(3, dtype=F64)
    simple = simplify.simplify(_graph(f, x), (x,))
    assert not torch.equal(simple(x), simple(x))


def test_an_input_is_never_returned_as_a_new_output():
    def f(x):
        return x.detach(), x * 2

    x = torch.randn(3, dtype=F64)
    simple = simplify.simplify(_graph(f, x), (x,))
    out, _ = simple(x)
    assert torch.equal(out, x) and out is not x  # the graph's own detach, kept
    assert any(n.target is torch.ops.aten.detach.default for n in simple.graph.nodes)


def test_a_constant_output_is_a_new_tensor_each_call():
    def f(x):
        return x + 1, torch.zeros_like(x)

    x = torch.randn(3, dtype=F64)
    simple = simplify.simplify(_graph(f, x), (x,))
    (_, a), (_, b) = simple(x), simple(x)
    a.add_(1.0)
    assert torch.equal(b, torch.zeros(3, dtype=F64))


def test_a_rewrite_that_would_change_an_output_leaves_the_graph_as_it_was(monkeypatch):
    def f(x):
        return (x.detach() * 2) ** 1.0

    x = torch.randn(3, dtype=F64)
    graph = _graph(f, x)
    monkeypatch.setattr(simplify, "_bitwise", lambda a, b: False)
    assert simplify.simplify(graph, (x,)) is graph


def test_a_failing_simplification_still_replays_the_graph(monkeypatch):
    def broken(graph, example):
        raise RuntimeError("no")

    monkeypatch.setattr(replay, "simplify", broken)
    _, _, _, graph, example = _leapfrog_graph("eight_schools")
    replayed = replay.replay_graph(graph, example)
    assert replayed is not None
    for want, got in zip(graph(*example), replayed(*example), strict=True):
        assert _equal(got, want)
