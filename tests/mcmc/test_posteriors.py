"""The four posteriordb log-densities three ways: torch.distributions (the Stan model's
transcription), plain tensor arithmetic (what the sampler runs) and the hand-written gradient
(``value_and_grad``), held together in float64 at random points; and ``Target``'s chain rule
for a given gradient through every transform kind, against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.distributions as D
from torch.distributions import constraints

from latentfit.errors import ParameterError
from latentfit.mcmc import Target, ordered_vector
from tests.mcmc.posteriors import POSTERIORS

F64 = torch.float64


def _target(post, **kw):
    shapes = {k: tuple(torch.as_tensor(v).shape) for k, v in post.init.items()}
    return Target(post.log_density, shapes, post.constraints, vectorized=True, **kw)


@pytest.mark.parametrize("name", list(POSTERIORS))
def test_plain_density_equals_the_distributions_one(name):
    post = POSTERIORS[name]()
    t = _target(post)
    u = torch.randn(16, t.n_free, dtype=F64, generator=torch.Generator().manual_seed(0))
    params, _ = t.constrain(u)
    want = post.dist_log_density(**params)
    got = post.log_density(**params)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", list(POSTERIORS))
def test_hand_gradient_equals_autograd(name):
    post = POSTERIORS[name]()
    t = _target(post, value_and_grad=post.value_and_grad)
    u = torch.randn(16, t.n_free, dtype=F64, generator=torch.Generator().manual_seed(1))
    lp_a, g_a = t._value_and_grad(u)  # autograd through the plain density
    lp_h, g_h = t._given_value_and_grad(u)
    torch.testing.assert_close(lp_h, lp_a, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(g_h, g_a, rtol=1e-9, atol=1e-9)
    assert t.check_gradient(u) < 1e-9


def test_given_gradient_goes_through_every_transform_kind():
    """real, positive, unit interval, ordered and a general bijection (simplex): the given
    natural-parameter gradient, carried to u with the Jacobian terms, equals autograd's."""
    w = torch.tensor([0.3, -1.2, 0.7], dtype=F64)

    def density(a, s, q, o, p):
        return (
            D.Normal(0.5, 2.0).log_prob(a).sum()
            + D.Gamma(torch.tensor(3.0, dtype=F64), 2.0).log_prob(s)
            + D.Beta(torch.tensor(2.0, dtype=F64), 3.0).log_prob(q).sum()
            + (w[:2] * o).sum()
            - (o**2).sum()
            + D.Dirichlet(torch.tensor([2.0, 3.0, 4.0], dtype=F64)).log_prob(p)
        )

    def value_and_grad(a, s, q, o, p):
        grads = {
            "a": -(a - 0.5) / 4.0,
            "s": 2.0 / s - 2.0,
            "q": 1.0 / q - 2.0 / (1 - q),
            "o": w[:2] - 2 * o,
            "p": torch.tensor([1.0, 2.0, 3.0], dtype=F64) / p,
        }
        return density(a, s, q, o, p), grads

    shapes = {"a": (2, 2), "s": (), "q": (3,), "o": (2,), "p": (3,)}
    cons = {
        "s": constraints.positive,
        "q": constraints.unit_interval,
        "o": ordered_vector,
        "p": constraints.simplex,
    }
    t = Target(density, shapes, cons, value_and_grad=value_and_grad)
    u = torch.randn(5, t.n_free, dtype=F64, generator=torch.Generator().manual_seed(2))
    lp_a, g_a = t._value_and_grad(u)
    lp_h, g_h = t.log_prob_and_grad(u)
    torch.testing.assert_close(lp_h, lp_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_h, g_a, rtol=1e-10, atol=1e-10)


def test_a_gradient_of_the_wrong_shape_names_the_parameter():
    def vg(x, y):
        return -(x**2).sum() - y**2, {"x": -2 * x, "y": torch.zeros(3, dtype=F64)}

    t = Target(lambda x, y: -(x**2).sum() - y**2, {"x": (2,), "y": ()}, value_and_grad=vg)
    with pytest.raises(ParameterError, match="'y'"):
        t.log_prob_and_grad(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ParameterError, match="value_and_grad"):
        Target(lambda x: x, {"x": ()}, value_and_grad=3)
