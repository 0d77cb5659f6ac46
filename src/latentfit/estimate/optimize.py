"""Minimise a smooth objective of an unconstrained vector: L-BFGS, then Newton polishing.

The objective knows nothing about the optimiser (it maps ``u`` (p,) to a scalar tensor). L-BFGS
with a strong-Wolfe line search (Nocedal & Wright, *Numerical Optimization*, Alg. 7.5 and 3.5)
gets close; a few Newton steps with the exact autograd Hessian (pseudo-inverted, so that flat
directions take no step) then take the gradient to rounding level, so that an optimised fit agrees with a closed form to ~1e-10.

Convergence is judged on the gradient made free of units (:func:`relative_gradient`), not on
max |gradient|, whose size follows the units of the data and of each parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.autograd.functional import hessian

from latentfit.estimate.inference import equilibrated_eigh

__all__ = ["OptimizeResult", "minimize", "minimize_l1", "relative_gradient"]


class OptimizeResult(NamedTuple):
    u: torch.Tensor  # (p,) the minimiser
    value: float
    grad_norm: float  # max |∂f/∂u| at u
    n_iter: int
    converged: bool
    rel_grad: float  # relative_gradient at u (converged: < gtol, or the step at rounding)


def relative_gradient(g: torch.Tensor, curvature: torch.Tensor, size: float) -> float:
    """``max_j |g_j| / sqrt(|H_jj| · F)``: the gradient ``g`` (p,) of an objective of size
    ``F`` (the magnitude of its terms) whose Hessian has diagonal ``curvature`` (p,), in units
    free of both the objective's and each coordinate's.

    ``g_j / sqrt(|H_jj|)`` is the gradient with ``u_j`` rescaled to unit curvature (a Newton
    step along ``u_j`` lowers the objective by about ``g_j² / (2 H_jj)``), so a value ``r``
    means no single coordinate can lower the objective by more than about ``r² F / 2``: the
    relative-function-value test of Nocedal & Wright §3.5 in gradient form (MATLAB's
    ``fminunc`` likewise judges a relative first-order optimality). max |g| is not: least
    squares with y in units of 1e5 has a gradient 1e10 larger, whose rounding floor (1e-9)
    stayed above an absolute 1e-8, and a location in units of 1e8 has a gradient 1e16
    smaller, so a point 1.5 sd off looked stationary. inf when not finite."""
    if not g.numel():
        return 0.0
    # the square roots apart: a curvature of 1e296 times a size of 1e262 overflows to inf,
    # which made any gradient look stationary
    denom = (curvature.abs().sqrt() * abs(size) ** 0.5).clamp_min(torch.finfo(g.dtype).tiny)
    # an infinite curvature is an overflow (1 / rate² for a rate of 1e-200), not a coordinate
    # so curved that its gradient is nothing: it is not judged stationary
    denom = torch.where(torch.isinf(curvature), torch.nan, denom)
    out = float((g.abs() / denom).max())
    return out if out == out else float("inf")  # NaN (a non-finite Hessian): not judged stationary


def _unit_curvature(curvature: torch.Tensor, size: float) -> torch.Tensor:
    """Each coordinate's length in units of unit curvature of the objective over its size
    ``F``: ``1 / sqrt(|H_jj| / F)`` (p,), 1 where there is no curvature or it (or ``F``) is
    not finite. A step of ``unit_j`` along ``u_j`` changes the objective by about ``F / 2``,
    so distances divided by it mean the same whatever the units of ``u_j`` and of the data."""
    size = abs(size) if 0 < abs(size) < float("inf") else 1.0
    curv = curvature.abs() / size  # (p,)
    curved = torch.isfinite(curv) & (curv > 0)
    tiny = torch.finfo(curvature.dtype).tiny
    return torch.where(curved, curv.clamp_min(tiny).rsqrt(), torch.ones_like(curv))


def _attainable(gtol: float, dtype: torch.dtype) -> float:
    """``gtol``, or the smallest relative gradient the dtype resolves where that is larger: a
    value ``r`` bounds the objective's possible descent by ``r² F / 2``, and the objective
    itself is known to ~eps F, so below r = sqrt(2 eps) the gradient is rounding (4.9e-4 in
    float32: a float32 Normal fit stopped at 7e-8 and warned "did not converge"; float64's
    2.1e-8 is at the default gtol, which it keeps)."""
    if dtype == torch.float64:
        return gtol
    return max(gtol, (2 * torch.finfo(dtype).eps) ** 0.5)


def _stationary(
    g: torch.Tensor, curvature: torch.Tensor, size: float, u: torch.Tensor, gtol: float
) -> bool:
    """Whether ``u`` (p,) is stationary: along every coordinate, either the relative gradient
    ``|g_j| / sqrt(|H_jj| F)`` is below ``gtol`` (:func:`relative_gradient`), or the Newton
    step ``|g_j / H_jj|`` is within the rounding of ``u_j`` (4 eps |u_j|), where no float
    along ``u_j`` is lower: a location of 1e10 in units of 1 is known to 2e-6, and its
    gradient there is rounding, not distance. Both are free of the units of the objective
    and of ``u_j``. (An absolute max |g| <= 1e-14 used to count too, for an objective whose
    minimum is 0; it called any location of data in units of 1e60 stationary, whose gradient
    is 1e-60 per unit of its own, and an exact fit's rounding passes the step test.)"""
    if not g.numel():
        return True
    if not bool(torch.isfinite(g).all()):
        return False
    tiny = torch.finfo(g.dtype).tiny
    # the square roots apart, as in relative_gradient
    rel = g.abs() / (curvature.abs().sqrt() * abs(size) ** 0.5).clamp_min(tiny)  # (p,)
    step = g.abs() / curvature.abs()  # (p,) the Newton step; inf, or NaN at 0/0, where flat
    # an infinite curvature is an overflow, as in relative_gradient: not a step of 0
    rel, step = (torch.where(torch.isinf(curvature), torch.nan, t) for t in (rel, step))
    rounding = 4 * torch.finfo(u.dtype).eps * u.abs()  # (p,)
    return bool(((rel < gtol) | (step <= rounding)).all())


def _value_and_grad(f, u):
    u = u.detach().requires_grad_(True)
    val = f(u)
    (g,) = torch.autograd.grad(val, u)
    return val.detach(), g.detach()


def _finite_at(f, u: torch.Tensor) -> bool:
    if not bool(torch.isfinite(u).all()):
        return False
    try:
        with torch.no_grad():
            return bool(torch.isfinite(f(u)))
    except (ValueError, torch.linalg.LinAlgError):
        return False


_RESTARTS = 3  # L-BFGS runs at most, each from the best point of the one before


def _lbfgs(
    f,
    best: dict,
    first: float,
    *,
    max_iter: int,
    tolerance_grad: float,
    unit: torch.Tensor,
    norm: float,
) -> int:
    """One L-BFGS run from ``best["u"]``; ``best`` is updated to the lowest finite value seen.

    L-BFGS works on ``f(v · unit) / norm`` (``unit`` (p,) > 0, ``norm`` > 0: Jacobi
    preconditioning, each coordinate in units of unit curvature of the objective over its
    size), so that its first step (at most 1 long), line searches and ``tolerance_change``
    do not depend on the units of the objective or of each parameter; it stops when
    max |∂/∂v| falls below ``tolerance_grad`` (or it stalls). Returns the iterations taken.

    A step where ``f`` overflows or leaves the support (a torch.distributions argument check
    raises ValueError, or a matrix parameter's Cholesky factorisation fails) is reported as a
    large value, far above every value seen yet small enough that the strong-Wolfe line
    search's cubic interpolation stays finite (1e300 made it NaN, and L-BFGS stopped there).
    """
    v = (best["u"] / unit).clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [v],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=tolerance_grad,
        tolerance_change=1e-16,
        history_size=30,
        line_search_fn="strong_wolfe",
    )
    huge = torch.tensor(1e10 * (1.0 + abs(first) / norm), dtype=v.dtype, device=v.device)

    def closure():
        opt.zero_grad()
        u = v * unit
        if not bool(torch.isfinite(u).all()):
            return huge
        try:
            raw = f(u)
        except (ValueError, torch.linalg.LinAlgError):
            return huge
        val = raw / norm
        if not torch.isfinite(val) or val > huge:
            return huge
        val.backward()
        if float(raw.detach()) < best["value"]:
            best["u"], best["value"] = u.detach().clone(), float(raw.detach())
        return val

    opt.step(closure)
    return int(opt.state[opt._params[0]].get("n_iter", 0))


