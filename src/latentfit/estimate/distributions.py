"""Distributions that conjugate analysis needs and torch.distributions lacks, written as
``torch.distributions.Distribution`` subclasses (log_prob, sampling, mean, variance), and
``quantile`` for the credible intervals of the posteriors.

Formulas: Murphy (2007), "Conjugate Bayesian analysis of the Gaussian distribution"; Gelman et
al., *Bayesian Data Analysis* (3rd ed.), Appendix A.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.distributions as D
from scipy import special as sps
from torch.distributions import constraints

__all__ = [
    "BetaBinomialDistribution",
    "DirichletMultinomialDistribution",
    "InverseWishart",
    "MultivariateStudentT",
    "quantile",
]


def _lbeta(a, b):
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


class BetaBinomialDistribution(D.Distribution):
    """Number of successes in ``total_count`` trials with success probability ~ Beta(α, β)."""

    arg_constraints: ClassVar[dict] = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.nonnegative_integer,
    }
    has_enumerate_support = False

    def __init__(self, concentration1, concentration0, total_count=1, validate_args=None):
        self.concentration1, self.concentration0 = torch.broadcast_tensors(
            torch.as_tensor(concentration1, dtype=torch.float64),
            torch.as_tensor(concentration0, dtype=torch.float64),
        )
        self.total_count = torch.as_tensor(
            total_count, dtype=self.concentration1.dtype, device=self.concentration1.device
        )
        super().__init__(self.concentration1.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    @property
    def mean(self):
        a, b = self.concentration1, self.concentration0
        return self.total_count * a / (a + b)

    @property
    def variance(self):
        a, b, n = self.concentration1, self.concentration0, self.total_count
        return n * a * b * (a + b + n) / ((a + b) ** 2 * (a + b + 1))

    def log_prob(self, value):
        a, b, n = self.concentration1, self.concentration0, self.total_count
        log_choose = torch.lgamma(n + 1) - torch.lgamma(value + 1) - torch.lgamma(n - value + 1)
        return log_choose + _lbeta(value + a, n - value + b) - _lbeta(a, b)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            p = D.Beta(self.concentration1, self.concentration0).sample(sample_shape)
            return D.Binomial(self.total_count, probs=p).sample()


class DirichletMultinomialDistribution(D.Distribution):
    """Counts over k categories in ``total_count`` draws with probabilities ~ Dirichlet(α)."""

    arg_constraints: ClassVar[dict] = {
        "concentration": constraints.independent(constraints.positive, 1)
    }

    def __init__(self, concentration, total_count=1, validate_args=None):
        self.concentration = torch.as_tensor(concentration, dtype=torch.float64)
        self.total_count = torch.as_tensor(
            total_count, dtype=self.concentration.dtype, device=self.concentration.device
        )
        super().__init__(
            self.concentration.shape[:-1],
            self.concentration.shape[-1:],
            validate_args=validate_args,
        )

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.multinomial(int(self.total_count))

    @property
    def mean(self):
        a = self.concentration
        return self.total_count * a / a.sum(-1, keepdim=True)

    def log_prob(self, value):
        a, n = self.concentration, self.total_count
        a0 = a.sum(-1)
        return (
            torch.lgamma(n + 1)
            + torch.lgamma(a0)
            - torch.lgamma(n + a0)
            + (torch.lgamma(value + a) - torch.lgamma(a) - torch.lgamma(value + 1)).sum(-1)
        )

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            p = D.Dirichlet(self.concentration).sample(sample_shape)
            return D.Multinomial(int(self.total_count), probs=p).sample()


class MultivariateStudentT(D.Distribution):
    """Multivariate t with ``df`` degrees of freedom, location (d,) and scale matrix (d, d).

    Density (Kotz & Nadarajah, *Multivariate t Distributions*, eq. 1.1):
    ``Γ((ν+d)/2) / (Γ(ν/2) (νπ)^{d/2} |Σ|^{1/2}) · (1 + δ²/ν)^{-(ν+d)/2}``.
    """

    arg_constraints: ClassVar[dict] = {
        "df": constraints.positive,
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, df, loc, scale_matrix, validate_args=None):
        self.loc = torch.as_tensor(loc, dtype=torch.float64)
        scale_matrix = torch.as_tensor(scale_matrix, dtype=self.loc.dtype, device=self.loc.device)
        self.scale_tril = torch.linalg.cholesky(scale_matrix)  # (d, d)
        self.df = torch.as_tensor(df, dtype=self.loc.dtype, device=self.loc.device)
        super().__init__(self.df.shape, self.loc.shape[-1:], validate_args=validate_args)

    @property
    def scale_matrix(self):
        return self.scale_tril @ self.scale_tril.mT

    @property
    def mean(self):
        return self.loc.expand(self.batch_shape + self.event_shape)

    @property
    def covariance_matrix(self):
        return self.scale_matrix * (self.df / (self.df - 2))[..., None, None]

    def log_prob(self, value):
        d = self.loc.shape[-1]
        nu = self.df
        diff = (value - self.loc)[..., None]  # (..., d, 1)
        sol = torch.linalg.solve_triangular(self.scale_tril, diff, upper=False)[..., 0]
        maha = (sol**2).sum(-1)
        half_logdet = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (
            torch.lgamma((nu + d) / 2)
            - torch.lgamma(nu / 2)
            - d / 2 * torch.log(nu * math.pi)
            - half_logdet
            - (nu + d) / 2 * torch.log1p(maha / nu)
        )

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        z = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        chi2 = D.Chi2(self.df).rsample(sample_shape)[..., None]
        return self.loc + (self.scale_tril @ z[..., None])[..., 0] * torch.rsqrt(chi2 / self.df)


class InverseWishart(D.Distribution):
    """Σ with Σ⁻¹ ~ Wishart(df, Ψ⁻¹): density ∝ |Σ|^{-(ν+d+1)/2} exp(−tr(Ψ Σ⁻¹)/2)."""

    arg_constraints: ClassVar[dict] = {
        "df": constraints.positive,
        "scale": constraints.positive_definite,
    }
    support = constraints.positive_definite
    has_rsample = True

    def __init__(self, df, scale, validate_args=None):
        self.scale = torch.as_tensor(scale, dtype=torch.float64)
        self.df = torch.as_tensor(df, dtype=self.scale.dtype, device=self.scale.device)
        self._wishart = D.Wishart(self.df, precision_matrix=self.scale)
        super().__init__(self.df.shape, self.scale.shape[-2:], validate_args=validate_args)

    @property
    def mean(self):
        d = self.scale.shape[-1]
        return self.scale / (self.df - d - 1)[..., None, None]

    def log_prob(self, value):
        # change of variables W = Σ⁻¹: |dW/dΣ| = |Σ|^{-(d+1)}
        d = self.scale.shape[-1]
        logdet = torch.linalg.slogdet(value)[1]
        return self._wishart.log_prob(torch.linalg.inv(value)) - (d + 1) * logdet

    def rsample(self, sample_shape=torch.Size()):
        return torch.linalg.inv(self._wishart.rsample(sample_shape))


def quantile(dist: D.Distribution, q) -> torch.Tensor:
    """Quantiles of the one-dimensional posteriors conjugate models produce.

    Normal uses its ``icdf``; Beta, Gamma, InverseGamma and StudentT invert their CDFs with
    scipy.special (torch lacks those inverses). Returns a tensor of shape ``q.shape +
    batch_shape``.
    """
    q = torch.as_tensor(q, dtype=torch.float64)
    if isinstance(dist, D.Normal):
        return dist.icdf(q.reshape(q.shape + (1,) * len(dist.batch_shape)).to(dist.loc))

    def np_(t):
        return np.asarray(t.detach().cpu().numpy(), dtype=np.float64)

    qq = np_(q).reshape(q.shape + (1,) * len(dist.batch_shape))
    if isinstance(dist, D.Beta):
        out = sps.betaincinv(np_(dist.concentration1), np_(dist.concentration0), qq)
        ref = dist.concentration1
    elif isinstance(dist, D.Gamma):
        out = sps.gammaincinv(np_(dist.concentration), qq) / np_(dist.rate)
        ref = dist.rate
    elif isinstance(dist, D.InverseGamma):  # X = 1/Y with Y ~ Gamma(α, β)
        out = np_(dist.rate) / sps.gammaincinv(np_(dist.concentration), 1 - qq)
        ref = dist.rate
    elif isinstance(dist, D.StudentT):
        out = np_(dist.loc) + np_(dist.scale) * sps.stdtrit(np_(dist.df), qq)
        ref = dist.loc
    else:
        raise NotImplementedError(f"no quantile function for {type(dist).__name__}")
    return torch.as_tensor(out, dtype=ref.dtype, device=ref.device)
