"""``compile=True``: the traced and compiled leapfrog step against the eager one, sampling with
it against an exact posterior, and the eager fallback for densities that cannot be traced.

Each compilation costs seconds, so the cases are few and each covers several things: every
constraint kind of ``Target`` (real, positive, unit interval, ordered, simplex through
``biject_to``), a density written per chain (``torch.func.vmap``) and one vectorized, autograd
and a hand-written gradient, diagonal and dense metrics.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributions as D
from torch.distributions import constraints

from latentfit.errors import CompileFallbackWarning
from latentfit.mcmc import Target, ordered_vector, sample
from latentfit.mcmc import compiled as compiled_module
from latentfit.mcmc.compiled import compile_leapfrog
from latentfit.mcmc.kernels import Metric, State, _leapfrog
from latentfit.mcmc.result import import_arviz

F64 = torch.float64


def _per_chain(mu, sigma, w, cuts, probs):
    """One chain's log-density touching every constraint kind."""
    return (
        D.Normal(0.0, 2.0).log_prob(mu).sum()
        + D.LogNormal(0.0, 1.0).log_prob(sigma)
        + D.Beta(2.0, 3.0).log_prob(w)
        + D.Normal(torch.tensor([-1.0, 0.0, 1.5], dtype=F64), 1.0).log_prob(cuts).sum()
        + D.Dirichlet(torch.tensor([2.0, 3.0, 4.0], dtype=F64)).log_prob(probs)
        + D.Normal(mu[0] * w, sigma).log_prob(torch.tensor([0.3, -0.2, 1.1], dtype=F64)).sum()
    )


SHAPES = {"mu": (2,), "sigma": (), "w": (), "cuts": (3,), "probs": (3,)}
CONSTRAINTS = {
    "sigma": constraints.positive,
    "w": constraints.unit_interval,
    "cuts": ordered_vector,
    "probs": constraints.simplex,
}


def _state(target: Target, c: int, seed: int = 0) -> State:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(c, target.n_free, generator=gen, dtype=F64) * 2 - 1
    lp, grad = target.log_prob_and_grad(u)
    return State(u, lp, grad)


def random_metric(c: int, d: int, dense: bool, g: torch.Generator, scale: float = 0.3) -> Metric:
    """A metric per chain drawn from ``g``: dense ``a a' + I`` with ``a`` ~ ``scale`` N(0, 1)
    entries, or a diagonal in (0.5, 1.5)."""
    if dense:
        a = scale * torch.randn(c, d, d, generator=g, dtype=F64)
        return Metric(a @ a.transpose(-1, -2) + torch.eye(d, dtype=F64))
    return Metric(torch.rand(c, d, generator=g, dtype=F64) + 0.5)


def _steps_agree(target: Target, metric: Metric, state: State, n: int = 5):
    """n compiled steps from ``state`` equal n eager steps (positions, log-densities,
    gradients, momenta) to 1e-10 relative."""
    step_size = torch.full((state.u.shape[0],), 0.1, dtype=F64)
    fn, seconds = compile_leapfrog(target, metric, state, step_size)
    assert fn is not None and seconds > 0
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(state.u.shape, generator=gen, dtype=F64)
    e = step_size[:, None]
    half = 0.5 * e
    a, pa, b, pb = state, p0, state, p0
    for _ in range(n):
        a, pa = _leapfrog(target, metric, a, pa, e, half)
        b, pb = fn(target, metric, b, pb, e, half)
    for x, y in ((a.u, b.u), (a.log_prob, b.log_prob), (a.grad, b.grad), (pa, pb)):
        torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-10)
    # a changed metric (the warm-up's windows) is an input of the compiled step, not a constant
    metric2 = Metric(metric.inv * 2.0)
    a, pa = _leapfrog(target, metric2, state, p0, e, half)
    b, pb = fn(target, metric2, state, p0, e, half)
    torch.testing.assert_close(b.u, a.u, rtol=1e-10, atol=1e-10)


def test_compiled_step_equals_eager_per_chain_density_every_constraint_diag_metric():
    target = Target(_per_chain, SHAPES, CONSTRAINTS)  # vmapped over chains, autograd
    state = _state(target, 3)
    inv = torch.rand(3, target.n_free, generator=torch.Generator().manual_seed(2), dtype=F64)
    _steps_agree(target, Metric(inv + 0.5), state)


def test_compiled_step_equals_eager_hand_gradient_dense_metric():
    y = torch.tensor([0.5, 2.0, -1.0, 0.7], dtype=F64)

    def log_density(mu, tau):  # vectorized: (c, 2), (c,)
        z = (y - mu[:, :1]) / tau[:, None]
        return -0.5 * (z**2).sum(-1) - 4 * tau.log() - 0.5 * (mu**2).sum(-1) - tau

    def value_and_grad(mu, tau):
        z = (y - mu[:, :1]) / tau[:, None]
        lp = -0.5 * (z**2).sum(-1) - 4 * tau.log() - 0.5 * (mu**2).sum(-1) - tau
        g_mu = -mu.clone()
        g_mu[:, 0] += (z / tau[:, None]).sum(-1)
        g_tau = (z**2).sum(-1) / tau - 4 / tau - 1
        return lp, {"mu": g_mu, "tau": g_tau}

    target = Target(
        log_density,
        {"mu": (2,), "tau": ()},
        {"tau": constraints.positive},
        vectorized=True,
        value_and_grad=value_and_grad,
    )
    state = _state(target, 4)
    a = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    _steps_agree(target, Metric(a @ a.transpose(-1, -2) + torch.eye(3, dtype=F64)), state)


