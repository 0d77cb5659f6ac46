"""Hidden Markov models: inference kernels (:mod:`~latentfit.em.hmm.inference.posterior`), emission
functions (:mod:`~latentfit.em.hmm.emissions`) and hmmlearn-compatible estimators."""

from latentfit.em.hmm.base import ConvergenceMonitor, UnvisitedStateWarning
from latentfit.em.hmm.discrete import CategoricalHMM, PoissonHMM
from latentfit.em.hmm.gaussian import GMMHMM, GaussianHMM

__all__ = [
    "GMMHMM",
    "CategoricalHMM",
    "ConvergenceMonitor",
    "GaussianHMM",
    "PoissonHMM",
    "UnvisitedStateWarning",
]
