"""Input validation shared by every estimator: one place that turns user data into tensors.

Every error names what is wrong and where (row, column, value) and what to try, so that
bad input never reaches a torch kernel and never becomes a silent NaN.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys
import warnings
from pathlib import PurePath

import numpy as np
import torch

from latentfit._memory import (  # the memory checks, kept importable from here
    available_memory,
    check_allocation,
    check_module_memory,
    check_sample_count,
)
from latentfit.errors import (
    ArgumentError,
    DataError,
    DataTypeError,
    ParameterError,
    PrecisionLossWarning,
    user_stacklevel,
)

__all__ = [
    "as_float_tensor",
    "as_numeric_array",
    "available_memory",
    "check_allocation",
    "check_bool",
    "check_choice",
    "check_distribution",
    "check_em_counts",
    "check_exact_integers",
    "check_feature_names",
    "check_missing",
    "check_module_memory",
    "check_n_samples",
    "check_no_nan_labels",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
    "check_sample_count",
    "check_sample_weight",
    "check_seed",
    "check_state_index",
    "check_tol",
    "checked_call",
    "device_generator",
    "draw_seed",
    "feature_names",
    "first_inexact_integer",
    "first_nonfinite",
    "is_finite_above",
    "make_generator",
    "max_inferred_categories",
    "resolve_device",
    "resolve_dtype",
    "tensors_in_dtype",
]


def resolve_dtype(dtype) -> torch.dtype:
    """Map ``"float64"``, ``"float32"``, numpy or torch dtypes to a torch floating dtype."""
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        except TypeError:
            raise ParameterError(f"dtype must be float64 or float32, got {dtype!r}") from None
        out = {
            "float64": torch.float64,
            "double": torch.float64,
            "float32": torch.float32,
            "float": torch.float32,
        }.get(name)
        if out is None:
            raise ParameterError(f"dtype must be float64 or float32, got {dtype!r}")
    if out not in (torch.float64, torch.float32):
        raise ParameterError(f"dtype must be float64 or float32, got {dtype!r}")
    return out


def tensors_in_dtype(tensors: dict, dtype: torch.dtype) -> dict:
    """``tensors`` with every floating tensor in ``dtype``, the others (counts, codes) as they
    are: how a model whose ``dtype`` was changed since its fit reads its fitted tensors."""
    return {
        k: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        for k, t in tensors.items()
    }


def resolve_device(device) -> torch.device:
    """``None`` means the CPU; strings such as ``"cuda:0"`` and ``torch.device`` are accepted.

    An unknown device name, a malformed index or a device this machine does not have is a
    :class:`~latentfit.errors.ParameterError` naming what is available.
    """
    from latentfit.errors import ParameterError

    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ParameterError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0', 'mps', ..."
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(
                f"device={device!r} was requested but no CUDA device is available; use 'cpu'"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ParameterError(
                f"device={device!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ParameterError(f"device={device!r} was requested but MPS is not available")
        return dev
    raise ParameterError(f"device={device!r} is not supported; use 'cpu' or 'cuda'")


#: The largest integer seed. torch's CPU generator (a Mersenne Twister) keeps only the low 32
#: bits of a seed, so 0 and 2**32 would give the same stream: seeds run from 0 to 2**32 - 1, as
#: numpy's RandomState and scikit-learn take them.
SEED_MAX = 2**32 - 1


def check_seed(seed, name: str = "random_state") -> int:
    """``seed`` as a plain int when it is a whole number from 0 to :data:`SEED_MAX` (a numpy
    integer too); else a ParameterError naming ``name``, the value and the range (a bool is no
    seed: ``True`` would silently be seed 1)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ParameterError(f"{name} must be an integer seed from 0 to 2**32 - 1, got {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ParameterError(
            f"{name}={seed} is out of range: a seed is an integer from 0 to 2**32 - 1 = "
            f"{SEED_MAX} (torch's generator keeps only 32 bits of a seed, so a larger one "
            "would silently give the stream of a smaller one)"
        )
    return int(seed)


def make_generator(random_state, device=None, name: str = "random_state") -> torch.Generator:
    """A ``torch.Generator`` seeded from ``random_state``: an int seed from 0 to 2**32 - 1 (the
    same stream on every call), None (fresh entropy), or a numpy RandomState or Generator or a
    torch.Generator (one seed drawn from it, so the instance advances and the next call
    differs); ``name`` is the argument's name in a message (the samplers' is ``generator``).

    Randomness is always passed explicitly: no estimator touches torch's global RNG.
    """
    gen = torch.Generator(device=resolve_device(device))
    if random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    elif isinstance(random_state, numbers.Integral):
        seed = check_seed(random_state, name)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**31 - 1))
    elif isinstance(random_state, torch.Generator):
        seed = int(
            torch.randint(
                0, 2**31 - 1, (1,), generator=random_state, device=random_state.device
            ).item()
        )  # drawn on the generator's own device: a CUDA generator cannot draw a CPU tensor
    else:
        raise ParameterError(
            f"{name} must be None, an int seed from 0 to 2**32 - 1, a numpy RandomState or "
            f"Generator, or a torch.Generator, got {random_state!r}"
        )
    gen.manual_seed(seed)
    return gen


