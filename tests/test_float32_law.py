"""The float32 law, for every model with a ``dtype`` option: a float32 fit agrees with the
float64 fit from the same start, a float64 model scored in float32 agrees with itself, the
outputs come in the model's dtype, and values a float32 model cannot hold are refused by row
and column, not read as inf or 0.

Tolerances. float32 rounds each operation to a relative 2**-24 ≈ 6e-8 (``U``). A fit of
``ITERS`` EM iterations on ``N`` rows sums N terms per statistic per iteration: at worst an
error of N·U ≈ 2e-5 relative per sum, and EM, a contraction near its fixed point on
well-separated data, does not amplify it over a few iterations. Per-row scores (log-densities
of a few nats) and parameters are compared at 1e-4 relative to their own scale (five times
that bound; measured at most 5.4e-6, the GaussianHSMM's parameters); a float64 model only
scored in float32 rounds its parameters and each row once (a few U per row): 1e-5 of the
scores' scale (measured at most 6.6e-7).
"""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import latentfit as lf
from latentfit.cli.score import hmm_row_scores
from latentfit.em.hsmm.base import HSMMMixin
from latentfit.errors import DataError, ParameterError

U = 2.0**-24  # float32's unit roundoff
N, ITERS = 300, 5
FIT_RTOL = 1e-4  # ≥ N·U ≈ 2e-5 per iteration's sums (module docstring)
SCORE_RTOL = 1e-5  # one rounding of the parameters and of each row: a few U


def _blobs(seed=0, d=3):
    rng = np.random.default_rng(seed)
    z = (np.arange(N) // 25) % 2  # runs of 25 rows: a sequence with persistent states
    centres = np.array([[-2.0, 1.0, 0.5, -1.0], [2.0, -1.0, 1.5, 0.0]])[:, :d]
    return centres[z] + rng.normal(size=(N, d)) * np.array([1.0, 0.7, 1.2, 0.9])[:d]


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    z = (np.arange(N) // 25) % 2
    return rng.poisson(np.array([[2.0, 5.0, 1.0], [6.0, 1.5, 3.0]])[z])


def _symbols(seed=0):
    rng = np.random.default_rng(seed)
    z = (np.arange(N) // 25) % 2
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])[z]
    return (rng.random(N)[:, None] > p.cumsum(1)).sum(1, keepdims=True)


LENGTHS = [150, 100, 50]
_X, _C, _S = _blobs(), _counts(), _symbols()

#: name: (model of a dtype, data, lengths or None, how its fit is continued from a start)
MODELS = {
    "GaussianMixture": (lambda **k: lf.GaussianMixture(2, **k), _X, None, "warm_start"),
    "GaussianMixture-diag": (
        lambda **k: lf.GaussianMixture(2, covariance_type="diag", **k),
        _X,
        None,
        "warm_start",
    ),
    "BayesianGaussianMixture": (
        lambda **k: lf.BayesianGaussianMixture(n_components=2, **k),
        _X,
        None,
        "warm_start",
    ),
    "MixtureModel": (lambda **k: lf.MixtureModel("normal", 2, **k), _X, None, "warm_start"),
    "MixtureModel-gamma": (
        lambda **k: lf.MixtureModel("gamma", 2, **k),
        np.abs(_X) + 0.5,
        None,
        "warm_start",
    ),
    "PoissonMixture": (lambda **k: lf.PoissonMixture(2, **k), _C, None, "warm_start"),
    "MultinomialMixture": (lambda **k: lf.MultinomialMixture(2, **k), _C, None, "warm_start"),
    "BernoulliMixture": (lambda **k: lf.BernoulliMixture(2, **k), _X > 0, None, "warm_start"),
    "CategoricalMixture": (
        lambda **k: lf.CategoricalMixture(2, **k),
        np.column_stack([_S[:, 0], (_X[:, :2] > 0).sum(1)]),
        None,
        "warm_start",
    ),
    "FactorAnalysis": (
        lambda **k: lf.FactorAnalysis(1, svd_method="lapack", **k),
        _X,
        None,
        "pca",
    ),
    "PPCA": (lambda **k: lf.PPCA(1, **k), _X, None, "pca"),
    "GaussianHMM": (lambda **k: lf.GaussianHMM(2, **k), _X, LENGTHS, "init_params"),
    "GaussianHMM-full": (
        lambda **k: lf.GaussianHMM(2, covariance_type="full", **k),
        _X,
        LENGTHS,
        "init_params",
    ),
    "GMMHMM": (lambda **k: lf.GMMHMM(2, n_mix=2, **k), _X, LENGTHS, "init_params"),
    "AutoregressiveHMM": (lambda **k: lf.AutoregressiveHMM(2, **k), _X, LENGTHS, "init_params"),
    "CategoricalHMM": (lambda **k: lf.CategoricalHMM(2, **k), _S, LENGTHS, "init_params"),
    "PoissonHMM": (lambda **k: lf.PoissonHMM(2, **k), _C, LENGTHS, "init_params"),
    "MultinomialHMM": (lambda **k: lf.MultinomialHMM(2, **k), _C, LENGTHS, "init_params"),
    "VariationalGaussianHMM": (
        lambda **k: lf.VariationalGaussianHMM(2, **k),
        _X,
        LENGTHS,
        "init_params",
    ),
    "VariationalCategoricalHMM": (
        lambda **k: lf.VariationalCategoricalHMM(2, **k),
        _S,
        LENGTHS,
        "init_params",
    ),
    "GaussianHSMM": (
        lambda **k: lf.GaussianHSMM(2, max_duration=30, **k),
        _X,
        LENGTHS,
        "init_params",
    ),
    "PoissonHSMM": (
        lambda **k: lf.PoissonHSMM(2, max_duration=30, **k),
        _C,
        LENGTHS,
        "init_params",
    ),
    "CategoricalHSMM": (
        lambda **k: lf.CategoricalHSMM(2, max_duration=30, **k),
        _S,
        LENGTHS,
        "init_params",
    ),
    "LinearGaussianSSM": (
        lambda **k: lf.LinearGaussianSSM(2, **k),
        _X,
        LENGTHS,
        "init_params",
    ),
}


#: attributes a float32 model keeps in float64 on purpose: a prior's mean, which float32 could
#: not hold far from the origin (1e7 + 1.468 rounds to 1e7 + 2)
KEPT_IN_FLOAT64 = {"mean_prior_": np.float64}


def _quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args, **kwargs)


