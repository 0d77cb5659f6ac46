"""Effective samples per second: latentfit NUTS vs NumPyro NUTS (CPU) vs Pyro NUTS.

The same posterior (tests/mcmc/posteriors.py; written here in JAX for NumPyro, and given to
Pyro as the very same torch potential), the same chains, warm-up and draws, one process. The
figure is min over parameters of ArviZ's bulk ESS divided by the wall time including warm-up
(and NumPyro's compilation). latentfit runs three times: eagerly with autograd on the same
torch log-density Pyro gets ("latentfit", ``compile=False``), with its default, the same steps
traced and replayed ("latentfit-r", ``compile="replay"``), and with the posterior's
hand-written gradient ("latentfit-hg", ``value_and_grad=``); with ``--compile`` a fourth time, "latentfit-c": the autograd density with
``compile=True`` (sampling from the first transition while child processes compile what is
not on disk yet; any compiling this process waited for is counted in its wall time, as
NumPyro's), and with ``--compile-wait`` "latentfit-cw", ``compile="wait"`` (every compile waited
for before the first transition). Children still compiling when a latentfit run ends are
waited for before the next library runs, outside every timing, so that no library shares the
cores with them. A first run of ``compile=True`` needs an empty ``LATENTFIT_CACHE_DIR``. Usage:

    OMP_NUM_THREADS=1 python benchmarks/mcmc.py [--posterior eight_schools] [--chains 4]
        [--warmup 500] [--draws 500] [--skip-pyro] [--skip-hand] [--compile] [--compile-wait]
        [--skip-eager] [--skip-replay] [--jax-cache DIR] [--device cuda] [--steps]
        [--batch-pace]

"latentfit-r" runs the library's default pace (``pace="own"``: each chain at its own pace
inside the batch, mcmc/paced.py); ``--batch-pace`` adds "latentfit-rb", the replayed run with
``pace="batch"`` (every chain's transition in step with the others').
``--steps`` adds, for latentfit's replayed runs and NumPyro, the leapfrog steps of every
transition, warm-up included: those the chains needed (``sum(n_leapfrog)``), those a batched
transition computes (chains x the longest chain's), and the bound of chains that run on at their
own pace inside one batch (the batched steps would be the most any one chain needs, with one
wait for every chain at the end of the first warm-up window, where stranded chains are moved).
NumPyro then runs its warm-up and its draws as two calls, to keep the warm-up's counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.mcmc.posteriors import POSTERIORS, load_data  # noqa: E402

from latentfit.mcmc import Target, builds, sample_target  # noqa: E402
from latentfit.mcmc.adaptation import WindowSchedule  # noqa: E402
from latentfit.mcmc.result import import_arviz  # noqa: E402
from latentfit.mcmc.sampler import SamplerConfig  # noqa: E402

warnings.simplefilter("ignore")

#: with --steps: each library's leapfrog steps per transition, (chains, warm-up + draws)
STEPS: dict[str, np.ndarray] | None = None


def steps_report(lib: str, n: np.ndarray, warmup: int) -> str:
    """Needed and computed leapfrog steps of a batched run (``n`` (chains, transitions)), by
    phase, and the batched steps of chains that run at their own pace (see the docstring)."""
    c = n.shape[0]
    out = []
    for phase, m in (("warm-up", n[:, :warmup]), ("draws", n[:, warmup:])):
        batched = int(m.max(0).sum())
        out.append(
            f"{phase} needed {int(m.sum())} computed {c * batched} "
            f"(efficiency {m.sum() / max(c * batched, 1):.2f})"
        )
    batched = int(n.max(0).sum())
    buffer = WindowSchedule(warmup).init_buffer if warmup else 0
    own = int(n[:, :buffer].sum(1).max() + n[:, buffer:].sum(1).max())
    return (
        f"  {lib} steps: {'; '.join(out)}; batched steps {batched}, at own pace {own} "
        f"({batched / max(own, 1):.2f}x fewer)"
    )


def min_ess(draws: dict[str, np.ndarray]) -> float:
    """min over every scalar coordinate of ArviZ's bulk ESS; draws are (chains, draws, ...)."""
    az = import_arviz()
    return float(
        min(
            float(
                az.ess(az.convert_to_dataset({"v": v.reshape(v.shape[0], v.shape[1], -1)[..., j]}))[
                    "v"
                ]
            )
            for v in draws.values()
            for j in range(int(np.prod(v.shape[2:])) or 1)
        )
    )