def draw_seed(random_state, name: str = "random_state") -> int:
    """An int seed for code that takes only ints (scikit-learn's splitters, a seed shared by
    several fits), by :func:`make_generator`'s law: an int seed as it is (0 to 2**32 - 1,
    checked), anything else one draw from the generator it makes (None: fresh entropy, not
    numpy's global state; an instance: it advances)."""
    if isinstance(random_state, numbers.Integral):
        return check_seed(random_state, name)
    gen = make_generator(random_state, name=name)
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


def as_generator(generator, name: str = "generator") -> torch.Generator | None:
    """``generator`` for torch's sampling calls: None and a ``torch.Generator`` as they are,
    anything else as :func:`make_generator` takes it (an int seed, a numpy RandomState or
    Generator), so that every ``generator`` argument takes what the samplers' does."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return make_generator(generator, name=name)


def device_generator(generator, device, what: str = "the sampler") -> torch.Generator:
    """``generator`` itself when it is a ``torch.Generator`` on ``device``'s type (a CPU
    generator cannot drive a CUDA sampler: refused by name), else a new one on ``device``
    seeded from it (:func:`make_generator`)."""
    if isinstance(generator, torch.Generator):
        if generator.device.type != torch.device(device).type:
            raise ParameterError(
                f"generator is on {generator.device} but {what} runs on {device}; "
                f"pass torch.Generator(device={str(device)!r}) or an int seed"
            )
        return generator
    return make_generator(generator, device, name="generator")


def first_nonfinite(x: torch.Tensor) -> tuple[int, ...] | None:
    """Index of the first NaN or ±inf entry of ``x`` (row-major), or None."""
    if x.is_floating_point() and bool(torch.isfinite(x.sum())):
        return None  # one pass, no mask: a NaN or inf anywhere would make the sum non-finite
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


#: Every whole number up to 2**53 in magnitude is a float64; past it float64 steps by 2 or more,
#: so most larger integers (identifiers, counts) would be read as a different integer.
EXACT_INTEGER = 2**53


def first_inexact_integer(a: np.ndarray) -> tuple[int, ...] | None:
    """Index (row-major) of the first entry of the integer array ``a`` that float64 does not
    hold exactly (it would become another integer), or None. Integers of 32 bits or fewer, and
    arrays of other kinds, are always None."""
    if a.dtype.kind not in "iu" or a.dtype.itemsize < 8 or a.size == 0:
        return None
    flat = a.reshape(-1)
    if flat.max() <= EXACT_INTEGER and flat.min() >= -EXACT_INTEGER:
        return None
    where = np.flatnonzero((flat > EXACT_INTEGER) | (flat < -EXACT_INTEGER))
    ints = flat[where]
    floats = ints.astype(np.float64)
    info = np.iinfo(a.dtype)
    # floats past the integer type's range (2**63 for int64) cannot be converted back
    over = (floats >= float(info.max) + 1) | (floats < float(info.min))
    bad = over | (np.where(over, 0.0, floats).astype(a.dtype) != ints)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(where[np.argmax(bad)], a.shape))


def inexact_integer_words(value: int, read_as: float) -> str:
    """What is wrong with the integer ``value``, which float64 holds as ``read_as``."""
    if not math.isfinite(read_as):
        return f"the integer {value}, beyond the range of float64 (it would be read as inf)"
    return (
        f"the integer {value}, which float64 cannot hold exactly: it would be read as "
        f"{int(read_as)}, a different number (whole numbers are exact only up to 2**53 = "
        f"{EXACT_INTEGER:,})"
    )


def check_exact_integers(t: torch.Tensor, name: str, columns=None, row_offset: int = 0) -> None:
    """Refuse a 64-bit integer tensor holding a value that would become another integer in
    float64 (an identifier column of 17 digits, say), naming where it is; ``row_offset`` is
    the row of the whole data set at which ``t`` starts (a block of a streamed source)."""
    if t.dtype not in (torch.int64, torch.uint64):
        return
    if t.dtype == torch.int64 and t.numel():
        lo, hi = t.aminmax()  # on the tensor's device: the common case copies nothing
        if int(hi) <= EXACT_INTEGER and int(lo) >= -EXACT_INTEGER:
            return
    a = t.cpu().numpy()
    idx = first_inexact_integer(a)
    if idx is not None:
        value = int(a[idx])
        where = _describe_position((idx[0] + row_offset, *idx[1:]) if idx else idx, columns)
        raise DataError(
            f"{name} holds, at {where}, "
            f"{inexact_integer_words(value, float(value))}: leave an identifier column out of the data, "
            "or convert the array to float first (e.g. X.astype(float)) to accept the rounding"
        )


class FileColumns(list):
    """The names of columns picked from a file (None where the file names none), with each
    one's ``positions`` among the file's columns: a message about column j of the array read
    names the file's column, not j among those picked."""

    def __init__(self, names, positions):
        super().__init__(names)
        self.positions = list(positions)


