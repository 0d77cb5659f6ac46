"""Bad input to `latentfit fit flow|diffusion|vae`, `density sample`, `score` and `eval`:
a clean one-line error and exit code 2, never a traceback or a NaN model saved."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app

runner = CliRunner()


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(40, 2)), delimiter=",")
    return path


@pytest.fixture
def flow_file(tmp_path, good):
    out = tmp_path / "f.st"
    args = ["fit", "flow", str(good), "--epochs", "1", "--hidden", "4", "--layers", "1"]
    res = runner.invoke(app, [*args, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def _fails(args, match):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output  # fail(): a usage-style error, no traceback
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert match in res.output, res.output


def test_fit_flow_huge_hidden(good, tmp_path):
    out = tmp_path / "x.st"
    args = ["fit", "flow", good, "--epochs", "1", "--hidden", "100000000000", "--layers", "1"]
    _fails([*args, "--out", out, "--quiet"], "would need")
    assert not out.exists()


def test_fit_diffusion_huge_hidden(good, tmp_path):
    args = ["fit", "diffusion", "--dataset", good, "--epochs", "1", "--steps", "10"]
    _fails([*args, "--hidden", "100000000000", "--out", tmp_path / "x.st", "--quiet"], "would need")


@pytest.mark.parametrize("cmd", ["flow", "diffusion"])
def test_fit_that_diverges_saves_nothing(good, tmp_path, cmd):
    out = tmp_path / "x.st"
    args = ["fit", "flow", good] if cmd == "flow" else ["fit", "diffusion", "--dataset", good]
    args += ["--epochs", "3", "--hidden", "8", "--lr", "1e10", "--out", out, "--quiet"]
    args += ["--layers", "1"] if cmd == "flow" else ["--steps", "10"]
    _fails(args, "diverged")
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["flow", "diffusion"])
def test_one_row_names_the_model(tmp_path, cmd):
    one = tmp_path / "one.csv"
    np.savetxt(one, [[1.0, 2.0]], delimiter=",")
    args = ["fit", "flow", one] if cmd == "flow" else ["fit", "diffusion", "--dataset", one]
    res = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "x.st"]])
    assert res.exit_code == 2 and "VAE" not in res.output, res.output
    assert ("a flow" if cmd == "flow" else "a DDPM") in res.output


def test_density_sample_too_many_draws(flow_file, tmp_path):
    args = ["density", "sample", flow_file, "-n", "100000000000000"]
    _fails([*args, "--out", tmp_path / "s.csv"], "-n 100,000,000,000,000 draws of")


def _img01(tmp_path):
    img = tmp_path / "img01.csv"
    np.savetxt(img, np.random.default_rng(0).random((20, 4)), delimiter=",")
    return img


def test_fit_vae_huge_free_bits(tmp_path):
    args = ["fit", "vae", "--dataset", _img01(tmp_path), "--epochs", "1", "--latent", "2"]
    args += ["--hidden", "8", "--free-bits", "1e308", "--out", tmp_path / "v.st", "--quiet"]
    _fails(args, "error: --free-bits must be a finite number")


def test_fit_vae_huge_beta_saves_nothing(tmp_path):
    out = tmp_path / "v.st"
    args = ["fit", "vae", "--dataset", _img01(tmp_path), "--epochs", "1", "--latent", "2"]
    args += ["--hidden", "8", "--objective", "beta", "--beta", "1e308", "--out", out, "--quiet"]
    _fails(args, "diverged")
    assert not out.exists()


def test_bernoulli_vae_scored_on_255_data(tmp_path):
    model = tmp_path / "v.st"
    args = ["fit", "vae", "--dataset", _img01(tmp_path), "--epochs", "1", "--latent", "2"]
    res = runner.invoke(app, [str(a) for a in [*args, "--hidden", "8", "--out", model, "--quiet"]])
    assert res.exit_code == 0, res.output
    img255 = tmp_path / "img255.csv"
    np.savetxt(img255, np.full((5, 4), 200.0), delimiter=",")
    _fails(["score", model, img255, "--samples", "2"], "[0, 1]")
    _fails(["eval", model, "--samples", "2", "--dataset", img255, "--all-rows"], "[0, 1]")


def _huge(tmp_path):
    data = tmp_path / "huge.csv"
    x = np.random.default_rng(0).normal(size=(40, 2))
    x[3, 1] = 1e300  # finite in the file, inf in the float32 the networks compute in
    np.savetxt(data, x, delimiter=",")
    return data


#: What a command line can do about a value beyond float32: it has no dtype option, so the
#: advice is to rescale, and never the Python API's dtype=float64.
_BEYOND = (
    "huge.csv holds 1e+300 at row 3, column 1, beyond the range of float32 (largest 3.4e+38), "
    "in which this model computes: rescale the data (e.g. standardise the columns)\n"
)


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "flow"],
        ["fit", "diffusion", "--dataset"],
        ["fit", "vae", "--hidden", "4", "--latent", "2", "--likelihood", "gaussian", "--dataset"],
    ],
)
def test_a_value_beyond_float32_is_named_as_such(tmp_path, command):
    out = tmp_path / "x.st"
    _fails([*command, _huge(tmp_path), "--epochs", "1", "--out", out], _BEYOND)
    assert not out.exists()


def test_scoring_a_value_beyond_float32_advises_what_the_command_line_can_do(
    tmp_path, flow_file, good
):
    from latentfit import GaussianMixture

    huge = _huge(tmp_path)
    vae = tmp_path / "v.st"
    args = ["fit", "vae", "--dataset", good, "--epochs", "1", "--latent", "2", "--hidden", "4"]
    res = runner.invoke(app, [*map(str, args), "--likelihood", "gaussian", "--out", str(vae)])
    assert res.exit_code == 0, res.output
    gmm32 = tmp_path / "g32.st"  # fitted in float32 from Python: the command line reads it so
    x = np.loadtxt(good, delimiter=",")
    GaussianMixture(2, dtype="float32", random_state=0).fit(x).save(gmm32)
    for command in (
        ["density", "score", flow_file, huge],
        ["score", flow_file, huge],
        ["score", vae, huge, "--samples", "2"],
        ["eval", vae, "--samples", "2", "--dataset", huge, "--all-rows"],
        ["score", gmm32, huge],
        ["predict", gmm32, huge],
    ):
        _fails(command, _BEYOND)


def test_options_that_would_be_ignored_are_refused(good, tmp_path):
    out = tmp_path / "x.st"
    args = ["fit", "diffusion", "--dataset", good, "--epochs", "1", "--skip-floor", "0.1"]
    _fails([*args, "--out", out], "add --gaussian-skip, or drop --skip-floor")
    gmm = tmp_path / "g.st"
    res = runner.invoke(app, ["fit", "gmm", str(good), "-k", "2", "--out", str(gmm), "--quiet"])
    assert res.exit_code == 0, res.output
    _fails(
        ["sample", gmm, "-n", "5", "--image-shape", "2,1", "--out", tmp_path / "s.csv"],
        "drop --image-shape",
    )
    assert not out.exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    "command", [["fit", "flow", "--dequantize"], ["fit", "diffusion", "--discrete", "--dataset"]]
)
def test_too_many_levels_name_the_option(good, tmp_path, command):
    *cmd, last = command
    args = [*cmd, last, good] if last == "--dataset" else [*command, good]
    _fails(
        [*args, "--epochs", "1", "--levels", "100000000000000", "--out", tmp_path / "x.st"],
        "--levels must be an integer from 2 to 1,048,576",
    )


def test_density_score_names_a_row_whose_log_density_overflows(flow_file, tmp_path):
    # found by hand (a helper's hunt): such a value printed log p(x) = -inf and exited 0
    data = tmp_path / "b18.csv"
    data.write_text("a,b\n1e30,1\n2,3\n")
    _fails(["density", "score", flow_file, data], "b18.csv has log p(x) = -inf")


@pytest.mark.parametrize("cmd", ["flow", "diffusion", "vae"])
def test_a_checkpoint_that_cannot_resume_names_the_command_lines_way_out(good, tmp_path, cmd):
    # before: "use another checkpoint_dir (or with resume=False)", a setting and an argument
    # the command line does not have (it has --checkpoint-dir and always resumes)
    args = {
        "flow": ["fit", "flow", good, "--layers", "1"],
        "diffusion": ["fit", "diffusion", "--dataset", good, "--steps", "10"],
        "vae": ["fit", "vae", "--dataset", good, "--latent", "1", "--likelihood", "gaussian"],
    }[cmd]
    ckpt = tmp_path / "ckpt"
    args = [*args, "--hidden", "4", "--epochs", "1", "--checkpoint-dir", ckpt, "--quiet"]
    res = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "a.st"]])
    assert res.exit_code == 0, res.output
    # a different run in the same folder
    _fails([*args, "--hidden", "5", "--out", tmp_path / "b.st"], "another --checkpoint-dir")
    res = runner.invoke(app, [str(a) for a in [*args, "--hidden", "5", "--out", tmp_path / "b.st"]])
    assert "(or delete that checkpoint)" in res.output, res.output
    assert "resume=" not in res.output and "checkpoint_dir" not in res.output
    (ckpt / "last.pt").write_bytes(b"not a checkpoint")  # a damaged file
    res = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "c.st"]])
    assert res.exit_code == 2 and "another --checkpoint-dir" in res.output, res.output
    assert "checkpoint_dir" not in res.output


@pytest.mark.parametrize(
    ("command", "switch"),
    [(["fit", "flow"], "--dequantize"), (["fit", "diffusion", "--dataset"], "--discrete")],
)
def test_levels_that_would_be_ignored_are_refused(good, tmp_path, command, switch):
    # before: digits always used 17 levels, and real-valued data none, whatever --levels said
    out = tmp_path / "x.st"
    args = ["--epochs", "1", "--hidden", "4", "--out", out, "--quiet"]
    _fails([*command, "digits", "--levels", "4", *args], "digits hold 17 grey levels")
    _fails([*command, good, "--levels", "4", *args], f"add {switch}, or drop --levels")
    assert not out.exists()
    levels = tmp_path / "levels.csv"  # grey levels 0..3 where --levels 4 is honoured
    np.savetxt(levels, np.random.default_rng(0).integers(0, 4, size=(40, 2)), delimiter=",")
    res = runner.invoke(app, [str(a) for a in [*command, levels, switch, "--levels", "4", *args]])
    assert res.exit_code == 0, res.output
    assert latentfit.load(out).n_levels == 4


@pytest.mark.parametrize("part", ["train", "val", "test"])
@pytest.mark.parametrize("command", ["flow", "diffusion", "vae"])
def test_a_value_off_the_grid_is_named_by_the_files_row(tmp_path, monkeypatch, command, part):
    """The error named the row within the shuffled training (validation, test) rows: a value
    at row 30 of the file was reported at row 20. It names the file's row, counted as the
    file's reader counts them (from 0 after the header), and the value found there."""
    from latentfit.vae.data import load_vae_data

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    vae = command == "vae"
    X = rng.uniform(size=(40, 3)) if vae else rng.integers(0, 256, size=(40, 3)).astype(float)
    np.savetxt("clean.csv", X, delimiter=",", header="a,b,c", comments="")
    row = int(getattr(load_vae_data("clean.csv", seed=0).split, part)[-1])
    X[row, 1] = 1.75 if vae else 3.5
    np.savetxt("data.csv", X, delimiter=",", header="a,b,c", comments="")
    args = {
        "flow": ["fit", "flow", "data.csv", "--dequantize", "--layers", "1"],
        "diffusion": ["fit", "diffusion", "--dataset", "data.csv", "--discrete", "--steps", "4"],
        "vae": ["fit", "vae", "--dataset", "data.csv", "--no-binarize", "--latent", "2"],
    }[command]
    res = runner.invoke(app, [*args, "--epochs", "1", "--hidden", "4", "--out", "m.st", "--quiet"])
    # the test rows too: fit vae saved a model whose test rows only 'latentfit eval' refused
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "m.st").exists()
    text = " ".join(res.output.split())
    assert f"row {row}, column 1" in text and "data.csv" in text, text
    assert f"{X[row, 1]:g}" in text and "=True" not in text and "X_" not in text, text


