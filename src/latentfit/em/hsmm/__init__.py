"""Hidden semi-Markov models (explicit state durations, Yu 2010): inference kernels
(:mod:`~latentfit.em.hsmm.inference`), duration distributions
(:mod:`~latentfit.em.hsmm.durations`) and the estimators."""

from latentfit.em.hsmm.models import CategoricalHSMM, GaussianHSMM, PoissonHSMM

__all__ = ["CategoricalHSMM", "GaussianHSMM", "PoissonHSMM"]
