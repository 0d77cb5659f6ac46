"""latentfit.load refuses crafted model files whose header or tensors are well-formed but
hold values no fit could produce (a dtype torch lacks, a setting fit refuses, weights off the
simplex, a negative Cholesky diagonal, a zero scale, a header sized beyond its tensors), with
ModelFileError naming the field or tensor, before anything is built or scored."""

import json
import re
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
    PPCA,
    BernoulliMixture,
    CategoricalMixture,
    FactorAnalysis,
    GaussianMixture,
    MultinomialMixture,
    NeuralSplineFlow,
    PoissonMixture,
    RealNVP,
)
from latentfit.em.base import RUN_RECORD
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


def test_gmm_means_that_disagree_with_the_stored_centre_are_refused(gmm_file, tmp_path):
    """The densities use the fit's centre plus the means relative to it; a file whose 'means'
    says otherwise (or holds one of the pair without the other) does not load."""
    edit = _tensor("means", torch.tensor([[100.0, 100.0], [-100.0, -100.0]], dtype=torch.float64))
    path = _tampered(gmm_file, tmp_path / "m.lf", tensors=edit)
    with pytest.raises(ModelFileError, match=r"'means' disagrees with 'shift' \+ 'delta'"):
        latentfit.load(path)
    path = _tampered(gmm_file, tmp_path / "s.lf", tensors=lambda t: t.pop("delta"))
    with pytest.raises(ModelFileError, match="holds the tensor 'shift' but not 'delta'"):
        latentfit.load(path)
    # without either, the means are the model's (as an older file)
    path = _tampered(
        gmm_file, tmp_path / "n.lf", tensors=lambda t: (t.pop("delta"), t.pop("shift"))
    )
    back = latentfit.load(path)
    np.testing.assert_allclose(back.score_samples(X), latentfit.load(gmm_file).score_samples(X))


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


# ---------------------------------------------------------------------- extra settings
CODES = rng.integers(0, 3, (60, 2))