def _column_words(j: int, columns=None) -> str:
    """``column j ('name')``: ``columns`` names the array's columns (a DataFrame's, a file's
    header); a :class:`FileColumns` also gives each one's position in its file."""
    positions = getattr(columns, "positions", None)
    number = positions[j] if positions is not None and j < len(positions) else j
    name = columns[j] if columns is not None and j < len(columns) else None
    return f"column {number}" + (f" ({name!r})" if name is not None else "")


def _describe_position(index: tuple[int, ...], columns=None) -> str:
    if len(index) == 0:
        return "its only value"
    if len(index) == 1:
        return f"entry {index[0]}"
    return f"row {index[0]}, {_column_words(index[1], columns)}"


def _pandas_na_as_nan(arr: np.ndarray) -> np.ndarray:
    """pandas' missing value ``pd.NA`` (of nullable Int64/Float64/boolean columns, which
    numpy reads as objects) as NaN, as scikit-learn reads it: a missing value, then refused
    or marginalised by name like any NaN, not "not a number"."""
    pd = sys.modules.get("pandas")  # pd.NA only comes from pandas, imported by its user
    if pd is None or arr.size == 0:
        return arr
    na = np.asarray(np.frompyfunc(lambda v: v is pd.NA, 1, 1)(arr), dtype=bool)
    if not na.any():
        return arr
    arr = arr.copy()
    arr[na] = np.nan
    return arr


def as_numeric_array(X, name: str = "X", columns=None) -> np.ndarray:
    """``X`` as a numeric numpy array, refusing what is not a table of numbers by name."""
    if X is None:
        raise DataError(f"{name} is None; pass an array of shape (n_samples, n_features)")
    if isinstance(X, (str, bytes, PurePath, os.PathLike)):
        raise DataError(
            f"{name} is the path or string {str(X)!r}, not an array of numbers: read the file "
            "first (latentfit.datasets.load_array(path) or numpy.loadtxt) and pass the array"
        )
    if isinstance(X, (list, tuple)) and X and all(isinstance(v, (str, PurePath)) for v in X):
        raise DataError(
            f"{name} is a list of {len(X)} strings or paths, not an array of numbers: read the "
            "files first and pass one array (stack several with numpy.concatenate)"
        )
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise DataTypeError(
            f"{name} is a sparse matrix; latentfit needs dense data, convert it with X.toarray()"
        )
    if isinstance(X, dict):
        raise DataError(
            f"{name} is a dict; pass an array or DataFrame of shape (n_samples, n_features)"
        )
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as err:
        raise DataError(
            f"{name} cannot be read as a rectangular array of numbers ({err}); every row must "
            "have the same number of values"
        ) from None
    if arr.dtype.kind == "c":
        raise DataError(f"{name} is complex: Complex data not supported, fit real values")
    if arr.dtype.kind == "M" or arr.dtype.kind == "m":
        raise DataError(f"{name} holds dates or times ({arr.dtype}); convert them to numbers first")
    if arr.dtype.names:  # a record array: each row one np.void of named fields
        fields = ", ".join(arr.dtype.names[:10]) + (", ..." if len(arr.dtype.names) > 10 else "")
        raise DataTypeError(
            f"{name} is a structured array (fields {fields}), one record a row; pass its fields "
            "as the columns of a plain array of numbers "
            "(numpy.lib.recfunctions.structured_to_unstructured(X))"
        )
    if arr.dtype.kind == "O":
        arr = _pandas_na_as_nan(arr)
    if arr.dtype.kind in "OUSV":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            flat = arr.reshape(arr.shape[0], -1) if arr.ndim >= 1 and arr.size else arr
            for idx in np.ndindex(flat.shape):
                try:
                    float(flat[idx])
                except TypeError:
                    raise DataTypeError(
                        f"{name} holds {flat[idx]!r:.60} at {_describe_position(idx, columns)}, "
                        "which is not a number: each value given as an argument must be a "
                        "real number, or a string that holds a number"
                    ) from None
                except ValueError:
                    raise DataError(
                        f"{name} has a non-numeric value {flat[idx]!r} at "
                        f"{_describe_position(idx, columns)}; every value must be a number: "
                        "encode categories as numbers first and drop text columns"
                    ) from None
            raise DataError(
                f"{name} cannot be read as an array of numbers (dtype {arr.dtype}, shape "
                f"{arr.shape}); pass a rectangular array of numbers"
            ) from None
    return arr


