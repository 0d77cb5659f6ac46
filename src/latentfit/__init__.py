"""latentfit: models with hidden variables fitted by maximum likelihood.

MLE and MAP → the ELBO → EM (mixtures, hidden Markov models, factor models) → variational
inference → variational autoencoders, in PyTorch, on any device.

The public names are imported on first use (PEP 562 ``__getattr__``): ``import latentfit``
itself loads neither torch nor scikit-learn, so the command line answers ``--help`` at once and
a script pays only for the models it uses. ``from latentfit import GaussianMixture`` works as
usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentfit._lazy import exports

__version__ = "0.1.0"

#: Each public name and the module that defines it (imported when the name is first read).
_EXPORTS = {
    "DDPM": "latentfit.diffusion",
    "PPCA": "latentfit.em.factor",
    "FactorAnalysis": "latentfit.em.factor",
    "GaussianMixture": "latentfit.em.mixture.gmm",
    "GMMHMM": "latentfit.em.hmm",
    "AutoregressiveHMM": "latentfit.em.hmm",
    "CategoricalHMM": "latentfit.em.hmm",
    "GaussianHMM": "latentfit.em.hmm",
    "MultinomialHMM": "latentfit.em.hmm",
    "PoissonHMM": "latentfit.em.hmm",
    "VariationalCategoricalHMM": "latentfit.em.hmm.variational",
    "VariationalGaussianHMM": "latentfit.em.hmm.variational",
    "CategoricalHSMM": "latentfit.em.hsmm",
    "GaussianHSMM": "latentfit.em.hsmm",
    "PoissonHSMM": "latentfit.em.hsmm",
    "MixtureModel": "latentfit.em.mixture.families",
    "BernoulliMixture": "latentfit.em.mixture.discrete",
    "CategoricalMixture": "latentfit.em.mixture.discrete",
    "MultinomialMixture": "latentfit.em.mixture.discrete",
    "PoissonMixture": "latentfit.em.mixture.discrete",
    "ArraySource": "latentfit.em.sources.chunks",
    "IterableSource": "latentfit.em.sources.chunks",
    "NpySource": "latentfit.em.sources.chunks",
    "ParquetSource": "latentfit.em.sources.chunks",
    "LinearGaussianSSM": "latentfit.em.ssm",
    "fit_map": "latentfit.estimate",
    "fit_mle": "latentfit.estimate",
    "MAF": "latentfit.flows",
    "FlowDensity": "latentfit.flows",
    "NeuralSplineFlow": "latentfit.flows",
    "RealNVP": "latentfit.flows",
    "load": "latentfit.io",
    "save": "latentfit.io",
    "select_model": "latentfit.select",
    "TrainConfig": "latentfit.train",
    "VAE": "latentfit.vae",
    "DiscreteVAE": "latentfit.vae",
    "LadderVAE": "latentfit.vae",
    "BayesianGaussianMixture": "latentfit.vi.bgmm",
}

#: The same names as ``_EXPORTS`` (a literal list, for tools that read it without running it).
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
    "CategoricalHSMM",
    "CategoricalMixture",
    "DiscreteVAE",
    "FactorAnalysis",
    "FlowDensity",
    "GaussianHMM",
    "GaussianHSMM",
    "GaussianMixture",
    "IterableSource",
    "LadderVAE",
    "LinearGaussianSSM",
    "MixtureModel",
    "MultinomialHMM",
    "MultinomialMixture",
    "NeuralSplineFlow",
    "NpySource",
    "ParquetSource",
    "PoissonHMM",
    "PoissonHSMM",
    "PoissonMixture",
    "RealNVP",
    "TrainConfig",
    "VariationalCategoricalHMM",
    "VariationalGaussianHMM",
    "fit_map",
    "fit_mle",
    "load",
    "save",
    "select_model",
]


__getattr__, __dir__ = exports(globals(), _EXPORTS, subpackages=True)


if TYPE_CHECKING:  # what static tools and IDEs see; never run
    from latentfit.diffusion import DDPM
    from latentfit.em.factor import PPCA, FactorAnalysis
    from latentfit.em.hmm import (
        GMMHMM,
        AutoregressiveHMM,
        CategoricalHMM,
        GaussianHMM,
        MultinomialHMM,
        PoissonHMM,
    )
    from latentfit.em.hmm.variational import VariationalCategoricalHMM, VariationalGaussianHMM
    from latentfit.em.hsmm import CategoricalHSMM, GaussianHSMM, PoissonHSMM
    from latentfit.em.mixture.discrete import (
        BernoulliMixture,
        CategoricalMixture,
        MultinomialMixture,
        PoissonMixture,
    )
    from latentfit.em.mixture.families import MixtureModel
    from latentfit.em.mixture.gmm import GaussianMixture
    from latentfit.em.sources.chunks import ArraySource, IterableSource, NpySource, ParquetSource
    from latentfit.em.ssm import LinearGaussianSSM
    from latentfit.estimate import fit_map, fit_mle
    from latentfit.flows import MAF, FlowDensity, NeuralSplineFlow, RealNVP
    from latentfit.io import load, save
    from latentfit.select import select_model
    from latentfit.train import TrainConfig
    from latentfit.vae import VAE, DiscreteVAE, LadderVAE
    from latentfit.vi.bgmm import BayesianGaussianMixture
