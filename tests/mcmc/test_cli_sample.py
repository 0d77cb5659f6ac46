"""``latentfit fit dist ... --prior ... --sample nuts --chains 4``: the posterior table."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.estimate import GammaPoisson

runner = CliRunner()


@pytest.mark.parametrize("compiled", [False, True, "batch pace"])  # False: the default, own pace
def test_fit_dist_samples_the_posterior_and_prints_its_table(tmp_path, compiled):
    x = np.array([3, 1, 4, 2, 5, 3, 2, 6, 1, 3], dtype=float)
    path = tmp_path / "counts.csv"
    path.write_text("x\n" + "\n".join(str(v) for v in x) + "\n")
    args = [
        "fit",
        "dist",
        str(path),
        "--family",
        "poisson",
        "--prior",
        "rate=gamma:2,0.5",
        "--sample",
        "nuts",
        "--chains",
        "4",
        "--draws",
        "300",
        "--warmup",
        "200",
    ] + {False: [], True: ["--compile"], "batch pace": ["--batch-pace"]}[compiled]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would be a CompileFallbackWarning
        res = runner.invoke(app, args)
    if compiled is True:  # the packages' child compiles on after the command; not beside others
        from latentfit.mcmc import builds

        builds.wait(timeout=0)
    assert res.exit_code == 0, res.output
    assert "MAP results" in res.output and "NUTS posterior" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("rate "))
    mean, sd = float(row.split()[1]), float(row.split()[2])
    exact = GammaPoisson(2.0, 0.5).update(x).posterior
    # 1200 draws with bulk ESS above 260: 4 MCSE is at most 0.25 sd; the sd within 10%
    assert abs(mean - float(exact.mean)) < 0.25 * float(exact.stddev)
    assert abs(sd / float(exact.stddev) - 1) < 0.1
    if compiled is not True:
        # the sampler's progress bar, as every fit command draws one (fit dist drew none: a
        # long --sample run was silent until its table), and --quiet, which it lacked
        assert "sampling:" in res.stderr
        quiet = runner.invoke(app, [*args, "--quiet"])
        assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == res.stdout


def test_fit_dist_sample_errors_are_cli_errors(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text("x\n1\n2\n3\n")
    res = runner.invoke(app, ["fit", "dist", str(path), "--family", "poisson", "--sample", "nuts"])
    assert res.exit_code == 2 and "--prior" in res.output
    res = runner.invoke(
        app, ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=nosuch:1"]
    )
    assert res.exit_code == 2 and "--prior takes" in res.output
    res = runner.invoke(app, ["fit", "dist", str(path), "--family", "poisson", "--compile"])
    assert res.exit_code == 2 and "--sample nuts" in res.output


def test_one_chain_says_in_cli_words_that_r_hat_is_not_computed(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n3\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = runner.invoke(
        app, [*args, "--sample", "nuts", "--chains", "1", "--draws", "30", "--warmup", "30"]
    )
    assert res.exit_code == 0, res.output
    assert "R-hat needs at least 2 chains, got 1" in res.output
    assert "run --chains 2 or more" in res.output and "num_chains" not in res.output


@pytest.mark.parametrize(
    "options, says",
    [
        (["--chains", "2"], "--chains sets the sampler"),
        (["--draws", "50", "--warmup", "10"], "--draws, --warmup set the sampler"),
        (["--compile"], "--compile sets the sampler"),
        (["--own-pace"], "--own-pace sets the sampler"),
        (["--batch-pace"], "--batch-pace sets the sampler"),
        (["--target-accept", "0.9"], "--target-accept sets the sampler"),
        (["--max-depth", "5"], "--max-depth sets the sampler"),
        (["--max-work", "1e16"], "--max-work sets the sampler"),
    ],
)
def test_sampler_options_without_sample_nuts_are_refused_not_ignored(tmp_path, options, says):
    # --chains 2 without --sample nuts printed the MAP table and drew nothing, silently
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n3\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = runner.invoke(app, [*args, *options])
    assert res.exit_code == 2, res.output
    assert says in res.output and "add --sample nuts" in res.output


def test_csv_with_sample_nuts_is_refused_before_sampling(tmp_path):
    # --csv printed the MAP rows only: the posterior was drawn and dropped without a word
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n3\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = runner.invoke(
        app, [*args, "--sample", "nuts", "--draws", "20", "--warmup", "20", "--csv"]
    )
    assert res.exit_code == 2, res.output
    assert "--csv" in res.output and "use --json" in res.output


def _counts(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n3\n")
    return ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]


def test_tree_depth_advice_names_the_max_depth_option(tmp_path):
    # the advice said "raise max_depth", an option fit dist did not have
    short = ["--sample", "nuts", "--chains", "2", "--draws", "20", "--warmup", "20"]
    res = runner.invoke(app, [*_counts(tmp_path), *short, "--max-depth", "1"])
    assert res.exit_code == 0, res.output
    assert "hit max_depth=1" in res.output or "hit --max-depth 1" in res.output
    assert "raise --max-depth" in res.output and "raise max_depth" not in res.output


def test_divergence_advice_names_the_target_accept_option(tmp_path, monkeypatch):
    # the advice said "raise target_accept ... (see divergences())": neither is at the CLI
    import torch

    from latentfit.mcmc.result import MCMCResult

    monkeypatch.setattr(MCMCResult, "num_divergent", property(lambda self: torch.tensor([3, 0])))
    short = ["--sample", "nuts", "--chains", "2", "--draws", "20", "--warmup", "20"]
    res = runner.invoke(app, [*_counts(tmp_path), *short])
    assert res.exit_code == 0, res.output
    assert "3 of 40 transitions diverged" in res.output
    assert "raise --target-accept" in res.output
    assert "divergences()" not in res.output and "target_accept" not in res.output


def test_target_accept_and_max_depth_reach_the_sampler(tmp_path, monkeypatch):
    from latentfit.mcmc import sampler

    seen = {}
    real = sampler.sample_target

    def spy(target, **kwargs):
        seen["config"] = kwargs["config"]
        return real(target, **kwargs)

    monkeypatch.setattr(sampler, "sample_target", spy)
    short = ["--sample", "nuts", "--chains", "2", "--draws", "10", "--warmup", "10"]
    res = runner.invoke(
        app, [*_counts(tmp_path), *short, "--target-accept", "0.95", "--max-depth", "6"]
    )
    assert res.exit_code == 0, res.output
    assert seen["config"].target_accept == 0.95 and seen["config"].max_depth == 6


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--target-accept", "1", "--target-accept must lie strictly between 0 and 1"),
        ("--target-accept", "0", "--target-accept must lie strictly between 0 and 1"),
        ("--target-accept", "nan", "--target-accept must be a finite number"),
        ("--max-depth", "0", "--max-depth must be"),
        ("--max-depth", "40", "--max-depth must be"),
    ],
)
def test_bad_target_accept_and_max_depth_are_refused(tmp_path, option, value, says):
    res = runner.invoke(app, [*_counts(tmp_path), "--sample", "nuts", option, value])
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output


def test_fit_dist_samples_a_multivariate_normal_covariance(tmp_path):
    # refused after the MAP fit: "the PositiveDefinite() constraint is not supported by the
    # samplers; ... build the matrix inside log_density", which a CLI user cannot do
    x = np.random.default_rng(0).normal(size=(30, 2)) @ np.array([[1.0, 0.0], [0.5, 0.8]])
    path = tmp_path / "xy.csv"
    np.savetxt(path, x, delimiter=",")
    args = ["fit", "dist", str(path), "--family", "mvn", "--prior", "loc=normal:0,1000"]
    args += ["--sample", "nuts", "--chains", "4", "--draws", "500", "--warmup", "300"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    # a flat prior on the covariance's free entries and a near-flat one on the mean: the
    # covariance's marginal posterior is inverse-Wishart(n - d - 2, S), of mean S / (n - 2d - 3)
    n, d = x.shape
    xc = x - x.mean(0)
    exact = xc.T @ xc / (n - 2 * d - 3)
    table = res.output.split("NUTS posterior")[1]
    for i, j in ((0, 0), (1, 0), (1, 1)):
        row = next(r for r in table.splitlines() if r.startswith(f"covariance_matrix[{i}, {j}]"))
        mean, mcse = float(row.split()[2]), float(row.split()[6])
        assert abs(mean - exact[i, j]) < 4 * mcse, row


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-work", "10"], r"raise --max-work to \d+"),
        (["--chains", "100000", "--draws", "100000000", "--max-work", "inf"], "would need"),
    ],
)
def test_fit_dist_sample_refuses_a_run_too_large_before_the_map_fit(
    tmp_path, monkeypatch, options, message
):
    """--max-work and the memory check of --sample nuts ran only after the MAP fit, so a run
    refused by them did the fit's work first; they now refuse it before fit_map is called."""
    import latentfit.estimate

    monkeypatch.chdir(tmp_path)
    Path("counts.csv").write_text("x\n3\n1\n4\n2\n5\n")
    calls = []

    def fit_map(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the MAP fit ran before the sampler's checks")

    monkeypatch.setattr(latentfit.estimate, "fit_map", fit_map)
    args = ["fit", "dist", "counts.csv", "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = runner.invoke(app, args + ["--sample", "nuts"] + options)
    assert res.exit_code == 2, res.output
    assert re.search(message, res.output) and "error:" in res.output
    assert calls == []
