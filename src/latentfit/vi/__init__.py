"""Variational inference: CAVI models, stochastic VI, gradient estimators, the ELBO made visible."""

from latentfit.vi.bgmm import BayesianGaussianMixture
from latentfit.vi.estimators import GumbelSoftmax, Reparameterization, ScoreFunction
from latentfit.vi.guides import (
    DistributionGuide,
    FlowGuide,
    FullRankGaussian,
    Guide,
    LocalMeanFieldGaussian,
    MeanFieldGaussian,
)
from latentfit.vi.objectives import ELBO, ImportanceWeightedBound, StochasticELBO
from latentfit.vi.svi import MiniBatches, svi

__all__ = [
    "ELBO",
    "BayesianGaussianMixture",
    "DistributionGuide",
    "FlowGuide",
    "FullRankGaussian",
    "Guide",
    "GumbelSoftmax",
    "ImportanceWeightedBound",
    "LocalMeanFieldGaussian",
    "MeanFieldGaussian",
    "MiniBatches",
    "Reparameterization",
    "ScoreFunction",
    "StochasticELBO",
    "svi",
]
