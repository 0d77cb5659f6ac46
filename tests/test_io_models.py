"""One model-file format for every kind (issue 14): the header names the kind, the latentfit
version, the columns and the settings; VAEs are read by latentfit.load; the new header fields
are checked like the old ones."""

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import latentfit
from latentfit.errors import ModelFileError
from latentfit.io import model_kind, read_header

rng = np.random.default_rng(1)
X = np.vstack([rng.normal(0, 1, (30, 2)), rng.normal(4, 1, (30, 2))])
FRAME = pd.DataFrame(X, columns=["a", "b"])


def _models():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "mixture": latentfit.GaussianMixture(2, random_state=0).fit(FRAME),
            "hmm": latentfit.GaussianHMM(2, n_iter=5, random_state=0).fit(FRAME),
            "factor": latentfit.FactorAnalysis(1, random_state=0).fit(FRAME),
            "density": latentfit.MAF(n_layers=1, hidden=4, epochs=1, random_state=0).fit(FRAME),
            "vae": latentfit.vae.build_model(x_dim=2, z_dim=1, hidden=[3]),
        }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    return {kind: latentfit.save(m, folder / f"{kind}.lf") for kind, m in _models().items()}


@pytest.mark.parametrize("kind", ["mixture", "hmm", "factor", "density", "vae"])
def test_every_kind_writes_the_one_header(files, kind):
    header = read_header(files[kind])
    assert header["format"] == "latentfit" and header["format_version"] == 1
    assert header["kind"] == kind and header["latentfit_version"] == latentfit.__version__
    model = latentfit.load(files[kind])
    assert model_kind(model) == kind and type(model).__name__ == header["class"]
    if kind == "vae":
        assert header["feature_names"] is None and header["params"] == asdict(model.spec)
    else:
        assert header["feature_names"] == ["a", "b"]
        assert list(model.feature_names_in_) == ["a", "b"]


def _rewrite(src, dst, edit):
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["latentfit"])
    edit(header)
    save_file(tensors, str(dst), metadata={"latentfit": json.dumps(header)})
    return dst


@pytest.mark.parametrize(
    ("kind", "edit", "match"),
    [
        ("mixture", lambda h: h.update(kind="hmm"), "'kind' says 'hmm' but a GaussianMixture"),
        ("mixture", lambda h: h.update(kind="robot"), "'kind' must be one of"),
        ("hmm", lambda h: h.update(feature_names=[1, 2]), "'feature_names' must be a list"),
        ("factor", lambda h: h.update(latentfit_version=3), "'latentfit_version' must be a str"),
        ("vae", lambda h: h.update(extra={"x": 1}), "'extra' of a VAE must be empty"),
        ("vae", lambda h: h.update(extra={"level_scale_": 1.0}), "bernoulli likelihood has no"),
        ("vae", lambda h: h.update(feature_names=["a"]), "names 1 columns"),
        ("vae", lambda h: h.update(split=[1]), "'split' must be an object"),
        ("vae", lambda h: h.update(format_version=7), "format version 7"),
        ("vae", lambda h: h["params"].update(z_dim=-1), "z_dim=-1"),
        ("vae", lambda h: h["params"].update(kind="discrete"), "class 'VAE' but its spec"),
    ],
)
def test_altered_new_header_fields_raise_model_file_error(files, tmp_path, kind, edit, match):
    path = _rewrite(files[kind], tmp_path / "x.lf", edit)
    with pytest.raises(ModelFileError, match=match):
        latentfit.load(path)


def test_a_vae_loaded_by_latentfit_load_computes_what_it_saved(files):
    saved = latentfit.load(files["vae"])
    fresh = latentfit.vae.build_model(x_dim=2, z_dim=1, hidden=[3])  # same spec and seed
    z = torch.linspace(-2, 2, 5)[:, None]
    torch.testing.assert_close(saved.decode(z), fresh.decode(z), rtol=0, atol=0)
    assert saved.split is None


