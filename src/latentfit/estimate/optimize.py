"""Minimise a smooth objective of an unconstrained vector: L-BFGS, then Newton polishing.

The objective knows nothing about the optimiser (it maps ``u`` (p,) to a scalar tensor). L-BFGS
with a strong-Wolfe line search (Nocedal & Wright, *Numerical Optimization*, Alg. 7.5 and 3.5)
gets close; a few Newton steps with the exact autograd Hessian (pseudo-inverted, so that flat
directions take no step) then take the gradient to rounding level, so that an optimised fit agrees with a closed form to ~1e-10.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.autograd.functional import hessian

from latentfit.estimate.inference import equilibrated_eigh

__all__ = ["OptimizeResult", "minimize"]


class OptimizeResult(NamedTuple):
    u: torch.Tensor  # (p,) the minimiser
    value: float
    grad_norm: float  # max |∂f/∂u| at u
    n_iter: int
    converged: bool


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
    except ValueError:
        return False


_RESTARTS = 3  # L-BFGS runs at most, each from the best point of the one before


def _lbfgs(f, best: dict, first: float, *, max_iter: int, gtol: float) -> int:
    """One L-BFGS run from ``best["u"]``; ``best`` is updated to the lowest finite value seen.

    Returns the iterations taken. A step where ``f`` overflows or leaves the support (a
    torch.distributions argument check raises ValueError) is reported as a large value, far
    above every value seen yet small enough that the strong-Wolfe line search's cubic
    interpolation stays finite (1e300 made it NaN, and L-BFGS stopped there).
    """
    u = best["u"].clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=gtol * 1e-3,
        tolerance_change=1e-16,
        history_size=30,
        line_search_fn="strong_wolfe",
    )
    huge = torch.tensor(1e10 * (1.0 + abs(first)), dtype=u.dtype, device=u.device)

    def closure():
        opt.zero_grad()
        if not bool(torch.isfinite(u).all()):
            return huge
        try:
            val = f(u)
        except ValueError:
            return huge
        if not torch.isfinite(val) or val > huge:
            return huge
        val.backward()
        if float(val.detach()) < best["value"]:
            best["u"], best["value"] = u.detach().clone(), float(val.detach())
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
) -> OptimizeResult:
    """Minimise ``f`` from ``u0``; ``gtol`` bounds max |gradient| for convergence.

    ``f`` should be scaled to O(1) (e.g. a mean negative log-likelihood) so that ``gtol`` means
    the same thing for every data size.
    """
    u = u0.detach().clone()
    n_iter = 0
    if u.numel():
        first = float(f(u).detach()) if _finite_at(f, u) else 1.0
        best = {"u": u, "value": float("inf")}
        for _ in range(_RESTARTS):
            n_iter += _lbfgs(f, best, first, max_iter=max_iter - n_iter, gtol=gtol)
            u = best["u"]
            _, g = _value_and_grad(f, u)
            if n_iter >= max_iter or float(g.abs().max()) < gtol:
                break
            # a line search that stalled on a steep or overflowing region: L-BFGS again from
            # the best point, with its curvature history cleared
    val, g = _value_and_grad(f, u) if u.numel() else (f(u).detach(), u.clone())
    for _ in range(newton_steps if u.numel() else 0):
        if not bool(torch.isfinite(g).all()) or float(g.abs().max()) < 1e-14:
            break
        h = hessian(f, u)  # (p, p)
        if not bool(torch.isfinite(h).all()):
            break
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
        n_iter += 1
        if float(step.abs().max()) < 1e-13 * (1 + float(u.abs().max())):
            break
    grad_norm = float(g.abs().max()) if u.numel() else 0.0
    return OptimizeResult(u, float(val), grad_norm, n_iter, bool(grad_norm < gtol))


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
) -> OptimizeResult:
    """Minimise ``f(u) + Σⱼ weightⱼ |uⱼ − centerⱼ|`` for smooth ``f`` (weight 0: no penalty).

    Accelerated proximal gradient with backtracking and gradient-based adaptive restart (Beck &
    Teboulle 2009, FISTA; O'Donoghue & Candès 2015), then Newton steps on the active set with
    the signs held fixed, accepted only when they keep the signs and the KKT conditions
    ``|∂f/∂uⱼ| ≤ weightⱼ`` on the zero set: the exact solution, not just a tolerance away.
    ``value``/``grad_norm`` report the composite objective and the norm of the proximal-gradient
    step (zero exactly at a minimiser).
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
    lip = max(lip, 1.0)
    step = u - _soft_threshold(u - gu / lip, weight / lip, center)
    grad_norm = float(step.abs().max() * lip) if u.numel() else 0.0
    return OptimizeResult(u, float(total(u, fu)), grad_norm, n_iter, grad_norm < gtol)


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
