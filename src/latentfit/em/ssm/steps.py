"""EM for the linear-Gaussian state-space model as pure tensor functions: the expected
sufficient statistics of the smoothed states, the closed-form M-step, the log prior of the
optional ridge, and a starting point (Shumway & Stoffer 1982; Ghahramani & Hinton 1996).

Missing observations (NaN entries) enter the statistics through their conditional moments
given the observed coordinates of the same step and the state (Ghahramani & Jordan 1994): with
``O``/``M`` the observed/missing coordinates of step t and ``G = R_MO R_OO⁻¹``,
``y_M = H x_t + h + e`` with ``H = C_M − G C_O``, ``h = d_M + G (y_O − d_O)`` and
``e ~ N(0, R_MM − G R_OM)``, so E[y], E[y xᵀ] and E[y yᵀ] follow from the smoothed moments of
x_t. The M-step is then the complete-data one, exact for any pattern of missing values.

Ridge (``ridge`` = λ > 0): matrix-normal priors A | Q ~ MN(0, Q, I/λ) and C | R ~ MN(0, R, I/λ),
under which the joint updates of (A, Q) and of (C, d, R) stay closed-form (ridge regressions;
the covariances count k prior columns); EM then increases log-likelihood + log prior, and
that is the objective monitored.
"""

from __future__ import annotations

import math

import torch

from latentfit.em.ssm.kalman import SmootherResult, SSMParams

__all__ = ["initial_params", "log_prior", "m_step", "sufficient_statistics"]

LETTERS = {
    "a": "A",
    "c": "C",
    "q": "Q",
    "r": "R",
    "d": "d",
    "m": "mu0",
    "v": "V0",
}


#: Most entries of one (r, d, d) temporary of :func:`_observation_moments` (8 MB in float64):
#: the rows with a NaN are reduced this many d x d blocks at a time, so that the statistics of
#: many incomplete rows cost the memory of a few, not a dozen (r, d, d) arrays at once.
MOMENT_BLOCK = 2**20


