"""Generated input files for the command line: good CSV/.npy data and every way to spoil it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from .strategies import base_values, corrupt

FILE_KINDS = (
    "csv",
    "csv",
    "csv",
    "csv",
    "npy",
    "npz",
    "empty",
    "garbage",
    "header_only",
    "ragged",
    "text_cells",
    "bom",
    "crlf",
    "semicolon",
    "latin1",
    "wrong_extension",
    "npy_object",
    "npy_3d",
    "npz_two_arrays",
    "directory",
    "missing",
)


def _csv_text(X: np.ndarray, header: list[str] | None) -> str:
    buf = io.StringIO()
    if header is not None:
        buf.write(",".join(header) + "\n")
    for row in X:
        buf.write(",".join(repr(float(v)) for v in row) + "\n")
    return buf.getvalue()


@st.composite
def data_files(draw, kind: str = "real", name: str = "data", clean: bool = False, d=None):
    """A recipe for an input file: ``(suffix, content, description)``; content is bytes, or
    ``"directory"`` / ``"missing"``. Columns are named a, b, c when there is a header.
    ``clean``: a CSV file of good values with distinct column names or none; ``d``: its
    number of columns (default: drawn)."""
    what = "csv" if clean or draw(st.booleans()) else draw(st.sampled_from(FILE_KINDS))
    n = draw(st.sampled_from([20, 40] if clean else [1, 2, 5, 20, 40, 40]))
    d = d or draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    X = base_values(kind, n, d, seed)
    done = []
    if not clean and (what != "csv" or draw(st.booleans())):  # half the CSV files are clean
        X, done = draw(corrupt(X))
    header = draw(st.sampled_from([["a", "b", "c"][:d], None] + ([] if clean else [["a"] * d])))
    desc = f"{what} {kind} n={n} d={d} seed={seed} {done} header={header}"
    return (*_recipe(draw, what, X, header, n, d), desc, n)


def _recipe(draw, what, X, header, n, d):
    if what == "csv":
        return ".csv", _csv_text(X, header).encode()
    if what in ("npy", "npy_3d", "npy_object"):
        buf = io.BytesIO()
        arr = X.reshape(n, d, 1) if what == "npy_3d" else X
        if what == "npy_object":
            arr = arr.astype(object)
        np.save(buf, arr, allow_pickle=what == "npy_object")
        return ".npy", buf.getvalue()
    if what in ("npz", "npz_two_arrays"):
        buf = io.BytesIO()
        arrays = {"x": X} if what == "npz" else {"x": X, "y": X[:, :1]}
        np.savez(buf, **arrays)
        return ".npz", buf.getvalue()
    if what == "empty":
        return ".csv", b""
    if what == "garbage":
        return ".csv", draw(st.binary(min_size=1, max_size=64))
    if what == "header_only":
        return ".csv", b"a,b\n"
    if what == "ragged":
        return ".csv", b"a,b\n1,2\n3\n4,5,6\n7,8\n"
    if what == "text_cells":
        return ".csv", b"a,b\n1,2\n3,x\n4,5\n6,7\n"
    if what == "bom":
        return ".csv", ("\ufeff" + _csv_text(X, header or ["a"] * d)).encode("utf-8")
    if what == "crlf":
        return ".csv", _csv_text(X, header).replace("\n", "\r\n").encode()
    if what == "semicolon":
        return ".csv", _csv_text(X, header).replace(",", ";").encode()
    if what == "latin1":
        return ".csv", "a,b\n1,2\n3,é\n".encode("latin-1")
    if what == "wrong_extension":
        suffix = draw(st.sampled_from([".json", "", ".npy", ".parquet", ".xlsx"]))
        return suffix, _csv_text(X, header).encode()
    return ".csv", what  # "directory" or "missing"


def materialise(folder: Path, recipe, name: str = "data") -> Path:
    """Create the file a recipe describes inside ``folder``; return its path."""
    suffix, content = recipe[0], recipe[1]
    path = folder / f"{name}{suffix}"
    if content == "directory":
        path.mkdir()
    elif content != "missing":
        path.write_bytes(content)
    return path


LENGTH_FILES = (
    "valid",
    "valid",
    "mismatch",
    "zero",
    "negative",
    "fraction",
    "text",
    "empty",
    "missing",
)


@st.composite
def lengths_files(draw):
    """How to write a --lengths file for data of some number of rows (filled in later)."""
    return draw(st.sampled_from(LENGTH_FILES))


def write_lengths(folder: Path, how: str, n_rows: int | None) -> Path:
    path = folder / "lengths.txt"
    n = n_rows or 3
    text = {
        "valid": f"{n // 2}\n{n - n // 2}\n" if n >= 2 else f"{n}\n",
        "mismatch": f"{n + 1}\n",
        "zero": f"0\n{n}\n",
        "negative": f"{n + 2}\n-2\n",
        "fraction": f"{n - 0.5}\n0.5\n",
        "text": "abc\n",
        "empty": "",
    }.get(how)
    if text is not None:
        path.write_text(text)
    return path
