"""``latentfit fit diffusion`` with the learned variance and the Gaussian skip."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app

runner = CliRunner()


def test_fit_diffusion_learned_variance_with_skip(tmp_path):
    out = tmp_path / "ddpm.safetensors"
    args = ["fit", "diffusion", "--dataset", "digits", "--steps", "10", "--hidden", "16"]
    args += ["--n-hidden", "1", "--epochs", "1", "--eval-t", "3", "--out", str(out), "--quiet"]
    args += ["--variance", "learned", "--vlb-weight", "0.01", "--gaussian-skip"]
    args += ["--clip-denoised", "--decoder-fraction", "0.2"]
    res = runner.invoke(app, [*args, "--skip-floor", "0.003"])
    assert res.exit_code == 0, res.output
    model = latentfit.load(out)
    assert model.variance == "learned" and model.vlb_weight == 0.01
    assert model.gaussian_skip and model.skip_floor_ == 0.003 and model.clip_denoised
    assert model.decoder_fraction == 0.2
    res = runner.invoke(app, [*args, "--variance", "wide", "--force"])
    assert res.exit_code == 2 and "variance must be 'small', 'large' or 'learned'" in res.output
    res = runner.invoke(app, [*args, "--skip-floor", "0", "--force"])
    assert res.exit_code == 2 and "skip_floor must be a positive number" in res.output


def test_density_sample_refuses_a_count_that_would_run_for_days(tmp_path, monkeypatch):
    from latentfit.diffusion.process import DiffusionModule

    monkeypatch.chdir(tmp_path)
    args = ["fit", "diffusion", "--dataset", "faithful", "--steps", "1000", "--epochs", "1"]
    assert runner.invoke(app, [*args, "--out", "d.safetensors", "--quiet"]).exit_code == 0
    monkeypatch.setattr(DiffusionModule, "sample", lambda *a, **k: pytest.fail("drew"))
    for cmd in (["density", "sample"], ["sample"]):
        res = runner.invoke(app, [*cmd, "d.safetensors", "-n", "10000000", "--out", "x.npy"])
        assert res.exit_code == 2, res.output
        assert "error: -n 10,000,000 draws through 1,000 denoising steps" in res.output
        assert "use -n <= 1,213,869" in res.output and "max_work" not in res.output


def test_max_work_sets_the_sampling_cap_and_the_refusal_names_it(tmp_path, monkeypatch):
    # the 10**15 cap had no option: a command line told "too much work" could not go on
    monkeypatch.chdir(tmp_path)
    args = ["fit", "diffusion", "--dataset", "faithful", "--steps", "1000", "--epochs", "1"]
    assert runner.invoke(app, [*args, "--out", "d.safetensors", "--quiet"]).exit_code == 0
    res = runner.invoke(app, ["sample", "d.safetensors", "-n", "10000000", "--out", "x.npy"])
    assert res.exit_code == 2 and "raise the limit with --max-work" in res.output, res.output
    per_draw = 10**15 // 1_213_869  # the default cap's largest -n (test above): ~8.2e8 a draw
    for cmd in (["density", "sample"], ["sample"]):
        res = runner.invoke(
            app, [*cmd, "d.safetensors", "-n", "3", "--out", "x.npy", "--max-work", "1e9"]
        )
        assert res.exit_code == 2, res.output
        assert "more than the 1e+09 allowed;" in res.output and "use -n <= 1," in res.output
        for cap in (f"{2 * per_draw + per_draw // 2}", "inf"):
            out = f"y{len(cmd)}{cap}.npy"
            res = runner.invoke(
                app, [*cmd, "d.safetensors", "-n", "2", "--out", out, "--max-work", cap]
            )
            assert res.exit_code == 0, res.output
        for bad in ("0", "nan"):
            res = runner.invoke(
                app, [*cmd, "d.safetensors", "-n", "2", "--out", "z.npy", "--max-work", bad]
            )
            assert res.exit_code == 2 and "error: --max-work takes" in res.output, res.output