def _observation_moments(p: SSMParams, Y, m, V):
    """E[y], E[y xᵀ], E[y yᵀ] summed over steps whose rows of ``Y`` (r, d) have a NaN, given
    the smoothed moments ``m`` (r, k), ``V`` (r, k, k) of their states; in blocks of rows
    (:data:`MOMENT_BLOCK`), the sums being the same."""
    dim = Y.shape[1]
    step = max(1, MOMENT_BLOCK // (dim * dim))
    Ey, Eyx, Eyy = _block_moments(p, Y[:step], m[:step], V[:step])
    for a in range(step, Y.shape[0], step):
        more = _block_moments(p, Y[a : a + step], m[a : a + step], V[a : a + step])
        Ey, Eyx, Eyy = Ey + more[0], Eyx + more[1], Eyy + more[2]
    return Ey, Eyx, Eyy


def _block_moments(p: SSMParams, Y, m, V):
    """:func:`_observation_moments` of one block of rows."""
    obs = ~torch.isnan(Y)  # (r, d)
    o, mis = obs.to(Y.dtype), (~obs).to(Y.dtype)
    oo = o.unsqueeze(-1) * o.unsqueeze(-2)  # (r, d, d)
    R_oo = p.R * oo + torch.diag_embed(mis)  # observed block, identity elsewhere: invertible
    W = torch.linalg.inv(R_oo) * oo  # R_OO⁻¹ embedded, zero elsewhere
    G = (p.R * (mis.unsqueeze(-1) * o.unsqueeze(-2))) @ W  # rows M: R_MO R_OO⁻¹
    y0 = torch.where(obs, Y, 0.0)
    B = mis.unsqueeze(-1) * (p.C - G @ p.C)  # (r, d, k): H on the missing rows
    b = y0 + mis * (p.d - (G @ (p.d - y0).unsqueeze(-1)).squeeze(-1))  # (r, d)
    Sig = (p.R - G @ p.R) * (mis.unsqueeze(-1) * mis.unsqueeze(-2))  # (r, d, d)
    Exx = V + m.unsqueeze(-1) * m.unsqueeze(-2)  # (r, k, k)
    Bm = (B @ m.unsqueeze(-1)).squeeze(-1)  # (r, d)
    Ey = Bm + b
    Eyx = B @ Exx + b.unsqueeze(-1) * m.unsqueeze(-2)
    Eyy = (
        B @ Exx @ B.transpose(-1, -2)
        + Bm.unsqueeze(-1) * b.unsqueeze(-2)
        + b.unsqueeze(-1) * Bm.unsqueeze(-2)
        + b.unsqueeze(-1) * b.unsqueeze(-2)
        + Sig
    )
    return Ey.sum(0), Eyx.sum(0), Eyy.sum(0)


def sufficient_statistics(
    p: SSMParams, Y: torch.Tensor, s: SmootherResult, lengths: list[int]
) -> dict[str, torch.Tensor]:
    """The expected complete-data sufficient statistics of ``Y`` (n, d) (NaN missing) under the
    smoothed posterior ``s``; every entry adds up over sequences and batches."""
    m, V, cross = s.smoothed_means, s.smoothed_covariances, s.cross_covariances
    n = m.shape[0]
    dev = m.device
    lens = torch.tensor(lengths, device=dev)
    last = lens.cumsum(0) - 1  # (b,) rows ending a sequence
    first = last - lens + 1
    xx_all = V.sum(0) + m.T @ m  # (k, k) Σ E[x xᵀ]
    xx_last = V[last].sum(0) + m[last].T @ m[last]
    xx_first = V[first].sum(0) + m[first].T @ m[first]
    # Σ E[x_t x_{t-1}ᵀ] over steps with a predecessor: the cross-covariance of a first step
    # is zero, and the products of consecutive rows across a sequence boundary are taken out
    x1x0 = cross.sum(0) + m[1:].T @ m[:-1]
    later = first[1:]
    if len(later):
        x1x0 = x1x0 - m[later].T @ m[later - 1]
    complete = ~torch.isnan(Y).any(1)
    if bool(complete.all()):  # no copy of the data in the common case
        y, yx, yy = Y.sum(0), Y.T @ m, Y.T @ Y
    else:
        Yc, mc = Y[complete], m[complete]
        y, yx, yy = Yc.sum(0), Yc.T @ mc, Yc.T @ Yc
        part = (~complete).nonzero().squeeze(1)
        Ey, Eyx, Eyy = _observation_moments(p, Y[part], m[part], V[part])
        y, yx, yy = y + Ey, yx + Eyx, yy + Eyy
    count = m.new_tensor
    return {
        "n_steps": count(float(n)),
        "n_sequences": count(float(len(lengths))),
        "x": m.sum(0),
        "xx": xx_all,
        "xx_head": xx_all - xx_last,  # steps with a successor
        "xx_tail": xx_all - xx_first,  # steps with a predecessor
        "x1x0": x1x0,
        "x_first": m[first].sum(0),
        "xx_first": xx_first,
        "y": y,
        "yx": yx,
        "yy": yy,
        "log_likelihood": s.log_likelihood.reshape(1),
    }


def _sym(P):
    return 0.5 * (P + P.T)


def m_step(
    p: SSMParams,
    st: dict[str, torch.Tensor],
    fit: str,
    *,
    diagonal_R: bool = False,
    ridge: float = 0.0,
    min_covar: float = 0.0,
) -> SSMParams:
    """Maximise the expected complete-data log-likelihood (plus log prior when ``ridge`` > 0)
    over the parameters whose letters are in ``fit`` (a: A, c: C, q: Q, r: R, d: d, m: mu0,
    v: V0), the others held; ``min_covar`` is added to the diagonal of every re-estimated
    covariance (a floor that keeps them positive definite)."""
    A, C, Q, R, d, mu0, V0 = p
    k, dim = A.shape[0], C.shape[0]
    eye_k = torch.eye(k, dtype=A.dtype, device=A.device)
    N, n_seq = st["n_steps"], st["n_sequences"]
    prior_cols = k if ridge > 0 else 0
    # transitions: A = S10 (S00 + λI)⁻¹, Q = (S11 − A S10ᵀ − S10 Aᵀ + A (S00 + λI) Aᵀ) / (N − b + k)
    S00 = st["xx_head"] + ridge * eye_k
    if "a" in fit and float(N - n_seq) > 0:
        A = torch.linalg.solve(S00, st["x1x0"].T).T
    n_trans = float(N - n_seq) + prior_cols
    if "q" in fit and n_trans > 0:
        AS10 = A @ st["x1x0"].T
        Q = _sym(st["xx_tail"] - AS10 - AS10.T + A @ S00 @ A.T) / n_trans
        Q = Q + min_covar * eye_k
    # observations: [C d] by (ridge) regression of E[y] on [x, 1]
    if "c" in fit and "d" in fit:
        Suu = torch.cat(
            [
                torch.cat([st["xx"] + ridge * eye_k, st["x"].unsqueeze(1)], 1),
                torch.cat([st["x"], N.reshape(1)]).unsqueeze(0),
            ]
        )  # (k + 1, k + 1)
        Syu = torch.cat([st["yx"], st["y"].unsqueeze(1)], 1)  # (d, k + 1)
        Ct = torch.linalg.solve(Suu, Syu.T).T
        C, d = Ct[:, :k], Ct[:, k]
    elif "c" in fit:
        C = torch.linalg.solve(st["xx"] + ridge * eye_k, (st["yx"] - d.unsqueeze(1) * st["x"]).T).T
    elif "d" in fit:
        d = (st["y"] - C @ st["x"]) / N
    if "r" in fit:
        # Σ E[(y − C x − d)(y − C x − d)ᵀ] + λ C Cᵀ
        yxC = st["yx"] @ C.T  # Σ E[y xᵀ] Cᵀ
        yd = st["y"].unsqueeze(1) * d.unsqueeze(0)  # Σ E[y] dᵀ
        Cxd = (C @ st["x"]).unsqueeze(1) * d.unsqueeze(0)  # C Σ E[x] dᵀ
        resid = (
            st["yy"]
            - yxC
            - yxC.T
            - yd
            - yd.T
            + C @ (st["xx"] + ridge * eye_k) @ C.T
            + Cxd
            + Cxd.T
            + N * d.unsqueeze(1) * d.unsqueeze(0)
        )
        R = _sym(resid) / (float(N) + prior_cols)
        if diagonal_R:
            R = torch.diag(torch.diagonal(R))
        R = R + min_covar * torch.eye(dim, dtype=R.dtype, device=R.device)
    if "m" in fit:
        mu0 = st["x_first"] / n_seq
    if "v" in fit:
        xm = st["x_first"].unsqueeze(1) * mu0.unsqueeze(0)
        V0 = _sym(st["xx_first"] - xm - xm.T) / n_seq + mu0.unsqueeze(1) * mu0.unsqueeze(0)
        V0 = V0 + min_covar * eye_k
    return SSMParams(A, C, Q, R, d, mu0, V0)


def _matrix_normal_logpdf(M: torch.Tensor, U: torch.Tensor, ridge: float) -> torch.Tensor:
    """log MN(M; 0, U, I/λ) for M (r, k): −λ/2 tr(Mᵀ U⁻¹ M) − r k/2 log 2π − k/2 log|U| +
    r k/2 log λ."""
    r, k = M.shape
    L = torch.linalg.cholesky(U)
    Z = torch.linalg.solve_triangular(L, M, upper=False)
    logdet = 2 * torch.log(torch.diagonal(L)).sum()
    return (
        -0.5 * ridge * Z.square().sum()
        - 0.5 * r * k * math.log(2 * math.pi)
        - 0.5 * k * logdet
        + 0.5 * r * k * math.log(ridge)
    )


def log_prior(p: SSMParams, ridge: float, fit: str) -> float:
    """The ridge's log prior density of the fitted A and C (0 without a ridge)."""
    if ridge <= 0:
        return 0.0
    out = 0.0
    if "a" in fit or "q" in fit:
        out += float(_matrix_normal_logpdf(p.A, p.Q, ridge))
    if "c" in fit or "r" in fit:
        out += float(_matrix_normal_logpdf(p.C, p.R, ridge))
    return out


def initial_params(
    Y: torch.Tensor,
    lengths: list[int],
    k: int,
    generator: torch.Generator,
    *,
    diagonal_R: bool = False,
    min_covar: float = 1e-6,
) -> SSMParams:
    """A starting point from complete data ``Y`` (n, d) (missing entries imputed before):
    probabilistic PCA for C, d and R (Tipping & Bishop 1999), its posterior state means
    regressed on their predecessors for A and Q, their moments for mu0 and V0. The
    generator jitters C so that restarts differ."""
    n, dim = Y.shape
    dt, dev = Y.dtype, Y.device
    eye_k = torch.eye(k, dtype=dt, device=dev)
    d = Y.mean(0)
    Yc = Y - d  # (n, d)
    cov = _sym(Yc.T @ Yc) / max(n, 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    scale = float(evals.mean()) if float(evals.mean()) > 0 else 1.0
    q = min(k, dim)
    noise = float(evals[q:].mean()) if dim > q else 0.0
    noise = max(noise, 1e-3 * scale) + min_covar
    C = torch.zeros(dim, k, dtype=dt, device=dev)
    C[:, :q] = evecs[:, :q] * (evals[:q] - noise).clamp_min(1e-3 * scale).sqrt()
    jitter = torch.randn(dim, k, generator=generator, dtype=torch.float64, device=generator.device)
    C = C + 0.1 * math.sqrt(scale) * jitter.to(device=dev, dtype=dt)
    R = noise * torch.eye(dim, dtype=dt, device=dev)
    # posterior means of the states under that factor model: (Cᵀ C + σ² I)⁻¹ Cᵀ (y − d)
    X = torch.linalg.solve(C.T @ C + noise * eye_k, C.T @ Yc.T).T  # (n, k)
    lens = torch.tensor(lengths, device=dev)
    first = lens.cumsum(0) - lens
    has_prev = torch.ones(n, dtype=torch.bool, device=dev)
    has_prev[first] = False
    now = has_prev.nonzero().squeeze(1)
    x_scale = float((X.square().sum() / max(n, 1)).clamp_min(1e-12)) / k
    if len(now) > 0:
        X1, X0 = X[now], X[now - 1]
        A = torch.linalg.solve(X0.T @ X0 + 1e-6 * x_scale * eye_k, X0.T @ X1).T
        radius = float(torch.linalg.eigvals(A).abs().max())
        if radius > 0.99:  # start from a stable system
            A = A * (0.99 / radius)
        E = X1 - X0 @ A.T
        Q = _sym(E.T @ E) / len(now)
    else:
        A, Q = 0.9 * eye_k, x_scale * eye_k
    Q = Q + (1e-3 * x_scale + min_covar) * eye_k
    mu0 = X[first].mean(0)
    Xc = X - X.mean(0)
    V0 = _sym(Xc.T @ Xc) / max(n, 1) + (1e-3 * x_scale + min_covar) * eye_k
    if not diagonal_R:
        R = R.clone()
    return SSMParams(A, C, Q, R, d, mu0, V0)
