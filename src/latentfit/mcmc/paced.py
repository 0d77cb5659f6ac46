"""NUTS with every chain at its own pace inside one batch (``SamplerConfig(pace="own")``, the
default on the CPU).

A batched transition (kernels.nuts_transition) runs until its longest chain's trajectory
ends, every chain stepping meanwhile: at 32 chains only 25-31% of a warm-up's computed steps
and 49-64% of the draws' are steps a chain needed (benchmarks/README.md). Here each chain
runs its own transitions: every batched step is one leapfrog step of every chain (the same
replayed or compiled step), then one leaf of every chain's tree in a compiled CPU kernel
(paced_kernel.py), which ends a chain's transition, records it and starts its next one as
soon as its own tree ends. A run of ``n`` transitions costs the most steps any one chain
needs, not the sum over transitions of the longest chain's.

The kernel's arithmetic is float64 whatever the model's dtype (a float32 run converts the
step's outputs and inputs), and until numba has compiled it a run calls its interpreted twin,
which draws the same bit for bit (paced_compile.py).

The trees are Stan's (the same U-turn checks, multinomial draws and statistics as the
batched kernel; tests/mcmc/test_paced.py holds them to it in distribution); the random
numbers are drawn per batched step, so the draws differ from the batched kernel's for the
same seed. The warm-up adapts each chain's step size after each of its transitions; the
chains wait for one another where Stan's windows end (the metric and a new step size are set
for every chain at once, as the batched warm-up does) and where stranded chains are moved.
"""

from __future__ import annotations

import numpy as np
import torch

from latentfit.mcmc.kernels import State, _leapfrog

__all__ = ["dual_averaging_state", "final_step", "run_paced"]

#: batched steps between two looks at the progress bar and at a stop asked by Ctrl-C
_BLOCK = 64


