"""Conjugate Bayesian inference for counts and proportions: closed-form posteriors, posterior
predictive distributions (torch distributions), credible intervals and the log evidence.

Every model is immutable: ``model.update(x)`` returns the posterior as a new model of the same
kind, so that ``m.update(x1).update(x2)`` equals ``m.update(concat(x1, x2))`` and the posterior
can serve as the prior for the next batch. ``log_evidence(x)`` is the log marginal likelihood
``log ∫ p(x | θ) p(θ) dθ`` under the model's current hyperparameters.

Formulas: Gelman et al., *Bayesian Data Analysis* (3rd ed.), ch. 2 and 3; Murphy, *Machine
Learning: a Probabilistic Perspective*, §3.3–3.5.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
import torch.distributions as D

from latentfit._validation import resolve_device, resolve_dtype
from latentfit.errors import DataError, ParameterError
from latentfit.estimate.distributions import (
    BetaBinomialDistribution,
    DirichletMultinomialDistribution,
    quantile,
)
from latentfit.estimate.families import get_family
from latentfit.estimate.inference import check_level
from latentfit.estimate.mle import check_data

__all__ = [
    "BetaBernoulli",
    "BetaBinomial",
    "ConjugateModel",
    "DirichletCategorical",
    "DirichletMultinomial",
    "GammaPoisson",
]


def _lbeta(a, b):
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def _positive(value, name, dtype, device):
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ParameterError(f"{name} must be positive and finite, got {t.tolist()}")
    return t


def _finite(value, name, dtype, device):
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if not bool(torch.isfinite(t).all()):
        raise ParameterError(f"{name} must be finite, got {t.tolist()}")
    return t


def _total_count(value, name: str = "total_count") -> int:
    """A number of trials: a whole number >= 1 (10.0 is 10); 2.5, 0, -1, inf, NaN, a bool or
    a string are refused by name (they reached torch's constraint checks, or were truncated)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and float(value).is_integer()
        and value >= 1
    )
    if not ok:
        raise ParameterError(
            f"{name} must be a whole number of trials >= 1 (e.g. 10), got {value!r:.60}"
        )
    return int(value)


def _interval(dist: D.Distribution, level: float) -> torch.Tensor:
    """Equal-tailed credible interval (..., 2) from the quantiles of ``dist``."""
    level = check_level(level)
    q = quantile(dist, [(1 - level) / 2, (1 + level) / 2])  # (2, ...)
    return torch.movedim(q, 0, -1)


class ConjugateModel:
    """Shared behaviour: data checking, hyperparameter storage, ``n_obs_``."""

    _family: str = ""

    def _setup(self, dtype, device):
        self.dtype, self.device = resolve_dtype(dtype), resolve_device(device)
        self.n_obs_ = 0

    def _check(self, x) -> torch.Tensor:
        return check_data(
            get_family(self._family), x, self._fixed_args(), dtype=self.dtype, device=self.device
        )

    def _fixed_args(self) -> dict:
        return {}

    def _replace(self, n_new: int, **hyper):
        bad = [k for k, v in hyper.items() if not bool(torch.isfinite(v).all())]
        if bad:  # e.g. a sum of squares of values near 1e200
            raise DataError(
                f"the posterior's {bad[0]} overflowed to {hyper[bad[0]].tolist()}: the data are "
                f"too large for {self.dtype} arithmetic; rescale them (e.g. divide by a power "
                "of ten)" + (" or use dtype='float64'" if self.dtype != torch.float64 else "")
            )
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(hyper)
        new.n_obs_ = self.n_obs_ + n_new
        return new

    def credible_interval(self, level: float = 0.95) -> torch.Tensor:
        """Equal-tailed interval of the posterior (shape ``(*param_shape, 2)``)."""
        return _interval(self.posterior, level)

    def __repr__(self):
        hyper = ", ".join(
            f"{k}={v.tolist() if isinstance(v, torch.Tensor) else v}"
            for k, v in self.hyperparameters().items()
        )
        return f"{type(self).__name__}({hyper}; n_obs_={self.n_obs_})"