def minimize(
    f: Callable[[torch.Tensor], torch.Tensor],
    u0: torch.Tensor,
    *,
    max_iter: int = 500,
    gtol: float = 1e-8,
    newton_steps: int = 8,
    size: Callable[[torch.Tensor], float] | None = None,
) -> OptimizeResult:
    """Minimise ``f`` from ``u0``; converged when :func:`relative_gradient` < ``gtol`` along
    each coordinate, or its Newton step is within the coordinate's rounding.

    ``size(u)`` is the magnitude of the objective's terms at ``u`` (for a mean negative
    log-likelihood, the mean of |log p(xᵢ)|), by default |f(u)|: with the Hessian's diagonal
    it makes ``gtol`` mean the same whatever the units of the data and of the parameters.
    """
    size = size if size is not None else (lambda v: abs(float(f(v).detach())))

    u = u0.detach().clone()
    gtol = _attainable(gtol, u.dtype)
    if not u.numel():
        return OptimizeResult(u, float(f(u).detach()), 0.0, 0, True, 0.0)
    n_iter = 0
    finite = _finite_at(f, u)
    first = float(f(u).detach()) if finite else 1.0
    best = {"u": u, "value": float("inf")}
    h = hessian(f, u) if finite else None  # (p, p), the Hessian at u
    for _ in range(_RESTARTS):
        # L-BFGS on f / F in units of its unit curvature at the start (1 where there is none,
        # or it is not finite): there max |∂/∂v| is relative_gradient, stopped at gtol/1000
        norm = abs(size(u)) if finite else 1.0
        norm = norm if 0 < norm < float("inf") else 1.0
        unit, tol = torch.ones_like(u), 0.0  # 0: run until it stalls
        if h is not None and bool(torch.isfinite(h.diagonal()).all()):
            curv = h.diagonal().abs() / norm  # (p,)
            curved = curv > 0
            unit = torch.where(curved, curv.clamp_min(torch.finfo(u.dtype).tiny).rsqrt(), unit)
            tol = 1e-3 * gtol if bool(curved.all()) else 0.0
        n_iter += _lbfgs(
            f, best, first, max_iter=max_iter - n_iter, tolerance_grad=tol, unit=unit, norm=norm
        )
        finite = True  # best["u"], where f is finite
        u = best["u"]
        _, g = _value_and_grad(f, u)
        h = hessian(f, u)
        if n_iter >= max_iter or _stationary(g, h.diagonal(), size(u), u, gtol):
            break
        # a line search that stalled on a steep or overflowing region: L-BFGS again from
        # the best point, with its curvature history cleared
    val, g = _value_and_grad(f, u)
    for _ in range(newton_steps):
        if not bool(torch.isfinite(g).all()):
            break
        h = hessian(f, u) if h is None else h  # (p, p)
        if not bool(torch.isfinite(h).all()):
            break
        rel = relative_gradient(g, h.diagonal(), size(u))
        if rel < 1e-6 * gtol:
            break  # at rounding level already
        # judged on the Hessian scaled to unit diagonal, so that flatness does not depend
        # on each coordinate's units
        w, v, s = equilibrated_eigh((h + h.T) / 2)  # (p,), (p, p), (p,)
        tol = 1e-9 * float(w.abs().max())
        if float(w.min()) < -tol:
            break  # not locally convex: keep the L-BFGS point
        good = w > tol  # a flat direction (unidentified parameter) takes no step
        vg = v[:, good] * s.unsqueeze(1)  # (p, r) in the original coordinates
        step = -vg @ ((vg.T @ g) / w[good])
        cand = u + step
        if not _finite_at(f, cand):
            break
        cval, cg = _value_and_grad(f, cand)
        if not torch.isfinite(cval) or cval > val + 1e-12 * abs(float(val)):
            break
        # a step at rounding level, in units of unit curvature (in u's own units a step of
        # 1e-13 is no step for u ~ 1, and the whole answer for u ~ 1e-20)
        unit = _unit_curvature(h.diagonal(), size(u))  # (p,)
        u, val, g = cand, cval, cg
        h = rel = None  # judged again at the new point
        n_iter += 1
        if float((step / unit).abs().max()) < 1e-13 * (1 + float((u / unit).abs().max())):
            break
    curv = (hessian(f, u) if h is None else h).diagonal()  # (p,)
    fsize = size(u)
    rel = relative_gradient(g, curv, fsize)
    grad_norm = float(g.abs().max())
    converged = _stationary(g, curv, fsize, u, gtol)
    return OptimizeResult(u, float(val), grad_norm, n_iter, converged, rel)


