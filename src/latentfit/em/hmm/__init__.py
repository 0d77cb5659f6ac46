"""Hidden Markov models: hmmlearn-compatible estimators (base.py, gaussian.py, gmmhmm.py,
discrete.py, multinomial.py, autoregressive.py; their fit record and warnings in monitor.py,
partial labels in labels.py), emission functions (:mod:`~latentfit.em.hmm.emissions`), sequences and
sources (:mod:`~latentfit.em.hmm.sequences`) and the inference kernels
(:mod:`latentfit.em.hmm.inference`)."""

from latentfit.em.hmm.autoregressive import AutoregressiveHMM
from latentfit.em.hmm.discrete import CategoricalHMM, PoissonHMM
from latentfit.em.hmm.gaussian import GaussianHMM
from latentfit.em.hmm.gmmhmm import GMMHMM
from latentfit.em.hmm.monitor import (
    ConvergenceMonitor,
    OverwrittenParameterWarning,
    UnvisitedStateWarning,
)
from latentfit.em.hmm.multinomial import MultinomialHMM

__all__ = [
    "GMMHMM",
    "AutoregressiveHMM",
    "CategoricalHMM",
    "ConvergenceMonitor",
    "GaussianHMM",
    "MultinomialHMM",
    "OverwrittenParameterWarning",
    "PoissonHMM",
    "UnvisitedStateWarning",
]
