"""Variational families q(z): modules whose ``forward()`` returns a torch Distribution.

A guide owns its variational parameters as ``nn.Parameter``s, so any torch optimiser can
fit it; it returns a fresh distribution on every call so that gradients reach them. Guides for
constrained latents (a probability, a rate) put a Gaussian on the unconstrained space and push
it through ``biject_to(support)`` (Kucukelbir et al. 2017, ADVI).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    biject_to,
    constraints,
)
from torch.distributions.transforms import AffineTransform, Transform
from torch.nn.functional import softplus

__all__ = [
    "DistributionGuide",
    "FlowGuide",
    "FullRankGaussian",
    "Guide",
    "LocalMeanFieldGaussian",
    "MeanFieldGaussian",
]


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def _to_support(base: Distribution, support) -> Distribution:
    if support is None or support is constraints.real:
        return base
    return TransformedDistribution(base, [biject_to(support)])


class Guide(nn.Module):
    """Base class: ``guide()`` returns q(z) with ``event_shape == (dim,)``."""

    def forward(self) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError


class MeanFieldGaussian(Guide):
    """q(z) = Π_j N(z_j | m_j, s_j²) on the unconstrained space, then mapped to ``support``."""

    def __init__(
        self, dim: int, *, loc=None, scale: float = 0.1, support=None, dtype=None, device=None
    ):
        super().__init__()
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        loc = torch.zeros(dim, **kw) if loc is None else torch.as_tensor(loc, **kw).clone()
        self.loc = nn.Parameter(loc)  # (d,)
        self.raw_scale = nn.Parameter(_inv_softplus(torch.full((dim,), float(scale), **kw)))
        self.support = support

    @property
    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale)

    def forward(self) -> Distribution:
        return _to_support(Independent(Normal(self.loc, self.scale), 1), self.support)


class FullRankGaussian(Guide):
    """q(z) = N(z | m, L Lᵀ) with L lower triangular, positive diagonal (softplus)."""

    def __init__(
        self, dim: int, *, loc=None, scale: float = 0.1, support=None, dtype=None, device=None
    ):
        super().__init__()
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        loc = torch.zeros(dim, **kw) if loc is None else torch.as_tensor(loc, **kw).clone()
        self.loc = nn.Parameter(loc)
        self.raw_diag = nn.Parameter(_inv_softplus(torch.full((dim,), float(scale), **kw)))
        self.off_diag = nn.Parameter(torch.zeros(dim, dim, **kw))
        self.support = support

    @property
    def scale_tril(self) -> torch.Tensor:
        return torch.tril(self.off_diag, -1) + torch.diag_embed(softplus(self.raw_diag))

    def forward(self) -> Distribution:
        return _to_support(MultivariateNormal(self.loc, scale_tril=self.scale_tril), self.support)


class DistributionGuide(Guide):
    """Any torch.distributions family with learnable parameters, e.g.
    ``DistributionGuide(Beta, concentration1=1.0, concentration0=1.0)``.

    Each parameter is stored unconstrained and mapped through ``biject_to`` of the family's
    ``arg_constraints``, so it stays valid during optimisation. Families with ``rsample``
    (Normal, Beta, Gamma, Dirichlet...) work with the reparameterisation estimator; the others
    with :class:`~latentfit.vi.estimators.ScoreFunction`.
    """

    def __init__(
        self, family: type[Distribution], *, event_dims: int = 0, dtype=None, device=None, **init
    ):
        super().__init__()
        self.family, self.event_dims = family, event_dims
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self._names = list(init)
        for name, value in init.items():
            cons = family.arg_constraints.get(name)
            if cons is None:
                raise ValueError(
                    f"{family.__name__} has no parameter {name!r}; "
                    f"its parameters are {sorted(family.arg_constraints)}"
                )
            raw = biject_to(cons).inv(torch.as_tensor(value, **kw))
            setattr(self, f"raw_{name}", nn.Parameter(raw.clone()))

    def params(self) -> dict[str, torch.Tensor]:
        return {
            n: biject_to(self.family.arg_constraints[n])(getattr(self, f"raw_{n}"))
            for n in self._names
        }

    def forward(self) -> Distribution:
        d = self.family(**self.params())
        return Independent(d, self.event_dims) if self.event_dims else d


class _AffineCoupling(Transform):
    """Real NVP coupling (Dinh et al. 2017): the unmasked half is scaled and shifted by
    functions of the masked half; log|det J| = Σ s."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, net: nn.Module, mask: torch.Tensor):
        super().__init__(cache_size=1)
        self.net, self.mask = net, mask

    def _st(self, x_masked):
        s, t = self.net(x_masked).chunk(2, dim=-1)
        return torch.tanh(s) * (1 - self.mask), t * (1 - self.mask)

    def _call(self, x):
        s, t = self._st(x * self.mask)
        return x * self.mask + (1 - self.mask) * (x * s.exp() + t)

    def _inverse(self, y):
        s, t = self._st(y * self.mask)
        return y * self.mask + (1 - self.mask) * (y - t) * (-s).exp()

    def log_abs_det_jacobian(self, x, y):
        return self._st(x * self.mask)[0].sum(-1)