def _args(lengths):
    return () if lengths is None else (lengths,)


def _budget(model, iters: int) -> dict:
    """The settings that run exactly ``iters`` iterations, whatever the change."""
    names = model.get_params()
    if "n_iter" in names:
        return {"n_iter": iters, "tol": -np.inf}
    return {"max_iter": iters, "tol": 0.0}


def _as_dtype(model, dtype: str, tmp_path):
    """``model``'s saved file read back as a model of ``dtype`` (the setting changed in its
    header; a network's weights, which it keeps in its dtype, cast to it): the same
    parameters, rounded once."""
    path = model.save(tmp_path / "model.lf")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["latentfit"])
    header["params"]["dtype"] = dtype
    if header.get("class") in NETWORKS:
        tensors = {k: t.to(getattr(torch, dtype)) for k, t in tensors.items()}
    out = tmp_path / f"model-{dtype}.lf"
    save_file(tensors, str(out), metadata={"latentfit": json.dumps(header)})
    return lf.load(out)


def _score_dtype(model):
    """What per-row scores come in: the model's dtype, but float64 for an HSMM, whose
    recursions run in float64 whatever its dtype (README, hidden semi-Markov models)."""
    return np.float64 if isinstance(model, HSMMMixin) else np.dtype(model.dtype)


def _row_scores(model, X, lengths):
    if lengths is not None and not isinstance(model, lf.LinearGaussianSSM):
        return hmm_row_scores(model, X, lengths)[0]
    return model.score_samples(X, *_args(lengths))


