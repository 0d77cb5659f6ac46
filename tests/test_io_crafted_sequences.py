"""latentfit.load refuses crafted model files of the sequence models (HMMs, HSMMs, the
linear-Gaussian state-space model) and of the Bayesian Gaussian mixture whose tensors are
well-formed but hold values no fit could produce (covariances not positive definite, rows
off the simplex, concentrations <= 0, integer tensors, a header ``n_features`` that
disagrees with the tensors), with ModelFileError naming the file and the tensor; valid files
of every kind still load."""

import warnings

import numpy as np
import pytest
import torch

import latentfit
from latentfit import BayesianGaussianMixture
from latentfit.em.hmm import (
    GMMHMM,
    AutoregressiveHMM,
    CategoricalHMM,
    GaussianHMM,
    MultinomialHMM,
    PoissonHMM,
)
from latentfit.em.hmm.variational import VariationalCategoricalHMM, VariationalGaussianHMM
from latentfit.em.hsmm import CategoricalHSMM, GaussianHSMM, PoissonHSMM
from latentfit.em.ssm import LinearGaussianSSM
from latentfit.errors import ModelFileError, ParameterError
from tests.test_io_crafted import _tampered

rng = np.random.default_rng(0)
X = np.vstack([rng.normal(0, 1, (30, 2)), rng.normal(5, 1, (30, 2))])
SYMBOLS = rng.integers(0, 3, (60, 1))
COUNTS = rng.poisson(3.0, (60, 2)).astype(float)

MODELS = {
    "gaussian_full": (lambda **kw: GaussianHMM(2, covariance_type="full", **kw), X),
    "gaussian_tied": (lambda **kw: GaussianHMM(2, covariance_type="tied", **kw), X),
    "gaussian_diag": (lambda **kw: GaussianHMM(2, covariance_type="diag", **kw), X),
    "gaussian_spherical": (lambda **kw: GaussianHMM(2, covariance_type="spherical", **kw), X),
    "gmmhmm_full": (lambda **kw: GMMHMM(2, n_mix=2, covariance_type="full", **kw), X),
    "gmmhmm_tied": (lambda **kw: GMMHMM(2, n_mix=2, covariance_type="tied", **kw), X),
    "gmmhmm_diag": (lambda **kw: GMMHMM(2, n_mix=2, covariance_type="diag", **kw), X),
    "gmmhmm_spherical": (lambda **kw: GMMHMM(2, n_mix=2, covariance_type="spherical", **kw), X),
    "poisson": (lambda **kw: PoissonHMM(2, **kw), COUNTS),
    "categorical": (lambda **kw: CategoricalHMM(2, **kw), SYMBOLS),
    "multinomial": (lambda **kw: MultinomialHMM(2, **kw), COUNTS),
    "autoregressive": (lambda **kw: AutoregressiveHMM(2, **kw), X),
    "vgaussian_full": (lambda **kw: VariationalGaussianHMM(2, covariance_type="full", **kw), X),
    "vgaussian_tied": (lambda **kw: VariationalGaussianHMM(2, covariance_type="tied", **kw), X),
    "vgaussian_diag": (lambda **kw: VariationalGaussianHMM(2, covariance_type="diag", **kw), X),
    "vgaussian_spherical": (
        lambda **kw: VariationalGaussianHMM(2, covariance_type="spherical", **kw),
        X,
    ),
    "vcategorical": (lambda **kw: VariationalCategoricalHMM(2, **kw), SYMBOLS),
    "hsmm_gaussian": (lambda **kw: GaussianHSMM(2, **kw), X),
    "hsmm_poisson": (lambda **kw: PoissonHSMM(2, **kw), COUNTS),
    "hsmm_categorical": (lambda **kw: CategoricalHSMM(2, **kw), SYMBOLS),
    "ssm_full": (lambda **kw: LinearGaussianSSM(2, covariance_type="full", **kw), X),
    "ssm_diag": (lambda **kw: LinearGaussianSSM(2, covariance_type="diag", **kw), X),
}


