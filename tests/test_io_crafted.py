"""latentfit.load refuses crafted model files whose header or tensors are well-formed but
hold values no fit could produce (a dtype torch lacks, a setting fit refuses, weights off the
simplex, a negative Cholesky diagonal, a zero scale, a header sized beyond its tensors), with
ModelFileError naming the field or tensor, before anything is built or scored."""

import json
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import latentfit
from latentfit import (
    DDPM,
    MAF,
    BernoulliMixture,
    FactorAnalysis,
    GaussianMixture,
    MultinomialMixture,
    PoissonMixture,
)
from latentfit.errors import ModelFileError, NotFittedError, ParameterError

rng = np.random.default_rng(0)
X = np.vstack([rng.normal(0, 1, (30, 2)), rng.normal(5, 1, (30, 2))])
COUNTS = rng.poisson(3.0, (60, 3)).astype(float)


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["latentfit"])
    return tensors, header


def _tampered(src, dst, header=None, tensors=None):
    t, h = _read(src)
    if header:
        header(h)
    if tensors:
        tensors(t)
    save_file(t, str(dst), metadata={"latentfit": json.dumps(h)})
    return dst


def _saved(tmp_path_factory, name, model):
    path = tmp_path_factory.mktemp("crafted") / name
    model.save(path)
    return path


@pytest.fixture(scope="module")
def gmm_file(tmp_path_factory):
    return _saved(tmp_path_factory, "g.lf", GaussianMixture(2, random_state=0).fit(X))


@pytest.fixture(scope="module")
def ddpm_file(tmp_path_factory):
    model = DDPM(n_steps=10, hidden=8, n_hidden=1, epochs=1, discrete=False, random_state=0)
    return _saved(tmp_path_factory, "dd.lf", model.fit(X))


@pytest.fixture(scope="module")
def maf_file(tmp_path_factory):
    model = MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, random_state=0)
    return _saved(tmp_path_factory, "f.lf", model.fit(X))


def _params(**kw):
    return lambda h: h["params"].update(kw)


def _extra(**kw):
    return lambda h: h["extra"].update(kw)


def _tensor(name, value):
    return lambda t: t.__setitem__(name, value)


# ---------------------------------------------------------------------- header settings
@pytest.mark.parametrize("dtype", ["nope", "Tensor", 5, None])
def test_a_dtype_torch_lacks_is_refused_naming_the_field(gmm_file, tmp_path, dtype):
    path = _tampered(gmm_file, tmp_path / "x.lf", _params(dtype={"__dtype__": dtype}))
    with pytest.raises(ModelFileError, match=r"'params\.dtype'.*not a torch dtype"):
        latentfit.load(path)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"covariance_type": "bogus"}, "covariance_type"),
        ({"n_components": 0}, "n_components"),
        ({"reg_covar": float("nan")}, "reg_covar"),
        ({"tol": "x"}, "tol"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_gmm_settings_fit_would_refuse_are_refused_at_load(gmm_file, tmp_path, setting, match):
    path = _tampered(gmm_file, tmp_path / "x.lf", _params(**setting))
    with pytest.raises(ModelFileError, match=f"'params'.*{match}"):
        latentfit.load(path)


# ---------------------------------------------------------------------- GMM tensors
@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("weights", [0.9, 0.9], "'weights'.*sums to 1.8"),
        ("weights", [-1.0, 2.0], "'weights'.*-1"),
        ("weights", [0.0, 0.0], "'weights'.*sums to 0"),
        ("prec_chol", -torch.eye(2).expand(2, 2, 2), "'prec_chol'.*diagonal entry -1"),
        ("prec_chol", torch.zeros(2, 2, 2), "'prec_chol'.*diagonal entry 0"),
        ("prec_chol", torch.ones(2, 2, 2), "'prec_chol'.*above the diagonal"),
    ],
)
def test_gmm_tensors_off_their_constraint_are_refused(gmm_file, tmp_path, name, value, match):
    value = torch.as_tensor(value, dtype=torch.float64).clone()
    path = _tampered(gmm_file, tmp_path / "x.lf", tensors=_tensor(name, value))
    with pytest.raises(ModelFileError, match=match):
        latentfit.load(path)


