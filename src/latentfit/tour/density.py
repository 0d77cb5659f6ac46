"""Tour section: density models by exact likelihood and by a bound, on one likelihood table.

Trained once at small size on scikit-learn's 8×8 digits (17 grey levels), so the section runs
in seconds; benchmarks/likelihood.py gives the full table on the bundled MNIST digits.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from latentfit.errors import VarianceFloorWarning
from latentfit.tour.report import Section, TourContext, subplots


def build(ctx: TourContext) -> Section:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is fastest on a shared machine
    try:
        return _build(ctx)
    finally:
        torch.set_num_threads(threads)


def _build(ctx: TourContext) -> Section:
    from latentfit import GaussianMixture
    from latentfit.diffusion import DDPM
    from latentfit.flows import MAF
    from latentfit.vae.data import load_vae_data
    from latentfit.vae.images import image_grid

    data = load_vae_data("digits", seed=ctx.seed)
    L = 17
    train, test = torch.round(data.train * 16), torch.round(data.val * 16)  # levels 0..16
    d = train.shape[1]
    g = torch.Generator().manual_seed(ctx.seed)
    y_train = ((train + torch.rand(train.shape, generator=g, dtype=train.dtype)) / L).numpy()
    y_test = ((test + torch.rand(test.shape, generator=g, dtype=test.dtype)) / L).numpy()

    def deq_bits(ll):  # dequantisation bound: -(E_u log p(y) - d log L) / (d log 2)
        return float(-(np.mean(ll) - d * math.log(L)) / (d * math.log(2)))

    rows = []
    gmm = GaussianMixture(10, covariance_type="diag", reg_covar=1e-3, random_state=ctx.seed)
    with warnings.catch_warnings():
        # the border pixels are always 0: their only variation is the dequantisation noise
        # (variance 1 / (12 L^2) = 2.9e-4), which reg_covar = 1e-3 is meant to floor
        warnings.simplefilter("ignore", VarianceFloorWarning)
        gmm.fit(y_train)
    rows.append(("GMM, diag, K=10", "bound (exact p)", deq_bits(gmm.score_samples(y_test))))
    maf = MAF(
        n_layers=4,
        hidden=48,
        n_hidden=1,
        dequantize=True,
        n_levels=L,
        epochs=8,
        lr=3e-3,
        patience=None,
        random_state=ctx.seed,
    ).fit(train)
    rows.append(("MAF, 4 layers", "bound (exact p)", maf.bits_per_dim(test)))
    ddpm = DDPM(
        100,
        variance="learned",
        clip_denoised=True,
        decoder_fraction=0.2,
        hidden=96,
        n_hidden=2,
        n_levels=L,
        epochs=8,
        lr=2e-3,
        patience=None,
        random_state=ctx.seed,
    ).fit(train)
    rows.append(("DDPM, T=100", "variational bound", ddpm.bits_per_dim(test, n_timesteps=20)))
    table = f"{'model':<18} {'bits/dim is a':<18} {'bits/dim':>8}\n" + "\n".join(
        f"{n:<18} {w:<18} {b:>8.3f}" for n, w, b in rows
    )

    fig, axes = subplots(1, 3, figsize=(10, 3.6))
    panels = [
        ("test digits", test[:36] / 16),
        ("MAF samples", torch.as_tensor(maf.sample(36, random_state=ctx.seed)) / 16),
        ("DDPM samples", torch.as_tensor(ddpm.sample(36, random_state=ctx.seed)) / 16),
    ]
    for ax, (title, imgs) in zip(axes, panels, strict=True):
        ax.imshow(image_grid(imgs.float(), (8, 8), 6), cmap="gray")
        ax.set_title(title)
        ax.axis("off")
    fig_path = ctx.save_figure(fig, "density_samples.png")
    return Section(
        title="Density models: exact likelihood (flows) and a variational bound (diffusion)",
        paragraphs=[
            "A normalizing flow maps x to noise by invertible layers, so log p(x) = log N(f(x)) + "
            "log|det ∂f/∂x| is exact and is maximised directly (MAF, Papamakarios et al. 2017). "
            "A diffusion model is a latent-variable model with T latents x₁..x_T, a fixed "
            "Gaussian forward process and a learned reverse process: it is trained by a "
            "simplified loss but scored by its variational bound L_T + Σ L_t + L_0 (Ho et al. "
            "2020), an upper bound on −log p(x).",
            f"Data: scikit-learn's 8×8 digits, {L} grey levels, {train.shape[0]} training and "
            f"{test.shape[0]} test images; every model is trained once at small size. Continuous "
            "densities see y = (k + u)/17 with u uniform: E_u log p(y) − d log 17 is a lower "
            "bound on the discrete log P(k), so every figure is an upper bound on the test NLL. "
            "The DDPM's decoder is discretised, so its bound is on −log P(k) directly (the sum "
            "over t is estimated from 20 draws of t per digit); its reverse variances are "
            "learned (Nichol & Dhariwal 2021), its x̂_0 is clipped to the grey levels' range and "
            "a fifth of its training rows are drawn at t = 1 to train the decoder, which took "
            "this bound from 9.0 to 2.8 bits/dim. benchmarks/likelihood.py gives "
            "the full table on MNIST.",
        ],
        figures=[(fig_path, "test digits, and samples of the MAF and of the DDPM")],
        tables=[table],
    )
