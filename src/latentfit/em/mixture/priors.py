"""Conjugate priors for MAP-EM: the M-step maximises E[log p(x, z | θ)] + log p(θ).

Each prior is a small frozen dataclass with two pure methods: ``map_*`` (the closed-form mode of
the conditional posterior given the E-step statistics) and ``log_prob`` (added to the EM
objective so that MAP-EM is monitored on the quantity it increases, the log posterior).

Beyond regularisation, the priors keep components from collapsing: a Beta(a, b) prior with
a, b > 1 keeps Bernoulli means inside (0, 1), a Normal–Inverse-Wishart prior keeps covariances
positive definite however few points a component holds (Fraley & Raftery 2007, the prior of
mclust).

References: Bishop (2006) §2.2–2.3; Murphy (2012) §4.6.3 and §11.4.2.8; Gelman et al. (2013)
§3.6; Fraley & Raftery (2007), "Bayesian regularization for normal mixture estimation and
model-based clustering", J. Classification 24.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Beta, Dirichlet, Gamma, MultivariateNormal, Wishart

from latentfit.errors import ParameterError

__all__ = [
    "BetaPrior",
    "DirichletPrior",
    "GammaPrior",
    "NormalInverseWishartPrior",
]


def _check_at_least_one(value: float, name: str) -> float:
    if not (float(value) >= 1.0):
        raise ParameterError(
            f"{name} must be >= 1 for a MAP estimate inside the parameter space (1 = no prior), "
            f"got {value!r}"
        )
    return float(value)


def dirichlet_setting(value, name: str) -> DirichletPrior:
    """The symmetric Dirichlet prior a mixture's setting ``name`` (``weight_concentration``,
    ``prob_concentration``) gives: ``value`` a finite number >= 1, else ParameterError naming
    the setting ('zzz' raised "could not convert string to float", naming nothing)."""
    real = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if not (real and math.isfinite(value) and value >= 1):
        raise ParameterError(
            f"{name} must be a finite number >= 1 (the concentration of a symmetric Dirichlet "
            f"prior, for a MAP estimate inside the parameter space; 1 = no prior), got {value!r}"
        )
    return DirichletPrior(float(value))


def _sum_log_prob(
    family, params: tuple[float, ...], x: torch.Tensor, *, flat: bool
) -> torch.Tensor:
    """Σ log p(x) under the torch distribution ``family(*params)`` (the parameters in the
    dtype and on the device of ``x``); 0 for a flat prior, a constant left out so that the
    MLE objectives are unchanged."""
    if flat:
        return x.new_zeros(())
    args = (torch.as_tensor(p, dtype=x.dtype, device=x.device) for p in params)
    return family(*args).log_prob(x).sum()


@dataclass(frozen=True)
class DirichletPrior:
    """Symmetric Dirichlet(α) on a probability vector (mixture weights, category probabilities).

    α = 1 is flat (the MAP estimate is the MLE); α > 1 pulls towards uniform and keeps every
    probability positive. Mode: p_j ∝ n_j + α − 1 (Bishop 2006, eq. 2.39 and Ex. 2.9).
    """

    alpha: float = 1.0

    def __post_init__(self):
        _check_at_least_one(self.alpha, "the Dirichlet concentration alpha")

    def map_probs(self, counts: torch.Tensor) -> torch.Tensor:
        """Mode of the posterior Dirichlet over the last axis: (..., c) → (..., c). A
        component without counts under a flat prior (its only members empty rows, which have
        the same likelihood under any probabilities) is given the uniform ones, not 0 / 0."""
        a = counts + (self.alpha - 1.0)
        total = a.sum(-1, keepdim=True)
        return torch.where(total > 0, a / total.where(total > 0, 1.0), 1.0 / a.shape[-1])

    def log_prob(self, probs: torch.Tensor) -> torch.Tensor:
        """Σ log Dir(p | α) over the leading axes of ``probs`` (..., c)."""
        if self.alpha == 1.0:  # flat: a constant, left out so MLE objectives are unchanged
            return probs.new_zeros(())
        conc = torch.full(probs.shape[-1:], self.alpha, dtype=probs.dtype, device=probs.device)
        return Dirichlet(conc).log_prob(probs).sum()


@dataclass(frozen=True)
class BetaPrior:
    """Beta(a, b) on every Bernoulli mean. Mode: μ = (Σ r x + a − 1) / (Σ r + a + b − 2)."""

    a: float = 1.0
    b: float = 1.0

    def __post_init__(self):
        _check_at_least_one(self.a, "the Beta prior's a")
        _check_at_least_one(self.b, "the Beta prior's b")

    def map_means(self, S0: torch.Tensor, S1: torch.Tensor) -> torch.Tensor:
        """``S0`` (k,) = Σ r, ``S1`` (k, d) = Σ r x → means (k, d)."""
        return (S1 + (self.a - 1.0)) / (S0.unsqueeze(1) + (self.a + self.b - 2.0))

    def log_prob(self, means: torch.Tensor) -> torch.Tensor:
        return _sum_log_prob(Beta, (self.a, self.b), means, flat=self.a == self.b == 1.0)


@dataclass(frozen=True)
class GammaPrior:
    """Gamma(shape a, rate b) on every Poisson rate. Mode: λ = (Σ r x + a − 1) / (Σ r + b)."""

    a: float = 1.0
    b: float = 0.0

    def __post_init__(self):
        _check_at_least_one(self.a, "the Gamma prior's shape a")
        if not (float(self.b) >= 0):
            raise ParameterError(f"the Gamma prior's rate b must be >= 0, got {self.b!r}")

    def map_rates(self, S0: torch.Tensor, S1: torch.Tensor) -> torch.Tensor:
        return (S1 + (self.a - 1.0)) / (S0.unsqueeze(1) + self.b)

    def log_prob(self, rates: torch.Tensor) -> torch.Tensor:
        # a = 1, b = 0 is the improper flat prior; a rate b = 0 with a > 1 is taken as the
        # smallest positive rate
        flat = self.a == 1.0 and self.b == 0.0
        return _sum_log_prob(Gamma, (self.a, max(self.b, 1e-300)), rates, flat=flat)


@dataclass(frozen=True)
class NormalInverseWishartPrior:
    """Normal–Inverse-Wishart prior on a Gaussian component's (μ, Σ):

    Σ ~ IW(Ψ₀, ν₀), μ | Σ ~ N(m₀, Σ / κ₀).

    The joint posterior mode given weighted statistics (n = Σ r, x̄, scatter S about x̄) is
    (Murphy 2012, eq. 4.215; Fraley & Raftery 2007, eq. 6):

        μ = (κ₀ m₀ + n x̄) / (κ₀ + n)
        Σ = (Ψ₀ + S + κ₀ n / (κ₀ + n) (x̄ − m₀)(x̄ − m₀)ᵀ) / (ν₀ + n + d + 2)

    :meth:`default` builds mclust's data-dependent choice: m₀ the data mean, κ₀ = 0.01,
    ν₀ = d + 2 and Ψ₀ = cov(X) / k^(2/d).
    """

    mean: torch.Tensor  # (d,)
    kappa: float
    dof: float
    scale: torch.Tensor  # (d, d)

    def __post_init__(self):
        d = self.mean.shape[-1]
        if not (self.kappa > 0):
            raise ParameterError(f"the NIW prior's kappa must be > 0, got {self.kappa!r}")
        if not (self.dof > d - 1):
            raise ParameterError(f"the NIW prior's dof must be > d - 1 = {d - 1}, got {self.dof!r}")
        if tuple(self.scale.shape) != (d, d):
            raise ParameterError(
                f"the NIW prior's scale must be ({d}, {d}), got {tuple(self.scale.shape)}"
            )

    @classmethod
    def default(cls, X: torch.Tensor, n_components: int, shrinkage: float = 0.01):
        d = X.shape[1]
        cov = torch.atleast_2d(torch.cov(X.T))
        return cls(X.mean(0), shrinkage, d + 2.0, cov / n_components ** (2.0 / d))

    def map_gaussian(
        self, S0: torch.Tensor, S1: torch.Tensor, S2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """From ``S0`` (k,) = Σ r, ``S1`` (k, d) = Σ r x, ``S2`` (k, d, d) = Σ r x xᵀ to the
        posterior modes: means (k, d), covariances (k, d, d)."""
        d = S1.shape[1]
        m0 = self.mean.to(S1)
        nk = S0.clamp_min(torch.finfo(S0.dtype).tiny)
        xbar = S1 / nk.unsqueeze(1)  # (k, d)
        scatter = S2 - nk[:, None, None] * xbar.unsqueeze(2) * xbar.unsqueeze(1)  # (k, d, d)
        means = (self.kappa * m0 + S1) / (self.kappa + S0).unsqueeze(1)
        diff = xbar - m0  # (k, d)
        shrink = (self.kappa * S0 / (self.kappa + S0))[:, None, None]
        psi = self.scale.to(S1) + scatter + shrink * diff.unsqueeze(2) * diff.unsqueeze(1)
        cov = psi / (self.dof + S0 + d + 2.0)[:, None, None]
        return means, 0.5 * (cov + cov.mT)

    def log_prob(self, means: torch.Tensor, covariances: torch.Tensor) -> torch.Tensor:
        """Σ_k log N(μ_k | m₀, Σ_k/κ₀) + log IW(Σ_k | Ψ₀, ν₀).

        The inverse-Wishart density is the Wishart density of Σ⁻¹ times the Jacobian
        |Σ|^−(d+1) of the inversion.
        """
        d = means.shape[1]
        m0, psi = self.mean.to(means), self.scale.to(means)
        normal = MultivariateNormal(m0, covariance_matrix=covariances / self.kappa)
        prec = torch.linalg.inv(covariances)
        wishart = Wishart(torch.as_tensor(self.dof).to(means), precision_matrix=psi)
        log_iw = wishart.log_prob(prec) - (d + 1) * torch.linalg.slogdet(covariances)[1]
        return (normal.log_prob(means) + log_iw).sum()
