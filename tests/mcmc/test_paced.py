"""NUTS with every chain at its own pace (SamplerConfig(pace="own"), mcmc/paced.py).

Its trees are built leaf by leaf by a compiled kernel, the batched kernel's a subtree at a
time: the same algorithm, with other random numbers. So the tests hold it to exact targets,
to the batched kernel's tree statistics from the same adapted state, and to its own
reproducibility (its random numbers are keyed by chain and transition, so a resumed run is
the longer run, bit for bit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
import torch.distributions as D

from latentfit.errors import CompileFallbackWarning, ParameterError
from latentfit.mcmc import paced_compile, sample
from latentfit.mcmc.paced import run_paced
from tests.mcmc.test_nuts import COV, MEAN, _check_moments, _mvn

F64, F32 = torch.float64, torch.float32


def test_paced_samples_the_mvn_with_a_dense_metric_and_a_diagonal_one():
    for metric in ("dense", "diag"):
        r = sample(
            _mvn, {"x": torch.zeros(3)}, num_chains=4, num_warmup=300, num_draws=400,
            metric=metric, pace="own", generator=0, progress_bar=False,
        )  # fmt: skip
        _check_moments(r["x"], MEAN, COV.diagonal().sqrt())
        assert r.warmup_stats["n_leapfrog"].shape == (4, 300)
        depth, n = r.sample_stats["tree_depth"], r.sample_stats["n_leapfrog"]
        assert ((2**depth - 1 <= n) & (n <= 2 ** (depth + 1) - 1)).all()
    # each window's metric is each chain's own estimate: the variances learnt
    assert torch.allclose(r.inv_metric.mean(0), COV.diagonal(), rtol=0.35)


def _adapted(metric="diag", chains=8):
    r = sample(
        _mvn, {"x": torch.zeros(3)}, num_chains=chains, num_warmup=300, num_draws=1,
        metric=metric, generator=3, progress_bar=False,
    )  # fmt: skip
    return r._runner


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_from_one_adapted_state_the_trees_are_those_of_the_batched_kernel(metric):
    """The same step sizes, metric and start, 8 chains x 600 transitions each way: the tree
    depths' distribution, the mean number of leapfrog steps and the acceptance agree within
    their sampling error (a U-turn check missed or added moves them by far more: stopping
    one leaf late at every subtree adds ~1 step a tree)."""
    run = _adapted(metric)
    before = run.snapshot()
    step = run.step.clone()
    batched = run.draw(600, False)
    run.restore(before)
    run.step = step
    paced = run_paced(run, 600)
    for k, tol in (("n_leapfrog", 0.06), ("accept_stat", 0.02)):
        a, b = batched[k].double().mean(), paced[k].double().mean()
        assert abs(a - b) / a < tol, (k, float(a), float(b))
    ha = torch.bincount(batched["tree_depth"].flatten(), minlength=8)[:8].double() / 4800
    hb = torch.bincount(paced["tree_depth"].flatten(), minlength=8)[:8].double() / 4800
    assert (ha - hb).abs().max() < 0.05, (ha, hb)
    _check_moments(paced["u"].unsqueeze(-1)[..., 0], MEAN, COV.diagonal().sqrt())


def test_same_seed_same_draws_and_a_resume_is_the_longer_run():
    kw = dict(num_chains=3, num_warmup=60, pace="own", progress_bar=False)
    a = sample(_mvn, {"x": torch.zeros(3)}, num_draws=30, generator=7, **kw)
    b = sample(_mvn, {"x": torch.zeros(3)}, num_draws=30, generator=7, **kw)
    assert torch.equal(a["x"], b["x"])
    longer = sample(_mvn, {"x": torch.zeros(3)}, num_draws=50, generator=7, **kw)
    resumed = a.resume(20, progress_bar=False)
    assert torch.equal(resumed["x"], longer["x"])
    for k in ("n_leapfrog", "tree_depth", "accept_stat", "energy"):
        assert torch.equal(resumed.sample_stats[k], longer.sample_stats[k])
    c = sample(_mvn, {"x": torch.zeros(3)}, num_draws=30, generator=8, **kw)
    assert not torch.equal(a["x"], c["x"])


def test_float32_draws():
    r = sample(
        _mvn32, {"x": torch.zeros(3, dtype=torch.float32)}, num_chains=4, num_warmup=200,
        num_draws=300, pace="own", dtype=torch.float32, generator=0, progress_bar=False,
    )  # fmt: skip
    assert r["x"].dtype == torch.float32
    _check_moments(r["x"].double(), MEAN, COV.diagonal().sqrt(), ess_min=200)


def _mvn32(x):
    return D.MultivariateNormal(MEAN.float(), COV.float()).log_prob(x)


def _with_kernels(monkeypatch, job):
    """A run's kernels: the compile of each is ``job()`` (a Future), none asked for before."""
    monkeypatch.setattr(paced_compile, "_JOBS", {})
    monkeypatch.setattr(paced_compile, "_compile", lambda name, args: job())


