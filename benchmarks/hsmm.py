"""One EM iteration, score and Viterbi decode of a hidden semi-Markov model, beside the same
operations of the hidden Markov model of the same size.

There is no reference library to compare with: hmmlearn, pomegranate and dynamax have no
explicit-duration HSMM (only unmerged pull requests). The figure to read is the cost of the
durations: an HSMM E-step does O(T·K·D) work where the HMM's does O(T·K²).

A seeded GaussianHSMM sample (T = 100,000 steps in one sequence, K = 4 states, 2 features,
Poisson durations up to D = 50); both models start from parameters near the generating ones.

    .venv/bin/python benchmarks/hsmm.py [--steps 100000] [--max-duration 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from latentfit import GaussianHMM, GaussianHSMM


def model(K: int, D: int, seed: int) -> GaussianHSMM:
    rng = np.random.default_rng(seed)
    m = GaussianHSMM(n_components=K, max_duration=D, n_iter=1, init_params="", tol=-np.inf)
    m.startprob_ = np.full(K, 1.0 / K)
    tm = rng.dirichlet(np.ones(K), size=K)
    np.fill_diagonal(tm, 0.0)
    m.transmat_ = tm / tm.sum(1, keepdims=True)
    m.means_ = rng.normal(scale=2.0, size=(K, 2))
    m.covars_ = rng.uniform(0.5, 1.5, size=(K, 2))
    m.duration_lambdas_ = rng.uniform(3.0, D / 2, size=K)
    m.n_features = 2
    return m


def best_of(fn, repeats):
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--states", type=int, default=4)
    ap.add_argument("--max-duration", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    K, D = args.states, args.max_duration
    hsmm = model(K, D, 0)
    X, _ = hsmm.sample(args.steps, random_state=1)
    # the HMM with the same emissions and the self-transitions of the mean durations
    hmm = GaussianHMM(n_components=K, n_iter=1, init_params="", tol=-np.inf)
    mean = 1.0 + hsmm.duration_lambdas_
    stay = 1.0 - 1.0 / mean
    hmm.startprob_ = hsmm.startprob_
    hmm.transmat_ = hsmm.transmat_ * (1 - stay)[:, None] + np.diag(stay)
    hmm.means_, hmm.covars_ = hsmm.means_, hsmm._covars_.copy()
    hsmm.fit(X[:1000])  # compile and load the kernels once, outside the timings
    hmm.fit(X[:1000])
    print(f"T = {args.steps:,}, K = {K}, D = {D}, 2 features, float64, 1 thread")
    print(
        f"{'operation':<22}{'HSMM wall':>11}{'HSMM cpu':>10}{'HMM wall':>10}{'HMM cpu':>10}{'ratio':>8}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, f_hsmm, f_hmm in [
            ("EM iteration", lambda: model(K, D, 0).fit(X), lambda: _hmm_fit(hmm, X)),
            ("score", lambda: hsmm.score(X), lambda: hmm.score(X)),
            ("decode (Viterbi)", lambda: hsmm.decode(X), lambda: hmm.decode(X)),
        ]:
            ws, cs = best_of(f_hsmm, args.repeats)
            wm, cm = best_of(f_hmm, args.repeats)
            print(f"{name:<22}{ws:>10.3f}s{cs:>9.3f}s{wm:>9.3f}s{cm:>9.3f}s{cs / cm:>7.1f}x")


def _hmm_fit(template, X):
    m = GaussianHMM(n_components=template.n_components, n_iter=1, init_params="", tol=-np.inf)
    m.startprob_, m.transmat_ = template.startprob_, template.transmat_
    m.means_, m.covars_ = template.means_, template._covars_.copy()
    return m.fit(X)


if __name__ == "__main__":
    main()
