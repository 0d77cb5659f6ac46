"""How EM starts: scikit-learn's ``init_params`` methods (:func:`initial_resp`) on weighted
k-means in torch, on any device.

k-means++ seeding (Arthur & Vassilvitskii 2007) followed by Lloyd iterations; one chunked
pass over the data per iteration, so it runs on the same data sources as EM.

Distances are expanded as ``‖x‖² − 2 x·c + ‖c‖²`` (a matrix product), which loses every digit
of data far from the origin (float32 at 1e6: the terms are 1e12, their rounding 1e5). Each
function therefore works on the data relative to a point among them (the centres' or the
data's mean), where the expansion keeps the precision of the data. Groups far apart from one
another still leave some rows far from that point (two groups 1e10 apart, float64: the terms
are 1e20, their rounding 1e4, where the centres inside a group are 1 apart), so
:func:`nearest_center` computes ``‖x − c‖²`` term by term for the rows whose nearest two
centres the expansion cannot tell apart, and the k-means++ distances are computed that way
throughout.
"""

from __future__ import annotations

import torch

from latentfit.em.gaussian import weighted_mean

__all__ = [
    "INIT_PARAMS",
    "cpu_generator",
    "initial_resp",
    "kmeans",
    "kmeans_plusplus",
    "match_clusters",
    "nearest_center",
]

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def nearest_center(X: torch.Tensor, C: torch.Tensor, chunk_rows: int = 65536) -> torch.Tensor:
    """Index of the nearest center for every row: (n,). ``‖x‖²`` is the same for every
    center, so the argmin is that of ``‖c‖² − 2 x·c``: one product per chunk of rows, taken
    about the centres' mean so that data far from the origin keeps its precision. Rows whose
    two smallest values differ by less than the product's rounding error bound get their
    distances term by term (:func:`_exact_nearest`)."""
    c0 = C.mean(0)  # (d,)
    C = C - c0
    cc = (C * C).sum(1)  # (k,)
    k, d = C.shape
    out = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    if k == 1:
        return out.zero_()
    # |fl(c·c − 2 x·c) − (c·c − 2 x·c)| <= (d + 2) eps (‖c‖² + 2 ‖x‖ ‖c‖) (Higham 2002, 3.1)
    slack = 2 * (d + 2) * torch.finfo(C.dtype).eps
    c_max = cc.max().sqrt()
    for i in range(0, X.shape[0], chunk_rows):
        x = X[i : i + chunk_rows] - c0  # (r, d)
        dist = torch.addmm(cc, x, C.T, alpha=-2)  # (r, k)
        two = torch.topk(dist, 2, dim=1, largest=False)
        out[i : i + chunk_rows] = two.indices[:, 0]
        bound = slack * (c_max * c_max + 2 * x.norm(dim=1) * c_max)  # (r,)
        close = torch.nonzero(two.values[:, 1] - two.values[:, 0] <= bound).flatten()
        if close.numel():
            out[i + close] = _exact_nearest(x[close], C)
    return out


def _exact_nearest(x: torch.Tensor, C: torch.Tensor, elements: int = 1 << 22) -> torch.Tensor:
    """Nearest center (m,) of rows x (m, d) from ``‖x − c‖²`` term by term, in blocks of
    about ``elements`` differences (m_block, k, d)."""
    step = max(1, elements // max(1, C.numel()))
    return torch.cat(
        [
            (x[j : j + step, None, :] - C).square().sum(-1).argmin(1)
            for j in range(0, x.shape[0], step)
        ]
    )


def _sq_dist(X: torch.Tensor, c: torch.Tensor, chunk_rows: int = 65536) -> torch.Tensor:
    """``‖x − c‖²`` (n,) term by term, a chunk of rows at a time."""
    return torch.cat(
        [(X[i : i + chunk_rows] - c).square().sum(1) for i in range(0, X.shape[0], chunk_rows)]
    )


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

    def sq_dist_to(i: int) -> torch.Tensor:  # (n,) squared distances to row i, term by term
        return _sq_dist(X, X[i])

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


INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def initial_resp(
    init_params: str,
    X: torch.Tensor,
    w: torch.Tensor,
    k: int,
    gen: torch.Generator,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Starting responsibilities (n, k) by scikit-learn's ``init_params`` methods.

    "random": uniform draws normalised per row; otherwise hard assignments: k-means clusters,
    or every sample joined to the nearest of k centres drawn by k-means++ or from the data
    (∝ weight, without replacement). With ``labels`` (n,) (-1 unknown) the clusters are
    renumbered to agree with the labelled samples (:func:`match_clusters`).
    """
    n, dt, dev = X.shape[0], X.dtype, X.device
    if init_params == "random":
        resp = torch.rand(n, k, generator=gen, dtype=dt, device=dev)  # (n, k)
        return resp / resp.sum(1, keepdim=True)
    if init_params == "kmeans":
        clusters = kmeans(X, k, w, gen)[1]
    else:
        if init_params == "k-means++":
            idx = kmeans_plusplus(X, k, w, gen)
        else:  # random_from_data: k distinct samples, drawn ∝ weight
            idx = torch.multinomial(w.cpu().double(), k, replacement=False, generator=gen)
        # Each sample joins its nearest chosen center, so every component starts with data.
        clusters = nearest_center(X, X[idx.to(dev)])  # (n,)
    if labels is not None:
        clusters = match_clusters(clusters, labels, k)
    return torch.nn.functional.one_hot(clusters, k).to(dt)


def match_clusters(clusters: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Renumber initial clusters to agree with the given labels (greedy on the contingency
    table), so that EM starts in the basin the labelled samples point to."""
    known = labels >= 0
    table = torch.zeros(k, k, dtype=torch.float64)
    table.index_put_(
        (clusters[known].cpu(), labels[known].cpu()),
        torch.ones(int(known.sum()), dtype=torch.float64),
        accumulate=True,
    )
    perm = torch.full((k,), -1, dtype=torch.long)
    for _ in range(k):
        c, lab = divmod(int(table.argmax()), k)
        if table[c, lab] < 0:
            break
        perm[c] = lab
        table[c, :] = -1
        table[:, lab] = -1
    free = [lab for lab in range(k) if lab not in perm.tolist()]
    perm[perm < 0] = torch.tensor(free, dtype=torch.long)
    return perm.to(clusters.device)[clusters]


def cpu_generator(gen: torch.Generator) -> torch.Generator:
    """``gen`` itself on CPU; for an accelerator generator, a CPU one seeded from it
    (torch.multinomial on CPU tensors needs a CPU generator)."""
    if gen.device.type == "cpu":
        return gen
    g = torch.Generator()
    g.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item()))
    return g
