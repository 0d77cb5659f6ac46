"""Weighted k-means in torch, used to initialise mixtures on any device.

k-means++ seeding (Arthur & Vassilvitskii 2007) followed by Lloyd iterations; one chunked
pass over the data per iteration, so it runs on the same data sources as EM.

Distances are expanded as ``‖x‖² − 2 x·c + ‖c‖²`` (a matrix product), which loses every digit
of data far from the origin (float32 at 1e6: the terms are 1e12, their rounding 1e5). Each
function therefore works on the data relative to a point among them (the centres' or the
data's mean), where the expansion keeps the precision of the data.
"""

from __future__ import annotations

import torch

from latentfit.em.gaussian import weighted_mean

__all__ = ["kmeans", "kmeans_plusplus", "nearest_center"]


def nearest_center(X: torch.Tensor, C: torch.Tensor, chunk_rows: int = 65536) -> torch.Tensor:
    """Index of the nearest center for every row: (n,). ``‖x‖²`` is the same for every
    center, so the argmin is that of ``‖c‖² − 2 x·c``: one product per chunk of rows, taken
    about the centres' mean so that data far from the origin keeps its precision."""
    c0 = C.mean(0)  # (d,)
    C = C - c0
    cc = (C * C).sum(1)  # (k,)
    out = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    for i in range(0, X.shape[0], chunk_rows):
        d = torch.addmm(cc, X[i : i + chunk_rows] - c0, C.T, alpha=-2)  # (r, k)
        torch.argmin(d, 1, out=out[i : i + chunk_rows])
    return out


def _draw(p: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn ∝ ``p`` by inverting the cumulative sum with one uniform number.

    Unlike torch.multinomial, the draw depends only on the cumulative mass, so a row of weight
    3 and the same row repeated three times are chosen for the same uniform number: fits with
    integer sample weights and with repeated rows start from the same centers.
    """
    cs = torch.cumsum(p.double().cpu(), 0)
    u = torch.rand(1, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    return int(torch.searchsorted(cs, u * cs[-1], right=True).clamp_max(len(cs) - 1))


def kmeans_plusplus(
    X: torch.Tensor, k: int, weights: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Indices (k,) of k-means++ seeds: each next seed drawn ∝ w · D(x)²."""
    n = X.shape[0]
    X = X - weighted_mean(X, weights)  # about the data mean: distances keep their digits
    xx = (X * X).sum(1)  # (n,) once, not per seed

    def sq_dist_to(i: int) -> torch.Tensor:  # (n,) squared distances to row i
        c = X[i]
        return torch.addmv(xx + (c * c).sum(), X, c, alpha=-2).clamp_min_(0)

    idx = [_draw(weights, generator)]
    d2 = sq_dist_to(idx[-1])
    for _ in range(1, k):
        p = (weights * d2).cpu().double()
        if float(p.sum()) <= 0:  # fewer distinct points than k: take any unused point
            p = weights.cpu().double().clone()
            p[idx] = 0
            if float(p.sum()) <= 0:
                p = torch.ones(n, dtype=torch.float64)
        nxt = _draw(p, generator)
        idx.append(nxt)
        d2 = torch.minimum(d2, sq_dist_to(nxt))
    return torch.tensor(idx, device=X.device)


def kmeans(
    X: torch.Tensor,
    k: int,
    weights: torch.Tensor,
    generator: torch.Generator,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Lloyd's algorithm from k-means++ seeds: returns (centers (k, d), labels (n,)).

    Stops when the centers move less than ``tol`` times the mean feature variance, as
    scikit-learn's KMeans does. An empty cluster keeps its previous center.
    """
    wn = weights / weights.sum()
    mean = weighted_mean(X, weights)  # (d,)
    X = X - mean  # centred: sums and distances keep the precision of the data
    C = X[kmeans_plusplus(X, k, weights, generator)].clone()  # (k, d)
    scale = tol * float((wn @ X.square()).mean())  # tol × weighted mean variance
    labels = nearest_center(X, C)
    wX = weights.unsqueeze(1) * X  # (n, d)
    for _ in range(max_iter):
        mass = torch.zeros(k, dtype=X.dtype, device=X.device).index_add_(0, labels, weights)
        sums = torch.zeros_like(C).index_add_(0, labels, wX)  # (k, d)
        newC = torch.where(mass.unsqueeze(1) > 0, sums / mass.clamp_min(1e-300).unsqueeze(1), C)
        shift = float((newC - C).square().sum())
        C = newC
        labels = nearest_center(X, C)
        if shift <= scale:
            break
    return C + mean, labels
