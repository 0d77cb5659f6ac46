"""Exact maximum likelihood for flows, and the uniform dequantisation of 8-bit data.

For discrete data k ∈ {0, …, L-1}^d (grey levels), a continuous density p on [0, 1]^d gives
P(k) ≥ exp E_u[log p((k + u) / L)] / L^d with u ~ U[0, 1)^d (Theis et al. 2016, eq. 8;
Ho et al. 2019, Sec. 3.1): so E_u[log p(y)] - d log L is a lower bound on log P(k), the
quantity every continuous model of the likelihood table reports.
"""

from __future__ import annotations

import math
import numbers

import torch

from latentfit._validation import device_generator, is_finite_above
from latentfit.errors import DataError, ParameterError
from latentfit.vae.likelihoods import grid_tolerance
from latentfit.vae.objectives import ObjectiveOutput

__all__ = [
    "FlowNLL",
    "as_levels",
    "check_level_scale_option",
    "check_n_levels",
    "dequantize",
    "level_point",
    "level_scale",
    "logit_transform",
]


def check_n_levels(
    n_levels,
    dtype=torch.float32,
    name: str = "n_levels",
    float64_option: str | None = None,
    fitted: bool = False,
) -> int:
    """The number of grey levels of 8-bit data: an integer from 2 up to 1 / (8 eps) of
    ``dtype`` (2**20 in float32, 2**49 in float64). An intensity is read as the level k/(L-1)
    within grid_tolerance = 4 (L-1) eps of it, which reaches half a level past the limit: a
    value halfway between two levels is then read as one of them, not refused. Codes fare no
    better once a model puts them on its interval of length 1 or 2: at 2**24 float32 levels a
    DDPM maps the codes 2**24 - 2 and 2**24 - 1 to the same point, and half the dequantised
    draws (k + u)/L of a flow land in the next level's bin. ``float64_option``: how the
    caller's user asks for float64, said for a float32 ``dtype`` (None: there is no way).
    ``fitted``: ``n_levels`` is a fitted model's, which cannot change: too many levels for
    ``dtype`` are then answered with ``float64_option`` alone."""
    dtype = dtype if dtype.is_floating_point else torch.float32
    # the largest L whose grid_tolerance(L - 1, dtype) = 4 (L - 1) eps stays below 1/2
    limit = round(1 / (8 * torch.finfo(dtype).eps))
    whole = isinstance(n_levels, numbers.Integral) and not isinstance(n_levels, bool)
    if whole and 2 <= n_levels <= limit:
        return int(n_levels)
    label = str(dtype).removeprefix("torch.")
    # float64 tells more levels apart: the way out of too many, where the caller has one
    wider = (
        whole
        and limit < n_levels <= round(1 / (8 * torch.finfo(torch.float64).eps))
        and float64_option is not None
    )
    if fitted and wider:
        raise ParameterError(
            f"this model's {n_levels:,} levels ({name}) are more than {label} tells apart "
            f"({limit:,}: past it, a value halfway between two levels is read as one of "
            f"them), and a fitted model's {name} cannot change; use {float64_option} to "
            "score, sample or save it (up to 2**49 levels)"
        )
    raise ParameterError(
        f"{name} must be an integer from 2 to {limit:,} (the levels {label} tells apart: "
        f"past it, a value halfway between two levels is read as one of them), got "
        f"{n_levels!r}; 256 for 8-bit data"
        + (f", or use {float64_option} (up to 2**49 levels)" if wider else "")
    )


def level_scale(X: torch.Tensor, n_levels: int, given: float | None = None) -> float:
    """The factor from the user's scale to levels: 1 for integer levels 0..L-1, L - 1 for
    intensities in [0, 1] (the convention of the VAE's categorical likelihood). ``given``
    (a model's ``level_scale``) where set, else 1 where a value of X exceeds 1. X of 0s and 1s
    alone is either, the codes 0 and 1 or the levels 0 and L-1: DataError unless ``given``
    says which (or L = 2, where the two are one)."""
    if given is not None:
        return float(given)
    if float(X.max()) > 1:
        return 1.0
    if n_levels > 2 and X.numel() and bool(((X == 0) | (X == 1)).all()):
        top = n_levels - 1
        raise DataError(
            f"X holds only 0s and 1s, which {n_levels} levels read two ways: the level codes 0 "
            f"and 1, or the intensities 0 and 1 (the levels 0 and {top}); say which with "
            f"level_scale=1 (codes) or level_scale={top} (intensities), or set n_levels=2 for "
            "binary data"
        )
    return float(n_levels - 1)


def check_level_scale_option(value, n_levels: int) -> None:
    """ParameterError unless ``value`` (a model's ``level_scale``) is None, 1 (integer level
    codes) or n_levels - 1 (intensities in [0, 1])."""
    if value is None or (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and value in (1, n_levels - 1)
    ):
        return
    raise ParameterError(
        f"level_scale must be None (chosen from the data), 1 (integer level codes "
        f"0..{n_levels - 1}) or {n_levels - 1} (n_levels - 1: intensities in [0, 1]), got "
        f"{value!r}"
    )


