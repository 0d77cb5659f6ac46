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
    "complete_row_stats",
    "factor_estep_stats",
    "factor_moment_em",
    "factor_mstep",
    "factor_posterior",
    "floored_noise",
    "recenter_factor_stats",
    "whitened_loadings",
    "with_weak_factors_at",
]

_LOG_2PI = math.log(2 * math.pi)


class FactorPosterior(NamedTuple):
    """Posterior of z for every row: ``mean`` (n, q), ``cov`` (q, q) shared or (n, q, q) per
    row, and ``loglik`` (n,) = log p(x_o)."""

    mean: torch.Tensor
    cov: torch.Tensor
    loglik: torch.Tensor


def factor_posterior(
    X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor
) -> FactorPosterior:
    """p(z | x_o) and log p(x_o) by the Woodbury identity (cost O(n d q + q³) on complete data).

    ``X`` (n, d) may hold NaN for missing coordinates; ``W`` (d, q), ``mu`` (d,), ``psi`` (d,).
    """
    return _posterior_and_residual(X, W, mu, psi)[0]


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


def _posterior_and_residual(
    X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor
) -> tuple[FactorPosterior, torch.Tensor]:
    """:func:`factor_posterior` and the residual (n, d) E[x − μ − W z | x_o] of every observed
    coordinate about the current loadings (zero at the missing ones), which the log-density
    needs too and the E-step statistics are taken around."""
    d = X.shape[1]
    if not has_missing(X):
        R = X - mu  # (n, d)
        beta_t, cov, log_det_M = _shared_posterior(W, psi)
        Ez = R @ beta_t  # (n, q)
        E = R - Ez @ W.T  # (n, d)
        # (x − μ)ᵀ C⁻¹ (x − μ) = ‖x − μ − W E[z]‖²_Ψ⁻¹ + ‖E[z]‖², a sum of non-negative
        # terms: Woodbury's ‖x − μ‖²_Ψ⁻¹ − (x − μ)ᵀ Ψ⁻¹ W E[z] cancels two of ‖x − μ‖²/ψ,
        # which leave nothing of the difference once a ψ sits at the noise floor (1e-12
        # of the variance: rounding of ~1e-3 nats a row, and EM's bound jittered by it)
        quad = (E.square() / psi).sum(1) + Ez.square().sum(1)
        log_det = log_det_M + psi.log().sum()
        ll = -0.5 * (d * _LOG_2PI + log_det + quad)
        return FactorPosterior(Ez, cov, ll), E
    obs = ~torch.isnan(X)
    O = obs.to(X.dtype)  # (n, d)
    R = torch.where(obs, X - mu, 0)  # (n, d)
    which, beta_t, cov, log_det_M = _pattern_posteriors(obs, W, psi)
    Ez = _rows_times(R, beta_t, which)  # (n, q)
    E = (R - Ez @ W.T) * O  # (n, d)
    quad = (E.square() * (O / psi)).sum(1) + Ez.square().sum(1)  # as above
    log_det = log_det_M[which] + O @ psi.log()
    ll = -0.5 * (O.sum(1) * _LOG_2PI + log_det + quad)
    return FactorPosterior(Ez, cov[which], ll), E