def test_sampling_compiled_matches_the_exact_posterior_and_resume_keeps_the_compiled_step():
    # Normal mean and sd with a conjugate-free prior pair: the MVN's moments are exact
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=F64)
    mean = torch.tensor([1.0, -2.0], dtype=F64)

    def log_density(x):
        return D.MultivariateNormal(mean, cov).log_prob(x)

    res = sample(
        log_density,
        {"x": torch.zeros(2)},
        num_chains=4,
        num_warmup=300,
        num_draws=500,
        metric="dense",
        generator=0,
        progress_bar=False,
        compile="wait",
        pace="batch",  # both parts compiled: the batched pace's tree bookkeeping too
    )
    assert res.warmup_stats["compiled"] and res.warmup_stats["compile_seconds"] > 0
    assert res.warmup_stats["compiled_from"] == {"leapfrog": 0, "merge": 0}
    more = res.resume(200)
    assert more._runner.leapfrog_step is res._runner.leapfrog_step is not None
    x = torch.cat([res["x"], more["x"]], 1).reshape(-1, 2)
    se = (cov.diagonal().sqrt() / (x.shape[0] / 4) ** 0.5) * 4  # generous: ESS >= n / 4
    assert ((x.mean(0) - mean).abs() < se).all(), x.mean(0)
    assert ((x.std(0) / cov.diagonal().sqrt() - 1).abs() < 0.1).all(), x.std(0)
    # the dense metric learned the covariance, as eagerly
    inv = res.inv_metric.mean(0) if res.inv_metric.dim() == 3 else res.inv_metric
    torch.testing.assert_close(inv, cov, rtol=0.25, atol=0.25)