@pytest.mark.parametrize(
    ("model", "data", "field", "value", "rule"),
    [
        (FactorAnalysis(1), X, "_min_noise", -1.0, "a finite number > 0"),
        (FactorAnalysis(1), X, "_min_noise", 0.0, "a finite number > 0"),
        (FactorAnalysis(1), X, "_min_noise", float("nan"), "a finite number > 0"),
        (FactorAnalysis(1), X, "_min_noise", [1e-12, -1.0], "a finite number > 0"),
        (FactorAnalysis(1), X, "_min_noise", [], "a finite number > 0"),
        (MultinomialMixture(2, random_state=0), COUNTS, "mean_total_count_", -5.0, ">= 0"),
        (MultinomialMixture(2, random_state=0), COUNTS, "mean_total_count_", float("nan"), ">= 0"),
        (GaussianMixture(2, random_state=0), X, "n_iter_", -3, "an integer >= 0"),
        (CategoricalMixture(2, random_state=0), CODES, "n_categories_", [0, 3], ">= 1"),
        (CategoricalMixture(2, random_state=0), CODES, "n_categories_", [3], "a list of 2"),
        (CategoricalMixture(2, random_state=0), CODES, "n_categories_", [3, 3, 3], "a list of 2"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_extra_settings_out_of_the_range_fit_gives_are_refused(
    tmp_path, model, data, field, value, rule
):
    # before, each loaded: a NaN noise floor then broke partial_fit with a raw torch error,
    # a negative mean total or n_iter_ was reported, an n_categories_ of 0 refused every row
    src = model.fit(data).save(tmp_path / "m.lf")
    bad = _tampered(src, tmp_path / "x.lf", _extra(**{field: value}))
    with pytest.raises(ModelFileError, match=rf"'extra\.{field}'.*{rule}") as err:
        latentfit.load(bad)
    assert str(err.value).startswith(f"{bad}: ")  # which file (the CLI's words had none)


@pytest.mark.parametrize("model", [FactorAnalysis(1), PPCA(1), FactorAnalysis(1, dtype="float32")])
def test_a_noise_floor_above_the_stored_noise_is_refused(tmp_path, model):
    # a fit clamps every noise variance at the floor; a file whose floor is above them loaded,
    # and partial_fit then lifted every variance to it (1e300 here)
    src = model.fit(X).save(tmp_path / "m.lf")
    assert torch.equal(latentfit.load(src)._min_noise, model._min_noise)  # the fit's own floor
    bad = _tampered(src, tmp_path / "x.lf", _extra(_min_noise=1e300))
    # PPCA's one noise variance has the floor of float64's epsilon of their mean
    said = "(mean 1e+300) puts the floor of the one noise variance at 2.22045e+296, which is"
    said = said if isinstance(model, PPCA) else "= 1e+300 is"
    with pytest.raises(ModelFileError, match=re.escape(f"'extra._min_noise' {said} above")):
        latentfit.load(bad)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_a_file_with_one_noise_floor_for_every_column_loads_and_scores_the_same(tmp_path, cls):
    # files written when the floor was one number (1e-12 of the mean column variance) must
    # load as before; a new file records each column's floor, 1e-12 of its own variance
    model = cls(1).fit(X)
    src = model.save(tmp_path / "m.lf")
    floor = _read(src)[1]["extra"]["_min_noise"]
    np.testing.assert_allclose(floor, 1e-12 * X.var(0), rtol=1e-10)
    old = latentfit.load(_tampered(src, tmp_path / "old.lf", _extra(_min_noise=3.1e-12)))
    assert old.score(X) == model.score(X)
    np.testing.assert_array_equal(old._min_noise, [3.1e-12, 3.1e-12])
    old.partial_fit(X)  # clamps at the file's floor
    assert np.isfinite(old.score(X))
    with pytest.raises(ModelFileError, match=r"holds 3 numbers, but .* n_features_in_ = 2"):
        latentfit.load(_tampered(src, tmp_path / "x.lf", _extra(_min_noise=[1e-12] * 3)))


def _dropped(name):
    return lambda h: h["extra"].pop(name)


@pytest.mark.parametrize("model", [FactorAnalysis(1), PPCA(1), FactorAnalysis(1, dtype="float32")])
def test_a_file_without_a_noise_floor_loads_with_the_floor_a_fit_would_set(tmp_path, model):
    # files written before the floor was stored lack 'extra._min_noise': load refused them
    # ("inconsistent: AttributeError"), and partial_fit needs the floor
    src = model.fit(X).save(tmp_path / "m.lf")
    old = latentfit.load(_tampered(src, tmp_path / "old.lf", _dropped("_min_noise")))
    # the floor of the column variances the fit implies, diag(W Wᵀ + Ψ), which equal the
    # data's at the maximum likelihood (1e-3: EM stopped at tol, not at the maximum)
    fraction = 1e-12 if model.dtype == "float64" else np.finfo(np.float32).eps
    if isinstance(model, PPCA):  # its one noise variance: float64's epsilon of their mean
        fraction = np.finfo(np.float64).eps
    floor = fraction * (X.var(0) if isinstance(model, FactorAnalysis) else X.var(0).mean())
    np.testing.assert_allclose(old._floor.double(), floor, rtol=1e-3)
    assert old.score(X) == model.score(X)
    old.partial_fit(X)
    model.partial_fit(X)
    np.testing.assert_allclose(old.components_, model.components_, rtol=1e-6)
    np.testing.assert_allclose(old.noise_variance_, model.noise_variance_, rtol=1e-6)


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (MultinomialMixture(2, random_state=0), COUNTS, "mean_total_count_"),
        (latentfit.BayesianGaussianMixture(n_components=2, random_state=0), X, "elbo_"),
        (MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, random_state=0), X, "n_skipped_steps_"),
        (MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, random_state=0), X, "history_"),
        # these said "must be ..., got None" of the field they lacked
        (MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, random_state=0), X, "n_features_in_"),
        (DDPM(n_steps=10, hidden=8, n_hidden=1, epochs=1, discrete=False), X, "n_features_in_"),
        (latentfit.BayesianGaussianMixture(n_components=2, random_state=0), X, "prior"),
        (CategoricalMixture(2, random_state=0), CODES, "n_categories_"),
    ],
)
def test_a_file_without_a_stored_setting_is_refused_naming_the_field(tmp_path, model, data, field):
    # the file lacked a setting its class stores; load said "the stored ... is inconsistent:
    # AttributeError: ... has no attribute" instead of naming the field the file lacks
    src = model.fit(data).save(tmp_path / "m.lf")
    bad = _tampered(src, tmp_path / "x.lf", _dropped(field))
    with pytest.raises(ModelFileError, match=rf"lacks the field 'extra\.{field}'") as err:
        latentfit.load(bad)
    assert str(err.value).startswith(f"{bad}: ") and "fit the model again" in str(err.value)
    assert "AttributeError" not in str(err.value) and "got None" not in str(err.value)


