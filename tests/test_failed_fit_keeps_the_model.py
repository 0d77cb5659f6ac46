"""A fit that fails part way (an error found mid-fit, Ctrl-C) leaves the estimator as it was
(latentfit._atomic_fit): every model class is fitted, refitted on other rows until an
interrupt in its second E-step or optimiser step, and must then hold the same stored tensors,
settings and outputs bit for bit; a first fit that fails leaves it unfitted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import latentfit as lf
from latentfit.em import driver
from latentfit.em.hmm import online
from latentfit.train import trainer

from .test_every_model_on_device import LENGTHS, SEQUENCE_MODELS
from .test_io_round_trip import MODELS, _outputs, _same


class Pressed(KeyboardInterrupt):
    pass


def interrupt_at(monkeypatch, module, name, call=2):
    """``module.name`` raises at its ``call``-th call."""
    original, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Pressed
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def interrupt_fits(monkeypatch):
    """The second E-step of an EM fit, or the second optimiser step of a network's."""
    return [
        interrupt_at(monkeypatch, driver, "_reduced_stats"),
        interrupt_at(monkeypatch, trainer, "_total_norm"),
    ]


def fit(model, X, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few iterations: not converged, as meant
        return model.fit(X, lengths) if lengths else model.fit(X)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_refit_that_fails_part_way_leaves_the_previous_fit_whole(name, monkeypatch):
    make, X = MODELS[name]
    lengths = LENGTHS if name in SEQUENCE_MODELS else None
    model = fit(make(None), X, lengths)
    tensors, extra = model._get_state()
    attributes = {k: v for k, v in vars(model).items() if k.endswith("_")}
    outputs = _outputs(model, X, lengths)
    calls = interrupt_fits(monkeypatch)
    with pytest.raises(Pressed):
        fit(model, np.ascontiguousarray(X[::-1]), lengths)
    assert max(len(c) for c in calls) == 2  # it was interrupted part way, not before it began
    monkeypatch.undo()
    tensors_after, extra_after = model._get_state()
    assert tensors.keys() == tensors_after.keys()
    for key, value in tensors.items():
        assert _same(value, tensors_after[key]), f"stored tensor {key!r} changed"
    assert _same(extra, extra_after)
    assert _same(attributes, {k: v for k, v in vars(model).items() if k.endswith("_")})
    for method, value in _outputs(model, X, lengths).items():
        assert _same(value, outputs[method]), f"{method} changed"


@pytest.mark.parametrize("name", ["GaussianMixture", "FactorAnalysis", "RealNVP", "DDPM"])
def test_a_first_fit_that_fails_leaves_the_model_unfitted(name, monkeypatch):
    make, X = MODELS[name]
    model = make(None)
    interrupt_fits(monkeypatch)
    with pytest.raises(Pressed):
        fit(model, X, None)
    monkeypatch.undo()
    assert not [k for k in vars(model) if k.endswith("_") and not k.startswith("_")]
    with pytest.raises(NotFittedError):
        model.score(X)


@pytest.mark.parametrize("cls", [lf.GaussianMixture, lf.MAF])
def test_a_refit_on_wider_data_that_fails_still_predicts_the_data_it_was_fitted_to(
    cls, monkeypatch
):
    rng = np.random.default_rng(0)
    X2, X3 = rng.normal(size=(200, 2)), rng.normal(size=(200, 3))
    model = cls(2, random_state=0) if cls is lf.GaussianMixture else cls(epochs=2, hidden=8)
    fit(model, X2, None)
    scores = model.score_samples(X2)
    interrupt_fits(monkeypatch)
    with pytest.raises(Pressed):
        fit(model, X3, None)
    monkeypatch.undo()
    assert model.n_features_in_ == 2
    np.testing.assert_array_equal(model.score_samples(X2), scores)


def test_an_online_hmm_update_that_fails_part_way_changes_nothing(monkeypatch):
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(size=(3000, 2)), rng.normal(size=(3000, 2)) + 3]
    model = lf.GaussianHMM(2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.partial_fit(X[:3000])
    before = {k: v for k, v in vars(model).items()}
    calls = interrupt_at(monkeypatch, online.OnlineHMMMixin, "_online_block")
    with pytest.raises(Pressed):
        model.partial_fit(X[3000:], new_sequence=False)
    assert len(calls) == 2
    monkeypatch.undo()
    assert vars(model).keys() == before.keys()
    for key, value in before.items():
        assert _same(value, vars(model)[key]), f"{key} changed"