def run_latentfit(
    post, chains, warmup, draws, metric, hand=False, compile=False, device="cpu", pace=None
):
    target = Target(
        post.log_density,
        {k: tuple(torch.as_tensor(v).shape) for k, v in post.init.items()},
        post.constraints,
        vectorized=True,
        value_and_grad=post.value_and_grad if hand else None,
        device=device,
    )
    t = time.perf_counter()
    res = sample_target(
        target,
        num_chains=chains,
        num_warmup=warmup,
        num_draws=draws,
        config=SamplerConfig(metric=metric, compile=compile, **({"pace": pace} if pace else {})),
        generator=0,
        progress_bar=False,
    )
    if target.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    if STEPS is not None and compile == "replay" and not hand:
        n = [res.warmup_stats["n_leapfrog"], res.sample_stats["n_leapfrog"]]
        lib = "latentfit-rb" if pace == "batch" else "latentfit-r"
        STEPS[lib] = torch.cat([x for x in n if x is not None], 1).cpu().numpy()
    if compile in (True, "wait"):  # what compiling cost, and from which transition it ran
        stats = res.warmup_stats
        t = time.perf_counter()
        builds.wait()  # children still compiling: not beside the next library's run
        print(
            f"  ({post.name} compile={compile!r}: {stats['compile_seconds']:.1f} s waited for, "
            f"compiled from transition {stats['compiled_from']}, replayed before: "
            f"{', '.join(stats['replayed']) or 'nothing'}; children ran on for "
            f"{time.perf_counter() - t:.1f} s)",
            flush=True,
        )
    return wall, min_ess({"u": res.unconstrained.cpu().numpy()})


def run_pyro(post, chains, warmup, draws, metric):
    """Pyro NUTS on the same torch potential (unconstrained space, one chain per call; Pyro
    runs its chains one after another in one process)."""
    from pyro.infer import MCMC, NUTS

    target = Target(
        post.log_density,
        {k: tuple(torch.as_tensor(v).shape) for k, v in post.init.items()},
        post.constraints,
        vectorized=True,
    )

    def potential(params):
        return -target.log_prob(params["u"][None])[0]

    kernel = NUTS(potential_fn=potential, full_mass=metric == "dense")
    init = {"u": (torch.rand(chains, target.n_free, dtype=torch.float64) * 4 - 2)}
    t = time.perf_counter()
    out = []
    for c in range(chains):  # Pyro in one process runs chains sequentially
        m = MCMC(
            kernel,
            num_samples=draws,
            warmup_steps=warmup,
            num_chains=1,
            initial_params={"u": init["u"][c]},
            disable_progbar=True,
        )
        m.run()
        out.append(m.get_samples()["u"])
    wall = time.perf_counter() - t
    return wall, min_ess({"u": torch.stack(out).numpy()})


