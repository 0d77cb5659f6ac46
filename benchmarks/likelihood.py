"""One likelihood table: held-out NLL in bits/dim on the bundled MNIST digits (grey levels).

Data: ``load_vae_data("mnist", seed=0)``, 4,000 training / 1,000 test digits, 256 grey levels.
Every number is -log P(x) of the 8-bit test image in bits per dimension, or a bound on it:

* continuous densities (Gaussian mixtures, PPCA, FA, MAF, Real NVP) model y = (k + u) / 256,
  u ~ U[0, 1)^d; E_u[log p(y)] - d log 256 ≤ log P(k) (uniform dequantisation), so the
  reported figure is an upper bound on the NLL (one u per test digit: an unbiased estimate of
  that bound). The flows score y through a logit, whose Jacobian is counted.
* the VAE and IWAE have the 256-way categorical likelihood p(k | z): their figure is the
  importance-sampled estimate log 1/K Σ p(k, z_i)/q(z_i | k) (biased towards a larger NLL);
* the DDPM reports its variational bound L_T + Σ L_t + L_0 with the discretised decoder
  (a true upper bound on the NLL; the sum over t estimated by stratified sampling of t);
  by default with learned reverse variances, x̂_0 clipped to [-1, 1] and t = 1 drawn in 20%
  of the training rows (the bound's terms weighted by 1/p(t)).

Run: .venv/bin/python benchmarks/likelihood.py [--quick] [--threads 1] [--only ddpm] (see --help
for epochs and the DDPM's settings).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from latentfit import PPCA, FactorAnalysis, GaussianMixture
from latentfit.diffusion import DDPM
from latentfit.flows import MAF, RealNVP
from latentfit.vae.data import load_vae_data

LOG2 = math.log(2)


def load(quick: bool):
    data = load_vae_data("mnist", seed=0)
    train = torch.round(data.train * 255).double()  # levels 0..255
    test = torch.round(data.val * 255).double()
    if quick:
        train, test = train[:600], test[:200]
    return train, test


def dequantised(levels: torch.Tensor, seed: int) -> np.ndarray:
    u = torch.rand(levels.shape, generator=torch.Generator().manual_seed(seed), dtype=levels.dtype)
    return ((levels + u) / 256).numpy()


def continuous_bpd(model, test: torch.Tensor) -> float:
    """Dequantisation bound in bits/dim: -(E_u log p(y) - d log 256) / (d log 2)."""
    d = test.shape[1]
    ll = model.score_samples(dequantised(test, 12345)).mean()
    return float(-(ll - d * math.log(256)) / (d * LOG2))


def by_bic(make, sizes, y):
    """Fit ``make(k)`` for each k, keep the lowest BIC."""
    best = None
    for k in sizes:
        m = make(k).fit(y)
        bic = m.bic(y)
        if best is None or bic < best[0]:
            best = (bic, k, m)
    return best[2], best[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="600/200 digits, one epoch: a smoke run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--flow-epochs", type=int, default=8)
    p.add_argument("--flow-hidden", type=int, default=256)
    p.add_argument("--vae-epochs", type=int, default=3)
    p.add_argument("--vae-hidden", type=int, default=128)
    p.add_argument("--iwae-k", type=int, default=3)
    p.add_argument("--eval-k", type=int, default=100, help="importance samples for the VAEs")
    p.add_argument("--vae-test", type=int, default=300, help="test digits for the VAEs' IS")
    p.add_argument("--ddpm-epochs", type=int, default=40)
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--ddpm-eval-t", type=int, default=50, help="draws of t per test digit")
    p.add_argument("--ddpm-hidden", type=int, default=512)
    p.add_argument("--ddpm-variance", default="learned", help="small, large or learned")
    p.add_argument("--ddpm-skip", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--ddpm-clip", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ddpm-vlb-weight", type=float, default=0.001, help="λ of L_hybrid")
    p.add_argument("--ddpm-decoder-fraction", type=float, default=0.2, help="p(t = 1) - 1/T")
    p.add_argument("--skip", default="", help="comma-separated rows to skip, e.g. gmm-full,vae")
    p.add_argument("--only", default="", help="comma-separated rows to run, e.g. ddpm")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    if args.quick:
        args.flow_epochs = args.vae_epochs = args.ddpm_epochs = 1
        args.eval_k, args.vae_test, args.ddpm_eval_t = 5, 50, 5
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    train, test = load(args.quick)
    d = train.shape[1]
    y = dequantised(train, 0)
    rows = []

    def row(name, kind, fn):
        if name.split(" ")[0].lower() in skip or name in skip or (only and name not in only):
            return
        t0 = time.perf_counter()
        bpd, note = fn()
        rows.append((name, kind, bpd, time.perf_counter() - t0, note))
        print(f"{name:<26}{kind:<34}{bpd:>8.3f}{rows[-1][3]:>9.0f} s  {note}", flush=True)

    print(f"{'model':<26}{'what the figure is':<34}{'bits/dim':>8}{'time':>11}")

    def gmm(cov, sizes):
        def fn():
            # reg_covar is the variance floor of pixels that are (nearly) constant in training;
            # chosen on 500 held-out training digits at the smallest K (BIC cannot see it).
            cut = y.shape[0] - 500
            held = {
                r: GaussianMixture(
                    sizes[0] if cov == "full" else 10,
                    covariance_type=cov,
                    max_iter=100,
                    reg_covar=r,
                    random_state=0,
                )
                .fit(y[:cut])
                .score(y[cut:])
                for r in (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)
            }
            reg = max(held, key=held.get)
            m, k = by_bic(
                lambda k: GaussianMixture(
                    k, covariance_type=cov, max_iter=100, reg_covar=reg, random_state=0
                ),
                sizes,
                y,
            )
            return continuous_bpd(m, test), (
                f"K = {k} by BIC of {list(sizes)}, reg_covar {reg:g} by held-out fit"
            )

        return fn

    row("gmm-diag", "dequantisation bound (exact p)", gmm("diag", [1, 10, 20, 40]))

    def factor(cls, sizes):
        def fn():
            m, q = by_bic(lambda q: cls(q, max_iter=200, random_state=0), sizes, y)
            return continuous_bpd(m, test), f"q = {q} by BIC of {list(sizes)}"

        return fn

    row("ppca", "dequantisation bound (exact p)", factor(PPCA, [10, 30, 60]))
    row("fa", "dequantisation bound (exact p)", factor(FactorAnalysis, [10, 30, 60]))

    def flow(cls):
        def fn():
            m = cls(
                n_layers=5,
                hidden=args.flow_hidden,
                n_hidden=1,
                dequantize=True,
                epochs=args.flow_epochs,
                lr=1e-3,
                patience=5,
                random_state=0,
            ).fit(train.float())
            return m.bits_per_dim(test.float()), (
                f"5 layers, {args.flow_hidden} hidden, {args.flow_epochs} epochs, "
                f"stopped after {len(m.history_)}"
            )

        return fn

    row("maf", "dequantisation bound (exact p)", flow(MAF))
    row("realnvp", "dequantisation bound (exact p)", flow(RealNVP))

    def vae(objective_name):
        def fn():
            from latentfit.train import TrainConfig
            from latentfit.train import train as fit
            from latentfit.vae import ELBO, IWAE, build_model, marginal_log_likelihood

            model = build_model(
                x_dim=d,
                z_dim=32,
                hidden=[args.vae_hidden],
                activation="relu",
                likelihood="categorical",
                seed=0,
            )
            objective = ELBO() if objective_name == "vae" else IWAE(args.iwae_k)
            cfg = TrainConfig(
                epochs=args.vae_epochs,
                batch_size=100,
                lr=1e-3,
                patience=None,
                diagnostics=False,
                progress=False,
                seed=0,
            )
            fit(model, objective, (train / 255).float(), None, cfg)
            ll = marginal_log_likelihood(
                model,
                (test[: args.vae_test] / 255).float(),
                k=args.eval_k,
                generator=torch.Generator().manual_seed(2),
                batch_size=10,
                max_rows=500,
            )
            what = "ELBO" if objective_name == "vae" else f"IWAE k={args.iwae_k}"
            return ll.bits_per_dim, (
                f"{what}, 784-{args.vae_hidden}-32, {args.vae_epochs} epochs; "
                f"IS k={args.eval_k} on {args.vae_test} test digits"
            )

        return fn

    row("vae", "IS estimate (NLL biased up)", vae("vae"))
    row("iwae", "IS estimate (NLL biased up)", vae("iwae"))

    def ddpm():
        m = DDPM(
            args.ddpm_steps,
            variance=args.ddpm_variance,
            gaussian_skip=args.ddpm_skip,
            clip_denoised=args.ddpm_clip,
            decoder_fraction=args.ddpm_decoder_fraction,
            vlb_weight=args.ddpm_vlb_weight,
            hidden=args.ddpm_hidden,
            n_hidden=3,
            epochs=args.ddpm_epochs,
            lr=1e-3,
            patience=None,
            random_state=0,
        ).fit(train.float())
        terms = m.bound_terms(test.float(), n_timesteps=args.ddpm_eval_t, random_state=0)
        parts = ", ".join(
            f"{k} {float(v.mean()) / (d * LOG2):.3f}" for k, v in terms._asdict().items()
        )
        what = f"variance {args.ddpm_variance}"
        if args.ddpm_variance == "learned":
            what += f" (λ = {args.ddpm_vlb_weight:g})"
        what += ", Gaussian skip" * args.ddpm_skip
        what += ", x0 clipped" * args.ddpm_clip
        if args.ddpm_decoder_fraction:
            what += f", t = 1 drawn {args.ddpm_decoder_fraction:g} extra"
        if args.ddpm_skip:
            what += f" (floor {m.skip_floor_:g})"
        return float(terms.total.mean() / (d * LOG2)), (
            f"T={args.ddpm_steps}, MLP 3x{args.ddpm_hidden}, {what}, {args.ddpm_epochs} epochs; "
            f"bits/dim: {parts}"
        )

    row("ddpm", "variational bound (upper)", ddpm)
    # last: a full 784 × 784 covariance per component takes minutes per fit on a CPU
    row("gmm-full", "dequantisation bound (exact p)", gmm("full", [1, 2]))


if __name__ == "__main__":
    main()
