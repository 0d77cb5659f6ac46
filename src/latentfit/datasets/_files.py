"""Loading user data files (CSV, .npy, .npz, Parquet) into a checked float64 tensor."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from latentfit._validation import as_float_tensor

__all__ = ["load_array"]


def _read_csv(path: Path, columns):
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path} is empty: no header and no rows")
    first = rows[0]

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return cell.strip().lower() in ("", "nan", "na")

    has_header = not all(numeric(c) for c in first)
    header = [c.strip() for c in first] if has_header else [f"x{i}" for i in range(len(first))]
    body = rows[1:] if has_header else rows
    if not body:
        raise ValueError(f"{path} has a header but no data rows")
    # R-style exports put an unnamed row index first: drop it.
    if has_header and header[0] in ("", '""'):
        header, body = header[1:], [r[1:] for r in body]
    width = len(header)
    values = np.empty((len(body), width), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + (2 if has_header else 1)
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} fields, the header has {width}")
        for j, cell in enumerate(row):
            cell = cell.strip()
            if cell.lower() in ("", "nan", "na"):
                values[i, j] = np.nan
                continue
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}: row {i} (line {line}), column {j} ({header[j]!r}) holds the "
                    f"non-numeric value {cell!r}; encode it as a number or drop the column with "
                    "--column/columns="
                ) from None
    return header, values


def _select(header: list[str], values: np.ndarray, columns, path: Path):
    if not columns:
        return header, values
    idx = []
    for c in columns:
        if isinstance(c, int):
            idx.append(c)
        elif c in header:
            idx.append(header.index(c))
        else:
            raise ValueError(f"{path} has no column {c!r}; its columns are {header}")
    return [header[i] for i in idx], values[:, idx]


def load_array(path, *, columns=None, allow_nan: bool = False, dtype=torch.float64) -> torch.Tensor:
    """Read ``path`` into a (n, d) float tensor.

    Formats by suffix: ``.csv``/``.txt`` (header optional), ``.npy``, ``.npz`` (the only array,
    or the one named by ``columns=["key"]``), ``.parquet`` (needs pyarrow). Errors name the row
    and column of non-numeric, NaN or infinite values; empty files are refused.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no data file at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        header, values = _read_csv(path, columns)
        header, values = _select(header, values, columns, path)
    elif suffix == ".npy":
        values = np.load(path, allow_pickle=False)
        header = None
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if columns and len(columns) == 1 and columns[0] in keys:
                key = columns[0]
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise ValueError(f"{path} holds arrays {keys}; name one with columns=['name']")
            values = z[key]
        header = None
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError(
                "reading Parquet needs pyarrow: pip install 'latentfit[parquet]'"
            ) from err
        table = pq.read_table(path, columns=list(columns) if columns else None)
        header = table.column_names
        for j, col in enumerate(table.columns):
            if not (
                col.type.id in range(2, 13)
                or str(col.type).startswith(("int", "uint", "float", "double", "bool"))
            ):
                raise ValueError(
                    f"{path}: column {j} ({header[j]!r}) has type {col.type}, which is not numeric"
                )
        values = np.column_stack(
            [c.to_numpy(zero_copy_only=False).astype(np.float64) for c in table.columns]
        )
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; use .csv, .npy, .npz or .parquet")
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.size == 0:
        raise ValueError(f"{path} holds no values (shape {values.shape})")
    return as_float_tensor(
        values, name=str(path.name), dtype=dtype, allow_nan=allow_nan, columns=header
    )
