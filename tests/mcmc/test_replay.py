"""mcmc/replay.py: while a package compiles, the traced leapfrog and the tree bookkeeping
replayed by TorchScript's interpreter give the values of the graph they replay, bit for bit,
and those of the eager functions; a bookkeeping trace that disagrees, a subtree too large for
one block, and a torch without ``torch.jit.trace`` run eagerly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.distributions as D

from latentfit.errors import CompileFallbackWarning
from latentfit.mcmc import Target, builds, replay, sample
from latentfit.mcmc.compiled import leapfrog_parts, merge_agrees, static_graph, wrap_leapfrog
from latentfit.mcmc.kernels import Metric, State, _leapfrog, nuts_transition
from latentfit.mcmc.replay import ReplayedMerge
from latentfit.mcmc.result import import_arviz
from tests.mcmc.test_compiled import (
    CONSTRAINTS,
    SHAPES,
    _per_chain,
    _state,
    check_semicircle,
    random_metric,
    sample_semicircle,
)

F64 = torch.float64
COV = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 4.0]], dtype=F64)


def _mvn(x):  # vectorized: (c, 3) -> (c,)
    return D.MultivariateNormal(torch.zeros(3, dtype=F64), COV).log_prob(x)


def _equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    return torch.equal(x, y) or bool(((x == y) | (x.isnan() & y.isnan())).all())


@pytest.mark.parametrize("dense", [False, True])
def test_the_replayed_leapfrog_is_its_graph_bit_for_bit_and_the_eager_step(dense):
    # every constraint kind, a density written per chain (vmapped)
    target = Target(_per_chain, SHAPES, CONSTRAINTS)
    c, d = 3, target.n_free
    state = _state(target, c)
    g = torch.Generator().manual_seed(2)
    metric = random_metric(c, d, dense, g)
    step_size = torch.full((c,), 0.1, dtype=F64)
    raw, example, _, check = leapfrog_parts(target, metric, state, step_size)
    graph = static_graph(raw, example)
    replayed = replay.replay(graph, example)
    assert replayed is not None and check(replayed)
    by_graph, by_replay = wrap_leapfrog(graph), wrap_leapfrog(replayed)
    p0 = torch.randn(c, d, generator=g, dtype=F64)
    e = step_size[:, None]
    half = 0.5 * e
    a, pa, b, pb, x, px = state, p0, state, p0, state, p0
    for _ in range(5):
        a, pa = by_graph(target, metric, a, pa, e, half)
        b, pb = by_replay(target, metric, b, pb, e, half)
        x, px = _leapfrog(target, metric, x, px, e, half)
    for want, got, eager in zip((*a, pa), (*b, pb), (*x, px), strict=True):
        assert torch.equal(got, want)
        torch.testing.assert_close(got, eager, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("levels", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_the_replayed_tree_bookkeeping_gives_the_eager_transitions_bit_for_bit(
    dense, levels, monkeypatch
):
    # the compiled bookkeeping's test (test_compiled.py) with the replay: the same kernels in
    # the same order, so the transitions are equal, not close; with ``levels``, every merge
    # checks its U-turns level by level, as deep subtrees of many chains do
    if levels:
        from latentfit.mcmc import uturn

        monkeypatch.setattr(uturn, "LEVELS_FROM", 1)
        monkeypatch.setattr(replay, "LEVELS_FROM", 1)
    target = Target(_mvn, {"x": (3,)}, vectorized=True)
    state = _state(target, 5)
    inv = torch.eye(3, dtype=F64).expand(5, 3, 3).clone() if dense else torch.ones(5, 3, dtype=F64)
    metric = Metric(inv * 0.7)
    merge = ReplayedMerge(dense, merge_agrees(metric, state))
    step = torch.tensor([0.05, 0.3, 0.6, 1.2, 2.5], dtype=F64)  # deep trees to divergences
    a = b = state
    ga, gb = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    diverged = 0
    for _ in range(12):
        a, sa = nuts_transition(target, metric, a, step, ga, max_depth=8)
        b, sb = nuts_transition(target, metric, b, step, gb, max_depth=8, merge_step=merge)
        for x, y in zip((*a, *sa), (*b, *sb), strict=True):
            assert _equal(x, y)
        diverged += int(sa.diverging.sum())
    assert diverged > 0
    traced = {L for L, fn in merge.by_leaves.items() if fn is not None}
    assert len(traced) >= 4 and traced == set(merge.by_leaves)  # each depth met was replayed
    assert 1 in traced  # the first doubling's one-leaf merge too (merge_one_leaf)


@pytest.mark.parametrize("dense", [False, True])
def test_the_merge_reads_its_subtree_without_advanced_indexing(dense):
    # x[:, idx] and x[arange(c), :, pick] cost a replayed merge several operations each where
    # index_select and gather cost one (eight schools, 4 chains: ~140 -> ~118 µs a merge)
    from latentfit.mcmc.compiled import _merge_example
    from latentfit.mcmc.kernels import merge_subtree

    for L in (2, 8):
        args = _merge_example(4, 3, L, dense, F64, torch.device("cpu"), seed=L)
        with replay._tracing():
            traced = torch.jit.trace(lambda *a: merge_subtree(dense, *a), args, check_trace=False)
        kinds = {node.kind() for node in traced.graph.nodes()}
        assert "aten::index" not in kinds and "aten::arange" not in kinds
        assert {"aten::index_select", "aten::gather"} <= kinds


def test_the_work_between_doublings_is_replayed_and_a_stale_trace_is_refused(monkeypatch):
    # kernels.next_doubling (the last leaf written as the new end, the next direction read)
    # replayed: the eager transitions bit for bit; a replay that returned what it computed
    # when traced, whatever its inputs, is refused by the check on moved inputs
    target = Target(_mvn, {"x": (3,)}, vectorized=True)
    state = _state(target, 4)
    metric = Metric(torch.ones(4, 3, dtype=F64) * 0.7)
    step = torch.tensor([0.05, 0.3, 1.2, 2.5], dtype=F64)
    replayed = ReplayedMerge(False, merge_agrees(metric, state))
    stale = ReplayedMerge(False, merge_agrees(metric, state))
    a = b = s = state
    gens = [torch.Generator().manual_seed(6) for _ in range(3)]
    for i in range(8):
        a, sa = nuts_transition(target, metric, a, step, gens[0], max_depth=6)
        b, sb = nuts_transition(target, metric, b, step, gens[1], max_depth=6, merge_step=replayed)
        if i == 0:  # from here every trace bakes the outputs of its example in
            monkeypatch.setattr(
                replay, "replay", lambda fn, example: lambda *x, want=fn(*example): want
            )
        s, ss = nuts_transition(target, metric, s, step, gens[2], max_depth=6, merge_step=stale)
        for x, y, z in zip((*a, *sa), (*b, *sb), (*s, *ss), strict=True):
            assert _equal(x, y) and _equal(x, z)
    assert len(replayed.between) == 1 and replayed.between[0] is not None
    assert stale.between == [None]


def test_a_disagreeing_trace_and_a_subtree_beyond_one_block_run_eagerly(monkeypatch):
    target = Target(_mvn, {"x": (3,)}, vectorized=True)
    state = _state(target, 4)
    metric = Metric(torch.ones(4, 3, dtype=F64))
    step = torch.full((4,), 0.05, dtype=F64)  # long trajectories: subtrees of 16-32 leaves
    monkeypatch.setattr(replay, "_NODE_CHUNK", 4 * 7 * 6 * 3)  # up to 8 leaves in one block
    never = ReplayedMerge(False, lambda *args: False)  # every trace disagrees
    small = ReplayedMerge(False, merge_agrees(metric, state))
    a = b = c = state
    gens = [torch.Generator().manual_seed(5) for _ in range(3)]
    for _ in range(6):
        a, sa = nuts_transition(target, metric, a, step, gens[0], max_depth=6)
        b, sb = nuts_transition(target, metric, b, step, gens[1], max_depth=6, merge_step=never)
        c, sc = nuts_transition(target, metric, c, step, gens[2], max_depth=6, merge_step=small)
        for x, y, z in zip((*a, *sa), (*b, *sb), (*c, *sc), strict=True):
            assert _equal(x, y) and _equal(x, z)
    assert set(never.by_leaves.values()) == {None}
    by_leaves = {k[1]: fn for k, fn in small.by_leaves.items() if k != 1}  # (chains, L)
    assert max(by_leaves) > 8  # deep enough to pass the block
    assert all((fn is None) == (L > 8) for L, fn in by_leaves.items())


def _run(compile, n: int = 30, **kwargs):
    """The batched pace, whose tree bookkeeping is replayed too (the own pace's is a numba
    kernel: test_paced.py)."""
    options = dict(
        num_chains=3, num_warmup=n, num_draws=n, generator=1, progress_bar=False, pace="batch"
    )
    return sample(_mvn, {"x": torch.zeros(3)}, vectorized=True, compile=compile, **options | kwargs)


def test_a_first_run_samples_replayed_until_its_packages_arrive(tmp_path, monkeypatch):
    # no child free (a loop's children busy): nothing compiles, and both parts run replayed
    # for the whole run, with the draws of the eager run (this density's graph rounds as
    # autograd does)
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(builds, "running", lambda: 99)
    res = _run(True)
    stats = res.warmup_stats
    assert stats["replayed"] == ("leapfrog", "merge")
    assert stats["compiled_from"] == {"leapfrog": None, "merge": None}
    torch.testing.assert_close(res["x"], _run(False)["x"], rtol=0, atol=0)
    assert _run(False).warmup_stats["replayed"] == ()


def test_by_default_both_parts_are_replayed_and_nothing_compiles(tmp_path, monkeypatch):
    # compile="replay", the default: the traced graphs for the whole run, the eager draws
    # (this density's graph rounds as autograd does), no child started, nothing written
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    spawned = []
    monkeypatch.setattr(builds, "spawn", lambda *a, **k: spawned.append(a) or [None])
    options = dict(
        num_chains=3, num_warmup=30, num_draws=30, generator=1, progress_bar=False, pace="batch"
    )
    res = sample(_mvn, {"x": torch.zeros(3)}, vectorized=True, **options)
    stats = res.warmup_stats
    assert stats["replayed"] == ("leapfrog", "merge") and stats["compiled_from"] is None
    assert not stats["compiled"] and not stats["compiled_merge"]
    torch.testing.assert_close(res["x"], _run(False)["x"], rtol=0, atol=0)
    more = res.resume(20)  # the replayed parts carry on
    torch.testing.assert_close(more["x"][:, :30], res["x"], rtol=0, atol=0)
    assert not spawned and not any(tmp_path.rglob("*.pt2"))


def test_a_density_the_replay_cannot_trace_samples_eagerly_without_a_warning(recwarn):
    def branching(x):  # (c, 2) -> (c,), with a Python branch on a value: no fixed graph
        return -0.5 * (x**2).sum(-1) if bool(x.sum() > -1e9) else x.sum(-1)

    res = sample(
        branching, {"x": torch.zeros(2)}, num_chains=2, num_warmup=30, num_draws=30,
        generator=0, progress_bar=False, vectorized=True, pace="batch",
    )  # fmt: skip
    assert res.warmup_stats["replayed"] == ("merge",)  # latentfit's own bookkeeping still is
    assert not [w for w in recwarn if "compil" in str(w.message).lower()]
    eager = sample(
        branching, {"x": torch.zeros(2)}, num_chains=2, num_warmup=30, num_draws=30,
        generator=0, progress_bar=False, vectorized=True, compile=False, pace="batch",
    )  # fmt: skip
    torch.testing.assert_close(res["x"], eager["x"], rtol=0, atol=0)


def test_without_torch_jit_trace_a_first_run_samples_eagerly(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(builds, "running", lambda: 99)
    monkeypatch.delattr(torch.jit, "trace")
    assert replay.replay(lambda x: x * 2, (torch.ones(2),)) is None
    res = _run(True, kernel="hmc", num_steps=3)
    assert res.warmup_stats["replayed"] == ()
    torch.testing.assert_close(res["x"], _run(False, kernel="hmc", num_steps=3)["x"])


def test_a_replayed_step_where_the_density_raises_rejects_those_chains(tmp_path, monkeypatch):
    # the semicircle density of test_compiled.py through a Cholesky factor that raises for
    # |r| >= 1: a replayed step that raises is taken eagerly, which rejects those chains
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(builds, "running", lambda: 99)
    res = sample_semicircle(True, pace="batch")
    assert res.warmup_stats["replayed"] == ("leapfrog", "merge")
    check_semicircle(res["r"])


def solve_only(r):
    """log p(r) = -1/(1 + r) on (-1, 1), through a Cholesky factor of [[1, r], [r, 1]] used
    only in a triangular solve: no logarithm of its diagonal turns a failed factor into NaN.
    Outside (-1, 1) the factor fails, and its values there give finite numbers."""
    one = torch.ones_like(r)
    m = torch.stack([torch.stack([one, r]), torch.stack([r, one])])
    y = torch.linalg.solve_triangular(
        torch.linalg.cholesky(m), torch.ones(2, 1, dtype=r.dtype), upper=False
    )
    return -0.5 * y.square().sum()


def test_a_replayed_density_raises_where_its_factor_fails_as_the_eager_one_does():
    # torch.jit.trace drops an operation whose result nothing uses, and so the check that
    # raises after a failed Cholesky factor (aten._linalg_check_errors). The replayed step,
    # the sampler's default, then gave the failed factor's values: finite numbers here, so
    # the chains were accepted outside the support and drawn at 1e27 (all 2,000 draws of the
    # run below). The check now runs after the replay and raises as the eager step does.
    from scipy import integrate

    target = Target(solve_only, {"r": ()}, {}, dtype=torch.float64)
    u = torch.full((4, 1), 0.1, dtype=torch.float64)
    lp, grad = target.log_prob_and_grad(u)
    metric = Metric(torch.ones(4, 1, dtype=torch.float64))
    raw, example, _tag, check = leapfrog_parts(
        target, metric, State(u, lp, grad), torch.full((4,), 0.01, dtype=torch.float64)
    )
    replayed = replay.replay_graph(static_graph(raw, example), example)
    assert check(replayed)
    outside = (torch.tensor([[0.5], [3.0], [-0.2], [0.0]], dtype=torch.float64), *example[1:])
    with pytest.raises(RuntimeError, match=r"linalg\.cholesky"):
        raw(*outside)
    with pytest.raises(RuntimeError, match=r"linalg\.cholesky"):
        replayed(*outside)
    kw = dict(
        num_chains=4, num_warmup=300, num_draws=500, generator=3, progress_bar=False, pace="batch"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sample(solve_only, {"r": 0.0}, **kw)
    # rejected silently, as the eager sampler rejects them: the default compiles nothing, so
    # the compiled step's warning ("compile=True: ...") is not its to give
    assert not [w for w in caught if issubclass(w.category, CompileFallbackWarning)], [
        str(w.message) for w in caught
    ]
    assert res.warmup_stats["replayed"] == ("leapfrog", "merge")
    r = res["r"]
    assert bool((r.abs() < 1).all()), float(r.abs().max())
    # the chains that raise are rejected without the eager step (raising.rejecting), with the
    # eager sampler's values: its draws, bit for bit
    assert torch.equal(r, sample(solve_only, {"r": 0.0}, compile=False, **kw)["r"])
    # the mean of exp(-1 / (1 + r)) on (-1, 1), by quadrature, within 4 MCSE
    mass = integrate.quad(lambda x: np.exp(-1 / (1 + x)), -1, 1)[0]
    mean = integrate.quad(lambda x: x * np.exp(-1 / (1 + x)), -1, 1)[0] / mass
    az = import_arviz()
    mcse = float(az.mcse(az.convert_to_dataset({"r": r.numpy()}))["r"])
    assert abs(float(r.mean()) - mean) < 4 * mcse, (float(r.mean()), mean, mcse)


@pytest.mark.parametrize("dense", [False, True])
def test_the_eager_stand_in_checks_in_blocks_and_equals_the_one_block_merge(dense, monkeypatch):
    # what ReplayedMerge (and a failing compiled bookkeeping) runs instead: the U-turn checks in
    # blocks of a few nodes, the same outputs as all nodes at once
    from latentfit.mcmc import kernels, uturn
    from latentfit.mcmc.compiled import _merge_example, wrap_merge

    monkeypatch.setattr(uturn, "_NODE_CHUNK", 5 * 6 * 4 * 3)  # 3 nodes a block
    blocks = []
    turn_of_nodes = uturn._turn_of_nodes
    monkeypatch.setattr(
        uturn, "_turn_of_nodes", lambda *a, **k: blocks.append(1) or turn_of_nodes(*a, **k)
    )

    def fails(*args):
        raise RuntimeError("no compiled code here")

    for L in (2, 8, 64):
        args = _merge_example(5, 4, L, dense, F64, torch.device("cpu"), seed=L)
        want = kernels.merge_subtree(dense, *args)  # one block, from the node tables
        blocks.clear()
        for got in (kernels.merge_in_blocks(dense, *args), wrap_merge(fails, dense)(*args)):
            assert all(_equal(x, y) for x, y in zip(want, got, strict=True))
        if L - 1 > 3:  # more nodes than a block: the blocked pass, not all nodes at once
            assert not blocks


def test_the_replay_runs_in_static_runtime_with_the_trace_s_values(monkeypatch):
    # Static Runtime: the trace's operations into planned buffers; its outputs are the trace's
    # bit for bit, and a later call leaves an earlier call's outputs as they were
    def f(x, y):
        z = (x * y).exp() - y
        return z.sum(1), z * x

    x, y = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    runner = replay.replay(f, (x, y))
    traced = torch.jit.trace(f, (x, y), check_trace=False)
    assert not isinstance(runner, torch.jit.ScriptFunction)  # Static Runtime, not the trace
    first = runner(x, y)
    kept = [t.clone() for t in first]
    for _ in range(3):
        a, b = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
        assert all(_equal(p, q) for p, q in zip(runner(a, b), traced(a, b), strict=True))
    assert all(_equal(p, q) for p, q in zip(first, kept, strict=True))
    # where this torch has no Static Runtime, or its outputs differ: the trace itself
    monkeypatch.delattr(torch._C, "_jit_to_static_module")
    assert isinstance(replay.replay(f, (x, y)), torch.jit.ScriptFunction)
    monkeypatch.undo()
    monkeypatch.setattr(replay, "_same", lambda a, b: False)
    assert isinstance(replay.replay(f, (x, y)), torch.jit.ScriptFunction)


@pytest.mark.parametrize("dense", [False, True])
def test_the_leapfrog_check_refuses_a_version_that_reads_any_input_stale(dense):
    """The check runs a zero step, where the momentum, the metric and the step size change
    nothing, and a second example with every input changed. A replayed or compiled step that
    read one input stale (its value when it was recorded, baked in) gives the right values on
    the first and is refused on the second."""
    target = Target(_per_chain, SHAPES, CONSTRAINTS)
    c, d = 3, target.n_free
    state = _state(target, c)
    metric = random_metric(c, d, dense, torch.Generator().manual_seed(2))
    raw, example, _, check = leapfrog_parts(target, metric, state, torch.full((c,), 0.1))
    assert check(raw)
    names = ("position", "gradient", "momentum", "step", "half step", "metric")
    for i, name in enumerate(names):

        def stale(*args, i=i):
            return raw(*(example[j] if j == i else a for j, a in enumerate(args)))

        assert all(
            torch.equal(a, b) for a, b in zip(stale(*example), raw(*example), strict=True)
        ), name
        assert not check(stale), name