def jax_potential(name):
    """The same posteriors in JAX, in unconstrained coordinates (Jacobians added)."""
    import jax.numpy as jnp
    from jax.scipy import stats

    if name == "eight_schools":
        d = load_data("eight_schools-eight_schools_noncentered")
        y, s = jnp.array(d["y"]), jnp.array(d["sigma"])

        def logp(u):
            tt, mu, ltau = u[:8], u[8], u[9]
            tau = jnp.exp(ltau)
            theta = tt * tau + mu
            return (
                stats.norm.logpdf(tt).sum()
                + stats.norm.logpdf(y, theta, s).sum()
                + stats.norm.logpdf(mu, 0, 5)
                + stats.cauchy.logpdf(tau, 0, 5)
                + ltau
            )

        return logp, 10
    if name == "arK":
        d = load_data("arK-arK")
        K, y = d["K"], jnp.array(d["y"])
        T = y.shape[0]
        lags = jnp.stack([y[K - k : T - k] for k in range(1, K + 1)], -1)

        def logp(u):
            alpha, beta, ls = u[0], u[1 : 1 + K], u[1 + K]
            sigma = jnp.exp(ls)
            mu = alpha + lags @ beta
            return (
                stats.norm.logpdf(alpha, 0, 10)
                + stats.norm.logpdf(beta, 0, 10).sum()
                + stats.cauchy.logpdf(sigma, 0, 2.5)
                + ls
                + stats.norm.logpdf(y[K:], mu, sigma).sum()
            )

        return logp, K + 2
    if name == "gauss_mix":
        y = jnp.array(load_data("low_dim_gauss_mix-low_dim_gauss_mix")["y"])

        def logp(u):
            mu = jnp.array([u[0], u[0] + jnp.exp(u[1])])
            sigma = jnp.exp(u[2:4])
            theta = 1 / (1 + jnp.exp(-u[4]))
            lj = u[1] + u[2] + u[3] + jnp.log(theta) + jnp.log1p(-theta)
            comp = jnp.stack(
                [
                    jnp.log(theta) + stats.norm.logpdf(y, mu[0], sigma[0]),
                    jnp.log1p(-theta) + stats.norm.logpdf(y, mu[1], sigma[1]),
                ]
            )
            from jax.scipy.special import logsumexp

            return (
                stats.norm.logpdf(sigma, 0, 2).sum()
                + stats.norm.logpdf(mu, 0, 2).sum()
                + stats.beta.logpdf(theta, 5, 5)
                + logsumexp(comp, 0).sum()
                + lj
            )

        return logp, 5
    if name == "diamonds":
        d = load_data("diamonds-diamonds")
        X, Y = np.asarray(d["X"]), np.asarray(d["Y"])
        Xc = X[:, 1:] - X[:, 1:].mean(0)
        n = Y.shape[0]
        xtx, xty, yty, ysum = (
            jnp.array(Xc.T @ Xc),
            jnp.array(Xc.T @ Y),
            float(Y @ Y),
            float(Y.sum()),
        )

        def logp(u):
            b, a, ls = u[:24], u[24], u[25]
            sigma = jnp.exp(ls)
            rss = yty - 2 * a * ysum + n * a**2 - 2 * b @ xty + b @ xtx @ b
            loglik = -0.5 * rss / sigma**2 - n * ls - 0.5 * n * jnp.log(2 * jnp.pi)
            return (
                stats.norm.logpdf(b).sum()
                + stats.t.logpdf(a, 3, 8, 10)
                + stats.t.logpdf(sigma, 3, 0, 10)
                + jnp.log(2.0)
                + ls
                + loglik
            )

        return logp, 26
    raise KeyError(name)