@pytest.mark.parametrize(("dtype", "metric"), [(F64, "diag"), (F64, "dense"), (F32, "diag")])
def test_the_interpreted_twin_draws_what_the_compiled_kernel_draws(monkeypatch, dtype, metric):
    """Until its kernels are compiled a run calls their interpreted twins: the same draws, bit
    for bit (float64 arithmetic in both, whatever the model's dtype), so that a first run after
    an install draws what every later run with its seed draws."""
    density = _mvn if dtype == F64 else _mvn32
    kw = dict(
        num_chains=2, num_warmup=60, num_draws=40, metric=metric, pace="own", generator=5,
        dtype=dtype, progress_bar=False,
    )  # fmt: skip
    compiled = sample(density, {"x": torch.zeros(3, dtype=dtype)}, **kw)
    _with_kernels(monkeypatch, Future)  # never compiled: the twins all along
    twin = sample(density, {"x": torch.zeros(3, dtype=dtype)}, **kw)
    assert torch.equal(twin["x"], compiled["x"])
    for k, v in compiled.sample_stats.items():
        assert torch.equal(twin.sample_stats[k], v), k
    assert torch.equal(twin.step_size, compiled.step_size)


def test_a_run_takes_the_compiled_kernel_from_the_step_after_it_is_ready(monkeypatch):
    from latentfit.mcmc import paced_kernel

    run = sample(
        _mvn, {"x": torch.zeros(3)}, num_chains=2, num_warmup=30, num_draws=1, pace="own",
        generator=4, progress_bar=False,
    )._runner  # fmt: skip
    before, step_size = run.snapshot(), run.step.clone()
    reference = run_paced(run, 60)
    run.restore(before)
    run.step = step_size
    paced_compile._twins()  # the twins of the kernels themselves, not of the counting one
    leaf, calls, jobs, steps = paced_kernel.leaf, [], [], []

    def counted(*args):
        calls.append(1)
        return leaf(*args)

    def job():
        jobs.append(Future())
        return jobs[-1]

    leapfrog = run.leapfrog_step

    def stepping(*args):  # the compiles finish at the 40th step
        steps.append(1)
        if len(steps) == 40:
            for j in jobs:
                j.set_result(None)
        return leapfrog(*args)

    _with_kernels(monkeypatch, job)
    monkeypatch.setattr(paced_kernel, "leaf", counted)
    run.leapfrog_step = stepping
    out = run_paced(run, 60)
    assert len(steps) > 100 and len(calls) == len(steps) - 39  # the twin for 39 steps
    for k, v in reference.items():
        assert np.array_equal(out[k].numpy(), v.numpy(), equal_nan=True), k


def test_a_kernel_that_does_not_compile_leaves_the_twin_running_with_a_warning(monkeypatch):
    kw = dict(num_chains=2, num_warmup=30, num_draws=20, pace="own", progress_bar=False)
    reference = sample(_mvn, {"x": torch.zeros(3)}, generator=6, **kw)

    def failed():
        job = Future()
        job.set_exception(RuntimeError("no LLVM here"))
        return job

    _with_kernels(monkeypatch, failed)
    monkeypatch.setattr(paced_compile, "_WARNED", set())
    with pytest.warns(CompileFallbackWarning, match="no LLVM here.*interpreted twin") as rec:
        r = sample(_mvn, {"x": torch.zeros(3)}, generator=6, **kw)
    assert rec[0].filename == __file__  # the user's line
    assert torch.equal(r["x"], reference["x"])