def _check_overflow(
    src, idx: tuple[int, ...], dtype, name: str, columns, float64_option, row_offset: int = 0
) -> None:
    """A value that is finite in the data but overflows ``dtype`` (1e300 read as float32) is
    said as such, not as an infinite value in the data; ``float64_option`` (see
    :func:`as_float_tensor`) is offered besides rescaling only where the caller has one.
    ``src`` is the data before conversion (a tensor or array); ``row_offset`` is the row of
    the whole data set at which it starts (a block of a streamed source)."""
    value = float(src[idx])
    if math.isfinite(value):
        label = str(dtype).removeprefix("torch.")
        where = _describe_position((idx[0] + row_offset, *idx[1:]) if idx else idx, columns)
        raise DataError(
            f"{name} holds {value:.3g} at {where}, beyond the range "
            f"of {label} (largest {torch.finfo(dtype).max:.3g}), in which this model computes: "
            "rescale the data (e.g. standardise the columns)"
            + (f" or use {float64_option}" if float64_option and dtype != torch.float64 else "")
        )


def _check_underflow(src, dtype, name: str, columns, float64_option) -> None:
    """A column whose every value lies below the smallest normal number of ``dtype`` (data of
    1e-300 read as float32) would be read as zeros or as numbers with few digits left: said
    by column, with the advice to rescale it or use ``float64_option``. A few tiny values
    beside ordinary ones pass, unless one would be read as 0 (:func:`_check_flushed`)."""
    if not src.is_floating_point() or src.dim() != 2 or src.numel() == 0:
        return
    tiny = torch.finfo(dtype).tiny
    if torch.finfo(src.dtype).tiny >= tiny:
        return  # the data's own type reaches no lower
    big = torch.nan_to_num(src.abs(), nan=0.0, posinf=0.0).amax(0)  # (d,)
    lost = ((big > 0) & (big < tiny)).nonzero()
    if len(lost):
        j = int(lost[0])
        label = str(dtype).removeprefix("torch.")
        raise DataError(
            f"{name}'s {_column_words(j, columns)} holds values no larger than {float(big[j]):.3g}, "
            f"below the smallest normal number of {label} ({tiny:.3g}), in which this model "
            "computes: they would be read as zeros or lose their digits. Rescale the column "
            "(e.g. standardise it)" + (f" or use {float64_option}" if float64_option else "")
        )


def _check_flushed(src, dtype, name: str, columns, float64_option, row_offset: int = 0) -> None:
    """A value of ``src`` that is not 0 but becomes 0 in ``dtype`` (1e-46 read as float32,
    whose smallest number is 1.4e-45) is refused naming its position: read as 0 it would
    change the data silently (a gamma or lognormal component refuses a 0 that was 1e-46 with
    the wrong value; a log of it is -inf where the data's is -106). Computed where ``src``
    lies (the data may be on the host and the model on a GPU): one pass for the values below
    ``dtype``'s smallest normal number, and a cast of those few. ``row_offset``: the row of
    the whole data set at which ``src`` starts (a block of a streamed source)."""
    if not src.is_floating_point() or torch.finfo(src.dtype).tiny >= torch.finfo(dtype).tiny:
        return  # the data's own type reaches no lower: nothing becomes 0
    small = (src != 0) & (src.abs() < torch.finfo(dtype).tiny)  # NaN compares False
    if not bool(small.any()):
        return
    where_small = small.nonzero()  # (m, ndim)
    lost = (src[small].to(dtype) == 0).nonzero()
    if not len(lost):
        return  # subnormal in ``dtype``, not 0
    idx = tuple(int(i) for i in where_small[int(lost[0])])
    where = _describe_position((idx[0] + row_offset, *idx[1:]) if idx else idx, columns)
    label = str(dtype).removeprefix("torch.")
    smallest = float(torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)))
    raise DataError(
        f"{name} holds {float(src[idx]):.3g} at {where}, below the "
        f"smallest number {label} holds ({smallest:.3g}), in which this model computes: it would "
        "be read as 0. Rescale the column (e.g. standardise it), set such values to 0 if they "
        "stand for zero" + (f", or use {float64_option}" if float64_option else "")
    )


#: the share of a column's variance that a narrowing cast's rounding may add unsaid
CAST_ROUNDING_SHARE = 1e-2