def _pattern_posteriors(
    obs: torch.Tensor, W: torch.Tensor, psi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_shared_posterior` for every pattern of observed coordinates of the rows
    ``obs`` (n, d): the pattern of each row (n,), and per pattern βᵀ (p, d, q) (zero at its
    missing coordinates), M⁻¹ (p, q, q) and log det M (p,), M = I + W_oᵀ Ψ_o⁻¹ W_o. From
    the SVD of Ψ_o^-½ W_o as on complete data: a Cholesky factor of M, formed and rounded by
    ~eps of its largest entry, failed ("not positive-definite") once the loadings lay along
    each other far above the noise (float32, rows on a line). One SVD a pattern, not a row:
    rows with gaps share few patterns."""
    which, patterns = _patterns(obs)  # (n,), (p, d)
    root = psi.sqrt().unsqueeze(1)  # (d, 1)
    A = patterns.to(W.dtype).unsqueeze(2) * (W / root)  # (p, d, q): Ψ_o^-½ W_o
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)  # (p, d, q), (p, q), (p, q, q)
    grow = 1 + S.square()  # (p, q): the eigenvalues of M
    beta_t = ((U / root) * (S / grow).unsqueeze(1)) @ Vh  # (p, d, q)
    cov = (Vh.mT / grow.unsqueeze(1)) @ Vh  # (p, q, q)
    return which, beta_t, cov, torch.log1p(S.square()).sum(1)


def _patterns(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of the boolean ``obs`` (n, d): the index of each row's (n,) and the
    patterns (p, d). Each 62 columns are read as the bits of one integer and the words
    combined one at a time (indices below n, so the combined key stays below n²):
    ``torch.unique(dim=0)`` took 38 ms for 20,000 x 10, the bits under 1."""
    n, d = obs.shape
    which = torch.zeros(n, dtype=torch.int64, device=obs.device)
    for j in range(0, d, 62):
        bits = obs[:, j : j + 62].to(torch.int64)  # (n, <= 62)
        shift = torch.arange(bits.shape[1], device=obs.device)
        words, word = torch.unique((bits << shift).sum(1), return_inverse=True)
        _, which = torch.unique(which * len(words) + word, return_inverse=True)
    first = torch.full((int(which.max()) + 1 if n else 0,), n, device=obs.device)
    first = first.scatter_reduce(0, which, torch.arange(n, device=obs.device), "amin")
    return which, obs[first]


def _rows_times(R: torch.Tensor, beta_t: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """R[i] @ beta_t[which[i]] for every row (n, q), in blocks of rows so that the gathered
    (rows, d, q) matrices stay near 2^22 numbers."""
    n, d = R.shape
    q = beta_t.shape[2]
    block = max(1, (1 << 22) // max(1, d * q))
    parts = [
        torch.einsum("nd,ndq->nq", R[i : i + block], beta_t[which[i : i + block]])
        for i in range(0, n, block)
    ]
    return torch.cat(parts) if parts else R.new_zeros(0, q)


def positive_weight_rows(X: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows (n', d) of X of positive weight, and their weights (n',). A row of weight 0
    adds nothing to the statistics, but its terms can be infinite (Ψ at the noise floor of
    data whose weighted rows are all alike, and the row far from them): 0 · inf is NaN."""
    keep = w > 0
    return (X, w) if bool(keep.all()) else (X[keep], w[keep])


def complete_row_stats(
    E: torch.Tensor, Ez: torch.Tensor, w: torch.Tensor, C: torch.Tensor, W: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The statistics of :func:`factor_estep_stats` of complete rows from their residuals
    ``E`` (n, d) = x − μ − W E[z] about the current loadings ``W`` (d, q), posterior means
    ``Ez`` (n, q), weights ``w`` (n,) and ``C`` (q, q) = Σ w Cov[z]: with u = x − μ − W z,
    E[u] = E, E[u zᵀ] = E E[z]ᵀ − W Cov[z] and E[u²] = E² + diag(W Cov[z] Wᵀ)."""
    wE = w.unsqueeze(1) * E  # (n, d)
    wEz = w.unsqueeze(1) * Ez  # (n, q)
    WC = W @ C  # (d, q)
    return {
        "Sw": w.sum(),
        "Se": wE.sum(0),
        "See": (wE * E).sum(0) + (WC * W).sum(1),
        "Sez": wE.T @ Ez - WC,
        "Sz": wEz.sum(0),
        "Szz": C + Ez.T @ wEz,
    }


def factor_estep_stats(
    X: torch.Tensor, w: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Expected sufficient statistics of one chunk (additive), taken around the current
    prediction μ + W z: with the residual u = x − μ − W z,

    ``Sw`` = Σ w, ``Se`` (d,) = Σ w E[u], ``See`` (d,) = Σ w E[u²], ``Sez`` (d, q) =
    Σ w E[u zᵀ], ``Sz`` (q,) = Σ w E[z], ``Szz`` (q, q) = Σ w E[z zᵀ], ``loglik`` =
    Σ w log p(x_o). A missing coordinate's residual is its noise ε_m, independent of x_o and
    z: E[u_m] = 0, E[u_m z] = 0, E[u_m²] = ψ_m (Ghahramani & Hinton 1996).

    Around μ + W z rather than μ: the M-step's Ψ is then a difference of numbers of the
    residuals' size, where Σ w (x − μ)² minus the part the factors explain cancelled two
    numbers of the largest column variance's size, and lost the noise to their rounding.
    """
    X, w = positive_weight_rows(X, w)
    post, E = _posterior_and_residual(X, W, mu, psi)
    Ez = post.mean  # (n, q)
    if post.cov.dim() == 2:  # complete data: one posterior covariance for every row
        stats = complete_row_stats(E, Ez, w, w.sum() * post.cov, W)
    else:
        O = (~torch.isnan(X)).to(X.dtype)  # (n, d)
        wE = w.unsqueeze(1) * E  # (n, d), zero at missing coordinates
        wEz = w.unsqueeze(1) * Ez  # (n, q)
        T = torch.einsum("nd,nqr->dqr", w.unsqueeze(1) * O, post.cov)  # (d, q, q)
        WT = torch.einsum("dqr,dr->dq", T, W)  # (d, q): Σ_n w O_nd (W Cov_n)_d
        stats = {
            "Sw": w.sum(),
            "Se": wE.sum(0),
            "See": (wE * E).sum(0) + (WT * W).sum(1) + psi * (w @ (1 - O)),
            "Sez": wE.T @ Ez - WT,
            "Sz": wEz.sum(0),
            "Szz": torch.einsum("n,nqr->qr", w, post.cov) + Ez.T @ wEz,
        }
    stats["loglik"] = (w * post.loglik).sum()
    return stats


def recenter_factor_stats(
    stats: dict[str, torch.Tensor], delta: torch.Tensor, D: torch.Tensor
) -> dict:
    """Statistics taken around μ + W z re-expressed around μ' + W' z, with δ = μ − μ' and
    D = W − W' (u' = u + δ + D z):

    Se' = Se + Sw δ + D Sz;  Sez' = Sez + δ Szᵀ + D Szz;  See' = See + 2 δ ⊙ Se
    + 2 diag(D Sezᵀ) + Sw δ² + 2 δ ⊙ D Sz + diag(D Szz Dᵀ); Sw, Sz, Szz and the log-likelihood
    unchanged. Stepwise EM needs it to average statistics taken under different parameters
    (:mod:`latentfit.em.online`).
    """
    out = dict(stats)
    Sw, Se, Sez, Sz, Szz = (stats[k] for k in ("Sw", "Se", "Sez", "Sz", "Szz"))
    DSz = D @ Sz  # (d,)
    out["Se"] = Se + Sw * delta + DSz  # (d,)
    out["Sez"] = Sez + torch.outer(delta, Sz) + D @ Szz  # (d, q)
    out["See"] = (
        stats["See"]
        + 2 * delta * Se
        + 2 * (D * Sez).sum(1)
        + Sw * delta.square()
        + 2 * delta * DSz
        + ((D @ Szz) * D).sum(1)
    )  # (d,)
    return out


def factor_mstep(
    stats: dict[str, torch.Tensor],
    W: torch.Tensor,
    mu: torch.Tensor,
    isotropic: bool,
    min_noise: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regress every coordinate on [z, 1] with the expected moments: returns W (d, q),
    μ (d,), Ψ (d,) (a constant vector σ² when ``isotropic``), Ψ clamped at ``min_noise``
    (the floor of each column, (d,), constant when ``isotropic``).

    The statistics are those of the residual u = x − μ − W z about the current ``W`` and
    ``mu`` (:func:`factor_estep_stats`): regressing u on [z, 1] gives the moves W' − W and
    μ' − μ, and Ψ is the expected residual variance See − (moves)·[Sez, Se], whose second
    term is of second order in the moves and vanishes at a fixed point (Bishop 2006
    eq. 12.57 with x − μ − W' E[z] in place of its expanded square)."""
    q = stats["Szz"].shape[0]
    A = torch.empty(q + 1, q + 1, dtype=mu.dtype, device=mu.device)
    A[:q, :q] = stats["Szz"]
    A[:q, q] = A[q, :q] = stats["Sz"]
    A[q, q] = stats["Sw"]
    Bm = torch.cat([stats["Sez"], stats["Se"].unsqueeze(1)], 1)  # (d, q + 1)
    sol = torch.linalg.solve(A, Bm.T).T  # (d, q + 1) = [W' − W, μ' − μ]
    psi = (stats["See"] - (sol * Bm).sum(1)) / stats["Sw"]  # (d,)
    if isotropic:
        psi = psi.mean().expand_as(psi).clone()
    return W + sol[:, :q], mu + sol[:, q], psi.clamp_min(min_noise)


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

    Taken, as :func:`factor_estep_stats`, around the current prediction W z: with
    P = I − W β the residual's moments are P C βᵀ − W M⁻¹ (with z) and
    diag(P C Pᵀ + W M⁻¹ Wᵀ), so Ψ' is a sum of residual-sized terms, where
    diag(C − W' β C) cancelled numbers of the largest column variance's size.

    The E-step statistics of complete rows are linear in their moments, so this is the same
    iteration as :func:`factor_mstep` after :func:`factor_estep_stats` on those rows when μ is
    their mean; it costs O(d² q) whatever the number of rows.
    """
    beta_t, Minv, _ = _shared_posterior(W, psi)  # (d, q): βᵀ; (q, q)
    CB = C @ beta_t  # (d, q): the expected Σ (x − μ) E[z]ᵀ per unit weight
    Ezz = Minv + beta_t.T @ CB  # (q, q): the expected Σ E[z zᵀ] per unit weight
    P = torch.eye(W.shape[0], dtype=W.dtype, device=W.device) - W @ beta_t.T  # (d, d)
    PC = C - W @ CB.T  # (d, d): P C, as β C = (C βᵀ)ᵀ
    WM = W @ Minv  # (d, q)
    Sez = PC @ beta_t - WM  # (d, q): E[u zᵀ] per unit weight, u = x − μ − W z
    See = (PC * P).sum(1) + (WM * W).sum(1)  # (d,): E[u²] per unit weight
    dW = torch.linalg.solve(Ezz, Sez.T).T  # (d, q): W' − W
    psi_new = See - (dW * Sez).sum(1)  # (d,)
    if isotropic:
        psi_new = psi_new.mean().expand_as(psi_new).clone()
    return W + dW, psi_new.clamp_min(min_noise)


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


def whitened_loadings(W: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """The singular values (q,) of Ψ^-½ W, descending: how far each factor rises above the
    noise (s² = λ/ψ − 1 for PPCA's factor of the covariance's eigenvalue λ; M = I + Wᵀ Ψ⁻¹ W
    has the eigenvalues 1 + s²)."""
    return torch.linalg.svdvals(W / psi.sqrt().unsqueeze(1))


def with_weak_factors_at(W: torch.Tensor, psi: torch.Tensor, size: float) -> torch.Tensor:
    """The loadings W (d, q) with every singular value of Ψ^-½ W below ``size`` set to it,
    their directions and the other factors kept."""
    root = psi.sqrt().unsqueeze(1)  # (d, 1)
    U, S, Vh = torch.linalg.svd(W / root, full_matrices=False)  # (d, q), (q,), (q, q)
    return root * ((U * S.clamp_min(size)) @ Vh)
