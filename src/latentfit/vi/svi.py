"""Stochastic variational inference: the short loop that steps an optimiser on an objective.

The objective (an :class:`~latentfit.vi.objectives.StochasticELBO` or any callable returning a
differentiable scalar bound) knows nothing about optimisers; this loop knows nothing about
models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from latentfit._validation import as_generator, check_positive_int
from latentfit.em.driver import NonFiniteLowerBoundError
from latentfit.errors import DataError, ParameterError

__all__ = ["MiniBatches", "svi"]


class MiniBatches:
    """Shuffled mini-batches ``(index, *tensors[index])`` of row-aligned tensors, a fresh
    permutation from ``generator`` on every pass."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, generator=None):
        if not tensors:
            raise ParameterError("MiniBatches needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise DataError("all tensors must have the same number of rows")
        batch_size = check_positive_int(batch_size, "batch_size")
        self.tensors, self.batch_size = tensors, batch_size
        self.generator = as_generator(generator)

    def __len__(self) -> int:
        return -(-self.tensors[0].shape[0] // self.batch_size)

    def __iter__(self):
        n = self.tensors[0].shape[0]
        perm = torch.randperm(n, generator=self.generator).to(self.tensors[0].device)
        for start in range(0, n, self.batch_size):
            idx = perm[start : start + self.batch_size]
            yield (idx, *(t[idx] for t in self.tensors))


def svi(
    objective: Callable,
    optimizer: torch.optim.Optimizer,
    num_steps: int,
    *,
    batches: Iterable | None = None,
    scheduler=None,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Maximise ``objective(batch)`` by ``num_steps`` optimiser steps; returns the bound at
    every step. ``batches`` is re-iterated when exhausted (a new shuffle per pass)."""
    num_steps = check_positive_int(num_steps, "num_steps", minimum=0)
    if not callable(objective):
        raise ParameterError(
            f"objective must be a callable objective(batch) -> scalar bound, got {objective!r:.60}"
        )
    if isinstance(optimizer, type) or not all(
        callable(getattr(optimizer, m, None)) for m in ("zero_grad", "step")
    ):  # an instance: the class itself (torch.optim.Adam) holds no parameters
        raise ParameterError(
            "optimizer must be a torch optimiser over the guide's (and model's) parameters, "
            f"e.g. torch.optim.Adam(guide.parameters(), lr=1e-2); got {optimizer!r:.60}"
        )
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise ParameterError(
            f"scheduler must be a torch learning-rate scheduler (with .step()), got {scheduler!r:.60}"
        )
    if callback is not None and not callable(callback):
        raise ParameterError(
            f"callback must be a callable callback(step, bound), got {callback!r:.60}"
        )
    if batches is not None and not isinstance(batches, Iterable):
        raise ParameterError(
            f"batches must be an iterable of mini-batches (e.g. MiniBatches), got {batches!r:.60}"
        )
    history: list[float] = []
    it = iter(batches) if batches is not None else None
    for step in range(num_steps):
        batch = None
        if it is not None:
            batch = next(it, None)
            if batch is None:
                it = iter(batches)
                batch = next(it, None)
                if batch is None:
                    raise DataError("batches yields no mini-batch: pass at least one row of data")
        optimizer.zero_grad(set_to_none=True)
        bound = objective(batch)
        if not isinstance(bound, torch.Tensor) or bound.numel() != 1 or not bound.requires_grad:
            raise ParameterError(
                "objective(batch) must return a differentiable scalar tensor (the bound to "
                f"maximise, computed from the guide's parameters); got {bound!r:.60}"
            )
        if not torch.isfinite(bound):
            raise NonFiniteLowerBoundError(
                f"the objective became {float(bound.detach())} at step {step}; try a smaller learning "
                "rate, a smaller initial guide scale, or float64"
            )
        (-bound).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        history.append(float(bound.detach()))
        if callback is not None:
            callback(step, history[-1])
    return history
