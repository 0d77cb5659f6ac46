"""Kalman filter and Rauch-Tung-Striebel smoother of the linear-Gaussian state-space model, in
torch (any device, float32 or float64), batched over sequences.

The model (Shumway & Stoffer 1982; Ghahramani & Hinton 1996)::

    x_1 ~ N(mu0, V0),   x_t = A x_{t-1} + w_t, w_t ~ N(0, Q),
    y_t = C x_t + d + v_t,  v_t ~ N(0, R)

with ``k`` state and ``d`` observed dimensions. A NaN entry of ``y_t`` is missing: the update
of step t uses the observed coordinates only (a whole NaN row is a pure prediction step). The
update is written with masked matrices so that every step has the same shapes: the missing
rows of ``C`` are zero, ``R`` is replaced by its observed block plus the identity on the
missing coordinates, and their innovation is zero. This gives exactly the update on the
observed coordinates (the innovation covariance is block-diagonal, the gain's missing columns
are zero), and the log-likelihood term of the observed coordinates (the identity block adds
log 1 = 0).

The covariance update is Joseph's form ``P = (I − K C) P⁻ (I − K C)ᵀ + K R Kᵀ``, which stays
symmetric positive semi-definite under rounding (Bucy & Joseph 1968).

:mod:`latentfit.em.ssm.kalman_cpu` computes the same quantities with a compiled kernel for
CPU tensors; the two are tested against each other.

Neither function waits on the device inside its loop over steps: the Cholesky factorisations
are ``cholesky_ex``, whose failures are gathered per row and checked once at the end
(:class:`NotPositiveDefinite` names the first row met), and the sequences with a step t are
a leading slice of the sequences sorted by length, found on the host.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit.errors import ParameterError

__all__ = [
    "FilterResult",
    "NotPositiveDefinite",
    "SSMParams",
    "SmootherResult",
    "kalman_filter",
    "rts_smoother",
]


class SSMParams(NamedTuple):
    """The parameters of a linear-Gaussian state-space model (k states, d observations)."""

    A: torch.Tensor  # (k, k) transition matrix
    C: torch.Tensor  # (d, k) observation matrix
    Q: torch.Tensor  # (k, k) transition noise covariance
    R: torch.Tensor  # (d, d) observation noise covariance
    d: torch.Tensor  # (d,) observation offset
    mu0: torch.Tensor  # (k,) mean of the first state
    V0: torch.Tensor  # (k, k) covariance of the first state


class FilterResult(NamedTuple):
    """Output of the Kalman filter, rows in the order of the data (n = total steps)."""

    log_likelihood: torch.Tensor  # () total log p(y) over all sequences
    step_log_likelihoods: torch.Tensor  # (n,) log p(y_t | y_1..y_{t-1}) (0 for a NaN row)
    predicted_means: torch.Tensor  # (n, k) E[x_t | y_1..y_{t-1}]
    predicted_covariances: torch.Tensor  # (n, k, k)
    filtered_means: torch.Tensor  # (n, k) E[x_t | y_1..y_t]
    filtered_covariances: torch.Tensor  # (n, k, k)


class SmootherResult(NamedTuple):
    """Output of the Rauch-Tung-Striebel smoother (n = total steps)."""

    log_likelihood: torch.Tensor  # () total log p(y)
    smoothed_means: torch.Tensor  # (n, k) E[x_t | y_1..y_T]
    smoothed_covariances: torch.Tensor  # (n, k, k) Cov[x_t | y_1..y_T]
    cross_covariances: torch.Tensor  # (n, k, k) Cov[x_t, x_{t-1} | y]; zero at a sequence start


class NotPositiveDefinite(ParameterError):
    """A covariance to factorise was not positive definite; ``row`` is the data row of the
    first step (in the order the filter or smoother met them) where it happened."""

    def __init__(self, row: int):
        super().__init__(f"a covariance is not positive definite at row {row}")
        self.row = row


def _check_factorised(failed: torch.Tensor, step: torch.Tensor, backward: bool) -> None:
    """Raise :class:`NotPositiveDefinite` for the first failed row: ``failed`` (n,) bool per
    row, ``step`` (n,) each row's step in its sequence; the filter meets the steps forward,
    the smoother backward (and, at one step, the rows in order)."""
    if not bool(failed.any()):  # the one wait on the device
        return
    rows = failed.nonzero().squeeze(1)
    t = step[rows]
    first = t.max() if backward else t.min()
    raise NotPositiveDefinite(int(rows[t == first].min()))


def _descending(lengths: list[int], device) -> tuple[list[int], torch.Tensor]:
    """The lengths longest first and the first row of each of those sequences (b,)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    starts = [0]
    for m in lengths[:-1]:
        starts.append(starts[-1] + m)
    return [lengths[i] for i in order], torch.tensor([starts[i] for i in order], device=device)


def _steps(lengths: list[int], device) -> torch.Tensor:
    """Each row's step in its sequence (n,)."""
    return torch.cat([torch.arange(m, device=device) for m in lengths])


def _masked_observation(p: SSMParams, obs: torch.Tensor):
    """``C``, ``R`` and the count of observed coordinates for a batch of observation masks
    (b, d): missing rows of C zero, R's observed block plus the identity on the missing ones."""
    m = obs.to(p.C.dtype)  # (b, d)
    Cm = p.C * m.unsqueeze(-1)  # (b, d, k)
    Rm = p.R * (m.unsqueeze(-1) * m.unsqueeze(-2)) + torch.diag_embed(1 - m)  # (b, d, d)
    return Cm, Rm, m.sum(-1)


def _sym(P: torch.Tensor) -> torch.Tensor:
    return 0.5 * (P + P.transpose(-1, -2))