# -- Beta prior on a success probability ---------------------------------------------------------
class BetaParams(NamedTuple):
    alpha: torch.Tensor
    beta: torch.Tensor


def beta_binomial_update(alpha, beta, successes, trials) -> BetaParams:
    """Beta(α, β) prior, s successes in t trials → Beta(α + s, β + t − s)."""
    return BetaParams(alpha + successes, beta + trials - successes)


def beta_binomial_log_evidence(alpha, beta, x, total_count) -> torch.Tensor:
    """log p(x) = Σᵢ log C(m, xᵢ) + log B(α + Σx, β + Σ(m − x)) − log B(α, β)."""
    m = torch.as_tensor(total_count, dtype=x.dtype, device=x.device)
    log_choose = (torch.lgamma(m + 1) - torch.lgamma(x + 1) - torch.lgamma(m - x + 1)).sum()
    s = x.sum()
    return log_choose + _lbeta(alpha + s, beta + m * x.shape[0] - s) - _lbeta(alpha, beta)


class BetaBinomial(ConjugateModel):
    """Success probability p ~ Beta(alpha, beta); each observation is Binomial(total_count, p)."""

    _family = "binomial"

    def __init__(self, alpha=1.0, beta=1.0, total_count: int = 1, *, dtype=None, device=None):
        self._setup(dtype, device)
        self.alpha = _positive(alpha, "alpha", self.dtype, self.device)
        self.beta = _positive(beta, "beta", self.dtype, self.device)
        self.total_count = _total_count(total_count)

    def _fixed_args(self):
        return {"total_count": self.total_count}

    def hyperparameters(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def update(self, x):
        """The posterior after observing successes ``x`` (n,), as a new model."""
        x = self._check(x)
        new = beta_binomial_update(self.alpha, self.beta, x.sum(), self.total_count * x.shape[0])
        return self._replace(x.shape[0], **new._asdict())

    @property
    def posterior(self) -> D.Beta:
        return D.Beta(self.alpha, self.beta)

    def posterior_predictive(self, total_count: int | None = None) -> D.Distribution:
        """Successes in ``total_count`` new trials (default: the model's)."""
        m = self.total_count if total_count is None else _total_count(total_count)
        if m == 1:
            return D.Bernoulli(probs=self.alpha / (self.alpha + self.beta))
        return BetaBinomialDistribution(self.alpha, self.beta, m)

    def log_evidence(self, x) -> torch.Tensor:
        return beta_binomial_log_evidence(self.alpha, self.beta, self._check(x), self.total_count)


class BetaBernoulli(BetaBinomial):
    """Success probability p ~ Beta(alpha, beta); each observation is Bernoulli(p) (0 or 1)."""

    _family = "bernoulli"

    def __init__(self, alpha=1.0, beta=1.0, *, dtype=None, device=None):
        super().__init__(alpha, beta, 1, dtype=dtype, device=device)

    def _fixed_args(self):
        return {}


# -- Dirichlet prior on category probabilities ---------------------------------------------------
def dirichlet_multinomial_log_evidence(alpha, counts, total_count) -> torch.Tensor:
    """log p(X) for count rows X (n, k): Σᵢ log multinomial coefficient + log B(α + ΣX)/B(α)."""
    m = torch.as_tensor(float(total_count), dtype=counts.dtype, device=counts.device)
    coef = (torch.lgamma(m + 1) - torch.lgamma(counts + 1).sum(-1)).sum()
    post = alpha + counts.sum(0)  # (k,)
    return (
        coef
        + torch.lgamma(alpha.sum())
        - torch.lgamma(post.sum())
        + (torch.lgamma(post) - torch.lgamma(alpha)).sum()
    )


class DirichletMultinomial(ConjugateModel):
    """Probabilities p ~ Dirichlet(alpha) (k,); each observation is a row of counts (k,) from
    Multinomial(total_count, p)."""

    _family = "multinomial"

    def __init__(self, alpha, total_count: int = 1, *, dtype=None, device=None):
        self._setup(dtype, device)
        self.alpha = _positive(alpha, "alpha", self.dtype, self.device)
        if self.alpha.dim() != 1 or self.alpha.shape[0] < 2:
            raise ParameterError(
                f"alpha must have shape (k,) with k >= 2, got {tuple(self.alpha.shape)}"
            )
        self.total_count = _total_count(total_count)

    def _fixed_args(self):
        return {"total_count": self.total_count}

    def hyperparameters(self):
        return {"alpha": self.alpha}

    def _counts(self, x) -> torch.Tensor:
        x = self._check(x)
        if x.shape[1] != self.alpha.shape[0]:
            raise ParameterError(
                f"count rows must have {self.alpha.shape[0]} columns, got {x.shape[1]}"
            )
        return x

    def update(self, x):
        """The posterior after count rows ``x`` (n, k): Dirichlet(α + Σᵢ xᵢ)."""
        x = self._counts(x)
        return self._replace(x.shape[0], alpha=self.alpha + x.sum(0))

    @property
    def posterior(self) -> D.Dirichlet:
        return D.Dirichlet(self.alpha)

    def credible_interval(self, level: float = 0.95) -> torch.Tensor:
        """Per-category intervals (k, 2) from the Beta(αⱼ, Σα − αⱼ) marginals."""
        return _interval(D.Beta(self.alpha, self.alpha.sum() - self.alpha), level)

    def posterior_predictive(self, total_count: int | None = None) -> D.Distribution:
        m = self.total_count if total_count is None else _total_count(total_count)
        return DirichletMultinomialDistribution(self.alpha, m)

    def log_evidence(self, x) -> torch.Tensor:
        return dirichlet_multinomial_log_evidence(self.alpha, self._counts(x), self.total_count)


class DirichletCategorical(DirichletMultinomial):
    """Probabilities p ~ Dirichlet(alpha) (k,); each observation is a category in 0..k-1."""

    _family = "categorical"

    def __init__(self, alpha, *, dtype=None, device=None):
        super().__init__(alpha, 1, dtype=dtype, device=device)

    def _fixed_args(self):
        return {"num_categories": self.alpha.shape[0]}

    def _counts(self, x) -> torch.Tensor:
        x = self._check(x)
        return torch.nn.functional.one_hot(x.long(), self.alpha.shape[0]).to(self.dtype)  # (n, k)

    def posterior_predictive(self) -> D.Categorical:
        return D.Categorical(probs=self.alpha / self.alpha.sum())


# -- Gamma prior on a Poisson rate ---------------------------------------------------------------
def gamma_poisson_log_evidence(alpha, beta, x) -> torch.Tensor:
    """log p(x) = α log β − log Γ(α) + log Γ(α + Σx) − (α + Σx) log(β + n) − Σ log xᵢ!."""
    s, n = x.sum(), x.shape[0]
    return (
        alpha * torch.log(beta)
        - torch.lgamma(alpha)
        + torch.lgamma(alpha + s)
        - (alpha + s) * torch.log(beta + n)
        - torch.lgamma(x + 1).sum()
    )


class GammaPoisson(ConjugateModel):
    """Rate λ ~ Gamma(alpha, beta) (shape, rate); each observation is Poisson(λ)."""

    _family = "poisson"

    def __init__(self, alpha=1.0, beta=1.0, *, dtype=None, device=None):
        self._setup(dtype, device)
        self.alpha = _positive(alpha, "alpha", self.dtype, self.device)
        self.beta = _positive(beta, "beta", self.dtype, self.device)

    def hyperparameters(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def update(self, x):
        """Gamma(α + Σx, β + n)."""
        x = self._check(x)
        return self._replace(x.shape[0], alpha=self.alpha + x.sum(), beta=self.beta + x.shape[0])

    @property
    def posterior(self) -> D.Gamma:
        return D.Gamma(self.alpha, self.beta)

    def posterior_predictive(self) -> D.NegativeBinomial:
        """NegativeBinomial(α, p = 1/(β + 1)) in torch's parametrisation (mean α/β)."""
        return D.NegativeBinomial(total_count=self.alpha, probs=1 / (self.beta + 1))

    def log_evidence(self, x) -> torch.Tensor:
        return gamma_poisson_log_evidence(self.alpha, self.beta, self._check(x))
