"""Loading user data files (CSV, .npy, .npz, Parquet) into a checked float64 tensor."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from latentfit._validation import as_float_tensor
from latentfit.errors import DataError, MissingDependencyError

__all__ = ["load_array"]


def _read_csv(path: Path, columns):
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not a text CSV file: byte {err.object[err.start]:#04x} at offset "
            f"{err.start} is not UTF-8 text; is it a binary file with a .csv name?"
        ) from None
    except csv.Error as err:
        raise DataError(f"{path} is not a readable CSV file: {err}") from None
    if not rows:
        raise DataError(f"{path} is empty: no header and no rows")
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
        raise DataError(f"{path} has a header but no data rows")
    # R-style exports put an unnamed row index first: drop it.
    if has_header and header[0] in ("", '""'):
        header, body = header[1:], [r[1:] for r in body]
    width = len(header)
    values = np.empty((len(body), width), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + (2 if has_header else 1)
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {width}")
        for j, cell in enumerate(row):
            cell = cell.strip()
            if cell.lower() in ("", "nan", "na"):
                values[i, j] = np.nan
                continue
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: row {i} (line {line}), column {j} ({header[j]!r}) holds the "
                    f"non-numeric value {cell!r}; encode it as a number or drop the column with "
                    "--column/columns="
                ) from None
    return header, values


def _select(header: list[str] | None, values: np.ndarray, columns, path: Path):
    """Keep ``columns`` (names from the header, or 0-based positions as ints or digit strings)."""
    if not columns:
        return header, values
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.ndim != 2:
        raise DataError(f"{path} must be 2-D to select columns, got shape {values.shape}")
    width = values.shape[1]
    idx = []
    for c in columns:
        if header is not None and isinstance(c, str) and c in header:
            idx.append(header.index(c))
            continue
        try:
            i = int(c) if isinstance(c, (int, np.integer, str)) else None
        except ValueError:
            i = None
        if i is None:
            if header is None:
                raise DataError(
                    f"{path} has no column names, so column {c!r} cannot be found; select "
                    f"columns by position, 0 to {width - 1} (e.g. --columns 0,2)"
                )
            raise DataError(f"{path} has no column {c!r}; its columns are {header}")
        if not 0 <= i < width:
            raise DataError(
                f"{path} has {width} column(s), so there is no column {c!r}; positions run "
                f"from 0 to {width - 1}"
            )
        idx.append(i)
    return (None if header is None else [header[i] for i in idx]), values[:, idx]


def _load_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        import zipfile

        if isinstance(err, zipfile.BadZipFile) or "pickle" in str(err):
            raise DataError(
                f"{path} is not a numeric {path.suffix} array file: it is damaged, not written "
                "by numpy, or holds pickled Python objects (which latentfit never loads)"
            ) from None
        raise DataError(f"{path} cannot be read as a {path.suffix} file: {err}") from None


def load_array(path, *, columns=None, allow_nan: bool = False, dtype=torch.float64) -> torch.Tensor:
    """Read ``path`` into a (n, d) float tensor.

    Formats by suffix: ``.csv``/``.txt`` (header optional), ``.npy``, ``.npz`` (the only array,
    or the one named first in ``columns``), ``.parquet`` (needs pyarrow). ``columns`` keeps
    some columns, in the order given: names from a CSV header or Parquet schema, or 0-based
    positions (ints or digit strings) in every format; a name where a file has none, or a
    position past the last column, is a :class:`~latentfit.errors.DataError`. Errors name the
    row and column of non-numeric, NaN or infinite values; empty, damaged and binary files
    and folders are refused with a DataError.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no data file at {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the data file inside it")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        header, values = _read_csv(path, columns)
        header, values = _select(header, values, columns, path)
    elif suffix == ".npy":
        header, values = _select(None, _load_numpy(path), columns, path)
    elif suffix == ".npz":
        columns = list(columns or [])
        with _load_numpy(path) as z:
            keys = list(z.keys())
            if columns and columns[0] in keys:
                key = columns.pop(0)
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise DataError(
                    f"{path} holds arrays {keys}; name one first in columns (--columns "
                    f"{keys[0]}, or {keys[0]},0,2 for some of its columns)"
                )
            try:
                values = z[key]
            except (ValueError, OSError, EOFError) as err:
                raise DataError(f"{path}: array {key!r} cannot be read: {err}") from None
        header, values = _select(None, values, columns, path)
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise MissingDependencyError(
                "reading Parquet needs pyarrow: pip install 'latentfit[parquet]'"
            ) from err
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"{path} is not a readable Parquet file: {err}") from None
        header = table.column_names
        if columns:
            keep, _ = _select(header, np.empty((0, len(header))), columns, path)
            table = table.select(keep)
            header = keep
        for j, col in enumerate(table.columns):
            if not (
                col.type.id in range(2, 13)
                or str(col.type).startswith(("int", "uint", "float", "double", "bool"))
            ):
                raise DataError(
                    f"{path}: column {j} ({header[j]!r}) has type {col.type}, which is not numeric"
                )
        values = np.column_stack(
            [c.to_numpy(zero_copy_only=False).astype(np.float64) for c in table.columns]
        )
    else:
        raise DataError(f"{path}: unknown format {suffix!r}; use .csv, .npy, .npz or .parquet")
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.size == 0:
        raise DataError(f"{path} holds no values (shape {values.shape})")
    return as_float_tensor(
        values, name=str(path.name), dtype=dtype, allow_nan=allow_nan, columns=header
    )
