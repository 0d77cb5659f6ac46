"""`latentfit fit flow|diffusion` and `latentfit density score|sample` end to end, tiny."""

from __future__ import annotations

import numpy as np
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
