"""Tensor operations and time per NUTS doubling, the kernel against its frozen pre-packing copy.

Counts every aten operation launched by ``nuts_transition`` on eight schools (a
``TorchDispatchMode`` hook), leaving out those inside the leapfrog step and the gradient (the
same in both kernels); a doubling is counted by its direction draw. Then times the two kernels
in one process, alternating, from the same seeds (``--time``), and reports the time outside the
leapfrog per transition. The frozen copy is ``_ref_nuts_transition`` of
tests/mcmc/test_kernel_equivalence.py, which also holds the two to the same draws bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/nuts_ops.py [--dense] [--hand-gradient] [--time]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import tests.mcmc.test_kernel_equivalence as frozen  # noqa: E402
from tests.mcmc.posteriors import POSTERIORS  # noqa: E402

from latentfit.mcmc import Target, kernels  # noqa: E402

F64 = torch.float64
KERNELS = {"before": frozen._ref_nuts_transition, "after": kernels.nuts_transition}


class _Count(TorchDispatchMode):
    """Operations outside the leapfrog; doublings from the (c,)-shaped uniform draws (two a
    doubling: the direction and the progressive-sampling coin)."""

    def __init__(self, paused):
        super().__init__()
        self.paused, self.ops, self.coins = paused, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused[0]:
            self.ops += 1
            self.coins += func is torch.ops.aten.rand.generator and len(args[0]) == 1
        return func(*args, **(kwargs or {}))


def _patch_leapfrog(wrapper):
    kernels._leapfrog = frozen._leapfrog = wrapper


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense", action="store_true", help="dense metric (identity)")
    ap.add_argument("--hand-gradient", action="store_true", help="value_and_grad, no autograd")
    ap.add_argument("--time", action="store_true", help="A/B timing, alternating")
    ap.add_argument("--transitions", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(1)

    post = POSTERIORS["eight_schools"]()
    shapes = {k: tuple(torch.as_tensor(v).shape) for k, v in post.init.items()}
    kw = {"value_and_grad": post.value_and_grad} if a.hand_gradient else {}
    target = Target(post.log_density, shapes, post.constraints, vectorized=True, **kw)
    c, d = 4, target.n_free
    inv = torch.eye(d, dtype=F64).expand(c, d, d).clone() if a.dense else torch.ones(c, d)
    metric = kernels.Metric(inv.to(F64))
    step = torch.full((c,), 0.4, dtype=F64)  # eight schools' adapted step is ~0.4

    def run(fn, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        u = 0.5 * torch.randn(c, d, generator=g, dtype=F64)
        state = kernels.State(u, *target.log_prob_and_grad(u))
        for _ in range(n):
            state, _ = fn(target, metric, state, step, g, 10)

    leapfrog = kernels._leapfrog
    paused, in_leapfrog = [0], [0.0]

    def counted(*args):
        paused[0] += 1
        try:
            return leapfrog(*args)
        finally:
            paused[0] -= 1

    def timed(*args):
        t0 = time.perf_counter()
        try:
            return leapfrog(*args)
        finally:
            in_leapfrog[0] += time.perf_counter() - t0

    n = 50
    for name, fn in KERNELS.items():
        _patch_leapfrog(counted)
        try:
            with _Count(paused) as m:
                run(fn, n)
        finally:
            _patch_leapfrog(leapfrog)
        doublings = m.coins // 2
        print(
            f"{name}: {m.ops / n:.0f} operations a transition outside the leapfrog, "
            f"{m.ops / doublings:.1f} a doubling ({doublings / n:.2f} doublings a transition)"
        )
    if not a.time:
        return
    outside = {k: [] for k in KERNELS}
    _patch_leapfrog(timed)
    try:
        for fn in KERNELS.values():
            run(fn, 20)
        for rep in range(a.repeats):
            for name, fn in KERNELS.items():
                in_leapfrog[0] = 0.0
                t0 = time.perf_counter()
                run(fn, a.transitions, seed=rep % 5)
                outside[name].append(time.perf_counter() - t0 - in_leapfrog[0])
    finally:
        _patch_leapfrog(leapfrog)
    for name, v in outside.items():
        v = sorted(x / a.transitions * 1e3 for x in v)
        print(
            f"{name}: outside the leapfrog {v[0]:.2f} ms a transition (min), {v[len(v) // 2]:.2f} (median)"
        )
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
