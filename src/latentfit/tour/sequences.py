"""Tour section: beyond the HMM — explicit state durations on the geyser series, and a
linear-Gaussian state-space model tracking a target through missing readings."""

from __future__ import annotations

import warnings

import numpy as np

from latentfit.tour.report import Section, TourContext, subplots


def build(ctx: TourContext) -> Section:
    from latentfit import GaussianHMM, GaussianHSMM
    from latentfit.datasets import load_geyser
    from latentfit.em.ssm.tracking import tracking_example

    X = np.asarray(load_geyser().data, dtype=float)  # (299, 2): waiting, duration
    k, d_max = 3, 20
    common = dict(covariance_type="full", n_iter=100, tol=1e-4, random_state=ctx.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hmm = GaussianHMM(k, n_init=3, **common).fit(X)
        hsmm = GaussianHSMM(
            k, max_duration=d_max, duration="nonparametric", n_init=3, **common
        ).fit(X)
    ll_hmm, ll_hsmm = hmm.score(X), hsmm.score(X)
    bic_hmm, bic_hsmm = hmm.bic(X), hsmm.bic(X)

    # states in the order of their mean eruption duration, in both models
    o_hmm, o_hsmm = np.argsort(hmm.means_[:, 1]), np.argsort(hsmm.means_[:, 1])
    pmf = hsmm.duration_pmf_[o_hsmm]  # (k, D): P(segment lasts d eruptions)
    stay = np.diag(hmm.transmat_)[o_hmm]  # an HMM's durations are geometric
    d = np.arange(1, d_max + 1)
    fig, axes = subplots(1, k, figsize=(11, 3.2), sharey=True)
    for s, ax in enumerate(axes):
        ax.bar(d, pmf[s], color="tab:blue", alpha=0.7, label="HSMM (learnt)")
        geo = (1 - stay[s]) * stay[s] ** (d - 1)
        ax.plot(d, geo, "o-", ms=3, color="black", lw=1, label="HMM (geometric)")
        ax.set_title(f"state {s}: mean duration {hsmm.means_[o_hsmm][s, 1]:.2f} min", fontsize=9)
        ax.set_xlabel("segment length (eruptions)")
        ax.set_xlim(0.5, 8.5)
    axes[0].set_ylabel("probability")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig_dur = ctx.save_figure(fig, "hsmm_geyser_durations.png")

    fig, ax = subplots(figsize=(9, 3.5))
    _, track = tracking_example(n_steps=150, missing=0.2, random_state=ctx.seed, ax=ax)
    fig.tight_layout()
    fig_track = ctx.save_figure(fig, "ssm_tracking.png")

    table = "\n".join(
        [
            f"{'geyser, K=3':28s} {'log-likelihood':>15s} {'BIC':>10s}",
            f"{'GaussianHMM':28s} {ll_hmm:15.1f} {bic_hmm:10.1f}",
            f"{'GaussianHSMM (D=20, nonpar.)':28s} {ll_hsmm:15.1f} {bic_hsmm:10.1f}",
        ]
    )
    return Section(
        title="Beyond the HMM: state durations and continuous states",
        paragraphs=[
            "An HMM's time in a state is geometric: the chance to stay is the same at every "
            "step. A hidden semi-Markov model (<code>latentfit.GaussianHSMM</code>, Yu 2010) "
            "learns each state's duration distribution instead — here nonparametric up to 20 "
            "eruptions, with the last segment right-censored — by EM over segments. On the "
            "geyser series the learnt durations sit close to the HMM's geometric ones: the "
            "eruptions' memory is in which state follows which, not in how long a state "
            f"lasts. The HSMM's likelihood is higher ({ll_hsmm:.1f} against {ll_hmm:.1f}) but "
            f"BIC prefers the HMM ({bic_hmm:.1f} against {bic_hsmm:.1f}): {k} x {d_max - 1} "
            "free duration probabilities are not paid for by the data.",
            "When the hidden state is continuous and moves linearly with Gaussian noise, EM's "
            "E-step is the Kalman filter and Rauch-Tung-Striebel smoother "
            "(<code>latentfit.LinearGaussianSSM</code>). A target moving at nearly constant "
            "velocity is read with noise, 20% of the readings missing; EM learns the noise "
            "levels from a wrong start (fitted reading noise "
            f"{track['obs_std_fitted']:.2f}, true {track['obs_std_true']:.2f}), and the smoother "
            f"tracks the position with RMSE {track['rmse_smoothed']:.2f} against "
            f"{track['rmse_readings']:.2f} for the raw readings.",
        ],
        tables=[table],
        figures=[
            (fig_dur, "Duration distributions per state: HSMM (bars) and the HMM's geometric"),
            (fig_track, "Kalman smoother after EM: true path, readings and the 95% band"),
        ],
    )
