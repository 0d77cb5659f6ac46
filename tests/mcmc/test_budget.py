"""Every sampler checks its counts and what they imply in memory before its first transition
(mcmc/budget.py): a mistyped count is named (ParameterError), a run that cannot fit in memory
is refused up front (ResourceLimitError) instead of running for minutes or stopping on torch's
allocator, and ordinary runs are not refused."""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.errors import ParameterError, ResourceLimitError
from latentfit.mcmc import gibbs_gmm, gibbs_hmm, sample
from latentfit.mcmc.budget import check_counts, nuts_parts
from latentfit.mcmc.svgd import svgd

X = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _log_density(mu):
    return -0.5 * (mu**2).sum()


def _nuts(**kw):
    args = {"init": {"mu": torch.zeros(2)}, "num_warmup": 20, "num_draws": 10}
    return sample(_log_density, **{**args, "progress_bar": False, **kw})


def _svgd(**kw):
    args = {"num_particles": 10, "num_iter": 2, "progress_bar": False}
    return svgd(_log_density, {"mu": torch.zeros(2)}, **{**args, **kw})


RUNS = {
    "nuts": _nuts,
    "gibbs_gmm": lambda **kw: gibbs_gmm(X, 2, **{"num_warmup": 2, "num_draws": 3, **kw}),
    "gibbs_hmm": lambda **kw: gibbs_hmm(X, 2, **{"num_warmup": 2, "num_draws": 3, **kw}),
}


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize(
    "name, value",
    [
        ("num_chains", 0),
        ("num_chains", 2.5),
        ("num_chains", "4"),
        ("num_chains", True),
        ("num_draws", 0),
        ("num_draws", None),
        ("num_warmup", -1),
        ("num_warmup", 1.0),
    ],
)
def test_a_bad_count_is_named(run, name, value):
    with pytest.raises(ParameterError, match=name):
        RUNS[run](**{name: value})


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"num_particles": 1}, "num_particles"),
        ({"num_particles": "5"}, "num_particles"),
        ({"num_iter": 1.5}, "num_iter"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": "0.1"}, "step_size"),
        ({"init_scale": float("nan")}, "init_scale"),
    ],
)
def test_a_bad_svgd_setting_is_named(kw, name):
    with pytest.raises(ParameterError, match=name):
        _svgd(**kw)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"max_depth": 0}, "max_depth"),
        ({"max_depth": "10"}, "max_depth"),
        ({"num_steps": 2.5, "kernel": "hmc"}, "num_steps"),
        ({"target_accept": "0.8"}, "target_accept"),
    ],
)
def test_a_bad_sampler_setting_is_named(kw, name):
    with pytest.raises(ParameterError, match=name):
        _nuts(**kw)


@pytest.mark.parametrize(
    "run, kw, part",
    [
        ("nuts", {"num_chains": 10**9}, "trajectory"),
        ("nuts", {"num_draws": 10**12}, "draws"),
        ("nuts", {"max_depth": 100}, "max_depth"),
        ("gibbs_gmm", {"num_chains": 10**9}, "co-assignment"),
        ("gibbs_gmm", {"num_draws": 10**12}, "draws"),
        ("gibbs_hmm", {"num_draws": 10**12}, "draws"),
    ],
)
def test_a_run_beyond_the_machine_is_refused_before_it_starts(run, kw, part):
    with pytest.raises(ResourceLimitError, match=part):
        RUNS[run](**kw)


def test_too_many_components_states_or_particles_are_refused():
    with pytest.raises(ResourceLimitError, match="1000000000-component"):
        gibbs_gmm(X, 10**9, num_draws=3)
    with pytest.raises(ResourceLimitError, match="1000000000-state"):
        gibbs_hmm(X, 10**9, num_draws=3)
    with pytest.raises(ResourceLimitError, match="10,000,000 particles"):
        _svgd(num_particles=10**7)


def test_resume_checks_the_draws_it_adds():
    res = _nuts(num_chains=2)
    with pytest.raises(ResourceLimitError, match="draws"):
        res.resume(10**12, progress_bar=False)
    assert res.resume(5, progress_bar=False).num_draws == 15


