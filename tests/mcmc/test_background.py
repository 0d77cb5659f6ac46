"""``compile=True`` (mcmc/background.py): a first run samples at once while child processes
compile (mcmc/builds.py), the compiled code takes over when it is stored, a later run is
compiled from its first transition with the draws of ``compile="wait"``; and what happens when
a child cannot start, fails, or belongs to another run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributions as D

from latentfit.errors import CompileCacheWarning
from latentfit.mcmc import builds, compiled_cache, sample
from latentfit.mcmc.compiled import AsModule

F64 = torch.float64
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=F64)


def _density(x):  # vectorized: (c, 2) -> (c,)
    return D.MultivariateNormal(torch.zeros(2, dtype=F64), COV).log_prob(x)


def _run(compile, n: int = 50, seed: int = 1, **kwargs):
    # the batched pace: both parts (leapfrog and tree bookkeeping) compile in children
    options = dict(
        num_chains=3, num_warmup=n, num_draws=n, generator=seed, progress_bar=False,
        pace="batch",
    )  # fmt: skip
    return sample(
        _density, {"x": torch.zeros(2)}, vectorized=True, compile=compile, **(options | kwargs)
    )


def test_a_first_run_samples_at_once_and_the_compiled_code_takes_over(tmp_path, monkeypatch):
    # static HMC: one package (the leapfrog) for the child to compile, not two; NUTS's tree
    # bookkeeping takes over the same way (the same code, test_compiled_cache.py compiles its
    # package in a child)
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    # at the usual nice +10 the child would wait for the other test worker's core
    monkeypatch.setattr("latentfit.mcmc.background.CHILD_NICE", 0)
    builds.wait(timeout=600)  # an earlier test's child in this worker would hold the one slot
    hmc = dict(kernel="hmc", num_steps=4)
    res = _run(True, **hmc)
    stats = res.warmup_stats
    since = stats["compiled_from"]
    # the run did not wait: whatever had arrived by its end took over at some transition
    assert since["leapfrog"] is None or 0 <= since["leapfrog"] <= 100
    assert stats["compiled"] == (since["leapfrog"] is not None)
    assert stats["compile_seconds"] is not None

    builds.wait(timeout=600)  # the package stored by the child, which then ends
    assert len(list((tmp_path / "compiled").glob("*.pt2"))) == 1
    assert list((tmp_path / "compiled" / "jobs").iterdir()) == []  # job and log removed

    more = res.resume(20)  # the next transition takes it over
    since = more.warmup_stats["compiled_from"]
    assert more.warmup_stats["compiled"] and 0 <= since["leapfrog"] <= 100
    assert more._runner.leapfrog_step is not None

    # a later run loads it before its first transition: the draws of compile="wait"
    again, waited = _run(True, seed=2, **hmc), _run("wait", seed=2, **hmc)
    assert again.warmup_stats["compiled_from"] == {"leapfrog": 0}
    torch.testing.assert_close(again["x"], waited["x"], rtol=0, atol=0)
    x = again["x"].reshape(-1, 2)
    assert ((x.std(0) / COV.diagonal().sqrt() - 1).abs() < 0.35).all(), x.std(0)


def test_where_no_child_can_start_the_leapfrog_compiles_here_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(builds, "spawn", lambda jobs, nice=0: [None] * len(jobs))
    with pytest.warns(CompileCacheWarning, match="no process could be started") as rec:
        res = _run(True, kernel="hmc", num_steps=3)
    assert rec[0].filename == __file__  # the user's line
    assert res.warmup_stats["compiled_from"] == {"leapfrog": 0}  # waited for, then compiled
    assert res.warmup_stats["compiled"]


def test_runs_while_children_are_busy_queue_instead_of_starting_more(tmp_path, monkeypatch):
    # a loop sampling many data sets (each a new package) starts no child beyond the slots:
    # a run whose parts found no free slot samples eagerly and compiles nothing
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(builds, "running", lambda: 99)
    before = list(builds._CHILDREN)
    res = _run(True, n=20)
    assert res.warmup_stats["compiled_from"] == {"leapfrog": None, "merge": None}
    assert not res.warmup_stats["compiled"]
    assert builds._CHILDREN == before and not list(tmp_path.rglob("*.job"))
    eager = _run(False, n=20)
    torch.testing.assert_close(res["x"], eager["x"], rtol=0, atol=0)  # the eager draws


def _job(key: str, fn=None):
    fn = fn or (lambda x: (x * 2,))
    return (key, AsModule(fn), (torch.ones(3, dtype=F64),), None, None)


def _raises(x):
    raise ValueError("no graph here")


def test_a_failing_child_says_why_and_leaves_no_job(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    (failing,) = builds.spawn([_job("k-fails", _raises)])
    assert failing is not None and failing.child is not None
    failing.wait(timeout=300)
    assert failing.done()
    assert "k-fails" not in {f.stem for f in builds.jobs_dir().glob("*.job")}
    assert not compiled_cache.exists("k-fails")
    assert "ValueError: no graph here" in failing.why_not()


def test_a_job_another_live_process_holds_is_waited_for_a_dead_ones_is_taken_over(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    folder = builds.jobs_dir()
    folder.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (folder / "k-live.job").write_text(f"{other.pid}\n")  # a live process compiles it
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        (folder / "k-dead.job").write_text(dead.stdout)  # its process is gone

        assert builds.held("k-live") is not None and builds.held("k-dead") is None
        live, taken = builds.spawn([_job("k-live"), _job("k-dead", _raises)])
        assert live is not None and live.child is None and not live.done()  # waits for it
        assert taken is not None and taken.child is not None  # ours now
        taken.wait(timeout=300)
        (folder / "k-live.job").unlink()  # the other process finished
        assert live.done()
        assert not (folder / "k-dead.job").exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_job_held_by_a_child_that_ended_unreaped_is_taken_over(tmp_path, monkeypatch):
    # found in a full test run: a worker's compiling child died holding its job and was never
    # waited for; os.kill(pid, 0) succeeds on such a zombie, so a later run of the same key
    # waited its whole 15-minute timeout for it
    import time

    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    folder = builds.jobs_dir()
    folder.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # until it has ended, without waiting for it (which reaps it)
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        (folder / "k.job").write_text(f"{child.pid}\n")
        assert builds.held("k") is None
        assert builds.Build("k").done()
    finally:
        child.wait()


def test_a_job_this_process_claimed_for_a_child_that_never_named_itself_is_taken_over(
    tmp_path, monkeypatch
):
    # found in a full test run (twice, 15 minutes each): a job file still held this worker's
    # own pid, written by _claim for a child that died before naming itself; the job looked
    # held by a live process (this one), and the next run of the key waited on itself
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(builds, "_CHILDREN", [])  # no child of this process is running
    folder = builds.jobs_dir()
    folder.mkdir(parents=True)
    (folder / "k.job").write_text(f"{os.getpid()}\n")
    assert builds.held("k") is None
    assert builds.Build("k").done()
