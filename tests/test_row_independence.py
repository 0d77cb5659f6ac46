"""A per-row answer depends on that row only; a sequence model's, on that sequence only.

Every method that returns one value per row (score_samples, predict, predict_proba, transform,
a flow's log-density, a fitted distribution's or a conjugate posterior predictive's
log-density) gives row i the same answer scored alone, among other rows, at another position,
beside a row 1e6 times the data's scale, and in a batch the model splits into chunks of rows.
For the HMMs, HSMMs and the state-space model the unit is a sequence of ``lengths``: its
log-likelihoods, posteriors, paths and filtered or smoothed means do not depend on the
sequences beside it, their order, a far sequence among them, or a batch long enough to take
the compiled kernels (``COMPILE_MIN_STEPS`` steps). A batch-wide shift or centre taken for
numerical safety leaks across rows, and is caught here.

Tolerance: these are the same float64 arithmetic on the same row, so answers agree to a few
ulps; 1e-10 relative (or 1e-12 absolute, for probabilities near 0) leaves room for a
different order of summation in a different kernel, and none for a shift that loses digits.

The stochastic estimators (a DDPM's bound, a dequantised flow's bound, a VAE's importance
sampled log p(x)) draw their noise for a whole batch, so a row's estimate changes with the
rows beside it by independent noise; they are not asserted here.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

import latentfit as lf
import latentfit.em.base
import latentfit.em.mixture.base
import latentfit.em.mixture.gmm
import latentfit.vi.bgmm
from latentfit.em.hmm.inference import posterior as hmm_posterior
from latentfit.estimate import (
    BetaBinomial,
    DirichletMultinomial,
    GammaPoisson,
    NormalInverseGamma,
    NormalInverseWishart,
    fit_mle,
)

from .test_every_model_on_device import GAUSS, LENGTHS, MIXTURES, SEQUENCE_MODELS

RTOL, ATOL = 1e-10, 1e-12
CHUNKED_MODULES = (
    latentfit.em.base,
    latentfit.em.mixture.base,
    latentfit.em.mixture.gmm,
    latentfit.vi.bgmm,
)

ROW_MODELS = {
    **MIXTURES,
    "GaussianMixture-diag": (
        lambda d: lf.GaussianMixture(2, covariance_type="diag", random_state=0, device=d),
        GAUSS,
    ),
    "GaussianMixture-spherical": (
        lambda d: lf.GaussianMixture(2, covariance_type="spherical", random_state=0, device=d),
        GAUSS,
    ),
}
ROW_METHODS = ("score_samples", "predict", "predict_proba", "transform")


@functools.cache
def _fitted(name: str):
    make, X = ROW_MODELS.get(name) or SEQUENCE_MODELS[name]
    X = np.asarray(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make("cpu").fit(X) if name in ROW_MODELS else make("cpu").fit(X, LENGTHS)
    return model, X


def _same(got, want, what: str) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


def _continuous(X: np.ndarray) -> bool:
    return X.dtype.kind == "f" and not np.array_equal(X, np.round(X))


@pytest.mark.parametrize(
    ("name", "method"),
    [
        pytest.param(n, m, id=f"{n}-{m}")
        for n in ROW_MODELS
        for m in ROW_METHODS
        if hasattr(_fitted(n)[0], m)
    ],
)
def test_a_row_answer_depends_on_that_row_only(name, method, monkeypatch):
    model, X = _fitted(name)
    f = getattr(model, method)
    full = f(X)  # (n, ...)
    n = len(X)
    for i in (0, n // 2, n - 1):
        _same(f(X[i : i + 1])[0], full[i], f"row {i} scored alone")
    perm = np.random.default_rng(1).permutation(n)
    _same(f(X[perm]), full[perm], "rows permuted")
    if _continuous(X):  # a row 1e6 times the data's scale beside them
        far = X[:1] * 1e6 + 1e6 * X.std()
        _same(f(np.concatenate([X, far]))[:n], full, "beside a far row")
    for module in CHUNKED_MODULES:  # chunks of 7 rows, across every chunk boundary
        monkeypatch.setattr(module, "default_chunk_rows", lambda *a, **k: 7)
    _same(f(X), full, "in chunks of 7 rows")


def _posteriors(model, X, lengths):
    out = model.score_samples(X, lengths)
    return out[1] if isinstance(out, tuple) else out  # (total, posteriors): the posteriors


#: every per-row answer of a sequence model for X in sequences ``lengths``
SEQUENCE_METHODS = {
    "score_samples": _posteriors,
    "predict_proba": lambda m, X, lengths: m.predict_proba(X, lengths),
    "viterbi": lambda m, X, lengths: m.decode(X, lengths, algorithm="viterbi")[1],
    "map": lambda m, X, lengths: m.decode(X, lengths, algorithm="map")[1],
    "filter": lambda m, X, lengths: m.filter(X, lengths)[0],
    "smooth": lambda m, X, lengths: m.smooth(X, lengths)[0],
    "predict": lambda m, X, lengths: m.predict(X, lengths),
}


def _offers(model, method: str) -> bool:
    return hasattr(model, "decode" if method in ("viterbi", "map") else method)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        pytest.param(n, m, id=f"{n}-{m}")
        for n in SEQUENCE_MODELS
        for m in SEQUENCE_METHODS
        if _offers(_fitted(n)[0], m)
    ],
)
def test_a_sequence_answer_depends_on_that_sequence_only(name, method):
    model, X = _fitted(name)
    f = functools.partial(SEQUENCE_METHODS[method], model)
    a, b = X[: LENGTHS[0]], X[LENGTHS[0] :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = f(a, [len(a)])
    rng = np.random.default_rng(3)
    # a batch long enough for the compiled kernels and their chunks of steps
    long = X[rng.integers(0, len(X), hmm_posterior.COMPILE_MIN_STEPS)]
    batches = {
        "after another": [b, a],
        "between others": [b[:9], a, b],
        "after a long one": [long, a],
    }
    if _continuous(X):
        batches["before a far one"] = [a, a * 1e6 + 1e6 * X.std()]
    for where, seqs in batches.items():
        i = next(j for j, s in enumerate(seqs) if s is a)
        start = sum(len(s) for s in seqs[:i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = f(np.concatenate(seqs), [len(s) for s in seqs])
        _same(got[start : start + len(a)], alone, where)


def test_autoregressive_hmm_sequence_beside_a_far_one_float32():
    # before: the states' centres were the medians of the whole batch; a sequence near 1e3
    # beside this one (near 1e4) moved them, and in float32 its posteriors by up to 1.0 and
    # its Viterbi path
    X = GAUSS + 1e4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lf.AutoregressiveHMM(2, n_iter=5, random_state=0, dtype="float32")
        model.fit(X, LENGTHS)
    a = X[:70]
    far = np.random.default_rng(0).normal(1e9, 1e6, (70, 2))
    both = np.concatenate([a, far])
    _, post = model.score_samples(a, [70])
    _, post_both = model.score_samples(both, [70, 70])
    np.testing.assert_array_equal(post_both[:70], post)
    np.testing.assert_array_equal(model.predict(both, [70, 70])[:70], model.predict(a, [70]))


@pytest.mark.parametrize("cls", [lf.RealNVP, lf.MAF, lf.NeuralSplineFlow], ids=lambda c: c.__name__)
def test_a_flow_log_density_depends_on_that_row_only(cls):
    model = cls(n_layers=2, hidden=8, epochs=2, random_state=0).fit(GAUSS)
    full = model.score_samples(GAUSS)
    n = len(GAUSS)
    for i in (0, n - 1):
        _same(model.score_samples(GAUSS[i : i + 1])[0], full[i], f"row {i} alone")
    perm = np.random.default_rng(1).permutation(n)
    _same(model.score_samples(GAUSS[perm]), full[perm], "rows permuted")
    far = GAUSS[:1] * 1e6 + 1e6
    _same(model.score_samples(np.concatenate([GAUSS, far]))[:n], full, "beside a far row")
    # scored in batches of 1000 rows: the rows after 1000 others
    many = np.concatenate([GAUSS] * 9)  # 1080 rows
    _same(model.score_samples(many)[1000:], full[1000 - 8 * n :], "after the first batch")


def _fitted_log_densities():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, 40)
    counts = rng.poisson(3.0, 40)
    pos = rng.gamma(2.0, 1.5, 40)
    return {
        "fit_mle-normal": (fit_mle("normal", x).distribution, x),
        "fit_mle-poisson": (fit_mle("poisson", counts).distribution, counts),
        "fit_mle-gamma": (fit_mle("gamma", pos).distribution, pos),
        "BetaBinomial": (
            BetaBinomial(1.5, 2.5, total_count=7)
            .update(rng.binomial(7, 0.4, 20))
            .posterior_predictive(),
            rng.binomial(7, 0.4, 40),
        ),
        "DirichletMultinomial": (
            DirichletMultinomial([1.0, 2.0, 0.5], total_count=5)
            .update(rng.multinomial(5, [0.2, 0.5, 0.3], 15))
            .posterior_predictive(),
            rng.multinomial(5, [0.2, 0.5, 0.3], 40),
        ),
        "GammaPoisson": (GammaPoisson(2.0, 0.5).update(counts).posterior_predictive(), counts),
        "NormalInverseGamma": (
            NormalInverseGamma(0.5, 2.0, 3.0, 2.0).update(x).posterior_predictive(),
            x,
        ),
        "NormalInverseWishart": (
            NormalInverseWishart([0.0, 1.0], 2.0, 5.0, [[2.0, 0.3], [0.3, 1.0]])
            .update(GAUSS)
            .posterior_predictive(),
            GAUSS,
        ),
    }


@pytest.mark.parametrize("name", list(_fitted_log_densities()))
def test_a_fitted_distribution_log_density_depends_on_that_row_only(name):
    dist, x = _fitted_log_densities()[name]
    x = torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)
    full = dist.log_prob(x).numpy()
    n = len(x)
    for i in (0, n - 1):
        _same(dist.log_prob(x[i : i + 1]).numpy()[0], full[i], f"row {i} alone")
    perm = torch.as_tensor(np.random.default_rng(1).permutation(n))
    _same(dist.log_prob(x[perm]).numpy(), full[perm.numpy()], "rows permuted")


@pytest.mark.parametrize(
    "spec",
    [
        dict(x_dim=16, z_dim=3, hidden=[8, 8]),
        dict(x_dim=64, z_dim=3, hidden=[8], network="conv", image_shape=[1, 8, 8]),
        dict(x_dim=16, z_dim=3, hidden=[8], kind="discrete", n_categories=4),
    ],
    ids=["VAE-mlp", "VAE-conv", "DiscreteVAE"],
)
def test_a_vae_posterior_mean_depends_on_that_row_only(spec):
    # the encoders' means (no flow: exact, not Monte-Carlo), in float64
    from latentfit.vae import build_model

    model = build_model(**spec).double().eval()
    X = torch.as_tensor(np.random.default_rng(0).random((200, spec["x_dim"])) < 0.5).double()
    with torch.no_grad():
        full = model.posterior_mean(X).numpy()
        for i in (0, 199):
            _same(model.posterior_mean(X[i : i + 1]).numpy()[0], full[i], f"row {i} alone")
        perm = torch.as_tensor(np.random.default_rng(1).permutation(200))
        _same(model.posterior_mean(X[perm]).numpy(), full[perm.numpy()], "rows permuted")
