"""Exact EM for Gaussian models with missing coordinates (NaN entries), as pure tensor functions.

Under missingness at random the likelihood of a row is the marginal density of its observed
coordinates, and EM treats the missing coordinates as further latent variables (Ghahramani &
Jordan 1994; Little & Rubin 2002, §11.2). For component k and a row with observed set o and
missing set m:

    log p(x_o | k) = log N(x_o | μ_o, Σ_oo)
    E[x_m | x_o, k] = μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)
    Cov[x_m | x_o, k] = Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om      (the "conditional covariance correction")

and the M-step uses E[x] and E[x xᵀ] = E[x] E[x]ᵀ + Cov in place of x and x xᵀ. When a chunk
has few distinct missingness patterns, rows are grouped by pattern and each pattern costs one
batched Cholesky of the (k, |o|, |o|) observed blocks; with many patterns every row gets its own
Cholesky, batched over rows. Diag and spherical covariances need neither (the missing
coordinates are then independent of the observed ones).

The functions take covariances in scikit-learn's shapes by ``covariance_type`` — full (k, d, d),
tied (d, d), diag (k, d), spherical (k,) — which are also hmmlearn's ``covars_`` shapes, so a
Gaussian HMM can use :func:`log_gaussian_prob_missing` for its frame log-likelihoods and
:func:`gaussian_missing_moments` (with its state posteriors as ``resp``) for its statistics.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit.em.gaussian import (
    DegenerateComponentError,
    covariances_from_precisions,
    put_direct_moments,
)
from latentfit.errors import DataError, ParameterError

__all__ = [
    "MissingMoments",
    "direct_missing_log_prob",
    "direct_missing_moments",
    "gaussian_missing_estep_stats",
    "gaussian_missing_hmm_stats",
    "gaussian_missing_moments",
    "has_missing",
    "impute_mean",
    "log_gaussian_prob_missing",
]

_LOG_2PI = math.log(2 * math.pi)


class MissingMoments(NamedTuple):
    """Expected moments Σ_n r_nk E[·] under the conditional law of the missing coordinates.

    S0 (k,) = Σ r; S1 (k, d) = Σ r E[x − c]; S2 = Σ r E[(x − c)(x − c)ᵀ] as (k, d, d) for
    full/tied covariances, its diagonal (k, d) for diag/spherical.
    """

    S0: torch.Tensor
    S1: torch.Tensor
    S2: torch.Tensor


def has_missing(X: torch.Tensor) -> bool:
    return bool(torch.isnan(X).any())


def impute_mean(X: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Replace NaNs by their column's (weighted) observed mean; returns X itself when complete.

    Used only to start EM (k-means needs complete rows); the fit itself never imputes.
    """
    nan = torch.isnan(X)
    if not bool(nan.any()):
        return X
    obs = (~nan).double()
    w = torch.ones(X.shape[0], dtype=X.dtype, device=X.device) if w is None else w
    wd = w.double()
    mass = wd @ obs  # (d,)
    empty = (mass <= 0).nonzero()
    if len(empty):
        raise DataError(
            f"column {int(empty[0])} has no observed value: it cannot be estimated; drop it"
        )
    # accumulated in float64: a float32 sum of values near 1e7 drifts by hundreds
    mean = (wd @ torch.where(nan, 0, X).double()) / mass  # (d,)
    return torch.where(nan, mean.to(X.dtype), X)


def _as_matrices(covariances: torch.Tensor, covariance_type: str, k: int, d: int):
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return covariances.expand(k, d, d)
    raise ParameterError(f"covariance_type must be 'full' or 'tied' here, got {covariance_type!r}")


