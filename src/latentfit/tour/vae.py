"""Tour section: a VAE and an IWAE on the bundled MNIST digits, a few epochs each."""

from __future__ import annotations

import numpy as np
import torch

from latentfit.tour.report import Section, TourContext, subplots

EPOCHS = 4


def build(ctx: TourContext) -> Section:
    # Small networks run fastest on one thread, and on a busy machine extra OpenMP threads
    # spin against other processes (5-10x slower); the previous setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(ctx)
    finally:
        torch.set_num_threads(threads)


def _build(ctx: TourContext) -> Section:
    from latentfit.plot import plot_reconstructions, plot_samples
    from latentfit.train import TrainConfig, train
    from latentfit.vae import (
        ELBO,
        IWAE,
        build_model,
        diagnose,
        init_decoder_bias,
        marginal_log_likelihood,
    )
    from latentfit.vae.data import load_vae_data

    data = load_vae_data("mnist", seed=ctx.seed)
    test = torch.bernoulli(data.test, generator=torch.Generator().manual_seed(ctx.seed + 1))
    cfg = TrainConfig(
        epochs=EPOCHS,
        batch_size=25,
        lr=2e-3,
        binarize=True,
        patience=None,
        seed=ctx.seed,
        progress=False,
        diagnostics=False,
    )
    rows, models = [], {}
    for name, objective in [("VAE (ELBO)", ELBO()), ("IWAE, k=5", IWAE(5))]:
        model = build_model(z_dim=20, seed=ctx.seed)  # 784-200-200-20, tanh, Bernoulli pixels
        init_decoder_bias(model, data.train)
        res = train(model, objective, data.train, data.val, cfg)
        ll = marginal_log_likelihood(
            model, test[:300], k=500, generator=torch.Generator().manual_seed(ctx.seed)
        )
        diag = diagnose(model, test, torch.Generator().manual_seed(ctx.seed))
        models[name] = (model, diag)
        rows.append(
            f"{name:<11} {res.history[-1]['val_bound']:>11.2f} {-ll.mean:>12.2f} "
            f"{ll.bits_per_dim:>9.4f} {diag.n_active:>6}/20 {diag.mutual_info:>8.2f}"
        )
    table = (
        f"{'objective':<11} {'val bound':>11} {'test NLL':>12} {'bits/dim':>9} "
        f"{'active':>9} {'I(x;z)':>8}\n" + "\n".join(rows)
    )

    model, diag = models["VAE (ELBO)"]
    g = torch.Generator().manual_seed(ctx.seed)
    fig, axes = subplots(1, 2, figsize=(10, 5))
    plot_samples(model, 64, generator=g, image_shape=(28, 28), nrow=8, ax=axes[0])
    axes[0].set_title("samples: pixel means of p(x | z), z ~ N(0, I)")
    plot_reconstructions(model, test, n=32, image_shape=(28, 28), ax=axes[1])
    axes[1].set_title("test digits (top 4 rows) and reconstructions")
    fig_img = ctx.save_figure(fig, "vae_samples.png")

    fig, ax = subplots(figsize=(8, 3))
    width = 0.4
    for i, (name, (_, d)) in enumerate(models.items()):
        kl = d.kl_per_dim.numpy()
        ax.bar(np.arange(len(kl)) + (i - 0.5) * width, np.sort(kl)[::-1], width, label=name)
    ax.axhline(0.01, color="k", lw=0.8, ls=":")
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL(q(z_j|x) ‖ p(z_j)) (nats)")
    ax.legend(fontsize=8)
    fig_kl = ctx.save_figure(fig, "vae_kl.png")

    return Section(
        title="Variational autoencoders: amortised inference on MNIST digits",
        paragraphs=[
            "An encoder network maps each digit x to q(z | x) = N(μ(x), σ²(x)), shared by the "
            "whole data set; a decoder maps z to Bernoulli pixel probabilities. Both are trained "
            "together by maximising a lower bound on log p(x): the ELBO, or the importance-"
            f"weighted bound L<sub>k</sub> (Burda et al. 2016). {EPOCHS} epochs on 3,600 "
            "dynamically binarised digits (batches of 25, Adam 2·10⁻³, decoder bias started at "
            "the mean image), 400 validation digits for the best weights, the 1,000 test "
            "digits held out until the end.",
            "The test NLL is the importance-sampled −log p(x) with k = 500 (the benchmark uses "
            "k = 5000). A latent unit is active when its posterior mean varies across digits "
            "(Cov<sub>x</sub> E<sub>q</sub>[z<sub>j</sub>] > 0.01); units whose KL stays near zero "
            "carry no information about x — the start of posterior collapse.",
        ],
        figures=[
            (fig_img, "VAE samples, test digits and their reconstructions"),
            (fig_kl, "KL per latent dimension, sorted; the dotted line is 0.01 nats"),
        ],
        tables=[table],
    )
