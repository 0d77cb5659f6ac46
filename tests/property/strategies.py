"""Hypothesis strategies for what users hand latentfit: good data, nearly good data, and junk.

``matrices(kind)`` starts from data a model of that kind accepts ("real" Gaussian clusters,
"binary" 0/1, "codes" small category codes, "counts" Poisson counts) and then applies a few
corruptions: NaN/inf at random places, huge (1e300) and tiny (1e-300) values, constant and
duplicated columns, 0 or 1 rows, 1-D and 3-D shapes, int/bool/float32/object dtypes, and
containers other than arrays (lists, tensors, DataFrames, strings, paths). Base values come from
a drawn seed so that a failing case prints in a few numbers and replays exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hypothesis import strategies as st

KINDS = ("real", "positive", "unit", "simplex", "binary", "codes", "counts")

CORRUPTIONS = (
    "nan",
    "inf",
    "-inf",
    "huge",
    "tiny",
    "constant_column",
    "duplicate_column",
    "duplicate_rows",
    "negative",
    "fraction",
    "big_code",
    "scale_up",
)

CONTAINERS = ("numpy", "numpy", "numpy", "torch", "list", "dataframe", "string", "path")
DTYPES = ("float64", "float64", "float32", "int64", "bool", "object", "object_text")
SHAPES = ("2d", "2d", "2d", "2d", "1d", "3d")


def base_values(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float64 data that a model of ``kind`` accepts."""
    rng = np.random.default_rng(seed)
    if kind == "real":
        centres = rng.normal(0, 5, size=(2, d))
        return centres[rng.integers(0, 2, n)] + rng.normal(size=(n, d))
    if kind == "positive":
        return np.abs(rng.normal(3, 2, size=(n, d))) + 0.1
    if kind == "unit":
        return rng.beta(2.0, 3.0, size=(n, d))
    if kind == "simplex":
        return rng.dirichlet(np.ones(d + 1), size=n)
    if kind == "binary":
        return (rng.random((n, d)) < rng.random(d)).astype(float)
    if kind == "codes":
        return rng.integers(0, 3, size=(n, d)).astype(float)
    return rng.poisson(rng.choice([0.5, 3.0, 20.0], size=d), size=(n, d)).astype(float)


