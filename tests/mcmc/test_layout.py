"""mcmc/layout.py: a replayed graph's (…, points, components) tensors held as (…, components,
points) give the graph's values (to the replay's tolerance), on other inputs than the example
too; every operation the rewrite knows, and one it does not, read the right values; graphs
without such tensors, and a rewrite whose values would differ, are left as they were."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from latentfit.mcmc import layout, replay
from latentfit.mcmc.compiled import _close
from latentfit.mcmc.simplify import _values
from tests.mcmc.test_simplify import _leapfrog_graph, ten_steps

F64 = torch.float64
_aten = torch.ops.aten


def _graph(fn, *example):
    return make_fx(fn)(*example)


def _agree(a, b) -> bool:
    a = a if isinstance(a, tuple | list) else (a,)
    b = b if isinstance(b, tuple | list) else (b,)
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and _close(x, y)
        for x, y in zip(a, b, strict=True)
    )


def _wide_elementwise(graph: torch.fx.GraphModule, example: tuple) -> list[str]:
    """The elementwise operations of ``graph`` whose output is a (…, n, K) tensor."""
    env = _values(graph, example)
    return [
        n.name
        for n in graph.graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, torch._ops.OpOverload)
        and torch.Tag.pointwise in n.target.tags
        and layout._trailing(env[n]) > 0
    ]


def test_gauss_mix_s_replayed_leapfrog_holds_no_tensor_of_two_last_components():
    target, metric, state, graph, example = _leapfrog_graph("gauss_mix", c=4)
    before = _wide_elementwise(graph, example)
    assert len(before) >= 10, before
    moved = layout.components_outward(graph, example)
    assert moved is not graph
    assert _wide_elementwise(moved, example) == []
    # ten steps away from the example, replayed (Static Runtime) against the graph itself
    want, got = ten_steps(target, metric, state, graph, example)
    assert _agree(got, want)


C, N, K = 3, 200, 4
W = torch.linspace(0.5, 2.0, K, dtype=F64)  # a (K,) constant
Y = torch.linspace(-3.0, 3.0, N, dtype=F64)[:, None]  # an (N, 1) constant
T3 = torch.randn(1, N, K, generator=torch.Generator().manual_seed(0), dtype=F64)


def _comp(mu, s):
    """(C, N, K) from (C, K) inputs, through constants of every rank and computed operands."""
    z = (Y - mu[:, None, :]) * s.reciprocal()[:, None, :]  # computed (C, 1, K) operands
    return z * W - 0.5 * z**2 + T3 + torch.tensor(0.25, dtype=F64)  # (K,), 3-d and 0-d


CASES = {
    "sum over the points": lambda mu, s: _comp(mu, s).sum(1),
    "sum over the components": lambda mu, s: _comp(mu, s).sum(-1),
    "sum over the points, kept": lambda mu, s: _comp(mu, s).sum(-2, keepdim=True) * mu[:, None],
    "sum over the chains": lambda mu, s: _comp(mu, s).sum(0).exp(),
    "sum over everything": lambda mu, s: _comp(mu, s).sum() + mu.sum(),
    "mean and amax": lambda mu, s: _comp(mu, s).mean(1) + _comp(mu, s).amax(-1).sum(-1)[:, None],
    "amin over both": lambda mu, s: _comp(mu, s).amin((1, 2)),
    "a log-sum-exp of slices": lambda mu, s: (
        torch.stack([c.exp() for c in _comp(mu, s).unbind(-1)], -1).sum(-1).log().sum(-1)
    ),
    "select a point": lambda mu, s: _comp(mu, s).select(1, 7) + _comp(mu, s).select(-1, 2)[:, :K],
    "an operation it does not know": lambda mu, s: _comp(mu, s).cumsum(1)[:, -1],
    "returned as it is": lambda mu, s: _comp(mu, s),
    "a where and a comparison": lambda mu, s: torch.where(_comp(mu, s) > 0, _comp(mu, s), 0.0).sum(
        1
    ),
    "autograd's backward pass": lambda mu, s: torch.func.grad(
        lambda m: torch.logsumexp(_comp(m, s), -1).sum()
    )(mu),
}


D = 3
A = torch.randn(K, D, D, generator=torch.Generator().manual_seed(2), dtype=F64)  # (K, D, D)
Y4 = torch.randn(N, 1, D, generator=torch.Generator().manual_seed(3), dtype=F64)  # (N, 1, D)


def _gauss(mu, s):
    """(C, N, K, D) from (C, K) inputs: points whiten by a component's matrix, as a full
    covariance's log-density does (the points two dimensions from the last)."""
    diff = Y4 - mu[:, None, :, None] * s[:, None, :, None]  # (C, N, K, D)
    white = (diff[..., None, :] * A).sum(-1)  # (C, N, K, D)
    return white


