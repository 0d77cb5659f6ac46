"""Divisions by a broadcast tensor rewritten as multiplications by its reciprocal in the traced
graphs of the compiled path (mcmc/reciprocal.py): the same values to a rounding, the same
zeros, infinities and NaN, and only where one reciprocal serves many elements."""

import math

import torch

from latentfit.mcmc.compiled import _trace
from latentfit.mcmc.reciprocal import reciprocal_divisions

F64 = torch.float64
DIV = torch.ops.aten.div.Tensor
RECIPROCAL = torch.ops.aten.reciprocal.default


def _count(graph: torch.fx.GraphModule, target) -> int:
    return sum(1 for node in graph.graph.nodes if node.target is target)


def _mixture_step(y: torch.Tensor):
    """A two-component mixture's log-density and its gradient in (mu, sigma), as the compiled
    leapfrog traces one: ``(y - mu) / sigma`` and its backward pass divide by the scale."""

    def value_and_grad(mu, sigma):  # (c, 2), (c, 2)
        with torch.enable_grad():
            mu = mu.detach().requires_grad_(True)
            sigma = sigma.detach().requires_grad_(True)
            z = (y[:, None] - mu[:, None, :]) / sigma[:, None, :]  # (c, n, 2)
            lp = torch.logsumexp(-0.5 * z**2 - sigma.log()[:, None, :], -1).sum(-1)
            grads = torch.autograd.grad(lp.sum(), (mu, sigma))
        return (lp.detach(), *grads)

    return value_and_grad


def test_a_mixtures_traced_step_divides_by_no_broadcast_scale_and_agrees_with_eager():
    y = torch.linspace(-3, 3, 200, dtype=F64)
    step = _mixture_step(y)
    mu = torch.tensor([[-1.0, 1.0], [0.0, 2.0], [-2.0, 0.5]], dtype=F64)
    sigma = torch.tensor([[0.5, 1.0], [2.0, 0.3], [1.5, 1e-3]], dtype=F64)
    graph, _ = _trace(step, (mu, sigma))
    for node in graph.graph.nodes:  # every division left divides by a tensor of its own size
        if node.target is DIV:
            assert node.args[1].meta["val"].numel() == node.meta["val"].numel()
    assert _count(graph, RECIPROCAL) >= 1
    for got, want in zip(graph(mu, sigma), step(mu, sigma), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=0)


def test_one_reciprocal_serves_every_division_by_the_same_divisor():
    def f(a, b):  # (4, 6), (4, 1)
        return a / b, (a * a) / b, a / a

    a = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    b = torch.rand(4, 1, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.5
    graph, _ = _trace(f, (a, b))
    assert _count(graph, RECIPROCAL) == 1
    assert _count(graph, DIV) == 1  # a / a: no reciprocal would save anything
    for got, want in zip(graph(a, b), f(a, b), strict=True):
        torch.testing.assert_close(got, want, rtol=4e-16, atol=0)


def test_zeros_infinities_and_nan_give_what_a_division_gives():
    special = [0.0, -0.0, 1.0, -2.5, math.inf, -math.inf, math.nan]
    a = torch.tensor(special, dtype=F64)[:, None].expand(7, 7).clone()  # a[i, j] = special[i]
    b = torch.tensor(special, dtype=F64)[None, :]  # (1, 7), broadcast over the rows

    def f(a, b):
        return a / b

    graph, _ = _trace(f, (a, b))
    assert _count(graph, DIV) == 0
    torch.testing.assert_close(graph(a, b), a / b, rtol=4e-16, atol=0, equal_nan=True)


def test_a_promoted_quotient_and_a_same_size_division_stay_divisions():
    def f(a, b, c):  # float64 (5, 3) / float32 (5, 1); (5, 3) / (5, 3)
        return a / b, a / c

    a = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    b = torch.rand(5, 1, generator=torch.Generator().manual_seed(3)) + 0.5
    c = a.abs() + 1.0
    graph, _ = _trace(f, (a, b, c))
    assert _count(graph, DIV) == 2
    assert reciprocal_divisions(graph) == 0
    for got, want in zip(graph(a, b, c), f(a, b, c), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
