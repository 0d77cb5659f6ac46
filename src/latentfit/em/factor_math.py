"""The pure tensor functions of factor analysis and probabilistic PCA (em/factor.py fits them).

    z ~ N(0, I_q),   x | z ~ N(W z + μ, Ψ),   Ψ = diag(ψ) (factor analysis) or σ² I (PPCA)

The E-step is the Gaussian posterior of z given the observed coordinates x_o of each row,
M = I + W_oᵀ Ψ_o⁻¹ W_o, E[z | x_o] = M⁻¹ W_oᵀ Ψ_o⁻¹ (x_o − μ_o), Cov[z | x_o] = M⁻¹
(Rubin & Thayer 1982; Ghahramani & Hinton 1996 for the missing coordinates); the M-step
regresses every coordinate on [z, 1] with the expected moments (Bishop 2006 §12.2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit.em.missing import has_missing

__all__ = [
    "FactorPosterior",
    "factor_estep_stats",
    "factor_moment_em",
    "factor_mstep",
    "factor_posterior",
    "floored_noise",
    "recenter_factor_stats",
]

_LOG_2PI = math.log(2 * math.pi)


class FactorPosterior(NamedTuple):
    """Posterior of z for every row: ``mean`` (n, q), ``cov`` (q, q) shared or (n, q, q) per
    row, and ``loglik`` (n,) = log p(x_o)."""

    mean: torch.Tensor
    cov: torch.Tensor
    loglik: torch.Tensor


def _shared_posterior(
    W: torch.Tensor, psi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """βᵀ = Ψ⁻¹ W M⁻¹ (d, q), M⁻¹ (q, q) and log det M for M = I + Wᵀ Ψ⁻¹ W, from the SVD
    Ψ^-½ W = U S Vᵀ: M = V (I + S²) Vᵀ, whose eigenvalues are at least 1 whatever the rounding
    of S. Forming Wᵀ Ψ⁻¹ W rounds it by ~eps of its largest entry, which left M no longer
    positive definite (Cholesky failed) once loadings far above the noise variance lay
    nearly along each other."""
    root = psi.sqrt().unsqueeze(1)  # (d, 1)
    U, S, Vh = torch.linalg.svd(W / root, full_matrices=False)  # (d, q), (q,), (q, q)
    grow = 1 + S.square()  # (q,): the eigenvalues of M
    beta_t = ((U / root) * (S / grow)) @ Vh  # (d, q)
    return beta_t, (Vh.T / grow) @ Vh, torch.log1p(S.square()).sum()


def factor_posterior(
    X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor
) -> FactorPosterior:
    """p(z | x_o) and log p(x_o) by the Woodbury identity (cost O(n d q + q³) on complete data).

    ``X`` (n, d) may hold NaN for missing coordinates; ``W`` (d, q), ``mu`` (d,), ``psi`` (d,).
    """
    d = X.shape[1]
    q = W.shape[1]
    eye = torch.eye(q, dtype=X.dtype, device=X.device)
    if not has_missing(X):
        R = X - mu  # (n, d)
        beta_t, cov, log_det_M = _shared_posterior(W, psi)
        Ez = R @ beta_t  # (n, q)
        # (x − μ)ᵀ C⁻¹ (x − μ) = ‖x − μ − W E[z]‖²_Ψ⁻¹ + ‖E[z]‖², a sum of non-negative
        # terms: Woodbury's ‖x − μ‖²_Ψ⁻¹ − (x − μ)ᵀ Ψ⁻¹ W E[z] cancels two of ‖x − μ‖²/ψ,
        # which leave nothing of the difference once a ψ sits at the noise floor (1e-12
        # of the variance: rounding of ~1e-3 nats a row, and EM's bound jittered by it)
        quad = ((R - Ez @ W.T).square() / psi).sum(1) + Ez.square().sum(1)
        log_det = log_det_M + psi.log().sum()
        ll = -0.5 * (d * _LOG_2PI + log_det + quad)
        return FactorPosterior(Ez, cov, ll)
    obs = ~torch.isnan(X)
    O = obs.to(X.dtype)  # (n, d)
    R = torch.where(obs, X - mu, 0)  # (n, d)
    Pinv = O / psi  # (n, d): Ψ_o⁻¹ with zeros at missing coordinates
    M = eye + torch.einsum("dq,nd,dr->nqr", W, Pinv, W)  # (n, q, q)
    L = torch.linalg.cholesky(M)
    B = (R * Pinv) @ W  # (n, q)
    Ez = torch.cholesky_solve(B.unsqueeze(2), L).squeeze(2)  # (n, q)
    quad = ((R - Ez @ W.T).square() * Pinv).sum(1) + Ez.square().sum(1)  # as above
    log_det = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(1) + O @ psi.log()
    ll = -0.5 * (O.sum(1) * _LOG_2PI + log_det + quad)
    return FactorPosterior(Ez, torch.cholesky_inverse(L), ll)


def positive_weight_rows(X: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows (n', d) of X of positive weight, and their weights (n',). A row of weight 0
    adds nothing to the statistics, but its terms can be infinite (Ψ at the noise floor of
    data whose weighted rows are all alike, and the row far from them): 0 · inf is NaN."""
    keep = w > 0
    return (X, w) if bool(keep.all()) else (X[keep], w[keep])