def _warn_cast_rounding(src, dtype, name: str, columns, float64_option) -> None:
    """Warn of a column that loses its spread when data of a wider type (float64) are read
    into ``dtype`` (float32): values near ``top`` are held to the nearest ``u`` (the type's
    spacing there), which adds a variance of about u²/12 (uniform rounding). Said
    (PrecisionLossWarning, naming the column and the row of its largest value) where that is
    over ``CAST_ROUNDING_SHARE`` of the column's variance: float64 rows of sd 1 about 1e7 read
    as float32 fitted a variance 5.6% off, about 1e9 the variance floor, without a word."""
    if not src.is_floating_point() or src.dim() != 2 or src.shape[0] < 2:
        return
    if torch.finfo(src.dtype).eps >= torch.finfo(dtype).eps:
        return  # no digits lost
    x = src.double()
    if bool(torch.isnan(x).any()):  # missing values: the slower NaN-aware passes
        top = torch.nan_to_num(x.abs(), nan=0.0).amax(0)  # (d,)
        var = (x - x.nanmean(0)).square().nanmean(0)  # (d,) NaN: a column of no values
    else:
        lo, hi = torch.aminmax(x, dim=0)
        top = torch.maximum(lo.abs(), hi.abs())  # (d,)
        var = torch.var(x, 0, correction=0)  # (d,)
    big = top.to(dtype)
    step = (torch.nextafter(big, torch.full_like(big, math.inf)) - big).double()  # (d,)
    lost = ((step.square() / 12 > CAST_ROUNDING_SHARE * var) & (var > 0)).nonzero()
    if not len(lost):
        return
    j = int(lost[0])
    i = int(torch.nan_to_num(x[:, j].abs(), nan=0.0).argmax())
    label = str(dtype).removeprefix("torch.")
    sd, u = float(var[j].sqrt()), float(step[j])
    warnings.warn(
        f"{name}'s {_column_words(j, columns)} varies by {sd:.3g} (sd) about values up to "
        f"{float(top[j]):.3g} (row {i}), where {label} holds numbers only to the nearest "
        f"{u:.3g}: read as {label}, its rounding adds about {u / math.sqrt(12) / sd:.0%} of its "
        "spread, and the fit sees the rounding, not the data. Subtract the column's mean "
        "first" + (f" or use {float64_option}" if float64_option else ""),
        PrecisionLossWarning,
        stacklevel=user_stacklevel(),
    )


