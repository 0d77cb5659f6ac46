"""latentfit.load refuses every model file it cannot trust, with ModelFileError naming the
field or tensor at fault (issue 12): damaged, foreign, altered or inconsistent files."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import latentfit
from latentfit import CategoricalMixture, GaussianHMM, GaussianMixture, PoissonMixture
from latentfit.errors import ModelFileError, OutputError

rng = np.random.default_rng(0)
X = np.vstack([rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))])


@pytest.fixture(scope="module")
def gmm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "gmm.lf"
    GaussianMixture(2, random_state=0).fit(X).save(path)
    return path


@pytest.fixture(scope="module")
def hmm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "hmm.lf"
    with pytest.warns():  # few iterations: a convergence warning
        GaussianHMM(2, n_iter=3, random_state=0).fit(X).save(path)
    return path


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["latentfit"])
    return tensors, header


def _write(path, tensors, header):
    save_file(tensors, str(path), metadata={"latentfit": json.dumps(header)})
    return path


def _tampered(src, dst, edit):
    tensors, header = _read(src)
    edit(tensors, header)
    return _write(dst, tensors, header)


def test_an_intact_file_round_trips(gmm_file):
    model = latentfit.load(gmm_file)
    ref = GaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose(model.score_samples(X), ref.score_samples(X), rtol=1e-12)


def test_nan_parameters_are_refused_naming_the_tensor(gmm_file, tmp_path):
    def edit(tensors, header):
        tensors["means"][1, 0] = float("nan")

    path = _tampered(gmm_file, tmp_path / "nan.lf", edit)
    with pytest.raises(ModelFileError, match=r"'means'.*nan.*\(1, 0\)"):
        latentfit.load(path)


@pytest.mark.parametrize("version", [0, -1, 99])
def test_format_versions_outside_1_to_current_are_refused(gmm_file, tmp_path, version):
    path = _tampered(gmm_file, tmp_path / "v.lf", lambda t, h: h.update(format_version=version))
    with pytest.raises(ModelFileError, match=f"format version {version}"):
        latentfit.load(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: h.pop("class"), "lacks the field 'class'"),
        (lambda h: h.pop("format_version"), "lacks the field 'format_version'"),
        (lambda h: h.pop("params"), "lacks the field 'params'"),
        (lambda h: h.update(format_version="1"), "'format_version' must be a int"),
        (lambda h: h.update(format_version=True), "'format_version' must be a int"),
        (lambda h: h.update(params=[1, 2]), "'params' must be a dict"),
        (lambda h: h.update(extra=[1]), "'extra' must be an object"),
        (lambda h: h["extra"].update(n_iter_="many"), "'extra.n_iter_' must be an integer"),
        (lambda h: h["extra"].pop("n_features_in_"), "extra.n_features_in_"),
        (lambda h: h["params"].update(bogus=1), "'params' does not fit GaussianMixture"),
        (lambda h: h.update({"class": "Nothing"}), "'Nothing', which this latentfit does not"),
    ],
)
def test_altered_headers_raise_model_file_error_naming_the_field(gmm_file, tmp_path, edit, match):
    path = _tampered(gmm_file, tmp_path / "h.lf", lambda t, h: edit(h))
    with pytest.raises(ModelFileError, match=match):
        latentfit.load(path)


@pytest.mark.parametrize("name", ["predict", "__class__", "_params", "weights_"])
def test_extra_cannot_set_undeclared_attributes(gmm_file, tmp_path, name):
    path = _tampered(gmm_file, tmp_path / "x.lf", lambda t, h: h["extra"].update({name: 1}))
    with pytest.raises(ModelFileError, match=f"'extra.{name}', which GaussianMixture does not"):
        latentfit.load(path)


def test_extra_of_hmm_files_is_limited_too(hmm_file, tmp_path):
    path = _tampered(hmm_file, tmp_path / "x.lf", lambda t, h: h["extra"].update(score=1))
    with pytest.raises(ModelFileError, match=r"'extra.score', which GaussianHMM does not"):
        latentfit.load(path)


def test_tensor_shapes_must_agree_with_n_components(gmm_file, tmp_path):
    def edit(tensors, header):
        tensors["weights"] = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)

    path = _tampered(gmm_file, tmp_path / "w.lf", edit)
    with pytest.raises(ModelFileError, match=r"'weights' has shape \(3,\) but n_components = 2"):
        latentfit.load(path)


def test_tensor_shapes_must_agree_with_n_features(gmm_file, tmp_path):
    def edit(tensors, header):
        tensors["means"] = torch.zeros(2, 3, dtype=torch.float64)

    path = _tampered(gmm_file, tmp_path / "m.lf", edit)
    with pytest.raises(ModelFileError, match=r"shapes .*'means': \(2, 3\)"):
        latentfit.load(path)


def test_discrete_mixture_shapes_are_checked(tmp_path):
    counts = rng.poisson(3.0, size=(50, 3)).astype(float)
    PoissonMixture(2, random_state=0).fit(counts).save(tmp_path / "p.lf")

    def edit(tensors, header):
        tensors["rates"] = tensors["rates"][:, :2].contiguous()

    path = _tampered(tmp_path / "p.lf", tmp_path / "bad.lf", edit)
    with pytest.raises(ModelFileError, match="'rates': \\(2, 2\\)"):
        latentfit.load(path)


def test_hmm_tensor_shapes_and_names_are_checked(hmm_file, tmp_path):
    def bad_shape(tensors, header):
        tensors["transmat_"] = torch.full((3, 3), 1 / 3, dtype=torch.float64)

    path = _tampered(hmm_file, tmp_path / "t.lf", bad_shape)
    with pytest.raises(
        ModelFileError, match=r"'transmat_' has shape \(3, 3\) but .* make it \(2, 2\)"
    ):
        latentfit.load(path)

    def extra_tensor(tensors, header):
        tensors["decode"] = torch.zeros(1)

    path = _tampered(hmm_file, tmp_path / "e.lf", extra_tensor)
    with pytest.raises(ModelFileError, match=r"this one holds.*'decode'"):
        latentfit.load(path)


def test_not_a_model_file(tmp_path, gmm_file):
    with pytest.raises(FileNotFoundError):
        latentfit.load(tmp_path / "missing.lf")
    with pytest.raises(ModelFileError, match="not a file"):
        latentfit.load(tmp_path)
    random_bytes = tmp_path / "random.lf"
    random_bytes.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelFileError, match="not a latentfit model file"):
        latentfit.load(random_bytes)
    truncated = tmp_path / "truncated.lf"
    truncated.write_bytes(gmm_file.read_bytes()[:-100])
    with pytest.raises(ModelFileError):
        latentfit.load(truncated)
    empty = tmp_path / "empty.lf"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError):
        latentfit.load(empty)
    foreign = tmp_path / "foreign.lf"
    save_file({"a": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a latentfit model"):
        latentfit.load(foreign)


def test_save_to_a_folder_is_an_output_error(tmp_path):
    model = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(OutputError, match="is a folder"):
        model.save(tmp_path)


def test_feature_names_survive_save_and_load(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=["height", "weight"])
    GaussianMixture(2, random_state=0).fit(df).save(tmp_path / "g.lf")
    model = latentfit.load(tmp_path / "g.lf")
    assert list(model.feature_names_in_) == ["height", "weight"]
    with pytest.raises(ValueError, match=r"\['weight', 'height'\].*\['height', 'weight'\]"):
        model.predict(df[["weight", "height"]])

    codes = pd.DataFrame(rng.integers(0, 3, size=(40, 2)), columns=["u", "v"])
    CategoricalMixture(2, random_state=0).fit(codes).save(tmp_path / "c.lf")
    assert list(latentfit.load(tmp_path / "c.lf").feature_names_in_) == ["u", "v"]


def test_factor_model_shapes_are_checked(tmp_path):
    latentfit.PPCA(1, random_state=0).fit(X).save(tmp_path / "f.lf")
    assert latentfit.load(tmp_path / "f.lf").score(X) == pytest.approx(
        latentfit.PPCA(1, random_state=0).fit(X).score(X), rel=1e-12
    )

    def edit(tensors, header):
        tensors["mu"] = torch.zeros(3, dtype=torch.float64)

    path = _tampered(tmp_path / "f.lf", tmp_path / "bad.lf", edit)
    with pytest.raises(ModelFileError, match=r"'mu': \(3,\)"):
        latentfit.load(path)


def test_model_registry_names_the_module_of_every_model_class():
    """load finds a class by importing the one module MODEL_MODULES names (never the whole
    package): every class the package registers is listed there, with its own module."""
    from latentfit import io

    for name in latentfit.__all__:  # the public names import (and so register) their classes
        getattr(latentfit, name)
    assert io._REGISTRY, "importing latentfit's public classes registers its model classes"
    for name, cls in io._REGISTRY.items():
        assert io.MODEL_MODULES.get(name) == cls.__module__, name
    assert set(io.MODEL_MODULES) == set(io._REGISTRY)