def test_the_child_compiles_both_kernels_into_the_cache_for_the_run_to_load(monkeypatch):
    """The child imports numba and the kernel module, not torch, and leaves both kernels in
    numba's cache for the argument types of ``paced_kernel.warm``, which are a run's: after
    it, a run compiles nothing."""
    from latentfit.mcmc import paced_kernel

    monkeypatch.setattr(paced_compile, "_CHILD", [])
    job, types = Future(), tuple(numba.typeof(a) for a in paced_kernel.warm_args()[1])
    paced_compile._build(job, paced_kernel.leaf, types)
    assert paced_compile._CHILD == [0] and job.result() == (paced_kernel.leaf, types)
    assert paced_compile._outcome("leaf", job) is paced_kernel.leaf
    code = (
        "import sys; from latentfit.mcmc import paced_kernel as pk; pk.warm(); "
        "print(pk.leaf.stats.cache_hits.total() >= 1, pk.start.stats.cache_hits.total() >= 1,"
        " 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(paced_compile.__file__).parents[2])},
    )  # fmt: skip
    assert out.stdout.split() == ["True", "True", "False"], out.stderr
    paced_kernel.warm()
    sample(_mvn, {"x": torch.zeros(3)}, num_chains=2, num_warmup=20, num_draws=10, pace="own",
           metric="dense", progress_bar=False)  # fmt: skip
    assert len(paced_kernel.leaf.signatures) == len(paced_kernel.start.signatures) == 1


def test_pace_is_checked():
    with pytest.raises(ParameterError, match="pace must be 'batch' or 'own'"):
        sample(_mvn, {"x": torch.zeros(3)}, pace="fast", progress_bar=False)


def test_a_stop_after_some_transitions_keeps_each_chain_s_first_ones():
    run = _adapted(chains=4)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 2

    out = run_paced(run, 10_000, stop=stop)
    m = out["u"].shape[1]
    assert 4 <= m < 10_000 and out["lp"].shape == (4, m)
    # the chains stand at their m-th draw, with its gradient
    assert torch.equal(run.state.u, out["u"][:, -1])
    want = torch.func.vmap(torch.func.grad(_mvn))(run.state.u)
    assert torch.allclose(run.state.grad, want)
    assert np.isfinite(run.state.log_prob.numpy()).all()


def kernel_turns(P: torch.Tensor, inv: torch.Tensor) -> list[int]:
    """Each chain's subtree of leaves with momenta ``P`` (c, L, p), fed one leaf at a time to
    the compiled kernel (every leaf of weight 1) with the inverse metric ``inv`` (c, p), or
    dense (c, p, p): the index of the leaf at which a U-turn ends the chain's transition, L
    where none does (a full subtree, whatever the checks across the trajectory's join say)."""
    from latentfit.mcmc import paced_kernel

    c, L, d = P.shape
    depth = L.bit_length() - 1
    dense = inv.dim() == 3

    def z(*shape, dtype=np.float64):
        return np.zeros(shape, dtype=dtype)

    D = depth + 4
    k, j, side, depth_, n_leap, t_c = (z(c, dtype=np.int64) for _ in range(6))
    j[:] = depth_[:] = depth  # every chain at the start of a subtree of 2^depth leaves
    side[:] = 1
    H0, S, ck, last = z(c), z(c, d), z(c, D, 3 * d), z(c, D, 2 * d)
    lws, dsub, lwt, draw, rho = np.full(c, -np.inf), z(c, 3 * d + 1), z(c), z(c, 3 * d + 1), z(c, d)
    ends, sm, da, eps = z(c, 2, 4 * d + 1), z(c), z(c, 4), np.full(c, 0.1)
    cu, cg, cp, clp, e, half = z(c, d), z(c, d), z(c, d), z(c), z(c, 1), z(c, 1)
    rec = (z(c, 1, d), z(c, 1, d), z(c, 1), z(c, 1, 5), z(c, 1, d), t_c)
    inv_n = inv.numpy()
    invd, invf = (z(1, 1), inv_n) if dense else (inv_n, z(1, 1, 1))
    chol_t = (
        torch.linalg.cholesky(inv).transpose(1, 2).contiguous().numpy() if dense else z(1, 1, 1)
    )
    got = [L] * c
    seen = [False] * c
    for leaf in range(L):
        p = P[:, leaf].numpy().copy()
        ps = (P[:, leaf : leaf + 1] @ inv).squeeze(1) if dense else P[:, leaf] * inv
        lp = 0.5 * (p * ps.numpy()).sum(1)  # a weight of 1: no divergence
        paced_kernel.leaf(
            z(c, d), z(c, d), p, lp, invd, invf, dense, chol_t, eps, np.uint64(1), 0,
            H0, k, j, S, ck, last, lws, dsub, lwt, draw, rho, ends, side, depth_, n_leap, sm,
            D, da, False, 0.8, cu, cg, cp, clp, e, half, *rec,
        )  # fmt: skip
        for i in range(c):
            if not seen[i] and t_c[i] == 1:
                seen[i] = True
                # a turn inside the subtree leaves its depth uncounted; a full subtree
                # that ends the trajectory at the join counts it
                got[i] = leaf if rec[3][i, 0, 2] == depth else L
    return got


