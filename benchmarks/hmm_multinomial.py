"""MultinomialHMM: Baum-Welch, Viterbi, score and predict_proba, latentfit vs hmmlearn, side by
side.

A seeded multinomial HMM sample (T = 200,000 steps in one sequence, K = 8 states, D = 10
symbols, n_trials = 20 counts a step); both libraries start from the same parameters
(init_params="") and must agree on every iteration's log-likelihood, the fitted emission
probabilities and the decoded path. Prints the times and their ratios.

    .venv/bin/python benchmarks/hmm_multinomial.py [--steps 200000] [--iters 10] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch

from hmm import best_of, report


def sample(T: int, K: int, D: int, n_trials: int, seed: int):
    """A sticky K-state chain whose states favour different symbols."""
    rng = np.random.default_rng(seed)
    transmat = rng.dirichlet(np.ones(K), size=K) * 0.2 + np.eye(K) * 0.8
    emission = rng.dirichlet(np.full(D, 0.5), size=K)
    z = np.empty(T, dtype=np.int64)
    s, cdf, u = 0, np.cumsum(transmat, axis=1), rng.random(T)
    for t in range(T):  # data generation, not timed
        z[t] = s
        s = min(int(np.searchsorted(cdf[s], u[t], side="right")), K - 1)
    X = np.stack([rng.multinomial(n_trials, emission[k]) for k in z])
    return X, transmat, emission


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--states", type=int, default=8)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from hmmlearn import hmm as hl

    from latentfit import MultinomialHMM

    K, D, T = args.states, args.symbols, args.steps
    X, transmat, emission = sample(T, K, D, args.trials, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    start = {
        "startprob_": np.full(K, 1.0 / K),
        "transmat_": (transmat * 0.9 + 0.1 / K) / (transmat * 0.9 + 0.1 / K).sum(1, keepdims=True),
        "emissionprob_": rng.dirichlet(np.ones(D), size=K) * 0.5 + emission * 0.5,
    }
    print(
        f"multinomial HMM sample: T={T:,} steps (one sequence), K={K}, D={D} symbols, "
        f"n_trials={args.trials}; {args.iters} Baum-Welch iterations; torch threads="
        f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}"
    )

    def fit(cls):
        m = cls(K, n_trials=args.trials, n_iter=args.iters, init_params="", tol=-np.inf)
        for name, value in start.items():
            setattr(m, name, value.copy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X)
        return m

    t_ours, ours = best_of(lambda: fit(MultinomialHMM), args.repeats)
    t_ref, ref = best_of(lambda: fit(hl.MultinomialHMM), 1)
    hist_o, hist_r = np.asarray(ours.lower_bounds_), np.asarray(ref.monitor_.history)
    report(f"{args.iters} Baum-Welch iterations", t_ours, t_ref)
    print(
        f"  max relative difference of the {len(hist_o)} log-likelihoods "
        f"{np.max(np.abs(hist_o - hist_r) / np.abs(hist_r)):.1e}; max |Δ emissionprob_| "
        f"{np.abs(ours.emissionprob_ - ref.emissionprob_).max():.1e}, max |Δ transmat_| "
        f"{np.abs(ours.transmat_ - ref.transmat_).max():.1e}"
    )
    t_vo, (lp_o, path_o) = best_of(lambda: ours.decode(X), args.repeats)
    t_vr, (lp_r, path_r) = best_of(lambda: ref.decode(X), 1)
    report("Viterbi decode", t_vo, t_vr)
    print(
        f"  log p(x, z*) relative difference {abs(lp_o - lp_r) / abs(lp_r):.1e}; paths differ "
        f"at {int((path_o != path_r).sum())} of {T:,} steps"
    )
    t_so, s_o = best_of(lambda: ours.score(X), args.repeats)
    t_sr, s_r = best_of(lambda: ref.score(X), 1)
    report("score (forward filter)", t_so, t_sr)
    print(f"  log-likelihood relative difference {abs(s_o - s_r) / abs(s_r):.1e}")
    t_po, p_o = best_of(lambda: ours.predict_proba(X), args.repeats)
    t_pr, p_r = best_of(lambda: ref.predict_proba(X), 1)
    report("predict_proba (E-step)", t_po, t_pr)
    print(f"  max |Δ posterior| {np.abs(p_o - p_r).max():.1e}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