def as_float_tensor(
    X,
    *,
    name: str = "X",
    dtype=torch.float64,
    device=None,
    ndim: int | None = 2,
    allow_nan: bool = False,
    min_samples: int = 1,
    columns=None,
    float64_option: str | None = "dtype=float64",
    missing_hint: bool = True,
) -> torch.Tensor:
    """Convert array-like ``X`` to a floating tensor and check it.

    Raises :class:`~latentfit.errors.DataError` naming the first offending row and column for
    NaN/inf values (unless ``allow_nan``: NaN is then kept as the missing-value marker, inf is
    still refused), for non-numeric values (strings, paths, ragged lists, objects), wrong
    dimensionality and too few samples, and for a 64-bit integer that float64 cannot hold
    exactly (past 2**53 most become another integer: an identifier column, say; a float32
    ``dtype`` then rounds as the caller chose). A value finite in ``X`` but beyond a float32
    ``dtype``, or not 0 but below its smallest number (1e-46: it would be read as 0), is said
    as such, with the advice to rescale or to use ``float64_option``: how the caller's
    user asks for float64 (an estimator's ``dtype=float64``, a command-line option), or None
    where the caller offers no way (a fixed float32, a command line without such an option).
    A NaN in data is said with the ways to handle missing values; ``missing_hint=False`` for
    an argument that is not data (weights, parameters, priors), where none of them applies.
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.is_complex():
            raise DataError(f"{name} is complex: Complex data not supported, fit real values")
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
    else:
        if columns is None and hasattr(X, "columns") and hasattr(X, "iloc"):
            columns = list(X.columns)
        arr = as_numeric_array(X, name, columns)
        arr = np.ascontiguousarray(arr).reshape(arr.shape)  # a 0-d value stays 0-d
        if not arr.flags.writeable:  # read-only memmaps: torch needs memory it may write
            arr = arr.copy()
        if arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)  # float16 has no torch CPU kernels for everything
        t = torch.from_numpy(arr)
    if ndim is not None and t.dim() != ndim:
        if ndim == 2 and t.dim() == 1:
            raise DataError(
                f"{name} must be 2-D (n_samples, n_features), got a 1-D array of shape "
                f"{tuple(t.shape)}. Reshape your data with X.reshape(-1, 1) for one feature or "
                "X.reshape(1, -1) for one sample"
            )
        raise DataError(
            f"{name} must be {ndim}-D (n_samples, n_features), got {t.dim()}-D shape "
            f"{tuple(t.shape)}"
            + ("; flatten each sample first, e.g. X.reshape(len(X), -1)" if t.dim() > 2 else "")
        )
    if t.dim() >= 1 and t.shape[0] < min_samples:
        raise DataError(
            f"{name} has {t.shape[0]} sample(s) (shape {tuple(t.shape)}); at least "
            f"{min_samples} are needed"
        )
    if t.dim() == 2 and t.shape[1] == 0:
        raise DataError(
            f"{name} has 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is required."
        )
    check_exact_integers(t, name, columns)
    src, t = t, t.to(device=device, dtype=dtype)
    _check_underflow(src, dtype, name, columns, float64_option)
    _check_flushed(src, dtype, name, columns, float64_option)
    if allow_nan:
        inf = torch.isinf(t)
        if bool(inf.any()):
            idx = tuple(int(i) for i in inf.nonzero()[0])
            _check_overflow(src, idx, dtype, name, columns, float64_option)
            where = _describe_position(idx, columns)
            if not missing_hint:  # a parameter or weights: no rows to drop, nothing missing
                raise DataError(f"{name} has an infinite value at {where}")
            what = "inf" if t[idx].item() > 0 else "-inf"
            raise DataError(
                f"{name} contains {what} at {where}: an infinite value is not a missing one "
                "(NaN marks those) and no density is finite there; drop the row, or make the "
                "value NaN if it was not observed"
            )
    else:
        idx = first_nonfinite(t)
        if idx is not None:
            _check_overflow(src, idx, dtype, name, columns, float64_option)
            value = t[idx].item()
            what = "NaN" if value != value else ("inf" if value > 0 else "-inf")
            # Said for every model: only some take missing values (they have missing=).
            hint = (
                "; drop or impute those rows, or use a model with a missing= argument "
                "(GaussianMixture, GaussianHMM, GaussianHSMM, FactorAnalysis, PPCA) and pass "
                "missing='marginalize'"
                if what == "NaN" and missing_hint
                else ""
            )
            raise DataError(
                f"{name} contains {what} at {_describe_position(idx, columns)}: every value must "
                f"be finite{hint}"
            )
    if missing_hint:  # data, not weights or parameters
        _warn_cast_rounding(src, dtype, name, columns, float64_option)
    return t


def check_sample_weight(sample_weight, n_samples: int, *, dtype, device) -> torch.Tensor:
    """Non-negative, finite weights of shape (n,), not all zero; ``None`` means all ones and a
    number that weight for every sample (scikit-learn's ``_check_sample_weight``)."""
    if sample_weight is None:
        return torch.ones(n_samples, dtype=dtype, device=device)
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        # checked below as any weights (a float32 model's range included)
        sample_weight = torch.full((n_samples,), float(sample_weight), dtype=torch.float64)
    w = as_float_tensor(
        sample_weight,
        name="sample_weight",
        dtype=dtype,
        device=device,
        ndim=None,
        missing_hint=False,
    )
    if w.dim() != 1 or w.shape[0] != n_samples:
        raise DataError(
            f"sample_weight must have shape ({n_samples},) to match X, got {tuple(w.shape)}"
        )
    neg = (w < 0).nonzero()
    if len(neg):
        i = int(neg[0])
        raise DataError(f"sample_weight must be non-negative; sample {i} has weight {w[i].item()}")
    total = float(w.double().sum())
    if total <= 0:
        raise DataError("sample_weight sums to zero: at least one sample needs a positive weight")
    if not total <= torch.finfo(w.dtype).max:
        # Σ w is what an M-step, and a weighted score, divides by
        raise DataError(weight_overflow_message(total, w.dtype))
    top = float(w.max())
    if top < torch.finfo(w.dtype).tiny:
        # subnormal numbers keep fewer digits the smaller they are, and their products with
        # responsibilities underflow to 0: a fit of such weights is not the fit of w / max(w)
        label = str(w.dtype).removeprefix("torch.")
        raise DataError(
            f"sample_weight's largest value, {top:.3g}, is below {label}'s smallest normal "
            f"number ({torch.finfo(w.dtype).tiny:.3g}), where the weights lose their digits. "
            "Rescale sample_weight (e.g. divide it by its maximum; the fitted parameters "
            "depend only on the ratios of the weights)."
        )
    return w


def weight_overflow_message(total: float, dtype: torch.dtype, where: str = "") -> str:
    """The words about sample weights summing to ``total`` past ``dtype``'s largest number
    (``where``: the row by which they do, for weights read in blocks)."""
    big = torch.finfo(dtype).max
    label = str(dtype).removeprefix("torch.")
    return (
        f"sample_weight sums to {total:.3g}{where}, which overflows {label} (largest number "
        f"{big:.3g}): the weights overflow {label}. Rescale sample_weight (e.g. divide it by "
        "its maximum; the fitted parameters depend only on the ratios of the weights)"
        + (", or use float64." if dtype != torch.float64 else ".")
    )


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_distribution(p: torch.Tensor, name: str) -> None:
    """Rows of ``p`` must be probability vectors (hmmlearn's _check_sum_1, naming the row)."""
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ParameterError(f"{name} must hold finite, non-negative probabilities")
    s = p.sum(-1)
    bad = (~torch.isclose(s, torch.ones_like(s), rtol=0, atol=1e-6)).nonzero()
    if len(bad):
        if p.dim() == 1:
            raise ParameterError(f"{name} must sum to 1, got {s.item():.6g}")
        i = int(bad[0][0])
        raise ParameterError(f"{name} rows must sum to 1; row {i} sums to {s[i].item():.6g}")


def check_state_index(value, n_states: int, name: str = "currstate") -> None:
    """``value`` is None or the index of one of ``n_states`` states (ParameterError naming
    ``name`` otherwise)."""
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= value < n_states
    ):
        raise ParameterError(f"{name} must be a state index 0..{n_states - 1}, got {value!r}")


