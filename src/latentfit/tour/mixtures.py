"""Tour section: beyond Gaussian mixtures — Bernoulli mixtures and PPCA on MNIST digits, and a
BIC table choosing K and the covariance type."""

from __future__ import annotations

import warnings

import numpy as np

from latentfit.tour.report import Section, TourContext, subplots


def build(ctx: TourContext) -> Section:
    from latentfit import PPCA, BernoulliMixture, select_model
    from latentfit.datasets import load_faithful, load_mnist_5k
    from latentfit.plot import plot_selection

    digits = load_mnist_5k()
    pixels = digits.data.numpy()  # (5000, 784) grey levels in [0, 1]
    labels = digits.target.numpy()
    binary = (pixels > 0.5).astype(np.float64)

    # 1. A Bernoulli mixture of the binarised digits; a Beta(2, 2) prior keeps every pixel's
    #    probability inside (0, 1), so an unseen pixel never gets probability zero.
    k = 12
    bern = BernoulliMixture(
        k,
        mean_prior=(2.0, 2.0),
        init_params="k-means++",
        n_init=2,
        max_iter=100,
        tol=1e-3,
        random_state=ctx.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bern.fit(binary)
    order = np.argsort(-bern.weights_)
    comp = bern.predict(binary)
    majority = [np.bincount(labels[comp == j], minlength=10).argmax() for j in order]
    fig, axes = subplots(2, 6, figsize=(10, 3.8))
    for ax, j, lab in zip(axes.flat, order, majority, strict=True):
        ax.imshow(bern.means_[j].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"π={bern.weights_[j]:.2f}, mostly {lab}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Component means of a 12-component Bernoulli mixture (binarised MNIST)")
    fig_means = ctx.save_figure(fig, "mixtures_bernoulli_means.png")
    purity = sum(np.bincount(labels[comp == j], minlength=10).max() for j in range(k)) / len(labels)

    # 2. Probabilistic PCA with a 2-D latent space: E[z | x] of every digit.
    ppca = PPCA(2, tol=1e-6, max_iter=300, random_state=ctx.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = ppca.fit_transform(pixels)
    fig, ax = subplots(figsize=(6.5, 5.5))
    sc = ax.scatter(Z[:, 0], Z[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
    ax.legend(*sc.legend_elements(), title="digit", fontsize=7, loc="best", markerscale=0.8)
    ax.set_xlabel("E[z₁ | x]")
    ax.set_ylabel("E[z₂ | x]")
    ax.set_title("PPCA latent space of 5,000 MNIST digits (posterior means)")
    fig_ppca = ctx.save_figure(fig, "mixtures_ppca_latent.png")

    # 3. BIC over K and covariance type on Old Faithful, as mclust tabulates it.
    X = load_faithful().data.numpy()
    sel = select_model(X, n_components=range(1, 7), random_state=ctx.seed, n_init=2)
    fig, ax = subplots(figsize=(6, 4))
    plot_selection(sel, ax=ax)
    fig.suptitle("Old Faithful: BIC of Gaussian mixtures (lower is better)")
    fig_bic = ctx.save_figure(fig, "mixtures_bic.png")
    best = sel.best_row_

    return Section(
        title="EM beyond Gaussians: binary images, a continuous latent space, choosing K",
        paragraphs=[
            "The EM driver fits any latent-variable model whose E-step is tractable. A "
            "<code>BernoulliMixture</code> models a binarised digit as independent pixels given "
            f"its component; {k} components fitted to 5,000 MNIST digits find prototypes of the "
            f"digits (component purity {purity:.0%}: the share of digits in their component's "
            "majority class), with no label seen during the fit.",
            "Probabilistic PCA (<code>latentfit.PPCA</code>, Tipping &amp; Bishop 1999) has a "
            "continuous latent variable z ~ N(0, I); its EM reaches the closed-form maximum "
            f"likelihood solution. With two latent dimensions (σ² = {ppca.noise_variance_:.4f}) "
            "the posterior means already put 0s and 1s at opposite ends, 3s above and the "
            "similar 4s, 7s and 9s together below.",
            "<code>latentfit.select_model</code> sweeps K and the covariance type and reports "
            f"BIC, AIC and ICL; on Old Faithful BIC picks {best['variant']} covariances with "
            f"K={best['n_components']}. The same sweep runs from the command line: "
            "<code>latentfit select gmm data.csv -k 1-6</code>.",
        ],
        figures=[
            (fig_means, "Bernoulli mixture: each component's pixel probabilities as an image."),
            (fig_ppca, "PPCA: the 2-D posterior mean of every digit, coloured by its label."),
            (fig_bic, "BIC against K for each covariance type; the circle marks the best."),
        ],
        tables=[sel.table()],
    )
