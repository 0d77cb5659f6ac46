"""Markov chain Monte Carlo: NUTS and static HMC with Stan's warm-up, all chains batched.

``sample(log_density, init=..., constraints=...)`` draws from a posterior given as a log-density
of named, constrained parameters; ``fit_map(...).sample_posterior()`` from a family with priors.
Draws go to ArviZ with ``MCMCResult.to_arviz()``. ``gibbs_gmm`` and ``gibbs_hmm`` sample a
Gaussian mixture and a Gaussian HMM by data augmentation (the sampling twins of EM).
"""

from latentfit.mcmc.gibbs import gibbs_gmm
from latentfit.mcmc.gibbs_hmm import gibbs_hmm
from latentfit.mcmc.result import MCMCResult
from latentfit.mcmc.sampler import SamplerConfig, sample, sample_target
from latentfit.mcmc.target import Target, ordered_vector

__all__ = [
    "MCMCResult",
    "SamplerConfig",
    "Target",
    "gibbs_gmm",
    "gibbs_hmm",
    "ordered_vector",
    "sample",
    "sample_target",
]
