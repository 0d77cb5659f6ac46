"""Training throughput of flows and the DDPM: latentfit's trainer against a bare PyTorch loop
with the same network, and the DDPM against the same network trained with diffusers'
DDPMScheduler (noise added by ``scheduler.add_noise``), side by side.

Data: scikit-learn's 8×8 digits (1,797 × 64, 17 grey levels), batch 100. Every loop runs the
same number of optimiser steps on the same module; loops are interleaved (in reverse order on
every other repeat) and the best of --repeats is kept, so a burst of load hits all alike; the
last column is the median over repeats of the ratio within one repeat (a load that drifts
between repeats cancels in it). The trainer adds per-step bookkeeping
(bound sums, gradient norm, a NaN check, exact-resume random streams).

Run: .venv/bin/python benchmarks/flows.py [--epochs 5] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from latentfit.diffusion import DDPM
from latentfit.flows import MAF
from latentfit.train import TrainConfig, train


def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().data).float()  # levels 0..16


def flow_module(X):
    est = MAF(n_layers=5, hidden=256, n_hidden=1, dequantize=True, n_levels=17)
    est.level_scale_ = 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return est._build(X.shape[1])


def ddpm_module(X):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DDPM(1000, hidden=256, n_hidden=3, n_levels=17)._build(X.shape[1])


def cfg(epochs):
    return TrainConfig(
        epochs=epochs, batch_size=100, patience=None, diagnostics=False, progress=False
    )


def trainer_flow(X, epochs):
    from latentfit.flows import FlowNLL

    train(flow_module(X), FlowNLL(), X, None, cfg(epochs))


def bare_flow(X, epochs, fused=False):
    m = flow_module(X)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=fused)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], 100):
            loss = -m(X[perm[i : i + 100]], gen).mean() / X.shape[1]
            opt.zero_grad()
            loss.backward()
            opt.step()


def trainer_ddpm(X, epochs):
    from latentfit.diffusion import DiffusionLoss

    train(ddpm_module(X), DiffusionLoss(), X / 8 - 1, None, cfg(epochs))


def bare_ddpm(X, epochs, fused=False):
    m = ddpm_module(X)
    X = X / 8 - 1
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=fused)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], 100):
            x0 = X[perm[i : i + 100]]
            t = torch.randint(1, m.n_steps + 1, (x0.shape[0],), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            loss = (eps - m.denoiser(m.q_sample(x0, t, eps), t)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def diffusers_ddpm(X, epochs):
    from diffusers import DDPMScheduler

    m = ddpm_module(X)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    X = X / 8 - 1
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], 100):
            x0 = X[perm[i : i + 100]]
            t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            noisy = sched.add_noise(x0, eps, t)
            loss = (eps - m.denoiser(noisy, t + 1)).square().mean()  # our t runs 1..T
            opt.zero_grad()
            loss.backward()
            opt.step()


def race(title, loops, X, epochs, repeats):
    for fn in loops.values():  # warm-up
        fn(X[:300], 1)
    wall = dict.fromkeys(loops, math.inf)
    cpu = dict.fromkeys(loops, math.inf)
    paired = {name: [] for name in loops}
    for r in range(repeats):
        this = {}
        for name in list(loops) if r % 2 == 0 else list(loops)[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            loops[name](X, epochs)
            wall[name] = min(wall[name], time.perf_counter() - t0)
            this[name] = time.process_time() - c0
            cpu[name] = min(cpu[name], this[name])
        for name in loops:
            paired[name].append(this[name] / this["latentfit trainer"])
    rw, rc = wall["latentfit trainer"], cpu["latentfit trainer"]
    rows = X.shape[0] * epochs
    print(f"{title}: {epochs} epochs of {X.shape[0]} rows, batch 100, best of {repeats}")
    print(
        f"{'':<30}{'rows/s':>9}{'trainer vs this':>17}{'CPU rows/s':>12}{'trainer vs this':>17}"
        f"{'median paired':>15}"
    )
    for name in loops:
        print(
            f"{name:<30}{rows / wall[name]:>9.0f}{wall[name] / rw:>16.2f}x"
            f"{rows / cpu[name]:>12.0f}{cpu[name] / rc:>16.2f}x"
            f"{statistics.median(paired[name]):>14.2f}x"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--part", choices=["flow", "ddpm", "all"], default="all")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    X = digits()
    if args.part in ("flow", "all"):
        race_flow(X, args)
    if args.part in ("ddpm", "all"):
        race_ddpm(X, args)


def race_flow(X, args):
    race(
        "MAF 5 x 256 (dequantised digits)",
        {
            "latentfit trainer": trainer_flow,
            "bare PyTorch loop": bare_flow,
            "bare loop, fused Adam": lambda X, e: bare_flow(X, e, fused=True),
        },
        X,
        args.epochs,
        args.repeats,
    )


def race_ddpm(X, args):
    loops = {
        "latentfit trainer": trainer_ddpm,
        "bare PyTorch loop": bare_ddpm,
        "bare loop, fused Adam": lambda X, e: bare_ddpm(X, e, fused=True),
    }
    try:
        import diffusers  # noqa: F401

        loops["diffusers DDPMScheduler loop"] = diffusers_ddpm
    except ImportError:
        print("(diffusers is not installed: its row is left out)")
    race("DDPM T=1000, MLP 3 x 256", loops, X, args.epochs, args.repeats)


if __name__ == "__main__":
    main()
