"""latentfit predict / score / show / sample on saved models of every kind (issue 14): what the
commands give from a model file equals what the fitted model gives in memory (same seed)."""

import copy
import json
import os
import subprocess
import sys
import warnings
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app
from latentfit.cli.models import command_kind as model_kind

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"
rng = np.random.default_rng(0)
X2 = np.vstack([rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))])  # (80, 2)
COUNTS = rng.poisson(np.repeat([[1.0, 4.0, 2.0], [6.0, 1.0, 3.0]], 40, axis=0)).astype(float)
BINARY = (rng.random((80, 5)) < np.repeat([[0.2], [0.8]], 40, axis=0)).astype(float)
SYMBOLS = np.concatenate([rng.integers(0, 2, 40), rng.integers(2, 4, 40)])[:, None].astype(float)
CATEGORIES = np.column_stack([rng.integers(0, 3, 80), rng.integers(0, 2, 80)]).astype(float)
LENGTHS = [30, 50]


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few iterations on small data: convergence warnings
        return fn()


def _flow(cls):
    return cls(n_layers=2, hidden=8, epochs=2, batch_size=40, random_state=0).fit(X2)


#: kind name → (fit a model, the data it was fitted on, whether the rows are sequences).
MODELS = {
    "GaussianMixture": (lambda: latentfit.GaussianMixture(2, random_state=0).fit(X2), X2),
    "BayesianGaussianMixture": (
        lambda: latentfit.BayesianGaussianMixture(n_components=3, random_state=0).fit(X2),
        X2,
    ),
    "MixtureModel": (lambda: latentfit.MixtureModel("normal", 2, random_state=0).fit(X2), X2),
    "PoissonMixture": (lambda: latentfit.PoissonMixture(2, random_state=0).fit(COUNTS), COUNTS),
    "BernoulliMixture": (
        lambda: latentfit.BernoulliMixture(2, random_state=0).fit(BINARY),
        BINARY,
    ),
    "MultinomialMixture": (
        lambda: latentfit.MultinomialMixture(2, random_state=0).fit(COUNTS),
        COUNTS,
    ),
    "CategoricalMixture": (
        lambda: latentfit.CategoricalMixture(2, random_state=0).fit(CATEGORIES),
        CATEGORIES,
    ),
    "FactorAnalysis": (lambda: latentfit.FactorAnalysis(1, random_state=0).fit(X2), X2),
    "PPCA": (lambda: latentfit.PPCA(1, random_state=0).fit(X2), X2),
    "GaussianHMM": (lambda: latentfit.GaussianHMM(2, random_state=0).fit(X2, LENGTHS), X2),
    "GMMHMM": (lambda: latentfit.GMMHMM(2, n_mix=2, random_state=0).fit(X2, LENGTHS), X2),
    "CategoricalHMM": (
        lambda: latentfit.CategoricalHMM(2, random_state=0).fit(SYMBOLS.astype(int), LENGTHS),
        SYMBOLS,
    ),
    "PoissonHMM": (
        lambda: latentfit.PoissonHMM(2, random_state=0).fit(COUNTS.astype(int), LENGTHS),
        COUNTS,
    ),
    "VariationalGaussianHMM": (
        lambda: latentfit.VariationalGaussianHMM(2, random_state=0).fit(X2, LENGTHS),
        X2,
    ),
    "VariationalCategoricalHMM": (
        lambda: latentfit.VariationalCategoricalHMM(2, random_state=0).fit(
            SYMBOLS.astype(int), LENGTHS
        ),
        SYMBOLS,
    ),
    "GaussianHSMM": (
        lambda: latentfit.GaussianHSMM(2, max_duration=8, random_state=0).fit(X2, LENGTHS),
        X2,
    ),
    "PoissonHSMM": (
        lambda: latentfit.PoissonHSMM(
            2, max_duration=6, duration="negative_binomial", right_censoring=False, random_state=0
        ).fit(COUNTS.astype(int), LENGTHS),
        COUNTS,
    ),
    "CategoricalHSMM": (
        lambda: latentfit.CategoricalHSMM(
            2, max_duration=5, duration="nonparametric", random_state=0
        ).fit(SYMBOLS.astype(int), LENGTHS),
        SYMBOLS,
    ),
    "AutoregressiveHMM": (
        lambda: latentfit.AutoregressiveHMM(2, order=2, random_state=0).fit(X2, LENGTHS),
        X2,
    ),
    "LinearGaussianSSM": (
        lambda: latentfit.LinearGaussianSSM(1, random_state=0).fit(X2, LENGTHS),
        X2,
    ),
    "MAF": (lambda: _flow(latentfit.MAF), X2),
    "RealNVP": (lambda: _flow(latentfit.RealNVP), X2),
    "NeuralSplineFlow": (lambda: _flow(latentfit.NeuralSplineFlow), X2),
    "DDPM": (
        lambda: latentfit.DDPM(
            20,
            hidden=16,
            n_hidden=1,
            time_dim=8,
            discrete=False,
            eval_timesteps=5,
            epochs=1,
            batch_size=40,
            random_state=0,
        ).fit(X2),
        X2,
    ),
    "VAE": (lambda: latentfit.vae.build_model(x_dim=5, z_dim=2, hidden=[6], seed=1), BINARY),
    "DiscreteVAE": (
        lambda: latentfit.vae.build_model(
            x_dim=5, z_dim=2, hidden=[6], kind="discrete", n_categories=3, seed=1
        ),
        BINARY,
    ),
    "LadderVAE": (
        lambda: latentfit.vae.build_model(
            x_dim=5, z_dim=2, z2_dim=2, hidden=[6], hidden2=[4], kind="ladder", seed=1
        ),
        BINARY,
    ),
}