def test_a_multinomial_file_stating_a_huge_total_loads_without_drawing_each_count(tmp_path):
    # load samples two rows to check the model; one draw per unit of the total made a stated
    # total of 1e9 allocate 16 GB there. Rows are drawn by conditional binomials now.
    src = MultinomialMixture(2, random_state=0).fit(COUNTS).save(tmp_path / "m.lf")
    back = latentfit.load(_tampered(src, tmp_path / "x.lf", _extra(mean_total_count_=1e9)))
    assert np.all(back.sample(2)[0].sum(1) == 1e9)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [("n_skipped_steps_", -4, ">= 0"), ("skip_floor_", -1.0, "> 0"), ("skip_floor_", 0.0, "> 0")],
)
def test_network_extra_settings_out_of_range_are_refused(tmp_path, field, value, rule):
    model = DDPM(n_steps=10, hidden=8, n_hidden=1, epochs=1, discrete=False, gaussian_skip=True)
    src = model.set_params(random_state=0).fit(X).save(tmp_path / "m.lf")
    bad = _tampered(src, tmp_path / "x.lf", _extra(**{field: value}))
    with pytest.raises(ModelFileError, match=rf"'extra\.{field}'.*{rule}") as err:
        latentfit.load(bad)
    assert str(err.value).startswith(f"{bad}: ")  # which file (the CLI's words had none)


def test_flow_skipped_steps_must_be_a_count(maf_file, tmp_path):
    with pytest.raises(ModelFileError, match=r"'extra\.n_skipped_steps_'.*an integer >= 0"):
        latentfit.load(_tampered(maf_file, tmp_path / "x.lf", _extra(n_skipped_steps_=-1)))


@pytest.fixture(scope="module")
def categorical_file(tmp_path_factory):
    """Column 0 has 2 codes, column 1 has 3: probs (2, 2, 3) is 0 at code 2 of column 0."""
    model = CategoricalMixture(2, n_categories=[2, 3], random_state=0)
    return _saved(tmp_path_factory, "c.lf", model.fit(np.minimum(CODES, [1, 2])))


def _probs(edit):
    def apply(t):
        t["probs"] = t["probs"].clone()
        edit(t["probs"])

    return apply


@pytest.mark.parametrize(
    ("header", "tensors", "match"),
    [
        (
            _extra(n_categories_=[1, 3]),
            None,
            r"'probs' gives component \d the probability .* for code 1 of column 0, which "
            r"has 1 categories \('extra\.n_categories_'\): a fit gives 0 there",
        ),
        (_extra(n_categories_=[2, 4]), None, r"'probs' has shape \(2, 2, 3\).*\(2, 2, 4\)"),
        (_extra(n_categories_=[2, 2]), None, r"'probs' has shape \(2, 2, 3\).*\(2, 2, 2\)"),
        (None, _probs(lambda p: p.__setitem__((0, 0, 2), 0.5)), "'probs'.*row .* sums to"),
        (None, _probs(lambda p: p.mul_(0.5)), "'probs'.*sums to 0.5"),
        (
            None,
            _probs(lambda p: (p[0, 0].fill_(0.25), p[0, 0, 2].fill_(0.5))),
            "code 2 of column 0",
        ),
    ],
    ids=[
        "fewer codes in one column",
        "more codes",
        "fewer codes",
        "off the simplex",
        "halved",
        "stray mass",
    ],
)
def test_categorical_mixture_categories_must_match_the_probabilities(
    categorical_file, tmp_path, header, tensors, match
):
    # before, every one of these loaded and scored: probs off the simplex gave log-densities
    # of an unnormalised model, codes beyond a column's range were accepted
    bad = _tampered(categorical_file, tmp_path / "x.lf", header, tensors)
    with pytest.raises(ModelFileError, match=match):
        latentfit.load(bad)


