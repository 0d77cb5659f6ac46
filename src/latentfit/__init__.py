"""latentfit: models with hidden variables fitted by maximum likelihood.

MLE and MAP → the ELBO → EM (mixtures, hidden Markov models, factor models) → variational
inference → variational autoencoders, in PyTorch, on any device.
"""

from latentfit.diffusion import DDPM
from latentfit.em.factor import PPCA, FactorAnalysis
from latentfit.em.hmm import GMMHMM, AutoregressiveHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from latentfit.em.mixture.discrete import (
    BernoulliMixture,
    CategoricalMixture,
    MultinomialMixture,
    PoissonMixture,
)
from latentfit.em.mixture.families import MixtureModel
from latentfit.em.mixture.gmm import GaussianMixture
from latentfit.em.sources.chunks import ArraySource, IterableSource, NpySource, ParquetSource
from latentfit.estimate import fit_map, fit_mle
from latentfit.flows import MAF, FlowDensity, NeuralSplineFlow, RealNVP
from latentfit.io import load, save
from latentfit.select import select_model
from latentfit.train import TrainConfig
from latentfit.vae import VAE, DiscreteVAE, LadderVAE
from latentfit.vi.bgmm import BayesianGaussianMixture

__version__ = "0.1.0"

__all__ = [
    "DDPM",
    "GMMHMM",
    "MAF",
    "PPCA",
    "VAE",
    "ArraySource",
    "AutoregressiveHMM",
    "BayesianGaussianMixture",
    "BernoulliMixture",
    "CategoricalHMM",
    "CategoricalMixture",
    "DiscreteVAE",
    "FactorAnalysis",
    "FlowDensity",
    "GaussianHMM",
    "GaussianMixture",
    "IterableSource",
    "LadderVAE",
    "MixtureModel",
    "MultinomialMixture",
    "NeuralSplineFlow",
    "NpySource",
    "ParquetSource",
    "PoissonHMM",
    "PoissonMixture",
    "RealNVP",
    "TrainConfig",
    "fit_map",
    "fit_mle",
    "load",
    "save",
    "select_model",
]