def test_the_check_follows_the_memory_available(monkeypatch):
    # 4 chains x 1,000,000 draws of 2 parameters: ~270 MB of records, refused with 100 MB free
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 100 * 10**6)
    with pytest.raises(ResourceLimitError, match="100,000,000 bytes"):
        _nuts(num_draws=10**6)
    # a run of the usual size is not refused on a small machine
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 50 * 10**6)
    assert _nuts(num_chains=4, num_draws=1000).num_draws == 1000
    assert gibbs_gmm(X, 3, num_draws=200).weights.shape[:2] == (4, 200)
    assert _svgd(num_particles=200).u.shape == (200, 2)


def test_the_estimate_covers_the_records_a_run_keeps():
    # the stacked records of a run, measured, are within the estimate of its draws
    res = _nuts(num_chains=3, num_draws=50)
    kept = sum(t.numel() * t.element_size() for t in res._rec.values())
    parts = nuts_parts(3, 50, 20, 2, 2, 8, leaves=512, dense=False)
    assert kept <= parts["draws"] <= 4 * kept


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.integers(-3, 10**12),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.none(),
        st.booleans(),
        st.integers(0, 5).map(np.int64),
    ),
    st.sampled_from(["num_chains", "num_warmup", "num_draws"]),
)
def test_check_counts_returns_ints_or_names_the_argument(value, name):
    counts = {"num_chains": 1, "num_warmup": 0, "num_draws": 1, name: value}
    try:
        got = check_counts(**counts)
    except ParameterError as exc:
        assert name in str(exc)
        return
    assert all(type(v) is int for v in got)
    assert dict(zip(("num_chains", "num_warmup", "num_draws"), got, strict=True))[name] == value


@pytest.mark.parametrize("option, value", [("--chains", "100000000"), ("--draws", "10000000000")])
def test_the_cli_refuses_a_sampling_run_beyond_the_machine(tmp_path, option, value):
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = CliRunner().invoke(app, [*args, "--sample", "nuts", option, value])
    assert res.exit_code == 2, res.output
    assert "would need" in res.output and "use fewer chains or draws" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_a_bad_count_is_named_on_every_path_into_the_sampler():
    from latentfit.estimate import fit_map

    x = np.array([0.3, -1.2, 0.8, 1.9, -0.4])
    fit = fit_map("normal", x, prior={"loc": torch.distributions.Normal(0.0, 10.0)})
    with pytest.raises(ParameterError, match="num_chains"):
        fit.sample_posterior(num_chains=2.5, progress_bar=False)
    with pytest.raises(ResourceLimitError, match="chains"):
        fit.sample_posterior(num_chains=10**9, num_draws=5, progress_bar=False)
    with pytest.raises(ParameterError, match="num_chains"):
        _nuts(num_chains=2.5, init_strategy="init")


VALUES = st.one_of(
    st.integers(-3, 4),
    st.integers(10**12, 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.sampled_from(["nuts", "hmc", "diag", "dense", "init", "uniform", 0.5, 0.99]),
)
SETTINGS = {
    "nuts": (
        _nuts,
        [
            "num_chains",
            "num_warmup",
            "num_draws",
            "max_depth",
            "num_steps",
            "target_accept",
            "kernel",
            "metric",
            "init_strategy",
        ],
    ),
    "gibbs_gmm": (RUNS["gibbs_gmm"], ["num_chains", "num_warmup", "num_draws"]),
    "svgd": (_svgd, ["num_particles", "num_iter", "step_size", "init_scale"]),
}


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(sorted(SETTINGS)), st.data())
def test_any_setting_runs_or_is_refused_with_a_documented_error(run, data):
    from latentfit.errors import DOCUMENTED_ERRORS

    call, names = SETTINGS[run]
    name = data.draw(st.sampled_from(names))
    value = data.draw(VALUES)
    try:
        call(**{name: value})
    except DOCUMENTED_ERRORS as exc:
        assert str(exc).strip(), f"{name}={value!r}: an empty message"


