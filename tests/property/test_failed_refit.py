"""Every public estimator, with drawn settings: a fit that fails leaves the estimator as it
was (latentfit._atomic_fit). A first fit that fails leaves it unfitted; a refit on drawn
(often spoilt) data that is refused, or that an interrupt ends at a drawn E-step or optimiser
step, leaves the previous fit's stored tensors and scores bit for bit."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from latentfit.em import driver
from latentfit.train import trainer

from .oracle import Documented, attempt, budget
from .strategies import base_values, lengths_for, matrices
from .test_estimators import ESTIMATORS, HMMS, estimators


class Pressed(KeyboardInterrupt):
    """The interrupt of these tests (Ctrl-C outside the command line's handler)."""


@contextlib.contextmanager
def interrupted_at(call: int | None):
    """The ``call``-th E-step pass of an EM fit, or optimiser step of a trained one, raises
    :class:`Pressed` (None: no interrupt)."""
    if call is None:
        yield
        return
    count = {"n": 0}

    def pressing(original):
        def wrapped(*args, **kwargs):
            count["n"] += 1
            if count["n"] == call:
                raise Pressed
            return original(*args, **kwargs)

        return wrapped

    with (
        mock.patch.object(driver, "_reduced_stats", pressing(driver._reduced_stats)),
        mock.patch.object(trainer, "_total_norm", pressing(trainer._total_norm)),
    ):
        yield


def _fit(model, name, X, lengths=None):
    if name in HMMS:
        return attempt(f"{name}.fit", model.fit, X, lengths)
    return attempt(f"{name}.fit", model.fit, X)


def _scores(model, name, X) -> list[np.ndarray]:
    """score_samples as arrays (an HMM's: its log-probability and the state posteriors)."""
    out = attempt(f"{name}.score_samples", model.score_samples, X)
    return [np.asarray(v) for v in (out if isinstance(out, tuple) else (out,))]


def _fitted_names(model) -> list[str]:
    return sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("_"))


@pytest.mark.parametrize("name", ESTIMATORS)
@budget(6)
@given(data=st.data())
def test_a_fit_that_fails_leaves_the_estimator_as_it_was(name, data):
    model, kind = data.draw(estimators(name), label="model")
    good = base_values(kind, 60, 2, data.draw(st.integers(0, 2**16), label="seed"))
    first_call = data.draw(st.sampled_from([None, None, 1, 2]), label="first fit interrupted at")
    try:
        with interrupted_at(first_call):
            _fit(model, name, good, [60] if name in HMMS else None)
    except (Documented, Pressed):
        assert not _fitted_names(model), f"a failed first fit left {_fitted_names(model)}"
        with pytest.raises((Documented, NotFittedError)):
            attempt(f"{name}.score", model.score, good)
        return
    tensors, extra = model._get_state()
    fitted = {k: repr(getattr(model, k)) for k in _fitted_names(model)}
    scores = _scores(model, name, good)
    case = data.draw(matrices(kind), label="X of the refit")
    lengths = None
    if name in HMMS:
        n = len(case.X) if hasattr(case.X, "__len__") and not isinstance(case.X, str) else 0
        lengths, _ = data.draw(lengths_for(n), label="lengths")
    call = data.draw(st.sampled_from([None, 1, 2, 3]), label="refit interrupted at")
    try:
        with interrupted_at(call):
            _fit(model, name, case.X, lengths)
        return  # refitted: another model now, checked by test_estimators
    except (Documented, Pressed):
        pass
    after, extra_after = model._get_state()
    assert tensors.keys() == after.keys(), f"{name}: a failed refit changed what is stored"
    for key, value in tensors.items():
        np.testing.assert_array_equal(
            np.asarray(after[key]), np.asarray(value), err_msg=f"{name}: {key} changed"
        )
    assert repr(extra) == repr(extra_after), f"{name}: a failed refit changed its record"
    assert {k: repr(getattr(model, k)) for k in _fitted_names(model)} == fitted
    for now, then in zip(_scores(model, name, good), scores, strict=True):
        np.testing.assert_array_equal(
            now, then, err_msg=f"{name}: a failed refit changed the scores of its data"
        )
