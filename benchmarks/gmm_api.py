"""GaussianMixture's whole fit and its inference methods, latentfit vs scikit-learn.

benchmarks/gmm.py times one EM iteration from a given start; this times what users call: a fit
of 20 iterations from each library's default k-means start (initialisation included, so the
two runs differ slightly), and predict_proba / score_samples / predict / score on the training
data with each library's fitted model. N = 200,000, D = 16, K = 16, float64 (the data of
benchmarks/gmm.py).

    .venv/bin/python benchmarks/gmm_api.py [--types full,diag] [--repeats 5] [--bayesian]

``--bayesian`` times BayesianGaussianMixture against scikit-learn's instead (10 iterations).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SKBayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from gmm import make_data
from latentfit import BayesianGaussianMixture, GaussianMixture


def best(fn, repeats):
    fn()
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def fit(cls, kw, X):
    return cls(n_components=16, **kw).fit(X)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="full,diag")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bayesian", action="store_true")
    args = ap.parse_args()
    ours_cls, ref_cls = (
        (BayesianGaussianMixture, SKBayesianGaussianMixture)
        if args.bayesian
        else (GaussianMixture, SKGaussianMixture)
    )
    iters = 10 if args.bayesian else 20
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = make_data(200_000, 16, 16)
    print(f"{ours_cls.__name__}, N=200000 D=16 K=16 float64; load {os.getloadavg()[0]:.2f}")
    for ct in args.types.split(","):
        kw = dict(covariance_type=ct, max_iter=iters, tol=0, random_state=0)
        t_ours = best(functools.partial(fit, ours_cls, kw, X), 2)
        t_ref = best(functools.partial(fit, ref_cls, kw, X), 1)
        print(
            f"{ct:9s} fit ({iters} iterations): latentfit {t_ours:.2f} s, scikit-learn {t_ref:.2f} s, "
            f"{t_ref / t_ours:.1f}x"
        )
        ours, ref = fit(ours_cls, kw, X), fit(ref_cls, kw, X)
        for name in ("predict_proba", "score_samples", "predict", "score"):
            a = best(functools.partial(getattr(ours, name), X), args.repeats)
            b = best(functools.partial(getattr(ref, name), X), max(1, args.repeats // 2))
            print(
                f"{ct:9s} {name:14s} latentfit {a * 1e3:6.1f} ms, scikit-learn {b * 1e3:6.1f} ms, "
                f"{b / a:.1f}x"
            )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
