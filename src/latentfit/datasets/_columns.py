"""Columns of a table picked by name or position: one resolution for every reader (text,
npz, Parquet), which refuses an unknown, ambiguous or repeated column by name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from latentfit._validation import FileColumns
from latentfit.errors import (
    DataError,
)

__all__: list[str] = []

#: the delimiters a text file's layout is guessed among (and which a header glued into one
#: name by the wrong delimiter gives away)
_CANDIDATES = ("\t", ";", ",", "|")

#: Suffixes read as delimited text.


def _resolve(header: list[str] | None, width: int, columns, path: Path) -> list[int] | None:
    """Positions of ``columns`` (names from the header, or 0-based positions as ints or digit
    strings), in the order given; None when ``columns`` is empty."""
    if not columns:
        return None
    idx = []
    counts = Counter(header or ())
    for c in columns:
        if header is not None and isinstance(c, str) and c in header:
            if counts[c] > 1:  # which one?
                raise DataError(_same_name(header, c, path))
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
            glued = [d for d in (*_CANDIDATES, " ") if len(header) == 1 and d in header[0]]
            raise DataError(
                f"{path} has no column {c!r}; its columns are {header}"
                + (": is the delimiter right (--delimiter, delimiter=)?" if glued else "")
            )
        if not 0 <= i < width:
            raise DataError(
                f"{path} has {width} column(s), so there is no column {c!r}; positions run "
                f"from 0 to {width - 1}"
            )
        idx.append(i)
    return idx


def _same_name(header: list[str], name: str, path: Path) -> str:
    """The message for ``name`` given to several columns of ``header``."""
    same = [i for i, h in enumerate(header) if h == name]
    what = f"named {name!r}" if name else "unnamed (an empty name)"
    return (
        f"{path}: columns {same} are all {what}; column names must be unique: rename them in "
        f"the file, or pick columns by position with --columns (columns= in Python), e.g. "
        f"--columns {same[0]}"
    )


def _check_unique(header: list[str], path: Path) -> None:
    """Refuse a header that gives one name to several columns when every column is read: a
    model records its columns by name (``predict`` and ``score`` pick them again by name), so
    such a name is ambiguous. Columns picked by position are read whatever their names."""
    counts = Counter(header)
    for name in header:
        if counts[name] > 1:
            raise DataError(_same_name(header, name, path))


def _select(header: list[str] | None, values: np.ndarray, columns, path: Path):
    """Keep ``columns`` of an array already in memory (see :func:`_resolve`)."""
    if not columns:
        return header, values
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.ndim != 2:
        raise DataError(f"{path} must be 2-D to select columns, got shape {values.shape}")
    idx = _resolve(header, values.shape[1], columns, path)
    names = [None] * len(idx) if header is None else [header[i] for i in idx]
    return FileColumns(names, idx), values[:, idx]