def _variances(covariances: torch.Tensor, covariance_type: str, k: int, d: int) -> torch.Tensor:
    if covariance_type == "diag":
        return covariances  # (k, d)
    if covariance_type == "spherical":
        return covariances.unsqueeze(1).expand(k, d)
    raise ParameterError(
        f"covariance_type must be 'diag' or 'spherical' here, got {covariance_type!r}"
    )


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of covariances of the observed coordinates (..., k, p, p), or a
    DegenerateComponentError naming the first component that is not positive definite in
    working precision (a covariance held up only by reg_covar, far below the data's
    scale)."""
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        k = int((info != 0).nonzero()[0][-1])
        big = float(cov[..., k, :, :].diagonal(dim1=-2, dim2=-1).abs().max())
        raise DegenerateComponentError(
            f"the covariance of component {k} over the observed columns is singular in "
            f"{str(cov.dtype).removeprefix('torch.')} (variances up to {big:.3g}): the "
            f"component sits on fewer distinct points than columns, held up only by the "
            f"regularisation. Raise reg_covar towards {big * 1e-12:.3g} (or scale the columns), "
            f"use covariance_type='diag', or fewer components."
        )
    return L


def _pattern_conditionals(
    Xc: torch.Tensor, mc: torch.Tensor, cov: torch.Tensor, miss: torch.Tensor
):
    """For rows sharing missing set ``miss``: log N(x_o) (n_p, k), E[x] (n_p, k, d) and the
    conditional covariance padded to (k, d, d). ``Xc`` (n_p, d) and ``mc`` (k, d) are shifted."""
    o, m = ~miss, miss
    n_p, d = Xc.shape
    k = mc.shape[0]
    Ex = Xc.unsqueeze(1).expand(n_p, k, d).clone()  # (n_p, k, d)
    C = torch.zeros(k, d, d, dtype=Xc.dtype, device=Xc.device)
    n_o = int(o.sum())
    if n_o == 0:  # nothing observed: the prior of the component, likelihood 1
        Ex[:] = mc
        return Xc.new_zeros(n_p, k), Ex, cov.clone()
    Soo = cov[:, o][:, :, o]  # (k, p, p)
    L = _cholesky(Soo)
    diff = Xc[:, o].unsqueeze(1) - mc[:, o]  # (n_p, k, p)
    y = torch.linalg.solve_triangular(L, diff.permute(1, 2, 0), upper=False)  # (k, p, n_p)
    maha = y.square().sum(1).T  # (n_p, k)
    log_det = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (k,)
    logp = -0.5 * (n_o * _LOG_2PI + maha + log_det)
    if bool(m.any()):
        alpha = torch.linalg.solve_triangular(L.mT, y, upper=True)  # (k, p, n_p) = Σ_oo⁻¹ diff
        Smo = cov[:, m][:, :, o]  # (k, q, p)
        Ex[:, :, m] = mc[:, m] + (Smo @ alpha).permute(2, 0, 1)  # (n_p, k, q)
        A = torch.linalg.solve_triangular(L, Smo.mT, upper=False)  # (k, p, q)
        cond = cov[:, m][:, :, m] - A.mT @ A  # (k, q, q)
        idx = m.nonzero().flatten()
        C[:, idx.unsqueeze(1), idx.unsqueeze(0)] = cond
    return logp, Ex, C


def _row_conditionals(
    Xc: torch.Tensor, mc: torch.Tensor, cov: torch.Tensor, nan: torch.Tensor, moments: bool = True
):
    """The same as :func:`_pattern_conditionals` for rows with different patterns, batched over
    rows: the observed block is embedded as Σ̃ = Σ ∘ (o oᵀ) + diag(1 − o), whose Cholesky factor
    is that of Σ_oo with an identity on the missing coordinates. Returns log N(x_o) (n, k),
    E[x] (n, k, d) and the conditional covariances (n, k, d, d) (None, None without
    ``moments``)."""
    O = (~nan).to(Xc.dtype)  # (n, d)
    mask = (O.unsqueeze(2) * O.unsqueeze(1)).unsqueeze(1)  # (n, 1, d, d)
    eye = torch.diag_embed(1 - O).unsqueeze(1)  # (n, 1, d, d)
    L = _cholesky(cov * mask + eye)  # (n, k, d, d)
    diff = (torch.where(nan, 0, Xc).unsqueeze(1) - mc) * O.unsqueeze(1)  # (n, k, d)
    y = torch.linalg.solve_triangular(L, diff.unsqueeze(3), upper=False)  # (n, k, d, 1)
    maha = y.square().sum((2, 3))  # (n, k)
    log_det = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (n, k)
    logp = -0.5 * (O.sum(1, keepdim=True) * _LOG_2PI + maha + log_det)
    if not moments:
        return logp, None, None
    alpha = torch.linalg.solve_triangular(L.mT, y, upper=True).squeeze(3)  # (n, k, d)
    Ex = torch.where(nan.unsqueeze(1), mc + (cov @ alpha.unsqueeze(3)).squeeze(3), Xc.unsqueeze(1))
    V = torch.linalg.solve_triangular(L, (cov * O.unsqueeze(1).unsqueeze(2)).mT, upper=False)
    M = (1 - O).unsqueeze(2) * (1 - O).unsqueeze(1)  # (n, d, d): missing × missing
    C = (cov - V.mT @ V) * M.unsqueeze(1)  # (n, k, d, d)
    return logp, Ex, C


# Few patterns: one Cholesky per pattern; many: one batched Cholesky per row.
MAX_PATTERNS = 16


def _conditionals(
    Xc: torch.Tensor,
    mc: torch.Tensor,
    cov: torch.Tensor,
    nan: torch.Tensor,
    moments: bool = True,
    max_patterns: int = MAX_PATTERNS,
):
    """Yield (rows, log N(x_o) (n_r, k), E[x] (n_r, k, d), Cov (k, d, d) or (n_r, k, d, d))
    over groups of rows: by pattern when there are at most ``max_patterns`` distinct
    patterns; else the ``max_patterns`` commonest patterns shared by several rows by pattern
    (the complete rows above all), and the other rows in row blocks, one factorisation a row.
    Every row went row by row there: 5,000 rows of 64 columns with 1% of values missing (53%
    of the rows complete) factorised 5,000 covariances of 64 x 64 for each component."""
    uniq, inverse, counts = torch.unique(nan, dim=0, return_inverse=True, return_counts=True)
    if uniq.shape[0] <= max_patterns:
        for p in range(uniq.shape[0]):
            rows = (inverse == p).nonzero().flatten()
            yield (rows, *_pattern_conditionals(Xc[rows], mc, cov, uniq[p]))
        return
    common = [p for p in counts.argsort(descending=True)[:max_patterns].tolist() if counts[p] > 1]
    for p in common:
        rows = (inverse == p).nonzero().flatten()
        yield (rows, *_pattern_conditionals(Xc[rows], mc, cov, uniq[p]))
    alone = torch.ones(uniq.shape[0], dtype=torch.bool, device=nan.device)
    alone[common] = False
    rest = alone[inverse].nonzero().flatten()  # (r,) the rows of the other patterns
    k, d = mc.shape[0], mc.shape[1]
    block = max(1, (1 << 21) // (k * d * d))  # rows per block: ~2M numbers per (n, k, d, d)
    for i in range(0, rest.shape[0], block):
        rows = rest[i : i + block]
        yield (rows, *_row_conditionals(Xc[rows], mc, cov, nan[rows], moments))


def log_gaussian_prob_missing(
    X: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
    covariance_type: str,
    *,
    max_patterns: int = MAX_PATTERNS,
) -> torch.Tensor:
    """log N(x_o | μ_k,o, Σ_k,oo) of every row's observed coordinates: (n, d) → (n, k).

    A NaN in X marks a missing coordinate; a row with nothing observed has log-density 0.
    On complete rows this equals :func:`~latentfit.em.gaussian.log_gaussian_prob`. Up to
    ``max_patterns`` distinct patterns of missing coordinates are factorised once each, more
    row by row.
    """
    n, d = X.shape
    k = means.shape[0]
    nan = torch.isnan(X)
    if covariance_type in ("diag", "spherical"):
        var = _variances(covariances, covariance_type, k, d)
        O = (~nan).to(X.dtype)  # (n, d)
        Xz = torch.where(nan, 0, X)
        prec = var.reciprocal()  # (k, d)
        maha = (Xz * Xz) @ prec.T - 2 * Xz @ (means * prec).T + O @ (means.square() * prec).T
        return -0.5 * (O.sum(1, keepdim=True) * _LOG_2PI + maha.clamp_min(0) + O @ var.log().T)
    cov = _as_matrices(covariances, covariance_type, k, d)
    out = X.new_empty(n, k)
    for rows, logp, _, _ in _conditionals(X, means, cov, nan, False, max_patterns):
        out[rows] = logp
    return out


def gaussian_missing_moments(
    X: torch.Tensor,
    resp: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
    covariance_type: str,
    shift: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    *,
    max_patterns: int = MAX_PATTERNS,
) -> MissingMoments:
    """Expected moments of X − c under responsibilities ``resp`` (n, k), filling each missing
    coordinate with its conditional mean and adding the conditional covariance to the second
    moment. ``shift`` c defaults to 0; ``delta`` (k, d) may give μ − c when it is known more
    precisely than ``means − c`` (float32 far from the origin). On complete rows these are the
    ordinary moments. ``max_patterns``: as in :func:`log_gaussian_prob_missing`."""
    d = X.shape[1]
    k = means.shape[0]
    c = X.new_zeros(d) if shift is None else shift
    Xc, mc = X - c, (means - c if delta is None else delta)
    nan = torch.isnan(X)
    S0 = resp.sum(0)  # (k,)
    if covariance_type in ("diag", "spherical"):
        var = _variances(covariances, covariance_type, k, d)
        O = (~nan).to(X.dtype)
        Xz = torch.where(nan, 0, Xc)
        R_miss = resp.T @ (1 - O)  # (k, d): Σ r over rows where coordinate j is missing
        S1 = resp.T @ Xz + R_miss * mc
        S2 = resp.T @ (Xz * Xz) + R_miss * (mc.square() + var)
        return MissingMoments(S0, S1, S2)
    cov = _as_matrices(covariances, covariance_type, k, d)
    S1 = X.new_zeros(k, d)
    S2 = X.new_zeros(k, d, d)
    for rows, _, Ex, C in _conditionals(Xc, mc, cov, nan, True, max_patterns):
        r = resp[rows]  # (n_r, k)
        S1 += torch.einsum("nk,nkd->kd", r, Ex)
        S2 += torch.einsum("nk,nkd,nke->kde", r, Ex, Ex)
        S2 += r.sum(0)[:, None, None] * C if C.dim() == 3 else torch.einsum("nk,nkde->kde", r, C)
    return MissingMoments(S0, S1, S2)


def _one_component(covariances: torch.Tensor, covariance_type: str, j: int) -> torch.Tensor:
    """The covariance of component ``j`` in the shapes of a one-component model."""
    return covariances if covariance_type == "tied" else covariances[j : j + 1]


def direct_missing_log_prob(
    X: torch.Tensor, centres: torch.Tensor, covariances: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """log N(x_o | μ_j,o, Σ_j,oo) (n, f) of the components too far from the shift for the
    centred form (:func:`~latentfit.em.gaussian.far_components`), computed from x − μ_j:
    ``centres`` (f, d) are their means, ``covariances`` theirs ((f, ...) or the tied (d, d)).
    About the shift, the diagonal form's squares lose ~eps ‖μ_j − c‖² / σ_j² nats."""
    f, d = centres.shape
    zero = centres.new_zeros(1, d)
    out = X.new_empty(X.shape[0], f)
    for j in range(f):
        cov = _one_component(covariances, covariance_type, j)
        out[:, j] = log_gaussian_prob_missing(X - centres[j], zero, cov, covariance_type)[:, 0]
    return out