def max_inferred_categories(n_samples: int) -> int:
    """The most categories (symbols) a model infers from the largest code in the data:
    max(n_samples, 1024). Codes are dense when every code 0..max can appear among the n
    samples; a larger code is almost always a stray value or an identifier, and inferring
    from it would size the parameters by that value (10**9 symbols: 16 GB per state). Give
    the number of categories explicitly to go beyond."""
    return max(int(n_samples), 1024)


# ---------------------------------------------------------------------- column names
def feature_names(X) -> np.ndarray | None:
    """The column names of a DataFrame-like ``X`` when they are all strings, else None
    (scikit-learn's rule: mixed or integer column names are not recorded)."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "shape"):
        return None
    names = np.asarray(list(cols), dtype=object)
    if len(names) and all(isinstance(c, str) for c in names):
        return names
    return None


def check_feature_names(estimator, X, *, reset: bool) -> None:
    """scikit-learn's check of column names: at fit (``reset``) record ``feature_names_in_``
    from a DataFrame's string columns (and forget names of an earlier fit otherwise); later,
    refuse a DataFrame whose columns differ from the fitted ones by name or order, naming both
    lists. An array without names is accepted (its columns are taken in the fitted order)."""
    names = feature_names(X)
    if reset:
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    fitted = getattr(estimator, "feature_names_in_", None)
    if names is None or fitted is None:
        return
    fitted = [str(c) for c in fitted]
    given = [str(c) for c in names]
    if given != fitted:
        what = "in a different order" if sorted(given) == sorted(fitted) else "different"
        raise DataError(
            f"X has feature names {given} but {type(estimator).__name__} was fitted with "
            f"{fitted}: the columns are {what}. Select them as in fit, e.g. X[{fitted}]"
        )


def check_em_counts(n_components: int, n_init: int, max_iter: int) -> None:
    """n_components ≥ 1, n_init ≥ 1, max_iter ≥ 0."""
    check_positive_int(n_components, "n_components")
    check_positive_int(n_init, "n_init")
    check_positive_int(max_iter, "max_iter", minimum=0)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool when it is ``True`` or ``False`` (numpy's too); ParameterError
    naming ``name`` otherwise: a string such as ``"no"`` or ``"False"``, a number or None would
    otherwise count by its truth value, ``"no"`` as true."""
    if not isinstance(value, bool | np.bool_):
        raise ParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, choices: tuple) -> None:
    """ParameterError naming ``name``, the choices (as a list, not a tuple's repr) and the
    value when ``value`` is not one of ``choices``."""
    if value not in choices:
        said = ", ".join(repr(c) for c in choices)
        raise ParameterError(f"{name} must be one of {said}; got {value!r}")