def run_numpyro(name, chains, warmup, draws, metric, cache=None):
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache:  # every compiled program kept, however quick its compiling was
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from numpyro.infer import MCMC, NUTS

    logp, p = jax_potential(name)
    kernel = NUTS(potential_fn=lambda u: -logp(u), dense_mass=metric == "dense")
    init = jax.random.uniform(jax.random.PRNGKey(1), (chains, p), minval=-2, maxval=2)
    if chains == 1:
        init = init[0]  # NumPyro takes one chain's init without the chain dimension
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    t = time.perf_counter()
    if STEPS is None:
        mcmc.run(jax.random.PRNGKey(0), init_params=init)
    else:  # the warm-up's steps kept: two calls
        extra = ("num_steps",)
        mcmc.warmup(
            jax.random.PRNGKey(0), init_params=init, collect_warmup=True, extra_fields=extra
        )
        n = [np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])]
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=extra)
        n.append(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"]))
        STEPS["numpyro"] = np.concatenate([x.reshape(chains, -1) for x in n], 1)
    u = np.asarray(mcmc.get_samples(group_by_chain=True))
    wall = time.perf_counter() - t
    return wall, min_ess({"u": u})


METRIC = {"eight_schools": "diag", "arK": "diag", "gauss_mix": "diag", "diamonds": "dense"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--posterior", default=None, choices=list(POSTERIORS))
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--skip-pyro", action="store_true")
    ap.add_argument("--skip-hand", action="store_true")
    ap.add_argument("--skip-eager", action="store_true", help="no eager autograd run")
    ap.add_argument("--skip-replay", action="store_true", help='no compile="replay" run')
    ap.add_argument(
        "--steps",
        action="store_true",
        help="leapfrog steps needed and computed, and the bound of chains at their own pace",
    )
    ap.add_argument(
        "--batch-pace",
        action="store_true",
        help='add "latentfit-rb": the replayed run with pace="batch" (chains in step)',
    )
    ap.add_argument("--compile", action="store_true", help="add the compile=True run")
    ap.add_argument("--compile-wait", action="store_true", help='add the compile="wait" run')
    ap.add_argument(
        "--jax-cache",
        default=None,
        help="JAX's persistent compilation cache in this folder, for NumPyro (compile=True "
        "keeps its packages on disk; this gives NumPyro the same on a second run)",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        help="where latentfit's chains run (cuda: the posterior's data there too); NumPyro "
        "runs where JAX puts it (JAX_PLATFORMS=cpu for the CPU), Pyro on the CPU",
    )
    args = ap.parse_args()
    if args.steps:
        global STEPS
        STEPS = {}
    names = [args.posterior] if args.posterior else list(POSTERIORS)
    torch.set_num_threads(1)
    print(f"chains {args.chains}, warm-up {args.warmup}, draws {args.draws}; {_load()}")
    ours = [
        lib
        for lib, on in (
            ("latentfit", not args.skip_eager),
            ("latentfit-r", not args.skip_replay),
            ("latentfit-rb", args.batch_pace),
            ("latentfit-hg", not args.skip_hand),
            ("latentfit-c", args.compile),
            ("latentfit-cw", args.compile_wait),
        )
        if on
    ]
    print(
        f"{'posterior':14s} {'library':12s} {'wall s':>8s} {'min ESS':>8s} {'ESS/s':>8s} "
        + " ".join(f"{lib.replace('latentfit', 'lf') + '/lib':>9s}" for lib in ours)
    )
    for name in names:
        with torch.device(args.device):  # the posterior's data where latentfit's chains run
            post = POSTERIORS[name]()
        metric = METRIC[name]
        run = (args.chains, args.warmup, args.draws, metric)
        on = dict(device=args.device)
        rows = {}
        if not args.skip_eager:
            rows["latentfit"] = run_latentfit(post, *run, **on)
        if not args.skip_replay:
            rows["latentfit-r"] = run_latentfit(post, *run, compile="replay", **on)
        if args.batch_pace:
            rows["latentfit-rb"] = run_latentfit(post, *run, compile="replay", pace="batch", **on)
        if not args.skip_hand:
            rows["latentfit-hg"] = run_latentfit(post, *run, hand=True, **on)
        if args.compile:
            rows["latentfit-c"] = run_latentfit(post, *run, compile=True, **on)
        if args.compile_wait:
            rows["latentfit-cw"] = run_latentfit(post, *run, compile="wait", **on)
        if args.device != "cpu" and not args.skip_pyro:  # Pyro's potential on the CPU
            post = POSTERIORS[name]()
        rows["numpyro"] = run_numpyro(name, *run, cache=args.jax_cache)
        if not args.skip_pyro:
            rows["pyro"] = run_pyro(post, *run)
        rate = {lib: ess / wall for lib, (wall, ess) in rows.items()}
        for lib, (wall, ess) in rows.items():
            ratios = " ".join(f"{rate[mine] / rate[lib]:9.2f}" for mine in ours)
            print(
                f"{name:14s} {lib:12s} {wall:8.1f} {ess:8.0f} {rate[lib]:8.1f} {ratios}",
                flush=True,
            )
        for lib, n in (STEPS or {}).items():
            print(steps_report(lib, n, args.warmup), flush=True)
        if STEPS:
            STEPS.clear()
    print(_load())


def _load() -> str:
    """The machine's load average: the runs share it, so absolute times move with it."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


if __name__ == "__main__":
    main()
