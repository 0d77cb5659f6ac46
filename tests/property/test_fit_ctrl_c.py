"""Every public estimator, with drawn settings, fitted from Python with Ctrl-C pressed for real
(SIGINT) at a drawn E-step pass or optimiser step, once or twice (latentfit._interrupt's
keeping_fit_on_ctrl_c): ``fit`` raises KeyboardInterrupt, and either says that it stopped and
leaves a whole fit (its stored tensors finite, its data scored), or is Python's own (a second
press) and leaves the estimator as it was: unfitted, or the previous fit bit for bit. Python's
handler of SIGINT is back in place after every fit."""

from __future__ import annotations

import contextlib
import signal
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from latentfit.em import driver
from latentfit.train import trainer

from .oracle import Documented, attempt, budget
from .strategies import base_values
from .test_estimators import ESTIMATORS, HMMS, estimators
from .test_failed_refit import _fit, _fitted_names


@contextlib.contextmanager
def pressed_at(calls: list[int]):
    """SIGINT raised at each of ``calls`` (counted over E-step passes and optimiser steps; a
    number twice: two presses there). Yields the count of presses made."""
    count, made = {"n": 0}, [0]

    def pressing(original):
        def wrapped(*args, **kwargs):
            count["n"] += 1
            for _ in range(calls.count(count["n"])):
                made[0] += 1
                signal.raise_signal(signal.SIGINT)
            return original(*args, **kwargs)

        return wrapped

    with (
        mock.patch.object(driver, "_reduced_stats", pressing(driver._reduced_stats)),
        mock.patch.object(trainer, "_total_norm", pressing(trainer._total_norm)),
    ):
        yield made


def _finite_state(model, name: str) -> None:
    tensors, _ = model._get_state()
    for key, value in tensors.items():
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if value.is_floating_point():
            assert not value.isnan().any(), f"{name}: the kept fit's {key} holds NaN"


@pytest.mark.parametrize("name", ESTIMATORS)
@budget(4)
@given(data=st.data())
def test_ctrl_c_during_fit_keeps_a_whole_fit_or_leaves_the_estimator_as_it_was(name, data):
    model, kind = data.draw(estimators(name), label="model")
    good = base_values(kind, 60, 2, data.draw(st.integers(0, 2**16), label="seed"))
    lengths = [60] if name in HMMS else None
    refit = data.draw(st.booleans(), label="a refit")
    before = None
    if refit:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _fit(model, name, good, lengths)
        except Documented:
            event("refused")
            return
        before = model._get_state()
    first = data.draw(st.integers(1, 4), label="first press at")
    calls = [first]
    if data.draw(st.booleans(), label="a second press"):
        calls.append(data.draw(st.integers(first, first + 2), label="second press at"))
    try:
        with warnings.catch_warnings(), pressed_at(calls) as made:
            warnings.simplefilter("ignore")
            _fit(model, name, good, lengths)
        outcome = None
    except Documented:
        event("refused")
        return
    except KeyboardInterrupt as raised:
        outcome = str(raised)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    event("ended" if outcome is None else "stopped" if outcome else "interrupted")
    if outcome is None:  # the fit ended before the first press
        assert made[0] == 0, f"{name}: pressed {made[0]} time(s), and fit returned"
        return
    assert made[0] >= 1
    if outcome:  # stopped: a whole fit of its own
        assert outcome.startswith(f"{type(model).__name__}.fit stopped by Ctrl-C"), outcome
        assert _fitted_names(model)
        _finite_state(model, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = attempt(f"{name}.score", model.score, good)
        assert np.isfinite(scores), f"{name}: the kept fit scores its data {scores}"
    elif before is None:
        assert not _fitted_names(model), f"{name}: an interrupted first fit left a model"
    else:
        tensors, extra = model._get_state()
        assert tensors.keys() == before[0].keys()
        for key, value in before[0].items():
            np.testing.assert_array_equal(
                np.asarray(tensors[key]), np.asarray(value), err_msg=f"{name}: {key} changed"
            )
        assert repr(extra) == repr(before[1])


@budget(10)
@given(data=st.data())
def test_ctrl_c_during_sampling_returns_the_draws_so_far_or_raises(data):
    """The sampler from Python: a press after warm-up returns the first draws of the run that
    had not been stopped (at least 4 a chain), a press during warm-up or a second press raises
    KeyboardInterrupt; Python's handler is back in place either way."""
    from latentfit.mcmc import sample, sampler

    warmup, draws = 20, 30
    first = data.draw(st.integers(1, warmup + draws), label="first press at transition")
    calls = [first]
    if data.draw(st.booleans(), label="a second press"):
        calls.append(data.draw(st.integers(first, warmup + draws), label="second press at"))
    # the batched pace, whose transitions the presses land in (test_paced.py: the own pace's)
    run = dict(
        num_chains=2, num_warmup=warmup, num_draws=draws, generator=1, progress_bar=False,
        pace="batch",
    )  # fmt: skip

    def density(mu):
        return -0.5 * mu**2

    whole = sample(density, {"mu": 0.0}, **run)
    count, made = {"n": 0}, [0]
    original = sampler._Run.transition

    def transition(self):
        count["n"] += 1
        for _ in range(calls.count(count["n"])):
            made[0] += 1
            signal.raise_signal(signal.SIGINT)
        return original(self)

    with mock.patch.object(sampler._Run, "transition", transition):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                part = sample(density, {"mu": 0.0}, **run)
        except KeyboardInterrupt:
            part = None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # raised at once in warm-up, or by a second press; else stopped after the first press's
    # transition, once each chain has 4 draws
    assert (part is None) == (first <= warmup or made[0] == 2), (calls, made)
    if part is None:
        event("raised")
        return
    want = max(first - warmup, 4)
    stopped = [w for w in caught if "sampling stopped by Ctrl-C" in str(w.message)]
    event("stopped" if stopped else "stopped at its last draw")
    assert part.num_draws == want and bool(stopped) == (want < draws)
    np.testing.assert_array_equal(part.unconstrained.numpy(), whole.unconstrained[:, :want].numpy())
