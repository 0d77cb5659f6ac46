"""Every public estimator, on generated good and bad data: fit → predict / score /
score_samples / sample / save + load, each ending in success or a documented error.

On success the fitted parameters are finite, outputs hold no NaN, a saved and reloaded model
gives the same scores, bad HMM ``lengths`` were refused, and a DataFrame with reordered
columns is refused or gives the same answer as the original order. Whatever happens, the
input passed in is unchanged (no in-place writes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import latentfit
from latentfit.em.mixture.families import FAMILIES as MIXTURE_FAMILIES

from .oracle import (
    Documented,
    assert_finite_fitted,
    assert_no_nan,
    assert_unchanged,
    attempt,
    budget,
    snapshot,
)
from .strategies import Case, lengths_for, matrices, reframe

# Sizes a user might ask for, including nonsense; never so large that the request itself
# needs gigabytes (those cases run under a memory limit in test_memory.py).
N_COMPONENTS = st.sampled_from([1, 2, 2, 3, 0, -1, 2.5, 40])
DTYPE = st.sampled_from(["float64", "float64", "float32"])
COV = st.sampled_from(["full", "diag", "tied", "spherical"])


def _mixture_family(draw) -> tuple[str, str]:
    family = draw(st.sampled_from(sorted(MIXTURE_FAMILIES)))
    kind = {"poisson": "counts", "bernoulli": "binary", "normal": "real", "mvn": "real"}.get(
        family, "positive"
    )
    return family, kind


@st.composite
def estimators(draw, name: str):
    """(model, data kind) for the public class ``name`` with drawn constructor arguments."""
    cls = getattr(latentfit, name)
    k = draw(N_COMPONENTS)
    common = dict(random_state=0, dtype=draw(DTYPE))
    if name == "GaussianMixture":
        missing = draw(st.sampled_from(["error", "marginalize"]))
        m = cls(k, covariance_type=draw(COV), max_iter=15, missing=missing, **common)
        return m, "real"
    if name == "BayesianGaussianMixture":
        return cls(n_components=k, covariance_type=draw(COV), max_iter=15, **common), "real"
    if name in ("BernoulliMixture", "CategoricalMixture", "MultinomialMixture", "PoissonMixture"):
        kind = {
            "BernoulliMixture": "binary",
            "CategoricalMixture": "codes",
            "MultinomialMixture": "counts",
            "PoissonMixture": "counts",
        }[name]
        return cls(k, max_iter=15, **common), kind
    if name == "MixtureModel":
        family, kind = _mixture_family(draw)
        return cls(family, k, max_iter=15, **common), kind
    if name in ("FactorAnalysis", "PPCA"):
        k = draw(st.sampled_from([None, 1, 2, 5, 0]))
        return cls(k, max_iter=30, **common), "real"
    common.update(n_iter=5)
    if name == "GaussianHMM":
        return cls(k, covariance_type=draw(COV), **common), "real"
    if name == "GMMHMM":
        return cls(k, n_mix=draw(st.sampled_from([1, 2])), covariance_type=draw(COV), **common), (
            "real"
        )
    if name == "CategoricalHMM":
        return cls(k, **common), "codes"
    if name == "MultinomialHMM":
        n_trials = draw(st.sampled_from([None, None, 3, 0]))  # 0: refused; 3: rarely the rows'
        return cls(k, n_trials=n_trials, **common), "counts"
    if name == "PoissonHMM":
        return cls(k, **common), "counts"
    if name == "VariationalGaussianHMM":
        return cls(k, covariance_type=draw(COV), **common), "real"
    if name == "VariationalCategoricalHMM":
        return cls(k, **common), "codes"
    if name == "LinearGaussianSSM":
        return cls(k, covariance_type=draw(st.sampled_from(["full", "diag"])), **common), "real"
    if name in HSMMS:
        semi = dict(
            max_duration=draw(st.sampled_from([1, 3, 8, 0])),
            duration=draw(st.sampled_from(["poisson", "negative_binomial", "nonparametric"])),
            right_censoring=draw(st.booleans()),
        )
        if name == "GaussianHSMM":
            return cls(k, covariance_type=draw(COV), **semi, **common), "real"
        return cls(k, **semi, **common), ("codes" if name == "CategoricalHSMM" else "counts")
    if name == "AutoregressiveHMM":
        order = draw(st.sampled_from([1, 2, 0]))
        return cls(k, order=order, ridge=draw(st.sampled_from([0.0, 1.0])), **common), "real"
    density = dict(epochs=2, batch_size=16, patience=None, random_state=0, dtype=draw(DTYPE))
    if name in DENSITIES:
        small = dict(n_layers=draw(st.sampled_from([1, 2])), hidden=8, n_hidden=1, **density)
        return (cls("maf", **small) if name == "FlowDensity" else cls(**small)), "real"
    if name == "DDPM":
        steps = draw(st.sampled_from([5, 10, 0]))
        return cls(steps, hidden=16, n_hidden=1, time_dim=8, discrete=False, **density), "real"
    raise AssertionError(f"no strategy for {name}")


ESTIMATORS = [
    "GaussianMixture",
    "BayesianGaussianMixture",
    "BernoulliMixture",
    "CategoricalMixture",
    "MultinomialMixture",
    "PoissonMixture",
    "MixtureModel",
    "FactorAnalysis",
    "PPCA",
    "GaussianHMM",
    "GMMHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "MultinomialHMM",
    "VariationalGaussianHMM",
    "VariationalCategoricalHMM",
    "LinearGaussianSSM",
    "GaussianHSMM",
    "PoissonHSMM",
    "CategoricalHSMM",
    "AutoregressiveHMM",
    "FlowDensity",
    "MAF",
    "RealNVP",
    "NeuralSplineFlow",
    "DDPM",
]
#: Density models trained by the trainer (exact likelihood or a bound): no labels to predict.
DENSITIES = {"FlowDensity", "MAF", "RealNVP", "NeuralSplineFlow"}
HSMMS = {"GaussianHSMM", "PoissonHSMM", "CategoricalHSMM"}
HMMS = {
    "GaussianHMM",
    "GMMHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "MultinomialHMM",
    "VariationalGaussianHMM",
    "VariationalCategoricalHMM",
    "AutoregressiveHMM",
    "LinearGaussianSSM",
} | HSMMS  # take lengths
BAD_LENGTHS = {"mismatch", "negative", "fraction", "empty", "2d"}


def test_every_public_estimator_is_covered():
    """A class added to latentfit.__all__ must get a strategy here."""
    public = {n for n in latentfit.__all__ if isinstance(getattr(latentfit, n), type)}
    covered = set(ESTIMATORS) | {
        "VAE",  # torch modules trained by latentfit.train: see test_cli (fit vae / eval / sample)
        "DiscreteVAE",
        "LadderVAE",
        "TrainConfig",  # a settings dataclass, not an estimator
        "ArraySource",  # data sources: exercised through partial_fit/streaming tests
        "IterableSource",
        "NpySource",
        "ParquetSource",
    }
    assert public <= covered, f"public classes without a property strategy: {public - covered}"


def _fit(model, name, X, lengths):
    if name in HMMS:
        return attempt(f"{name}.fit", model.fit, X, lengths)
    return attempt(f"{name}.fit", model.fit, X)


def _outputs(model, name, X, lengths):
    """Run every inference method on X; return score_samples (or None)."""
    seq = (lengths,) if name in HMMS else ()
    scores = None
    methods = ["score_samples", "score", "predict", "predict_proba"]
    if name in ("FactorAnalysis", "PPCA"):
        methods = ["score_samples", "score", "transform"]
    if name in DENSITIES or name == "DDPM":
        methods = ["score_samples", "score"]
    if name == "LinearGaussianSSM":
        methods = ["score_samples", "score", "predict", "filter", "smooth"]
    for method in methods:
        try:
            out = attempt(f"{name}.{method}", getattr(model, method), X, *seq)
        except Documented:
            continue
        assert_no_nan(out, f"{name}.{method}")
        if method == "predict_proba":
            P = np.asarray(out[0] if isinstance(out, tuple) else out, dtype=float)
            np.testing.assert_allclose(P.sum(axis=-1), 1.0, rtol=1e-5, err_msg=f"{name}")
        if method == "score_samples":
            scores = out
    return scores


def _as_numpy(value):
    if isinstance(value, tuple):
        value = value[0]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_fitted(model, name, case: Case, lengths, how, X_again: Case):
    assert_finite_fitted(model)
    if name in HMMS:
        assert how not in BAD_LENGTHS, f"{name}.fit accepted bad lengths ({how}) {lengths!r}"
    X = case.X
    seq = lengths if how in ("valid", "none", "zero") else None
    scores = _outputs(model, name, X, seq)
    _outputs(model, name, X_again.X, None)
    # Samples: counts from 0 upwards, nonsense counts refused.
    n_draw = 3
    try:
        drawn = attempt(f"{name}.sample", model.sample, n_draw)
        assert_no_nan(drawn, f"{name}.sample")
        assert _as_numpy(drawn).shape[0] == n_draw
    except Documented:
        pass
    for bad in (0, -1, 2.5):
        try:
            attempt(f"{name}.sample({bad})", model.sample, bad)
        except Documented:
            pass
    # Save and load give the same model.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        attempt(f"{name}.save", model.save, path)
        loaded = attempt("latentfit.load", latentfit.load, path)
        assert type(loaded) is type(model)
        if scores is not None:
            seq_ = (seq,) if name in HMMS else ()
            again = attempt(f"loaded {name}.score_samples", loaded.score_samples, X, *seq_)
            np.testing.assert_array_equal(
                _as_numpy(again), _as_numpy(scores), err_msg=f"{name} changed by save + load"
            )
    # Columns by name, as scikit-learn: reordered columns are refused or answered as before.
    if isinstance(X, pd.DataFrame) and scores is not None and X.shape[1] > 1 and seq is None:
        for how_cols in ("reordered", "renamed", "duplicated", "extra"):
            other = reframe(X, how_cols)
            try:
                out = attempt(
                    f"{name}.score_samples on {how_cols} columns", model.score_samples, other
                )
            except Documented:
                continue
            np.testing.assert_array_equal(
                _as_numpy(out),
                _as_numpy(scores),
                err_msg=f"{name} scored a DataFrame with {how_cols} columns {list(other.columns)} "
                f"(fitted on {list(X.columns)}) differently, without an error",
            )


@pytest.mark.parametrize("name", ESTIMATORS)
@budget(25)
@given(data=st.data())
def test_estimator(name, data):
    model, kind = data.draw(estimators(name), label="model")
    case = data.draw(matrices(kind), label="X")
    lengths, how = None, "none"
    if name in HMMS:
        n = len(case.X) if hasattr(case.X, "__len__") and not isinstance(case.X, str) else 0
        lengths, how = data.draw(lengths_for(n), label="lengths")
    X_again = data.draw(matrices(kind), label="X for predict")
    before = snapshot(case.X)
    before_again = snapshot(X_again.X)
    before_lengths = snapshot(lengths)
    try:
        _fit(model, name, case.X, lengths)
        fitted = True
    except Documented:
        fitted = False
    assert_unchanged(before, case.X, f"{name}.fit")
    assert_unchanged(before_lengths, lengths, f"{name}.fit (lengths)")
    if fitted:
        _check_fitted(model, name, case, lengths, how, X_again)
    assert_unchanged(before, case.X, f"{name} inference")
    assert_unchanged(before_again, X_again.X, f"{name} inference")


@pytest.mark.parametrize("name", ESTIMATORS)
def test_use_before_fit_is_documented(name):
    """Every inference method of an unfitted model raises a documented error."""
    cls = getattr(latentfit, name)
    if name == "BayesianGaussianMixture":
        model = cls(n_components=2)
    elif name == "FlowDensity":
        model = cls("maf")
    elif name in DENSITIES or name == "DDPM":
        model = cls()
    elif name == "MixtureModel":
        model = cls("normal", 2)
    else:
        model = cls(2)
    X = np.zeros((4, 1))
    methods = ["score_samples", "score", "sample"]
    if name in ("FactorAnalysis", "PPCA"):
        methods += ["transform"]
    elif name == "LinearGaussianSSM":
        methods += ["predict", "filter", "smooth"]
    elif name not in DENSITIES and name != "DDPM":
        methods += ["predict", "predict_proba"]
    for method in methods:
        arg = 2 if method == "sample" else X
        with pytest.raises(Documented):
            attempt(f"unfitted {name}.{method}", getattr(model, method), arg)
