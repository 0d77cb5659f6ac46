"""Conjugate Bayesian inference for Gaussian data: Normal–Normal (known variance),
Normal–Inverse-Gamma (unknown mean and variance), Normal–Inverse-Wishart (multivariate).

Parametrisations and formulas follow Murphy (2007), "Conjugate Bayesian analysis of the
Gaussian distribution" (§2, §3 and §9): μ | σ² ~ N(μ₀, σ²/κ₀), σ² ~ IG(α₀, β₀) and
μ | Σ ~ N(μ₀, Σ/κ₀), Σ ~ IW(ν₀, Ψ₀). Models are immutable, as in ``conjugate``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributions as D

from latentfit.errors import DataError, ParameterError
from latentfit.estimate.conjugate import ConjugateModel, _finite, _interval, _positive
from latentfit.estimate.distributions import InverseWishart, MultivariateStudentT

__all__ = ["NormalInverseGamma", "NormalInverseWishart", "NormalKnownVariance"]


# -- Normal mean, variance known -----------------------------------------------------------------
class NormalParams(NamedTuple):
    loc: torch.Tensor
    scale: torch.Tensor


def normal_known_variance_update(loc, scale, noise_scale, x) -> NormalParams:
    """Precisions add: 1/τₙ² = 1/τ₀² + n/σ²; μₙ = τₙ² (μ₀/τ₀² + Σx/σ²)."""
    prec = scale**-2 + x.shape[0] / noise_scale**2
    mean = (loc * scale**-2 + x.sum() / noise_scale**2) / prec
    return NormalParams(mean, prec.rsqrt())


def normal_known_variance_log_evidence(loc, scale, noise_scale, x) -> torch.Tensor:
    """x ~ N(μ₀1, σ²I + τ₀²11ᵀ): −n/2 log 2πσ² − ½ log(1 + nτ₀²/σ²) − S/(2σ²)
    − n(x̄ − μ₀)²/(2(σ² + nτ₀²)), S = Σ(x − x̄)²."""
    n, s2, t2 = x.shape[0], noise_scale**2, scale**2
    xbar = x.mean()
    return (
        -n / 2 * torch.log(2 * math.pi * s2)
        - 0.5 * torch.log1p(n * t2 / s2)
        - ((x - xbar) ** 2).sum() / (2 * s2)
        - n * (xbar - loc) ** 2 / (2 * (s2 + n * t2))
    )


class NormalKnownVariance(ConjugateModel):
    """Mean μ ~ Normal(loc, scale); each observation is Normal(μ, noise_scale) with
    ``noise_scale`` known."""

    _family = "normal"

    def __init__(self, loc=0.0, scale=1.0, noise_scale=1.0, *, dtype=None, device=None):
        self._setup(dtype, device)
        self.loc = _finite(loc, "loc", self.dtype, self.device)
        self.scale = _positive(scale, "scale", self.dtype, self.device)
        self.noise_scale = _positive(noise_scale, "noise_scale", self.dtype, self.device)

    def hyperparameters(self):
        return {"loc": self.loc, "scale": self.scale, "noise_scale": self.noise_scale}

    def update(self, x):
        x = self._check(x)
        new = normal_known_variance_update(self.loc, self.scale, self.noise_scale, x)
        return self._replace(x.shape[0], **new._asdict())

    @property
    def posterior(self) -> D.Normal:
        return D.Normal(self.loc, self.scale)

    def posterior_predictive(self) -> D.Normal:
        return D.Normal(self.loc, (self.scale**2 + self.noise_scale**2).sqrt())

    def log_evidence(self, x) -> torch.Tensor:
        x = self._check(x)
        return normal_known_variance_log_evidence(self.loc, self.scale, self.noise_scale, x)


# -- Normal mean and variance unknown ------------------------------------------------------------
class NIGParams(NamedTuple):
    loc: torch.Tensor
    kappa: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor


def normal_inverse_gamma_update(loc, kappa, alpha, beta, x) -> NIGParams:
    """Murphy (2007) eqs. 86–89: κₙ = κ₀ + n, μₙ = (κ₀μ₀ + n x̄)/κₙ, αₙ = α₀ + n/2,
    βₙ = β₀ + S/2 + κ₀ n (x̄ − μ₀)² / (2κₙ)."""
    n = x.shape[0]
    xbar = x.mean()
    kn = kappa + n
    return NIGParams(
        (kappa * loc + n * xbar) / kn,
        kn,
        alpha + n / 2,
        beta + ((x - xbar) ** 2).sum() / 2 + kappa * n * (xbar - loc) ** 2 / (2 * kn),
    )


def normal_inverse_gamma_log_evidence(loc, kappa, alpha, beta, x) -> torch.Tensor:
    """Murphy (2007) eq. 95: log Γ(αₙ)/Γ(α₀) + α₀ log β₀ − αₙ log βₙ + ½ log κ₀/κₙ − n/2 log 2π."""
    post = normal_inverse_gamma_update(loc, kappa, alpha, beta, x)
    return (
        torch.lgamma(post.alpha)
        - torch.lgamma(alpha)
        + alpha * torch.log(beta)
        - post.alpha * torch.log(post.beta)
        + 0.5 * torch.log(kappa / post.kappa)
        - x.shape[0] / 2 * math.log(2 * math.pi)
    )


class NormalInverseGamma(ConjugateModel):
    """σ² ~ InverseGamma(alpha, beta), μ | σ² ~ Normal(loc, σ²/kappa); observations are
    Normal(μ, σ²)."""

    _family = "normal"

    def __init__(self, loc=0.0, kappa=1.0, alpha=1.0, beta=1.0, *, dtype=None, device=None):
        self._setup(dtype, device)
        self.loc = _finite(loc, "loc", self.dtype, self.device)
        self.kappa = _positive(kappa, "kappa", self.dtype, self.device)
        self.alpha = _positive(alpha, "alpha", self.dtype, self.device)
        self.beta = _positive(beta, "beta", self.dtype, self.device)

    def hyperparameters(self):
        return {"loc": self.loc, "kappa": self.kappa, "alpha": self.alpha, "beta": self.beta}

    def update(self, x):
        x = self._check(x)
        new = normal_inverse_gamma_update(self.loc, self.kappa, self.alpha, self.beta, x)
        return self._replace(x.shape[0], **new._asdict())

    @property
    def posterior_variance(self) -> D.InverseGamma:
        """The marginal posterior of σ²."""
        return D.InverseGamma(self.alpha, self.beta)

    @property
    def posterior_loc(self) -> D.StudentT:
        """The marginal posterior of μ: t_{2α}(μ, β/(ακ))."""
        return D.StudentT(2 * self.alpha, self.loc, (self.beta / (self.alpha * self.kappa)).sqrt())

    @property
    def posterior(self) -> D.StudentT:
        """The marginal posterior of the mean (``posterior_variance`` gives that of σ²)."""
        return self.posterior_loc

    def posterior_log_prob(self, loc, variance) -> torch.Tensor:
        """Joint log density of (μ, σ²): N(μ; μₙ, σ²/κₙ) · IG(σ²; αₙ, βₙ)."""
        loc, variance = (
            torch.as_tensor(loc, dtype=self.dtype),
            torch.as_tensor(variance, dtype=self.dtype),
        )
        return D.Normal(self.loc, (variance / self.kappa).sqrt()).log_prob(loc) + D.InverseGamma(
            self.alpha, self.beta
        ).log_prob(variance)

    def posterior_predictive(self) -> D.StudentT:
        """t_{2α}(μ, β(κ + 1)/(ακ)) (Murphy 2007, eq. 100)."""
        scale2 = self.beta * (self.kappa + 1) / (self.alpha * self.kappa)
        return D.StudentT(2 * self.alpha, self.loc, scale2.sqrt())

    def credible_interval(self, level: float = 0.95) -> dict[str, torch.Tensor]:
        """Equal-tailed intervals (2,) for ``loc`` and ``variance``."""
        return {
            "loc": _interval(self.posterior_loc, level),
            "variance": _interval(self.posterior_variance, level),
        }

    def log_evidence(self, x) -> torch.Tensor:
        x = self._check(x)
        return normal_inverse_gamma_log_evidence(self.loc, self.kappa, self.alpha, self.beta, x)


# -- multivariate Normal, mean and covariance unknown --------------------------------------------
class NIWParams(NamedTuple):
    loc: torch.Tensor  # (d,)
    kappa: torch.Tensor
    df: torch.Tensor
    scale: torch.Tensor  # (d, d)


def normal_inverse_wishart_update(loc, kappa, df, scale, x) -> NIWParams:
    """Murphy (2007) eqs. 252–255: κₙ = κ₀ + n, νₙ = ν₀ + n, μₙ = (κ₀μ₀ + n x̄)/κₙ,
    Ψₙ = Ψ₀ + S + κ₀ n/κₙ (x̄ − μ₀)(x̄ − μ₀)ᵀ, S the scatter matrix about x̄."""
    n = x.shape[0]
    xbar = x.mean(0)  # (d,)
    r = x - xbar  # (n, d)
    dm = (xbar - loc)[:, None]  # (d, 1)
    kn = kappa + n
    return NIWParams(
        (kappa * loc + n * xbar) / kn, kn, df + n, scale + r.T @ r + kappa * n / kn * dm @ dm.T
    )


def normal_inverse_wishart_log_evidence(loc, kappa, df, scale, x) -> torch.Tensor:
    """Murphy (2007) eq. 266: −nd/2 log π + log Γ_d(νₙ/2)/Γ_d(ν₀/2) + ν₀/2 log|Ψ₀|
    − νₙ/2 log|Ψₙ| + d/2 log κ₀/κₙ."""
    n, d = x.shape
    post = normal_inverse_wishart_update(loc, kappa, df, scale, x)
    return (
        -n * d / 2 * math.log(math.pi)
        + torch.special.multigammaln(post.df / 2, d)
        - torch.special.multigammaln(df / 2, d)
        + df / 2 * torch.logdet(scale)
        - post.df / 2 * torch.logdet(post.scale)
        + d / 2 * torch.log(kappa / post.kappa)
    )


def _resolved(scale: torch.Tensor) -> bool:
    """Whether the (d, d) ``scale`` is positive definite beyond its dtype's rounding: its
    Cholesky factor exists and no pivot² is below d·eps of the largest variance (3 equal rows
    of 1e4 in float32 left [[7.5e7, 7.5e7], [7.5e7, 7.5e7]], whose factor exists by rounding
    while that of the predictive's rescaled copy does not)."""
    L, info = torch.linalg.cholesky_ex(scale)
    if int(info):
        return False
    eps = torch.finfo(scale.dtype).eps
    return float(L.diagonal().square().min()) > scale.shape[0] * eps * float(scale.diagonal().max())


class NormalInverseWishart(ConjugateModel):
    """Σ ~ InverseWishart(df, scale), μ | Σ ~ MultivariateNormal(loc, Σ/kappa); observations
    are rows (d,) from MultivariateNormal(μ, Σ)."""

    _family = "mvn"

    def __init__(self, loc, kappa=1.0, df=None, scale=None, *, dtype=None, device=None):
        self._setup(dtype, device)
        self.loc = _finite(loc, "loc", self.dtype, self.device)
        if self.loc.dim() != 1:
            raise ParameterError(f"loc must have shape (d,), got {tuple(self.loc.shape)}")
        d = self.loc.shape[0]
        self.kappa = _positive(kappa, "kappa", self.dtype, self.device)
        self.df = torch.as_tensor(
            d + 2.0 if df is None else df, dtype=self.dtype, device=self.device
        )
        if self.df.dim() or not (d - 1 < float(self.df) < math.inf):
            raise ParameterError(
                f"df must exceed d - 1 = {d - 1} and be finite, got {self.df.tolist()}"
            )
        eye = torch.eye(d, dtype=self.dtype, device=self.device)
        self.scale = (
            eye if scale is None else torch.as_tensor(scale, dtype=self.dtype, device=self.device)
        )
        if (
            self.scale.shape != (d, d)
            or not torch.allclose(self.scale, self.scale.T)
            or int(torch.linalg.cholesky_ex(self.scale)[1]) != 0
        ):
            raise ParameterError(f"scale must be a symmetric positive definite ({d}, {d}) matrix")

    def hyperparameters(self):
        return {"loc": self.loc, "kappa": self.kappa, "df": self.df, "scale": self.scale}

    def update(self, x):
        x = self._check(x)
        if x.shape[1] != self.loc.shape[0]:
            raise ParameterError(f"rows must have {self.loc.shape[0]} columns, got {x.shape[1]}")
        new = normal_inverse_wishart_update(self.loc, self.kappa, self.df, self.scale, x)
        if bool(torch.isfinite(new.scale).all()) and not _resolved(new.scale):
            raise DataError(
                "the posterior scale matrix is not positive definite in "
                f"{self.dtype} arithmetic: the data (largest |value| {float(x.abs().max()):.3g}) "
                "spread far more along some directions than along others for it; standardise "
                "the columns" + (" or use dtype='float64'" if self.dtype != torch.float64 else "")
            )
        return self._replace(x.shape[0], **new._asdict())

    @property
    def posterior_covariance(self) -> InverseWishart:
        return InverseWishart(self.df, self.scale)

    def _t(self, extra: float) -> MultivariateStudentT:
        dof = self.df - self.loc.shape[0] + 1
        return MultivariateStudentT(dof, self.loc, self.scale * extra / (self.kappa * dof))

    @property
    def posterior_loc(self) -> MultivariateStudentT:
        """The marginal posterior of μ: t_{ν−d+1}(μ, Ψ/(κ(ν−d+1)))."""
        return self._t(1.0)

    @property
    def posterior(self) -> MultivariateStudentT:
        """The marginal posterior of the mean (``posterior_covariance`` gives that of Σ)."""
        return self.posterior_loc

    def posterior_log_prob(self, loc, covariance) -> torch.Tensor:
        """Joint log density of (μ, Σ): N(μ; μₙ, Σ/κₙ) · IW(Σ; νₙ, Ψₙ)."""
        cov = torch.as_tensor(covariance, dtype=self.dtype)
        mvn = D.MultivariateNormal(self.loc, covariance_matrix=cov / self.kappa)
        return mvn.log_prob(
            torch.as_tensor(loc, dtype=self.dtype)
        ) + self.posterior_covariance.log_prob(cov)

    def posterior_predictive(self) -> MultivariateStudentT:
        """t_{ν−d+1}(μ, Ψ(κ + 1)/(κ(ν−d+1))) (Murphy 2007, eq. 258)."""
        return self._t(float(self.kappa + 1))

    def credible_interval(self, level: float = 0.95) -> dict[str, torch.Tensor]:
        """Per-coordinate intervals (d, 2) for ``loc`` (t marginals) and ``variance`` (the
        diagonal of Σ, Σⱼⱼ ~ InverseGamma((ν − d + 1)/2, Ψⱼⱼ/2))."""
        d = self.loc.shape[0]
        dof = self.df - d + 1
        diag = self.scale.diagonal()
        t = D.StudentT(dof.expand(d), self.loc, (diag / (self.kappa * dof)).sqrt())
        return {
            "loc": _interval(t, level),
            "variance": _interval(D.InverseGamma((dof / 2).expand(d), diag / 2), level),
        }

    def log_evidence(self, x) -> torch.Tensor:
        x = self._check(x)
        return normal_inverse_wishart_log_evidence(self.loc, self.kappa, self.df, self.scale, x)