def test_intact_categorical_and_multinomial_files_load_and_score_the_same(
    categorical_file, tmp_path
):
    model = CategoricalMixture(2, n_categories=[2, 3], random_state=0)
    data = np.minimum(CODES, [1, 2])
    back = latentfit.load(categorical_file)
    np.testing.assert_array_equal(back.score_samples(data), model.fit(data).score_samples(data))
    np.testing.assert_array_equal(back.n_categories_, [2, 3])
    # rows whose mean total rounds to 0: a fit of them loads (its sampling probe drew
    # nothing and raised) and samples empty rows
    sparse = (np.random.default_rng(1).random((60, 3)) < 0.1).astype(float)
    mm = MultinomialMixture(2, random_state=0).fit(sparse)
    assert mm.mean_total_count_ < 0.5
    back = latentfit.load(mm.save(tmp_path / "m.lf"))
    np.testing.assert_array_equal(back.score_samples(sparse), mm.score_samples(sparse))
    np.testing.assert_array_equal(back.sample(3)[0], np.zeros((3, 3)))


@pytest.mark.parametrize("value", [[3, 3, 3], [[3], [3]], 2.5, "x", True, 0])
def test_categorical_n_categories_fit_refuses_is_named(value):
    # before, a list of the wrong length or a string raised numpy's raw ValueError
    with pytest.raises(ParameterError, match="n_categories must be an integer >= 1 or a list of 2"):
        CategoricalMixture(2, n_categories=value).fit(CODES)


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


# ---------------------------------------------------------------------- flow masks
X3 = rng.normal(0, 1, (40, 3))  # 3 features: no MADE mask is all ones, couplings alternate
FLOWS = {"maf": MAF, "realnvp": RealNVP, "spline": NeuralSplineFlow}


@pytest.fixture(scope="module")
def flow_files(tmp_path_factory):
    """One saved file of each flow kind on 3 features (fitted once), by kind."""
    root = tmp_path_factory.mktemp("flows")
    out = {}

    def get(kind, dtype="float32"):
        if (kind, dtype) not in out:
            model = FLOWS[kind](
                n_layers=2, hidden=8, n_hidden=2, epochs=1, random_state=0, dtype=dtype
            )
            out[kind, dtype] = (model.fit(X3), model.save(root / f"{kind}-{dtype}.lf"))
        return out[kind, dtype]

    return get


def _flip_first(t):
    t = t.clone()
    t.view(-1)[0] = 1 - t.view(-1)[0]
    return t


MASK_EDITS = {
    "all ones": torch.ones_like,  # a MADE output then sees its own input
    "all zeros": torch.zeros_like,
    "one entry flipped": _flip_first,
    "one entry 0.5": lambda t: t.clone().view(-1).index_fill(0, torch.tensor([0]), 0.5).view_as(t),
}


