"""Estimation with uncertainty: MLE, MAP and conjugate Bayesian inference."""

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
    "Family",
    "FitResult",
    "TransformedEstimate",
    "fit_map",
    "fit_map_regression",
    "fit_mle",
    "get_family",
    "lasso_prior_scale",
    "log_density_family",
    "register_family",
    "ridge_prior_scale",
]