def factor_estep_stats(
    X: torch.Tensor, w: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Expected sufficient statistics of one chunk, centred on the current μ (additive):

    ``Sw`` = Σ w, ``Sx`` (d,) = Σ w E[x − μ], ``Sz`` (q,) = Σ w E[z], ``Sxx`` (d,) =
    Σ w E[(x − μ)²], ``Sxz`` (d, q) = Σ w E[(x − μ) zᵀ], ``Szz`` (q, q) = Σ w E[z zᵀ],
    ``loglik`` = Σ w log p(x_o). Missing coordinates enter through E[x_m − μ_m | x_o] = W_m E[z]
    and their conditional second moments W_m E[z zᵀ] W_mᵀ + Ψ_m.
    """
    X, w = positive_weight_rows(X, w)
    post = factor_posterior(X, W, mu, psi)
    Ez = post.mean  # (n, q)
    wEz = w.unsqueeze(1) * Ez  # (n, q)
    Sw = w.sum()
    if post.cov.dim() == 2:  # complete data: one posterior covariance for every row
        R = X - mu
        Szz = Sw * post.cov + Ez.T @ wEz
        stats = {
            "Sx": w @ R,
            "Sxx": w @ R.square(),
            "Sxz": R.T @ wEz,
        }
    else:
        obs = ~torch.isnan(X)
        O = obs.to(X.dtype)
        R = torch.where(obs, X - mu, 0)  # (n, d)
        wR = w.unsqueeze(1) * R
        Pz = post.cov + Ez.unsqueeze(2) * Ez.unsqueeze(1)  # (n, q, q): E[z zᵀ | x_o]
        Szz = torch.einsum("n,nqr->qr", w, Pz)
        wM = w.unsqueeze(1) * (1 - O)  # (n, d): weight of the missing coordinates
        T = torch.einsum("nd,nqr->dqr", wM, Pz)  # (d, q, q)
        stats = {
            "Sx": wR.sum(0) + ((wM.T @ Ez) * W).sum(1),
            "Sxx": (wR * R).sum(0) + torch.einsum("dq,dqr,dr->d", W, T, W) + psi * wM.sum(0),
            "Sxz": wR.T @ Ez + torch.einsum("dq,dqr->dr", W, T),
        }
    stats.update(Sw=Sw, Sz=wEz.sum(0), Szz=Szz, loglik=(w * post.loglik).sum())
    return stats


def recenter_factor_stats(stats: dict[str, torch.Tensor], delta: torch.Tensor) -> dict:
    """Statistics centred on μ re-expressed around μ' = μ − δ (x − μ' = (x − μ) + δ):

    Sx' = Sx + Sw δ;  Sxx' = Sxx + 2 δ ⊙ Sx + Sw δ²;  Sxz' = Sxz + δ Szᵀ; Sw, Sz, Szz and the
    log-likelihood unchanged. Stepwise EM needs it to average statistics taken under
    different parameters (:mod:`latentfit.em.online`).
    """
    out = dict(stats)
    Sw, Sx = stats["Sw"], stats["Sx"]
    out["Sx"] = Sx + Sw * delta  # (d,)
    out["Sxx"] = stats["Sxx"] + 2 * delta * Sx + Sw * delta.square()  # (d,)
    out["Sxz"] = stats["Sxz"] + torch.outer(delta, stats["Sz"])  # (d, q)
    return out


def factor_mstep(
    stats: dict[str, torch.Tensor],
    mu: torch.Tensor,
    isotropic: bool,
    min_noise: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regress every coordinate on [z, 1] with the expected moments: returns W (d, q),
    μ (d,), Ψ (d,) (a constant vector σ² when ``isotropic``), Ψ clamped at ``min_noise``
    (the floor of each column, (d,), constant when ``isotropic``)."""
    q = stats["Szz"].shape[0]
    A = torch.empty(q + 1, q + 1, dtype=mu.dtype, device=mu.device)
    A[:q, :q] = stats["Szz"]
    A[:q, q] = A[q, :q] = stats["Sz"]
    A[q, q] = stats["Sw"]
    Bm = torch.cat([stats["Sxz"], stats["Sx"].unsqueeze(1)], 1)  # (d, q + 1)
    sol = torch.linalg.solve(A, Bm.T).T  # (d, q + 1) = [W, μ_new − μ]
    psi = (stats["Sxx"] - (sol * Bm).sum(1)) / stats["Sw"]  # (d,)
    if isotropic:
        psi = psi.mean().expand_as(psi).clone()
    return sol[:, :q].contiguous(), mu + sol[:, q], psi.clamp_min(min_noise)