@pytest.mark.parametrize("edit", sorted(MASK_EDITS))
@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("maf", "layers.0.l1.mask"),
        ("maf", "layers.1.hidden_layers.0.mask"),
        ("maf", "layers.1.l_s.mask"),
        ("realnvp", "layers.0.mask"),
        ("spline", "layers.1.mask"),
    ],
)
def test_flow_masks_other_than_the_settings_build_are_refused(
    flow_files, tmp_path, kind, key, edit
):
    # masks are no fitted values: before, any finite ones loaded and scored wrongly
    _, src = flow_files(kind)
    bad = _tampered(
        src, tmp_path / "x.lf", tensors=_tensor(key, MASK_EDITS[edit](_read(src)[0][key]))
    )
    named = rf"'{re.escape(key)}' \(the mask of the \w+ '{re.escape(key[:-5])}'\)"
    with pytest.raises(
        ModelFileError, match=named + r" is not the mask that the settings of a \w+ on 3 features"
    ) as err:
        latentfit.load(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("kind", ["realnvp", "spline"])
def test_coupling_masks_swapped_between_layers_are_refused(flow_files, tmp_path, kind):
    # each a valid parity mask, but not the parity the layer's position gives it
    _, src = flow_files(kind)
    tensors = _read(src)[0]

    def swap(t):
        t["layers.0.mask"], t["layers.1.mask"] = tensors["layers.1.mask"], tensors["layers.0.mask"]

    with pytest.raises(
        ModelFileError, match=r"'layers\.0\.mask'.*holds 1 at index \(0,\) where they build 0"
    ):
        latentfit.load(_tampered(src, tmp_path / "x.lf", tensors=swap))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_intact_flow_files_load_with_their_masks_and_score_the_same(flow_files, kind, dtype):
    model, path = flow_files(kind, dtype)
    back = latentfit.load(path)
    np.testing.assert_array_equal(back.score_samples(X3), model.score_samples(X3))
    for name, buffer in model.module_.named_buffers():
        assert torch.equal(back.module_.get_buffer(name), buffer)


def test_every_stored_buffer_of_a_network_is_fitted_or_fixed_by_the_settings():
    """A buffer that a network stores is either fitted (listed here) or fixed by the settings
    and listed in its layer's ``fixed_buffers``, so that load compares it with the one the
    settings build: a new structural buffer cannot slip past that check unlisted."""
    from latentfit.vae import build_model

    fitted = {"shift", "log_scale", "skip_mean", "skip_basis", "skip_var"}
    networks = [FLOWS[k](n_layers=2, hidden=4, n_hidden=2)._module(3) for k in sorted(FLOWS)]
    ddpm = DDPM(n_steps=5, hidden=4, n_hidden=2, time_dim=4, gaussian_skip=True, variance="learned")
    networks.append(ddpm._module(3))
    networks += [build_model(x_dim=6, z_dim=3, hidden=[4], flow=f) for f in ("iaf", "planar")]
    networks += [build_model(x_dim=6, z_dim=2, hidden=[4], kind=k) for k in ("discrete", "ladder")]
    seen_fixed = 0
    for net in networks:
        stored = net.state_dict().keys()
        for prefix, layer in net.named_modules():
            for name, _ in layer.named_buffers(recurse=False):
                key = f"{prefix}.{name}" if prefix else name
                if key not in stored:
                    continue  # not persistent: rebuilt from the settings, never read from a file
                fixed = name in getattr(type(layer), "fixed_buffers", ())
                seen_fixed += fixed
                assert fixed or name in fitted, f"{type(net).__name__}: buffer {key!r} unlisted"
    assert seen_fixed > 0


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


def test_a_family_mixture_with_more_features_than_its_tensors_is_refused(tmp_path):
    # before: its (1,) parameters broadcast to any n_features_in_, the probe draw of 10**9
    # values ran out of memory (a ResourceLimitError, taken as "nothing learnt"), the file
    # loaded, and score_samples then said "X has 1 features, but MixtureModel is expecting
    # 1000000000 features as input", blaming the data
    from latentfit.em.mixture.families import MixtureModel

    X = np.abs(np.random.default_rng(0).normal(size=(60, 1))) + 0.1
    src = MixtureModel("gamma", 2, random_state=0).fit(X).save(tmp_path / "gamma.lf")
    bad = _tampered(src, tmp_path / "bad.lf", header=_extra(n_features_in_=10**9))
    with pytest.raises(
        ModelFileError,
        match=r"'c0.concentration' has shape \(1,\), but 'extra.n_features_in_' is 1000000000",
    ):
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


def test_a_factor_model_scores_a_row_beyond_float64_as_minus_infinity_not_nan():
    # log p(x) of a row at 1e300 is about -1e600: -inf in float64, as GaussianMixture and
    # PPCA give it; the Woodbury form took inf - inf there (NaN, refused as an overflow)
    from scipy.stats import multivariate_normal

    X = np.random.default_rng(0).normal(size=(40, 3))
    fa = latentfit.FactorAnalysis(1).fit(X)
    got = fa.score_samples(np.vstack([X[:1], [[1e300, 0.0, 0.0]]]))
    cov = fa.components_.T @ fa.components_ + np.diag(fa.noise_variance_)
    assert got[0] == pytest.approx(multivariate_normal(fa.mean_, cov).logpdf(X[0]), rel=1e-12)
    assert got[1] == -np.inf


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


@pytest.mark.parametrize(
    "make",
    [
        lambda: (latentfit.GaussianMixture(2, max_iter=0, random_state=0), X),
        lambda: (latentfit.CategoricalMixture(2, max_iter=0, random_state=0), CODES),
        lambda: (latentfit.MultinomialMixture(2, max_iter=0, random_state=0), COUNTS),
        lambda: (latentfit.FactorAnalysis(1, max_iter=0), X),
        lambda: (latentfit.BayesianGaussianMixture(n_components=2, max_iter=0, random_state=0), X),
        lambda: (latentfit.GaussianHMM(2, n_iter=0, random_state=0), X),
        lambda: (latentfit.VariationalGaussianHMM(2, n_iter=0, random_state=0), X),
    ],
    ids=["gmm", "categorical", "multinomial", "fa", "bgmm", "hmm", "vhmm"],
)
def test_a_fit_that_ran_no_iteration_saves_a_file_that_loads(tmp_path, make):
    # max_iter=0 (initialisation only, as scikit-learn allows) leaves the bound at -inf; the
    # load-time check of finite fitted values refused such files, and the variational HMM
    # came back with a NaN bound
    model, data = make()
    model.fit(data)
    back = latentfit.load(model.save(tmp_path / "m.lf"))
    assert back.lower_bound_ == -np.inf
    if hasattr(model, "score"):
        np.testing.assert_allclose(back.score(data), model.score(data), rtol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: (latentfit.GaussianMixture(2, n_init=3, max_iter=5, random_state=0), X),
        lambda: (latentfit.PoissonMixture(2, n_init=2, max_iter=5, random_state=0), COUNTS),
        lambda: (latentfit.FactorAnalysis(1, max_iter=5), X),
        lambda: (latentfit.GaussianHMM(2, n_init=3, n_iter=5, random_state=0), X),
        lambda: (latentfit.CategoricalHMM(2, n_init=2, n_iter=5, random_state=0), CODES[:, :1]),
        lambda: (latentfit.MultinomialHMM(2, n_init=2, n_iter=5, random_state=0), COUNTS),
        lambda: (latentfit.VariationalGaussianHMM(2, n_init=2, n_iter=5, random_state=0), X),
        lambda: (latentfit.LinearGaussianSSM(1, n_iter=5), X),
    ],
    ids=["gmm", "poisson", "fa", "hmm", "categorical_hmm", "multinomial_hmm", "vhmm", "ssm"],
)
def test_a_loaded_model_keeps_the_record_of_its_fit(tmp_path, make):
    # the bound's history, its last value, whether it converged, every restart's history and
    # which was kept: a loaded HMM had lost all but the kept history, a mixture the restarts
    model, data = make()
    model.fit(data)
    back = latentfit.load(model.save(tmp_path / "m.lf"))
    for name in RUN_RECORD:
        if hasattr(model, name):
            want = getattr(model, name)
            got = getattr(back, name)
            assert type(got) is type(want) or isinstance(want, np.ndarray), name
            np.testing.assert_equal(got, want, err_msg=name)