def _is_real(value) -> bool:
    """A plain real number (Python or numpy scalar), not a bool, a string or an array."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def is_finite_above(value, bound: float, *, inclusive: bool = False) -> bool:
    """Whether ``value`` is a plain finite number > ``bound`` (>= with ``inclusive``): the
    rule of :func:`check_non_negative` and :func:`check_positive`, also the rule of the
    model-file fields of those kinds (:func:`latentfit.io.check_fields`)."""
    if not (_is_real(value) and math.isfinite(value)):
        return False
    return value >= bound if inclusive else value > bound


def check_non_negative(value, name: str) -> None:
    """A finite number >= 0 (NaN and inf refused: neither is a setting EM can use)."""
    if not is_finite_above(value, 0.0, inclusive=True):
        raise ParameterError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(value, name: str, *, above: float = 0.0, bound: str = "0") -> None:
    """A finite number > ``above`` (0 unless given; ``bound`` says it in the message): a
    concentration, a precision, a scale. NaN, inf and bools are refused."""
    if not is_finite_above(value, above):
        raise ParameterError(f"{name} must be a finite number > {bound}, got {value!r}")


def check_tol(value, name: str = "tol", *, allow_negative: bool = False) -> None:
    """A convergence tolerance: a number, not NaN and not +inf (which would stop every fit
    after one iteration). With ``allow_negative`` (the HMMs, as hmmlearn) any value down to
    -inf is accepted and means "run every iteration"; otherwise it must be >= 0."""
    ok = _is_real(value) and not math.isnan(value) and value != math.inf
    if ok and not allow_negative:
        ok = value >= 0
    if not ok:
        what = (
            "a number below +inf (-inf: run every iteration)"
            if allow_negative
            else ("a finite number >= 0")
        )
        raise ParameterError(f"{name} must be {what}, got {value!r}; e.g. {name}=1e-3")


def check_no_nan_labels(arr: np.ndarray, name: str, what: str) -> None:
    """Refuse a NaN among known labels ``arr`` (n,) (``what``: "component" or "state"),
    naming its entry: an unknown label is -1 (a column of labels read with NaN where none is
    known casts to a stray integer with ``astype(int)``)."""
    if arr.dtype.kind != "f":
        return
    nan = np.flatnonzero(np.isnan(arr))
    if len(nan):
        raise DataError(
            f"{name}[{int(nan[0])}] is NaN: mark a sample whose {what} is unknown with -1, "
            f"e.g. np.where(np.isnan({name}), -1, {name}).astype(int)"
        )


def check_missing(missing) -> None:
    if missing not in ("error", "marginalize"):
        raise ParameterError(f"missing must be 'error' or 'marginalize', got {missing!r}")


def check_n_samples(n: int, k: int) -> None:
    """At least as many samples as components (scikit-learn's message)."""
    if n < k:
        raise DataError(
            f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}: "
            "every component needs a sample to start from; pass more rows or a smaller "
            "n_components"
        )


def check_count_range(X: torch.Tensor, what: str = "X") -> None:
    """Refuse whole counts at or beyond 2 / eps of ``X``'s dtype (2^53 in float64, 2^24 in
    float32): above it the dtype does not hold every whole number (the data were already
    rounded on the way in) and a Poisson or multinomial log-likelihood, k log λ − λ −
    log Γ(k + 1), cancels terms of size k log k to nothing. Names the first entry beyond it."""
    limit = 2.0 / torch.finfo(X.dtype).eps
    big = X >= limit
    if not bool(big.any()):
        return
    index = tuple(int(i) for i in big.nonzero()[0])
    place = f"{what}[{', '.join(map(str, index))}]"
    bits = round(math.log2(limit))
    remedy = (
        "fit with dtype='float64'"
        if X.dtype != torch.float64
        else "model a rescaled quantity (e.g. counts in thousands) instead"
    )
    raise DataError(
        f"{place} = {X[index].item():.4g} is a count at or beyond 2^{bits} ({limit:.3g}), above "
        f"which {str(X.dtype).replace('torch.', '')} holds neither every whole number nor the "
        f"digits of a count model's log-likelihood; {remedy}"
    )


def checked_call(example: str):
    """Decorate a public function so that a call whose arguments do not fit its signature (its
    arguments swapped, ``fit_mle(data, family="gamma")``; one missing or unknown) raises an
    :class:`~latentfit.errors.ArgumentError` saying the order it takes them in, with
    ``example``, instead of Python's bare ``TypeError``."""

    def decorate(func):
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        usage = f"{func.__name__}({', '.join(positional)}, ...)"

        @functools.wraps(func)
        def call(*args, **kwargs):
            try:
                sig.bind(*args, **kwargs)
            except TypeError as err:
                twice = [n for n in positional[: len(args)] if n in kwargs]
                missing = [
                    p.name
                    for p in params
                    if p.default is p.empty
                    and p.name not in kwargs
                    and p.kind is p.POSITIONAL_OR_KEYWORD
                    and positional.index(p.name) >= len(args)
                ]
                if twice:
                    i = positional.index(twice[0])
                    what = (
                        f"got {twice[0]} twice: as argument {i + 1} (of type "
                        f"{type(args[i]).__name__}) and as {twice[0]}="
                    )
                elif missing:
                    what = "needs " + " and ".join(missing)
                else:  # an unknown keyword, too many arguments: Python's words
                    what = str(err).split("() ", 1)[-1]
                raise ArgumentError(
                    f"{func.__name__}() {what}: it takes {usage} in that order, e.g. {example}"
                ) from None
            return func(*args, **kwargs)

        return call

    return decorate
