"""A flow's sample refuses a network that gives NaN or inf, naming the layer, where the
sigmoid and the clip to levels of a dequantised flow would hide it; ``latentfit density
sample`` then writes no file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import latentfit
from latentfit import RealNVP
from latentfit.cli import app
from latentfit.errors import ParameterError
from tests.altered_files import altered

runner = CliRunner()
rng = np.random.default_rng(0)
X = rng.normal(0, 1, (60, 2))
SMALL = {"n_layers": 2, "hidden": 8, "n_hidden": 1, "epochs": 1, "random_state": 0}
LEVELS = rng.integers(0, 256, (60, 4)).astype(float)


@pytest.mark.parametrize(
    ("dequantize", "data", "key", "whole", "said"),
    [
        # -inf before the sigmoid (level 0) beside a NaN: refused before, without the layer
        (True, LEVELS, "layers.0.net.2.weight", True, r"drew a non-finite value \(-inf\)"),
        (True, LEVELS, "layers.1.net.0.weight", False, r"drew a non-finite value \(nan\)"),
        (False, X, "layers.0.net.0.weight", True, r"drew a non-finite value \(nan\)"),
    ],
)
def test_a_network_giving_nan_or_inf_is_refused_naming_the_layer(
    tmp_path, monkeypatch, dequantize, data, key, whole, said
):
    model = RealNVP(**SMALL, dequantize=dequantize)
    good, bad = altered(tmp_path, model, data, key, 3e38, whole)
    healthy = latentfit.load(good).sample(20, random_state=0)  # the clip of finite values: silent
    assert np.isfinite(healthy).all()
    layer = key.rsplit(".", 1)[0]
    with pytest.raises(ParameterError, match=said) as err:
        latentfit.load(bad).sample(20, random_state=0)
    assert f"the layer {layer!r} (Linear, largest weight 3e+38" in str(err.value)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["density", "sample", str(bad), "-n", "20", "--out", "s.csv"])
    assert res.exit_code == 2 and res.output.startswith("error: the RealNVP")
    assert layer in res.output
    assert not (tmp_path / "s.csv").exists()


def test_an_inf_the_levels_hide_is_refused(tmp_path):
    # the coupling's inf went through its tanh and the sigmoid: levels written before
    good, _ = altered(
        tmp_path, RealNVP(**SMALL, dequantize=True), LEVELS, "layers.1.net.2.weight", 3e38
    )
    model = latentfit.load(good)
    with torch.no_grad():
        model.module_.layers[1].net[2].weight.view(-1)[0] = 3e38
    with pytest.raises(ParameterError, match="gave NaN or inf while drawing") as err:
        model.sample(5, random_state=0)
    assert "the layer 'layers.1.net.2' (Linear, largest weight 3e+38" in str(err.value)