class FlowGuide(Guide):
    """A normalising-flow guide: N(0, I) pushed through ``n_layers`` Real NVP affine couplings
    with alternating masks, then an elementwise affine map (Rezende & Mohamed 2015;
    Dinh et al. 2017). Needs ``dim >= 2`` (a coupling splits the coordinates)."""

    def __init__(
        self,
        dim: int,
        *,
        n_layers: int = 4,
        hidden: int = 32,
        loc=None,
        scale: float = 1.0,
        support=None,
        dtype=None,
        device=None,
    ):
        super().__init__()
        if dim < 2:
            raise ValueError(
                "FlowGuide needs dim >= 2 (a coupling layer splits the coordinates); use "
                "MeanFieldGaussian or FullRankGaussian for a one-dimensional latent"
            )
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.nets = nn.ModuleList()
        for _ in range(n_layers):
            net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * dim))
            nn.init.zeros_(net[-1].weight)  # start at the identity map
            nn.init.zeros_(net[-1].bias)
            self.nets.append(net.to(**kw))
        masks = [(torch.arange(dim) + i) % 2 for i in range(n_layers)]
        self.register_buffer("masks", torch.stack(masks).to(**kw))
        loc = torch.zeros(dim, **kw) if loc is None else torch.as_tensor(loc, **kw).clone()
        self.loc = nn.Parameter(loc)
        self.raw_scale = nn.Parameter(_inv_softplus(torch.full((dim,), float(scale), **kw)))
        self.support = support

    def forward(self) -> Distribution:
        zeros = torch.zeros_like(self.loc)
        base = Independent(Normal(zeros, torch.ones_like(self.loc)), 1)
        layers: list[Transform] = [
            _AffineCoupling(n, m) for n, m in zip(self.nets, self.masks, strict=True)
        ]
        layers.append(AffineTransform(self.loc, softplus(self.raw_scale), event_dim=1))
        if self.support is not None and self.support is not constraints.real:
            layers.append(biject_to(constraints.independent(self.support, 1)))
        return TransformedDistribution(base, layers)


class LocalMeanFieldGaussian(nn.Module):
    """One Gaussian q(z_i) per data point (local latents): ``guide(index)`` returns the
    distribution of the rows ``index`` with ``batch_shape (b,)`` and ``event_shape (dim,)``."""

    def __init__(self, n: int, dim: int, *, scale: float = 0.1, dtype=None, device=None):
        super().__init__()
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.loc = nn.Parameter(torch.zeros(n, dim, **kw))  # (n, d)
        self.raw_scale = nn.Parameter(_inv_softplus(torch.full((n, dim), float(scale), **kw)))

    def forward(self, index=None) -> Distribution:
        loc, raw = (
            (self.loc, self.raw_scale)
            if index is None
            else (self.loc[index], self.raw_scale[index])
        )
        return Independent(Normal(loc, softplus(raw)), 1)
