"""Estimation with uncertainty: MLE, MAP and conjugate Bayesian inference."""

from latentfit.estimate.conjugate import (
    BetaBernoulli,
    BetaBinomial,
    ConjugateModel,
    DirichletCategorical,
    DirichletMultinomial,
    GammaPoisson,
)
from latentfit.estimate.conjugate_normal import (
    NormalInverseGamma,
    NormalInverseWishart,
    NormalKnownVariance,
)
from latentfit.estimate.distributions import (
    BetaBinomialDistribution,
    DirichletMultinomialDistribution,
    InverseWishart,
    MultivariateStudentT,
    quantile,
)
from latentfit.estimate.families import (
    FAMILIES,
    Family,
    get_family,
    log_density_family,
    register_family,
)
from latentfit.estimate.map import (
    fit_map,
    fit_map_regression,
    lasso_prior_scale,
    ridge_prior_scale,
)
from latentfit.estimate.mle import fit_mle
from latentfit.estimate.result import FitResult, TransformedEstimate

__all__ = [
    "FAMILIES",
    "BetaBernoulli",
    "BetaBinomial",
    "BetaBinomialDistribution",
    "ConjugateModel",
    "DirichletCategorical",
    "DirichletMultinomial",
    "DirichletMultinomialDistribution",
    "Family",
    "FitResult",
    "GammaPoisson",
    "InverseWishart",
    "MultivariateStudentT",
    "NormalInverseGamma",
    "NormalInverseWishart",
    "NormalKnownVariance",
    "TransformedEstimate",
    "fit_map",
    "fit_map_regression",
    "fit_mle",
    "get_family",
    "lasso_prior_scale",
    "log_density_family",
    "quantile",
    "register_family",
    "ridge_prior_scale",
]
