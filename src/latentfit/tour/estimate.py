"""Tour section: estimation with uncertainty — MLE with confidence intervals, MAP as
regularisation, and a conjugate posterior narrowing as data arrive."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from latentfit.tour.report import Section, TourContext, subplots


def build(ctx: TourContext) -> Section:
    from latentfit.datasets import load_faithful
    from latentfit.estimate import (
        BetaBernoulli,
        fit_map_regression,
        fit_mle,
        lasso_prior_scale,
        ridge_prior_scale,
    )

    faithful = load_faithful().data.numpy()  # (272, 2): eruptions (min), waiting (min)
    eruptions, waiting = faithful[:, 0], faithful[:, 1]

    # 1. MLE with Wald intervals: three families for the waiting times, and how the interval
    #    for the Gamma mean shrinks like 1/√n as more eruptions are observed.
    fits = {name: fit_mle(name, waiting) for name in ("gamma", "lognormal", "weibull")}
    gamma = fits["gamma"]
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4))
    ax1.hist(waiting, bins=30, density=True, color="0.85", edgecolor="0.6")
    grid = torch.linspace(waiting.min() - 5, waiting.max() + 5, 300, dtype=torch.float64)
    for fit in fits.values():
        ax1.plot(
            grid,
            fit.distribution.log_prob(grid).exp(),
            label=f"{fit.family.name} (AIC {fit.aic:.0f})",
        )
    ax1.set_xlabel("waiting time between eruptions (min)")
    ax1.set_ylabel("density")
    ax1.set_title("Old Faithful: maximum-likelihood fits")
    ax1.legend(fontsize=8)
    sizes = [10, 20, 40, 80, 160, 272]
    rng = np.random.default_rng(ctx.seed)
    order = rng.permutation(len(waiting))
    means, lows, highs = [], [], []
    for n in sizes:
        mean = fit_mle("gamma", waiting[order[:n]]).transform(
            lambda concentration, rate: concentration / rate, "mean"
        )
        lo, hi = mean.conf_int()[0].tolist()
        means.append(mean["mean"])
        lows.append(lo)
        highs.append(hi)
    ax2.errorbar(
        sizes, means, yerr=[np.subtract(means, lows), np.subtract(highs, means)], fmt="o", capsize=4
    )
    ax2.set_xscale("log")
    ax2.set_xlabel("observations used (n)")
    ax2.set_ylabel("mean waiting time (min)")
    ax2.set_title("Gamma mean α/β: MLE and 95% delta-method interval")
    fig_mle = ctx.save_figure(fig, "estimate_mle.png")

    # 2. MAP as regularisation: y = Xw + b + ε with a Normal prior on w (ridge) and a Laplace
    #    prior (lasso), over a range of prior strengths.
    n, d = 80, 8
    X = rng.normal(size=(n, d))
    w_true = np.array([3.0, -2.0, 1.5, 0.0, 0.0, 0.0, 0.5, 0.0])
    y = X @ w_true + 1.0 + rng.normal(size=n)

    def linear(X, w, b):
        return X @ w + b

    init = {"w": torch.zeros(d, dtype=torch.float64), "b": 0.0}
    alphas = np.logspace(-3, 0.5, 15)
    ridge, lasso = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for alpha in alphas:
            tau = torch.tensor(ridge_prior_scale(alpha * n), dtype=torch.float64)
            prior = {"w": torch.distributions.Normal(torch.zeros((), dtype=torch.float64), tau)}
            ridge.append(fit_map_regression(linear, X, y, init, prior=prior).params["w"].numpy())
            b = torch.tensor(lasso_prior_scale(alpha, n), dtype=torch.float64)
            prior = {"w": torch.distributions.Laplace(torch.zeros((), dtype=torch.float64), b)}
            lasso.append(fit_map_regression(linear, X, y, init, prior=prior).params["w"].numpy())
    ls = fit_map_regression(linear, X, y, init).params["w"].numpy()
    fig, axes = subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, path, title in zip(
        axes,
        (np.array(ridge), np.array(lasso)),
        ("Normal prior (ridge)", "Laplace prior (lasso)"),
        strict=True,
    ):
        for j in range(d):
            ax.plot(alphas, path[:, j], marker=".", label=f"w{j} (true {w_true[j]:g})")
        ax.scatter(np.full(d, alphas[0] / 2), ls, marker="x", color="k", label="least squares")
        ax.set_xscale("log")
        ax.set_xlabel("prior strength (scikit-learn's alpha)")
        ax.set_title(f"MAP coefficients, {title}")
        ax.axhline(0, color="0.7", lw=0.8)
    axes[0].set_ylabel("coefficient")
    axes[1].legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(0.0, 0.3))
    fig_map = ctx.save_figure(fig, "estimate_map.png")
    n_zero = int((np.abs(lasso[-4]) == 0).sum())

    # 3. A conjugate posterior narrowing: P(long eruption, > 3 min) with a flat Beta(1, 1)
    #    prior, updated one batch at a time as eruptions are observed.
    long = (eruptions > 3).astype(np.float64)[order]
    model, seen = BetaBernoulli(1.0, 1.0), 0
    p_grid = torch.linspace(0.001, 0.999, 500, dtype=torch.float64)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4))
    counts, intervals, post_means = [], [], []
    for n_seen in (0, 5, 20, 60, 272):
        model = model.update(long[seen:n_seen]) if n_seen > seen else model
        seen = n_seen
        ax1.plot(p_grid, model.posterior.log_prob(p_grid).exp(), label=f"after {n_seen}")
    model, seen = BetaBernoulli(1.0, 1.0), 0
    for n_seen in range(1, len(long) + 1):
        model = model.update(long[seen:n_seen])
        seen = n_seen
        counts.append(n_seen)
        intervals.append(model.credible_interval().tolist())
        post_means.append(float(model.posterior.mean))
    intervals = np.array(intervals)
    ax1.set_xlabel("p = P(eruption longer than 3 min)")
    ax1.set_ylabel("posterior density")
    ax1.set_title("Beta–Bernoulli posterior as eruptions arrive")
    ax1.legend(fontsize=8)
    ax2.fill_between(counts, intervals[:, 0], intervals[:, 1], alpha=0.3, label="95% credible")
    ax2.plot(counts, post_means, color="C0", label="posterior mean")
    ax2.axhline(long.mean(), color="k", ls="--", lw=0.8, label="share in all 272")
    ax2.set_xlabel("eruptions observed")
    ax2.set_ylabel("p")
    ax2.set_title("Equal-tailed 95% credible interval")
    ax2.legend(fontsize=8)
    fig_conj = ctx.save_figure(fig, "estimate_conjugate.png")
    ci = model.credible_interval().tolist()

    best = min(fits.values(), key=lambda f: f.aic)
    return Section(
        title="Estimation with uncertainty: MLE, MAP and conjugate Bayes",
        paragraphs=[
            "<code>latentfit.fit_mle(family, data)</code> maximises the likelihood of any "
            "torch.distributions family (constrained parameters are optimised in unconstrained "
            "space) and reports standard errors from the observed Fisher information — the "
            "autograd Hessian at the optimum — with Wald intervals, AIC and BIC. On the waiting "
            f"times of Old Faithful the {best.family.name} has the lowest AIC of the three; "
            "none of them fits well, because the waiting times are bimodal: the mixtures of the "
            "next sections are the remedy.",
            "<code>transform(g)</code> gives the MLE of a derived quantity with its "
            "delta-method standard error; the interval for the Gamma mean α/β shrinks like 1/√n "
            "as more eruptions are used.",
            "<code>fit_map</code> adds a log-prior to the objective. For y = h(X; θ) + ε a "
            "Normal prior gives ridge regression and a Laplace prior the lasso — the same "
            "coefficients as scikit-learn's <code>Ridge</code> and <code>Lasso</code> — and no "
            f"prior gives least squares. At alpha = {alphas[-4]:.2f} the lasso sets {n_zero} of "
            f"the {d} coefficients exactly to zero.",
            "Conjugate models update in closed form: the Beta posterior of the share of long "
            f"eruptions narrows as data arrive, to a 95% credible interval [{ci[0]:.3f}, "
            f"{ci[1]:.3f}] after all 272; updating one eruption at a time gives exactly the "
            "posterior of one batch update.",
        ],
        tables=[gamma.summary()],
        figures=[
            (
                fig_mle,
                "Left: three MLE fits to the waiting times. Right: the Gamma mean with its "
                "95% Wald interval (delta method) as the sample grows.",
            ),
            (
                fig_map,
                "MAP coefficient paths: ridge shrinks smoothly, the lasso sets coefficients "
                "exactly to zero; crosses mark least squares.",
            ),
            (
                fig_conj,
                "Beta–Bernoulli: posteriors after 0, 5, 20, 60 and 272 eruptions, and "
                "the 95% credible interval as each eruption arrives.",
            ),
        ],
    )