def test_gmm_integer_weights_and_unknown_tensors_are_refused(gmm_file, tmp_path):
    path = _tampered(gmm_file, tmp_path / "i.lf", tensors=_tensor("weights", torch.tensor([1, 0])))
    with pytest.raises(ModelFileError, match=r"'weights'.*int64"):
        latentfit.load(path)
    path = _tampered(gmm_file, tmp_path / "u.lf", tensors=_tensor("bogus", torch.zeros(1)))
    with pytest.raises(ModelFileError, match="'bogus'"):
        latentfit.load(path)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_valid_gmm_files_of_every_covariance_type_still_load(tmp_path, covariance_type, dtype):
    model = GaussianMixture(3, covariance_type=covariance_type, dtype=dtype, random_state=0).fit(X)
    back = latentfit.load(model.save(tmp_path / "ok.lf"))
    np.testing.assert_allclose(back.score_samples(X), model.score_samples(X), rtol=1e-6)


def test_diagonal_precisions_must_be_positive(tmp_path):
    src = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X).save(tmp_path / "d.lf")
    neg = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    path = _tampered(src, tmp_path / "x.lf", tensors=_tensor("prec_chol", neg))
    with pytest.raises(ModelFileError, match=r"'prec_chol'.*-1 at index"):
        latentfit.load(path)


# ---------------------------------------------------------------------- other mixtures, FA
@pytest.mark.parametrize(
    ("model", "data", "name", "value", "match"),
    [
        (PoissonMixture(2, random_state=0), COUNTS, "rates", -1.0, "'rates'.*-1"),
        (BernoulliMixture(2, random_state=0), (X > 2) * 1.0, "means", 1.5, "'means'.*1.5"),
        (MultinomialMixture(2, random_state=0), COUNTS, "probs", 0.9, "'probs'.*row"),
        (FactorAnalysis(1), X, "psi", -1.0, "'psi'.*-1"),
        (PoissonMixture(2, random_state=0), COUNTS, "weights", 0.9, "'weights'.*sums"),
    ],
)
def test_sibling_models_refuse_parameters_off_their_support(
    tmp_path, model, data, name, value, match
):
    src = model.fit(data).save(tmp_path / "m.lf")

    def edit(t):
        t[name] = torch.full_like(t[name], value)

    with pytest.raises(ModelFileError, match=match):
        latentfit.load(_tampered(src, tmp_path / "x.lf", tensors=edit))


# ---------------------------------------------------------------------- DDPM
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_ddpm_scale_must_be_positive(ddpm_file, tmp_path, value):
    path = _tampered(
        ddpm_file, tmp_path / "x.lf", tensors=_tensor("scale_", torch.full((2,), value))
    )
    with pytest.raises(ModelFileError, match=r"'scale_'.*> 0"):
        latentfit.load(path)


@pytest.mark.parametrize("value", [-1, 0, 2.5, True])
def test_ddpm_eval_timesteps_is_checked_at_load(ddpm_file, tmp_path, value):
    path = _tampered(ddpm_file, tmp_path / "x.lf", _params(eval_timesteps=value))
    with pytest.raises(ModelFileError, match="eval_timesteps"):
        latentfit.load(path)


def test_ddpm_eval_timesteps_beyond_n_steps_means_the_exact_sum(ddpm_file, tmp_path):
    exact = _tampered(ddpm_file, tmp_path / "e.lf", _params(eval_timesteps=None))
    more = _tampered(ddpm_file, tmp_path / "m.lf", _params(eval_timesteps=10**6))
    a, b = latentfit.load(exact), latentfit.load(more)
    np.testing.assert_allclose(a.score_samples(X[:3]), b.score_samples(X[:3]), rtol=1e-6)


def test_ddpm_eval_timesteps_is_checked_by_fit():
    model = DDPM(n_steps=10, hidden=8, n_hidden=1, epochs=1, discrete=False, eval_timesteps=-1)
    with pytest.raises(ParameterError, match="eval_timesteps"):
        model.fit(X)


def test_ddpm_discrete_without_level_scale_is_refused(ddpm_file, tmp_path):
    path = _tampered(ddpm_file, tmp_path / "x.lf", _params(discrete=True))
    with pytest.raises(ModelFileError, match=r"extra\.level_scale_"):
        latentfit.load(path)


@pytest.mark.parametrize(
    "edit", [_extra(n_features_in_=10**7), _params(n_hidden=10**9), _params(time_dim=63)]
)
def test_ddpm_header_sizes_beyond_the_tensors_are_refused_before_building(
    ddpm_file, tmp_path, edit
):
    path = _tampered(ddpm_file, tmp_path / "x.lf", edit)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="disagree"):
        latentfit.load(path)
    assert time.perf_counter() - start < 5


