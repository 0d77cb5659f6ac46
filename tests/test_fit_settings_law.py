"""The fit-settings law, for the network models (MAF, RealNVP, NeuralSplineFlow, DDPM): a
setting that fixes the fitted network (its layers, its noise schedule, the levels it reads)
changed after the fit takes effect at the next fit, as in scikit-learn. Until then the fitted
model scores, samples and is rebuilt in another dtype with the fit's value, and a save is
refused naming the setting, since a file holds one value of each setting and the network is
the one of the fit's; set back, the model saves and loads as the one that was fitted."""

import copy
import warnings

import numpy as np
import pytest

import latentfit as lf
from latentfit.diffusion import DDPM
from latentfit.errors import ParameterError
from latentfit.flows import MAF, NeuralSplineFlow, RealNVP

_LEVELS = np.random.default_rng(0).integers(0, 256, size=(60, 3)).astype(float)
_REAL = np.random.default_rng(1).normal(size=(60, 3))
_SMALL = {"epochs": 2, "random_state": 0}
_FLOW = {"n_layers": 2, "hidden": 8, **_SMALL}
_DDPM = {"n_steps": 20, "hidden": 16, "n_hidden": 1, "eval_timesteps": None, **_SMALL}

#: name: (the unfitted model, its data)
MODELS = {
    "maf": (lambda: MAF(dequantize=True, **_FLOW), _LEVELS),
    "realnvp": (lambda: RealNVP(dequantize=True, **_FLOW), _LEVELS),
    "spline": (lambda: NeuralSplineFlow(dequantize=True, **_FLOW), _LEVELS),
    "maf-real": (lambda: MAF(**_FLOW), _REAL),
    "ddpm": (lambda: DDPM(**_DDPM), _LEVELS),
    "ddpm-learned": (
        lambda: DDPM(variance="learned", decoder_fraction=0.1, **_DDPM),
        _LEVELS,
    ),
    "ddpm-real": (lambda: DDPM(discrete=False, **_DDPM), _REAL),
}

_FLOW_CHANGES = [
    ("n_levels", 512),
    ("dequantize", False),
    ("alpha", 1e-3),
    ("n_layers", 3),
    ("hidden", 16),
    ("n_hidden", 1),
]
#: (model, setting, the value set after the fit)
CHANGES = [
    *(("maf", *c) for c in [*_FLOW_CHANGES, ("flow", "realnvp")]),
    *(("realnvp", *c) for c in _FLOW_CHANGES),
    *(("spline", *c) for c in [*_FLOW_CHANGES, ("n_bins", 4), ("tail_bound", 3.0)]),
    ("maf-real", "dequantize", True),
    *(
        ("ddpm", *c)
        for c in [
            ("n_levels", 512),
            ("discrete", False),
            ("n_steps", 30),
            ("schedule", "cosine"),
            ("beta_T", 0.05),
            ("variance", "large"),
            ("prediction", "x0"),
            ("clip_denoised", True),
            ("gaussian_skip", True),
            ("hidden", 32),
            ("time_dim", 32),
        ]
    ),
    ("ddpm-learned", "decoder_fraction", 0.0),
    ("ddpm-real", "discrete", True),
]

_FITTED: dict = {}


def _fitted(name):
    """A fitted copy of model ``name`` (each fitted once)."""
    if name not in _FITTED:
        build, X = MODELS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the short schedule's and the tiny fit's words
            _FITTED[name] = build().fit(X)
    return copy.deepcopy(_FITTED[name])


def _outputs(model, X):
    return model.score_samples(X), model.sample(4, random_state=0)


@pytest.mark.parametrize(("name", "setting", "value"), CHANGES)
def test_a_setting_changed_after_the_fit_leaves_the_fitted_model_as_it_was(
    name, setting, value, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    X = MODELS[name][1]
    model = _fitted(name)
    fitted = model.get_params()[setting]
    scores, draws = _outputs(model, X)
    model.set_params(**{setting: value})
    after = _outputs(model, X)
    np.testing.assert_array_equal(after[0], scores)
    np.testing.assert_array_equal(after[1], draws)
    # a file holds one value of the setting: the changed one would describe another model
    said = rf"{setting}={value!r} was set after the fit, which used {setting}={fitted!r}"
    for save in (model.save, lambda path: lf.save(model, path)):
        with pytest.raises(ParameterError, match=said + r".*refit, or set it back"):
            save("model.lf")
    model.set_params(**{setting: fitted})
    loaded = lf.load(model.save("model.lf"))
    np.testing.assert_array_equal(_outputs(loaded, X)[0], scores)
    np.testing.assert_array_equal(_outputs(loaded, X)[1], draws)
    # a loaded model holds its file's settings as its fit's
    loaded.set_params(**{setting: value})
    np.testing.assert_array_equal(loaded.score_samples(X), scores)
    with pytest.raises(ParameterError, match=said):
        loaded.save("again.lf")


@pytest.mark.parametrize("name", ["maf", "spline", "ddpm"])
def test_a_network_rebuilt_in_another_dtype_keeps_the_fits_levels(name):
    """set_params(dtype=...) builds the network again in that dtype: with the fit's n_levels,
    not one set since (the DDPM scored on a grid of 512 levels, the MAF dequantised to it)."""
    X = MODELS[name][1]
    expected = _fitted(name).set_params(dtype="float64").score_samples(X)
    model = _fitted(name).set_params(n_levels=512, dtype="float64")
    np.testing.assert_array_equal(model.score_samples(X), expected)


@pytest.mark.parametrize("name", ["maf", "ddpm"])
def test_a_setting_changed_after_the_fit_takes_effect_at_the_next_fit(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _fitted(name).set_params(n_levels=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(MODELS[name][1])
    assert model.module_.n_levels == 512
    assert lf.load(model.save("model.lf")).module_.n_levels == 512


@pytest.mark.parametrize("name", ["maf", "ddpm"])
def test_a_refit_checks_the_settings_it_is_given_not_the_last_fits(name):
    model = _fitted(name).set_params(n_levels=2**40)
    with pytest.raises(ParameterError, match="n_levels must be an integer from 2 to"):
        model.fit(MODELS[name][1])
