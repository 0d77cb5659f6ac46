"""One VB-EM iteration of the variational Bayesian Gaussian HMM: latentfit vs hmmlearn's
``vhmm.VariationalGaussianHMM``, side by side.

A seeded Gaussian HMM sample (T = 100,000 steps in one sequence, K = 4 states, D = 2
features; benchmarks/hmm.py's generator), full covariances. Both libraries start from the same
posterior hyperparameters (latentfit's start, given to hmmlearn) and must agree on the lower
bound (hmmlearn's leaves out −T·D/2 log 2π, added back here) and on the updated posteriors.
latentfit's time is a whole ``fit(n_iter=1)`` (checks included); hmmlearn's is its E-step,
bound and M-step alone (its ``fit`` would also run k-means, even with init_params="").

    .venv/bin/python benchmarks/vhmm.py [--steps 100000] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import warnings

import numpy as np
import torch

from hmm import best_of, report, sample

NAMES = (
    "startprob_prior_",
    "startprob_posterior_",
    "transmat_prior_",
    "transmat_posterior_",
    "means_prior_",
    "means_posterior_",
    "beta_prior_",
    "beta_posterior_",
    "dof_prior_",
    "dof_posterior_",
    "scale_prior_",
    "scale_posterior_",
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--states", type=int, default=4)
    ap.add_argument("--features", type=int, default=2)
    ap.add_argument("--covariance-type", default="full")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-repeats", type=int, default=1, help="repeats for hmmlearn")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from hmmlearn import vhmm

    from latentfit import VariationalGaussianHMM

    K, D, T, ct = args.states, args.features, args.steps, args.covariance_type
    X, _ = sample(T, K, D, args.seed)
    print(
        f"Gaussian HMM sample: T={T:,} steps (one sequence), K={K}, D={D}, {ct}; "
        f"torch threads={torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init = VariationalGaussianHMM(K, ct, n_iter=0, random_state=args.seed).fit(X)
    start = {name: np.copy(getattr(init, name)) for name in NAMES}

    def ours_iteration():
        m = VariationalGaussianHMM(K, ct, n_iter=1, init_params="", tol=-np.inf)
        m.set_params(**{n[:-1]: start[n] for n in NAMES if n.endswith("_prior_")})
        for n in NAMES:
            if n.endswith("_posterior_"):
                setattr(m, n, np.copy(start[n]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return m.fit(X)

    def ref_iteration():
        m = vhmm.VariationalGaussianHMM(K, ct, init_params="")
        for n in NAMES:
            setattr(m, n, np.copy(start[n]))
        m.n_features = D
        m._check()
        stats, log_prob = m._do_estep(X, np.array([T]))
        bound = m._compute_lower_bound(log_prob)
        m._do_mstep(stats)
        return m, bound

    t_ours, ours = best_of(ours_iteration, args.repeats)
    t_ref, (ref, ref_bound) = best_of(ref_iteration, args.ref_repeats)
    report("VB-EM iteration", t_ours, t_ref)
    ours_bound = ours.lower_bounds_[0] + X.size / 2 * math.log(2 * math.pi)
    rel = abs(ours_bound - ref_bound) / abs(ref_bound)
    print(
        f"  lower bound latentfit {ours_bound:.10f} hmmlearn {ref_bound:.10f} (relative "
        f"difference {rel:.1e}); updated posteriors, max |Δ| / max |value|:"
    )
    for n in ("transmat_posterior_", "means_posterior_", "scale_posterior_", "dof_posterior_"):
        a, b = np.asarray(getattr(ours, n)), np.asarray(getattr(ref, n))
        print(f"    {n} {np.abs(a - b).max() / np.abs(b).max():.1e}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
