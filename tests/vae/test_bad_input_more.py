"""Bad input to VAE pieces: settings, specs too large to build, data outside the
likelihood's support, and training that diverges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentfit.errors import DataError, ParameterError, ResourceLimitError
from latentfit.train import TrainConfig, train
from latentfit.vae import BetaVAE, CyclicalWarmup, ModelSpec, build_model, marginal_log_likelihood
from latentfit.vae.objectives import ELBO
from latentfit.vae.schedules import LinearWarmup, free_bits_kl


@pytest.mark.parametrize("floor", [-1.0, math.nan, math.inf, 1e308])
def test_free_bits_floor_is_checked(floor):
    with pytest.raises(ParameterError, match="floor"):
        free_bits_kl(torch.ones(3, 2), floor)
    with pytest.raises(ParameterError, match="free_bits"):
        ELBO(free_bits=floor)


@pytest.mark.parametrize("beta", [math.nan, math.inf, -1.0])
def test_beta_must_be_finite_and_non_negative(beta):
    with pytest.raises(ParameterError, match="beta"):
        BetaVAE(beta=beta)


def test_schedules_refuse_nan():
    with pytest.raises(ParameterError):
        CyclicalWarmup(math.nan)
    with pytest.raises(ParameterError):
        CyclicalWarmup(10, ratio=math.nan)
    with pytest.raises(ParameterError):
        LinearWarmup(math.nan)


@pytest.mark.parametrize(
    "spec", [dict(z_dim=2 * 10**9, hidden=[8]), dict(z_dim=2, hidden=[2 * 10**9])]
)
def test_a_spec_too_large_is_refused_before_allocating(spec):
    with pytest.raises(ResourceLimitError, match="hidden"):
        build_model(ModelSpec(x_dim=4, **spec))


def _model():
    return build_model(ModelSpec(x_dim=4, z_dim=2, hidden=[8]))


@pytest.mark.parametrize("value", [255.0, -1.0])
def test_bernoulli_scores_refuse_data_outside_0_1(value):
    X = torch.full((3, 4), 0.5)
    X[1, 2] = value
    with pytest.raises(DataError, match=r"row 1, column 2.*Bernoulli"):
        marginal_log_likelihood(_model(), X, k=2)


def test_categorical_scores_read_floats_as_intensities_and_integers_as_levels():
    model = build_model(
        ModelSpec(x_dim=4, z_dim=2, hidden=[8], likelihood="categorical", n_levels=256)
    )
    # float pixels of 0..255 would be read as intensities and rounded to levels up to 65,025
    with pytest.raises(DataError, match=r"row 0, column 1.*intensities in \[0, 1\]"):
        marginal_log_likelihood(model, torch.tensor([[0.0, 255.0, 3.0, 1.0]] * 2), k=2)
    likelihood = model.decoder.likelihood  # integer levels, as levels() reads them
    with pytest.raises(DataError, match=r"needs levels 0..255"):
        likelihood.check_data(torch.tensor([[0, 256, 3, 1]]))
    likelihood.check_data(torch.tensor([[0, 255, 3, 1]]))
    assert marginal_log_likelihood(model, torch.full((2, 4), 0.5), k=2).log_px.shape == (2,)


def test_bernoulli_training_refuses_data_outside_0_1():
    cfg = TrainConfig(epochs=1, batch_size=3, diagnostics=False, progress=False)
    with pytest.raises(DataError, match="Bernoulli"):
        train(_model(), ELBO(), torch.full((3, 4), 255.0), None, cfg)


def test_training_that_never_takes_a_finite_step_raises():
    X = torch.rand(6, 4)
    cfg = TrainConfig(epochs=2, batch_size=3, diagnostics=False, progress=False, patience=None)
    with pytest.raises(ParameterError, match=r"diverged.*beta"):
        train(_model(), BetaVAE(beta=1e308), X, None, cfg)


def test_an_occasional_skipped_step_is_still_allowed():
    X = torch.rand(6, 4)
    calls = {"n": 0}
    obj = ELBO()

    def flaky(model, x, generator=None, kl_weight=1.0):
        out = obj(model, x, generator, kl_weight)
        calls["n"] += 1
        if calls["n"] == 1:  # the first step only: skipped, the next ones train
            return out._replace(loss=out.loss * math.nan)
        return out

    cfg = TrainConfig(epochs=1, batch_size=2, diagnostics=False, progress=False, patience=None)
    res = train(_model(), flaky, X, None, cfg)
    assert res.n_skipped == 1 and res.steps == 3


@pytest.mark.parametrize(
    "settings, match",
    [
        (
            {"flow": "planar", "flow_steps": 1001},
            r"flow_steps=1001 \(must be an integer in \[1, 1000\]\)",
        ),
        ({"flow": "planar", "flow_steps": 10**6}, r"flow_steps=1000000"),
        ({"hidden": [2] * 65}, r"hidden=.*1 to 64 positive layer sizes"),
        ({"likelihood": "categorical", "n_levels": 10**5}, r"n_levels=100000"),
        ({"kind": "discrete", "straight_through": "no"}, r"straight_through='no' \(must be true"),
        ({"seed": 1.5}, r"seed=1.5"),
        ({"seed": 2**70}, r"seed=1180591620717411303424"),
        ({"bogus": 1}, r"unknown setting\(s\) \['bogus'\]"),
    ],
)
def test_build_model_refuses_what_load_model_would(settings, match):
    # found by hand: build_model took specs that save_model wrote and load_model refused
    # (and flow_steps=10**6 built for more than ten minutes; straight_through="no" meant on)
    with pytest.raises(ParameterError, match=match):
        build_model(**{"x_dim": 12, "z_dim": 3, "hidden": [8], **settings})


def test_a_spec_of_numpy_integers_and_tuples_saves_and_loads(tmp_path):
    from latentfit.vae import load_model, save_model

    model = build_model(x_dim=np.int64(12), z_dim=3, hidden=(8,))
    save_model(model, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").spec == model.spec


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf, "a"])
def test_a_constant_kl_weight_outside_0_to_inf_is_refused(weight):
    # found by hand: -1 trained silently, rewarding a larger KL; NaN surfaced as "diverged"
    from latentfit.vae.schedules import ConstantKL

    with pytest.raises(ParameterError, match="weight must be a finite number >= 0"):
        ConstantKL(weight)


def test_marginal_log_likelihood_takes_a_seed_numpy_rows_and_float64_rows():
    # found by hand (a helper's hunt): generator=0 reached torch.randn (TypeError), numpy X
    # reached torch.isfinite (TypeError), float64 X on a float32 model reached mm (RuntimeError)
    model = build_model(x_dim=12, z_dim=3, hidden=[8])
    X = torch.rand(5, 12, generator=torch.Generator().manual_seed(0))
    a = marginal_log_likelihood(model, X, k=10, generator=0)
    for same in (X.numpy(), X.double()):
        assert torch.equal(
            torch.as_tensor(a[0]),
            torch.as_tensor(marginal_log_likelihood(model, same, k=10, generator=0)[0]),
        )
    with pytest.raises(ParameterError, match="generator must be None, an integer seed"):
        marginal_log_likelihood(model, X, k=10, generator="a")