CASES |= {
    "a full covariance's quadratic form": lambda mu, s: (_gauss(mu, s) ** 2).sum(-1).sum(1),
    "its log-sum-exp over the components": lambda mu, s: torch.logsumexp(
        -0.5 * (_gauss(mu, s) ** 2).sum(-1) + mu[:, None], -1
    ).sum(-1),
    "kept dimensions": lambda mu, s: _gauss(mu, s).sum((2, 3), keepdim=True).exp().mean(1),
    "a coordinate, a component": lambda mu, s: (
        _gauss(mu, s).select(-1, 1).amax(1) + _gauss(mu, s).select(2, 0).sum((1, 2))[:, None]
    ),
    "the coordinates unbound and stacked": lambda mu, s: torch.stack(
        [c * 2 for c in _gauss(mu, s).unbind(-1)], -1
    ).sum((1, 3)),
    "stacked before the points": lambda mu, s: (
        torch.stack([_comp(mu, s), _comp(mu, s) * 2], 1).sum(2).sum(-1)
    ),
    "autograd through a full covariance": lambda mu, s: torch.func.grad(
        lambda m: torch.logsumexp(-(_gauss(m, s) ** 2).sum(-1), -1).sum()
    )(mu),
}


@pytest.mark.parametrize(
    "shape, trailing",
    [
        ((3, 200, 4), 1),
        ((3, 200, 4, 3), 2),
        ((3, 200, 2, 2, 2), 3),
        ((3, 200, 1), 0),  # nothing to gain from a trailing 1
        ((3, 200, 33), 0),
        ((3, 200, 8, 8), 0),  # 64 > 32 trailing elements
        ((3, 63, 2), 0),
        ((3, 100, 30), 0),  # fewer than four times as many points
        ((200, 4), 0),  # no chains
        ((3, 4, 200), 0),
    ],
    ids=str,
)
def test_which_tensors_are_moved(shape, trailing):
    assert layout._trailing(torch.zeros(shape)) == trailing


@pytest.mark.parametrize("case", list(CASES))
def test_every_operation_reads_the_values_it_read_before(case):
    fn = CASES[case]
    g = torch.Generator().manual_seed(1)
    example = (
        torch.randn(C, K, generator=g, dtype=F64),
        torch.rand(C, K, generator=g, dtype=F64) + 0.5,
    )
    graph = _graph(fn, *example)
    moved = layout.components_outward(graph, example)
    assert moved is not graph
    assert _wide_elementwise(moved, example) == []
    other = (
        torch.randn(C, K, generator=g, dtype=F64),
        torch.rand(C, K, generator=g, dtype=F64) + 0.5,
    )
    for x in (example, other):
        assert _agree(moved(*x), fn(*x))


@pytest.mark.parametrize(
    "shape", [(3, 200, 33), (3, 40, 2), (3, 20, 8), (200, 2), (3, 2, 200)], ids=str
)
def test_a_graph_without_long_points_and_few_components_is_left_as_it_was(shape):
    x = torch.randn(shape, dtype=F64)
    graph = _graph(lambda x: (x.exp() * 2).sum(-1), x)
    assert layout.components_outward(graph, (x,)) is graph


def test_a_rewrite_whose_values_differ_is_not_used(monkeypatch):
    example = (torch.randn(C, K, dtype=F64), torch.rand(C, K, dtype=F64) + 0.5)
    graph = _graph(CASES["sum over the points"], *example)
    monkeypatch.setattr(layout, "_close_outputs", lambda *a: False)
    assert layout.components_outward(graph, example) is graph


def test_a_check_that_returns_nothing_is_kept():
    # a Cholesky factor's check raises where the factor failed (simplify._kept): the rewrite's
    # dead-code elimination keeps it as simplify's does
    def fn(mu, s):
        cov = torch.eye(2, dtype=F64) * s[:, :1, None] + 0.1
        chol = torch.linalg.cholesky(cov)
        return _comp(mu, s).sum((1, 2)) + chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    example = (torch.randn(C, K, dtype=F64), torch.rand(C, K, dtype=F64) + 0.5)
    graph = _graph(fn, *example)

    def checks(gm):
        return sum(n.target is _aten._linalg_check_errors.default for n in gm.graph.nodes)

    moved = layout.components_outward(graph, example)
    assert moved is not graph and checks(moved) == checks(graph) >= 1
    bad = (example[0], -example[1])  # the matrix is not positive definite
    with pytest.raises(RuntimeError, match="cholesky"):
        moved(*bad)


def test_a_failing_rewrite_still_replays_the_graph(monkeypatch):
    def broken(graph, example):
        raise RuntimeError("no")

    monkeypatch.setattr(replay, "components_outward", broken)
    _, _, _, graph, example = _leapfrog_graph("gauss_mix", c=2)
    replayed = replay.replay_graph(graph, example)
    assert replayed is not None
    assert _agree(replayed(*example), graph(*example))
