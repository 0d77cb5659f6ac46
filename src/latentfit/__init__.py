"""latentfit: models with hidden variables fitted by maximum likelihood.

MLE and MAP → the ELBO → EM (mixtures, hidden Markov models, factor models) → variational
inference → variational autoencoders, in PyTorch, on any device.
"""

from latentfit.em.gmm import GaussianMixture
from latentfit.io import load, save
from latentfit.vi.bgmm import BayesianGaussianMixture

__version__ = "0.1.0"

__all__ = [
    "BayesianGaussianMixture",
    "GaussianMixture",
    "load",
    "save",
]
