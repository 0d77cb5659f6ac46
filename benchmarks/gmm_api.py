"""GaussianMixture's whole fit and its inference methods, latentfit vs scikit-learn.

benchmarks/gmm.py times one EM iteration from a given start; this times what users call: a fit
of 20 iterations from each library's default k-means start (initialisation included, so the
two runs differ slightly), and predict_proba / score_samples / predict / score on the training
data with each library's fitted model. N = 200,000, D = 16, K = 16, float64 (the data of
benchmarks/gmm.py).

    .venv/bin/python benchmarks/gmm_api.py [--types full,diag] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from gmm import make_data
from latentfit import GaussianMixture


def best(fn, repeats):
    fn()
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def fit(cls, kw, X):
    return cls(16, **kw).fit(X)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="full,diag")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = make_data(200_000, 16, 16)
    print(f"N=200000 D=16 K=16 float64; load average {os.getloadavg()[0]:.2f}")
    for ct in args.types.split(","):
        kw = dict(covariance_type=ct, max_iter=20, tol=0, random_state=0)
        t_ours = best(functools.partial(fit, GaussianMixture, kw, X), 2)
        t_ref = best(functools.partial(fit, SKGaussianMixture, kw, X), 1)
        print(
            f"{ct:9s} fit (20 iterations): latentfit {t_ours:.2f} s, scikit-learn {t_ref:.2f} s, "
            f"{t_ref / t_ours:.1f}x"
        )
        ours, ref = GaussianMixture(16, **kw).fit(X), SKGaussianMixture(16, **kw).fit(X)
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
