"""Every public model fits, scores, predicts and samples on every device.

The device-aware tests elsewhere follow a handful of models in depth; these follow all of them
through the public methods a user calls, small and quick. On the CPU they run inside
``DeviceTags`` (the ``device`` fixture, tests/conftest.py), which fails a test wherever the model
combines a tensor it made for its device with one it made without ``device=`` (what a CUDA run
stops on); where CUDA is present they run there. A fitted model's arrays come back as finite
numpy arrays, whatever the device.
"""

from __future__ import annotations

import numpy as np
import pytest

import latentfit as lf

RNG = np.random.default_rng(0)
GAUSS = np.concatenate([RNG.normal(-2, 1, (60, 2)), RNG.normal(2, 1, (60, 2))])
COUNTS = RNG.poisson(np.r_[np.full(60, 2.0), np.full(60, 9.0)])[:, None]
SYMBOLS = RNG.integers(0, 3, (120, 1))
BINARY = (RNG.random((120, 5)) < np.r_[np.full(60, 0.2), np.full(60, 0.8)][:, None]).astype(float)
LENGTHS = [70, 50]
# rows of six trials from two regimes (their own generator: the data above stay as they were)
_TRIALS_RNG = np.random.default_rng(1)
TRIALS = np.concatenate(
    [
        _TRIALS_RNG.multinomial(6, [0.7, 0.2, 0.1], 60),
        _TRIALS_RNG.multinomial(6, [0.1, 0.2, 0.7], 60),
    ]
)

# name: (model factory(device), data, lengths, what it must offer)
SEQUENCE_MODELS = {
    "GaussianHMM": (lambda d: lf.GaussianHMM(2, n_iter=5, random_state=0, device=d), GAUSS),
    "GMMHMM": (lambda d: lf.GMMHMM(2, n_mix=2, n_iter=5, random_state=0, device=d), GAUSS),
    "PoissonHMM": (lambda d: lf.PoissonHMM(2, n_iter=5, random_state=0, device=d), COUNTS),
    "CategoricalHMM": (lambda d: lf.CategoricalHMM(2, n_iter=5, random_state=0, device=d), SYMBOLS),
    "MultinomialHMM": (lambda d: lf.MultinomialHMM(2, n_iter=5, random_state=0, device=d), TRIALS),
    "AutoregressiveHMM": (
        lambda d: lf.AutoregressiveHMM(2, n_iter=5, random_state=0, device=d),
        GAUSS,
    ),
    "VariationalGaussianHMM": (
        lambda d: lf.VariationalGaussianHMM(2, n_iter=5, random_state=0, device=d),
        GAUSS,
    ),
    "VariationalCategoricalHMM": (
        lambda d: lf.VariationalCategoricalHMM(2, n_iter=5, random_state=0, device=d),
        SYMBOLS,
    ),
    "GaussianHSMM": (
        lambda d: lf.GaussianHSMM(2, max_duration=8, n_iter=3, random_state=0, device=d),
        GAUSS,
    ),
    "PoissonHSMM": (
        lambda d: lf.PoissonHSMM(2, max_duration=8, n_iter=3, random_state=0, device=d),
        COUNTS,
    ),
    "CategoricalHSMM": (
        lambda d: lf.CategoricalHSMM(2, max_duration=8, n_iter=3, random_state=0, device=d),
        SYMBOLS,
    ),
    "LinearGaussianSSM": (
        lambda d: lf.LinearGaussianSSM(1, n_iter=3, random_state=0, device=d),
        GAUSS,
    ),
}

MIXTURES = {
    "GaussianMixture": (lambda d: lf.GaussianMixture(2, random_state=0, device=d), GAUSS),
    "GaussianMixture-tied": (
        lambda d: lf.GaussianMixture(2, covariance_type="tied", random_state=0, device=d),
        GAUSS,
    ),
    "BayesianGaussianMixture": (
        lambda d: lf.BayesianGaussianMixture(n_components=2, max_iter=20, random_state=0, device=d),
        GAUSS,
    ),
    "PoissonMixture": (lambda d: lf.PoissonMixture(2, random_state=0, device=d), COUNTS),
    "BernoulliMixture": (lambda d: lf.BernoulliMixture(2, random_state=0, device=d), BINARY),
    "CategoricalMixture": (lambda d: lf.CategoricalMixture(2, random_state=0, device=d), SYMBOLS),
    "MultinomialMixture": (
        lambda d: lf.MultinomialMixture(2, random_state=0, device=d),
        RNG.poisson(3.0, (120, 3)),
    ),
    "MixtureModel-gamma": (
        lambda d: lf.MixtureModel("gamma", 2, random_state=0, device=d),
        np.exp(GAUSS[:, :1] / 2),
    ),
    "MixtureModel-mixed": (
        lambda d: lf.MixtureModel(["normal", "exponential"], random_state=0, device=d),
        np.abs(GAUSS[:, :1]) + 0.1,
    ),
    "PPCA": (lambda d: lf.PPCA(1, random_state=0, device=d), GAUSS),
    "FactorAnalysis": (lambda d: lf.FactorAnalysis(1, random_state=0, device=d), GAUSS),
}


def _finite(*arrays):
    for a in arrays:
        a = np.asarray(a, dtype=float)
        assert isinstance(a, np.ndarray) and np.isfinite(a).all()


@pytest.mark.parametrize("name", list(SEQUENCE_MODELS))
def test_sequence_models_on_the_device(name, device):
    make, X = SEQUENCE_MODELS[name]
    m = make(device).fit(X, LENGTHS)
    _finite(m.score(X, LENGTHS))
    if hasattr(m, "predict"):  # the most likely states (an SSM: the smoothed latent means)
        assert len(m.predict(X, LENGTHS)) == len(X)
    if hasattr(m, "predict_proba"):
        _finite(m.predict_proba(X, LENGTHS))
    if hasattr(m, "sample"):
        out = m.sample(7, random_state=1)
        _finite(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("name", list(MIXTURES))
def test_mixtures_and_factor_models_on_the_device(name, device):
    make, X = MIXTURES[name]
    m = make(device).fit(X)
    _finite(m.score(X), m.score_samples(X))
    if hasattr(m, "predict_proba"):
        _finite(m.predict_proba(X))
        assert m.predict(X).shape == (len(X),)
    if hasattr(m, "transform"):
        _finite(m.transform(X))
    if hasattr(m, "sample"):
        out = m.sample(7)
        _finite(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("kind", ["realnvp", "maf", "spline"])
def test_flows_on_the_device(kind, device):
    cls = {"realnvp": lf.RealNVP, "maf": lf.MAF, "spline": lf.NeuralSplineFlow}[kind]
    m = cls(n_layers=2, hidden=8, epochs=2, batch_size=40, random_state=0, device=device)
    m.fit(GAUSS)
    _finite(m.score_samples(GAUSS), m.sample(5))


def test_ddpm_on_the_device(device):
    m = lf.DDPM(
        n_steps=20, hidden=16, discrete=False, epochs=2, batch_size=40, random_state=0,
        device=device,
    )  # fmt: skip
    m.fit(GAUSS)
    _finite(m.sample(5))


def test_model_selection_on_the_device(device):
    res = lf.select_model(GAUSS, n_components=[1, 2], random_state=0, device=device)
    assert res.best_model_.n_components == 2  # two clusters 4 sd apart
    _finite(res.best_model_.score_samples(GAUSS))
