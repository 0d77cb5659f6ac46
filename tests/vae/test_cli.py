"""latentfit fit vae / eval / sample through the command line."""

import warnings

import pytest
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.errors import ModelFileWarning
from latentfit.vae import PosteriorCollapseWarning, load_model

runner = CliRunner()


def test_fit_eval_sample(tmp_path):
    out = tmp_path / "v.safetensors"
    res = runner.invoke(
        app,
        [
            "fit",
            "vae",
            "--dataset",
            "digits",
            "--objective",
            "iwae",
            "--samples",
            "3",
            "--epochs",
            "2",
            "--latent",
            "4",
            "--hidden",
            "16",
            "--quiet",
            "--eval-samples",
            "20",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "best validation bound" in res.output and "KL per dimension" in res.output
    assert "bits/dim" in res.output
    assert load_model(out).spec.z_dim == 4
    res = runner.invoke(
        app, ["eval", str(out), "--dataset", "digits", "--samples", "30", "--n", "20"]
    )
    assert res.exit_code == 0, res.output
    assert "log p(x)" in res.output
    png = tmp_path / "s.png"
    res = runner.invoke(app, ["sample", str(out), "--n", "9", "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_user_array_and_errors(tmp_path):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(60, 5)))
    out = tmp_path / "g.safetensors"
    res = runner.invoke(
        app,
        [
            "fit",
            "vae",
            "--dataset",
            str(path),
            "--likelihood",
            "gaussian",
            "--no-binarize",
            "--epochs",
            "1",
            "--latent",
            "2",
            "--hidden",
            "8",
            "--batch-size",
            "16",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["fit", "vae", "--dataset", str(path), "--epochs", "1", "--quiet"])
    assert res.exit_code == 2 and "not in [0, 1]" in res.output
    res = runner.invoke(app, ["fit", "vae", "--dataset", "nope.csv", "--quiet"])
    assert res.exit_code == 2 and "no data file" in res.output
    res = runner.invoke(
        app, ["fit", "vae", "--dataset", "digits", "--objective", "magic", "--quiet"]
    )
    assert res.exit_code == 2 and "--objective must be one of" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "no VAE model file" in res.output


@pytest.mark.parametrize(
    "extra",
    [
        ["--kind", "discrete", "--latent", "3"],
        ["--flow", "iaf"],
        ["--kind", "ladder"],
        ["--objective", "dreg", "--samples", "2"],
    ],
)
def test_variants_train(tmp_path, extra):
    args = [
        "fit",
        "vae",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--latent",
        "4",
        "--hidden",
        "16",
        "--quiet",
        "--out",
        str(tmp_path / "m.safetensors"),
    ]
    with warnings.catch_warnings():  # one epoch: the discrete VAE may not have left collapse yet
        warnings.simplefilter("ignore", PosteriorCollapseWarning)
        res = runner.invoke(app, args + extra)
    assert res.exit_code == 0, res.output


def test_a_pass_of_too_many_samples_is_refused_before_training_naming_the_option(tmp_path):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(60, 5)))
    out = tmp_path / "g.safetensors"
    args = ["fit", "vae", "--dataset", str(path), "--likelihood", "gaussian", "--no-binarize"]
    res = runner.invoke(app, [*args, "--epochs", "1", "--samples", "1000000000", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "--samples=1,000,000,000 samples" in res.output and "would need" in res.output
    assert "epoch" not in res.output and not out.exists()


def test_a_seeded_fit_reports_the_same_diagnostics_and_test_likelihood_as_eval(
    tmp_path, monkeypatch
):
    # The weights of two runs with one --seed were equal, but I(x; z) and the --eval-samples
    # log-likelihood were drawn from torch's global generator: each run printed other values
    # (0.18 / 0.16 nats, -16.22 / -16.31), and neither was what 'latentfit eval --seed' gave.
    import json

    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.random.default_rng(0).normal(size=(60, 4)))
    args = ["fit", "vae", "--dataset", "x.npy", "--likelihood", "gaussian", "--latent", "2",
            "--hidden", "8", "--epochs", "2", "--quiet", "--eval-samples", "50", "--json"]  # fmt: skip
    results = []
    for run, global_seed in enumerate((1, 2)):
        torch.manual_seed(global_seed)  # what another process would have drawn
        res = runner.invoke(app, [*args, "--out", f"v{run}.safetensors"])
        assert res.exit_code == 0, res.output
        results.append(json.loads(res.stdout))
    assert results[0]["mutual_info"] == results[1]["mutual_info"]
    assert results[0]["test_log_likelihood"] == results[1]["test_log_likelihood"]
    res = runner.invoke(app, ["eval", "v0.safetensors", "--samples", "50", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["log_likelihood_mean"] == pytest.approx(
        results[0]["test_log_likelihood"], rel=1e-12
    )
    # its progress bar goes with --quiet, as every other command's (eval had no --quiet)
    assert "log p(x)" in res.stderr
    quiet = runner.invoke(app, ["eval", "v0.safetensors", "--samples", "50", "--json", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == res.stdout


@pytest.mark.parametrize("objective", ["iwae", "dreg"])
def test_a_beta_or_free_bits_the_objective_ignores_is_refused_before_the_data(
    tmp_path, monkeypatch, objective
):
    # --objective iwae --beta 4 --free-bits 0.5 trained a plain IWAE and said nothing
    monkeypatch.chdir(tmp_path)
    args = ["fit", "vae", "--dataset", "missing.csv", "--objective", objective, "--quiet"]
    for extra, named in ((["--beta", "4"], "--beta 4"), (["--free-bits", "0.5"], "--free-bits")):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and named in res.output and "would be ignored" in res.output


def _small_vae_file(tmp_path, monkeypatch) -> list[str]:
    """In ``tmp_path`` (made the working folder): x.csv (60 x 3 normal rows) and v.safetensors,
    a Gaussian VAE (latent 2, hidden 8) fitted to it for one epoch. Returns the ``fit vae``
    arguments it was fitted with, less --epochs and --out."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.savetxt("x.csv", np.random.default_rng(0).normal(size=(60, 3)), delimiter=",")
    fit = ["fit", "vae", "--dataset", "x.csv", "--likelihood", "gaussian", "--no-binarize",
           "--latent", "2", "--hidden", "8", "--quiet"]  # fmt: skip
    res = runner.invoke(app, [*fit, "--epochs", "1", "--out", "v.safetensors"])
    assert res.exit_code == 0, res.output
    return fit


def test_samples_off_by_digits_are_refused_naming_the_option_and_the_largest_that_fits(
    tmp_path, monkeypatch
):
    # score, eval and fit --eval-samples with 10**12 samples ran for months without a word
    import latentfit.vae.evaluate

    fit = _small_vae_file(tmp_path, monkeypatch)

    def refuse(*_):
        raise AssertionError("a sample was drawn before --samples was refused")

    monkeypatch.setattr(latentfit.vae.evaluate, "log_weights", refuse)
    # 146 weights and 4,096 multiply-adds a sample: 10**15 // (rows x 4,242) samples fit
    for args, rows, option in (
        (["score", "v.safetensors", "x.csv", "--samples", "1000000000000"], 60, "--samples"),
        (["eval", "v.safetensors", "--samples", "1000000000000"], 12, "--samples"),
        ([*fit, "--eval-samples", "1000000000000", "--out", "w.safetensors"], 12, "--eval-samples"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert res.output.startswith("error: ") and "epoch" not in res.output
        text = " ".join(res.output.split())
        assert f"{option} 1,000,000,000,000 importance samples" in text
        assert f"use {option} <= {10**15 // (rows * 4242):,}" in text
        assert "k=" not in text and "max_work" not in text


def test_max_work_sets_the_importance_sampling_cap_and_the_refusal_names_it(tmp_path, monkeypatch):
    # the 10**15 cap had no option: a command line told "too much work" could not go on
    fit = _small_vae_file(tmp_path, monkeypatch)
    # 4,242 multiply-adds a row and sample (test above): 10 samples of 12 test rows 509,040
    for args, option in (
        (["score", "v.safetensors", "x.csv", "--samples", "10"], "--samples"),
        (["eval", "v.safetensors", "--samples", "10"], "--samples"),
        ([*fit, "--eval-samples", "10", "--out", "w.safetensors"], "--eval-samples"),
    ):
        res = runner.invoke(app, [*args, "--max-work", "400000"])
        assert res.exit_code == 2, res.output
        text = " ".join(res.output.split())
        assert "more than the 4e+05 allowed;" in text and f"use {option} <= " in text
        assert "raise the limit with --max-work" in text and "max_work" not in text
    res = runner.invoke(app, ["eval", "v.safetensors", "--samples", "10", "--max-work", "6e5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "v.safetensors", "--samples", "10", "--max-work", "inf"])
    assert res.exit_code == 0, res.output


def test_max_work_defaults_to_the_libraries_cap():
    from latentfit._memory import MAX_WORK
    from latentfit.cli.app import max_work_option, work_limit

    assert max_work_option("the draws").default == MAX_WORK
    assert work_limit(float("inf")) is None and work_limit(1e16) == 10**16


def test_eval_of_another_kind_of_model_names_the_command_that_scores_it(tmp_path):
    # before: "gmm.lf is not a latentfit VAE file: it holds a GaussianMixture, load it with
    # latentfit.load" - Python advice on the command line
    import numpy as np

    import latentfit

    rows = np.random.default_rng(0).normal(size=(40, 2))
    path = latentfit.GaussianMixture(2, random_state=0).fit(rows).save(tmp_path / "gmm.lf")
    res = runner.invoke(app, ["eval", str(path)])
    assert res.exit_code == 2
    assert "holds a GaussianMixture, not a VAE" in res.output
    assert f"use 'latentfit score {path} DATA'" in res.output
    assert "latentfit.load" not in res.output


def _digit_codes(n: int = 150):
    """The first ``n`` of scikit-learn's 8×8 digits as their integer grey levels 0..16."""
    from sklearn.datasets import load_digits

    return load_digits().data[:n].astype("int64")  # (n, 64)


def _fit_codes(tmp_path, data, *extra):
    out = tmp_path / "codes.safetensors"
    args = ["fit", "vae", "--dataset", str(data), "--likelihood", "categorical", "--epochs",
            "2", "--latent", "2", "--hidden", "16", "--quiet", "--out", str(out), *extra]  # fmt: skip
    return runner.invoke(app, args), out


def test_a_categorical_vae_of_intensities_writes_samples_on_its_levels_that_score_reads(
    tmp_path, monkeypatch
):
    # before: sample wrote the decoder's means (0.478792, ...) and score refused its own
    # model's draws: "s.csv holds 0.478792 at row 0, column 0, between two of the 17 levels"
    import numpy as np
    import torch

    from latentfit.vae.images import sample_images

    monkeypatch.chdir(tmp_path)
    np.savetxt("i.csv", _digit_codes() / 16, fmt="%.6f", delimiter=",")
    res, out = _fit_codes(tmp_path, "i.csv", "--levels", "17")
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", str(out), "-n", "6", "--seed", "2", "--out", "s.csv"])
    assert res.exit_code == 0, res.output
    drawn = np.loadtxt("s.csv", delimiter=",", skiprows=1)
    means = sample_images(load_model(out), 6, torch.Generator().manual_seed(2)).numpy()
    np.testing.assert_array_equal(drawn, np.round(means * 16) / 16)
    res = runner.invoke(app, ["score", str(out), "s.csv", "--samples", "4"])
    assert res.exit_code == 0, res.output


def test_a_file_of_integer_grey_levels_fits_a_categorical_vae_scored_and_sampled_as_codes(
    tmp_path, monkeypatch
):
    # before: "d.csv holds 5 at row 0, column 2: a categorical likelihood of 256 levels reads
    # floating values as intensities in [0, 1]", and no --levels to say there are 17
    import json

    import numpy as np
    import torch

    from latentfit.vae import marginal_log_likelihood
    from latentfit.vae.images import sample_images

    monkeypatch.chdir(tmp_path)
    codes = _digit_codes()
    np.savetxt("d.csv", codes, fmt="%d", delimiter=",")
    res, out = _fit_codes(tmp_path, "d.csv", "--levels", "17")
    assert res.exit_code == 0, res.output
    assert "categorical likelihood of 17 levels; the data read as integer codes 0..16" in (
        res.output
    )
    model = load_model(out)
    assert model.spec.n_levels == 17 and model.level_scale_ == 1.0

    # score: the Python API's importance-sampled log p(x) of the same integer array
    res = runner.invoke(app, ["score", str(out), "d.csv", "--samples", "8", "--seed", "3",
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = np.asarray(json.loads(res.stdout)["per_row"])
    want = marginal_log_likelihood(
        model, torch.as_tensor(codes), k=8, generator=torch.Generator().manual_seed(3)
    ).log_px.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # a categorical log-probability of 64 pixels lies below 0, above 64 log(1/17) by far
    assert np.all(got < 0)

    # eval: the test rows the model recorded, as codes
    res = runner.invoke(app, ["eval", str(out), "--samples", "8", "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    test = torch.as_tensor(codes)[model.split.test]
    want = marginal_log_likelihood(model, test, k=8, generator=torch.Generator().manual_seed(3))
    assert json.loads(res.stdout)["log_likelihood_mean"] == pytest.approx(want.mean, rel=1e-12)

    # predict: the posterior means of the codes' intensities code / 16
    res = runner.invoke(app, ["predict", str(out), "d.csv", "--json"])
    assert res.exit_code == 0, res.output
    with torch.no_grad():
        z = model.posterior_mean(torch.as_tensor(codes / 16, dtype=torch.float32))
    np.testing.assert_allclose(json.loads(res.stdout)["values"], z.numpy(), rtol=1e-6)

    # sample: written as codes (each mean's nearest code), a file score reads back
    res = runner.invoke(app, ["sample", str(out), "-n", "6", "--seed", "2", "--out", "s.csv"])
    assert res.exit_code == 0, res.output
    drawn = np.loadtxt("s.csv", delimiter=",", skiprows=1)
    means = sample_images(model, 6, torch.Generator().manual_seed(2)).numpy()
    assert drawn.shape == (6, 64) and np.array_equal(drawn, np.round(means * 16))
    assert drawn.min() >= 0 and drawn.max() <= 16
    res = runner.invoke(app, ["score", str(out), "s.csv", "--samples", "4"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", str(out), "-n", "4", "--out", "s.png"])
    assert res.exit_code == 0, res.output


def test_digits_take_17_levels_and_a_model_file_without_a_scale_reads_intensities(tmp_path):
    import numpy as np

    from latentfit.vae import build_model, save_model

    out = tmp_path / "digits.safetensors"
    res = runner.invoke(app, ["fit", "vae", "--dataset", "digits", "--likelihood",
                              "categorical", "--epochs", "1", "--latent", "2", "--hidden", "8",
                              "--quiet", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    model = load_model(out)  # digits are intensities k / 16: level k of 17
    assert model.spec.n_levels == 17 and model.level_scale_ == 16.0
    # a model built in Python records intensities; a file written before the scale was
    # recorded holds intensities, and says so
    new = save_model(build_model(x_dim=3, z_dim=1, hidden=[4], likelihood="categorical"),
                     tmp_path / "new.safetensors")  # fmt: skip
    assert load_model(new).level_scale_ == 255.0
    old = _without_level_scale(new, tmp_path / "old.safetensors")
    with pytest.warns(ModelFileWarning, match=r"read as fitted to intensities.*k/255"):
        assert getattr(load_model(old), "level_scale_", None) is None
    np.savetxt(tmp_path / "x.csv", [[0.0, 0.6, 1.0]], delimiter=",")  # 0.6 is level 153 of 256
    res = runner.invoke(app, ["score", str(old), str(tmp_path / "x.csv"), "--samples", "2"])
    assert res.exit_code == 0, res.output


def _without_level_scale(path, out):
    """A copy of the VAE file ``path`` whose header lacks 'extra.level_scale_', as files
    written before save_model recorded it for every categorical likelihood."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["latentfit"])
    del header["extra"]["level_scale_"]
    save_file(tensors, str(out), metadata={"latentfit": json.dumps(header)})
    return out


def test_a_file_of_codes_without_its_scale_scores_as_intensities_with_a_warning(
    tmp_path, monkeypatch
):
    # before: a model fitted to integer codes whose file lacked 'extra.level_scale_' read a
    # file of 0s and 1s as the levels 0 and 16 (not 0 and 1) and scored it without a word
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.savetxt("d.csv", _digit_codes(), fmt="%d", delimiter=",")
    res, out = _fit_codes(tmp_path, "d.csv", "--levels", "17")
    assert res.exit_code == 0, res.output
    old = _without_level_scale(out, tmp_path / "old.safetensors")
    np.savetxt("b.csv", (_digit_codes(20) > 8).astype(int), fmt="%d", delimiter=",")
    scores = {}
    for path in (out, old):
        res = runner.invoke(app, ["score", str(path), "b.csv", "--samples", "2"])
        assert res.exit_code == 0, res.output
        scores[path] = res.output
    assert "warning:" not in scores[out]
    text = " ".join(scores[old].split())
    assert "warning: " in text and "'extra.level_scale_'" in text
    assert "a file of 0s and 1s is read as the levels 0 and 16" in text
    # the two readings differ: the warning is what tells them apart
    assert scores[out].splitlines()[-1] != scores[old].splitlines()[-1]


def test_a_value_that_is_no_level_code_is_refused_naming_the_files_row(tmp_path, monkeypatch):
    import numpy as np

    from latentfit.vae.data import load_vae_data

    monkeypatch.chdir(tmp_path)
    codes = _digit_codes().astype(float)
    np.savetxt("d.csv", codes, fmt="%g", delimiter=",")
    row = int(load_vae_data("d.csv", seed=0).split.test[3])  # the split depends on n and seed
    assert row != 3  # the file's row, not the test row's position
    bad = codes.copy()
    for value, advice in [
        (2.5, "integer level codes here, whole numbers 0..16; recode the column"),
        (30, "pass --levels above the largest level (31 or more)"),
    ]:
        bad[row, 4] = value
        np.savetxt("bad.csv", bad, fmt="%g", delimiter=",")
        res, out = _fit_codes(tmp_path, "bad.csv", "--levels", "17")
        assert res.exit_code == 2
        assert f"bad.csv holds {value:g} at row {row}, column 4" in res.output
        assert advice in res.output
    # scoring reads codes on the model's scale: a fraction is named by the file's row
    res, out = _fit_codes(tmp_path, "d.csv", "--levels", "17")
    assert res.exit_code == 0, res.output
    bad[row, 4] = 2.5
    np.savetxt("bad.csv", bad, fmt="%g", delimiter=",")
    for command in (["score", str(out), "bad.csv"], ["predict", str(out), "bad.csv"]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2
        assert f"error: bad.csv holds 2.5 at row {row}, column 4" in res.output


_NO_LEVELS = "--levels sets the levels of --likelihood categorical; --likelihood bernoulli"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--levels", "17"], _NO_LEVELS),
        (["--likelihood", "categorical", "--levels", "100000"], "--levels takes 2 to 65,536"),
    ],
)
def test_levels_are_refused_where_they_would_be_ignored_or_cannot_be_built(tmp_path, extra, words):
    out = tmp_path / "v.safetensors"
    res = runner.invoke(app, ["fit", "vae", "--dataset", "digits", *extra, "--out", str(out)])
    assert res.exit_code == 2
    assert words in res.output and not out.exists()


def test_an_intensity_between_two_levels_is_refused_by_fit_score_predict_and_eval(
    tmp_path, monkeypatch
):
    # 0.3 of a --levels 5 file was fitted and scored as the level 1 (0.25) without a word
    import numpy as np

    monkeypatch.chdir(tmp_path)
    grid = np.random.default_rng(0).integers(0, 5, size=(60, 3)) / 4  # intensities k/4
    np.savetxt("ok.csv", grid, delimiter=",", fmt="%g")
    off = grid.copy()
    off[7, 1] = 0.3
    np.savetxt("off.csv", off, delimiter=",", fmt="%g")
    words = (
        "off.csv holds 0.3 at row 7, column 1, between two of the 5 levels of a categorical "
        "likelihood: it reads intensities as multiples of 1/4 (level k is k/4) and would "
        "round 0.3 to 1/4. Round the data to k/4 first (round(x * 4) / 4)"
    )
    res, out = _fit_codes(tmp_path, "off.csv", "--levels", "5")
    assert res.exit_code == 2 and words in res.output and not out.exists()
    res, out = _fit_codes(tmp_path, "ok.csv", "--levels", "5")
    assert res.exit_code == 0, res.output
    for command in (
        ["score", str(out), "off.csv", "--samples", "2"],
        ["predict", str(out), "off.csv"],
        ["eval", str(out), "--all-rows", "--dataset", "off.csv", "--samples", "2"],
    ):
        res = runner.invoke(app, command)
        assert res.exit_code == 2, (command, res.output)
        assert f"error: {words}" in " ".join(res.output.split())


def test_show_says_how_many_levels_a_categorical_vae_has_and_how_it_reads_files(
    tmp_path, monkeypatch
):
    # show printed level_scale_ = 1.0 among the fit record, and nothing said what it meant
    import json

    import numpy as np

    from latentfit.vae import build_model, save_model

    monkeypatch.chdir(tmp_path)
    np.savetxt("d.csv", _digit_codes(60), fmt="%d", delimiter=",")
    np.savetxt("i.csv", _digit_codes(60) / 16, fmt="%g", delimiter=",")
    new = save_model(build_model(x_dim=3, z_dim=1, hidden=[4], likelihood="categorical",
                                 n_levels=4), tmp_path / "new.safetensors")  # fmt: skip
    old = _without_level_scale(new, tmp_path / "old.safetensors")  # an earlier file
    cases = [
        ("d.csv", 1.0, "integer level codes 0..16"),
        ("i.csv", 16.0, "intensities in [0, 1], level k as k/16"),
    ]
    for data, scale, reads in cases:
        res, out = _fit_codes(tmp_path, data, "--levels", "17", "--force")
        assert res.exit_code == 0, res.output
        assert load_model(out).level_scale_ == scale  # what show reports, from the file
        text = runner.invoke(app, ["show", str(out)])
        assert text.exit_code == 0, text.output
        line = f"levels: 17 (categorical likelihood); data files are read as {reads}"
        assert line in text.output.splitlines()
        got = json.loads(runner.invoke(app, ["show", str(out), "--json"]).stdout)
        assert got["levels"] == {"n_levels": 17, "level_scale": scale, "reads": reads}
        assert "level_scale_" not in got["fit"]  # a reading, not a fit record
    text = runner.invoke(app, ["show", str(old)]).output
    assert "levels: 4 (categorical likelihood); data files are read as intensities in " in text
    assert "level k as k/3; the file records no scale" in text
    got = json.loads(runner.invoke(app, ["show", str(old), "--json"]).stdout)
    assert got["levels"]["level_scale"] is None
    plain = save_model(build_model(x_dim=3, z_dim=1, hidden=[4]), tmp_path / "b.safetensors")
    assert "levels" not in json.loads(runner.invoke(app, ["show", str(plain), "--json"]).stdout)
    assert "levels:" not in runner.invoke(app, ["show", str(plain)]).output


def test_a_file_of_0s_and_1s_must_say_whether_it_holds_codes_or_intensities(tmp_path, monkeypatch):
    # fit vae --levels 5 read a file of 0s and 1s as the intensities 0 and 1 (levels 0 and 4)
    # without a word, though they may as well be the codes 0 and 1
    import json

    import numpy as np
    import torch

    from latentfit.vae import marginal_log_likelihood

    monkeypatch.chdir(tmp_path)
    binary = np.random.default_rng(0).integers(0, 2, size=(60, 3))
    np.savetxt("b.csv", binary, delimiter=",", fmt="%d")
    res, out = _fit_codes(tmp_path, "b.csv", "--levels", "5")
    assert res.exit_code == 2 and not out.exists()
    assert "holds only 0s and 1s, which a categorical likelihood of 5 levels reads two ways" in (
        res.output
    )
    assert "say which with --read-as codes or --read-as intensities" in res.output
    for read_as, scale, pixels in (("codes", 1.0, binary), ("intensities", 4.0, binary * 4)):
        res, out = _fit_codes(tmp_path, "b.csv", "--levels", "5", "--read-as", read_as, "--force")
        assert res.exit_code == 0, res.output
        model = load_model(out)
        assert model.level_scale_ == scale
        # score reads the file as the model file says: the same log p(x) as the level codes
        res = runner.invoke(app, ["score", str(out), "b.csv", "--samples", "4", "--json"])
        assert res.exit_code == 0, res.output
        want = marginal_log_likelihood(
            model, torch.as_tensor(pixels), k=4, generator=torch.Generator().manual_seed(0)
        ).log_px.numpy()
        np.testing.assert_allclose(json.loads(res.stdout)["per_row"], want, rtol=1e-12)
    res, out = _fit_codes(tmp_path, "b.csv", "--levels", "2", "--force")  # one reading
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["fit", "vae", "--dataset", "b.csv", "--read-as", "codes"])
    assert res.exit_code == 2 and "--likelihood bernoulli has no levels" in res.output


def test_a_fit_whose_test_log_likelihood_overflows_is_saved_before_the_refusal(
    tmp_path, monkeypatch
):
    # marginal_log_likelihood refuses a non-finite test log-likelihood (a row where the model's
    # float32 arithmetic overflows); 'fit vae' ran it before saving, so the refusal lost the
    # trained model. It is now saved, and the refusal says where and names the test split.
    import numpy as np

    import latentfit.vae
    from latentfit.errors import ParameterError

    def overflowing(*args, **kwargs):
        raise ParameterError("X has log p(x) = -inf at row 3 under the VAE (...)")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(latentfit.vae, "marginal_log_likelihood", overflowing)
    np.save("x.npy", np.random.default_rng(0).normal(size=(60, 4)))
    args = ["fit", "vae", "--dataset", "x.npy", "--likelihood", "gaussian", "--latent", "2",
            "--hidden", "8", "--epochs", "1", "--quiet", "--eval-samples", "5",
            "--out", "v.safetensors"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "the fitted model is saved in v.safetensors" in res.output
    assert "the test split has log p(x) = -inf at row 3" in res.output
    assert "latentfit eval v.safetensors --dataset FILE --all-rows" in res.output
    assert load_model("v.safetensors").split is not None  # the fitted model, whole
