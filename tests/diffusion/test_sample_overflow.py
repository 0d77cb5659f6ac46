"""DDPM.sample refuses a network that gives NaN or inf, naming the layer, where the clip of
x̂_0, the tanh of an x_0 prediction or the rounding to levels would hide it; ``latentfit
density sample`` and ``latentfit sample`` then write no file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import latentfit
from latentfit import DDPM
from latentfit.cli import app
from latentfit.errors import ParameterError
from tests.altered_files import altered

runner = CliRunner()
rng = np.random.default_rng(0)
LEVELS = rng.integers(0, 256, (60, 3)).astype(float)
X = rng.normal(0, 1, (60, 2))


def _ddpm(**kw):
    return DDPM(n_steps=10, hidden=8, n_hidden=1, epochs=1, random_state=0, **kw)


@pytest.mark.parametrize(
    ("kw", "data", "key", "whole", "layer"),
    [
        # the network's inf went through tanh (x_0 prediction) or the clip of x̂_0: every
        # draw finite, written as levels 0..255 before
        ({"discrete": True, "prediction": "x0"}, LEVELS, "denoiser.out.weight", True, "out"),
        ({"discrete": True, "clip_denoised": True}, LEVELS, "denoiser.out.weight", True, "out"),
        # NaN draws were refused before, without the layer
        ({"discrete": True}, LEVELS, "denoiser.inp.weight", False, "inp"),
    ],
)
def test_a_network_giving_nan_or_inf_is_refused_naming_the_layer(
    tmp_path, monkeypatch, kw, data, key, whole, layer
):
    good, bad = altered(tmp_path, _ddpm(**kw), data, key, 3e38, whole)
    healthy = latentfit.load(good).sample(20, random_state=0)  # the clip of finite values: silent
    assert np.isfinite(healthy).all()
    model = latentfit.load(bad)
    with pytest.raises(ParameterError, match=f"the layer 'denoiser.{layer}' \\(Linear, largest"):
        model.sample(20, random_state=0)
    with pytest.raises(ParameterError, match="model file was altered"):
        model.sample(20)  # a fresh seed: the layer found again from the same start
    monkeypatch.chdir(tmp_path)
    for cmd in (["density", "sample"], ["sample"]):
        res = runner.invoke(app, [*cmd, str(bad), "-n", "5", "--out", "s.csv"])
        assert res.exit_code == 2 and res.output.startswith("error: the DDPM")
        assert f"'denoiser.{layer}'" in res.output
        assert not (tmp_path / "s.csv").exists()


def test_continuous_draws_of_a_network_giving_nan_are_refused_naming_the_layer(tmp_path):
    # latentfit.load refuses such a file (the log-density at the mean is not finite), so the
    # weight is set in memory; before, the refusal named no layer
    good, _ = altered(tmp_path, _ddpm(discrete=False), X, "denoiser.inp.weight", 3e38)
    model = latentfit.load(good)
    with torch.no_grad():
        model.module_.denoiser.inp.weight.view(-1)[0] = 3e38
    with pytest.raises(ParameterError, match=r"non-finite value \(nan\) at row 0") as err:
        model.sample(20, random_state=0)
    assert "the layer 'denoiser.inp' (Linear, largest weight 3e+38" in str(err.value)


def test_the_layer_named_is_the_one_that_overflowed_not_the_one_given_its_inf(tmp_path):
    # the output layer's 3e38 overflowed the sampler's arithmetic, and the next step's first
    # layer, given inf, was named before: "the layer 'denoiser.inp' (..., largest weight 0.6"
    good, _ = altered(tmp_path, _ddpm(discrete=False), X, "denoiser.out.weight", 3e38)
    model = latentfit.load(good)
    with torch.no_grad():
        model.module_.denoiser.out.weight.view(-1)[0] = 3e38
    with pytest.raises(ParameterError, match="its arithmetic overflows after the layer") as err:
        model.sample(20, random_state=0)
    assert "'denoiser.out' (Linear, largest weight 3e+38" in str(err.value)
