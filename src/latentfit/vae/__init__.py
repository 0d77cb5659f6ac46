"""Variational autoencoders: models, objectives, flows, schedules, diagnostics, evaluation."""

from latentfit.vae.build import ModelSpec, build_model, init_decoder_bias, load_model, save_model
from latentfit.vae.diagnostics import (
    PosteriorCollapseWarning,
    active_units,
    check_collapse,
    diagnose,
    kl_per_dimension,
    mutual_information,
)
from latentfit.vae.evaluate import MarginalLikelihood, marginal_log_likelihood
from latentfit.vae.models import VAE, DiscreteVAE, LadderVAE, LatentPass
from latentfit.vae.objectives import (
    ELBO,
    IWAE,
    BetaVAE,
    DReG,
    ObjectiveOutput,
    iwae_bound,
    log_mean_exp,
    make_objective,
)
from latentfit.vae.schedules import ConstantKL, CyclicalWarmup, LinearWarmup, free_bits_kl

__all__ = [
    "ELBO",
    "IWAE",
    "VAE",
    "BetaVAE",
    "ConstantKL",
    "CyclicalWarmup",
    "DReG",
    "DiscreteVAE",
    "LadderVAE",
    "LatentPass",
    "LinearWarmup",
    "MarginalLikelihood",
    "ModelSpec",
    "ObjectiveOutput",
    "PosteriorCollapseWarning",
    "active_units",
    "build_model",
    "check_collapse",
    "diagnose",
    "free_bits_kl",
    "init_decoder_bias",
    "iwae_bound",
    "kl_per_dimension",
    "load_model",
    "log_mean_exp",
    "make_objective",
    "marginal_log_likelihood",
    "mutual_information",
    "save_model",
]
