"""Variational inference: CAVI models, stochastic VI, gradient estimators, the ELBO made visible."""

from latentfit.vi.bgmm import BayesianGaussianMixture

__all__ = ["BayesianGaussianMixture"]