def _soft_threshold(v, threshold, center):
    d = v - center
    return center + torch.sign(d) * torch.clamp(d.abs() - threshold, min=0.0)


def minimize_l1(
    f: Callable[[torch.Tensor], torch.Tensor],
    u0: torch.Tensor,
    weight: torch.Tensor,
    center: torch.Tensor,
    *,
    max_iter: int = 20000,
    gtol: float = 1e-10,
    size: Callable[[torch.Tensor], float] | None = None,
) -> OptimizeResult:
    """Minimise ``f(u) + Σⱼ weightⱼ |uⱼ − centerⱼ|`` for smooth ``f`` (weight 0: no penalty).

    Accelerated proximal gradient with backtracking and gradient-based adaptive restart (Beck &
    Teboulle 2009, FISTA; O'Donoghue & Candès 2015), then Newton steps on the active set with
    the signs held fixed, accepted only when they keep the signs and the KKT conditions
    ``|∂f/∂uⱼ| ≤ weightⱼ`` on the zero set: the exact solution, not just a tolerance away.
    ``value``/``grad_norm`` report the composite objective and max |g| of its minimal-norm
    subgradient ``g`` (zero exactly at a minimiser), ``converged`` whether
    ``relative_gradient(g, ∂²f/∂u², size(u)) < gtol`` (or the step is at rounding, as for
    :func:`minimize`), ``size`` as for :func:`minimize`
    (by default |f(u) + Σⱼ weightⱼ |uⱼ − centerⱼ||).
    """

    def total(u, fu):
        return fu + (weight * (u - center).abs()).sum()

    u = u0.detach().clone()
    gtol = _attainable(gtol, u.dtype)
    if not u.numel():
        return OptimizeResult(u, float(f(u).detach()), 0.0, 0, True, 0.0)
    # FISTA on f / F in units of unit curvature at the start (Jacobi preconditioning, as
    # minimize's L-BFGS): with u = unit · v the penalty is Σⱼ weightⱼ unitⱼ |vⱼ − centerⱼ/unitⱼ|.
    # In u's own units one step size served every coordinate, so a slope in units of 1e3
    # beside an intercept in units of 1 (curvatures 1e6 apart) took 1e6 iterations, and the
    # stop (a move below 1e-13 (1 + max |u|)) meant another thing for each scale of u.
    norm = size(u) if size is not None else abs(float(total(u, f(u).detach())))
    norm = norm if 0 < norm < float("inf") else 1.0
    h0 = hessian(f, u).diagonal()  # (p,)
    unit = _unit_curvature(h0, norm) if bool(torch.isfinite(h0).all()) else torch.ones_like(u)
    w_v, c_v = weight * unit / norm, center / unit  # (p,), (p,)

    def f_v(v):
        return f(v * unit) / norm

    v = u / unit
    y, t, lip = v.clone(), 1.0, 1.0
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007  (n_iter is reported)
        fy, gy = _value_and_grad(f_v, y)
        while True:
            z = _soft_threshold(y - gy / lip, w_v / lip, c_v)
            fz = f_v(z).detach()
            d = z - y
            if fz <= fy + gy @ d + 0.5 * lip * (d @ d) + 1e-14 * abs(float(fy)):
                break
            lip *= 2.0
        if float((y - z) @ (z - v)) > 0:  # momentum points uphill: restart
            t = 1.0
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        moved = float((z - v).abs().max())
        y = z + ((t - 1) / t_next) * (z - v)
        v, t = z, t_next
        lip *= 0.95  # let the step grow back after a backtrack
        # the gradient mapping lip (y - z) is the prox-gradient step's subgradient: below
        # gtol / 1000 in these units the relative gradient is too (or the moves are at
        # rounding level)
        if moved * lip < 1e-3 * gtol or moved < 1e-13 * (1 + float(v.abs().max())):
            break
    u = _active_set_newton(f, v * unit, weight, center, unit, norm)
    fu, gu = _value_and_grad(f, u)
    value = float(total(u, fu))
    # the subgradient of least norm: ∂f/∂uⱼ + weightⱼ sign(uⱼ − centerⱼ) off the kink, and at it
    # what |∂f/∂uⱼ| exceeds weightⱼ by (0 where the kink absorbs it)
    diff = u - center
    kink = (weight != 0) & (diff == 0)  # (p,)
    sub = torch.where(kink, (gu.abs() - weight).clamp_min(0.0), gu + weight * torch.sign(diff))
    fsize = size(u) if size is not None else abs(value)
    curv = hessian(f, u).diagonal()  # (p,)
    rel = relative_gradient(sub, curv, fsize)
    converged = _stationary(sub, curv, fsize, u, gtol)
    return OptimizeResult(u, value, float(sub.abs().max()), n_iter, converged, rel)