def _decoding(model, X, lengths):
    """What the model decodes: (the best path's log-probability or None, the labels)."""
    if hasattr(model, "decode"):
        return model.decode(X, *_args(lengths))
    return None, model.predict(X, *_args(lengths))


def _assert_same_decoding(got, want):
    """Labels decoded in float32 (``got``) against float64's (``want``), both from
    :func:`_decoding`. A path decoder's near tie may fall either way in float32: the best
    path's log-probability then agrees within float32's rounding and the paths on all but a
    few steps (a CategoricalHSMM, 2 steps of 300 on a machine whose products sum in another
    order); labels without a path (a mixture's) are equal."""
    (lp32, s32), (lp64, s64) = got, want
    if lp64 is None:
        np.testing.assert_array_equal(s32, s64)
        return
    np.testing.assert_allclose(lp32, lp64, rtol=SCORE_RTOL)
    assert np.mean(np.asarray(s32) != np.asarray(s64)) <= 0.01, (s32, s64)


def _fitted_arrays(model) -> dict:
    """The model's floating fitted attributes (public names ending in ``_``)."""
    out = {}
    for name in dir(model):
        if name.startswith("_") or not name.endswith("_") or name.endswith("__"):
            continue
        value = getattr(model, name, None)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            out[name] = value
    return out


def _continued(name, dtype, tmp_path):
    """A fit of ``ITERS`` iterations in ``dtype`` from one float64 start, made the way the
    model takes a start: warm_start, hand-set parameters (init_params=''), or the PCA start
    FA and PPCA compute from the data."""
    build, X, lengths, how = MODELS[name]
    if how == "pca":
        model = build(dtype=dtype, random_state=0)
        return _quiet(model.set_params(**_budget(model, ITERS)).fit, X, *_args(lengths))
    start = build(random_state=0)
    start = _quiet(start.set_params(**_budget(start, 1)).fit, X, *_args(lengths))
    model = _as_dtype(start, dtype, tmp_path)
    again = {"warm_start": True} if how == "warm_start" else {"init_params": ""}
    model.set_params(**again, **_budget(model, ITERS))
    return _quiet(model.fit, X, *_args(lengths))


@pytest.mark.parametrize("name", list(MODELS))
def test_a_float32_fit_agrees_with_the_float64_fit_from_the_same_start(name, tmp_path):
    _, X, lengths, _ = MODELS[name]
    m64 = _continued(name, "float64", tmp_path)
    m32 = _continued(name, "float32", tmp_path)
    s64, s32 = _row_scores(m64, X, lengths), _row_scores(m32, X, lengths)
    assert s32.dtype == _score_dtype(m32)
    scale = np.abs(s64).max()
    np.testing.assert_allclose(s32, s64, rtol=FIT_RTOL, atol=FIT_RTOL * scale)
    a64, a32 = _fitted_arrays(m64), _fitted_arrays(m32)
    assert a64.keys() == a32.keys()
    for attr, want in a64.items():
        got = a32[attr]
        assert got.dtype == KEPT_IN_FLOAT64.get(attr, np.float32), attr
        scale = max(np.abs(want).max(), 1e-3)
        np.testing.assert_allclose(got, want, rtol=FIT_RTOL, atol=FIT_RTOL * scale, err_msg=attr)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_float64_model_scored_in_float32_agrees_with_itself(name, tmp_path):
    build, X, lengths, _ = MODELS[name]
    m64 = build(random_state=0)
    m64 = _quiet(m64.set_params(**_budget(m64, ITERS)).fit, X, *_args(lengths))
    m32 = _as_dtype(m64, "float32", tmp_path)
    s64, s32 = _row_scores(m64, X, lengths), _row_scores(m32, X, lengths)
    assert s32.dtype == _score_dtype(m32)
    np.testing.assert_allclose(s32, s64, rtol=SCORE_RTOL, atol=SCORE_RTOL * np.abs(s64).max())
    if hasattr(m64, "predict"):
        p64, p32 = m64.predict(X, *_args(lengths)), m32.predict(X, *_args(lengths))
        if p64.dtype.kind == "f":  # a state-space model's smoothed state means
            np.testing.assert_allclose(p32, p64, rtol=1e-4, atol=1e-4 * np.abs(p64).max())
        else:
            _assert_same_decoding(_decoding(m32, X, lengths), _decoding(m64, X, lengths))


