"""The settings of an HMM's constructor that are not counts: parameter letters and priors.

Checked in ``BaseHMM._check_parameters`` before any data is read, and the priors' shapes again
once the data give the number of features, so that a letter or a prior that means nothing is
named instead of ignored, turned into NaN parameters or met as a tensor error in the M-step
(hmmlearn takes such settings silently).
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import numpy as np

from latentfit.errors import ParameterError

__all__ = ["Prior", "check_letters", "check_prior", "check_priors", "check_values"]


def check_letters(model) -> None:
    """``params`` and ``init_params``: strings of the model's parameter letters (those of its
    default ``params``: every parameter)."""
    letters = _default_letters(type(model))
    for name in ("params", "init_params"):
        value = getattr(model, name)
        if not isinstance(value, str):
            raise ParameterError(f"{name} must be a string of letters, got {value!r}")
        unknown = sorted(set(value) - set(letters or value))
        if unknown:
            raise ParameterError(
                f"{name}={value!r} holds {', '.join(map(repr, unknown))}, which names no "
                f"parameter of {type(model).__name__}: its letters are {letters!r} (any "
                "subset, in any order)"
            )


def _default_letters(cls) -> str | None:
    """The letters a model's ``params`` takes: those of its default (every parameter)."""
    param = inspect.signature(cls.__init__).parameters.get("params")
    default = None if param is None else param.default
    return default if isinstance(default, str) and default else None


class Prior(NamedTuple):
    """What one prior setting of an HMM must be (see :func:`check_priors`).

    ``sign``: ``"positive"`` (> 0: a Dirichlet concentration), ``"nonnegative"`` (>= 0: a
    weight, a Gamma parameter, a variance scale), ``"any"`` (a mean; a shape or degrees of
    freedom whose hmmlearn default is negative) or ``"matrix"`` (a scale matrix: its
    diagonal >= 0, other entries of any sign). ``shapes``: the shapes the M-step combines it
    with (it must broadcast to one of them), None while the number of features is not known.
    ``meaning``: what the numbers are, for the message."""

    sign: str
    shapes: tuple[tuple[int, ...], ...] | None
    meaning: str


_SIGNS = {
    "positive": ("finite, positive numbers", lambda a: a > 0),
    "nonnegative": ("finite numbers >= 0", lambda a: a >= 0),
    "any": ("finite numbers", lambda a: np.ones(a.shape, dtype=bool)),
}


def check_priors(model, d: int | None = None) -> None:
    """Check every prior of ``model`` (its ``_prior_specs(d)``: name -> :class:`Prior`), the
    one check of every HMM's and HSMM's priors: called with the settings (``d`` None: the
    values, and the shapes that depend on ``n_components`` only) and again once the data fix
    the number of features ``d`` (every shape)."""
    for name, spec in model._prior_specs(d).items():
        check_prior(getattr(model, name, None), name, spec)


def check_prior(value, name: str, spec: Prior) -> None:
    """ParameterError naming ``name`` unless ``value`` (None: the model's default) is a number
    or an array of numbers of the sign of ``spec`` that broadcasts to one of its shapes;
    the message names the offending entry or shape and what the prior takes."""
    if value is None:
        return
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{name} must be a number or an array of numbers ({spec.meaning}), got {value!r:.80}"
        ) from None
    shape = None
    if spec.shapes is not None:
        shape = next((s for s in spec.shapes if _broadcasts(a.shape, s)), None)
        if shape is None:
            expected = " or ".join(map(str, spec.shapes))
            raise ParameterError(
                f"{name} has shape {a.shape}, which does not broadcast to {expected} "
                f"({spec.meaning}); pass a number, or an array of shape {spec.shapes[0]}"
            )
    bad = ~np.isfinite(a)
    if spec.sign == "matrix":
        what = "finite numbers, with a diagonal >= 0"
        if shape is not None and len(shape) >= 2:  # the diagonal of the matrices it gives
            a = np.broadcast_to(a, shape)
            n = min(shape[-2:])
            diag = np.zeros(shape, dtype=bool)
            diag[..., range(n), range(n)] = True
            bad = ~np.isfinite(a) | (diag & ~(a >= 0))
        elif a.ndim == 0:  # a number added to every entry
            bad |= ~(a >= 0)
    else:
        what, ok = _SIGNS[spec.sign]
        bad |= ~ok(a)
    if bad.any():
        where = "" if a.ndim == 0 else f" at index {tuple(int(i) for i in np.argwhere(bad)[0])}"
        raise ParameterError(
            f"{name} must hold {what} ({spec.meaning}); it holds {float(a[bad][0])!r}{where}"
        )


def _broadcasts(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def check_values(
    arr: np.ndarray, name: str, *, positive: bool = False, nonnegative: bool = False, got=""
) -> None:
    """ParameterError naming ``name`` unless every entry of ``arr`` is finite (and > 0 when
    ``positive``, >= 0 when ``nonnegative``); ``got`` ends the message (the value as given)."""
    bad = ~np.isfinite(arr)
    if positive:
        bad |= ~(arr > 0)
    elif nonnegative:
        bad |= ~(arr >= 0)
    if bad.any():
        what = "finite, positive" if positive else "finite, >= 0" if nonnegative else "finite"
        raise ParameterError(f"{name} must hold {what} numbers{got}")
