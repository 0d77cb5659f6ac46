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
    rel_grad: float  # relative_gradient at u, what converged was judged on (< gtol)


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
    denom = (curvature.abs() * abs(size)).sqrt().clamp_min(torch.finfo(g.dtype).tiny)
    out = float((g.abs() / denom).max())
    return out if out == out else float("inf")  # NaN (a non-finite Hessian): not judged stationary


def _stationary(rel: float, g: torch.Tensor, gtol: float) -> bool:
    # or a gradient at rounding level outright: an objective whose minimum is 0 (an exact fit
    # of a log-density with no constant term) has no size to be relative to
    return rel < gtol or float(g.abs().max()) <= 1e-6 * gtol


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
    """Minimise ``f`` from ``u0``; converged when :func:`relative_gradient` < ``gtol``.

    ``size(u)`` is the magnitude of the objective's terms at ``u`` (for a mean negative
    log-likelihood, the mean of |log p(xᵢ)|), by default |f(u)|: with the Hessian's diagonal
    it makes ``gtol`` mean the same whatever the units of the data and of the parameters.
    """
    size = size if size is not None else (lambda v: abs(float(f(v).detach())))

    u = u0.detach().clone()
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
        rel = relative_gradient(g, h.diagonal(), size(u))
        if n_iter >= max_iter or _stationary(rel, g, gtol):
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
        u, val, g = cand, cval, cg
        h = rel = None  # judged again at the new point
        n_iter += 1
        if float(step.abs().max()) < 1e-13 * (1 + float(u.abs().max())):
            break
    if rel is None:
        rel = relative_gradient(g, hessian(f, u).diagonal(), size(u))
    grad_norm = float(g.abs().max())
    return OptimizeResult(u, float(val), grad_norm, n_iter, _stationary(rel, g, gtol), rel)


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
    ``relative_gradient(g, ∂²f/∂u², size(u)) < gtol``, ``size`` as for :func:`minimize`
    (by default |f(u) + Σⱼ weightⱼ |uⱼ − centerⱼ||).
    """

    def total(u, fu):
        return fu + (weight * (u - center).abs()).sum()

    u = u0.detach().clone()
    y, t, lip = u.clone(), 1.0, 1.0
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007  (n_iter is reported)
        fy, gy = _value_and_grad(f, y)
        while True:
            z = _soft_threshold(y - gy / lip, weight / lip, center)
            fz = f(z).detach()
            d = z - y
            if fz <= fy + gy @ d + 0.5 * lip * (d @ d) + 1e-14 * abs(float(fy)):
                break
            lip *= 2.0
        if float((y - z) @ (z - u)) > 0:  # momentum points uphill: restart
            t = 1.0
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        moved = float((z - u).abs().max())
        y = z + ((t - 1) / t_next) * (z - u)
        u, t = z, t_next
        lip *= 0.95  # let the step grow back after a backtrack
        if moved < 1e-13 * (1 + float(u.abs().max())):
            break
    u = _active_set_newton(f, u, weight, center)
    fu, gu = _value_and_grad(f, u)
    value = float(total(u, fu))
    if not u.numel():
        return OptimizeResult(u, value, 0.0, n_iter, True, 0.0)
    # the subgradient of least norm: ∂f/∂uⱼ + weightⱼ sign(uⱼ − centerⱼ) off the kink, and at it
    # what |∂f/∂uⱼ| exceeds weightⱼ by (0 where the kink absorbs it)
    diff = u - center
    kink = (weight != 0) & (diff == 0)  # (p,)
    sub = torch.where(kink, (gu.abs() - weight).clamp_min(0.0), gu + weight * torch.sign(diff))
    fsize = size(u) if size is not None else abs(value)
    rel = relative_gradient(sub, hessian(f, u).diagonal(), fsize)
    return OptimizeResult(
        u, value, float(sub.abs().max()), n_iter, _stationary(rel, sub, gtol), rel
    )


def _active_set_newton(f, u, weight, center, steps: int = 10):
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
        kkt = bool((gc.abs()[~active] <= weight[~active] * (1 + 1e-9) + 1e-15).all())
        better = float(fc + (weight * (cand - center).abs()).sum()) <= float(
            fu + (weight * diff.abs()).sum()
        ) + 1e-13 * abs(float(fu))
        if not (keeps_signs and kkt and better):
            return u
        done = float((cand - u).abs().max()) < 1e-14 * (1 + float(u.abs().max()))
        u = cand
        if done:
            return u
    return u