def _active_set_newton(f, u, weight, center, unit, norm, steps: int = 10):
    """Newton steps on the active set of ``u`` with the signs held fixed; ``unit`` (p,) each
    coordinate's length in units of unit curvature of ``f`` over its size ``norm``
    (:func:`_unit_curvature`), in which the tolerances on the KKT conditions and on the step
    are judged."""
    for _ in range(steps):
        diff = u - center
        active = (weight == 0) | (diff != 0)  # (p,)
        if not bool(active.any()):
            return u
        sign = torch.sign(diff) * (weight != 0)
        fu, g = _value_and_grad(f, u)
        g_active = (g + weight * sign)[active]
        h = hessian(f, u)[active][:, active]
        chol, info = torch.linalg.cholesky_ex((h + h.T) / 2)
        if int(info) != 0:
            return u
        cand = u.clone()
        cand[active] = u[active] + torch.cholesky_solve(-g_active[:, None], chol)[:, 0]
        keeps_signs = bool(
            (
                torch.sign(cand - center)[active & (weight != 0)] == sign[active & (weight != 0)]
            ).all()
        )
        fc, gc = _value_and_grad(f, cand)
        # |∂f/∂uⱼ| ≤ weightⱼ on the zero set, up to rounding: 1e-9 of the weight, and a
        # relative gradient (|∂f/∂uⱼ| unitⱼ / norm) of 1e-13
        slack = weight * 1e-9 + 1e-13 * norm / unit  # (p,)
        kkt = bool((gc.abs()[~active] <= weight[~active] + slack[~active]).all())
        better = float(fc + (weight * (cand - center).abs()).sum()) <= float(
            fu + (weight * diff.abs()).sum()
        ) + 1e-13 * abs(float(fu))
        if not (keeps_signs and kkt and better):
            return u
        step, v = (cand - u) / unit, u / unit  # in units of unit curvature
        done = float(step.abs().max()) < 1e-14 * (1 + float(v.abs().max()))
        u = cand
        if done:
            return u
    return u
