"""The oracle every property test applies: a call ends in success or in a documented error.

A case passes when the call returns (and what it returns is checked by the test), or when it
raises an instance of ``latentfit.errors.DOCUMENTED_ERRORS`` whose message is not empty. Any
other exception (a raw ``IndexError``, torch's ``RuntimeError``, a plain ``ValueError`` that
is not a ``LatentfitError``) propagates unchanged, so hypothesis reports each distinct failure
at its origin, with a note naming the call that was being made.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from hypothesis import Phase, settings

from latentfit.errors import DOCUMENTED_ERRORS

#: Peak address-space growth a memory-sensitive case may cause before latentfit refuses it.
MEMORY_BOUND_BYTES = 2 * 1024**3


def budget(n: int) -> settings:
    """``settings`` with ``n`` examples under the "ci" profile (100 examples by default),
    scaled with the loaded profile's ``max_examples`` (20x under HYPOTHESIS_PROFILE=dev).

    Under "ci" a failing case is reported as found, unshrunk: shrinking a fit can take minutes
    and `make test` must stay bounded; HYPOTHESIS_PROFILE=dev shrinks to a minimal case."""
    scale = settings.default.max_examples / 100
    phases = settings.default.phases
    if settings.default.derandomize:  # "ci": report the failing case as found, in bounded time
        phases = tuple(p for p in phases if p is not Phase.shrink)
    return settings(max_examples=max(1, round(n * scale)), phases=phases)


class Documented(Exception):
    """Raised by :func:`attempt` in place of a documented error, to end a case early."""


def attempt(what: str, fn, *args, **kwargs):
    """Call ``fn``: return its result, or raise :class:`Documented` for a documented error
    with a message. Anything else propagates with a note naming ``what``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except DOCUMENTED_ERRORS as err:
        assert str(err).strip(), f"{what}: {type(err).__name__} raised with an empty message"
        raise Documented(f"{what}: {type(err).__name__}: {err}") from err
    except Exception as err:
        err.add_note(
            f"{what} raised {type(err).__name__}, which is not one of latentfit's documented "
            "errors (latentfit.errors.DOCUMENTED_ERRORS)"
        )
        raise


def snapshot(value):
    """A deep copy of an input, to check later that a call did not write into it."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)


def assert_unchanged(before, after, what: str) -> None:
    """``after`` holds the same values (and dtype) as the snapshot ``before``."""
    if isinstance(before, torch.Tensor):
        same = before.dtype == after.dtype and before.shape == after.shape
        same = same and bool(torch.equal(before, after) or _nan_equal(before, after))
    elif isinstance(before, np.ndarray):
        same = before.dtype == after.dtype and before.shape == after.shape
        if same and before.dtype == object:  # deep copies: compare values, NaN equal to NaN
            same = all(
                a is b or _same_value(a, b)
                for a, b in zip(before.ravel(), after.ravel(), strict=True)
            )
        elif same:
            same = np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")
    elif hasattr(before, "equals"):  # pandas
        same = before.equals(after) and list(before.columns) == list(after.columns)
    else:
        same = _same_list(before, after)
    assert same, f"{what} wrote into its input: before {before!r}, after {after!r}"


def _same_value(a, b) -> bool:
    try:
        return bool(a == b) or (a != a and b != b)
    except Exception:
        return repr(a) == repr(b)


def _same_list(a, b) -> bool:
    try:
        return bool(a == b) or repr(a) == repr(b)
    except Exception:
        return repr(a) == repr(b)


def _nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not a.is_floating_point():
        return False
    return bool(torch.equal(torch.nan_to_num(a, nan=0.5), torch.nan_to_num(b, nan=0.5))) and bool(
        torch.equal(torch.isnan(a), torch.isnan(b))
    )


def numeric_values(value):
    """The floating arrays inside a fitted attribute (tensor, array, float, list of them)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            yield value
    elif isinstance(value, float):
        yield np.asarray(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from numeric_values(v)


def assert_finite_fitted(model, after: str = "a fit") -> None:
    """Every public fitted attribute (name ending in ``_``) holds finite numbers only."""
    for name in dir(model):
        if name.startswith("_") or not name.endswith("_") or name.endswith("__"):
            continue
        try:
            value = getattr(model, name)
        except Exception:  # properties that need something the model does not have
            continue
        for arr in numeric_values(value):
            assert np.all(np.isfinite(arr)), (
                f"{type(model).__name__}.{name} holds non-finite values after {after} that "
                f"raised no error: {arr!r}"
            )


def assert_no_nan(value, what: str) -> None:
    """Outputs of predict/score/sample: NaN is never an answer."""
    for arr in numeric_values(value):
        assert not np.any(np.isnan(arr)), f"{what} returned NaN without an error: {arr!r}"