def test_the_vae_loader_names_a_file_of_another_kind(files):
    with pytest.raises(
        ModelFileError, match=r"holds a GaussianMixture, load it with latentfit\.load"
    ):
        latentfit.vae.load_model(files["mixture"])


def test_a_legacy_vae_file_with_a_split_is_read_with_its_split(tmp_path):
    from latentfit.vae.data import load_vae_data

    np.save(tmp_path / "x.npy", rng.random((20, 2)))
    split = load_vae_data(str(tmp_path / "x.npy"), seed=2).split
    model = latentfit.vae.build_model(x_dim=2, z_dim=1, hidden=[3])
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    for part in ("train", "val", "test"):
        tensors[f"split/{part}"] = getattr(split, part)
    info = {"source": split.source, "n_rows": 20, "data_sha256": split.data_sha256, "seed": 2}
    meta = {
        "format": "latentfit-vae/1",
        "spec": json.dumps(asdict(model.spec)),
        "split": json.dumps(info),
    }
    save_file(tensors, str(tmp_path / "old.lf"), metadata=meta)
    back = latentfit.load(tmp_path / "old.lf")
    assert torch.equal(back.split.test, split.test) and back.split.seed == 2
    assert read_header(tmp_path / "old.lf")["split"] == info


def _flip(path, dst, edit):
    raw = bytearray(path.read_bytes())
    edit(raw, 8 + int.from_bytes(raw[:8], "little"))  # the offset of the tensors' bytes
    dst.write_bytes(raw)
    return dst


@pytest.mark.parametrize("kind", ["mixture", "hmm", "factor", "density", "vae"])
def test_a_bit_flipped_in_the_tensors_is_refused(files, tmp_path, kind):
    # before: the file loaded, its first parameter one unit in the last place away from the
    # saved one (and any bit of any tensor alike: the exponent's too)
    def edit(raw, start):
        raw[start] ^= 1

    path = _flip(files[kind], tmp_path / "x.lf", edit)
    for load in (latentfit.load, read_header) + ((latentfit.vae.load_model,) * (kind == "vae")):
        with pytest.raises(ModelFileError, match="do not match the SHA-256 checksum") as err:
            load(path)
        assert str(path) in str(err.value)


def test_swapped_column_names_in_the_header_are_refused(files, tmp_path):
    # before: the model loaded with feature_names_in_ ['b', 'a'] (extra's copy of the names),
    # and `latentfit predict` took a file's columns in that order: rows labelled by the
    # swapped columns, without a word
    def edit(raw, start):
        i = raw.rindex(b'[\\"a\\", \\"b\\"]')
        raw[i : i + 14] = b'[\\"b\\", \\"a\\"]'

    path = _flip(files["mixture"], tmp_path / "x.lf", edit)
    with pytest.raises(ModelFileError, match="its tensors or header changed after it was"):
        latentfit.load(path)


def test_a_file_without_a_checksum_loads_and_one_with_unknown_metadata_is_refused(files, tmp_path):
    # files written before latentfit stored the checksum have none: still read
    with safe_open(str(files["mixture"]), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert set(meta) == {"latentfit", "sha256"}
    save_file(tensors, str(tmp_path / "old.lf"), metadata={"latentfit": meta["latentfit"]})
    saved, old = latentfit.load(files["mixture"]), latentfit.load(tmp_path / "old.lf")
    np.testing.assert_array_equal(saved.predict_proba(FRAME), old.predict_proba(FRAME))
    # the checksum's key altered (a flipped byte of its name) is not taken for an old file
    meta["sha257"] = meta.pop("sha256")
    save_file(tensors, str(tmp_path / "renamed.lf"), metadata=meta)
    with pytest.raises(ModelFileError, match=r"metadata holds \['sha257'\]"):
        latentfit.load(tmp_path / "renamed.lf")
