"""Whether a function of your own is followed by its autograd gradient.

A log-density or prior that takes a parameter out of torch's graph (``torch.tensor(loc)``,
``torch.as_tensor(loc.detach())``, a ``torch.no_grad()`` block, a value computed in numpy)
still returns the right value, but autograd sees no dependence on that parameter: an
optimiser then never moves it for that term (a MAP fit ends at the MLE and says it
converged) and a gradient-based sampler moves it blind. No call on the tensors shows every
such cut, so the function itself is asked: moved along one parameter by a small step, does
its value change while its gradient, at both ends of the step, says it cannot?
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["cut_message", "unfollowed", "value_and_grad_rows"]


def value_and_grad_rows(f: Callable[[torch.Tensor], torch.Tensor]):
    """``f`` (a function of one point ``u`` (p,) to a scalar) as the ``value_and_grad`` of
    :func:`unfollowed`: points (m, p) to values (m,) and gradients (m, p), a gradient of zero
    where the value has no graph."""

    def value_and_grad(points: torch.Tensor):
        values, grads = [], []
        for point in points:
            with torch.enable_grad():
                v = point.detach().clone().requires_grad_(True)
                out = torch.as_tensor(f(v)).reshape(())
                g = None
                if out.requires_grad:
                    (g,) = torch.autograd.grad(out, v, allow_unused=True)
            values.append(out.detach().to(point))
            grads.append(torch.zeros_like(point) if g is None else g)
        return torch.stack(values), torch.stack(grads)

    return value_and_grad


def unfollowed(
    value_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    u: torch.Tensor,
    blocks: list[tuple[str, int, int]],
) -> str | None:
    """The name of the first block of coordinates of ``u`` (p,) along which the function's
    value changes while its gradient says it does not depend on them; None when there is none.

    ``value_and_grad(points)`` maps points (m, p) to the function's values (m,) and its autograd
    gradients (m, p), zero where there is no graph (or, for a function of several outputs,
    values (m, k) and Jacobians (m, k, p), each output judged); ``blocks`` holds
    ``(name, start, size)``.
    Each block is moved by a step ``d`` of about eps^(1/3) (1 + |u_j|) per coordinate (of
    unequal sizes, so that no difference of coordinates stays fixed): cut when the value
    changes by ``Δf`` beyond rounding while the gradient explains less than a thousandth of it,
    ``|g(u)·d| + |g(u + d)·d| <= 1e-3 |Δf|``. Where autograd follows the function the mean
    value theorem puts ``Δf`` between the two slopes; a mode (``g(u) = 0``) or a kink
    (``|loc|`` at 0) has the other end's slope. One evaluation of ``len(blocks) + 2`` points
    (``u`` twice: a function whose value at ``u`` changes from call to call, dropout in a
    network, is not judged); a block where the value is not finite at either end is not
    judged.
    """
    p = u.shape[0]
    step = torch.finfo(u.dtype).eps ** (1 / 3) * (1 + u.abs())  # (p,)
    moves = torch.zeros(len(blocks), p, dtype=u.dtype, device=u.device)  # (m - 1, p)
    for i, (_, start, size) in enumerate(blocks):
        shape = torch.linspace(0.5, 1.5, size, dtype=u.dtype, device=u.device) if size > 1 else 1
        moves[i, start : start + size] = shape * step[start : start + size]
    try:
        # u twice: a function that draws at random (dropout in a network) is not judged
        values, grads = value_and_grad(torch.cat([u[None], u[None], u[None] + moves]))
    except (ValueError, RuntimeError):  # raised where it was moved: nothing to judge by
        return None
    values, grads = values.detach(), grads.detach()  # (m + 1,), (m + 1, p)
    if values.dim() == 1:  # one function: values (m + 1,) and gradients (m + 1, p)
        values, grads = values[:, None], grads[:, None]
    for k in range(values.shape[1]):  # each output: values (m + 1, k), Jacobians (m + 1, k, p)
        name = _judged(values[:, k], grads[:, k], moves, blocks)
        if name is not None:
            return name
    return None


def _judged(values: torch.Tensor, grads: torch.Tensor, moves: torch.Tensor, blocks) -> str | None:
    """:func:`unfollowed` for one output: ``values`` (m + 1,) at u, u again and each moved
    point, ``grads`` (m + 1, p) there, ``moves`` (m - 1, p) the steps."""
    eps = torch.finfo(values.dtype).eps if values.dtype.is_floating_point else 0.0
    if not bool((values[0] - values[1]).abs() <= 64 * eps * (values[0].abs() + values[1].abs())):
        return None
    for i, (name, _, _) in enumerate(blocks):
        f0, f1, d = values[0], values[i + 2], moves[i]
        if not (bool(torch.isfinite(f0)) and bool(torch.isfinite(f1))):
            continue
        change = float((f1 - f0).abs())
        if change <= 64 * eps * float(f0.abs() + f1.abs()) or change == 0.0:
            continue  # rounding, or no dependence at all (a flat prior)
        slope = float((grads[0] @ d).abs() + (grads[i + 2] @ d).abs())
        if slope <= 1e-3 * change:  # (a NaN slope is not judged here: the fit says so)
            return name
    return None


def cut_message(what: str, name: str, consequence: str) -> str:
    """The words of a refusal of ``what`` whose gradient does not follow parameter ``name``."""
    return (
        f"{what} depends on {name!r} outside torch's graph: its value changes when {name} "
        f"moves, but its gradient with respect to {name} is zero, so {consequence}. The value "
        "was computed from a copy of the parameter (torch.tensor(...) or torch.as_tensor(...) "
        "of it, .detach(), numpy) or inside torch.no_grad(); build it from the parameters with "
        "torch operations (torch.stack([a, b]) rather than torch.tensor([a, b]), torch "
        "functions rather than numpy)"
    )