@pytest.mark.parametrize(
    "kw, says",
    [
        ({"num_draws": 10**12}, "use fewer chains or draws"),
        ({"num_warmup": 10**12, "num_draws": 1}, r"use fewer warm-up iterations \(num_warmup\)"),
        ({"max_depth": 40, "num_draws": 1}, "use a smaller max_depth"),
    ],
)
def test_a_run_beyond_the_machine_is_told_what_shrinks_its_largest_part(kw, says):
    # a warm-up of 10**12 iterations was told "use fewer chains or draws, or a smaller
    # max_depth", none of which shrinks it
    with pytest.raises(ResourceLimitError, match=says) as err:
        _nuts(**kw)
    assert ("draws" in says) == ("fewer chains or draws" in str(err.value))


def test_the_cli_names_warmup_when_the_warm_up_is_too_large(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = CliRunner().invoke(app, [*args, "--sample", "nuts", "--warmup", "10000000000000"])
    assert res.exit_code == 2, res.output
    assert "warm-up" in res.output and "use a smaller --warmup" in res.output


def _never_sampled(*args, **kwargs):
    raise AssertionError("the run started: its iterations were not refused up front")


@pytest.mark.parametrize(
    "run, kw, option",
    [
        ("svgd", {"num_iter": 10**12}, "num_iter"),
        ("nuts", {"num_warmup": 10**12, "num_chains": 1}, r"num_warmup \+ num_draws"),
        ("nuts", {"num_draws": 10**9, "num_chains": 1}, r"num_warmup \+ num_draws"),
        ("gibbs_gmm", {"num_warmup": 10**12}, r"num_warmup \+ num_draws"),
        ("gibbs_hmm", {"num_warmup": 10**12}, r"num_warmup \+ num_draws"),
    ],
)
def test_iterations_that_would_run_for_days_are_refused_before_the_first(
    monkeypatch, run, kw, option
):
    # warm-up iterations keep no records, so no memory check saw them: num_warmup=10**12 ran
    # for ever (gibbs_gmm, svgd's num_iter; NUTS on a machine with memory for its warm-up
    # statistics); with ample memory, only the arithmetic can refuse these
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**18)
    for module in ("latentfit.mcmc.gibbs", "latentfit.mcmc.gibbs_hmm"):  # its first sweep
        monkeypatch.setattr(importlib.import_module(module), "state_statistics", _never_sampled)
    calls = {"svgd": lambda **k: svgd(_never_sampled, {"mu": torch.zeros(2)}, **k)}
    calls["nuts"] = lambda **k: sample(_never_sampled, {"mu": torch.zeros(2)}, **k)
    call = calls.get(run, RUNS.get(run))
    with pytest.raises(
        ResourceLimitError, match=rf"about a day of one CPU core\); use {option} <="
    ):
        call(progress_bar=False, **kw) if run in calls else call(**kw)


def test_resume_refuses_draws_that_would_run_for_days(monkeypatch):
    started = []

    def log_density(mu):  # eager (compile=False): called on every leapfrog step
        if started:
            _never_sampled()
        return _log_density(mu)

    res = sample(log_density, {"mu": torch.zeros(2)}, num_chains=2, num_warmup=20,
                 num_draws=10, compile=False, progress_bar=False)  # fmt: skip
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**18)
    started.append(True)
    with pytest.raises(ResourceLimitError, match="use num_draws <= "):
        res.resume(10**12, progress_bar=False)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**16), st.integers(0, 10**12))
def test_the_iterations_named_as_the_limit_are_the_most_that_fit(iterations, per):
    # the count the message names runs; one more is refused with the same count named
    from latentfit.mcmc.budget import check_iterations

    try:
        check_iterations("a run", iterations, per, option="n")
    except ResourceLimitError as exc:
        most = int(str(exc).split("use n <= ")[1].split(", or")[0].replace(",", ""))
        assert most < iterations
        if most * (10**7 + per) <= 10**15:  # one iteration at least is always named
            check_iterations("a run", most, per, option="n")
        with pytest.raises(ResourceLimitError, match=f"use n <= {most:,}, or pass max_work="):
            check_iterations("a run", most + 1, per, option="n")


