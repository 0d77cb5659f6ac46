"""Column means and standard deviations that neither overflow nor underflow.

``x.std(0)`` squares the deviations: a column holding 1e300 (finite, valid float64 data) gives
inf, and a standardisation by it maps every value to 0. Dividing each column by its largest
|value| first and multiplying back keeps every finite column's moments finite.
"""

from __future__ import annotations

import torch

__all__ = ["column_moments", "standard_scale"]


def column_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sd) of the columns of ``x`` (n, d), each (d,); sd with Bessel's correction
    (``torch.std``'s default), 0 for a single row or a constant column."""
    size = x.abs().amax(0).clamp_min(torch.finfo(x.dtype).tiny)  # (d,)
    u = x / size  # (n, d), every entry in [-1, 1]
    mean = u.mean(0) * size
    sd = (u.std(0) if x.shape[0] > 1 else torch.zeros_like(size)) * size
    return mean, sd


def standard_scale(sd: torch.Tensor) -> torch.Tensor:
    """The scale (d,) that standardises columns of standard deviations ``sd`` (d,): each
    column's own sd, whatever the data's units, and 1 for a column without spread (0, or
    below the dtype's smallest normal number, whose reciprocal overflows). A fixed floor
    (1e-3, 1e-6) in its place left columns of spread 1e-4 (or 1e-7) unstandardised: a
    density trained on x·1e-4 was not the density of x mapped."""
    return torch.where(sd >= torch.finfo(sd.dtype).tiny, sd, torch.ones_like(sd))