def as_levels(
    X: torch.Tensor, n_levels: int, scale: float, name: str, setting: str, fitted: bool = False
):
    """X (n, d) in the user's scale → levels 0..L-1 (floats); a DataError naming the first
    row and column off the grid. ``setting`` names the option that asked for 8-bit data;
    ``fitted``: X is scored by a fitted model, whose reading of the levels is fixed."""
    levels = X * scale
    # codes are whole numbers in X's dtype; intensities k / (L-1) are off by a few ulps
    tol = 1e-4 if scale == 1 else grid_tolerance(n_levels - 1, X.dtype)
    bad = (levels < -tol) | (levels > n_levels - 1 + tol)
    bad |= (levels - levels.round()).abs() > tol
    if bool(bad.any()):
        r, c = (int(i) for i in bad.nonzero()[0])
        grid = (
            f"integers 0..{n_levels - 1}"
            if scale == 1
            else f"multiples of 1/{n_levels - 1} in [0, 1]"
        )
        value = f"row {r}, column {c} holds {float(X[r, c]):.6g}"
        if not fitted:
            raise DataError(
                f"{setting} needs {name} as {n_levels} levels ({grid}); {value}. Pass 8-bit "
                "data, or real-valued data with the 8-bit option off"
            )
        # the fitted model's levels are fixed: the data must be brought onto them
        top = n_levels - 1
        other = (
            f"intensities k/{top} in [0, 1], multiply them by {top}"
            if scale == 1
            else f"integer level codes 0..{top}, divide them by {top}"
        )
        raise DataError(
            f"this model was fitted with {setting} and reads {name} as {n_levels} levels "
            f"({grid}); {value}. Round every value to the nearest level (for {other} first)"
        )
    return levels.round()


def dequantize(levels: torch.Tensor, n_levels: int, generator=None) -> torch.Tensor:
    """y = (k + u) / L with u ~ U[0, 1): a point of [0, 1)^d inside the bin of level k. u is
    drawn in float64 and rounded, so that a seed gives the same points whatever the dtype of
    ``levels`` (torch draws other numbers from one seed in float32); a u that rounds up to 1
    is kept in level k's bin by :func:`level_point`, as a k + u that rounds up is.

    ``generator``: None (torch's global generator), a torch.Generator on the device of
    ``levels``, or what ``random_state`` takes (an int seed, a numpy RandomState or Generator)."""
    check_n_levels(n_levels, levels.dtype)
    if generator is not None:
        generator = device_generator(generator, levels.device, "dequantize")
    u = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=torch.float64)
    return level_point(levels, u.to(levels.dtype), n_levels)


def level_point(levels: torch.Tensor, u: torch.Tensor, n_levels: int) -> torch.Tensor:
    """y = (k + u) / L (n, d) for u in [0, 1), kept in level k's bin as floor(y L) reads it
    back (:meth:`FlowModule.sample`), in the dtype of ``levels``."""
    y = (levels + u) / n_levels
    # k + u rounds up onto k + 1 for u within half a spacing of 1 (7.6e-6 of float32 draws
    # at 256 levels and k >= 128), which reads as level k + 1, or as y = 1 at the top level;
    # and for L not a power of 2 the rounding of y and of y L can put the bin's ends one
    # level off. A step of y moves y L by more than half a spacing of k + 1, so two steps
    # down and one up reach the bin, which check_n_levels keeps 16 spacings wide or more.
    down = torch.full_like(y, -math.inf)
    for _ in range(2):
        read = torch.floor(y * n_levels)
        y = torch.where(read > levels, torch.nextafter(y, down), y)
    read = torch.floor(y * n_levels)
    return torch.where(read < levels, torch.nextafter(y, -down), y)


def logit_transform(y: torch.Tensor, alpha: float):
    """w = logit(α + (1 - 2α) y) and log|det ∂w/∂y| (n,) (Dinh et al. 2017, Sec. 4.1):
    moves [0, 1] data to the real line, where a flow's Gaussian base lives."""
    if not (is_finite_above(alpha, 0.0) and alpha < 0.5):
        raise ParameterError(
            f"alpha must be a number in (0, 0.5) (the logit's margin), got {alpha!r}; 1e-6 is usual"
        )
    v = alpha + (1 - 2 * alpha) * y
    w = torch.log(v) - torch.log1p(-v)
    log_det = (math.log1p(-2 * alpha) - torch.log(v) - torch.log1p(-v)).sum(-1)
    return w, log_det


class FlowNLL:
    """The exact negative log-likelihood of a flow per dimension (``loss``), with ``bound`` (n,)
    = log p(x) (continuous data, exact) or its dequantisation lower bound on log P(x) (8-bit
    data, one u per row). Called like every trainer objective: ``(model, x, generator)``."""

    def __call__(self, model, x, generator=None, kl_weight: float = 1.0) -> ObjectiveOutput:
        log_px = model(x, generator)  # (n,)
        log_px = log_px.float() if log_px.dtype in (torch.float16, torch.bfloat16) else log_px
        loss = -log_px.mean() / x.shape[-1]
        detached = log_px.detach()
        return ObjectiveOutput(loss, detached, detached, torch.zeros_like(detached), None)
