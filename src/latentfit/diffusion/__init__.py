"""Diffusion models as latent-variable models: a DDPM trained by the simplified loss and
evaluated by its full variational bound (Ho et al. 2020)."""

from latentfit.diffusion.model import DDPM, DiffusionLoss
from latentfit.diffusion.process import (
    BoundTerms,
    CoarseStep,
    DiffusionModule,
    Prediction,
    Schedule,
    TimeMLP,
    coarse_steps,
    discretized_gaussian_log_likelihood,
    fit_gaussian,
    gaussian_eps,
    gaussian_kl,
    gaussian_log_density,
    make_schedule,
    model_mean,
    posterior_mean_var,
    prior_kl,
    reverse_term,
)

__all__ = [
    "DDPM",
    "BoundTerms",
    "CoarseStep",
    "DiffusionLoss",
    "DiffusionModule",
    "Prediction",
    "Schedule",
    "TimeMLP",
    "coarse_steps",
    "discretized_gaussian_log_likelihood",
    "fit_gaussian",
    "gaussian_eps",
    "gaussian_kl",
    "gaussian_log_density",
    "make_schedule",
    "model_mean",
    "posterior_mean_var",
    "prior_kl",
    "reverse_term",
]