def _outputs(model, X, lengths) -> dict:
    """Every floating array the model's methods return for ``X``."""
    out = {}
    args = _args(lengths)
    scores = model.score_samples(X, *args)
    if isinstance(scores, tuple):  # an HMM's (log-likelihood, posteriors), as hmmlearn's
        out["score_samples posteriors"] = scores[1]
    else:
        out["score_samples"] = scores
    for method in ("predict_proba", "transform"):
        if hasattr(model, method):
            out[method] = getattr(model, method)(X, *args)
    if not isinstance(model, lf.MultinomialHMM):  # it samples only with n_trials fixed
        drawn = model.sample(5)
        out["sample"] = drawn[0] if isinstance(drawn, tuple) else drawn
    return out


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_come_in_the_models_dtype(name, dtype):
    """As the fitted attributes: numpy arrays of the model's dtype (draws of counts or symbols
    as integers), and ``score`` a Python float."""
    build, X, lengths, _ = MODELS[name]
    model = build(dtype=dtype, random_state=0)
    model = _quiet(model.set_params(**_budget(model, 2)).fit, X, *_args(lengths))
    assert isinstance(model.score(X, *_args(lengths)), float)
    for method, value in _outputs(model, X, lengths).items():
        assert isinstance(value, np.ndarray), method
        if value.dtype.kind == "f":
            assert value.dtype == dtype, method
        else:
            assert method == "sample" and value.dtype == np.int64, method


def _explosive_ar_hmm(dtype):
    """One state, x_t = 3 x_{t-1} + 1 + noise: its draws grow past 1e38 by row 81."""
    model = lf.AutoregressiveHMM(1, dtype=dtype, init_params="")
    model.startprob_, model.transmat_ = np.ones(1), np.ones((1, 1))
    model.coefs_, model.intercepts_, model.covars_ = (
        np.full((1, 1, 1, 1), 3.0),
        np.ones((1, 1)),
        np.ones((1, 1, 1)),
    )
    return model


def test_a_draw_beyond_float32_is_refused_by_row_and_column_not_made_inf():
    X, _ = _explosive_ar_hmm("float64").sample(100, random_state=0)
    row = int(np.argmax(np.abs(X[:, 0]) > np.finfo(np.float32).max))
    with pytest.raises(
        ParameterError,
        match=rf"drew 3\.\d+e\+38 at row {row}, column 0, beyond the range of float32",
    ):
        _explosive_ar_hmm("float32").sample(100, random_state=0)


