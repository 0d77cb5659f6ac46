"""Input validation shared by every estimator: one place that turns user data into tensors.

Every error names what is wrong and where (row, column, value) and what to try, so that
bad input never reaches a torch kernel and never becomes a silent NaN.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = [
    "as_float_tensor",
    "check_positive_int",
    "check_sample_weight",
    "first_nonfinite",
    "make_generator",
    "resolve_device",
    "resolve_dtype",
]


def resolve_dtype(dtype) -> torch.dtype:
    """Map ``"float64"``, ``"float32"``, numpy or torch dtypes to a torch floating dtype."""
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        out = {
            "float64": torch.float64,
            "double": torch.float64,
            "float32": torch.float32,
            "float": torch.float32,
        }.get(name)
        if out is None:
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if out not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return out


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


def make_generator(random_state, device=None) -> torch.Generator:
    """A ``torch.Generator`` seeded from ``random_state`` (int, None, numpy RandomState/Generator).

    Randomness is always passed explicitly: no estimator touches torch's global RNG.
    """
    gen = torch.Generator(device=resolve_device(device))
    if random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    elif isinstance(random_state, numbers.Integral):
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**31 - 1))
    elif isinstance(random_state, torch.Generator):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=random_state).item())
    else:
        raise ValueError(
            f"random_state must be None, an int or a numpy RandomState, got {random_state!r}"
        )
    gen.manual_seed(seed)
    return gen


def first_nonfinite(x: torch.Tensor) -> tuple[int, ...] | None:
    """Index of the first NaN or ±inf entry of ``x`` (row-major), or None."""
    if x.is_floating_point() and bool(torch.isfinite(x.sum())):
        return None  # one pass, no mask: a NaN or inf anywhere would make the sum non-finite
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def _describe_position(index: tuple[int, ...], columns=None) -> str:
    if len(index) == 1:
        return f"entry {index[0]}"
    row, col = index[0], index[1]
    colname = f" ({columns[col]!r})" if columns is not None and col < len(columns) else ""
    return f"row {row}, column {col}{colname}"


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
) -> torch.Tensor:
    """Convert array-like ``X`` to a floating tensor and check it.

    Raises ``ValueError`` naming the first offending row and column for NaN/inf values (unless
    ``allow_nan``: NaN is then kept as the missing-value marker, inf is still refused), for
    non-numeric values, wrong dimensionality and too few samples.
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.is_complex():
            raise ValueError(f"{name} is complex: Complex data not supported, fit real values")
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
    else:
        if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(
                f"{name} is a sparse matrix; latentfit needs dense data, convert it with X.toarray()"
            )
        arr = np.asarray(X)
        if arr.dtype.kind == "c":
            raise ValueError(f"{name} is complex: Complex data not supported, fit real values")
        if arr.dtype.kind in "OUS":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                flat = arr.reshape(arr.shape[0], -1) if arr.ndim >= 1 and arr.size else arr
                for idx in np.ndindex(flat.shape):
                    try:
                        float(flat[idx])
                    except TypeError:
                        raise TypeError(
                            f"{name} holds {flat[idx]!r} at {_describe_position(idx, columns)}: "
                            "every value's argument must be a string or a number"
                        ) from None
                    except ValueError:
                        raise ValueError(
                            f"{name} has a non-numeric value {flat[idx]!r} at "
                            f"{_describe_position(idx, columns)}; encode categories as numbers first"
                        ) from None
                raise
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # read-only memmaps: torch needs memory it may write
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if ndim is not None and t.dim() != ndim:
        if ndim == 2 and t.dim() == 1:
            raise ValueError(
                f"{name} must be 2-D (n_samples, n_features), got a 1-D array of shape "
                f"{tuple(t.shape)}. Reshape your data with X.reshape(-1, 1) for one feature or "
                "X.reshape(1, -1) for one sample"
            )
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.dim() >= 1 and t.shape[0] < min_samples:
        raise ValueError(f"{name} has {t.shape[0]} sample(s); at least {min_samples} are needed")
    if t.dim() == 2 and t.shape[1] == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is required."
        )
    t = t.to(device=device, dtype=dtype)
    if allow_nan:
        inf = torch.isinf(t)
        if bool(inf.any()):
            idx = tuple(int(i) for i in inf.nonzero()[0])
            raise ValueError(f"{name} has an infinite value at {_describe_position(idx, columns)}")
    else:
        idx = first_nonfinite(t)
        if idx is not None:
            value = t[idx].item()
            what = "NaN" if value != value else ("inf" if value > 0 else "-inf")
            hint = (
                "; pass missing='marginalize' to fit with missing values" if what == "NaN" else ""
            )
            raise ValueError(
                f"{name} contains {what} at {_describe_position(idx, columns)}: every value must "
                f"be finite{hint}"
            )
    return t


def check_sample_weight(sample_weight, n_samples: int, *, dtype, device) -> torch.Tensor:
    """Non-negative, finite weights of shape (n,), not all zero; ``None`` means all ones."""
    if sample_weight is None:
        return torch.ones(n_samples, dtype=dtype, device=device)
    w = as_float_tensor(sample_weight, name="sample_weight", dtype=dtype, device=device, ndim=None)
    if w.dim() != 1 or w.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},) to match X, got {tuple(w.shape)}"
        )
    neg = (w < 0).nonzero()
    if len(neg):
        i = int(neg[0])
        raise ValueError(f"sample_weight must be non-negative; sample {i} has weight {w[i].item()}")
    if float(w.sum()) <= 0:
        raise ValueError("sample_weight sums to zero: at least one sample needs a positive weight")
    return w


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
