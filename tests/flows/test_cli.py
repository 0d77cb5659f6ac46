"""`latentfit fit flow|diffusion` and `latentfit density score|sample` end to end, tiny."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app

runner = CliRunner()


def test_fit_flow_saves_a_model_that_scores_like_the_printed_figure(tmp_path):
    data = tmp_path / "moons.csv"
    np.savetxt(data, make_moons(300, noise=0.05, random_state=0)[0], delimiter=",")
    out = tmp_path / "flow.safetensors"
    args = ["fit", "flow", str(data), "--flow", "realnvp", "--layers", "2", "--hidden", "16"]
    args += ["--epochs", "2", "--out", str(out), "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    model = latentfit.load(out)
    assert isinstance(model, latentfit.RealNVP) and "exact" in res.output
    again = runner.invoke(app, args)  # the model file exists now
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    scores = tmp_path / "scores.txt"
    res = runner.invoke(app, ["density", "score", str(out), str(data), "--out", str(scores)])
    assert res.exit_code == 0, res.output
    X = np.loadtxt(data, delimiter=",")
    np.testing.assert_allclose(np.loadtxt(scores), model.score_samples(X), rtol=1e-5, atol=1e-5)
    draws = tmp_path / "draws.csv"
    res = runner.invoke(app, ["density", "sample", str(out), "-n", "7", "--out", str(draws)])
    assert res.exit_code == 0, res.output
    assert np.loadtxt(draws, delimiter=",").shape == (7, 2)


def test_fit_diffusion_on_digits_and_sample_a_png(tmp_path):
    out = tmp_path / "ddpm.safetensors"
    args = ["fit", "diffusion", "--dataset", "digits", "--steps", "10", "--hidden", "16"]
    args += ["--n-hidden", "1", "--epochs", "1", "--eval-t", "3", "--out", str(out), "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "upper bound" in res.output and "decoder" in res.output
    model = latentfit.load(out)
    assert isinstance(model, latentfit.DDPM) and model.n_levels == 17
    png = tmp_path / "s.png"
    res = runner.invoke(app, ["density", "sample", str(out), "-n", "4", "--out", str(png)])
    assert res.exit_code == 0 and png.stat().st_size > 0, res.output


def test_cli_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["fit", "flow", str(tmp_path / "none.csv"), "--quiet"])
    assert res.exit_code == 2 and "error: no data file" in res.output
    res = runner.invoke(app, ["density", "score", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 2 and "error:" in res.output
    res = runner.invoke(app, ["fit", "flow", "mnist", "--flow", "glow", "--epochs", "1", "--quiet"])
    assert res.exit_code == 2 and "flow must be" in res.output


def test_fit_flow_and_diffusion_ask_how_to_read_a_file_of_0s_and_1s(tmp_path, monkeypatch):
    """A file of 0s and 1s with --levels 5 holds the codes 0 and 1 or the levels 0 and 4:
    refused until --read-as says which; the model file records it, and score reads the file
    as those levels (against the network given the levels themselves)."""
    import torch

    monkeypatch.chdir(tmp_path)
    binary = np.random.default_rng(0).integers(0, 2, (60, 3))
    np.savetxt("b.csv", binary, delimiter=",", fmt="%d")
    fits = {
        "flow": ["fit", "flow", "b.csv", "--dequantize", "--layers", "1", "--hidden", "8"],
        "diffusion": ["fit", "diffusion", "--dataset", "b.csv", "--discrete", "--steps", "5"]
        + ["--hidden", "8", "--n-hidden", "1", "--eval-t", "3"],
    }
    for kind, args in fits.items():
        args = [*args, "--levels", "5", "--epochs", "1", "--out", "m.lf", "--force", "--quiet"]
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "error: b.csv" in res.output, res.output
        assert "holds only 0s and 1s" in res.output and "--read-as codes" in res.output
        for read_as, scale in (("codes", 1), ("intensities", 4)):
            res = runner.invoke(app, [*args, "--read-as", read_as])
            assert res.exit_code == 0, res.output
            model = latentfit.load("m.lf")
            assert model.level_scale_ == scale
            res = runner.invoke(app, ["density", "score", "m.lf", "b.csv", "--out", "s.txt"])
            assert res.exit_code == 0, res.output
            levels = torch.as_tensor(binary * scale, dtype=torch.float32)
            gen = torch.Generator().manual_seed(0)  # the draws of score's random_state=0
            with torch.no_grad():
                if kind == "flow":
                    expected = model.module_(levels, gen).numpy()
                else:
                    expected = -model.module_.bound(levels / 2 - 1, gen, 3).total.numpy()
            np.testing.assert_allclose(np.loadtxt("s.txt"), expected, atol=1e-5)
            (tmp_path / "s.txt").unlink()
    res = runner.invoke(app, ["fit", "flow", "b.csv", "--read-as", "codes", "--quiet"])
    assert res.exit_code == 2 and "add --dequantize, or drop --read-as" in res.output


def test_density_sample_csv_of_8_bit_intensities_scores_back(tmp_path, monkeypatch):
    """Draws of a flow and a DDPM fitted to intensities k/255 written as .csv read back on the
    grid: density score gives them the scores of the same draws written as .npy."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savetxt("i.csv", rng.integers(0, 256, (80, 4)) / 255, delimiter=",")
    fits = {
        "flow": ["fit", "flow", "i.csv", "--dequantize", "--layers", "1", "--hidden", "8"],
        "diffusion": ["fit", "diffusion", "--dataset", "i.csv", "--discrete", "--steps", "5"]
        + ["--hidden", "8", "--n-hidden", "1", "--eval-t", "3"],
    }
    for args in fits.values():
        res = runner.invoke(app, [*args, "--epochs", "1", "--out", "m.lf", "--force", "--quiet"])
        assert res.exit_code == 0, res.output
        assert latentfit.load("m.lf").level_scale_ == 255
        for out in ("d.csv", "d.npy"):
            res = runner.invoke(app, ["density", "sample", "m.lf", "-n", "50", "--out", out])
            assert res.exit_code == 0, res.output
        draws = np.load("d.npy")
        assert np.array_equal(np.loadtxt("d.csv", delimiter=",", dtype=np.float32), draws)
        for data in ("d.csv", "d.npy"):
            res = runner.invoke(app, ["density", "score", "m.lf", data, "--out", data + ".txt"])
            assert res.exit_code == 0, res.output
        np.testing.assert_array_equal(np.loadtxt("d.csv.txt"), np.loadtxt("d.npy.txt"))
        for name in ("d.csv", "d.npy", "d.csv.txt", "d.npy.txt"):
            (tmp_path / name).unlink()