def test_ctrl_c_keeps_the_draws_so_far_and_a_resume_gives_the_whole_run(monkeypatch):
    """Ctrl-C from Python during the draws returns each chain's first draws (the whole run's,
    bit for bit) and a resume from them gives the rest; during the warm-up it raises."""
    from latentfit.mcmc import paced_kernel, sampler
    from tests.test_interrupt import press_ctrl_c_at

    paced_kernel.warm()  # Ctrl-C is pressed in the compiled kernel, not in its twin
    run = dict(num_chains=2, num_warmup=50, generator=3, progress_bar=False, pace="own")
    whole = sample(_mvn, {"x": torch.zeros(3)}, num_draws=400, **run)
    draw = sampler._Run._draw_paced

    def pressed_in_the_draws(self, n, bar):
        press_ctrl_c_at(monkeypatch, paced_kernel, "leaf", 300)
        return draw(self, n, bar)

    monkeypatch.setattr(sampler._Run, "_draw_paced", pressed_in_the_draws)
    with pytest.warns(UserWarning, match="sampling stopped by Ctrl-C after"):
        part = sample(_mvn, {"x": torch.zeros(3)}, num_draws=400, **run)
    m = part.num_draws
    assert 4 <= m < 400
    assert torch.equal(part.unconstrained, whole.unconstrained[:, :m])
    monkeypatch.undo()
    rest = part.resume(400 - m, progress_bar=False)
    assert torch.equal(rest.unconstrained, whole.unconstrained)
    press_ctrl_c_at(monkeypatch, paced_kernel, "leaf", 40)
    with pytest.raises(KeyboardInterrupt):
        sample(_mvn, {"x": torch.zeros(3)}, num_draws=10, **run)


@pytest.mark.parametrize("num_warmup, stage", [(50, "warm-up iteration"), (0, "draw")])
def test_a_log_density_of_plus_inf_is_refused(num_warmup, stage):
    from tests.mcmc.test_bad_input import _plus_inf_beyond_one

    with pytest.raises(ParameterError, match=rf"\+inf at .*\(chain \d, first at {stage} \d+\)"):
        sample(
            _plus_inf_beyond_one, {"mu": torch.zeros(2)}, num_chains=2, num_warmup=num_warmup,
            num_draws=20, vectorized=True, pace="own", generator=0, progress_bar=False,
        )  # fmt: skip


def test_a_density_that_raises_at_some_points_rejects_those_steps():
    """The semicircle through a Cholesky factor that raises for |r| >= 1 (test_compiled.py):
    the replayed step that raises is taken eagerly, which gives those chains a leaf of no
    weight, a divergence that ends their transition; the draws stay inside (-1, 1)."""
    from tests.mcmc.test_compiled import check_semicircle, semicircle

    res = sample(
        semicircle, {"r": 0.0}, num_chains=4, num_warmup=300, num_draws=500, generator=3,
        progress_bar=False, pace="own",
    )  # fmt: skip
    check_semicircle(res["r"])


@pytest.mark.parametrize("pace", ["own", "batch"])
def test_a_progress_bar_per_chain_ends_at_its_chain_s_transitions(monkeypatch, pace):
    """As Stan prints each chain's iterations: at the own pace each bar follows its chain."""
    from latentfit.mcmc import progress

    made = []

    class Recorder:
        def __init__(self, total, desc, position, leave, disable):
            self.total, self.desc, self.n, self.seen = total, desc, 0, []
            made.append(self)

        def update(self, n):
            self.n += n
            self.seen.append(self.n)

        def close(self):
            self.closed = True

    monkeypatch.setattr(progress, "tqdm", Recorder)
    sample(_mvn, {"x": torch.zeros(3)}, num_chains=3, num_warmup=150, num_draws=200, pace=pace,
           generator=2)  # fmt: skip
    assert [b.desc for b in made] == [f"chain {i} {phase}" for phase in ("warm-up", "sampling")
                                      for i in range(3)]  # fmt: skip
    assert all(b.n == b.total and b.closed for b in made)
    if pace == "own":  # the chains' bars moved apart on the way: each at its own pace
        sampling = made[3:]
        assert any(b.seen != sampling[0].seen for b in sampling[1:])
    made.clear()  # past MAX_BARS chains, one bar for all at the slowest chain's count
    sample(_mvn, {"x": torch.zeros(3)}, num_chains=progress.MAX_BARS + 1, num_warmup=0,
           num_draws=30, pace=pace, generator=2)  # fmt: skip
    assert [(b.desc, b.n) for b in made] == [
        ("17 chains warm-up (the slowest)", 0),
        ("17 chains sampling (the slowest)", 30),
    ]
