"""The settings of an HMM's constructor that are not counts: parameter letters and priors.

Checked in ``BaseHMM._check_parameters`` (and the Gaussian models' own), before any data is
read, so that a letter or a prior that means nothing is named instead of ignored or turned
into NaN parameters (hmmlearn takes both silently).
"""

from __future__ import annotations

import inspect

import numpy as np

from latentfit.errors import ParameterError

__all__ = ["check_letters", "check_prior", "check_values"]


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


def check_prior(value, name: str, *, positive: bool, sign: bool = True) -> None:
    """A prior's setting, a number or an array of them (None: the model's default): finite,
    and positive (a Dirichlet concentration, a prior variance) or at least zero (a weight);
    of any sign with ``sign=False`` (a mean)."""
    if value is None:
        return
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{name} must be a number or an array of numbers, got {value!r}"
        ) from None
    check_values(
        a,
        name,
        positive=sign and positive,
        nonnegative=sign and not positive,
        got=f", got {value!r}",
    )


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