@pytest.mark.parametrize("cmd", ["flow", "diffusion", "vae"])
def test_a_resume_with_other_options_names_the_options_and_their_values(good, tmp_path, cmd):
    """A resume with other settings said "written by a different run: model hidden: [4] in
    the checkpoint, [5] now; lr: 0.001 ...; seed: 818069386 ..." in the library's names (the
    flow's seed one derived from --seed); it names the command line's options, the values
    given then and now, and the epochs done."""
    args = {
        "flow": ["fit", "flow", good, "--layers", "1"],
        "diffusion": ["fit", "diffusion", "--dataset", good, "--steps", "10"],
        "vae": ["fit", "vae", "--dataset", good, "--latent", "1", "--likelihood", "gaussian"],
    }[cmd]
    ckpt = tmp_path / "ckpt"
    args = [*args, "--checkpoint-dir", ckpt, "--quiet"]
    res = runner.invoke(
        app, [str(a) for a in [*args, "--hidden", "4", "--epochs", "2", "--out", tmp_path / "a.st"]]
    )
    assert res.exit_code == 0, res.output
    again = [*args, "--hidden", "5", "--lr", "0.01", "--seed", "3", "--epochs", "1"]
    res = runner.invoke(app, [str(a) for a in [*again, "--out", tmp_path / "b.st"]])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    for said in (
        "--hidden 4 in the checkpoint, --hidden 5 now",
        "--lr 0.001 in the checkpoint, --lr 0.01 now",
        "--seed 0 in the checkpoint, --seed 3 now",
        "--epochs 1: the checkpoint has done 2 epochs",
        "another --checkpoint-dir",
    ):
        assert said in text, text
    assert "different run" not in text and "lr:" not in text and "model " not in text, text
    # the same options (more epochs) resume the run
    res = runner.invoke(
        app, [str(a) for a in [*args, "--hidden", "4", "--epochs", "3", "--out", tmp_path / "c.st"]]
    )
    assert res.exit_code == 0, res.output