@pytest.mark.parametrize(
    ("model", "data", "dtype"),
    [
        # before: each loaded, the estimators keeping the float16 (float32) copy and computing
        # in it, the MAF casting it back to float32: scores off by up to 3e-3
        (latentfit.GaussianHMM(2, n_iter=3, random_state=0), X, torch.float32),
        (latentfit.LinearGaussianSSM(1, n_iter=2, random_state=0), X, torch.float16),
        (latentfit.BayesianGaussianMixture(n_components=2, random_state=0), X, torch.float16),
        (PoissonMixture(2, random_state=0), COUNTS, torch.bfloat16),
        (MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, random_state=0), X, torch.float16),
    ],
    ids=["GaussianHMM", "LinearGaussianSSM", "BayesianGaussianMixture", "PoissonMixture", "MAF"],
)
def test_tensors_in_another_dtype_than_a_save_writes_are_refused(tmp_path, model, data, dtype):
    path = model.fit(data).save(tmp_path / "m.lf")

    def cast(t):
        for name, value in t.items():
            if value.is_floating_point():
                t[name] = value.to(dtype)

    _tampered(path, path, tensors=cast)
    with pytest.raises(ModelFileError, match=rf"is stored as {str(dtype)[6:]}, but a ") as err:
        latentfit.load(path)
    assert str(path) in str(err.value) and "saves it as float" in str(err.value)


