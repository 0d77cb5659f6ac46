"""Column means and standard deviations that neither overflow nor underflow.

``x.std(0)`` squares the deviations: a column holding 1e300 (finite, valid float64 data) gives
inf, and a standardisation by it maps every value to 0. Dividing each column by its largest
|value| first and multiplying back keeps every finite column's moments finite.
"""

from __future__ import annotations

import torch

__all__ = ["column_moments"]


def column_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sd) of the columns of ``x`` (n, d), each (d,); sd with Bessel's correction
    (``torch.std``'s default), 0 for a single row or a constant column."""
    size = x.abs().amax(0).clamp_min(torch.finfo(x.dtype).tiny)  # (d,)
    u = x / size  # (n, d), every entry in [-1, 1]
    mean = u.mean(0) * size
    sd = (u.std(0) if x.shape[0] > 1 else torch.zeros_like(size)) * size
    return mean, sd
