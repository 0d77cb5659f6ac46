"""Tour section: a Gaussian hidden Markov model on the Old Faithful geyser series."""

from __future__ import annotations

import warnings

import numpy as np

from latentfit.tour.report import Section, TourContext, subplots


def build(ctx: TourContext) -> Section:
    from latentfit.datasets import load_geyser
    from latentfit.em.hmm import GaussianHMM
    from latentfit.plot import plot_states

    ds = load_geyser()
    X = np.asarray(ds.data, dtype=float)  # (t, 2): waiting, duration
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in (2, 3):
            model = GaussianHMM(
                k, covariance_type="full", n_iter=100, tol=1e-4, n_init=3, random_state=ctx.seed
            )
            fits[k] = model.fit(X)
    bics = {k: m.bic(X) for k, m in fits.items()}
    k = min(bics, key=bics.get)
    model = fits[k]
    logprob, path = model.decode(X)
    order = np.argsort(model.means_[:, 1])  # name states by eruption duration
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    trans = model.transmat_[np.ix_(order, order)]

    fig, axes = subplots(2, 1, figsize=(10, 5.5), sharex=True)
    means = model.means_[order]
    plot_states(
        model,
        X,
        states=rank[path],  # states numbered by mean duration
        state_names=[f"state {s}: mean duration {means[s, 1]:.2f} min" for s in range(k)],
        ax=axes,
    )
    for ax, name in zip(axes, ("waiting (min)", "duration (min)"), strict=True):
        ax.set_ylabel(name)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("eruption number (1-15 August 1985)")
    fig.suptitle(f"Geyser series decoded by a {k}-state Gaussian HMM (Viterbi path)")
    fig_name = ctx.save_figure(fig, "hmm_geyser_states.png")

    rows = ["state  " + "  ".join(f"to {j}" for j in range(k))]
    rows += [f"{i:5d}  " + "  ".join(f"{p:4.2f}" for p in trans[i]) for i in range(k)]
    table = "\n".join(rows)
    bic_text = ", ".join(f"K={kk}: {b:.1f}" for kk, b in bics.items())
    return Section(
        title="Hidden Markov models: the geyser's eruptions have a memory",
        paragraphs=[
            "A mixture treats the eruptions as independent draws; a hidden Markov model lets the "
            "component of eruption <i>t</i> depend on that of eruption <i>t</i>−1 through a "
            "transition matrix, and is fitted by Baum-Welch: EM whose E-step is the "
            "forward-backward algorithm (<code>latentfit.GaussianHMM</code>, the interface of "
            "hmmlearn on latentfit's EM driver).",
            f"On the 299 consecutive (waiting, duration) pairs, BIC ({bic_text}) picks K={k}. "
            "The transition matrix below shows the alternation the mixture cannot see: after a "
            "short eruption the next one is almost always long, while long eruptions may "
            "follow each other.",
            f"The Viterbi path (log p(x, z*) = {logprob:.1f}) colours every eruption by its "
            "decoded state.",
        ],
        figures=[(fig_name, "Decoded states over time (colour) on both measurements.")],
        tables=[f"transition probabilities (states ordered by mean duration)\n{table}"],
    )