def test_the_cli_names_warmup_and_draws_when_the_run_would_take_days(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**18)
    monkeypatch.setattr("latentfit.mcmc.sampler.sample_target", _never_sampled)
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    res = CliRunner().invoke(app, [*args, "--sample", "nuts", "--warmup", "10000000000000"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "use --warmup + --draws <= 99,999,960" in res.output


def _fit_map(**kw):
    from latentfit.estimate import fit_map, get_family

    counts = torch.tensor([3.0, 1.0, 4.0, 2.0, 5.0, 3.0], dtype=torch.float64)
    prior = {"rate": torch.distributions.Gamma(torch.tensor(2.0), torch.tensor(0.5))}
    fit = fit_map(get_family("poisson"), counts, prior=prior)
    args = {"num_chains": 2, "num_warmup": 20, "num_draws": 10, "progress_bar": False}
    return fit.sample_posterior(**{**args, "compile": False, **kw})


CAPPED = {
    **RUNS,
    "nuts": lambda **kw: _nuts(num_chains=2, compile=False, **kw),
    "svgd": lambda **kw: _svgd(num_iter=5, **kw),
    "sample_posterior": _fit_map,
}


@pytest.mark.parametrize("run", list(CAPPED))
def test_a_run_over_max_work_is_refused_naming_it_and_runs_once_it_is_raised(run):
    # the 1e15 cap (about a day of one core) had no knob: a run refused by it could not be
    # made at all, while flows, DDPMs and VAEs took max_work=. These small runs of 5 to 30
    # iterations take at least 1e7 multiply-adds an iteration (a Gibbs sweep of the HMM's 40
    # rows 5e7): a cap of 2.5 iterations refuses them, naming 2 iterations as the most
    cap = 12 * 10**7 if run == "gibbs_hmm" else 3 * 10**7
    with pytest.raises(
        ResourceLimitError, match=re.escape(f"more than the {cap:.2g} allowed; use ")
    ) as err:
        CAPPED[run](max_work=cap)
    assert str(err.value).endswith(" <= 2, or pass max_work=None to run it anyway")
    for raised in (None, math.inf, 1e16):  # the same call runs
        CAPPED[run](max_work=raised)


@pytest.mark.parametrize("value", [0, -1, 0.5, math.nan, -math.inf, "1e16", True])
def test_a_max_work_that_is_no_cap_is_named(value):
    with pytest.raises(ParameterError, match=r"max_work must be a number of multiply-adds"):
        _svgd(max_work=value)


def test_a_cap_below_one_iteration_names_the_cap_that_fits_one():
    from latentfit.mcmc.budget import check_iterations

    with pytest.raises(
        ResourceLimitError, match=r"not one iteration fits: pass max_work >= "
    ) as err:
        check_iterations("a run", 3, 5, option="n", max_work=1000)
    need = int(str(err.value).split(">= ")[1].split(" ")[0])
    assert need == 10**7 + 5
    check_iterations("a run", 1, 5, option="n", max_work=need)  # that cap runs one


def test_resume_takes_its_own_max_work():
    res = sample(_log_density, {"mu": torch.zeros(2)}, num_chains=2, num_warmup=20,
                 num_draws=10, compile=False, progress_bar=False)  # fmt: skip
    with pytest.raises(ResourceLimitError, match="use num_draws <= 1, or pass max_work=None"):
        res.resume(5, progress_bar=False, max_work=2 * 10**7)
    assert res.resume(5, progress_bar=False, max_work=None).num_draws == 15


def test_the_cli_takes_max_work_and_names_it_when_a_run_is_over_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    args += ["--sample", "nuts", "--chains", "1", "--warmup", "20", "--draws", "10"]
    res = CliRunner().invoke(app, [*args, "--max-work", "1e8"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "use --warmup + --draws <= 9," in res.output
    assert "raise the limit with --max-work" in res.output
    res = CliRunner().invoke(app, [*args, "--max-work", "1e4"])
    assert res.exit_code == 2 and "raise --max-work to 10000001 or more" in res.output
    for raised in ("1e9", "inf"):
        res = CliRunner().invoke(app, [*args, "--max-work", raised])
        assert res.exit_code == 0, res.output
        assert "NUTS posterior" in res.output
