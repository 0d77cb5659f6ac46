"""What the covariances of the sequence models' files must be: the shape and constraint
(:class:`latentfit.io.Stored`) of a stack of covariances of each ``covariance_type``."""

from __future__ import annotations

from latentfit.io import Stored

__all__ = ["covariance_stored"]


def covariance_stored(covariance_type: str, k: int, d: int | None, *, per=()) -> Stored:
    """The stored covariances of ``k`` states (each with ``per`` further leading axes, e.g.
    ``(n_mix,)``) of ``covariance_type`` over ``d`` features (None: unknown, any shape):
    variances > 0 (spherical, diag) or symmetric positive-definite matrices (full, tied; tied
    has one per model, or one per state with ``per``)."""
    lead = (k, *per)
    shapes = {
        "spherical": lead,
        "diag": (*lead, d),
        "full": (*lead, d, d),
        "tied": (k, d, d) if per else (d, d),
    }
    shape = shapes.get(covariance_type)
    if shape is None or None in shape:
        shape = None
    return Stored(shape, "pd" if covariance_type in ("full", "tied") else "positive")
