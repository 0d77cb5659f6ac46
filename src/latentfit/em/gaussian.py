"""Pure tensor functions for Gaussian mixture components (four covariance types).

Conventions follow scikit-learn's ``sklearn/mixture/_gaussian_mixture.py`` so that parameters
move freely between the two: ``precisions_cholesky`` is a matrix ``P`` with precision
``Λ = P Pᵀ`` (full, tied), or the vector/scalar ``1/σ`` (diag, spherical).

Shapes: n samples, k components, d features. The E-step statistics are taken relative to a
shift ``c`` (any point; the models use the weighted mean of the component means): data far
from the origin then loses no precision when second moments are differenced, which keeps
float32 variances non-negative.
"""

from __future__ import annotations

import math

import torch

from latentfit.errors import LatentfitError

__all__ = [
    "COVARIANCE_TYPES",
    "DegenerateComponentError",
    "covariances_from_precisions",
    "feature_stats",
    "gaussian_estep_stats",
    "gaussian_features",
    "gaussian_mstep",
    "log_det_cholesky",
    "log_gaussian_prob",
    "moment_stats",
    "n_covariance_parameters",
    "natural_parameters",
    "normalize_log_prob_",
    "precision_cholesky",
    "precision_cholesky_from_precisions",
    "precisions_from_cholesky",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class DegenerateComponentError(LatentfitError):
    """A component's covariance is not positive definite (it collapsed onto too few points)."""


_REMEDY = (
    "Try increasing reg_covar (it is added to every variance), fewer components, "
    "scaling the data (e.g. StandardScaler), or removing constant/duplicated columns."
)


def precision_cholesky(covariances: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Cholesky factor of the precision from covariances.

    full: (k, d, d) → (k, d, d); tied: (d, d) → (d, d); diag: (k, d) → (k, d); spherical: (k,) → (k,).
    For full/tied, ``Σ = L Lᵀ`` and ``P = L⁻ᵀ`` so that ``Λ = Σ⁻¹ = P Pᵀ``.
    Raises DegenerateComponentError naming the components that are not positive definite.
    """
    if covariance_type in ("full", "tied"):
        cov = covariances if covariance_type == "full" else covariances.unsqueeze(0)
        L, info = torch.linalg.cholesky_ex(cov)
        bad = (info != 0).nonzero().flatten().tolist()
        if bad:
            which = "the tied covariance" if covariance_type == "tied" else f"component(s) {bad}"
            raise DegenerateComponentError(
                f"the covariance of {which} is not positive definite: the component has "
                f"collapsed onto too few distinct points (a singleton, duplicated points or a "
                f"constant column). {_REMEDY}"
            )
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
        P = torch.linalg.solve_triangular(L, eye, upper=False).mT  # (k, d, d)
        return P if covariance_type == "full" else P[0]
    bad = (covariances <= 0).nonzero()
    if len(bad):
        k = int(bad[0][0])
        raise DegenerateComponentError(
            f"component {k} has a non-positive variance ({covariances[tuple(bad[0])].item():.3g}). "
            f"{_REMEDY}"
        )
    return covariances.rsqrt()


def precision_cholesky_from_precisions(precisions: torch.Tensor, covariance_type: str):
    """``P`` with ``Λ = P Pᵀ`` from user-given precisions (lower Cholesky), or ``√λ``."""
    if covariance_type in ("full", "tied"):
        L, info = torch.linalg.cholesky_ex(precisions)
        if bool((info != 0).any()):
            raise ValueError("precisions_init must be symmetric positive-definite matrices")
        return L
    if bool((precisions <= 0).any()):
        raise ValueError("precisions_init must be positive")
    return precisions.sqrt()


def precisions_from_cholesky(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    if covariance_type in ("full", "tied"):
        return prec_chol @ prec_chol.mT
    return prec_chol.square()


def covariances_from_precisions(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Σ = (P Pᵀ)⁻¹ (full, tied) or 1/P² (diag, spherical)."""
    if covariance_type in ("full", "tied"):
        return torch.linalg.inv(prec_chol @ prec_chol.mT)
    return prec_chol.square().reciprocal()


def log_det_cholesky(
    prec_chol: torch.Tensor, covariance_type: str, n_features: int
) -> torch.Tensor:
    """log det P, i.e. ½ log det Λ: (k,) for full/diag/spherical, a scalar for tied."""
    if covariance_type == "full":
        return prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if covariance_type == "tied":
        return prec_chol.diagonal().log().sum()
    if covariance_type == "diag":
        return prec_chol.log().sum(-1)
    return n_features * prec_chol.log()


def log_gaussian_prob(
    X: torch.Tensor, means: torch.Tensor, prec_chol: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """log N(x_n | μ_k, Σ_k) for every sample and component: (n, d) → (n, k).

    Written as matrix products so that one chunk of rows costs a few large GEMMs
    (full: one (n, d) @ (d, k·d) product).
    """
    n, d = X.shape
    k = means.shape[0]
    log_det = log_det_cholesky(prec_chol, covariance_type, d)
    if covariance_type == "full":
        Pcat = prec_chol.permute(1, 0, 2).reshape(d, k * d)  # (d, k·d)
        Y = (X @ Pcat).view(n, k, d)  # (n, k, d)
        Y -= (means.unsqueeze(1) @ prec_chol).squeeze(1)  # (k, d)
        maha = Y.square_().sum(-1)  # (n, k)
    elif covariance_type == "tied":
        Y = X @ prec_chol  # (n, d)
        M = means @ prec_chol  # (k, d)
        maha = (Y.square().sum(1, keepdim=True) - 2 * (Y @ M.T) + M.square().sum(1)).clamp_min_(0)
    elif covariance_type == "diag":
        prec = prec_chol.square()  # (k, d)
        maha = (
            (X * X) @ prec.T - 2 * (X @ (means * prec).T) + (means.square() * prec).sum(1)
        ).clamp_min_(0)
    elif covariance_type == "spherical":
        prec = prec_chol.square()  # (k,)
        maha = (
            (X * X).sum(1, keepdim=True) - 2 * (X @ means.T) + means.square().sum(1)
        ).clamp_min_(0) * prec
    else:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )
    return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det


def gaussian_features(Xc: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Sufficient statistics T(x) of the Gaussian as an exponential family, one column per
    sample: (n, d) → (m, n).

    full/tied: ``[vech(x xᵀ); x]`` with m = d(d+1)/2 + d (row-major upper triangle);
    diag/spherical: ``[x²; x]`` with m = 2d. Every component's log-density is affine in T(x)
    (see :func:`natural_parameters`), so the E-step and the M-step are each one matrix product.
    Samples run along the long axis because products of a few component rows with many sample
    columns run about twice as fast as the transposed layout.
    """
    n, d = Xc.shape
    XT = Xc.T.contiguous()  # (d, n)
    if covariance_type in ("full", "tied"):
        T = d * (d + 1) // 2
        G = Xc.new_empty(T + d, n)
        off = 0
        for a in range(d):  # row a of the upper triangle: x_a · x_{a..d-1}
            torch.mul(XT[a : a + 1], XT[a:], out=G[off : off + d - a])
            off += d - a
        G[T:] = XT
        return G
    return torch.cat([XT * XT, XT], 0)  # (2d, n)


def _triu(d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    iu = torch.triu_indices(d, d, device=device)
    return iu[0], iu[1]


def _unpack_sym(v: torch.Tensor, d: int) -> torch.Tensor:
    """(..., d(d+1)/2) upper-triangle vectors → (..., d, d) symmetric matrices."""
    i, j = _triu(d, v.device)
    M = v.new_zeros(*v.shape[:-1], d, d)
    M[..., i, j] = v
    M[..., j, i] = v
    return M


def natural_parameters(
    means: torch.Tensor, prec_chol: torch.Tensor, covariance_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (k, m), b (k,)) with log N(x | μ_k, Σ_k) = W[k] · T(x) + b[k].

    From log N = −½ xᵀΛx + xᵀΛμ − ½ μᵀΛμ − (d/2) log 2π + ½ log|Λ|.
    """
    k, d = means.shape
    log_det = log_det_cholesky(prec_chol, covariance_type, d)
    const = -0.5 * d * math.log(2 * math.pi) + log_det
    if covariance_type in ("full", "tied"):
        Lam = prec_chol @ prec_chol.mT  # (k, d, d) or (d, d)
        Lam = Lam.expand(k, d, d)
        i, j = _triu(d, means.device)
        quad = -0.5 * Lam[:, i, j] * torch.where(i == j, 1.0, 2.0).to(Lam.dtype)  # (k, T)
        lin = (Lam @ means.unsqueeze(2)).squeeze(2)  # (k, d)
    else:
        prec = prec_chol.square()  # (k, d) or (k,)
        prec = prec.unsqueeze(1).expand(k, d) if covariance_type == "spherical" else prec
        quad = -0.5 * prec  # (k, d)
        lin = prec * means  # (k, d)
    b = const - 0.5 * (lin * means).sum(1)  # (k,)
    return torch.cat([quad, lin], 1).contiguous(), b


def gaussian_estep_stats(
    X: torch.Tensor,
    w: torch.Tensor,
    log_weights: torch.Tensor,
    means: torch.Tensor,
    prec_chol: torch.Tensor,
    covariance_type: str,
    shift: torch.Tensor,
    features: torch.Tensor | None = None,
    natural: tuple[torch.Tensor, torch.Tensor] | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Expected sufficient statistics of one chunk (Bishop 2006, §9.2.2), relative to ``shift``.

    Returns ``S0`` (k,) = Σ r, ``S1`` (k, d) = Σ r (x − c), ``S2`` = Σ r (x − c)(x − c)ᵀ
    ((k, d, d) full, (d, d) tied, (k, d) diag/spherical), ``loglik`` = Σ w log p(x) and
    ``weight`` = Σ w, where r = w · p(z | x). All of them add over chunks.

    ``features`` may pass ``gaussian_features(X − shift)`` computed earlier (they do not change
    between iterations); the E-step is then two matrix products over the chunk. ``natural``
    may pass ``natural_parameters(means − shift, prec_chol)``, which is the same for every chunk.
    """
    G = gaussian_features(X - shift, covariance_type) if features is None else features  # (m, n)
    if natural is None:
        natural = natural_parameters(means - shift, prec_chol, covariance_type)
    W, b = natural
    logp = torch.addmm((b + log_weights).unsqueeze(1), W, G)  # (k, n)
    known = None if labels is None else (labels >= 0).nonzero().squeeze(1)  # labelled samples
    if known is not None and len(known):
        joint = logp[labels[known], known]  # log π_y + log N(x | y): complete-data likelihood
    resp, lse = normalize_log_prob_(logp, w)  # (k, n), (n,)
    if known is not None and len(known):
        resp[:, known] = 0
        resp[labels[known], known] = w[known]
        lse[known] = joint
    stats = feature_stats(G, w, resp, covariance_type, X.shape[1])
    stats["loglik"] = (w * lse).sum()
    stats["weight"] = w.sum()
    return stats


def normalize_log_prob_(logp: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Responsibilities ``w · softmax(logp)`` over components and ``logsumexp(logp)``.

    ``logp`` is (k, n), components along the first axis, and is overwritten with the
    responsibilities (one exp over the k·n entries instead of the two of a logsumexp followed by
    an exp). Returns (resp (k, n), lse (n,)).
    """
    m = logp.amax(0, keepdim=True)  # (1, n)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    resp = logp.sub_(m)
    if resp.dtype == torch.float32:
        # exp(x) for x in [-103, -87] is subnormal in float32, which CPUs compute many times
        # slower, and such logits are common; responsibilities below 1e-35 of the largest are
        # raised to it (the M-step treats a component with only such mass as unused).
        resp.clamp_min_(-80.0)
    resp.exp_()
    total = resp.sum(0, keepdim=True)  # (1, n)
    resp.mul_(w.unsqueeze(0) / total)
    return resp, (m + total.log()).squeeze(0)


def feature_stats(
    G: torch.Tensor, w: torch.Tensor, resp: torch.Tensor, covariance_type: str, d: int
) -> dict[str, torch.Tensor]:
    """S0, S1, S2 from features T(x − c) (m, n) and responsibilities ``resp`` (k, n) that
    include the sample weights."""
    S0 = resp.sum(1)  # (k,)
    if covariance_type == "tied":
        S1 = resp @ G[-d:].T  # (k, d)
        S2 = _unpack_sym(G[:-d] @ w, d)  # (d, d)
    else:
        S = resp @ G.T  # (k, m)
        S1 = S[:, -d:]
        S2 = _unpack_sym(S[:, :-d], d) if covariance_type == "full" else S[:, :d]
    return {"S0": S0, "S1": S1.contiguous(), "S2": S2.contiguous()}


def moment_stats(
    Xc: torch.Tensor, w: torch.Tensor, resp: torch.Tensor, covariance_type: str
) -> dict[str, torch.Tensor]:
    """Weighted moments of (already shifted) data (n, d) under responsibilities ``resp`` (n, k)
    that include the sample weights: S0 (k,), S1 (k, d), S2 by covariance type."""
    G = gaussian_features(Xc, covariance_type)  # (m, n)
    return feature_stats(G, w, resp.T, covariance_type, Xc.shape[1])


def gaussian_mstep(
    stats: dict[str, torch.Tensor], shift: torch.Tensor, reg_covar: float, covariance_type: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form M-step: weights (k,), means (k, d), covariances (by type) from statistics.

    As scikit-learn, ``nk = Σ r + 10·eps`` guards empty components. Variances are differenced
    around the shift; one below the rounding error of that difference is set to exactly zero
    before ``reg_covar`` is added, so variances are never negative (float32) and a collapsed
    component is recognised as such (with ``reg_covar=0`` it raises DegenerateComponentError).
    """
    S0, S1, S2 = stats["S0"], stats["S1"], stats["S2"]
    eps = torch.finfo(S0.dtype).eps
    nk = S0 + 10 * eps  # (k,)
    weights = nk / nk.sum()
    delta = S1 / nk.unsqueeze(1)  # (k, d): mean − shift
    means = shift + delta
    if covariance_type == "full":
        raw = S2 / nk[:, None, None]  # (k, d, d) second moment about the shift
        cov = _drop_rounding(raw - delta.unsqueeze(2) * delta.unsqueeze(1), raw, eps)
    elif covariance_type == "tied":
        raw = S2 / nk.sum()
        cov = _drop_rounding(raw - (nk.unsqueeze(1) * delta).T @ delta / nk.sum(), raw, eps)
    else:
        raw = S2 / nk.unsqueeze(1)  # (k, d)
        var = raw - delta.square()
        var = torch.where(var > 100 * eps * raw, var, torch.zeros_like(var))
        cov = var + reg_covar if covariance_type == "diag" else var.mean(1) + reg_covar
        return weights, means, cov
    cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    return weights, means, cov


def _drop_rounding(cov: torch.Tensor, raw: torch.Tensor, eps: float) -> torch.Tensor:
    """Symmetrise ``cov`` (…, d, d) and zero the rows and columns whose variance is below the
    rounding error of differencing the raw second moment ``raw``: such a variance is zero
    (a component collapsed onto one value), never small noise or a negative number."""
    cov = 0.5 * (cov + cov.mT)
    var = cov.diagonal(dim1=-2, dim2=-1)  # (…, d)
    keep = (var > 100 * eps * raw.diagonal(dim1=-2, dim2=-1)).to(cov.dtype)
    return cov * keep.unsqueeze(-1) * keep.unsqueeze(-2)


def n_covariance_parameters(covariance_type: str, k: int, d: int) -> int:
    return {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
