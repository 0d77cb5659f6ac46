"""The stored train/validation/test split, and model files checked before use."""

import json
import subprocess
import sys
import textwrap
from itertools import pairwise

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import latentfit
import latentfit.train
import latentfit.vae
from latentfit.cli import app
from latentfit.errors import DataError, ModelFileError, ParameterError, ResourceLimitError
from latentfit.vae import build_model, load_model, save_model
from latentfit.vae.data import load_vae_data

runner = CliRunner()
FIT = ["fit", "vae", "--dataset", "digits", "--epochs", "1", "--latent", "3", "--hidden", "8"]


def digits():
    """scikit-learn's digits as the VAE loader should see them, read independently."""
    return torch.from_numpy(load_digits().data).float() / 16.0


def test_eval_scores_exactly_the_stored_test_rows(tmp_path, monkeypatch):
    seen = {}
    real_train, real_ll = latentfit.train.train, latentfit.vae.marginal_log_likelihood

    def spy_train(model, objective, X_train, X_val, cfg):
        seen["train"], seen["val"] = X_train, X_val
        return real_train(model, objective, X_train, X_val, cfg)

    def spy_ll(model, X, **kw):
        seen["scored"] = X
        return real_ll(model, X, **kw)

    monkeypatch.setattr(latentfit.train, "train", spy_train)
    monkeypatch.setattr(latentfit.vae, "marginal_log_likelihood", spy_ll)
    out = tmp_path / "m.safetensors"
    res = runner.invoke(app, [*FIT, "--seed", "5", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    # a plain eval (its --seed is 0; the data named by the model file) after a fit with --seed 5
    res = runner.invoke(app, ["eval", str(out), "--samples", "2", "--no-binarize"])
    assert res.exit_code == 0, res.output

    split = load_model(out).split
    X = digits()
    train, val, test = (set(getattr(split, s).tolist()) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == X.shape[0] == split.n_rows
    assert torch.equal(seen["train"], X[split.train])
    assert torch.equal(seen["val"], X[split.val])  # early stopping saw validation rows only
    assert torch.equal(seen["scored"], X[split.test])  # eval scored the held-out rows only
    assert f"{len(test)} test points" in res.output


def test_loader_splits_are_disjoint_and_reproducible(tmp_path):
    for source in ("mnist", "digits"):
        d = load_vae_data(source, seed=3)
        parts = [set(getattr(d.split, s).tolist()) for s in ("train", "val", "test")]
        assert sum(map(len, parts)) == len(set().union(*parts)) == d.split.n_rows
        again = load_vae_data(source, seed=99, split=d.split)  # the split wins over the seed
        assert torch.equal(again.test, d.test) and torch.equal(again.val, d.val)
    other = tmp_path / "x.npy"
    np.save(other, np.random.default_rng(0).random((1797, 64)))
    with pytest.raises(DataError, match="other data"):
        load_vae_data(str(other), split=load_vae_data("digits").split)


def test_eval_refuses_other_data_and_models_without_a_split(tmp_path):
    out = tmp_path / "m.safetensors"
    assert runner.invoke(app, [*FIT, "--quiet", "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["eval", str(out), "--dataset", "mnist", "--samples", "2"])
    assert res.exit_code == 2 and "other data" in res.output
    bare = save_model(build_model(x_dim=64, z_dim=3, hidden=[8]), tmp_path / "bare.safetensors")
    res = runner.invoke(app, ["eval", str(bare), "--dataset", "digits", "--samples", "2"])
    assert res.exit_code == 2 and "--all-rows" in res.output
    rows = tmp_path / "held_out.npy"
    np.save(rows, digits()[:7].numpy())
    res = runner.invoke(
        app, ["eval", str(bare), "--dataset", str(rows), "--samples", "2", "--all-rows"]
    )
    assert res.exit_code == 0 and "7 test points" in res.output


def _rewrite(path, meta=None, tensors=None):
    """Rewrite a model file with changed metadata and/or tensors. ``meta["spec"]`` (JSON text)
    replaces the spec, the header's ``params``: text that is not JSON makes the header invalid
    JSON; ``meta["format"]`` replaces the whole header by that foreign format tag."""
    with safe_open(str(path), framework="pt") as f:
        old_meta = f.metadata()
        old = {k: f.get_tensor(k) for k in f.keys()}
    # without the checksum latentfit writes, as a crafted file would be: the checks behind it
    new_meta = {k: v for k, v in old_meta.items() if k != "sha256"}
    meta = dict(meta or {})
    if "format" in meta:
        new_meta = {"format": meta.pop("format")}
    if "spec" in meta:
        text = meta.pop("spec")
        header = json.loads(old_meta["latentfit"])
        try:
            header["params"] = json.loads(text)
            new_meta["latentfit"] = json.dumps(header)
        except json.JSONDecodeError:
            new_meta["latentfit"] = json.dumps(header)[:-1] + ', "params": ' + text
    save_file({**old, **(tensors or {})}, str(path), new_meta)


def _spec(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["latentfit"])["params"]


@pytest.fixture
def model_file(tmp_path):
    model = build_model(x_dim=16, z_dim=3, hidden=[8])
    model.split = load_vae_data(str(_array(tmp_path)), seed=1).split
    return save_model(model, tmp_path / "m.safetensors")


def _array(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((30, 16)))
    return path


@pytest.mark.parametrize(
    ("how", "named"),
    [
        ("truncated", "not a latentfit VAE file"),
        ("random bytes", "not a latentfit VAE file"),
        ("spec not JSON", "not valid JSON"),
        ("spec wrong type", "hidden='8'"),
        ("spec out of range", "z_dim=-3"),
        ("spec unknown field", "unknown field 'evil'"),
        ("spec not an object", "not a JSON object"),
        ("spec does not match tensors", "encoder.body.0.weight"),
        ("missing tensor", "missing"),
        ("non-finite weights", "NaN or infinite"),
        ("overlapping split", "overlap"),
        ("split out of range", "not row numbers"),
        ("another format", "format 'other'"),
    ],
)
def test_damaged_model_files_raise_model_file_error(model_file, how, named):
    spec = _spec(model_file)
    if how == "truncated":
        model_file.write_bytes(model_file.read_bytes()[:300])
    elif how == "random bytes":
        model_file.write_bytes(np.random.default_rng(0).bytes(3000))
    elif how == "spec not JSON":
        _rewrite(model_file, {"spec": '{"x_dim": 16,'})
    elif how == "spec wrong type":
        _rewrite(model_file, {"spec": json.dumps({**spec, "hidden": "8"})})
    elif how == "spec out of range":
        _rewrite(model_file, {"spec": json.dumps({**spec, "z_dim": -3})})
    elif how == "spec unknown field":
        _rewrite(model_file, {"spec": json.dumps({**spec, "evil": 1})})
    elif how == "spec not an object":
        _rewrite(model_file, {"spec": "[1, 2]"})
    elif how == "spec does not match tensors":
        _rewrite(model_file, {"spec": json.dumps({**spec, "hidden": [9]})})
    elif how == "missing tensor":
        with safe_open(str(model_file), framework="pt") as f:
            meta, kept = f.metadata(), {k: f.get_tensor(k) for k in list(f.keys())[1:]}
        save_file(kept, str(model_file), {"latentfit": meta["latentfit"]})
    elif how == "non-finite weights":
        _rewrite(model_file, tensors={"encoder.body.0.weight": torch.full((8, 16), float("nan"))})
    elif how == "overlapping split":
        _rewrite(model_file, tensors={"split/val": torch.tensor([0, 1, 2])})
    elif how == "split out of range":
        _rewrite(model_file, tensors={"split/test": torch.tensor([10**6])})
    elif how == "another format":
        _rewrite(model_file, {"format": "other"})
    with pytest.raises(ModelFileError, match=named) as err:
        load_model(model_file)
    assert str(model_file) in str(err.value)
    for command in (["eval", str(model_file), "--dataset", "digits"], ["sample", str(model_file)]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("key", ["flow.0.l1.mask", "flow.1.l_m.mask"])
def test_iaf_masks_other_than_the_spec_builds_are_refused(tmp_path, key):
    # the IAF steps' masks follow from z_dim and the step's order: before, an all-ones mask
    # (each z_j then depends on itself, so log q is no longer a density) loaded silently
    model = build_model(x_dim=16, z_dim=3, hidden=[8], flow="iaf", flow_steps=2)
    path = save_model(model, tmp_path / "iaf.safetensors")
    _rewrite(path, tensors={key: torch.ones_like(model.state_dict()[key])})
    for load in (load_model, latentfit.load):
        with pytest.raises(ModelFileError, match=rf"'{key}' \(the mask of the MaskedLinear") as err:
            load(path)
        assert "is not the mask that the settings of the VAE of this spec" in str(err.value)
        assert str(path) in str(err.value)


def test_an_intact_iaf_file_loads_and_scores_the_same(tmp_path):
    model = build_model(x_dim=16, z_dim=3, hidden=[8], flow="iaf", flow_steps=2)
    back = latentfit.load(save_model(model, tmp_path / "iaf.safetensors"))
    X = torch.rand(5, 16, generator=torch.Generator().manual_seed(0))
    a, b = (
        latentfit.vae.marginal_log_likelihood(m, X, k=8, generator=torch.Generator().manual_seed(1))
        for m in (model, back)
    )
    assert torch.equal(a.log_px, b.log_px)


def test_a_float64_model_loads_in_float64_bit_for_bit(tmp_path, monkeypatch):
    # before, load_model built every VAE in float32 and cast a float64 file's weights to it:
    # the loaded model's weights were off by up to 1.4e-8 and its scores in the 7th digit
    monkeypatch.chdir(tmp_path)
    G = torch.Generator().manual_seed(0)
    model = build_model(
        x_dim=16, z_dim=3, hidden=[8], flow="iaf", flow_steps=2, likelihood="gaussian"
    ).double()
    with torch.no_grad():  # weights no float32 holds
        for p in model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, dtype=p.dtype, generator=G))
    path = save_model(model, tmp_path / "m64.safetensors")
    X = torch.rand(5, 16, generator=G, dtype=torch.float64)
    for back in (load_model(path), latentfit.load(path)):
        state = back.state_dict()
        for name, value in model.state_dict().items():
            assert state[name].dtype == torch.float64 and torch.equal(state[name], value), name
        a, b = (
            latentfit.vae.marginal_log_likelihood(
                m, X, k=8, generator=torch.Generator().manual_seed(1)
            )
            for m in (model, back)
        )
        assert torch.equal(a.log_px, b.log_px)
    # a float32 file still loads in float32
    model32 = build_model(x_dim=16, z_dim=3, hidden=[8])
    back32 = load_model(save_model(model32, tmp_path / "m32.safetensors"))
    assert {v.dtype for v in back32.state_dict().values()} == {torch.float32}
    # the commands that read a model file take it in float64: predict writes the posterior
    # means of the float64 model (17 significant digits), score and sample run
    np.savetxt("x.csv", X.numpy(), delimiter=",")
    res = runner.invoke(app, ["predict", str(path), "x.csv", "--out", "z.csv"])
    assert res.exit_code == 0, res.output
    with torch.no_grad():
        want = model.posterior_mean(X, generator=torch.Generator().manual_seed(0)).numpy()
    got = np.loadtxt("z.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    for command in (
        ["score", str(path), "x.csv", "--samples", "4"],
        ["sample", str(path), "--n", "3", "--out", "s.csv"],
    ):
        res = runner.invoke(app, command)
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize("how", ["F16", "BF16", "mixed"])
def test_weights_in_half_precision_or_in_two_dtypes_are_refused_naming_the_tensor(tmp_path, how):
    # before, they were cast to float32 silently: a model saved in half precision came back
    # as another model than the file said
    model = build_model(x_dim=16, z_dim=3, hidden=[8])
    path = save_model(model, tmp_path / "m.safetensors")
    name = "decoder.body.0.bias"
    dtype = {"F16": torch.float16, "BF16": torch.bfloat16, "mixed": torch.float64}[how]
    _rewrite(path, tensors={name: model.state_dict()[name].to(dtype)})
    code = how if how != "mixed" else "F64"
    words = "float32 (F32) or float64 (F64)" if how != "mixed" else "share one dtype"
    for load in (load_model, latentfit.load):
        with pytest.raises(ModelFileError, match=rf"'{name}' is {code}") as err:
            load(path)
        assert words in str(err.value) and str(path) in str(err.value)
    res = runner.invoke(app, ["sample", str(path)])
    assert res.exit_code == 2 and "error:" in res.output and name in res.output


def test_a_non_vae_latentfit_file_is_named(tmp_path):
    from latentfit import GaussianMixture

    path = tmp_path / "g.lf"
    GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(40, 2))).save(path)
    with pytest.raises(ModelFileError, match="GaussianMixture"):
        load_model(path)


def _mlp_vae_params(d, hidden, z):
    """Parameters of the Gaussian MLP VAE with Bernoulli pixels, counted by hand."""
    sizes = [d, *hidden]
    enc = sum(a * b + b for a, b in pairwise(sizes)) + hidden[-1] * 2 * z + 2 * z
    dec_sizes = [z, *hidden[::-1], d]
    dec = sum(a * b + b for a, b in pairwise(dec_sizes))
    return enc + dec


def test_parameter_count_from_the_spec_matches_a_built_model():
    from latentfit.vae.build import ModelSpec, _expected_tensors

    spec = ModelSpec(x_dim=20, z_dim=3, hidden=[7, 5])
    n = sum(int(np.prod(s)) for s, _ in _expected_tensors(spec).values())
    assert n == _mlp_vae_params(20, [7, 5], 3)
    assert n == sum(p.numel() for p in build_model(spec).parameters())


def test_a_huge_spec_is_refused_before_allocating(model_file, tmp_path):
    """hidden=[10**6, 10**6] would need terabytes: refused with the size, under an address-space
    limit that any allocation of the weights would exceed."""
    spec = _spec(model_file)
    _rewrite(model_file, {"spec": json.dumps({**spec, "hidden": [10**6, 10**6]})})
    script = textwrap.dedent(
        f"""
        import resource, sys
        import torch
        from latentfit.errors import ResourceLimitError
        from latentfit.vae import load_model
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 1 << 30, resource.RLIM_INFINITY))
        try:
            load_model({str(model_file)!r})
        except ResourceLimitError as err:
            print("REFUSED", err)
            sys.exit(0)
        sys.exit(1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    need = 2 * 4 * _mlp_vae_params(16, [10**6, 10**6], 3)
    assert f"needs {need:,} bytes" in proc.stdout and str(model_file) in proc.stdout
    with pytest.raises(ResourceLimitError):  # a MemoryError too
        load_model(model_file)
    res = runner.invoke(app, ["sample", str(model_file)])
    assert res.exit_code == 2 and f"{need:,} bytes" in res.output


def test_marginal_likelihood_names_wrong_columns_and_non_finite_rows():
    model = build_model(x_dim=16, z_dim=3, hidden=[8])
    with pytest.raises(DataError, match="expects 16 columns, X has 5"):
        latentfit.vae.marginal_log_likelihood(model, torch.rand(4, 5), k=2)
    X = torch.rand(4, 16)
    X[2, 7] = float("nan")
    with pytest.raises(DataError, match="row 2, column 7"):
        latentfit.vae.marginal_log_likelihood(model, X, k=2)


def test_an_unknown_device_is_named(model_file):
    with pytest.raises(ParameterError, match="device='nonsense'"):
        load_model(model_file, device="nonsense")


def test_cli_resume_with_other_settings_is_refused(tmp_path):
    ck = tmp_path / "ck"
    args = [*FIT, "--quiet", "--checkpoint-dir", str(ck), "--out", str(tmp_path / "a.lf")]
    assert runner.invoke(app, args).exit_code == 0
    args.append("--force")  # the resumed run replaces --out, so the output check passes
    res = runner.invoke(app, [*args, "--epochs", "2", "--lr", "1e-12", "--objective", "iwae"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    # in the command line's options and values, not the trainer's names (lr, ELBO(...))
    text = " ".join(res.output.split())
    assert "--lr 0.001 in the checkpoint, --lr 1e-12 now" in text, text
    assert "--objective elbo in the checkpoint, --objective iwae now" in text, text
    (ck / "last.pt").write_bytes(b"\x00" * 100)
    res = runner.invoke(app, [*args, "--epochs", "2"])
    assert res.exit_code == 2 and "cannot be read" in res.output


def test_fit_and_eval_take_the_delimiter_of_a_text_file(tmp_path):
    X = digits()[:120].double().numpy()
    npy, txt = tmp_path / "d.npy", tmp_path / "d.txt"
    np.save(npy, X)
    np.savetxt(txt, X, delimiter="|", fmt="%.17g")
    outs = {}
    for path, extra in ((npy, []), (txt, ["--delimiter", "pipe"])):
        out = tmp_path / f"{path.suffix[1:]}.safetensors"
        base = ["--dataset", str(path), "--no-binarize", "--likelihood", "gaussian"]
        res = runner.invoke(app, [*FIT[:2], *base, *FIT[4:], *extra, "--quiet", "--out", str(out)])
        assert res.exit_code == 0, res.output
        res = runner.invoke(
            app, ["eval", str(out), "--dataset", str(path), *extra, "--samples", "4", "--json"]
        )
        assert res.exit_code == 0, res.output
        outs[path.suffix] = json.loads(res.stdout)
    # the same rows, the same split, the same numbers: the file's format does not matter
    assert outs[".txt"]["nll"] == outs[".npy"]["nll"]
    res = runner.invoke(app, [*FIT[:2], "--dataset", str(txt), "--delimiter", "ab"])
    assert res.exit_code == 2 and "not one character" in res.output


def test_eval_reads_the_test_rows_as_the_fit_did(tmp_path, monkeypatch):
    # found by a helper's hunt: eval binarised the test rows of a model fitted with
    # --no-binarize (the file did not say), so fit and eval reported different test
    # log-likelihoods for the same model
    seen = []
    real_ll = latentfit.vae.marginal_log_likelihood

    def spy_ll(model, X, **kw):
        seen.append(X)
        return real_ll(model, X, **kw)

    monkeypatch.setattr(latentfit.vae, "marginal_log_likelihood", spy_ll)
    out = tmp_path / "m.safetensors"
    res = runner.invoke(app, [*FIT, "--no-binarize", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert load_model(out).split.binarized is False
    res = runner.invoke(app, ["eval", str(out), "--samples", "2"])
    assert res.exit_code == 0, res.output
    X = digits()[load_model(out).split.test]
    assert torch.equal(seen[-1], X)  # the intensities, as trained
    res = runner.invoke(app, ["eval", str(out), "--samples", "2", "--binarize"])  # asked for
    assert res.exit_code == 0, res.output
    assert set(seen[-1].unique().tolist()) <= {0.0, 1.0}
    # a model fitted with binarisation is evaluated on binarised rows, as before
    res = runner.invoke(app, [*FIT, "--quiet", "--out", str(tmp_path / "b.safetensors")])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "b.safetensors").split.binarized is True
    res = runner.invoke(app, ["eval", str(tmp_path / "b.safetensors"), "--samples", "2"])
    assert res.exit_code == 0, res.output
    assert set(seen[-1].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (dict(activation="relu"), "activation"),  # was rebuilt as tanh: other scores
        (dict(likelihood="gaussian", gaussian_variance="fixed"), "likelihood"),  # as Bernoulli
        (dict(kind="discrete", n_categories=3, temperature=0.5), "temperature"),
        (dict(), "seed"),
    ],
)
@pytest.mark.parametrize("legacy", [False, True], ids=["file", "latentfit-vae/1 file"])
def test_a_spec_lacking_a_setting_is_refused_naming_it(tmp_path, spec, field, legacy):
    # every field of the spec is written since the first format; one missing was rebuilt at
    # its default beside the stored weights, and the VAE loaded silently as another model
    model = build_model(x_dim=4, z_dim=2, hidden=[3], **spec)
    path = save_model(model, tmp_path / "m.lf")
    stored = _spec(path)
    del stored[field]
    if legacy:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file(tensors, str(path), {"format": "latentfit-vae/1", "spec": json.dumps(stored)})
    else:
        _rewrite(path, {"spec": json.dumps(stored)})
    with pytest.raises(ModelFileError, match=rf"lacks the VAE setting\(s\) \['{field}'\]") as err:
        latentfit.load(path)
    assert str(err.value).startswith(f"{path}: ")


def _edit_split(path, edit_record=None, edit_tensors=None):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["latentfit"])
    if edit_record:
        edit_record(header)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(path), {"latentfit": json.dumps(header)})


@pytest.mark.parametrize(
    ("record", "tensors", "named"),
    [
        *[
            (lambda h, k=k: h["split"].pop(k), None, rf"lacks 'split\.{k}'")
            for k in ("source", "n_rows", "data_sha256", "seed")
        ],
        (lambda h: h["split"].update(n_rows="30"), None, r"'split\.n_rows' must be an integer"),
        (lambda h: h["split"].update(seed=1.5), None, r"'split\.seed' must be an integer"),
        (lambda h: h["split"].update(source=None), None, r"'split\.source' must be a string"),
        (lambda h: h["split"].update(data_sha256=3), None, r"'split\.data_sha256' must be a"),
        (lambda h: h["split"].update(binarized="yes"), None, r"'split\.binarized' must be true"),
        (lambda h: h["split"].update(rows=[1]), None, r"holds \['rows'\]"),
        (None, lambda t: t.pop("split/val"), r"lacks its tensor 'split/val'"),
        (None, lambda t: t.update({"split/all": t["split/val"].clone()}), r"holds \['split/all'\]"),
        (lambda h: h.pop("split"), None, r"has no 'split' record"),
    ],
)
def test_a_split_record_lacking_a_field_or_of_the_wrong_type_is_refused_naming_it(
    model_file, record, tensors, named
):
    # before: "the stored train/validation/test split is damaged (KeyError('source'))" or
    # "(AssertionError())"; run with python -O the checks were gone: a raw TypeError, or a
    # split of source "None" loaded. Rows without a record of their data loaded ignored.
    _edit_split(model_file, record, tensors)
    with pytest.raises(ModelFileError, match=named) as err:
        latentfit.load(model_file)
    assert str(err.value).startswith(f"{model_file}: ") and "Error(" not in str(err.value)


def test_tensors_that_do_not_fit_the_spec_are_each_named_with_their_shapes(model_file):
    # before: the missing tensor alone was named, and of shapes only the first that differed
    with safe_open(str(model_file), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    del tensors["decoder.body.0.bias"]
    tensors["encoder.body.0.weight"] = torch.zeros(8, 17)
    tensors["encoder.head.weight"] = torch.zeros(7, 8)
    save_file(tensors, str(model_file), {"latentfit": meta["latentfit"]})
    with pytest.raises(ModelFileError) as err:
        load_model(model_file)
    text = str(err.value)
    assert "the file is missing 'decoder.body.0.bias'" in text
    assert "'encoder.body.0.weight' has shape (8, 17) where (8, 16) is expected" in text
    assert "'encoder.head.weight' has shape (7, 8) where (6, 8) is expected" in text


def _overflowing_vae(tmp_path, key, value, dtype=torch.float32):
    """A Gaussian VAE (x_dim 3) whose weight ``key`` has ``value`` as its first entry, saved
    in ``dtype`` and read back, and the path of its file."""
    model = build_model(x_dim=3, z_dim=2, hidden=[8], likelihood="gaussian").to(dtype)
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] = value
    path = save_model(model, tmp_path / "big.safetensors")
    return load_model(path), path


@pytest.mark.parametrize(
    ("key", "dtype", "value"),
    [
        ("decoder.body.2.weight", torch.float32, 3e38),
        ("encoder.head.weight", torch.float32, 3e38),
        ("decoder.body.2.weight", torch.float64, 1e300),
    ],
)
def test_a_weight_whose_log_density_overflows_is_refused_naming_the_layer(
    tmp_path, monkeypatch, key, dtype, value
):
    # before: latentfit score printed "total log-likelihood -inf" and exited 0
    model, path = _overflowing_vae(tmp_path, key, value, dtype)
    X = np.random.default_rng(0).normal(size=(20, 3))
    layer, name = key.rsplit(".", 1)[0], str(dtype).removeprefix("torch.")
    with pytest.raises(ParameterError, match=f"exceeds {name}") as err:
        latentfit.vae.marginal_log_likelihood(model, X, k=4)
    assert f"the layer {layer!r} (Linear, largest weight {value:.3g}" in str(err.value)
    assert "X has log p(x) = -inf at row 0 under the VAE (20 of the 20 rows: 0, 1, 2" in str(
        err.value
    )
    if dtype == torch.float32:  # the same weights in float64: finite, the model's value
        exact = latentfit.vae.marginal_log_likelihood(model.double(), X, k=4).log_px
        assert bool(torch.isfinite(exact).all())
    monkeypatch.chdir(tmp_path)
    np.savetxt("x.csv", X, delimiter=",")
    res = runner.invoke(app, ["score", str(path), "x.csv"])
    assert res.exit_code == 2 and res.output.startswith("error: x.csv has log p(x) = -inf")
    assert layer in res.output


def test_decoded_means_beyond_float32_are_refused_not_written_as_inf(tmp_path, monkeypatch):
    # before: a float64 VAE with a decoder weight of 1e300 wrote draws of inf and -inf
    from latentfit.vae.images import sample_images

    model, path = _overflowing_vae(tmp_path, "decoder.body.2.weight", 1e300, torch.float64)
    with pytest.raises(ParameterError, match="exceed float32, in which draws are written"):
        sample_images(model, 5, torch.Generator().manual_seed(0))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["sample", str(path), "-n", "5", "--out", "s.csv"])
    assert res.exit_code == 2 and "'decoder.body.2'" in res.output
    assert not (tmp_path / "s.csv").exists()
