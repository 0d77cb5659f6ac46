"""The posterior of a ``fit_map`` result as a log-density of a batch of chains.

``log p(θ | x) = Σ_i log p(x_i | θ) + log p(θ)`` in the family's parameters. Written for one
point, the sampler maps it over the chains with ``torch.func.vmap``, which costs ~0.3 ms a
gradient whatever the model (a gamma posterior of 2 parameters, 4 chains: 17 of the CLI's 22 s
went to vmap's and autograd's bookkeeping). A torch distribution broadcasts its parameters
against the data, so every parameter given a data axis after the chain axis, (c, 1, *shape),
gives the likelihood of every chain and observation at once, (c, n, ...), and the prior's
terms are summed per chain (``map._log_prior``'s ``per_chain``): a few tensor operations per
gradient, as for a density written batched by hand.

Not every family broadcasts so (a log-density of one's own returns one value per observation,
whatever its parameters' shapes), so the batched form is used only where it gives the
one-point form's values and gradients at the chains' starting points and at points around
them; otherwise, or where it raises, the one-point form is mapped with vmap as before.
"""

from __future__ import annotations

import torch

from latentfit.errors import LatentfitError
from latentfit.mcmc.target import Target

__all__ = ["fit_target"]


def fit_target(fit, start_u: torch.Tensor | None = None) -> Target:
    """The posterior of ``fit`` (a ``fit_map`` result with its data and prior) as a Target:
    batched where that agrees with the one-point density at the unconstrained points
    ``start_u`` (c, p) and around them, else the one-point density mapped by vmap. Without
    ``start_u`` the one-point Target is returned (to map starting points with)."""
    family, x, fixed, log_prior = fit.family, fit.data, fit.fixed, fit.log_prior_fn
    shapes = {k: tuple(v.shape) for k, v in fit.params.items()}

    def log_density(**params):  # one point
        return family.log_prob(params, x, fixed).sum() + log_prior(params)

    one = Target(log_density, shapes, family.constraints, dtype=x.dtype, device=x.device)
    per_chain = getattr(log_prior, "per_chain", None)
    if start_u is None or per_chain is None:
        return one

    def batched(**params):  # each (c, *shape)
        c = next(iter(params.values())).shape[0]
        lik = family.log_prob({k: v.unsqueeze(1) for k, v in params.items()}, x, fixed)
        if lik.dim() < 2 or lik.shape[0] != c:
            raise _NotBatched
        return lik.reshape(c, -1).sum(1) + per_chain(params)

    many = Target(
        batched, shapes, family.constraints, vectorized=True, dtype=x.dtype, device=x.device
    )
    return many if _agree(many, one, start_u) else one


class _NotBatched(LatentfitError):  # caught here, never raised to the user
    """The family did not broadcast its parameters over the chains."""


def _agree(many: Target, one: Target, u: torch.Tensor) -> bool:
    """Whether the batched and one-point targets give the same log-densities and gradients
    (to rounding) at ``u`` and at two sets of points around it."""
    g = torch.Generator(device=u.device).manual_seed(0)
    points = [u] + [u + s * torch.randn(u.shape, generator=g, dtype=u.dtype, device=u.device)
                    for s in (0.1, 1.0)]  # fmt: skip
    try:
        for point in points:
            lp_many, grad_many = many.log_prob_and_grad(point)
            lp_one, grad_one = one.log_prob_and_grad(point)
            if not (_close(lp_many, lp_one) and _close(grad_many, grad_one)):
                return False
    except Exception:  # the batched form raised where the one-point form may not
        return False
    return True


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to the rounding of sums taken in another order (the square root of the dtype's
    epsilon, relative to the largest finite value)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    tol = torch.finfo(b.dtype).eps ** 0.5
    finite = b[torch.isfinite(b)]
    scale = 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True))
