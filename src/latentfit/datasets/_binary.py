"""Binary tables: .npy (its header held to the file's size before an array is made), .npz and
Parquet, read into one float array with the column checks of the text reader."""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from latentfit._validation import (
    FileColumns,
    check_allocation,
    first_inexact_integer,
    inexact_integer_words,
)
from latentfit.errors import (
    DataError,
    DataTypeError,
    LatentfitError,
    MissingDependencyError,
)

__all__ = ["arrow_floats", "native_dtype", "npy_header"]

#: Suffixes read as delimited text.
from latentfit.datasets._columns import _check_unique, _resolve

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
#: What goes wrong while a zip archive or its members are read.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError)
_STREAM_HINT = (
    "fit it chunk by chunk: --stream-above on the command line, latentfit.em.sources.NpySource "
    "in Python"
)


def native_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype torch can take for values of ``dtype``: native byte order, and extended
    precision floats (``float128``, ``longdouble``) as float64. Other dtypes are returned as
    they are (the numeric checks name them)."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None or dtype.kind not in "biufc":
        return dtype
    if dtype.kind == "f" and dtype.itemsize > 8:
        return np.dtype(np.float64)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in :func:`native_dtype` (a copy only when that differs). A long double too large
    for float64 becomes inf, which the finite check then names by row and column."""
    dtype = native_dtype(a.dtype)
    if dtype == a.dtype:
        return a
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def npy_header(f, what, size: int) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data) from the header of the .npy array that the binary stream
    ``f`` starts with (left at the first byte of data), checked against the ``size`` of the
    whole stream, so that nothing is allocated from a header that claims more than the file
    holds. ``what`` names the file in a :class:`~latentfit.errors.DataError`."""
    magic = f.read(len(_NPY_MAGIC) + 2)  # the magic string, then the format version
    if magic.startswith(_ZIP_MAGICS):
        raise DataError(f"{what} is a zip archive (an .npz file?), not a .npy array; name it .npz")
    if len(magic) < len(_NPY_MAGIC) + 2 or not magic.startswith(_NPY_MAGIC):
        raise DataError(
            f"{what} is not a numeric .npy array file: it does not start as numpy.save writes "
            "(damaged, or another kind of file named .npy)"
        )
    version = (magic[-2], magic[-1])
    try:
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataError(
                f"{what} is a .npy file of format version {version[0]}.{version[1]}, which "
                "numpy writes only for structured arrays (not a table of numbers); save a "
                "plain numeric array with numpy.save"
            )
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError, zlib.error) as err:
        if isinstance(err, LatentfitError):
            raise
        raise DataError(
            f"{what} is not a readable .npy array: its header is damaged or it was not "
            f"written by numpy.save ({err})"
        ) from None
    if dtype.hasobject:
        raise DataTypeError(
            f"{what} holds pickled Python objects (dtype {dtype}), which latentfit never loads; "
            "save a numeric array"
        )
    if any(n < 0 for n in shape):
        raise DataError(f"{what} is damaged: its header gives the negative shape {shape}")
    need, have = math.prod(shape) * dtype.itemsize, size - f.tell()
    if need > have:
        raise DataError(
            f"{what} is truncated or damaged: its header says shape {shape} of {dtype}, "
            f"{need:,} bytes of data, but only {have:,} bytes follow the header; write the "
            "file again (numpy.save)"
        )
    return shape, dtype, need


