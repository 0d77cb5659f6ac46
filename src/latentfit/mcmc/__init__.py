"""Markov chain Monte Carlo: NUTS and static HMC with Stan's warm-up, all chains batched.

``sample(log_density, init=..., constraints=...)`` draws from a posterior given as a log-density
of named, constrained parameters; ``fit_map(...).sample_posterior()`` from a family with priors.
Draws go to ArviZ with ``MCMCResult.to_arviz()``.
"""

from latentfit.mcmc.result import MCMCResult
from latentfit.mcmc.sampler import SamplerConfig, sample, sample_target
from latentfit.mcmc.target import Target, ordered_vector

__all__ = ["MCMCResult", "SamplerConfig", "Target", "ordered_vector", "sample", "sample_target"]
