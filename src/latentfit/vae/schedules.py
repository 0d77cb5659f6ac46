"""KL weight schedules (warm-up) and the free-bits KL floor.

A schedule is a small picklable object: ``schedule(step) -> weight`` in [0, 1], where ``step``
counts optimiser steps from 0. It holds no state of its own, so a trainer resumes it exactly by
restoring the step counter.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from latentfit._validation import check_positive_int, is_finite_above
from latentfit.errors import DataError, ParameterError

__all__ = [
    "ConstantKL",
    "CyclicalWarmup",
    "LinearWarmup",
    "check_free_bits",
    "free_bits_kl",
    "make_schedule",
]


@dataclass(frozen=True)
class ConstantKL:
    """The KL weight is ``weight`` at every step (1.0: the plain ELBO)."""

    weight: float = 1.0

    def __post_init__(self):
        # a negative weight rewards a larger KL; NaN surfaced only as "training diverged"
        if not is_finite_above(self.weight, 0.0, inclusive=True):
            raise ParameterError(f"weight must be a finite number >= 0, got {self.weight!r}")

    def __call__(self, step: int) -> float:
        return self.weight


@dataclass(frozen=True)
class LinearWarmup:
    """KL weight rising linearly from ``start`` to 1 over ``n_steps`` steps, then 1.

    Deterministic warm-up (Bowman et al. 2016; Sønderby et al. 2016, Sec. 2.3).
    """

    n_steps: int
    start: float = 0.0

    def __post_init__(self):
        if (
            not isinstance(self.n_steps, numbers.Integral)
            or isinstance(self.n_steps, bool)
            or self.n_steps < 1
        ):
            raise ParameterError(f"n_steps must be an integer >= 1, got {self.n_steps!r}")
        if not is_finite_above(self.start, 0.0, inclusive=True) or self.start > 1:
            raise ParameterError(f"start must lie in [0, 1], got {self.start!r}")

    def __call__(self, step: int) -> float:
        return min(1.0, self.start + (1.0 - self.start) * step / self.n_steps)


@dataclass(frozen=True)
class CyclicalWarmup:
    """Cyclical annealing (Fu et al. 2019, eq. 6): ``n_cycles`` cycles over ``total_steps``.

    Within each cycle of length T/M the weight rises linearly from 0 to 1 during the first
    ``ratio`` R of the cycle and stays at 1 for the rest; after ``total_steps`` it is 1.
    """

    total_steps: int
    n_cycles: int = 4
    ratio: float = 0.5

    def __post_init__(self):
        for name in ("total_steps", "n_cycles"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ParameterError(
                    f"{name} must be an integer >= 1, got {value!r}; e.g. CyclicalWarmup(1000)"
                )
        if not is_finite_above(self.ratio, 0.0) or self.ratio > 1:
            raise ParameterError(f"ratio must lie in (0, 1], got {self.ratio!r}; 0.5 is usual")

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return 1.0
        period = math.ceil(self.total_steps / self.n_cycles)
        tau = (step % period) / period
        return min(1.0, tau / self.ratio)


def make_schedule(name: str, n_steps: int, n_cycles: int = 4):
    """``"none"``, ``"linear"`` (over n_steps) or ``"cyclical"`` (n_cycles over n_steps)."""
    if name == "none":
        return ConstantKL()
    if name == "linear":
        return LinearWarmup(n_steps)
    if name == "cyclical":
        return CyclicalWarmup(n_steps, n_cycles)
    raise ParameterError(f"unknown KL schedule {name!r}; choose none, linear or cyclical")


def check_free_bits(value, name: str = "free_bits", dtype=torch.float32) -> float:
    """A free-bits floor λ: a finite number >= 0 (nats per latent group) that the model's
    ``dtype`` can hold (1e308 overflows float32). ParameterError naming ``name`` otherwise."""
    limit = torch.finfo(dtype).max if dtype.is_floating_point else torch.finfo(torch.float32).max
    if not is_finite_above(value, 0.0, inclusive=True) or value > limit:
        raise ParameterError(
            f"{name} must be a finite number of nats >= 0 (and at most {limit:.3g}, the largest "
            f"{str(dtype).removeprefix('torch.')}), got {value!r}; 0 (off) or 0.5 is usual"
        )
    return float(value)


def free_bits_kl(kl_per_dim: torch.Tensor, floor: float, group_size: int = 1) -> torch.Tensor:
    """Σ_g max(λ, E_batch[KL_g]): the free-bits KL term (Kingma et al. 2016, App. C.8, eq. 15).

    ``kl_per_dim`` (n, d_z) is split into consecutive groups of ``group_size`` dimensions; each
    group's minibatch-mean KL is floored at λ = ``floor`` nats, so the optimiser gains nothing by
    pushing a group's KL below λ, which keeps latent units from collapsing early.
    """
    if not isinstance(kl_per_dim, torch.Tensor) or kl_per_dim.dim() != 2:
        tensor = isinstance(kl_per_dim, torch.Tensor)
        got = f"shape {tuple(kl_per_dim.shape)}" if tensor else f"a {type(kl_per_dim).__name__}"
        raise DataError(
            f"kl_per_dim must be a (n, d_z) tensor, the KL of each latent dimension for each "
            f"row of the minibatch, got {got}"
            + (
                "; for one row use kl_per_dim.unsqueeze(0)"
                if tensor and kl_per_dim.dim() == 1
                else ""
            )
        )
    if kl_per_dim.shape[0] == 0:
        raise DataError(
            f"kl_per_dim of shape {tuple(kl_per_dim.shape)} holds no rows: the minibatch mean "
            "of each dimension's KL needs at least one"
        )
    check_free_bits(floor, "floor", kl_per_dim.dtype)
    group_size = check_positive_int(group_size, "group_size")
    d = kl_per_dim.shape[1]
    if d % group_size:
        raise ParameterError(f"free-bits group size {group_size} must divide the latent size {d}")
    per_group = kl_per_dim.mean(0).reshape(d // group_size, group_size).sum(-1)  # (groups,)
    return per_group.clamp_min(floor).sum()