def run_paced(run, n: int, da: np.ndarray | None = None, stop=None, progress=None) -> dict:
    """``n`` NUTS transitions of every chain of ``run`` (a sampler._Run: its target, metric,
    state, step sizes, generator and leapfrog step), each chain at its own pace; the step
    sizes adapt by dual averaging where ``da`` (c, 4: mu, s_bar, x_bar, count) is given
    (updated in place). ``stop()`` true ends the run early, once every chain has
    ``min(4, n)`` transitions; ``progress(counts)`` is told each chain's transitions so far (c,).
    ``run.state`` becomes each chain's last recorded draw and
    ``run.step`` its step size; returns the records (c, m, ...) of ``_Run.draw``, m <= n."""
    from latentfit.mcmc.paced_compile import Kernel

    st, metric = run.state, run.metric
    c, d = st.u.shape
    dt = st.u.dtype
    dense = bool(metric.dense)
    D = run.config.max_depth

    def zeros(*shape, dtype=np.float64):
        return np.zeros(shape, dtype=dtype)

    def f64(x: torch.Tensor) -> np.ndarray:  # the kernel's arithmetic is float64 for any dtype
        return x.detach().to(torch.float64).contiguous().numpy()

    # the leapfrog step's outputs (contiguous, no gradient), as the kernel takes them
    out = torch.Tensor.numpy if dt == torch.float64 else f64

    inv = f64(metric.inv)
    invd, invf = (zeros(1, 1), inv) if dense else (inv, zeros(1, 1, 1))
    cholt = f64(metric.chol.transpose(1, 2)) if dense else zeros(1, 1, 1)  # (c, p, p)
    eps = f64(run.step).copy()
    adapt = da is not None
    da = da if adapt else np.zeros((c, 4))
    k, j, side, depth, n_leap, t_c = (zeros(c, dtype=np.int64) for _ in range(6))
    S, ck, last = zeros(c, d), zeros(c, D, 3 * d), zeros(c, D, 2 * d)
    lws, dsub, lwt, sm = zeros(c), zeros(c, 3 * d + 1), zeros(c), zeros(c)
    H0, rho, ends = zeros(c), zeros(c, d), zeros(c, 2, 4 * d + 1)
    draw = zeros(c, 3 * d + 1)  # the chains' state: u, g, (momentum), lp
    draw[:, :d] = f64(st.u)
    draw[:, d : 2 * d] = f64(st.grad)
    draw[:, 3 * d] = f64(st.log_prob)
    rec_u, rec_lp, rec_stat = zeros(c, n, d), zeros(c, n), zeros(c, n, 5)
    rec_div = np.full((c, n, d), np.nan)
    rec_g = zeros(c, n, d)
    cu, cg, cp, clp, e, half = (
        zeros(c, d),
        zeros(c, d),
        zeros(c, d),
        zeros(c),
        zeros(c, 1),
        zeros(c, 1),
    )
    seed, t0 = paced_seed(run), run.n_paced
    Kernel("start").fn(
        seed, t0, dense, invd, invf, cholt, eps, H0, draw, ends, rho, lwt, depth, n_leap, sm,
        j, side, lws, k, S, cu, cg, cp, clp, e, half,
    )  # fmt: skip
    # the step's inputs: views of what the kernel writes (copies in the run's dtype)
    views = [torch.from_numpy(x) for x in (cu, cg, cp, clp, e, half)]
    step_fn = run.leapfrog_step or _leapfrog
    target = run.target
    delta = float(run.config.target_accept)
    need = min(4, n)
    fewest = 0
    leaf = Kernel("leaf")
    while fewest < n:
        for _ in range(_BLOCK):
            t_cu, t_cg, t_cp, t_clp, t_e, t_half = (
                views if dt == torch.float64 else [x.to(dt) for x in views]
            )
            leaf_, p1 = step_fn(target, metric, State(t_cu, t_clp, t_cg), t_cp, t_e, t_half)
            fewest = leaf.fn(
                out(leaf_.u), out(leaf_.grad), out(p1), out(leaf_.log_prob),
                invd, invf, dense, cholt, eps, seed, t0,
                H0, k, j, S, ck, last, lws, dsub, lwt, draw, rho, ends, side, depth, n_leap,
                sm, D, da, adapt, delta, cu, cg, cp, clp, e, half,
                rec_u, rec_g, rec_lp, rec_stat, rec_div, t_c,
            )  # fmt: skip
            if fewest >= n:
                break
        made = min(fewest, n)
        if progress is not None:
            progress(np.minimum(t_c, n))
        if stop is not None and made >= need and stop():
            break
    m = min(int(t_c.min()), n)  # a stop: every chain's first m draws, where it stood then

    def back(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(dt)

    if m:
        run.state = State(*(back(x[:, m - 1].copy()) for x in (rec_u, rec_lp, rec_g)))
    run.step = back(eps.copy())
    run.n_paced = t0 + m
    stat = torch.from_numpy(rec_stat[:, :m])
    return {
        "u": back(rec_u[:, :m]),
        "lp": back(rec_lp[:, :m]),
        "accept_stat": stat[..., 0].to(dt, copy=True),
        "n_leapfrog": stat[..., 1].long(),
        "tree_depth": stat[..., 2].long(),
        "diverging": stat[..., 3] > 0,
        "energy": stat[..., 4].to(dt, copy=True),
        "divergence_u": back(rec_div[:, :m]),
    }


def paced_seed(run) -> np.uint64:
    """The run's key for its random numbers (paced_kernel.uniform), drawn once from its
    generator: a run that resumes continues every chain's numbers."""
    if getattr(run, "seed", None) is None:
        run.seed = np.uint64(torch.randint(2**62, (1,), generator=run.gen).item())
    return run.seed


def dual_averaging_state(step: torch.Tensor) -> np.ndarray:
    """Dual averaging restarted at ``step`` (c,), as ``adaptation.DualAveraging.restart``:
    mu = log(10 step), s_bar = x_bar = 0, no transitions counted."""
    da = np.zeros((step.shape[0], 4))
    da[:, 0] = np.log(10 * step.detach().double().numpy())
    return da


def final_step(da: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The warm-up's step sizes: exp(x_bar), as ``DualAveraging.final``."""
    return torch.from_numpy(np.exp(da[:, 2])).to(like)