def factor_moment_em(
    C: torch.Tensor,
    W: torch.Tensor,
    psi: torch.Tensor,
    isotropic: bool,
    min_noise: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EM iteration for W (d, q) and Ψ (d,) from the covariance ``C`` (d, d) of complete
    rows around μ (Rubin & Thayer 1982 eq. 5-6; Tipping & Bishop 1999 eq. 29-30 for σ² I):

    β = M⁻¹ Wᵀ Ψ⁻¹ with M = I + Wᵀ Ψ⁻¹ W;  W' = C βᵀ (M⁻¹ + β C βᵀ)⁻¹;
    Ψ' = diag(C − W' β C) (their mean for PPCA), clamped at ``min_noise`` as in
    :func:`factor_mstep`.

    The E-step statistics of complete rows are linear in their moments, so this is the same
    iteration as :func:`factor_mstep` after :func:`factor_estep_stats` on those rows when μ is
    their mean; it costs O(d² q) whatever the number of rows.
    """
    beta_t, Minv, _ = _shared_posterior(W, psi)  # (d, q): βᵀ; (q, q)
    CB = C @ beta_t  # (d, q): the expected Σ (x − μ) E[z]ᵀ per unit weight
    Ezz = Minv + beta_t.T @ CB  # (q, q): the expected Σ E[z zᵀ] per unit weight
    W_new = torch.linalg.solve(Ezz, CB.T).T  # (d, q)
    psi_new = C.diagonal() - (W_new * CB).sum(1)  # (d,)
    if isotropic:
        psi_new = psi_new.mean().expand_as(psi_new).clone()
    return W_new, psi_new.clamp_min(min_noise)


def floored_noise(
    W: torch.Tensor, psi: torch.Tensor, min_noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns whose fitted noise variance ψ_j ended at its floor ``min_noise`` (d,) (a
    Heywood case: W_j W_jᵀ is the column's whole variance), as (explained, constant) boolean
    masks (d,): ``constant`` where the loadings are zero too (the column has no variance).
    The floor is a clamp, so ψ_j equals it; 1e-5 relative allows a float32 ψ's rounding."""
    at_floor = psi <= min_noise * (1 + 1e-5)  # (d,)
    constant = at_floor & (W.square().sum(1) <= min_noise)  # (d,)
    return at_floor & ~constant, constant
