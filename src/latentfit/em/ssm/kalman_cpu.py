"""The Kalman filter and RTS smoother of :mod:`latentfit.em.ssm.kalman` as one compiled CPU
kernel (numba): the same equations, masked missing coordinates and Joseph update, step by
step without torch's per-operation overhead (a step of a 4-state, 8-observation model is a few
hundred nanoseconds of arithmetic and ten microseconds of torch dispatch).

Steady-state shortcut, exact to rounding. On a stretch of fully observed steps the covariance
recursion does not depend on the data: the filter's covariances, gain and innovation factor at
step t are a function of the predicted covariance P⁻_t alone. The Riccati recursion converges
geometrically to a fixed point, and in floating point ends up wandering within a few rounding
units of it (an exact repeat, or a cycle, or no repeat at all, depending on the last bits).
When P⁻_t is within ``ulps`` rounding units (of its largest entry) of P⁻ at one of the last
``memo`` fully observed steps, the kernel reuses that step's covariances, gain and factor
instead of recomputing them; only the means (a few dozen flops) are updated. The smoother does
the same backward for its gain J_t and the smoothed covariances. The difference from the
step-by-step recursion is the size of that recursion's own rounding noise (tested to 1e-12
relative), and with ``ulps=0`` the shortcut takes bit-identical repeats only and the output
equals the step-by-step one bit for bit (tested). A step with a missing value is computed in
full, and the recursion then settles again.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentfit._compiled import jit
from latentfit._kernel_ops import maximum, minimum
from latentfit.em.ssm.kalman import FilterResult, SmootherResult, SSMParams

__all__ = ["filter_smooth_cpu"]

MEMO = 4  # how many earlier steps the steady-state shortcut compares with
ULPS = 4.0  # how close (rounding units of the largest entry) counts as the same covariance


@jit
def _cholesky(S, L):
    """Lower Cholesky factor of S into L; False if S is not positive definite."""
    n = S.shape[0]
    for i in range(n):
        for j in range(i + 1):
            s = S[i, j]
            for q in range(j):
                s -= L[i, q] * L[j, q]
            if i == j:
                if not s > 0.0:
                    return False
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
        for j in range(i + 1, n):
            L[i, j] = 0.0
    return True


@jit
def _chol_solve(L, B, X):
    """X = (L Lᵀ)⁻¹ B for B (n, m)."""
    n, m = B.shape
    for c in range(m):
        for i in range(n):
            s = B[i, c]
            for q in range(i):
                s -= L[i, q] * X[q, c]
            X[i, c] = s / L[i, i]
        for i in range(n - 1, -1, -1):
            s = X[i, c]
            for q in range(i + 1, n):
                s -= L[q, i] * X[q, c]
            X[i, c] = s / L[i, i]


@jit
def _matmul(A, B, out):
    """out = A B; A Bᵀ is ``_matmul(A, B.T, out)`` (a view, compiled for its layout)."""
    n, m = A.shape
    p = B.shape[1]
    for i in range(n):
        for j in range(p):
            s = 0.0
            for q in range(m):
                s += A[i, q] * B[q, j]
            out[i, j] = s


@jit
def _symmetrize(P):
    n = P.shape[0]
    for i in range(n):
        for j in range(i):
            v = 0.5 * (P[i, j] + P[j, i])
            P[i, j] = v
            P[j, i] = v


@jit
def _close(X, Y, ulps, eps):
    """Every entry of the covariance X within ``ulps`` rounding units of max|X| of Y's (ulps =
    0: equal). The largest entry of a covariance is on its diagonal (|X_ij|² ≤ X_ii X_jj)."""
    top = 0.0
    for i in range(X.shape[0]):
        top = maximum(top, abs(X[i, i]))
    tol = ulps * eps * top
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            if not abs(X[i, j] - Y[i, j]) <= tol:
                return False
    return True


@jit
def _filter_kernel(A, C, Q, R, off, mu0, V0, Y, starts, lens, mp, Pp, mf, Pf, ll, memo, ulps):
    """Forward pass over every sequence, filling the predicted/filtered moments and the step
    log-likelihoods; returns -1, or the first row whose innovation covariance is not positive
    definite."""
    k = A.shape[0]
    dim = C.shape[0]
    dt = A.dtype
    eps = np.finfo(dt).eps
    log2pi = math.log(2.0 * math.pi)
    Cm = np.empty((dim, k), dt)
    Rm = np.empty((dim, dim), dt)
    CP = np.empty((dim, k), dt)
    S = np.empty((dim, dim), dt)
    IKC = np.empty((k, k), dt)
    T1 = np.empty((k, k), dt)
    KR = np.empty((k, dim), dt)
    AP = np.empty((k, k), dt)
    e = np.empty(dim, dt)
    z = np.empty(dim, dt)
    obs = np.empty(dim, np.bool_)
    # the gain, innovation factor and its log-determinant of the last MEMO steps: a pool of
    # MEMO + 1 entries, and for each of the last MEMO steps the entry it uses (a step that
    # repeats an earlier one points to its entry instead of copying it)
    Kts = np.empty((MEMO + 1, dim, k), dt)
    Ls = np.empty((MEMO + 1, dim, dim), dt)
    logdets = np.empty(MEMO + 1, dt)
    ref = np.zeros(MEMO, np.int64)
    fulls = np.zeros(MEMO, np.bool_)
    for s in range(starts.shape[0]):
        a, n = starts[s], lens[s]
        for i in range(k):
            mp[a, i] = mu0[i]
            for j in range(k):
                Pp[a, i, j] = V0[i, j]
        fulls[:] = False
        for t in range(a, a + n):
            n_obs = 0
            for r in range(dim):
                obs[r] = not math.isnan(Y[t, r])
                n_obs += obs[r]
            full = n_obs == dim
            slot = t % MEMO
            # a fully observed step whose predicted covariance equals, bit for bit, that of one
            # of the last MEMO fully observed steps computes that step's covariances exactly
            # (see the module doc): copy them
            same = -1
            if full:
                for lag in range(1, minimum(memo, t - a) + 1):
                    if fulls[(t - lag) % MEMO] and _close(Pp[t], Pp[t - lag], ulps, eps):
                        same = t - lag
                        break
            if same >= 0:
                ref[slot] = ref[same % MEMO]
                for i in range(k):
                    for j in range(k):
                        Pf[t, i, j] = Pf[same, i, j]
            else:
                # a pool entry that none of the other steps in the window uses
                entry = 0
                for cand in range(MEMO + 1):
                    used = False
                    for lag in range(1, minimum(MEMO - 1, t - a) + 1):
                        if ref[(t - lag) % MEMO] == cand:
                            used = True
                    if not used:
                        entry = cand
                        break
                ref[slot] = entry
                Kt, L = Kts[entry], Ls[entry]
                for r in range(dim):
                    for c in range(k):
                        Cm[r, c] = C[r, c] if obs[r] else 0.0
                    for c in range(dim):
                        if obs[r] and obs[c]:
                            Rm[r, c] = R[r, c]
                        else:
                            Rm[r, c] = 1.0 if r == c else 0.0
                _matmul(Cm, Pp[t], CP)
                _matmul(CP, Cm.T, S)
                for r in range(dim):
                    for c in range(dim):
                        S[r, c] += Rm[r, c]
                _symmetrize(S)
                if not _cholesky(S, L):
                    return t
                _chol_solve(L, CP, Kt)  # S⁻¹ C P = Kᵀ
                # Joseph: (I − K C) P (I − K C)ᵀ + K R Kᵀ
                _matmul(Kt.T, Cm, IKC)  # K C
                for i in range(k):
                    for j in range(k):
                        IKC[i, j] = (1.0 if i == j else 0.0) - IKC[i, j]
                _matmul(IKC, Pp[t], T1)
                _matmul(T1, IKC.T, Pf[t])
                _matmul(Kt.T, Rm, KR)
                _matmul(KR, Kt, T1)  # K R Kᵀ
                for i in range(k):
                    for j in range(k):
                        Pf[t, i, j] += T1[i, j]
                _symmetrize(Pf[t])
                ld = 0.0
                for r in range(dim):
                    ld += 2.0 * math.log(L[r, r])
                logdets[entry] = ld
            fulls[slot] = full
            Kt, L, logdet = Kts[ref[slot]], Ls[ref[slot]], logdets[ref[slot]]
            # the means: innovation, update, likelihood term
            for r in range(dim):
                if obs[r]:
                    v = Y[t, r] - off[r]
                    for c in range(k):
                        v -= C[r, c] * mp[t, c]
                    e[r] = v
                else:
                    e[r] = 0.0
            for i in range(k):
                v = mp[t, i]
                for r in range(dim):
                    v += Kt[r, i] * e[r]
                mf[t, i] = v
            quad = 0.0
            for r in range(dim):
                v = e[r]
                for q in range(r):
                    v -= L[r, q] * z[q]
                z[r] = v / L[r, r]
                quad += z[r] * z[r]
            ll[t] = -0.5 * (n_obs * log2pi + logdet + quad)
            if t + 1 < a + n:
                for i in range(k):
                    v = 0.0
                    for j in range(k):
                        v += A[i, j] * mf[t, j]
                    mp[t + 1, i] = v
                if same >= 0:
                    for i in range(k):
                        for j in range(k):
                            Pp[t + 1, i, j] = Pp[same + 1, i, j]
                else:
                    _matmul(A, Pf[t], AP)
                    _matmul(AP, A.T, Pp[t + 1])
                    for i in range(k):
                        for j in range(k):
                            Pp[t + 1, i, j] += Q[i, j]
                    _symmetrize(Pp[t + 1])
    return -1


@jit
def _smoother_kernel(A, starts, lens, mp, Pp, mf, Pf, ms, Vs, cross, memo, ulps):
    """Backward RTS pass; returns -1, or the first row whose predicted covariance is not
    positive definite."""
    k = A.shape[0]
    dt = A.dtype
    eps = np.finfo(dt).eps
    Lp = np.empty((k, k), dt)
    APf = np.empty((k, k), dt)
    D = np.empty((k, k), dt)
    T1 = np.empty((k, k), dt)
    dm = np.empty(k, dt)
    Jts = np.empty((MEMO, k, k), dt)  # Jᵀ of the last MEMO steps
    for s in range(starts.shape[0]):
        a, n = starts[s], lens[s]
        last = a + n - 1
        for i in range(k):
            ms[last, i] = mf[last, i]
            for j in range(k):
                Vs[last, i, j] = Pf[last, i, j]
                cross[a, i, j] = 0.0
        for t in range(last - 1, a - 1, -1):
            slot = t % MEMO
            # J_t is a function of (P_t, P⁻_{t+1}); V_t of those and V_{t+1}: the same inputs
            # bit for bit as a step up to MEMO later give that step's outputs (module doc)
            same = -1
            for lag in range(1, minimum(memo, last - 1 - t) + 1):
                if _close(Pf[t], Pf[t + lag], ulps, eps) and _close(
                    Pp[t + 1], Pp[t + lag + 1], ulps, eps
                ):
                    same = t + lag
                    break
            if same >= 0:
                src = same % MEMO
                if src != slot:
                    for i in range(k):  # element by element: see latentfit._kernel_ops
                        for j in range(k):
                            Jts[slot, i, j] = Jts[src, i, j]
            else:  # Jᵀ = P⁻_{t+1}⁻¹ A P_t
                if not _cholesky(Pp[t + 1], Lp):
                    return t + 1
                _matmul(A, Pf[t], APf)
                _chol_solve(Lp, APf, Jts[slot])
            Jt = Jts[slot]
            for i in range(k):
                dm[i] = ms[t + 1, i] - mp[t + 1, i]
            for i in range(k):
                v = mf[t, i]
                for j in range(k):
                    v += Jt[j, i] * dm[j]
                ms[t, i] = v
            if same >= 0 and _close(Vs[t + 1], Vs[same + 1], ulps, eps):
                for i in range(k):
                    for j in range(k):
                        Vs[t, i, j] = Vs[same, i, j]
                        cross[t + 1, i, j] = cross[same + 1, i, j]
                continue
            for i in range(k):
                for j in range(k):
                    D[i, j] = Vs[t + 1, i, j] - Pp[t + 1, i, j]
            # V_t = P_t + J D Jᵀ, J = Jtᵀ
            _matmul(Jt.T, D, T1)
            for i in range(k):
                for j in range(k):
                    v = Pf[t, i, j]
                    for q in range(k):
                        v += T1[i, q] * Jt[q, j]
                    Vs[t, i, j] = v
            _symmetrize(Vs[t])
            # Cov[x_{t+1}, x_t | y] = V_{t+1} Jᵀ
            _matmul(Vs[t + 1], Jt, cross[t + 1])
    return -1


def filter_smooth_cpu(
    p: SSMParams,
    Y: torch.Tensor,
    lengths: list[int],
    *,
    smooth: bool = True,
    memo: int = MEMO,
    ulps: float = ULPS,
    workspace: dict | None = None,
):
    """Filter (and smooth) CPU tensors with the compiled kernel: ``(FilterResult, SmootherResult
    or None, bad_row)``; ``bad_row`` is -1, or the row where a covariance stopped being
    positive definite (the results are then incomplete). ``memo`` (0 to MEMO) is how many
    earlier steps the steady-state shortcut looks back to (0 computes every step), ``ulps``
    how close a covariance must be to an earlier one to be reused (0: bit-identical).

    ``workspace``: a dict kept by the caller between calls on data of the same shape (EM's
    iterations); the outputs are written into the arrays it holds instead of new ones (a fresh
    (n, k, k) array costs a page fault per 4 KiB, a tenth of the pass at n = 100,000), so the
    previous call's results are overwritten."""
    memo = max(0, min(int(memo), MEMO))
    ws = workspace if workspace is not None else {}

    def empty(name, shape, dt):
        a = ws.get(name)
        if a is None or a.shape != shape or a.dtype != dt:
            a = np.empty(shape, dt)
            if workspace is not None:
                workspace[name] = a
        return a

    arr = [np.ascontiguousarray(x.detach().numpy()) for x in p]
    y = np.ascontiguousarray(Y.detach().numpy())
    n, k = y.shape[0], arr[0].shape[0]
    dt = y.dtype
    lens = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    mp, mf = empty("mp", (n, k), dt), empty("mf", (n, k), dt)
    Pp, Pf = empty("Pp", (n, k, k), dt), empty("Pf", (n, k, k), dt)
    ll = empty("ll", (n,), dt)
    bad = _filter_kernel(*arr, y, starts, lens, mp, Pp, mf, Pf, ll, memo, float(ulps))
    t = torch.from_numpy
    ll_t = t(ll)
    f = FilterResult(ll_t.sum(), ll_t, t(mp), t(Pp), t(mf), t(Pf))
    if bad >= 0 or not smooth:
        return f, None, int(bad)
    ms, Vs = empty("ms", (n, k), dt), empty("Vs", (n, k, k), dt)
    cross = empty("cross", (n, k, k), dt)
    bad = _smoother_kernel(arr[0], starts, lens, mp, Pp, mf, Pf, ms, Vs, cross, memo, float(ulps))
    return f, SmootherResult(f.log_likelihood, t(ms), t(Vs), t(cross)), int(bad)