def _fit(name, dtype="float64"):
    make, data = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(n_iter=3, random_state=0, dtype=dtype).fit(data), data


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One saved file of every model kind (fitted once for the module), by name."""
    root = tmp_path_factory.mktemp("sequences")
    out = {}

    def get(name):
        if name not in out:
            out[name] = _fit(name)[0].save(root / f"{name}.lf")
        return out[name]

    return get


def _set(name, edit):
    def apply(t):
        t[name] = edit(t[name].clone())

    return apply


def _at(index, value):
    def edit(t):
        t[index] = value
        return t

    return edit


def _asymmetric(t):
    t[..., 0, 1] += 5.0
    return t


CASES = [
    # model, tensor, edit, message
    ("gaussian_full", "_covars_", _asymmetric, "not symmetric"),
    ("gaussian_full", "_covars_", lambda t: -t, "not positive definite"),
    ("gaussian_tied", "_covars_", _asymmetric, "not symmetric"),
    ("gaussian_diag", "means_", lambda t: t.to(torch.int64), "not a floating-point"),
    ("gaussian_spherical", "_covars_", lambda t: torch.cat([t, t]), "shape"),
    ("gmmhmm_diag", "covars_", _at((0, 0, 0), -1.0), "'covars_'"),
    ("gmmhmm_diag", "covars_", lambda t: torch.zeros_like(t), "'covars_'"),
    ("gmmhmm_full", "covars_", _asymmetric, "not symmetric"),
    ("gmmhmm_diag", "weights_", lambda t: t * 3, "sums to"),
    ("gmmhmm_diag", "weights_", _at((0, 0), -0.5), "'weights_'"),
    ("poisson", "lambdas_", lambda t: t.to(torch.int64), "not a floating-point"),
    ("categorical", "emissionprob_", lambda t: t * 2, "sums to"),
    ("categorical", "startprob_", lambda t: t.to(torch.int64), "not a floating-point"),
    ("multinomial", "emissionprob_", lambda t: t * 2, "sums to"),
    ("multinomial", "emissionprob_", lambda t: torch.cat([t, t], 1), "shape"),
    ("autoregressive", "covars_", _asymmetric, "not symmetric"),
    ("autoregressive", "coefs_", lambda t: torch.cat([t, t], 1), "shape"),
    ("vgaussian_full", "dof_posterior_", _at(0, 0.0), "'dof_posterior_'"),
    ("vgaussian_full", "beta_prior_", _at(0, -1.0), "'beta_prior_'"),
    ("vgaussian_full", "scale_posterior_", lambda t: -t, "not positive definite"),
    ("vgaussian_diag", "scale_prior_", _at((0, 0), 0.0), "'scale_prior_'"),
    ("vgaussian_full", "transmat_posterior_", _at((0, 0), -1.0), "'transmat_posterior_'"),
    ("vgaussian_full", "startprob_prior_", lambda t: torch.cat([t, t]), "shape"),
    ("vcategorical", "emissionprob_posterior_", _at((0, 0), 0.0), "'emissionprob_posterior_'"),
    ("vcategorical", "emissionprob_prior_", lambda t: t[:, :2].contiguous(), "shape"),
    ("hsmm_gaussian", "duration_lambdas_", lambda t: t.to(torch.int64), "not a floating-point"),
    ("hsmm_poisson", "duration_lambdas_", lambda t: torch.cat([t, t]), "shape"),
    ("hsmm_categorical", "emissionprob_", _at((0, 0), -0.1), "'emissionprob_'"),
    ("ssm_full", "transition_covariance_", lambda t: torch.zeros_like(t), "not positive"),
    ("ssm_full", "initial_state_covariance_", _asymmetric, "not symmetric"),
    ("ssm_full", "observation_covariance_", lambda t: -t, "not positive definite"),
    ("ssm_diag", "observation_matrix_", lambda t: t.to(torch.int64), "not a floating-point"),
    ("ssm_full", "transition_matrix_", lambda t: torch.cat([t, t]), "shape"),
]


@pytest.mark.parametrize(
    ("model", "name", "edit", "match"), CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES]
)
def test_tensors_off_their_constraint_are_refused(files, tmp_path, model, name, edit, match):
    bad = _tampered(files(model), tmp_path / "bad.lf", tensors=_set(name, edit))
    with pytest.raises(ModelFileError, match=match) as err:
        latentfit.load(bad)
    assert str(bad) in str(err.value)
    assert name in str(err.value)


@pytest.mark.parametrize(
    "model", ["gaussian_full", "poisson", "multinomial", "autoregressive", "ssm_full"]
)
@pytest.mark.parametrize("value", [10**12, 3, 1])
def test_a_header_n_features_that_disagrees_with_the_tensors_is_refused(
    files, tmp_path, model, value
):
    bad = _tampered(
        files(model), tmp_path / "bad.lf", header=lambda h: h["extra"].update(n_features=value)
    )
    with pytest.raises(ModelFileError, match=f"n_features = {value}"):
        latentfit.load(bad)


def test_a_categorical_header_n_features_that_disagrees_is_refused(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CategoricalHMM(2, n_features=3, n_iter=2, random_state=0).fit(SYMBOLS)
    path = model.save(tmp_path / "c.lf")
    bad = _tampered(path, tmp_path / "bad.lf", header=lambda h: h["extra"].update(n_features=4))
    with pytest.raises(ModelFileError, match="emissionprob_"):
        latentfit.load(bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_valid_files_of_every_kind_still_load(tmp_path, model, dtype):
    fitted, data = _fit(model, dtype)
    loaded = latentfit.load(fitted.save(tmp_path / "m.lf"))
    assert type(loaded) is type(fitted)
    np.testing.assert_allclose(loaded.score(data), fitted.score(data), rtol=1e-5)


# ---------------------------------------------------------------- BayesianGaussianMixture
def _bgmm(covariance_type="full", weights="dirichlet_process", dtype="float64"):
    return BayesianGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weights,
        random_state=0,
        dtype=dtype,
    ).fit(X)


@pytest.fixture(scope="module")
def bgmm_file(tmp_path_factory):
    return _bgmm().save(tmp_path_factory.mktemp("bgmm") / "bg.lf")


@pytest.mark.parametrize(
    ("name", "edit", "match"),
    [
        ("prec_chol", _at((0, 0, 0), -1.0), "diagonal entry"),
        ("prec_chol", lambda t: t.mT.contiguous(), "above the diagonal"),
        ("cov", _asymmetric, "not symmetric"),
        ("cov", lambda t: -t, "not positive definite"),
        ("dof", _at(0, 0.0), "'dof'"),
        ("beta", _at(0, -1.0), "'beta'"),
        ("wc", _at((0, 0), 0.0), "'wc'"),
        ("prior_covariance", lambda t: -t, "not positive definite"),
        ("means", lambda t: t.to(torch.int64), "not a floating-point"),
        ("means", lambda t: torch.cat([t, t]), "shape"),
    ],
)
def test_bgmm_tensors_off_their_constraint_are_refused(bgmm_file, tmp_path, name, edit, match):
    bad = _tampered(bgmm_file, tmp_path / "bad.lf", tensors=_set(name, edit))
    with pytest.raises(ModelFileError, match=match) as err:
        latentfit.load(bad)
    assert str(bad) in str(err.value)


def _prior_entry(index, value):
    def edit(h):
        h["extra"]["prior"][index] = value

    return edit


# entries of extra.prior: [weight prior type, γ₀, β₀, ν₀]; X has d = 2 features, so ν₀ > 1
@pytest.mark.parametrize(
    ("index", "value", "setting"),
    [
        (1, -1.0, "weight_concentration_prior"),
        (1, 0.0, "weight_concentration_prior"),
        (1, float("inf"), "weight_concentration_prior"),
        (1, "0.3", "weight_concentration_prior"),
        (2, 0.0, "mean_precision_prior"),
        (2, -2.0, "mean_precision_prior"),
        (2, float("nan"), "mean_precision_prior"),
        (3, -2.0, "degrees_of_freedom_prior"),
        (3, 1.0, "degrees_of_freedom_prior"),
        (3, float("nan"), "degrees_of_freedom_prior"),
        (3, True, "degrees_of_freedom_prior"),
        (0, "dirichlet", "weight_concentration_prior_type"),
    ],
)
def test_bgmm_prior_numbers_fit_refuses_are_refused(bgmm_file, tmp_path, index, value, setting):
    # before, every one of these loaded (NaN and inf with a message naming no setting)
    bad = _tampered(bgmm_file, tmp_path / "bad.lf", header=_prior_entry(index, value))
    with pytest.raises(
        ModelFileError, match=rf"'extra\.prior'.*fit refuses: {setting} must"
    ) as err:
        latentfit.load(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    ("setting", "value", "index", "stored"),
    [
        ("weight_concentration_prior", -0.5, 1, -0.5),
        ("mean_precision_prior", 0.0, 2, 0.0),
        ("degrees_of_freedom_prior", 0.5, 3, 0.5),
    ],
)
def test_bgmm_file_and_constructor_priors_meet_the_same_rule(
    bgmm_file, tmp_path, setting, value, index, stored
):
    with pytest.raises(ParameterError, match=f"{setting} must") as given:
        BayesianGaussianMixture(n_components=3, **{setting: value}).fit(X)
    bad = _tampered(bgmm_file, tmp_path / "bad.lf", header=_prior_entry(index, stored))
    with pytest.raises(ModelFileError) as loaded:
        latentfit.load(bad)
    assert str(given.value) in str(loaded.value)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h["extra"].update(prior=["dirichlet_process", 0.3, 1.0]),
        lambda h: h["extra"].update(prior="dirichlet_process"),
    ],
    ids=["three entries", "a string"],  # a file without one: tests/test_io_crafted.py
)
def test_bgmm_prior_that_is_no_list_of_four_is_refused(bgmm_file, tmp_path, edit):
    bad = _tampered(bgmm_file, tmp_path / "bad.lf", header=edit)
    with pytest.raises(ModelFileError, match=r"'extra\.prior' must be (a|the) list"):
        latentfit.load(bad)


def test_bgmm_prior_of_the_other_weight_type_is_refused(bgmm_file, tmp_path):
    edit = _prior_entry(0, "dirichlet_distribution")  # a valid type, not the file's own
    with pytest.raises(ModelFileError, match=r"'extra\.prior' names the weight prior"):
        latentfit.load(_tampered(bgmm_file, tmp_path / "bad.lf", header=edit))


@pytest.mark.parametrize(
    ("covariance_type", "name", "edit", "match"),
    [
        ("full", "prior_mean", lambda t: torch.cat([t, t]), r"'prior_mean' has shape \(4,\)"),
        ("full", "prior_mean", lambda t: t[:1].contiguous(), r"'prior_mean' has shape \(1,\)"),
        ("full", "prior_covariance", _asymmetric, "'prior_covariance'.*not symmetric"),
        ("tied", "prior_covariance", lambda t: -t, "'prior_covariance'.*not positive definite"),
        ("diag", "prior_covariance", _at(0, -1.0), "'prior_covariance'.*-1"),
        ("spherical", "prior_covariance", lambda t: t * 0, "'prior_covariance'.*0 at index"),
    ],
)
def test_bgmm_prior_tensors_fit_refuses_are_refused(tmp_path, covariance_type, name, edit, match):
    src = _bgmm(covariance_type).save(tmp_path / "bg.lf")
    bad = _tampered(src, tmp_path / "bad.lf", tensors=_set(name, edit))
    with pytest.raises(ModelFileError, match=match):
        latentfit.load(bad)


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("degrees_of_freedom_prior", 0.5, "degrees_of_freedom_prior must"),
        ("covariance_prior", [[1.0, 2.0], [2.0, 1.0]], "positive-definite"),
        ("covariance_prior", [1.0, 1.0], "covariance_prior must have shape"),
        ("mean_prior", [0.0], "mean_prior must have shape"),
    ],
)
def test_bgmm_prior_arguments_fit_refuses_are_refused_at_load(
    bgmm_file, tmp_path, setting, value, match
):
    # fit checks these only once it knows n_features; load knows it from the file
    with pytest.raises(ParameterError, match=match):
        BayesianGaussianMixture(n_components=3, **{setting: value}).fit(X)
    edit = lambda h: h["params"].update({setting: value})
    with pytest.raises(ModelFileError, match=rf"'params' holds a prior.*{match}"):
        latentfit.load(_tampered(bgmm_file, tmp_path / "bad.lf", header=edit))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_bgmm_files_with_given_priors_load_and_score_the_same(tmp_path, covariance_type):
    cov = [[2.0, 0.3], [0.3, 1.0]] if covariance_type == "full" else [2.0, 1.0]
    model = BayesianGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        weight_concentration_prior=0.5,
        mean_precision_prior=0.5,
        mean_prior=[1.0, 2.0],
        degrees_of_freedom_prior=3.5,
        covariance_prior=cov,
        random_state=0,
    ).fit(X)
    back = latentfit.load(model.save(tmp_path / "bg.lf"))
    np.testing.assert_array_equal(back.score_samples(X), model.score_samples(X))
    for name in ("weight_concentration_prior_", "mean_precision_prior_"):
        assert getattr(back, name) == getattr(model, name)
    assert back.degrees_of_freedom_prior_ == 3.5
    np.testing.assert_array_equal(back.mean_prior_, [1.0, 2.0])
    np.testing.assert_array_equal(back.covariance_prior_, model.covariance_prior_)


def test_a_bgmm_prior_beyond_float32s_range_is_still_finite(bgmm_file, tmp_path):
    # γ₀ = 1e39 meets fit's rule; the check of finite attributes once read it as float32's inf
    # (the argument it is made from is set with it: a file whose two disagree is refused)
    def edit(h):
        _prior_entry(1, 1e39)(h)
        h["params"]["weight_concentration_prior"] = 1e39

    path = _tampered(bgmm_file, tmp_path / "big.lf", header=edit)
    assert latentfit.load(path).weight_concentration_prior_ == 1e39


def _given_bgmm_file(tmp_path):
    model = BayesianGaussianMixture(
        n_components=3,
        weight_concentration_prior=0.5,
        mean_precision_prior=0.5,
        mean_prior=[1.0, 2.0],
        degrees_of_freedom_prior=3.5,
        covariance_prior=[[2.0, 0.3], [0.3, 1.0]],
        random_state=0,
    )
    return model.fit(X).save(tmp_path / "given.lf")


def _params(name, value):
    return lambda h: h["params"].update({name: value})


def _add(index, value):
    def edit(t):
        t[index] += value
        return t

    return edit


# the prior a file stores is the one fit makes from the arguments the file also stores: a
# file whose two disagree (each value valid on its own) was altered; fit's defaults for
# arguments left None (γ₀ = 1/k, β₀ = 1, ν₀ = d) are compared as well
@pytest.mark.parametrize(
    ("given", "header", "tensors", "match"),
    [
        (
            False,
            _prior_entry(1, 0.7),
            None,
            "weight_concentration_prior = 0.7 .* is None "
            r"\(default 1/n_components = 0.333",
        ),
        (
            False,
            _params("weight_concentration_prior", 0.7),
            None,
            r"weight_concentration_prior = 0.333.* is 0.7;",
        ),
        (
            False,
            _prior_entry(2, 2.0),
            None,
            r"mean_precision_prior = 2.0 .* is None \(default 1.0\)",
        ),
        (
            False,
            _prior_entry(3, 5.0),
            None,
            r"degrees_of_freedom_prior = 5.0 .* is None \(default n_features_in_ = 2.0\)",
        ),
        (True, _prior_entry(1, 0.25), None, r"weight_concentration_prior = 0.25 .* is 0.5;"),
        (True, _prior_entry(2, 0.75), None, r"mean_precision_prior = 0.75 .* is 0.5;"),
        (
            True,
            _params("degrees_of_freedom_prior", 5.0),
            None,
            r"degrees_of_freedom_prior = 3.5 .* is 5.0;",
        ),
        (
            True,
            None,
            _set("prior_mean", _add(1, 0.5)),
            r"tensor 'prior_mean' holds 2.5 at index 1, but 'params.mean_prior'.* gives 2 there",
        ),
        (
            True,
            _params("mean_prior", [1.0, 2.5]),
            None,
            r"tensor 'prior_mean' holds 2 at index 1, but 'params.mean_prior'.* gives 2.5 there",
        ),
        (
            True,
            None,
            _set("prior_covariance", _add((0, 0), 1.0)),
            r"'prior_covariance' holds 3 at index \(0, 0\), but 'params.covariance_prior'.* gives 2 ",
        ),
        (
            True,
            _params("covariance_prior", [[2.0, 0.3], [0.3, 1.5]]),
            None,
            r"'prior_covariance' holds 1 at index \(1, 1\), but 'params.covariance_prior'.* gives 1.5",
        ),
    ],
    ids=[
        "stored γ₀ vs default",
        "γ₀ argument vs stored default",
        "stored β₀ vs default",
        "stored ν₀ vs default",
        "stored γ₀ vs given",
        "stored β₀ vs given",
        "ν₀ argument vs stored",
        "stored m₀ vs given",
        "m₀ argument vs stored",
        "stored W₀⁻¹ vs given",
        "W₀⁻¹ argument vs stored",
    ],
)
def test_bgmm_prior_that_disagrees_with_its_arguments_is_refused(
    bgmm_file, tmp_path, given, header, tensors, match
):
    src = _given_bgmm_file(tmp_path) if given else bgmm_file
    bad = _tampered(src, tmp_path / "bad.lf", header=header, tensors=tensors)
    with pytest.raises(ModelFileError, match=match + ".*the file was altered or is damaged"):
        latentfit.load(bad)
    latentfit.load(src)  # the untouched file loads


def test_bgmm_unknown_tensors_are_refused(bgmm_file, tmp_path):
    bad = _tampered(
        bgmm_file, tmp_path / "bad.lf", tensors=lambda t: t.update(extra=torch.zeros(2))
    )
    with pytest.raises(ModelFileError, match="does not store"):
        latentfit.load(bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("weights", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_valid_bgmm_files_still_load(tmp_path, covariance_type, weights, dtype):
    model = _bgmm(covariance_type, weights, dtype)
    loaded = latentfit.load(model.save(tmp_path / "bg.lf"))
    np.testing.assert_allclose(loaded.score(X), model.score(X), rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianHMM(40, covariance_type="full", n_iter=5, dtype="float32", random_state=0),
        lambda: GMMHMM(
            40, n_mix=2, covariance_type="full", n_iter=5, dtype="float32", random_state=0
        ),
        lambda: GMMHMM(
            40, n_mix=2, covariance_type="tied", n_iter=5, dtype="float32", random_state=0
        ),
    ],
    ids=["gaussian_full", "gmmhmm_full", "gmmhmm_tied"],
)
def test_a_float32_fit_s_covariances_are_symmetric_and_its_file_loads(tmp_path, make):
    # found by the property tests: 40 states in float32 left covariances asymmetric by
    # rounding (9e-5 in entries of 8e5), and the loader refused the model's own file as
    # "not symmetric" (an entry of 1e-6 was held to 1e-12 elementwise)
    data = np.random.default_rng(0).normal(size=(300, 3)) * np.array([1e3, 1.0, 1e-3]) + 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make().fit(data)
    cov = np.asarray(model.covars_)
    assert np.array_equal(cov, np.swapaxes(cov, -1, -2))
    model.save(tmp_path / "m.lf")
    loaded = latentfit.load(tmp_path / "m.lf")
    assert np.array_equal(np.asarray(loaded.covars_), cov)


def test_a_variational_hmm_file_without_its_history_is_refused(tmp_path):
    # found by the property tests: without 'extra.lower_bounds_' the file loaded with
    # lower_bound_ = -inf, the value of a model no VB step has run on
    src = tmp_path / "v.lf"
    VariationalGaussianHMM(2, n_iter=3, random_state=0).fit(X).save(src)
    dst = _tampered(src, tmp_path / "w.lf", header=lambda h: h["extra"].pop("lower_bounds_"))
    with pytest.raises(ModelFileError, match="lower_bounds_"):
        latentfit.load(dst)
