"""A kernel two-sample test shared by the flow and diffusion tests."""

from __future__ import annotations

import numpy as np


def mmd_permutation_pvalue(a, b, n_perm: int = 100, seed: int = 0) -> float:
    """p-value of the unbiased MMD² with a Gaussian kernel (median-heuristic bandwidth) under
    permutations of the pooled sample (Gretton et al. 2012)."""
    z = np.concatenate([a, b])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / np.median(d2[d2 > 0]))
    n = len(a)

    def mmd(idx):
        x, y = idx[:n], idx[n:]
        kxx, kyy, kxy = k[np.ix_(x, x)], k[np.ix_(y, y)], k[np.ix_(x, y)]
        m = len(y)
        return (
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )

    rng = np.random.default_rng(seed)
    observed = mmd(np.arange(len(z)))
    perms = [mmd(rng.permutation(len(z))) for _ in range(n_perm)]
    return (1 + sum(p >= observed for p in perms)) / (n_perm + 1)