@pytest.fixture(scope="module", params=list(MODELS))
def saved(request, tmp_path_factory):
    """(model in memory, model file, data file, data, lengths file or None, kind)."""
    name = request.param
    fit, X = MODELS[name]
    model = _quiet(fit)
    assert type(model).__name__ == name
    folder = tmp_path_factory.mktemp(name)
    path = latentfit.save(model, folder / "model.lf")
    data = folder / "data.csv"
    np.savetxt(data, X, delimiter=",", fmt="%.17g")
    kind = model_kind(model)
    lengths = None
    if kind in SEQUENCES:
        lengths = folder / "lengths.txt"
        lengths.write_text("\n".join(map(str, LENGTHS)))
    return model, path, data, X, lengths, kind


#: The kinds whose data are sequences (cut by LENGTHS).
SEQUENCES = ("hmm", "ssm")


def _invoke(args):
    res = runner.invoke(app, [str(a) for a in args])
    return res


def _json(args):
    res = _invoke([*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _rows(model, X):
    symbols = ("CategoricalHMM", "VariationalCategoricalHMM", "CategoricalHSMM")
    if type(model).__name__ in (*symbols, "PoissonHMM", "PoissonHSMM"):
        return X.astype(np.int64)
    if model_kind(model) == "vae":
        return torch.as_tensor(X, dtype=torch.float32)
    return X


def _seq_args(lengths):
    return [] if lengths is None else ["--lengths", lengths]


def test_predict_from_the_file_equals_the_model_in_memory(saved):
    model, path, data, X, lengths, kind = saved
    args = ["predict", path, data, *_seq_args(lengths)]
    rows = _rows(model, X)
    if kind == "density":
        res = _invoke(args)
        assert res.exit_code == 2 and "no hidden variable" in res.output
        return
    got = _json(args)
    if kind in ("mixture", "hmm"):
        want = model.predict(rows, LENGTHS) if kind == "hmm" else model.predict(rows)
        np.testing.assert_array_equal(got["values"], want)
        proba = _json([*args, "--proba"])
        want = model.predict_proba(rows, LENGTHS) if kind == "hmm" else model.predict_proba(rows)
        np.testing.assert_allclose(proba["values"], want, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(np.sum(proba["values"], 1), 1.0, rtol=1e-9)
        return
    if kind == "factor":
        want = model.transform(rows)
    elif kind == "ssm":
        want = model.smooth(rows, LENGTHS)[0]  # the smoothed state means
    else:
        with torch.no_grad():
            want = model.posterior_mean(rows, generator=torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(got["values"], want, rtol=1e-6)
    res = _invoke([*args, "--proba"])
    assert res.exit_code == 2 and "continuous latent" in res.output


def test_the_table_written_by_predict_reads_back_exactly(saved, tmp_path):
    model, path, data, X, lengths, kind = saved
    if kind not in ("mixture", "hmm"):
        return
    out = tmp_path / "p.csv"
    res = _invoke(["predict", path, data, *_seq_args(lengths), "--proba", "--out", out])
    assert res.exit_code == 0, res.output
    rows = _rows(model, X)
    want = model.predict_proba(rows, LENGTHS) if kind == "hmm" else model.predict_proba(rows)
    back = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_array_equal(back, want)  # floats written in full
    res = _invoke(["predict", path, data, *_seq_args(lengths), "--out", out])
    assert res.exit_code == 2 and "--force" in res.output


def test_score_from_the_file_equals_the_model_in_memory(saved, tmp_path):
    model, path, data, X, lengths, kind = saved
    per_row = tmp_path / "ll.csv"
    got = _json(["score", path, data, *_seq_args(lengths), "--per-row", per_row, "--samples", "7"])
    rows = _rows(model, X)
    if kind in SEQUENCES:
        starts = np.cumsum([0, *LENGTHS])
        # each sequence scored alone, independently of the per-step normalisers
        seqs = [model.score(rows[a:b]) for a, b in pairwise(starts)]
        np.testing.assert_allclose(got["sequence_log_likelihoods"], seqs, rtol=1e-9)
        step_sums = [np.sum(got["per_row"][a:b]) for a, b in pairwise(starts)]
        np.testing.assert_allclose(step_sums, seqs, rtol=1e-9)
        assert got["total"] == pytest.approx(model.score(rows, LENGTHS), rel=1e-9)
    else:
        if kind == "vae":
            want = latentfit.vae.marginal_log_likelihood(
                model, rows, k=7, generator=torch.Generator().manual_seed(0), progress=False
            ).log_px.numpy()
        else:
            want = model.score_samples(rows)
        np.testing.assert_allclose(got["per_row"], want, rtol=1e-9)
        assert got["total"] == pytest.approx(float(np.sum(want, dtype=np.float64)), rel=1e-12)
    assert got["n_rows"] == len(X) and got["mean"] == pytest.approx(got["total"] / len(X))
    np.testing.assert_array_equal(np.loadtxt(per_row, skiprows=1), got["per_row"])
    text = _invoke(["score", path, data, *_seq_args(lengths), "--samples", "7"])
    assert text.exit_code == 0 and f"{got['total']:.6f}" in text.output


def test_sample_refuses_draws_beyond_the_machine_naming_the_option(saved, tmp_path):
    _model, path, _data, _X, _lengths, _kind = saved
    res = _invoke(["sample", path, "-n", "100000000000", "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 2, res.output
    assert "-n 100,000,000,000 draws of" in res.output and "would need" in res.output
    assert (
        "a smaller -n" in res.output and "n_samples" not in res.output and " n=" not in res.output
    )
    assert not (tmp_path / "s.npy").exists()


def test_sample_names_the_option_where_the_model_sizes_its_own_draws(tmp_path, monkeypatch):
    # FactorAnalysis sizes a draw as x and z (2 d numbers), more than the d the command checks
    # first: its own refusal must name -n too, not its argument n_samples
    X = np.random.default_rng(0).normal(size=(30, 2))
    path = latentfit.save(latentfit.FactorAnalysis(n_components=1).fit(X), tmp_path / "fa.lf")
    free = 100_000  # bytes: 1,000 draws of d + 1 = 3 numbers pass (72,000), of 5 do not
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: free)
    res = _invoke(["sample", path, "-n", "1000", "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 2, res.output
    assert "-n 1,000 draws of 4 values" in res.output and "a smaller -n" in res.output
    assert "n_samples" not in res.output


def test_sample_from_the_file_equals_the_model_in_memory(saved):
    model, path, _data, _X, _lengths, kind = saved
    got = _json(["sample", path, "-n", "6", "--seed", "11"])
    if kind in SEQUENCES:  # an SSM's states are vectors
        want, states = model.sample(6, random_state=11)
        np.testing.assert_array_equal(got["states"], states)
    elif kind == "density":
        want = model.sample(6, random_state=11)
    elif kind == "vae":
        from latentfit.vae.images import sample_images

        want = sample_images(model, 6, torch.Generator().manual_seed(11)).numpy()
    else:
        want = copy.deepcopy(model).set_params(random_state=11).sample(6)
        if isinstance(want, tuple):
            want, labels = want
            np.testing.assert_array_equal(got["components"], labels)
    np.testing.assert_allclose(got["samples"], np.asarray(want).reshape(6, -1), rtol=1e-12)


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def test_show_json_parses_back_to_the_models_attributes(saved):
    model, path, _data, _X, _lengths, kind = saved
    got = _json(["show", path])
    assert got["class"] == type(model).__name__ and got["kind"] == kind
    assert got["latentfit_version"] == latentfit.__version__ and got["format_version"] == 1
    if kind == "vae":
        assert got["settings"] == asdict(model.spec)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert got["tensor_shapes"] == shapes
        assert got["n_parameters"] == sum(p.numel() for p in model.state_dict().values())
        return
    from latentfit.io import _jsonable

    loaded = latentfit.load(path)
    params = {k: _jsonable(v) for k, v in loaded.get_params(deep=False).items()}
    assert got["settings"] == _plain(params)
    header = latentfit.io.read_header(path)["params"]
    assert {k: v for k, v in got["settings"].items() if k != "n_features"} == {
        k: v for k, v in header.items() if k != "n_features"
    }  # an HMM sets n_features when it first reads data
    if kind == "density":
        assert set(got["tensor_shapes"]) == set(model._get_state()[0])
        return
    assert got["parameters"], "no parameters shown"
    for name, value in got["parameters"].items():
        np.testing.assert_allclose(value, np.asarray(getattr(model, name), dtype=float))
    expected = {
        "mixture": ["means_"] if hasattr(model, "means_") else [],
        "hmm": ["startprob_", "transmat_"],
        "ssm": ["transition_matrix_", "observation_matrix_", "observation_covariance_"],
        "factor": ["components_", "mean_", "noise_variance_"],
    }[kind]
    assert set(expected) <= set(got["parameters"])
    text = _invoke(["show", path])
    assert text.exit_code == 0 and type(model).__name__ in text.output


def test_show_prints_tables_with_the_columns_it_was_fitted_on(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(X2, columns=["eruptions", "waiting"])
    path = latentfit.GaussianMixture(2, random_state=0).fit(frame).save(tmp_path / "g.lf")
    got = _json(["show", path])
    assert got["feature_names"] == ["eruptions", "waiting"]
    text = _invoke(["show", path]).output
    means_block = text[text.index("  means_ (") :].splitlines()[1]
    assert means_block.split() == ["eruptions", "waiting"]


# ---------------------------------------------------------------------- the VAE file
def test_load_reads_a_vae_file_and_its_split(tmp_path):
    from latentfit.vae.data import load_vae_data

    np.save(tmp_path / "x.npy", rng.random((30, 5)))
    model = latentfit.vae.build_model(x_dim=5, z_dim=2, hidden=[6], seed=3)
    model.split = load_vae_data(str(tmp_path / "x.npy"), seed=1).split
    path = latentfit.vae.save_model(model, tmp_path / "v.lf")
    back = latentfit.load(path)
    assert type(back).__name__ == "VAE" and back.spec == model.spec
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(back.split, part), getattr(model.split, part))
    header = latentfit.io.read_header(path)
    assert header["kind"] == "vae" and header["split"]["n_rows"] == 30
    assert latentfit.save(back, tmp_path / "again.lf").exists()  # save() takes a VAE too


def test_a_vae_file_of_the_earlier_format_is_still_read(tmp_path):
    from safetensors.torch import save_file

    model = latentfit.vae.build_model(x_dim=5, z_dim=2, hidden=[6], seed=3)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "latentfit-vae/1", "spec": json.dumps(asdict(model.spec))}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    for back in (
        latentfit.load(tmp_path / "old.safetensors"),
        latentfit.vae.load_model(tmp_path / "old.safetensors"),
    ):
        z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(back.decode(z), model.decode(z), rtol=0, atol=0)
    got = _json(["show", tmp_path / "old.safetensors"])
    assert got["kind"] == "vae" and got["settings"] == asdict(model.spec)


def test_the_vae_sample_options_keep_working(tmp_path, monkeypatch):
    path = latentfit.save(
        latentfit.vae.build_model(x_dim=16, z_dim=2, hidden=[6], seed=3), tmp_path / "v.lf"
    )
    monkeypatch.chdir(tmp_path)
    res = _invoke(["sample", path, "--n", "4", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "samples.png").stat().st_size > 0  # the default of the VAE command
    res = _invoke(["sample", path, "--n", "4", "--out", "g.png", "--image-shape", "2,8"])
    assert res.exit_code == 0 and (tmp_path / "g.png").exists(), res.output
    res = _invoke(["sample", path, "--out", "h.png", "--image-shape", "3,3"])
    assert res.exit_code == 2 and "does not hold the model's 16 values" in res.output
    # one size, or three whose first is not 1, 3 or 4 channels, is not an image's shape
    for shape in ("16", "2,2,4", "1,1,4,4"):
        res = _invoke(["sample", path, "--out", "i.png", "--image-shape", shape])
        assert res.exit_code == 2 and "--image-shape takes H,W" in res.output, res.output
        assert not (tmp_path / "i.png").exists()
    res = _invoke(["sample", path, "--n", "4"])
    assert res.exit_code == 2 and "--force" in res.output


# ---------------------------------------------------------------------- fit --labels, columns
def test_fit_gmm_labels_are_the_predictions_of_the_same_fit(tmp_path):
    data = tmp_path / "d.csv"
    np.savetxt(data, X2, delimiter=",", header="eruptions,waiting", comments="", fmt="%.17g")
    labels, out = tmp_path / "labels.csv", tmp_path / "g.lf"
    args = ["fit", "gmm", data, "-k", "2", "--quiet", "--labels", labels, "--out", out]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    want = latentfit.GaussianMixture(2, random_state=0, init_params="kmeans").fit(X2).predict(X2)
    np.testing.assert_array_equal(np.loadtxt(labels, skiprows=1), want)
    assert latentfit.io.read_header(out)["feature_names"] == ["eruptions", "waiting"]
    # predict finds the model's columns by name in a file with other columns in another order
    other = tmp_path / "other.csv"
    table = np.column_stack([X2[:, 1], np.arange(len(X2)), X2[:, 0]])
    np.savetxt(other, table, delimiter=",", header="waiting,id,eruptions", comments="")
    got = _json(["predict", out, other])
    np.testing.assert_array_equal(got["values"], want)
    missing = tmp_path / "missing.csv"
    np.savetxt(missing, X2, delimiter=",", header="eruptions,wait", comments="")
    res = _invoke(["predict", out, missing])
    assert res.exit_code == 2 and "lacks the column(s) ['waiting']" in res.output
    out.unlink()
    res = _invoke(args)
    assert res.exit_code == 2 and "--labels" in res.output and "--force" in res.output


def test_fit_bgmm_labels(tmp_path):
    data = tmp_path / "d.npy"
    np.save(data, X2)
    labels = tmp_path / "l.csv"
    res = _invoke(["fit", "bgmm", data, "-k", "3", "--quiet", "--labels", labels])
    assert res.exit_code == 0, res.output
    want = latentfit.BayesianGaussianMixture(n_components=3, random_state=0).fit(X2).predict(X2)
    np.testing.assert_array_equal(np.loadtxt(labels, skiprows=1), want)


def test_misuse_is_a_clear_error(saved, tmp_path):
    _model, path, data, X, _lengths, kind = saved
    if kind != "mixture":
        return
    res = _invoke(["predict", path, data, "--lengths", data])
    assert res.exit_code == 2 and "has no sequences" in res.output
    res = _invoke(["predict", path, data, "--algorithm", "viterbi"])
    assert res.exit_code == 2 and "for HMMs" in res.output
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((3, X.shape[1] + 1)))
    res = _invoke(["score", path, wide])
    assert res.exit_code == 2 and f"fitted on {X.shape[1]} column(s)" in res.output
    res = _invoke(["sample", path, "--out", tmp_path / "s.png"])
    assert res.exit_code == 2 and ".png grid is drawn for VAEs" in res.output
    for command in (["show", tmp_path / "none.lf"], ["predict", data, data]):
        res = _invoke(command)
        assert res.exit_code == 2 and "Traceback" not in res.output


# ---------------------------------------------------------------------- the console script
def _script(*args):
    script = Path(sys.executable).with_name("latentfit")
    assert script.exists(), f"the console script is not installed beside {sys.executable}"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


# Every model's predict, score and sample through the app in this process: the tests above.
# Through the console script (three fresh processes each, ~3 s apiece): a sequence model,
# which reads --lengths, and a network, whose score draws its own samples.
@pytest.mark.parametrize("name", ["GaussianHMM", "VAE"])
def test_the_installed_script_predicts_scores_and_samples_as_the_model(name, tmp_path):
    fit, X = MODELS[name]
    model = _quiet(fit)
    path = latentfit.save(model, tmp_path / "m.lf")
    data = tmp_path / "d.csv"
    np.savetxt(data, X, delimiter=",", fmt="%.17g")
    rows = _rows(model, X)
    seq = []
    if name == "GaussianHMM":
        (tmp_path / "len.txt").write_text("30 50")
        seq = ["--lengths", tmp_path / "len.txt"]
    # predict: the CSV on standard output
    text = _script("predict", path, data, *seq)
    if name == "GaussianHMM":
        want = model.predict(rows, LENGTHS)
    else:
        want = model.posterior_mean(rows).detach().numpy()
    lines = text.splitlines()
    got = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-6)
    # score
    got = json.loads(_script("score", path, data, *seq, "--samples", "5", "--json"))
    if name == "GaussianHMM":
        assert got["total"] == pytest.approx(model.score(rows, LENGTHS), rel=1e-9)
    else:
        want = latentfit.vae.marginal_log_likelihood(
            model, rows, k=5, generator=torch.Generator().manual_seed(0), progress=False
        ).log_px.numpy()
        np.testing.assert_allclose(got["per_row"], want, rtol=1e-9)
    # sample, to a file
    out = tmp_path / "s.csv"
    _script("sample", path, "-n", "5", "--seed", "3", "--out", out)
    back = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    if name == "GaussianHMM":
        want = np.column_stack(model.sample(5, random_state=3))
    else:
        from latentfit.vae.images import sample_images

        want = sample_images(model, 5, torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(back, want)


def test_fit_vae_records_the_columns_and_predict_finds_them_by_name(tmp_path):
    data = tmp_path / "u.csv"
    U = np.random.default_rng(2).random((60, 3))
    np.savetxt(data, U, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    out = tmp_path / "v.lf"
    args = ["fit", "vae", "--dataset", data, "--likelihood", "gaussian", "--no-binarize"]
    res = _invoke(
        [*args, "--epochs", "1", "--latent", "2", "--hidden", "4", "--quiet", "--out", out]
    )
    assert res.exit_code == 0, res.output
    assert latentfit.io.read_header(out)["feature_names"] == ["a", "b", "c"]
    model = latentfit.load(out)
    assert model.feature_names == ["a", "b", "c"]
    shuffled = tmp_path / "s.csv"
    np.savetxt(shuffled, U[:, [2, 0, 1]], delimiter=",", header="c,a,b", comments="")
    got = _json(["predict", out, shuffled])
    want = model.posterior_mean(torch.as_tensor(U, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got["values"], want, rtol=1e-6)


#: Every ``fit`` command that saves --out, with small settings, on a file of two columns a, b.
SAVED_FITS = {
    "gmm": ["gmm", "-k", "2"],
    "bgmm": ["bgmm", "-k", "2"],
    "hmm": ["hmm", "-k", "2"],
    "hsmm": ["hsmm", "-k", "2"],
    "arhmm": ["arhmm", "-k", "2"],
    "ssm": ["ssm", "-k", "1"],
    "mixture": ["mixture", "--family", "poisson", "-k", "2"],
    "fa": ["fa", "-k", "1"],
    "ppca": ["ppca", "-k", "1"],
    "vae": ["vae", "--likelihood", "gaussian", "--no-binarize", "--epochs", "1", "--hidden", "4"],
    "flow": ["flow", "--epochs", "1", "--layers", "1", "--hidden", "4"],
    "diffusion": ["diffusion", "--epochs", "1", "--hidden", "4", "--steps", "10", "--eval-t", "2"],
}


@pytest.mark.parametrize("command", list(SAVED_FITS))
def test_every_fit_records_the_columns_and_score_finds_them_by_name(tmp_path, monkeypatch, command):
    # fit flow and fit diffusion saved feature_names null: show said "unnamed" and score
    # read a file's columns by position, so columns in another order were scored swapped
    monkeypatch.chdir(tmp_path)  # fit hmm|hsmm|arhmm write their states beside it
    table = COUNTS[:, :2] if command == "mixture" else X2
    data, other, out = tmp_path / "d.csv", tmp_path / "other.csv", tmp_path / "m.lf"
    np.savetxt(data, table, delimiter=",", header="a,b", comments="", fmt="%.17g")
    swapped = np.column_stack([table[:, 1], np.arange(len(table)), table[:, 0]])
    np.savetxt(other, swapped, delimiter=",", header="b,id,a", comments="", fmt="%.17g")
    source = [data] if command not in ("vae", "diffusion") else ["--dataset", data]
    name, *options = SAVED_FITS[command]
    args = ["fit", name, *source, *options, "--quiet", "--out", out]
    res = _quiet(lambda: _invoke(args))
    assert res.exit_code == 0, res.output
    assert latentfit.io.read_header(out)["feature_names"] == ["a", "b"]
    assert "columns (2): a, b" in _invoke(["show", out]).output.splitlines()
    want = _quiet(lambda: _json(["score", out, data]))["per_row"]
    np.testing.assert_array_equal(_quiet(lambda: _json(["score", out, other]))["per_row"], want)
    if command in ("flow", "diffusion"):  # density score reads the columns by name too
        want = _json(["density", "score", out, data])["log_likelihood_mean"]
        assert _json(["density", "score", out, other])["log_likelihood_mean"] == want


def test_full_covariances_past_thirty_columns_print_their_variances(tmp_path):
    # 3,000 columns printed 126 MB of covariance entries to the terminal
    X = np.random.default_rng(0).normal(size=(40, 31))
    data = tmp_path / "wide.csv"
    np.savetxt(data, X, delimiter=",", header=",".join(f"c{j}" for j in range(31)), comments="")
    res = runner.invoke(app, ["fit", "gmm", str(data), "-k", "2", "--quiet", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert "31 x 31 covariance matrices are not printed" in res.output
    text = res.output.split("covariances (full):")[1]
    assert len(text.splitlines()) < 10  # a row of variances per component, not 62 rows
    ref = latentfit.GaussianMixture(2, random_state=0).fit(X)
    assert (
        f"{ref.covariances_[0, 30, 30]:.6g}" in text or f"{ref.covariances_[1, 30, 30]:.6g}" in text
    )


def test_sample_json_too_large_for_memory_is_refused_before_drawing(tmp_path, monkeypatch):
    """-n is sized by the draws (24 bytes a value), but --json holds every number as a
    Python float and text (~180 bytes): a -n the draw check allowed ran out of memory while
    printing. With 10 MB free, 100,000 draws of 2 columns pass the draw check (7.2 MB) and
    not the JSON one."""
    import latentfit._memory as memory

    path = latentfit.save(latentfit.GaussianMixture(2, random_state=0).fit(X2), tmp_path / "m.lf")
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 10_000_000)
    res = _invoke(["sample", path, "-n", 100_000, "--json"])
    assert res.exit_code == 2, res.output
    assert "--json of 100,000 draws" in res.stderr and "--out FILE.npy" in res.stderr
    assert "Traceback" not in res.output
    assert _invoke(["sample", path, "-n", 100_000, "--out", tmp_path / "s.npy"]).exit_code == 0


def test_predict_and_score_json_too_large_for_memory_are_refused(tmp_path, monkeypatch):
    """As sample --json: about 180 bytes a value, which nothing checked for predict and score
    (a helper's hunt). With 1 MB free, 20,000 rows' JSON is refused; --out / --per-row not."""
    import latentfit._memory as memory

    path = latentfit.save(latentfit.GaussianMixture(2, random_state=0).fit(X2), tmp_path / "m.lf")
    data = tmp_path / "d.csv"
    rows = np.random.default_rng(0).normal(size=(20_000, X2.shape[1]))
    np.savetxt(data, rows, delimiter=",")
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 1_000_000)
    res = _invoke(["predict", path, data, "--proba", "--json"])
    assert res.exit_code == 2 and "--json of 20,000 rows of 2 column(s)" in res.stderr
    res = _invoke(["score", path, data, "--json"])
    assert res.exit_code == 2 and "--per-row FILE.csv" in res.stderr
    assert _invoke(["score", path, data, "--per-row", tmp_path / "r.csv"]).exit_code == 0


@pytest.mark.parametrize("command", ["predict", "score"])
def test_predict_and_score_read_text_with_the_delimiter_and_header_fit_takes(
    tmp_path, monkeypatch, command
):
    # before: neither command had --delimiter or --header, so a file the fit read with them
    # could not be read back (a ':' file was "non-numeric"; names of numbers were a row)
    monkeypatch.chdir(tmp_path)
    np.savetxt("x.csv", X2, delimiter=",")
    res = _invoke(["fit", "gmm", "x.csv", "-k", "2", "--quiet", "--out", "g.st"])
    assert res.exit_code == 0, res.output
    ref = _invoke([command, "g.st", "x.csv", "--json"])
    assert ref.exit_code == 0, ref.output
    np.savetxt("colon.txt", X2, delimiter=":")
    np.savetxt("named.csv", X2, delimiter=",", header="0,1", comments="")
    for data, options in (("colon.txt", ["--delimiter", ":"]), ("named.csv", ["--header"])):
        res = _invoke([command, "g.st", data, *options, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output) == json.loads(ref.output)
    assert "--delimiter" in _invoke([command, "--help"]).output


@pytest.mark.parametrize("kind", ["gaussian", "discrete", "ladder"])
def test_predict_refuses_rows_off_a_bernoulli_vae_s_support_as_score_does(tmp_path, kind):
    # before: predict wrote latent means for raw Gaussian values (the encoder maps any row)
    # while score of the same file and rows refused them
    extra = {"n_categories": 3} if kind == "discrete" else {}
    model = latentfit.vae.build_model(x_dim=5, z_dim=2, hidden=[6], kind=kind, seed=1, **extra)
    path = latentfit.save(model, tmp_path / "v.lf")
    data = tmp_path / "raw.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(8, 5)), delimiter=",")
    for command in ("predict", "score"):
        res = _invoke([command, path, data])
        assert res.exit_code == 2, res.output
        assert (
            "error: " in res.output
            and "a Bernoulli likelihood needs values in [0, 1]" in res.output
        )
    np.savetxt(data, BINARY[:8], delimiter=",")
    assert _invoke(["predict", path, data]).exit_code == 0


#: one model of each kind that predict, score and sample act on differently
ON_DEVICE = ("GaussianMixture", "FactorAnalysis", "GaussianHMM", "LinearGaussianSSM", "RealNVP",
             "VAE", "LadderVAE")  # fmt: skip


@pytest.mark.parametrize("name", ON_DEVICE)
def test_predict_score_and_sample_read_the_model_onto_the_device_they_are_given(
    name, device, tmp_path, monkeypatch
):
    # predict, score and sample had no --device (the fit commands and eval have one): a model
    # was read where its file said, and a VAE's draws came from a CPU generator. Each reads
    # the model onto the device given, and gives the numbers of the model loaded there (on a
    # GPU, where one is present, the rows and a VAE's generator go there with it).
    read_onto, load = [], latentfit.io.load

    def spy(path, *, device=None):
        read_onto.append(str(device))
        return load(path, device=device)

    fit, X = MODELS[name]
    path = latentfit.save(_quiet(fit), tmp_path / "m.lf")
    data = tmp_path / "d.csv"
    np.savetxt(data, X, delimiter=",", fmt="%.17g")
    model = latentfit.load(path, device=device)
    kind = model_kind(model)
    seq = _seq_args(tmp_path / "l.txt" if kind in SEQUENCES else None)
    if seq:
        seq[1].write_text("\n".join(map(str, LENGTHS)))
    on = ["--device", device]
    monkeypatch.setattr(latentfit.io, "load", spy)
    rows = _rows(model, X)
    if kind == "vae":
        rows = rows.to(device)
    gen = torch.Generator(device).manual_seed(3)
    if kind != "density":
        got = np.asarray(_json(["predict", path, data, *seq, *on])["values"])
        if kind == "mixture":
            want = model.predict(rows)
        elif kind == "hmm":
            want = model.predict(rows, LENGTHS)
        elif kind == "factor":
            want = model.transform(rows)
        elif kind == "ssm":
            want = model.smooth(rows, LENGTHS)[0]
        else:
            with torch.no_grad():
                want = model.posterior_mean(rows, generator=torch.Generator(device).manual_seed(0))
            want = want.cpu().numpy()
        np.testing.assert_allclose(got, np.asarray(want).reshape(got.shape), rtol=1e-6)
    got = _json(["score", path, data, *seq, "--samples", "5", "--seed", "3", *on])["total"]
    if kind == "vae":
        want = latentfit.vae.marginal_log_likelihood(model, rows, k=5, generator=gen)
        want = float(want.log_px.double().sum())
    elif kind in SEQUENCES:
        want = model.score(rows, LENGTHS)
    else:
        want = float(np.sum(model.score_samples(rows), dtype=np.float64))
    assert got == pytest.approx(want, rel=1e-9)
    got = np.asarray(_json(["sample", path, "-n", "4", "--seed", "3", *on])["samples"])
    if kind == "vae":
        from latentfit.vae.images import sample_images

        want = sample_images(model, 4, torch.Generator(device).manual_seed(3)).numpy()
    elif kind in SEQUENCES or kind == "density":
        want = model.sample(4, random_state=3)
        want = want[0] if isinstance(want, tuple) else want
    else:
        want = copy.deepcopy(model).set_params(random_state=3).sample(4)
        want = want[0] if isinstance(want, tuple) else want
    np.testing.assert_allclose(got, np.asarray(want).reshape(got.shape), rtol=1e-12)
    assert read_onto == [str(device)] * (3 if kind != "density" else 2), read_onto


def test_a_model_saved_for_a_device_this_machine_lacks_is_read_onto_the_cpu(tmp_path):
    # A model fitted on a GPU and saved, then read on a machine without one: load() refused
    # it as "altered or damaged", and so did every command that reads a model file. Now
    # load() says what it is and how to read it; the commands read it onto --device (cpu).
    model = _quiet(MODELS["GaussianMixture"][0])
    path = latentfit.save(copy.deepcopy(model).set_params(device="cuda:99"), tmp_path / "g.lf")
    with pytest.raises(latentfit.errors.ModelFileError) as err:
        latentfit.load(path)
    text = str(err.value)
    assert "was saved with device='cuda:99', which this machine cannot use" in text, text
    assert "load(path, device='cpu')" in text and "damaged" not in text, text
    np.testing.assert_array_equal(latentfit.load(path, device="cpu").predict(X2), model.predict(X2))
    data = tmp_path / "d.csv"
    np.savetxt(data, X2, delimiter=",", fmt="%.17g")
    np.testing.assert_array_equal(_json(["predict", path, data])["values"], model.predict(X2))
    assert _json(["score", path, data])["total"] == pytest.approx(model.score(X2) * len(X2))
    assert len(_json(["sample", path, "-n", "3"])["samples"]) == 3
    shown = _json(["show", path])
    assert shown["class"] == "GaussianMixture" and shown["settings"]["device"] == "cuda:99"