# ---------------------------------------------------------------------- tensors named
@pytest.mark.parametrize("which", ["maf", "ddpm"])
def test_tensors_that_do_not_fit_the_network_are_each_named_with_their_shapes(
    maf_file, ddpm_file, tmp_path, which
):
    # before: "...describes a MAF on 2 features with 20 tensors, but the file holds 19" named
    # none of them, and a file with several differences named only the first
    src = {"maf": maf_file, "ddpm": ddpm_file}[which]
    tensors, _ = _read(src)
    weights = sorted(k for k in tensors if k.endswith(".weight"))
    gone, wide = weights[:2], weights[-1]
    shape = tuple(tensors[wide].shape)

    def edit(t):
        for k in gone:
            del t[k]
        t[wide] = torch.zeros(shape[0], shape[1] + 1)
        t["stray.bias"] = torch.zeros(3)

    path = _tampered(src, tmp_path / "x.lf", tensors=edit)
    with pytest.raises(ModelFileError) as err:
        latentfit.load(path)
    text = str(err.value)
    assert "the file is missing " + ", ".join(repr(k) for k in gone) in text
    assert f"{wide!r} has shape {(shape[0], shape[1] + 1)} where {shape} is expected" in text
    assert "'stray.bias' (3,), which the model has no place for" in text


# ---------------------------------------------------------------------- overflowing weights
LEVELS = rng.integers(0, 256, (60, 2)).astype(float)  # 8-bit levels


def _one_weight(t, key, value):
    t[key] = t[key].clone()
    t[key].view(-1)[0] = value


@pytest.mark.parametrize(
    ("model", "data", "key"),
    [
        (MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, random_state=0), X, "layers.0.l1.weight"),
        (
            MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, dequantize=True, random_state=0),
            LEVELS,
            "layers.1.l1.bias",
        ),
        (
            DDPM(n_steps=12, hidden=8, n_hidden=1, epochs=1, discrete=True, random_state=0),
            LEVELS,
            "denoiser.time.2.weight",
        ),
    ],
)
def test_a_weight_that_overflows_float32_is_refused_at_scoring_naming_the_layer(
    tmp_path, model, data, key
):
    # before: one weight of 3e38 (finite in float32) loaded and score_samples returned NaN or
    # -inf for finite rows without a word
    src = model.fit(data).save(tmp_path / "m.lf")
    path = _tampered(src, tmp_path / "x.lf", tensors=lambda t: _one_weight(t, key, 3e38))
    loaded = latentfit.load(path)
    exact = latentfit.load(path)  # the same weights in float64 give finite log-densities
    exact.module_.double()
    exact.set_params(dtype="float64")
    assert np.isfinite(exact.score_samples(data)).all()
    layer = key.rsplit(".", 1)[0]
    with pytest.raises(ParameterError, match="float32") as err:
        loaded.score_samples(data)
    assert f"the layer {layer!r}" in str(err.value) and "3e+38" in str(err.value)
    assert re.search(r"X has log p\(x\) = (-inf|nan) at row \d+ under the", str(err.value))
    assert re.search(r"of the 60 rows: \d", str(err.value))