def _read_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, its header checked against the file's size and the memory
    available before anything is allocated."""
    try:
        with path.open("rb") as f:
            shape, dtype, need = npy_header(f, path, path.stat().st_size)
            check_allocation(
                need + 8 * math.prod(shape),  # the file's values, then as float64
                f"reading {path.name} (shape {shape}, {dtype})",
                hint=_STREAM_HINT,
            )
            f.seek(0)
            values = np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        if isinstance(err, LatentfitError):
            raise
        raise DataError(f"{path} cannot be read as a .npy array: {err}") from None
    return _native(values)


def _read_npz(path: Path, columns: list) -> np.ndarray:
    """The array of a .npz archive that ``columns`` names first (then taken off the list), or
    its only one; each member's header is checked as a .npy file's is."""
    try:
        with path.open("rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err}") from None
    if magic == _NPY_MAGIC:
        raise DataError(f"{path} is a .npy array, not a .npz archive; name it .npy")
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as err:
        raise DataError(
            f"{path} is not a numeric .npz array file: it is not a zip archive as numpy.savez "
            f"writes ({err}); it is damaged, or another kind of file named .npz"
        ) from None
    with archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        keys = list(members)
        if not keys:
            raise DataError(
                f"{path} holds no arrays (an empty archive); save the data with "
                "numpy.savez(path, X)"
            )
        if columns and columns[0] in keys:
            key = columns.pop(0)
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise DataError(
                f"{path} holds arrays {keys}; name one first in columns (--columns "
                f"{keys[0]}, or {keys[0]},0,2 for some of its columns)"
            )
        what = f"{path}: array {key!r}"
        try:
            info = archive.getinfo(members[key])
            with archive.open(info) as f:
                shape, dtype, need = npy_header(f, what, info.file_size)
            check_allocation(
                need + 8 * math.prod(shape), f"reading {what} (shape {shape}, {dtype})"
            )
            with archive.open(info) as f:
                values = np.lib.format.read_array(f, allow_pickle=False)
        except _ZIP_ERRORS as err:
            if isinstance(err, LatentfitError):
                raise
            raise DataError(f"{what} cannot be read: {err}") from None
    return _native(values)


def arrow_floats(column, pa, pc) -> tuple[np.ndarray, tuple[int, str] | None]:
    """The float64 values of a pyarrow numeric column (nulls as NaN), and the row and words of
    its first 64-bit integer that float64 would read as another integer (or None)."""
    values = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    if not (pa.types.is_int64(column.type) or pa.types.is_uint64(column.type)):
        return values, None
    ints = pc.fill_null(column, 0).to_numpy()  # (n,)
    bad = first_inexact_integer(ints)
    if bad is None:
        return values, None
    i = bad[0]
    return values, (i, inexact_integer_words(int(ints[i]), float(values[i])))


def _read_parquet(path: Path, columns) -> tuple[list[str], np.ndarray]:
    """The names and float64 values (n, k) of the kept columns of a Parquet file; the schema
    (names, types) and the row count are checked before any column is read."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as err:
        raise MissingDependencyError("reading Parquet needs pyarrow: pip install pyarrow") from err
    try:
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path} is not a readable Parquet file: {str(err).strip()}") from None
    names = [str(c) for c in schema.names]
    if not names:
        raise DataError(f"{path} has no columns: the Parquet file holds a table without data")
    keep = _resolve(names, len(names), columns, path)
    if keep is None:
        _check_unique(names, path)
        keep = list(range(len(names)))
    for j in keep:
        t = schema.field(j).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise DataTypeError(
                f"{path}: column {j} ({names[j]!r}) has type {t}, which is not numeric; leave "
                "it out with --columns (columns= in Python) or encode it as numbers"
            )
    parsed = list(dict.fromkeys(keep))  # a column asked for twice is read once
    # A name the file repeats can only be told apart by position: then read every column.
    counts = Counter(names)
    by_position = any(counts[names[j]] > 1 for j in parsed)
    n, width = meta.metadata.num_rows, len(names) if by_position else len(parsed)
    check_allocation(
        8 * n * (width + 2 * len(parsed)),  # the columns read, then float64 values twice
        f"reading {width} column(s) of {n:,} rows from {path.name}",
        hint="fit it chunk by chunk: --stream-above on the command line, "
        "latentfit.em.sources.ParquetSource in Python",
    )
    try:
        if by_position:
            table = meta.read()
            read = [table.column(j) for j in parsed]
        else:
            read = meta.read(columns=[names[j] for j in parsed]).columns
        # bool and integer columns with nulls as float64 NaN (to_numpy would give objects)
        converted = [arrow_floats(c, pa, pc) for c in read]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} is not a readable Parquet file: {str(err).strip()}") from None
    cols = [values for values, _ in converted]
    inexact = [
        (bad[0], j, bad[1])
        for j, (_, bad) in zip(parsed, converted, strict=True)
        if bad is not None
    ]
    if inexact:
        i, j, words = min(inexact)
        raise DataError(
            f"{path}: row {i}, column {j} ({names[j]!r}) holds {words}; if the column is an "
            "identifier, leave it out with --columns (columns= in Python)"
        )
    values = np.column_stack(cols) if cols else np.empty((n, 0))
    if len(parsed) != len(keep):
        values = values[:, [parsed.index(j) for j in keep]]
    return FileColumns([names[j] for j in keep], keep), values