def test_show_says_how_many_levels_a_flow_or_ddpm_has_and_how_it_reads_files(tmp_path, monkeypatch):
    """show explains level_scale_ of 8-bit models (codes 0..4 or intensities k/4) under
    "levels", not as an unexplained number under "fit"; models of real data show no levels."""
    import json

    monkeypatch.chdir(tmp_path)
    codes = np.random.default_rng(0).integers(0, 5, (60, 3))
    np.savetxt("c.csv", codes, delimiter=",", fmt="%d")
    np.savetxt("i.csv", codes / 4, delimiter=",")
    flow = ["fit", "flow", "--dequantize", "--layers", "1", "--hidden", "8"]
    ddpm = ["fit", "diffusion", "--discrete", "--steps", "5", "--hidden", "8", "--n-hidden", "1"]
    ddpm += ["--eval-t", "3", "--dataset"]
    cases = [
        (flow, "c.csv", 1.0, "uniform dequantisation", "integer level codes 0..4"),
        (ddpm, "i.csv", 4.0, "discrete decoder", "intensities in [0, 1], level k as k/4"),
    ]
    for args, data, scale, reader, reads in cases:
        cmd = [*args, data, "--levels", "5", "--epochs", "1", "--out", "m.lf", "--force"]
        assert runner.invoke(app, [*cmd, "--quiet"]).exit_code == 0
        text = runner.invoke(app, ["show", "m.lf"]).output
        assert f"levels: 5 ({reader}); data files are read as {reads}\n" in text, text
        assert "level_scale_" not in text
        got = json.loads(runner.invoke(app, ["show", "m.lf", "--json"]).stdout)
        assert got["levels"] == {"n_levels": 5, "level_scale": scale, "reads": reads}
        assert "level_scale_" not in got["fit"]
    real = ["fit", "flow", "i.csv", "--layers", "1", "--hidden", "8", "--epochs", "1"]
    assert runner.invoke(app, [*real, "--out", "r.lf", "--quiet"]).exit_code == 0
    assert "levels:" not in runner.invoke(app, ["show", "r.lf"]).output


@pytest.mark.parametrize(
    ("fit", "switch", "codes", "said"),
    [
        ("flow", "--dequantize", False, "for integer level codes 0..4, divide them by 4 first"),
        ("diffusion", "--discrete", False, "for integer level codes 0..4, divide them by 4 first"),
        ("flow", "--dequantize", True, "for intensities k/4 in [0, 1], multiply them by 4 first"),
    ],
)
def test_density_score_names_the_file_whose_value_is_off_the_levels(
    tmp_path, monkeypatch, fit, switch, codes, said
):
    """A value between two levels in the file given to density score: the error names the
    file, its row and column (not the library's X), and says what applies to scoring. It
    said "Pass 8-bit data, or real-valued data with the 8-bit option off", which is advice
    for a fit: the model's levels are fixed once fitted."""
    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).integers(0, 5, (60, 3)) / (1 if codes else 4)
    np.savetxt("i.csv", X, delimiter=",")
    data = ["i.csv"] if fit == "flow" else ["--dataset", "i.csv"]  # diffusion: a file too
    args = ["fit", fit, *data, switch, "--levels", "5", "--epochs", "1", "--out", "m.lf"]
    args += ["--layers", "1", "--hidden", "8"] if fit == "flow" else ["--steps", "10"]
    res = runner.invoke(app, [*args, "--quiet"])
    assert res.exit_code == 0, res.output
    X[2, 1] = 0.3 * (4 if codes else 1)
    np.savetxt("off.csv", X, delimiter=",")
    res = runner.invoke(app, ["density", "score", "m.lf", "off.csv"])
    assert res.exit_code == 2, res.output
    grid = "integers 0..4" if codes else "multiples of 1/4 in [0, 1]"
    held = "1.2" if codes else "0.3"
    assert " ".join(res.output.split()) == (
        f"error: this model was fitted with {switch} and reads off.csv as 5 levels ({grid}); "
        f"row 2, column 1 holds {held}. Round every value to the nearest level ({said})"
    )


def test_fit_flow_of_one_column_points_at_the_commands_for_it(tmp_path, monkeypatch):
    """A flow needs 2 features; the library points a Python caller at latentfit.fit_mle or a
    GaussianMixture, the command line at the commands that fit those."""
    monkeypatch.chdir(tmp_path)
    np.savetxt("one.csv", np.random.default_rng(0).normal(size=(50, 1)), delimiter=",")
    res = runner.invoke(app, ["fit", "flow", "one.csv", "--epochs", "1", "--quiet"])
    assert res.exit_code == 2, res.output
    assert (
        "error: one.csv has 1 feature; a flow's layers split or order at least 2 features. Fit "
        "a one-dimensional density with 'latentfit fit dist' or 'latentfit fit gmm'"
    ) in " ".join(res.output.split()), res.output