def test_draws_that_overflow_float64_are_refused_not_returned_as_inf():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor numpy's overflow warning on the way
        with pytest.raises(
            ParameterError, match=r"drew inf at row \d+, column 0: its draws overflow float64"
        ):
            _explosive_ar_hmm("float64").sample(900, random_state=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_dtype_set_after_the_fit_scores_in_that_dtype(name):
    """``set_params(dtype="float32")`` on a fitted float64 model: it scores, predicts and
    samples in float32, as the same model read from a file as float32 does, and set back to
    float64 it gives its float64 numbers again (the fit's parameters are kept)."""
    build, X, lengths, _ = MODELS[name]
    model = build(random_state=0)
    model = _quiet(model.set_params(**_budget(model, ITERS)).fit, X, *_args(lengths))
    s64 = _row_scores(model, X, lengths)
    p64 = model.predict(X, *_args(lengths)) if hasattr(model, "predict") else None
    d64 = _decoding(model, X, lengths) if p64 is not None and p64.dtype.kind != "f" else None
    model.set_params(dtype="float32")
    s32 = _row_scores(model, X, lengths)
    assert s32.dtype == _score_dtype(model)
    np.testing.assert_allclose(s32, s64, rtol=SCORE_RTOL, atol=SCORE_RTOL * np.abs(s64).max())
    if d64 is not None:
        _assert_same_decoding(_decoding(model, X, lengths), d64)
    for method, value in _outputs(model, X, lengths).items():
        assert value.dtype in (np.float32, np.int64), method
    model.set_params(dtype="float64")
    np.testing.assert_array_equal(_row_scores(model, X, lengths), s64)


@pytest.mark.parametrize("name", [n for n, spec in MODELS.items() if spec[3] == "warm_start"])
def test_a_warm_start_after_dtype_is_set_continues_in_that_dtype(name):
    build, X, _, _ = MODELS[name]
    model = _quiet(build(random_state=0, max_iter=1).fit, X)
    model.set_params(dtype="float32", warm_start=True, max_iter=ITERS, tol=0.0)
    _quiet(model.fit, X)
    assert all(
        v.dtype == KEPT_IN_FLOAT64.get(k, np.float32) for k, v in _fitted_arrays(model).items()
    )
    assert model.score_samples(X).dtype == np.float32


@pytest.mark.parametrize("name", list(MODELS))
def test_a_float32_models_file_loads_as_the_same_float32_model(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, X, lengths, _ = MODELS[name]
    model = build(dtype="float32", random_state=0)
    model = _quiet(model.set_params(**_budget(model, 2)).fit, X, *_args(lengths))
    loaded = lf.load(model.save("model.lf"))
    assert loaded.dtype == "float32"
    before, after = _fitted_arrays(model), _fitted_arrays(loaded)
    assert before.keys() == after.keys()
    for attr, value in before.items():
        assert after[attr].dtype == value.dtype, attr
        np.testing.assert_array_equal(after[attr], value, err_msg=attr)
    np.testing.assert_array_equal(_row_scores(loaded, X, lengths), _row_scores(model, X, lengths))


@pytest.mark.parametrize(
    "model", [lf.CategoricalHMM(2), lf.VariationalCategoricalHMM(2), lf.CategoricalHSMM(2)]
)
@pytest.mark.parametrize("value", [1e39, -1e39, 1e19])
def test_a_symbol_beyond_int64_is_named_with_its_value_not_a_wrapped_one(model, value):
    """Symbols given as floats are read as int64 codes; a value past 2^63 wrapped to -2^63 in
    the cast, and the message named that number, not the one in the data."""
    X = _S.astype(np.float64)
    X[7, 0] = value
    with pytest.raises(DataError, match=re.escape(f"row 7 of X holds {value:g}, beyond any code")):
        model.fit(X, LENGTHS)


#: models whose data are whole numbers read by their own checks, and what those say
_CODES = {1e39: r"row 7 of X holds 1e\+39, beyond any code", 1e-46: r"row 7 of X holds 1e-46"}
INTEGER_DATA = {
    "CategoricalHMM": _CODES,
    "VariationalCategoricalHMM": _CODES,
    "CategoricalHSMM": _CODES,
    "MultinomialHMM": {
        1e39: r"row 7 of X counts 1e\+39 trials",
        1e-46: r"X\[7, 1\] = 1e-46 is fractional",
    },
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(
    ("value", "said"),
    [
        (1e39, r"1e\+39 at row 7, column 1, beyond the range of float32"),
        (1e-46, r"1e-46 at row 7, column 1, below the smallest number float32 holds"),
    ],
)
def test_a_value_float32_cannot_hold_is_refused_by_row_and_column(name, value, said):
    """Float64 data holding a value that float32 would read as inf or as 0, given to a float32
    model's fit and to its score: a DataError naming the row and column, with float64 offered."""
    build, X, lengths, _ = MODELS[name]
    bad = np.array(X, dtype=np.float64)
    bad[7, min(1, bad.shape[1] - 1)] = value
    if bad.shape[1] == 1:  # one column: the message names column 0
        said = said.replace("column 1", "column 0")
    if name in INTEGER_DATA:  # codes and counts: their own check names the row and the value
        said = INTEGER_DATA[name][value]
    model = build(dtype="float32", random_state=0)
    model.set_params(**_budget(model, 1))
    with pytest.raises(
        DataError, match=said + (r".*dtype=float64$" if name not in INTEGER_DATA else "")
    ):
        model.fit(bad, *_args(lengths))
    _quiet(model.fit, X, *_args(lengths))
    with pytest.raises(DataError, match=said):
        model.score(bad, *_args(lengths))


@pytest.mark.parametrize("value", [1e39, 1e-46])
def test_a_streamed_value_float32_cannot_hold_is_refused_by_its_row(value, tmp_path):
    """The same through a data source read in chunks: the row counts from the file's start."""
    bad = _X.copy()
    bad[207, 1] = value
    np.save(tmp_path / "x.npy", bad)
    source = lf.NpySource(tmp_path / "x.npy", chunk_rows=100)
    with pytest.raises(
        DataError, match=rf"holds {value:.0e} at row 207, column 1".replace("+", r"\+")
    ):
        lf.GaussianMixture(2, dtype="float32", max_iter=1, random_state=0).fit(source)


#: the network models (float32 by default) on the same 2-column data: tiny networks, 2 epochs
NETWORKS = {
    "RealNVP": lambda **k: lf.RealNVP(n_layers=2, hidden=8, epochs=2, **k),
    "MAF": lambda **k: lf.MAF(n_layers=2, hidden=8, epochs=2, **k),
    "NeuralSplineFlow": lambda **k: lf.NeuralSplineFlow(n_layers=2, hidden=8, epochs=2, **k),
    "DDPM": lambda discrete=False, **k: lf.DDPM(
        20, hidden=8, n_hidden=1, discrete=discrete, epochs=2, **k
    ),
}


_LEVELS = np.random.default_rng(0).integers(0, 256, (N, 2)).astype(float)  # 8-bit levels


def _eight_bit(name: str) -> dict:
    """The setting that fits ``name`` of NETWORKS on 8-bit levels 0..255."""
    return {"discrete": True} if name == "DDPM" else {"dequantize": True}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_float64_network_scored_in_float32_agrees_with_itself(name, tmp_path):
    """A DDPM's per-row bound draws x_t: its noise is drawn in float64 whatever the dtype, so
    the float32 copy scores every row with the same draws (it drew others, 72 nats apart)."""
    X = _X[:, :2]
    m64 = _quiet(NETWORKS[name](dtype="float64", random_state=0).fit, X)
    m32 = _as_dtype(m64, "float32", tmp_path)
    s64, s32 = m64.score_samples(X), m32.score_samples(X)
    assert m32.dtype == "float32"
    np.testing.assert_allclose(s32, s64, rtol=SCORE_RTOL, atol=SCORE_RTOL * np.abs(s64).max())


@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_float32_network_fit_agrees_with_the_float64_fit_from_the_same_seed(name):
    """The same seed starts both networks from the same weights and (a DDPM) trains them on
    the same times and noise: after 2 epochs of 3 Adam steps the fits' scores agree to the
    float32 law's tolerance (measured: at most 1.1e-6 of their scale)."""
    X = _X[:, :2]
    m64 = _quiet(NETWORKS[name](dtype="float64", random_state=0).fit, X)
    m32 = _quiet(NETWORKS[name](dtype="float32", random_state=0).fit, X)
    s64, s32 = m64.score_samples(X), m32.score_samples(X)
    np.testing.assert_allclose(s32, s64, rtol=FIT_RTOL, atol=FIT_RTOL * np.abs(s64).max())


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("eight_bit", [False, True])
def test_a_networks_outputs_and_file_keep_its_dtype(name, dtype, eight_bit, tmp_path, monkeypatch):
    """Draws and a flow's log-densities in the model's dtype, on real data and on 8-bit
    levels (a flow's dequantisation bound, summed over draws in float64, and given back in
    the model's dtype); a DDPM's bound in float64 whatever its dtype (DDPM.bound_terms:
    float64 tensors). So in the other dtype set after the fit. Its file loads in its dtype
    and scores as it did. Before, a dequantised float32 flow scored in float64."""
    monkeypatch.chdir(tmp_path)
    X = _LEVELS if eight_bit else _X[:, :2]
    setting = _eight_bit(name) if eight_bit else {}
    model = _quiet(NETWORKS[name](dtype=dtype, random_state=0, **setting).fit, X)
    scores = model.score_samples(X)
    score_dtype = np.float64 if name == "DDPM" else np.dtype(dtype)
    assert scores.dtype == score_dtype
    if name != "DDPM":  # the bound of several draws of u
        assert model.score_samples(X, n_samples=3).dtype == dtype
    assert model.sample(5, random_state=0).dtype == dtype
    assert isinstance(model.score(X), float)
    loaded = lf.load(model.save("model.lf"))
    assert loaded.dtype == dtype
    assert {p.dtype for p in loaded.module_.parameters()} == {getattr(torch, dtype)}
    np.testing.assert_array_equal(loaded.score_samples(X), scores)
    other = "float64" if dtype == "float32" else "float32"
    loaded.set_params(dtype=other)
    assert loaded.score_samples(X).dtype == (np.float64 if name == "DDPM" else other)
    assert loaded.sample(5, random_state=0).dtype == other


@pytest.mark.parametrize("cls", [lf.RealNVP, lf.MAF])
def test_a_dequantised_flow_scores_8_bit_rows_alike_in_float32_and_float64(cls, tmp_path):
    """8-bit data are scored (and trained) at points k + u of their bins; u is drawn in
    float64 whatever the dtype, so a float64 flow read as float32, and a float32 fit from the
    same seed, score every row at the same points (they drew others: 3.7 nats apart). Rows
    off the top level agree as continuous data do; at level 255 y lies within 1/256 of 1,
    where float32 holds 1 - y only to 6e-8 and the logit's log(1 - y) amplifies that
    (measured 7e-4 nats): 1e-2 there."""
    X = np.random.default_rng(0).integers(0, 256, (300, 2)).astype(float)
    build = dict(n_layers=2, hidden=8, epochs=2, dequantize=True, random_state=0)
    m64 = _quiet(cls(dtype="float64", **build).fit, X)
    s64 = m64.score_samples(X)
    inside = (X < 255).all(1)
    for m32, rtol in (
        (_as_dtype(m64, "float32", tmp_path), SCORE_RTOL),
        (_quiet(cls(dtype="float32", **build).fit, X), FIT_RTOL),
    ):
        s32 = m32.score_samples(X)
        scale = np.abs(s64).max()
        np.testing.assert_allclose(s32[inside], s64[inside], rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(s32, s64, rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize(("fitted", "dtype"), [("float64", "float32"), ("float32", "float64")])
def test_a_networks_dtype_set_after_the_fit_scores_samples_and_saves_in_it(
    name, fitted, dtype, tmp_path, monkeypatch
):
    """``set_params(dtype=...)`` on a fitted network model, as on a mixture: its network and
    standardisation are read in the new dtype, so it scores and draws as the same model read
    from a file in that dtype does (bit for bit), within the law's tolerance of its own
    numbers in the fit's dtype (measured at most 1.1e-6 of the scores' scale, a DDPM's), and
    saves a file of that dtype. Set back, it gives the fit's
    numbers exactly (the fit's weights are kept). Before, a float64 fit went on in float64
    and wrote a file its own load refused; a float32 fit raised torch's RuntimeError."""
    monkeypatch.chdir(tmp_path)
    X = _X[:, :2]
    model = _quiet(NETWORKS[name](dtype=fitted, random_state=0).fit, X)
    s0, d0 = model.score_samples(X), model.sample(5, random_state=0)
    same = _as_dtype(model, dtype, tmp_path)
    rng = torch.get_rng_state()
    model.set_params(dtype=dtype)
    assert {p.dtype for p in model.module_.parameters()} == {getattr(torch, dtype)}
    assert torch.equal(torch.get_rng_state(), rng)  # the network built again draws no weights
    scores = model.score_samples(X)
    assert scores.dtype == (np.float64 if name == "DDPM" else dtype)  # a DDPM's bound: float64
    np.testing.assert_array_equal(scores, same.score_samples(X))
    np.testing.assert_allclose(scores, s0, rtol=SCORE_RTOL, atol=SCORE_RTOL * np.abs(s0).max())
    drawn = model.sample(5, random_state=0)
    assert drawn.dtype == dtype
    np.testing.assert_array_equal(drawn, same.sample(5, random_state=0))
    # one pass (a DDPM's 20) through the weights rounded once: measured at most 4.1e-7
    np.testing.assert_allclose(drawn, d0, rtol=SCORE_RTOL, atol=SCORE_RTOL * np.abs(d0).max())
    loaded = lf.load(model.save("model.lf"))
    assert loaded.dtype == dtype
    assert {p.dtype for p in loaded.module_.parameters()} == {getattr(torch, dtype)}
    np.testing.assert_array_equal(loaded.score_samples(X), scores)
    model.set_params(dtype=fitted)
    np.testing.assert_array_equal(model.score_samples(X), s0)
    np.testing.assert_array_equal(model.sample(5, random_state=0), d0)
    model.set_params(dtype="float16")
    with pytest.raises(ParameterError, match="dtype must be float64 or float32, got 'float16'"):
        model.score_samples(X)


@pytest.mark.parametrize(
    "build",
    [
        lambda **k: lf.MAF(n_layers=2, hidden=8, epochs=2, dequantize=True, **k),
        lambda **k: lf.DDPM(20, hidden=8, n_hidden=1, epochs=2, **k),
    ],
)
def test_levels_float32_cannot_tell_apart_are_refused_after_dtype_is_set(
    build, tmp_path, monkeypatch
):
    """2**23 levels, more than float32 tells apart (2**20): a float32 fit is refused, and so
    is a float64 fit set to float32 when it scores or draws. Before, the DDPM scored rows up
    to 1.5 nats off its float64 bound, and 98% (MAF) and 50% (DDPM) of the values drawn were
    other levels than the float64 model's, with no word (the flow's scores were refused,
    without the float64 way out). The fitted model's refusal names its one way out, its
    dtype: it said "n_levels must be an integer from 2 to 1,048,576 ...; 256 for 8-bit data",
    a setting a fitted model cannot change; the fit's refusal keeps that advice. Its save
    is refused too: it wrote a float32 file that its own load refused as "altered or
    damaged"."""
    monkeypatch.chdir(tmp_path)
    n_levels = 2**23
    X = (
        np.random.default_rng(0).integers(0, 300, (200, 2))
        + np.array([[0], [n_levels - 300]])[np.arange(200) % 2]
    )
    with pytest.raises(ParameterError, match=r"2 to 1,048,576 .*; 256 for 8-bit data, or use "):
        _quiet(build(n_levels=n_levels, dtype="float32", random_state=0).fit, X)
    model = _quiet(build(n_levels=n_levels, dtype="float64", random_state=0).fit, X)
    model.set_params(dtype="float32")
    said = (
        "this model's 8,388,608 levels (n_levels) are more than float32 tells apart "
        "(1,048,576: past it, a value halfway between two levels is read as one of them), and "
        "a fitted model's n_levels cannot change; use set_params(dtype='float64') to score, "
        "sample or save it (up to 2**49 levels)"
    )
    for call in (
        lambda: model.score_samples(X),
        lambda: model.sample(5, random_state=0),
        lambda: model.save("model.lf"),
        lambda: lf.save(model, "model.lf"),  # latentfit.save does not call model.save
    ):
        with pytest.raises(ParameterError) as err:
            call()
        assert str(err.value) == said
    assert not list(tmp_path.iterdir())
    model.set_params(dtype="float64")
    assert np.isfinite(model.score_samples(X)).all()
    np.testing.assert_array_equal(
        lf.load(model.save("model.lf")).score_samples(X), model.score_samples(X)
    )
