"""Markov chain Monte Carlo: NUTS and static HMC with Stan's warm-up, all chains batched.

``sample(log_density, init=..., constraints=...)`` draws from a posterior given as a log-density
of named, constrained parameters; ``fit_map(...).sample_posterior()`` from a family with priors.
Draws go to ArviZ with ``MCMCResult.to_arviz()``. ``gibbs_gmm`` and ``gibbs_hmm`` sample a
Gaussian mixture and a Gaussian HMM by data augmentation (the sampling twins of EM).

The public names are imported on first use (PEP 562 ``__getattr__``, as ``latentfit``'s own):
a submodule that needs neither torch nor scikit-learn (the own-pace kernel, which a child
process compiles: paced_compile.py) imports without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentfit._lazy import exports

#: Each public name and the module that defines it (imported when the name is first read).
_EXPORTS = {
    "MCMCResult": "latentfit.mcmc.result",
    "SamplerConfig": "latentfit.mcmc.sampler",
    "Target": "latentfit.mcmc.target",
    "gibbs_gmm": "latentfit.mcmc.gibbs",
    "gibbs_hmm": "latentfit.mcmc.gibbs_hmm",
    "ordered_vector": "latentfit.mcmc.target",
    "sample": "latentfit.mcmc.sampler",
    "sample_target": "latentfit.mcmc.sampler",
}

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


__getattr__, __dir__ = exports(globals(), _EXPORTS)


if TYPE_CHECKING:  # what static tools and IDEs see; never run
    from latentfit.mcmc.gibbs import gibbs_gmm
    from latentfit.mcmc.gibbs_hmm import gibbs_hmm
    from latentfit.mcmc.result import MCMCResult
    from latentfit.mcmc.sampler import SamplerConfig, sample, sample_target
    from latentfit.mcmc.target import Target, ordered_vector