def test_a_density_branching_on_values_samples_eagerly_with_a_warning():
    def log_density(x):  # vectorized: (c, 2) -> (c,)
        if bool((x.sum(-1) > 0).all()):  # Python control flow on values: cannot be traced
            return -0.5 * (x**2).sum(-1)
        return -0.5 * (x**2).sum(-1) - 0.0

    kwargs = dict(  # 4 chains and a dense metric: the tree bookkeeping's package of the
        # exact-posterior test above, not one more compiled for this test alone
        num_chains=4,
        num_warmup=20,
        num_draws=20,
        generator=5,
        progress_bar=False,
        vectorized=True,
        metric="dense",
        pace="batch",
    )
    with pytest.warns(CompileFallbackWarning, match="could not be traced"):
        res = sample(log_density, {"x": torch.zeros(2)}, compile="wait", **kwargs)
    assert res.warmup_stats["compiled"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eager = sample(log_density, {"x": torch.zeros(2)}, **kwargs)
    # the leapfrog fell back to the eager one and the tree bookkeeping is compiled (the same
    # arithmetic, rounded its own way): the eager sampler's draws for the same seed
    assert res.warmup_stats["compiled_merge"]
    torch.testing.assert_close(res["x"], eager["x"], rtol=1e-9, atol=1e-9)


def test_compile_must_be_true_false_replay_or_wait():
    from latentfit.errors import ParameterError
    from latentfit.mcmc.sampler import SamplerConfig

    for bad in ("yes", 1, None, "REPLAY"):
        with pytest.raises(ParameterError, match="compile must be True, False, 'replay' or 'wait'"):
            SamplerConfig(compile=bad).check()


def test_static_hmc_runs_the_compiled_step():
    def log_density(x):  # N((1, -1), diag(1, 4))
        return -0.5 * ((x[0] - 1.0) ** 2 + ((x[1] + 1.0) / 2.0) ** 2)

    res = sample(
        log_density,
        {"x": torch.zeros(2)},
        kernel="hmc",
        num_steps=8,
        num_chains=4,
        num_warmup=200,
        num_draws=400,
        generator=2,
        progress_bar=False,
        compile="wait",
    )
    assert res.warmup_stats["compiled"]
    # static HMC mixes slowly here (bulk ESS ~50-400 of 1,600): each mean within 4 of its
    # Monte-Carlo standard errors (ArviZ), each sd within 20%
    az = import_arviz()
    for j, (mean, sd) in enumerate(((1.0, 1.0), (-1.0, 2.0))):
        x = res["x"][..., j]
        mcse = float(az.mcse(az.convert_to_dataset({"v": x.numpy()}))["v"])
        assert abs(float(x.mean()) - mean) < 4 * mcse, (j, float(x.mean()), mcse)
        assert abs(float(x.std()) / sd - 1) < 0.2, (j, float(x.std()))


def semicircle(r):
    """log p(r) = log det([[1, r], [r, 1]]) / 2 through its Cholesky factor, which raises for
    |r| >= 1: the semicircle density sqrt(1 - r^2) on (-1, 1), mean 0 and sd 1/2."""
    one = torch.ones_like(r)
    m = torch.stack([torch.stack([one, r]), torch.stack([r, one])])
    return torch.linalg.cholesky(m).diagonal().log().sum()


def sample_semicircle(compile, pace="own"):
    """4 chains of ``semicircle``, 300 + 500 iterations, seed 3."""
    return sample(
        semicircle,
        {"r": 0.0},
        num_chains=4,
        num_warmup=300,
        num_draws=500,
        generator=3,
        progress_bar=False,
        compile=compile,
        pace=pace,
    )


def check_semicircle(r: torch.Tensor) -> None:
    """Draws of ``semicircle``: inside (-1, 1), mean within 4 MCSE of 0, sd within 10% of 1/2."""
    assert bool((r.abs() < 1).all())
    az = import_arviz()
    mcse = float(az.mcse(az.convert_to_dataset({"v": r.numpy()}))["v"])
    assert abs(float(r.mean())) < 4 * mcse
    assert abs(float(r.std()) / 0.5 - 1) < 0.1, float(r.std())


def test_a_density_that_raises_at_some_points_is_sampled_with_the_compiled_step(capfd, monkeypatch):
    # the replayed step that takes over where the compiled one raises often, its calls counted
    replayed_calls, replayed_step = [], compiled_module.replayed_step

    def counted(*args):
        step = replayed_step(*args)

        def call(*a):
            replayed_calls.append(1)
            return step(*a)

        return None if step is None else call

    monkeypatch.setattr(compiled_module, "replayed_step", counted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [sample_semicircle("wait") for _ in range(2)]
    res = runs[0]
    assert res.warmup_stats["compiled"]
    check_semicircle(res["r"])
    # ~9% of the compiled calls raised, each ~6 ms of the package's error path (7.9 s a run
    # against 2.6 s): the replayed step took most of them over (raising.py), by counts of
    # raises alone, so that the second run's draws are the first's
    assert len(replayed_calls) > 2 * 8000 // 3, len(replayed_calls)
    assert torch.equal(runs[0]["r"], runs[1]["r"])
    # Found by running it outside pytest: each step whose compiled call raised printed a
    # line of the package's C++ runtime ("Error: ... API call failed at ...wrapper.cpp", 897
    # of them in this run), and compiling printed inductor's log records about its fallbacks.
    # Now at most the first such line of each run, and one warning each that says what it
    # was, at this line.
    err = capfd.readouterr().err
    assert err.count("API call failed") <= 2 and "c-shim" not in err, err[:500]
    said = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(said) == 2 and said[0].filename == __file__, [str(w.message) for w in caught]
    assert "raised at some chains' points (RuntimeError: linalg.cholesky" in str(said[0].message)
    assert "returns -inf there" in str(said[0].message)


@pytest.mark.parametrize("dense", [False, True])
def test_compiled_tree_bookkeeping_gives_the_eager_transitions(dense):
    # the same leapfrog (eager) and the same random numbers: NUTS transitions with the
    # compiled merge of subtrees (one graph for every depth) equal the eager ones. Four chains
    # of the sizes sampled above (dense: two coordinates, as the exact-posterior test's;
    # diagonal: one, as the semicircle's), so that their packages are loaded, not compiled
    # again for this test alone (~15 s each)
    from latentfit.mcmc.compiled import compile_merge
    from latentfit.mcmc.kernels import nuts_transition

    d = 2 if dense else 1
    cov = torch.tensor([[1.0, 0.9], [0.9, 4.0]], dtype=F64)[:d, :d]

    def log_density(x):  # (c, d)
        return D.MultivariateNormal(torch.zeros(d, dtype=F64), cov).log_prob(x)

    target = Target(log_density, {"x": (d,)}, vectorized=True)
    state = _state(target, 4)
    inv = torch.eye(d, dtype=F64).expand(4, d, d).clone() if dense else torch.ones(4, d, dtype=F64)
    metric = Metric(inv * 0.7)
    merge, seconds = compile_merge(metric, state)
    assert merge is not None and seconds > 0
    step = torch.tensor([0.05, 0.4, 1.2, 2.5], dtype=F64)  # deep trees to divergences
    a = b = state
    ga, gb = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    depths = []
    for _ in range(12):
        a, sa = nuts_transition(target, metric, a, step, ga, max_depth=8)
        b, sb = nuts_transition(target, metric, b, step, gb, max_depth=8, merge_step=merge)
        for x, y in zip((*a, *sa), (*b, *sb), strict=True):
            if x.is_floating_point():
                torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-10, equal_nan=True)
            else:
                assert torch.equal(x, y)
        depths.append(sa.tree_depth)
    depths = torch.stack(depths)
    assert depths.max() >= 5 and depths.min() <= 1  # many depths went through the one graph
