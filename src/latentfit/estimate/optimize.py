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
    u = u0.detach().clone().requires_grad_(True)
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

    def closure():
        opt.zero_grad()
        val = f(u)
        if not torch.isfinite(val):
            # an overflowing step: report a huge value so the line search backs off
            return torch.tensor(1e300, dtype=u.dtype, device=u.device)
        val.backward()
        return val

    if u.numel():
        opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0)) if u.numel() else 0
    u = u.detach()
    val, g = _value_and_grad(f, u) if u.numel() else (f(u).detach(), u.clone())
    for _ in range(newton_steps if u.numel() else 0):
        if not bool(torch.isfinite(g).all()) or float(g.abs().max()) < 1e-14:
            break
        h = hessian(f, u)  # (p, p)
        w, v = torch.linalg.eigh((h + h.T) / 2)  # (p,), (p, p)
        tol = 1e-9 * float(w.abs().max())
        if float(w.min()) < -tol:
            break  # not locally convex: keep the L-BFGS point
        good = w > tol  # a flat direction (unidentified parameter) takes no step
        step = -v[:, good] @ ((v[:, good].T @ g) / w[good])
        cand = u + step
        cval, cg = _value_and_grad(f, cand)
        if not torch.isfinite(cval) or cval > val + 1e-12 * abs(float(val)):
            break
        u, val, g = cand, cval, cg
        n_iter += 1
        if float(step.abs().max()) < 1e-13 * (1 + float(u.abs().max())):
            break
    grad_norm = float(g.abs().max()) if u.numel() else 0.0
    return OptimizeResult(u, float(val), grad_norm, n_iter, bool(grad_norm < gtol))
