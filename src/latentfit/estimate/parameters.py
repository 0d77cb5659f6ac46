"""Named, constrained parameters as one unconstrained vector, and back.

Optimisers and Hessians work on a flat unconstrained vector ``u`` of the free dimensions; a
model sees a dict of natural parameters. ``ParameterLayout`` maps between the two with
``torch.distributions.biject_to`` for each parameter's constraint (exp for positive values,
sigmoid for probabilities, stick-breaking for the simplex), and a lower-Cholesky map for
covariance matrices, which ``biject_to`` does not cover because its unconstrained form is a full
matrix whose upper triangle would be ignored (a singular Hessian).

Reporting uses the *free natural coordinates*: every entry of every parameter, except that a
covariance matrix reports its lower triangle only (its upper triangle repeats it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import biject_to, constraints, transform_to

from latentfit.errors import ParameterError

__all__ = ["ParameterLayout"]


def _is_positive_definite(constraint) -> bool:
    return isinstance(constraint, type(constraints.positive_definite))


def _fill_tril(vec: torch.Tensor, d: int) -> torch.Tensor:
    rows, cols = torch.tril_indices(d, d, device=vec.device)
    mat = vec.new_zeros(d, d)  # (d, d)
    return mat.index_put((rows, cols), vec)


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: tuple[int, ...]
    constraint: object
    start: int  # first index in u
    size: int  # free dimensions in u


class ParameterLayout:
    """Where each named parameter lives in the unconstrained vector, and its transform.

    ``shapes`` gives each parameter's natural shape (``()`` for a scalar, ``(k,)`` for
    probabilities on the simplex, ``(d, d)`` for a covariance matrix) and ``constraints`` its
    ``torch.distributions.constraints`` object (``real`` when missing).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], constraints_: dict):
        slots, start = [], 0
        for name, shape in shapes.items():
            con = constraints_.get(name, constraints.real)
            shape = tuple(int(s) for s in shape)
            if _is_positive_definite(con):
                if len(shape) != 2 or shape[0] != shape[1]:
                    raise ParameterError(f"parameter {name!r} must be a square matrix, got {shape}")
                size = shape[0] * (shape[0] + 1) // 2
            elif isinstance(con, type(constraints.simplex)):
                if len(shape) != 1 or shape[0] < 2:
                    raise ParameterError(
                        f"parameter {name!r} on the simplex needs shape (k,), k >= 2"
                    )
                size = shape[0] - 1
            else:
                size = 1
                for s in shape:
                    size *= s
            slots.append(_Slot(name, shape, con, start, size))
            start += size
        self.slots: tuple[_Slot, ...] = tuple(slots)
        self.n_free = start

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    # -- unconstrained <-> natural -------------------------------------------------------------
    def to_natural(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """The natural parameters for the unconstrained vector ``u`` of shape (p,)."""
        out = {}
        for s in self.slots:
            piece = u[s.start : s.start + s.size]
            if _is_positive_definite(s.constraint):
                out[s.name] = transform_to(s.constraint)(_fill_tril(piece, s.shape[0]))
            elif isinstance(s.constraint, type(constraints.simplex)):
                out[s.name] = biject_to(s.constraint)(piece)
            else:
                out[s.name] = biject_to(s.constraint)(piece.reshape(s.shape))
        return out

    def to_unconstrained(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The vector ``u`` (p,) of ``params``; entries on the boundary come out as ±inf."""
        pieces = []
        for s in self.slots:
            value = params[s.name]
            if _is_positive_definite(s.constraint):
                raw = transform_to(s.constraint).inv(value)
                rows, cols = torch.tril_indices(s.shape[0], s.shape[0], device=value.device)
                pieces.append(raw[rows, cols])
            else:
                pieces.append(biject_to(s.constraint).inv(value).reshape(-1))
        return torch.cat(pieces)

    def on_boundary(self, params: dict[str, torch.Tensor]) -> list[str]:
        """Names of the parameters at (or past) the edge of their constraint: a rate of 0, a
        probability of 0 or 1, a simplex with an empty cell, a singular covariance."""
        out = []
        for s in self.slots:
            v = params[s.name]
            con = s.constraint
            if _is_positive_definite(con):
                bad = int(torch.linalg.cholesky_ex(v)[1]) != 0
            elif isinstance(con, type(constraints.simplex)):
                bad = bool((v <= 0).any())
            else:
                lo = getattr(con, "lower_bound", None)
                hi = getattr(con, "upper_bound", None)
                bad = (lo is not None and bool((v <= lo).any())) or (
                    hi is not None and bool((v >= hi).any())
                )
            bad = bad or not bool(torch.isfinite(v).all())
            if bad:
                out.append(s.name)
        return out

    # -- reporting coordinates ----------------------------------------------------------------
    def flat_natural(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every reported natural coordinate in one vector (m,); covariances give their tril."""
        pieces = []
        for s in self.slots:
            value = params[s.name]
            if _is_positive_definite(s.constraint):
                rows, cols = torch.tril_indices(s.shape[0], s.shape[0], device=value.device)
                pieces.append(value[rows, cols])
            else:
                pieces.append(value.reshape(-1))
        return torch.cat(pieces)

    def flat_names(self) -> list[str]:
        """Names of the entries of ``flat_natural``: ``rate``, ``probs[2]``, ``cov[1,0]``."""
        names = []
        for s in self.slots:
            if _is_positive_definite(s.constraint):
                rows, cols = torch.tril_indices(s.shape[0], s.shape[0])
                names += [f"{s.name}[{int(i)},{int(j)}]" for i, j in zip(rows, cols, strict=True)]
            elif len(s.shape) == 0:
                names.append(s.name)
            else:
                idx = torch.arange(max(1, _numel(s.shape))).reshape(s.shape)
                for multi in zip(*[t.reshape(-1).tolist() for t in _unravel(idx)], strict=True):
                    names.append(f"{s.name}[{','.join(str(i) for i in multi)}]")
        return names


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _unravel(idx: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.unravel_index(idx.reshape(-1), idx.shape))
