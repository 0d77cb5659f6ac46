"""The log-sum-exp written out as slices while tracing (mcmc/short_lse.py): the same values and
gradients as ``torch.logsumexp``, and the compiled path's traces hold no log-sum-exp over a
few components."""

import math

import pytest
import torch

from latentfit.mcmc.compiled import _trace
from latentfit.mcmc.short_lse import SMALL, ShortLogSumExp

F64 = torch.float64


def _values(k: int, dim: int) -> torch.Tensor:
    """(3, 5, k) moved so that the k components lie along ``dim``, with rows that are all -inf,
    hold an inf, a NaN, or terms far apart."""
    x = torch.randn(3, 5, k, generator=torch.Generator().manual_seed(k), dtype=F64) * 3
    x[0, 0] = -math.inf
    x[0, 1, 0] = math.inf
    x[0, 2, -1] = math.nan
    x[1, 0, 0] = -math.inf
    x[1, 1, 0] = 800.0
    x[1, 1, -1] = -800.0
    return x.movedim(-1, dim)


@pytest.mark.parametrize("k", [2, 3, 4, 8, SMALL])
@pytest.mark.parametrize("dim", [-1, 0, 1, 2])
@pytest.mark.parametrize("keepdim", [False, True])
def test_same_values_and_gradients_as_torch(k, dim, keepdim):
    x = _values(k, dim)
    want = torch.logsumexp(x, dim, keepdim)
    with ShortLogSumExp():
        got = torch.logsumexp(x, dim, keepdim)
        method = x.logsumexp(dim=dim, keepdim=keepdim)
        special = torch.special.logsumexp(x, [dim], keepdim)
    for out in (got, method, special):
        assert out.shape == want.shape
        torch.testing.assert_close(out, want, equal_nan=True, rtol=1e-15, atol=0)

    finite = torch.randn(4, 6, k, generator=torch.Generator().manual_seed(0), dtype=F64)
    finite = finite.movedim(-1, dim).requires_grad_(True)
    shape = torch.logsumexp(finite, dim, keepdim).shape
    weights = torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    (g_want,) = torch.autograd.grad((torch.logsumexp(finite, dim, keepdim) * weights).sum(), finite)
    with ShortLogSumExp():
        (g_got,) = torch.autograd.grad(
            (torch.logsumexp(finite, dim, keepdim) * weights).sum(), finite
        )
    torch.testing.assert_close(g_got, g_want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("call", ["one", "wide", "two dims", "int"])
def test_other_log_sum_exps_are_left_to_torch(call):
    x = torch.randn(3, 1, SMALL + 1, dtype=F64)
    args = {
        "one": (x, 1),  # a dimension of one term
        "wide": (x, -1),  # more components than SMALL
        "two dims": (x, (1, 2)),
        "int": (torch.arange(6).view(3, 2), -1),  # torch's own error or result, unchanged
    }[call]

    def run():
        try:
            return torch.logsumexp(*args)
        except RuntimeError as exc:
            return str(exc)

    want = run()
    with ShortLogSumExp():
        got = run()
    if isinstance(want, str):
        assert got == want
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_traced_gradient_of_a_mixture_holds_no_log_sum_exp():
    # a two-component mixture's log-density and its gradient, as the compiled leapfrog traces it
    y = torch.linspace(-3, 3, 50, dtype=F64)

    def value_and_grad(mu):  # (c, 2)
        with torch.enable_grad():
            mu = mu.detach().requires_grad_(True)
            comp = -0.5 * (y[:, None] - mu[:, None, :]) ** 2  # (c, 50, 2)
            lp = torch.logsumexp(comp + math.log(0.5), -1).sum(-1)
            (grad,) = torch.autograd.grad(lp.sum(), mu)
        return lp.detach(), grad

    mu = torch.tensor([[-1.0, 1.0], [0.0, 2.0], [-2.0, 0.5]], dtype=F64)
    graph, _ = _trace(value_and_grad, (mu,))
    targets = {str(node.target) for node in graph.graph.nodes}
    assert not any("logsumexp" in t for t in targets)
    for got, want in zip(graph(mu), value_and_grad(mu), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