# ---------------------------------------------------------------------- flows
def test_flow_dequantize_without_level_scale_is_refused(maf_file, tmp_path):
    path = _tampered(maf_file, tmp_path / "x.lf", _params(dequantize=True))
    with pytest.raises(ModelFileError, match=r"extra\.level_scale_"):
        latentfit.load(path)


@pytest.mark.parametrize("value", [0.0, -1.0, 3.0])
def test_flow_level_scale_must_be_one_or_levels_minus_one(maf_file, tmp_path, value):
    edit = lambda h: (_params(dequantize=True)(h), _extra(level_scale_=value)(h))
    path = _tampered(maf_file, tmp_path / "x.lf", edit)
    with pytest.raises(ModelFileError, match=r"'extra\.level_scale_' must be 1"):
        latentfit.load(path)


@pytest.mark.parametrize(
    "edit",
    [
        _extra(n_features_in_=10**7),
        _params(n_layers=10**9),
        _params(n_hidden=10**9),
        _params(hidden=30000),
        _params(flow="spline"),
    ],
)
def test_flow_header_sizes_beyond_the_tensors_are_refused_before_building(maf_file, tmp_path, edit):
    path = _tampered(maf_file, tmp_path / "x.lf", edit)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="disagree"):
        latentfit.load(path)
    assert time.perf_counter() - start < 5


def test_intact_network_files_still_load(ddpm_file, maf_file):
    for path in (ddpm_file, maf_file):
        model = latentfit.load(path)
        assert np.isfinite(model.score_samples(X[:3])).all()


# ---------------------------------------------------------------------- saving unfitted
@pytest.mark.parametrize(
    "model",
    [GaussianMixture(2), PoissonMixture(2), FactorAnalysis(1), DDPM(n_steps=10), MAF()],
    ids=lambda m: type(m).__name__,
)
def test_saving_an_unfitted_model_raises_not_fitted(tmp_path, model):
    with pytest.raises(NotFittedError, match="not fitted"):
        latentfit.save(model, tmp_path / "x.lf")
    assert not (tmp_path / "x.lf").exists()


@pytest.mark.parametrize("name", ["c0.concentration", "c1.rate"])
def test_a_family_parameter_outside_its_support_is_named(tmp_path, name):
    from latentfit.em.mixture.families import MixtureModel

    X = np.abs(np.random.default_rng(0).normal(size=(60, 1))) + 0.1
    src = tmp_path / "gamma.lf"
    MixtureModel("gamma", 2, random_state=0).fit(X).save(src)

    def negative(t):
        t[name] = -t[name].abs() - 1.0

    bad = _tampered(src, tmp_path / "bad.lf", tensors=negative)
    with pytest.raises(ModelFileError, match=r"do not make a MixtureModel.*(concentration|rate)"):
        latentfit.load(bad)


def test_stored_values_that_derive_an_infinite_attribute_are_refused(gmm_file, tmp_path):
    # each entry finite and the factor still triangular with a positive diagonal, but the
    # precision it squares to overflows: the model would score NaN
    def huge(t):
        t["prec_chol"] = t["prec_chol"].clone()
        t["prec_chol"][0, 0, 0] = 1e300

    bad = _tampered(gmm_file, tmp_path / "huge.lf", tensors=huge)
    with pytest.raises(ModelFileError, match="non-finite precisions_"):
        latentfit.load(bad)


def test_a_factor_model_names_the_row_its_density_overflows_on(tmp_path):
    from latentfit.errors import DataError

    X = np.random.default_rng(0).normal(size=(40, 3))
    fa = latentfit.FactorAnalysis(1).fit(X)
    with pytest.raises(DataError, match="row 1 of X"):
        fa.score_samples(np.vstack([X[:1], [[1e300, 0.0, 0.0]]]))


@pytest.mark.parametrize("which", ["maf", "ddpm"])
def test_network_weights_that_overflow_together_are_refused(which, maf_file, ddpm_file, tmp_path):
    # every weight finite, every shape right: the density at the data's mean is not
    src = maf_file if which == "maf" else ddpm_file
    assert np.isfinite(latentfit.load(src).score_samples(X)).all()  # the intact file

    def huge(t):
        for key in [k for k, v in t.items() if v.dim() == 2 and "mask" not in k]:
            t[key] = torch.full_like(t[key], 1e38)  # every weight matrix

    bad = _tampered(src, tmp_path / "huge.lf", tensors=huge)
    with pytest.raises(ModelFileError, match=r"log-density of .* at the training data's mean"):
        latentfit.load(bad)