def direct_missing_moments(
    X: torch.Tensor,
    resp: torch.Tensor,
    centres: torch.Tensor,
    covariances: torch.Tensor,
    covariance_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S1 (f, d) and S2 of :func:`gaussian_missing_moments` for the components of
    :func:`direct_missing_log_prob`, each about its own mean μ_j rather than the shift:
    ``resp`` (n, f) holds their responsibilities with the sample weights. S2 is (f, d, d)
    full, (f, d) diag/spherical, and for tied the (d, d) sum over the components (a tied fit
    takes every component about its own mean, as em.gaussian.direct_moments does). About
    one centre c, Σ r E[(x − c)(x − c)ᵀ] / Σ r − (μ − c)(μ − c)ᵀ cancels ‖μ − c‖² / σ² of
    the variance's digits."""
    f, d = centres.shape
    zero = centres.new_zeros(1, d)
    S1, S2 = [], []
    for j in range(f):
        cov = _one_component(covariances, covariance_type, j)
        mom = gaussian_missing_moments(
            X, resp[:, j : j + 1], centres[j : j + 1], cov, covariance_type, centres[j], zero
        )
        S1.append(mom.S1[0])
        S2.append(mom.S2[0])
    S2 = torch.stack(S2)
    return torch.stack(S1), S2.sum(0) if covariance_type == "tied" else S2


def gaussian_missing_estep_stats(
    X: torch.Tensor,
    w: torch.Tensor,
    log_weights: torch.Tensor,
    means: torch.Tensor,
    prec_chol: torch.Tensor,
    covariance_type: str,
    shift: torch.Tensor,
    delta: torch.Tensor | None = None,
    direct: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The GaussianMixture E-step on a chunk with NaNs: the same statistics, in the same shapes,
    as :func:`~latentfit.em.gaussian.gaussian_estep_stats` (Ghahramani & Jordan 1994).
    ``delta`` (k, d): μ − c, if known more precisely than ``means − shift``. ``direct`` =
    (indices (f,), their means (f, d)), as there: those components' log-densities come from
    x − μ_k and their S1, S2 are about μ_k (:func:`direct_missing_moments`).

    ``loglik`` is Σ w log p(x_o), the observed-data log-likelihood EM increases.
    """
    cov = covariances_from_precisions(prec_chol, covariance_type)
    mc = means - shift if delta is None else delta
    logp = log_gaussian_prob_missing(X - shift, mc, cov, covariance_type)  # (n, k)
    if direct is not None:
        idx, centres = direct
        cov_far = cov if covariance_type == "tied" else cov[idx]
        logp[:, idx] = direct_missing_log_prob(X, centres, cov_far, covariance_type)
    logp = logp + log_weights
    lse = torch.logsumexp(logp, 1)  # (n,)
    resp = torch.exp(logp - lse.unsqueeze(1)) * w.unsqueeze(1)  # (n, k)
    mom = gaussian_missing_moments(X, resp, means, cov, covariance_type, shift, delta)
    S2 = mom.S2.sum(0) if covariance_type == "tied" else mom.S2
    stats = {
        "S0": mom.S0,
        "S1": mom.S1,
        "S2": S2,
        "loglik": (w * lse).sum(),
        "weight": w.sum(),
    }
    if direct is not None:
        S1f, S2f = direct_missing_moments(X, resp[:, idx], centres, cov_far, covariance_type)
        put_direct_moments(stats, idx, S1f, S2f, covariance_type)
    return stats


def gaussian_missing_hmm_stats(
    X: torch.Tensor,
    gamma: torch.Tensor,
    shift: torch.Tensor,
    means: torch.Tensor,
    covars: torch.Tensor,
    covariance_type: str,
    delta: torch.Tensor | None = None,
    direct: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A Gaussian HMM's emission statistics with missing coordinates, under the keys of
    hmmlearn's ``GaussianHMM``: ``post`` (k,) = Σ γ, ``obs`` (k, d) = Σ γ E[x − c], and
    ``obs2`` (k, d) for spherical/diag or ``obsobs`` ((k, d, d) full, (d, d) tied) =
    Σ γ E[(x − c)(x − c)ᵀ]. ``gamma`` (t, k) are the state posteriors; ``means``/``covars``
    are the current parameters (the conditional expectations depend on them). On complete
    data these are the ordinary statistics. ``direct`` = (indices (f,), their means (f, d)):
    those states' moments are about their own means (:func:`direct_missing_moments`)."""
    mom = gaussian_missing_moments(X, gamma, means, covars, covariance_type, shift, delta)
    S2 = mom.S2.sum(0) if covariance_type == "tied" else mom.S2
    stats = {"S0": mom.S0, "S1": mom.S1, "S2": S2}
    if direct is not None:
        idx, centres = direct
        cov_far = covars if covariance_type == "tied" else covars[idx]
        S1f, S2f = direct_missing_moments(X, gamma[:, idx], centres, cov_far, covariance_type)
        put_direct_moments(stats, idx, S1f, S2f, covariance_type)
    second = "obs2" if covariance_type in ("spherical", "diag") else "obsobs"
    return {"post": stats["S0"], "obs": stats["S1"], second: stats["S2"]}
