"""Every setting of every public estimator is checked by ``fit``, as scikit-learn checks its
own: a word or a NaN where the setting takes something else is a ParameterError naming the
setting, never Python's TypeError from deep in the fit, nor taken silently because this fit
happens not to read it. Found by giving every setting 'zzz' and NaN: warm_start='no' counted
as true, verbose_interval, learning_decay and learning_offset were read only by a progress
print or partial_fit, a MAF took tail_bound='zzz' and a flow n_levels='zzz' without
dequantising, a flow or DDPM raised TypeError on validation_fraction='zzz' or
checkpoint_dir=1 and built one unit for hidden=True, MixtureModel took niw_shrinkage='zzz'
without mvn components (TypeError with them), and CategoricalMixture overflowed on
n_categories=1e300."""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator

import latentfit
from latentfit.errors import DataError, ParameterError

_rng = np.random.default_rng(0)
_REAL = np.r_[_rng.normal(size=(30, 2)), _rng.normal(size=(30, 2)) + 4]
_COUNTS = _rng.poisson(3, size=(60, 2))
_SYMBOLS = _rng.integers(0, 3, size=(60, 1))
DATA = {
    "PoissonMixture": _COUNTS,
    "PoissonHMM": _COUNTS,
    "PoissonHSMM": _COUNTS[:, :1],
    "BernoulliMixture": (_rng.random((60, 3)) < 0.5).astype(int),
    "CategoricalMixture": _rng.integers(0, 3, size=(60, 2)),
    "CategoricalHMM": _SYMBOLS,
    "CategoricalHSMM": _SYMBOLS,
    "VariationalCategoricalHMM": _SYMBOLS,
    "MultinomialMixture": _rng.multinomial(5, [0.2, 0.3, 0.5], size=60),
    "MultinomialHMM": _rng.multinomial(5, [0.2, 0.3, 0.5], size=60),
    "DDPM": _rng.integers(0, 256, size=(60, 2)),  # 8-bit levels, its default data
}
#: settings a word is a fine value of (a folder's path), and those the fit does not take
#: from the constructor alone (the seed and the progress switch: scikit-learn's own rules)
_FREE = {"checkpoint_dir", "random_state", "verbose"}
#: a short fit where the junk is accepted by mistake
_SHORT = {"max_iter": 2, "n_iter": 2, "epochs": 1}

CASES = [
    (name, setting)
    for name in latentfit.__all__
    if isinstance(getattr(latentfit, name), type)
    and issubclass(getattr(latentfit, name), BaseEstimator)
    for setting in inspect.signature(getattr(latentfit, name)).parameters
    if setting not in _FREE
]


@pytest.mark.parametrize(("name", "setting"), CASES, ids=[f"{n}.{s}" for n, s in CASES])
def test_a_word_or_nan_where_a_setting_takes_neither_is_a_parameter_error(name, setting):
    cls = getattr(latentfit, name)
    params = inspect.signature(cls).parameters
    X = DATA.get(name, _REAL)
    for junk in ("zzz", float("nan")):
        kw = {k: v for k, v in _SHORT.items() if k in params and k != setting}
        kw[setting] = junk
        with warnings.catch_warnings(), pytest.raises((ParameterError, DataError)) as err:
            warnings.simplefilter("ignore")
            cls(**kw).fit(X)
        said = str(err.value)
        assert setting in said, said
        # an array-valued setting given a word or NaN is a DataError about that array
        about_it = re.match(rf"{setting} (is the path or string|contains NaN)", said)
        assert err.type is ParameterError or about_it, said


_DRAWN = ["MAF", "RealNVP", "NeuralSplineFlow", "FlowDensity", "DDPM"]


@pytest.mark.parametrize("name", _DRAWN)
def test_the_density_models_check_the_arguments_of_their_draws(name):
    """``sample(max_work='zzz')`` raised Python's TypeError from a comparison; a flow's
    ``score_samples(random_state='zzz')`` was taken where the flow reads no draw (real data):
    both are ParameterErrors naming the argument."""
    cls = getattr(latentfit, name)
    X = DATA.get(name, _REAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(epochs=1, random_state=0).fit(X)
    for junk in ("zzz", [1, 2], 0, float("nan")):
        with pytest.raises(ParameterError, match="max_work"):
            model.sample(2, max_work=junk)
    assert model.sample(2, max_work=float("inf")).shape == (2, X.shape[1])
    if name != "DDPM":
        with pytest.raises(ParameterError, match="random_state"):
            model.score_samples(X, random_state="zzz")