@st.composite
def corrupt(draw, X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Apply 0-3 corruptions to a copy of ``X``; return it and what was done."""
    X = X.copy()
    n, d = X.shape
    done = []
    for what in draw(st.lists(st.sampled_from(CORRUPTIONS), max_size=3)):
        if n == 0:
            break
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, d - 1))
        if what == "nan":
            X[i, j] = np.nan
        elif what == "inf":
            X[i, j] = np.inf
        elif what == "-inf":
            X[i, j] = -np.inf
        elif what == "huge":
            X[i, j] = draw(st.sampled_from([1e300, -1e300, 1.7e308, 1e38, 3e38]))
        elif what == "tiny":
            X[:, j] = X[:, j] * 1e-300
        elif what == "constant_column":
            X[:, j] = X[0, j]
        elif what == "duplicate_column":
            X[:, j] = X[:, (j + 1) % d]
        elif what == "duplicate_rows":
            X[:] = X[i]
        elif what == "negative":
            X[i, j] = -abs(X[i, j]) - 1
        elif what == "fraction":
            X[i, j] = X[i, j] + 0.5
        elif what == "big_code":
            X[i, j] = draw(st.sampled_from([50, 1000, 2**31 + 7]))
        elif what == "scale_up":
            X = X * 1e6 + 1e7
        done.append(f"{what}@({i},{j})")
    return X, done


class Case:
    """What a test hands the estimator (``X``), with a short description for failure reports."""

    def __init__(self, X, description: str, columns=None):
        self.X = X
        self.description = description
        self.columns = columns

    def __repr__(self) -> str:
        return f"Case({self.description}; X={self.X!r})"


def _with_dtype(X: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "object":
        return X.astype(object)
    if dtype == "object_text":
        out = X.astype(object)
        if out.size:
            out.flat[0] = "abc"
        return out
    with np.errstate(all="ignore"):
        return X.astype(dtype)


@st.composite
def matrices(draw, kind: str = "real", min_rows: int = 0) -> Case:
    """A data argument for a model of ``kind``: usually (n, d) numbers, often corrupted."""
    n = draw(st.sampled_from([0, 1, 2, 3, 6, 12, 30, 30, 60, 60]).filter(lambda m: m >= min_rows))
    d = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    X = base_values(kind, n, d, seed)
    # Half the cases are clean data in a usual container, so that fits succeed often enough
    # for predict / sample / save + load to be exercised; the other half are spoilt.
    clean = draw(st.booleans())
    done = []
    if not clean:
        X, done = draw(corrupt(X))
    dtype = draw(st.sampled_from(("float64", "float32") if clean else DTYPES))
    X = _with_dtype(X, dtype)
    shape = draw(st.sampled_from(("2d",) if clean else SHAPES))
    if shape == "1d":
        X = X[:, 0]
    elif shape == "3d":
        X = X.reshape(*X.shape, 1)  # corruption may have changed its rows or columns
    container = draw(st.sampled_from(("numpy", "torch", "dataframe") if clean else CONTAINERS))
    desc = f"{kind} n={n} d={d} seed={seed} {done} {dtype} {shape} {container}"
    columns = None
    if container == "torch" and X.dtype != object:
        X = torch.from_numpy(np.ascontiguousarray(X))
    elif container == "list":
        X = X.tolist()
    elif container == "dataframe" and X.ndim == 2:
        columns = list(draw(column_names(X.shape[1])))
        if not clean and draw(st.booleans()):
            columns = [columns[0]] * len(columns)  # duplicated names
        X = pd.DataFrame(X, columns=columns)
    elif container in ("string", "path"):
        X = "data.csv" if container == "string" else Path("data.csv")
    return Case(X, desc, columns)


def column_names(d: int):
    """Distinct column names for a DataFrame of d columns."""
    return st.permutations(["a", "b", "c", "d", "e"][: max(d, 1) + 2]).map(lambda p: p[:d])


def reframe(df: pd.DataFrame, how: str) -> pd.DataFrame:
    """The same values with wrong column names: reordered, renamed, duplicated or extra."""
    cols = list(df.columns)
    if how == "reordered":
        return df[cols[::-1]]
    if how == "renamed":
        return df.set_axis([f"{c}_x" for c in cols], axis=1)
    if how == "duplicated":
        return df.set_axis([cols[0]] * len(cols), axis=1)
    if how == "extra":
        out = df.copy()
        out["zz_extra"] = 1.0
        return out
    return df


# -- HMM sequence lengths ------------------------------------------------------------------


@st.composite
def lengths_for(draw, n: int):
    """(lengths, valid): a valid partition of n rows, or one of the ways to get it wrong."""
    how = draw(
        st.sampled_from(
            ["none", "valid", "valid", "mismatch", "zero", "negative", "fraction", "empty", "2d"]
        )
    )
    if how == "none":
        return None, "none"
    if how in ("valid", "zero", "fraction", "2d") and n >= 1:
        cuts = sorted(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=3, unique=True)))
        cuts = [c for c in cuts if 0 < c < n]
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
        if how == "zero":
            parts.insert(draw(st.integers(0, len(parts))), 0)
        elif how == "fraction":
            parts[0] = parts[0] - 0.5
            parts.append(0.5)
        elif how == "2d":
            return np.array(parts)[None, :], how
        return parts, how
    if how == "mismatch":
        return [n + draw(st.sampled_from([-1, 1, 5]))], how
    if how == "negative":
        return [n + 2, -2], how
    if how == "empty":
        return [], how
    return [n], "valid"