def kalman_filter(p: SSMParams, Y: torch.Tensor, lengths: list[int]) -> FilterResult:
    """The Kalman filter (Kalman 1960) with Joseph's covariance update, over the sequences of
    ``Y`` (n, d) cut by ``lengths``; NaN entries are missing. All sequences advance together,
    step t of every sequence that has one at once; the moments are written to their rows, so
    memory is that of the n rows, whatever the spread of the lengths (sequences padded to the
    longest would take b x t_max rows: 20,000 single steps beside one of 20,000 steps, 4e8)."""
    n, k = Y.shape[0], p.A.shape[0]
    dt, dev = Y.dtype, Y.device
    eye_k = torch.eye(k, dtype=dt, device=dev)
    log2pi = math.log(2 * math.pi)
    # the sequences longest first, so that those with a step t are a leading slice
    desc, first = _descending(lengths, dev)  # first: (b,) first rows
    failed = torch.zeros(n, dtype=torch.bool, device=dev)
    m_pred_all, m_filt_all = Y.new_empty(n, k), Y.new_empty(n, k)
    P_pred_all, P_filt_all = Y.new_empty(n, k, k), Y.new_empty(n, k, k)
    ll_all = Y.new_empty(n)
    m_pred = p.mu0.expand(len(lengths), k).clone()  # (b, k)
    P_pred = p.V0.expand(len(lengths), k, k).clone()  # (b, k, k)
    n_active = len(lengths)
    for t in range(desc[0]):
        while desc[n_active - 1] <= t:  # the sequences that have ended drop off the end
            n_active -= 1
        rows = first[:n_active] + t  # (a,) rows of step t
        mp, Pp = m_pred[:n_active], P_pred[:n_active]
        y = Y[rows]  # (a, d)
        obs = ~torch.isnan(y)
        Cm, Rm, n_obs = _masked_observation(p, obs)
        e = torch.where(obs, y - mp @ p.C.T - p.d, 0.0)  # (a, d) innovation
        CP = Cm @ Pp  # (a, d, k)
        S = _sym(CP @ Cm.transpose(-1, -2) + Rm)  # (a, d, d)
        L, info = torch.linalg.cholesky_ex(S)
        failed[rows] = info != 0
        Kt = torch.cholesky_solve(CP, L)  # (a, d, k) = S⁻¹ C P, the transposed gain
        K = Kt.transpose(-1, -2)  # (a, k, d)
        m_filt = mp + (K @ e.unsqueeze(-1)).squeeze(-1)
        IKC = eye_k - K @ Cm  # (a, k, k)
        P_filt = _sym(IKC @ Pp @ IKC.transpose(-1, -2) + K @ Rm @ Kt)
        z = torch.linalg.solve_triangular(L, e.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        ll_all[rows] = -0.5 * (n_obs * log2pi + logdet + z.square().sum(-1))
        m_pred_all[rows], P_pred_all[rows] = mp, Pp
        m_filt_all[rows], P_filt_all[rows] = m_filt, P_filt
        m_pred = m_filt @ p.A.T
        P_pred = _sym(p.A @ P_filt @ p.A.T + p.Q)
    _check_factorised(failed, _steps(lengths, dev), backward=False)
    return FilterResult(ll_all.sum(), ll_all, m_pred_all, P_pred_all, m_filt_all, P_filt_all)


def rts_smoother(p: SSMParams, f: FilterResult, lengths: list[int]) -> SmootherResult:
    """The Rauch-Tung-Striebel smoother (Rauch, Tung & Striebel 1965) from the filter's output,
    with the lag-one cross-covariances Cov[x_t, x_{t-1} | y] = V_t J_{t-1}ᵀ (de Jong 1989)
    that EM needs; all sequences go backward together."""
    n, k = f.filtered_means.shape
    dev = f.filtered_means.device
    desc, first = _descending(lengths, dev)  # first: (b,) first rows, longest first
    m_s = f.filtered_means.new_empty(n, k)
    V_s = f.filtered_means.new_empty(n, k, k)
    cross = f.filtered_means.new_zeros(n, k, k)
    failed = torch.zeros(n, dtype=torch.bool, device=dev)
    last = first + torch.tensor(desc, device=dev) - 1
    m_s[last], V_s[last] = f.filtered_means[last], f.filtered_covariances[last]
    n_active = 0  # the sequences with a step t + 1: a leading slice, growing as t falls
    for t in range(desc[0] - 2, -1, -1):
        while n_active < len(desc) and desc[n_active] - 1 > t:
            n_active += 1
        if n_active == 0:
            continue
        i = first[:n_active] + t  # (a,) rows of step t
        P_f, P_next = f.filtered_covariances[i], f.predicted_covariances[i + 1]  # (a, k, k)
        # J = P_f Aᵀ P⁻_{t+1}⁻¹, through the Cholesky factor of the predicted covariance
        Lp, info = torch.linalg.cholesky_ex(P_next)
        failed[i + 1] = info != 0
        J = torch.cholesky_solve(p.A @ P_f, Lp).transpose(-1, -2)  # (a, k, k)
        dm = m_s[i + 1] - f.predicted_means[i + 1]
        m_s[i] = f.filtered_means[i] + (J @ dm.unsqueeze(-1)).squeeze(-1)
        V_s[i] = _sym(P_f + J @ (V_s[i + 1] - P_next) @ J.transpose(-1, -2))
        cross[i + 1] = V_s[i + 1] @ J.transpose(-1, -2)
    _check_factorised(failed, _steps(lengths, dev), backward=True)
    return SmootherResult(f.log_likelihood, m_s, V_s, cross)
