"""Loading user data files (delimited text, .npy, .npz, Parquet) into a checked float64 tensor.

Delimited text is parsed by pyarrow.csv rather than pandas: its C++ parser costs the same CPU
as pandas.read_csv on one thread and splits a large file among free cores (benchmarks/read.py),
``include_columns`` drops unwanted columns (a text ``species`` column, say) before any conversion, and
``column_types`` fixes float64 up front, so no column is type-inferred, parsed twice or held
as Python objects. The layout (delimiter, header, comment lines, byte-order mark) is sniffed
here from the first lines. When pyarrow refuses a cell, a slow scan of the selected columns
finds the row, column and value of the first bad one for the error message.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentfit._validation import (
    EXACT_INTEGER,
    FileColumns,
    as_float_tensor,
    check_allocation,
    inexact_integer_words,
)
from latentfit.datasets._binary import (
    _read_npy,
    _read_npz,
    _read_parquet,
)
from latentfit.datasets._columns import _CANDIDATES, _check_unique, _resolve, _select
from latentfit.errors import (
    DataError,
    LatentfitError,
    MissingDependencyError,
    ParameterError,
)

__all__ = [
    "DELIMITERS",
    "TEXT_SUFFIXES",
    "column_names",
    "file_stem",
    "load_array",
    "parse_delimiter",
]

#: Suffixes read as delimited text.
TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".tab", ".dat")
#: Compressions a text file may carry after its suffix (``data.csv.gz``): the opener for each.
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}
#: Bytes decompressed per read while a compressed file is loaded (memory is checked between).
_DECOMPRESS_BLOCK = 1 << 24
#: Delimiters tried in this order when none is given; whitespace (runs of spaces or tabs)
#: comes after them. Semicolon before comma: a semicolon file often has decimal commas.
#: ``delimiter=`` / ``--delimiter`` names (besides any single character).
DELIMITERS = {
    "comma": ",",
    "tab": "\t",
    "\\t": "\t",
    "semicolon": ";",
    "pipe": "|",
    "space": " ",
    "whitespace": " ",
}
_WHITESPACE = " "  # the layout's delimiter for runs of spaces and tabs
#: Cells read as NaN (any case, spaces around them ignored).
_NA = ("", "nan", "na")


def _case_variants(word: str) -> set[str]:
    return {
        "".join(c.upper() if (mask >> i) & 1 else c for i, c in enumerate(word))
        for mask in range(1 << len(word))
    }


_NULLS = sorted(set().union(*(_case_variants(w) for w in _NA)))
#: A cell written as a whole number (the cells float64 must hold exactly).
_INTEGER = re.compile(r"[-+]?[0-9]+")
_SNIFF_BYTES = 1 << 16
_THREADED_BYTES = 16 << 20


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_SNIFF_LINES = 50
#: Line ends, as pyarrow's parser splits lines: "\n", "\r\n", or a lone "\r" (classic Mac OS).
_NEWLINE = re.compile(rb"(\r\n|\r|\n)")
#: Bytes read per block while a text file is scanned line by line for an error message.
_LINE_BLOCK = 1 << 20


def parse_delimiter(text: str | None) -> str | None:
    """``None``, ``""`` or ``"auto"`` → None (sniff); a name of :data:`DELIMITERS` or a single
    character → the delimiter (``" "`` stands for runs of spaces and tabs)."""
    if text is None or text == "" or text.lower() == "auto":
        return None
    if text.lower() in DELIMITERS:
        return DELIMITERS[text.lower()]
    if len(text) == 1 and text not in '"\r\n':
        return text
    raise ParameterError(
        f"delimiter {text!r} is not one character; use auto, comma, tab, semicolon, pipe, "
        "whitespace (runs of spaces or tabs, as numpy.savetxt writes) or a single character"
    )


@dataclass
class _Layout:
    delimiter: str  # _WHITESPACE for runs of spaces and tabs
    header: list[str] | None  # the column names, or None when the file has none
    width: int  # fields per row
    offset: int  # byte offset of the first data row
    first_line: int  # 1-based line number of the first data row
    squeeze: bool  # whitespace runs, leading or trailing blanks: normalise before parsing
    doubt: str | None = None  # a first line that could be names or data: what was decided


def _numeric(cell: str) -> bool:
    cell = cell.strip()
    if cell.lower() in _NA:
        return True
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == _WHITESPACE:
        return line.split()
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:  # a field past csv's size limit: only fields are counted here
        return line.split(delimiter)


def _guess_delimiter(lines: list[str]) -> str:
    """The first candidate that splits the first line into more than one field and at least
    three quarters of the sampled lines into as many (a ragged line is then reported as such,
    not as a wrong delimiter); else whitespace if that does; else comma (a single column)."""
    for d in (*_CANDIDATES, _WHITESPACE):
        counts = [len(_split(line, d)) for line in lines]
        if counts[0] > 1 and 4 * counts.count(counts[0]) >= 3 * len(counts):
            return d
    return ","


def check_header(header) -> bool | None:
    """``header=`` as the reader takes it: None (sniff the first line), True (the first line
    names the columns) or False (the first line is data)."""
    if header is None or isinstance(header, bool):
        return header
    if isinstance(header, np.bool_):
        return bool(header)
    raise ParameterError(
        f"header must be None (sniffed), True (the first line names the columns) or False "
        f"(the first line is data), got {header!r:.60}"
    )


def _number(cell: str) -> bool:
    """A cell that is a number (not one of the cells read as missing)."""
    return cell.strip().lower() not in _NA and _numeric(cell)


def _header_doubt(first: list[str], rest: list[list[str]], is_header: bool) -> str | None:
    """Why the sniffed decision on the first line could be wrong, or None when it is clear:
    names that include numbers (then it might be data), or data that are the column numbers
    0..d-1 or 1..d (after a blank, with a row index), as pandas writes for unnamed columns,
    not repeated below (then it might be names). Said with the option that settles it."""
    cells = [c.strip() for c in first]
    if is_header:
        numbers = [c for c in cells if _number(c)]
        if not numbers:
            return None
        shown = ", ".join(numbers[:3]) + (", ..." if len(numbers) > 3 else "")
        return (
            "read as column names (it holds text over columns of numbers), but it also holds "
            f"the number(s) {shown}: if it is a row of data, pass --no-header (header=False "
            "in Python); --header (header=True) keeps it as names without this warning"
        )
    numbered = cells[1:] if cells[0] in ("", '""') else cells  # after a row index's blank
    if len(numbered) < 2 or not all(_INTEGER.fullmatch(c) for c in numbered):
        return None
    values = [int(c) for c in numbered]
    if values not in (list(range(len(values))), list(range(1, len(values) + 1))):
        return None
    if any([c.strip() for c in row] == cells for row in rest):
        return None  # the same numbers recur below: data (e.g. 0/1 values)
    return (
        "read as the first row of data, as it holds only numbers, but they are the column "
        "numbers pandas writes as names for unnamed columns: if they name the columns, pass "
        "--header (header=True in Python); --no-header (header=False) keeps it as data "
        "without this warning"
    )


def _is_header(first: list[str], rest: list[list[str]]) -> bool:
    """A first row is names when one of its cells is text over a column of numbers below it,
    or when all of its cells are text (a table of text columns). A default numpy.savetxt file
    (all numbers) has none; "1,2,setosa" over more such rows is data."""
    text = [not _numeric(c) for c in first]
    if not any(text):
        return False
    if all(text):
        return True
    for j, is_text in enumerate(text):
        column = [r[j] for r in rest if j < len(r)]
        if is_text and column and all(_numeric(c) for c in column):
            return True
    return False


def _text_suffix(path: Path) -> str:
    """The format suffix of ``path``, looking through a compression suffix (``a.csv.gz``:
    ``.csv``); a compression suffix on a non-text name is returned as it is."""
    suffixes = [x.lower() for x in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED and suffixes[-2] in TEXT_SUFFIXES:
        return suffixes[-2]
    return path.suffix.lower()


def check_text_options(path: Path, delimiter: str | None, header: bool | None) -> None:
    """Refuse a ``delimiter`` (as :func:`parse_delimiter` returns it) or ``header=True`` for a
    file that is not text (.npy, .npz, Parquet), where either would be read and ignored."""
    suffix = _text_suffix(Path(path))
    if suffix in TEXT_SUFFIXES:
        return
    given = [
        f"{name} ({option} on the command line)"
        for name, option, on in (
            (f"delimiter={delimiter!r}", "--delimiter", delimiter is not None),
            ("header=True", "--header", header is True),
        )
        if on
    ]
    if given:
        raise ParameterError(
            f"{Path(path).name} is a {suffix or 'binary'} file, whose columns need no field "
            f"delimiter and have no header line: {' and '.join(given)} applies to delimited "
            "text files (.csv, .tsv, .txt) only; leave it out"
        )


def file_stem(path) -> str:
    """The name of a data file without its format and compression suffixes (``s.csv.gz``:
    ``s``), for the names of the files a command writes beside it."""
    path = Path(path)
    return path.with_suffix("").stem if _text_suffix(path) != path.suffix.lower() else path.stem


def _open(path: Path):
    """A binary file object over the text of ``path``, decompressed when it is compressed."""
    opener = _COMPRESSED.get(path.suffix.lower())
    return opener(path, "rb") if opener is not None else path.open("rb")


def _decompressed(path: Path, offset: int) -> bytes:
    """The whole decompressed text of ``path`` from ``offset``, read in blocks with the memory
    still available checked before each, so that a small file that expands without bound (or
    a damaged one) is refused by name instead of taking the machine's memory."""
    out = bytearray()
    try:
        with _open(path) as f:
            f.seek(offset)
            while block := f.read(_DECOMPRESS_BLOCK):
                check_allocation(
                    2 * (len(out) + len(block)),
                    f"decompressing {path.name}",
                    hint="decompress it to disk first, or read it in parts",
                )
                out += block
    except (OSError, EOFError, ValueError, zlib.error) as err:
        if isinstance(err, LatentfitError):
            raise
        raise DataError(f"{path} cannot be decompressed: {err}") from None
    return bytes(out)


#: Control bytes that never occur in a text table (tab, line ends, form feed and vertical
#: tab excepted): a file holding one is binary, whatever its name says.
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")


def _data_lines(raw: bytes) -> int:
    """How many complete lines of ``raw`` hold data (not blank, not a ``#`` comment)."""
    complete = _NEWLINE.split(raw)[0:-1:2]
    return sum(1 for line in complete if line.strip() and not line.lstrip().startswith(b"#"))


def _head(path: Path) -> tuple[bytes, bool]:
    """The first bytes of the text of ``path`` and whether they are all of it: at least
    64 KiB, and on until two data lines are complete, so that a wide table (a header of
    50,000 names, rows of 20,000 values) is sniffed from whole lines. The memory still
    available is checked as the head grows (a file without line ends is not read blind)."""
    with _open(path) as f:
        raw = f.read(_SNIFF_BYTES)
        while _data_lines(raw) < 2:
            block = f.read(max(_SNIFF_BYTES, len(raw)))
            if not block:
                return raw, True
            check_allocation(
                4 * (len(raw) + len(block)),
                f"reading the first lines of {path.name}",
                hint="its first lines are very long; check that it is a text table",
            )
            raw += block
        return raw, not f.read(1)


def _sniff(path: Path, delimiter: str | None, header: bool | None = None) -> _Layout | None:
    """Read the layout from the first lines (64 KiB, or more until two data lines are
    whole); None when the file holds no rows at all. ``header``: whether the first line
    names the columns (None: sniffed, with a doubt noted where the first line could be
    either; see :func:`_header_doubt`)."""
    try:
        raw, whole = _head(path)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} cannot be decompressed: {err}") from None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=whole)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not a text CSV file: byte {err.object[err.start]:#04x} at offset "
            f"{err.start} is not UTF-8 text; is it a binary file with a .csv name?"
        ) from None
    binary = _BINARY.search(raw)
    if binary is not None:
        raise DataError(
            f"{path} is not a text CSV file: byte {raw[binary.start()]:#04x} at offset "
            f"{binary.start()} is a control character, which text never holds; is it a "
            "binary file with a .csv name (or UTF-16 text: save it as UTF-8)?"
        )
    offset = 3 if raw.startswith(codecs.BOM_UTF8) else 0
    parts = _NEWLINE.split(raw[offset:])  # [line, end, line, end, ..., line]
    pieces, ends = parts[0::2], [len(end) for end in parts[1::2]] + [0]
    if not whole:
        pieces = pieces[:-1]  # the last line may be cut off
    # Blank and '#' lines before the data are skipped (numpy.savetxt writes its header as
    # '# a b'); the last such comment names the columns when it has one name per column.
    comment, lineno, start = None, 0, offset
    lines: list[str] = []
    first_piece = b""
    first_end = 0
    for piece, end in zip(pieces, ends, strict=False):
        line = piece.decode("utf-8", errors="replace")
        if not lines:
            if not line.strip() or line.lstrip().startswith("#"):
                if line.lstrip().startswith("#"):
                    comment = line.lstrip()[1:].strip()
                lineno += 1
                start += len(piece) + end
                continue
        if line.strip():
            if not lines:
                first_piece, first_end = piece, end
            lines.append(line)
            if len(lines) >= _SNIFF_LINES:
                break
    if not lines:
        return None
    delimiter = delimiter if delimiter is not None else _guess_delimiter(lines)
    rows = [_split(line, delimiter) for line in lines]
    names_line = _is_header(rows[0], rows[1:]) if header is None else header
    doubt = None
    if header is None:
        why = _header_doubt(rows[0], rows[1:], names_line)
        if why is not None:
            doubt = f"{path}: line {lineno + 1} ({lines[0].strip()[:60]!r}) is {why}"
    header = None
    if names_line:
        header = [c.strip() for c in rows[0]]
        start += len(first_piece) + first_end
        lineno += 1
    elif comment is not None:
        names = _split(comment, delimiter)
        if len(names) == len(rows[0]) and not any(_numeric(c) for c in names):
            header = [c.strip() for c in names]
            doubt = None  # a '#' line names the columns: the first line is data
    squeeze = delimiter == _WHITESPACE and any(
        "  " in line or "\t" in line or line != line.strip() for line in lines
    )
    return _Layout(delimiter, header, len(rows[0]), start, lineno + 1, squeeze, doubt)


def _lines(f):
    """The lines of the binary file ``f`` from where it stands, without their ends, split as
    pyarrow splits them (see ``_NEWLINE``), read in blocks."""
    carry = b""
    while block := f.read(_LINE_BLOCK):
        data = carry + block
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)  # "\r" + "\n" may follow
        pieces = _NEWLINE.split(data[:cut])[0::2]
        carry = pieces.pop() + data[cut:]
        yield from pieces
    if carry:
        yield from _NEWLINE.split(carry)[0::2]


def _line_of(path: Path, layout: _Layout, row: int) -> int:
    """The 1-based line number of data row ``row`` (blank lines skipped, as the parser does)."""
    with _open(path) as f:
        f.seek(layout.offset)
        seen = -1
        for k, piece in enumerate(_lines(f)):
            if piece.strip():
                seen += 1
                if seen == row:
                    return layout.first_line + k
    return layout.first_line + row


def _ragged(path: Path, layout: _Layout) -> tuple[int, int] | None:
    """The line number and field count of the first data row with a different width."""
    with _open(path) as f:
        f.seek(layout.offset)
        for k, piece in enumerate(_lines(f)):
            line = piece.decode("utf-8", errors="replace")
            if line.strip():
                n = len(_split(line, layout.delimiter))
                if n != layout.width:
                    return layout.first_line + k, n
    return None


def _parse_column(strings, pa, pc) -> tuple[np.ndarray, int | None]:
    """Float64 values of a column of strings and the row of its first non-numeric cell (or
    None): spaces around a cell are ignored and the cells of ``_NA`` are NaN, as in the
    fast path."""
    trimmed = pc.utf8_trim_whitespace(strings)
    missing = pc.is_in(pc.utf8_lower(trimmed), value_set=pa.array(list(_NA)))
    try:
        cast = pc.cast(pc.if_else(missing, pa.scalar(None, pa.string()), trimmed), pa.float64())
        return cast.to_numpy(zero_copy_only=False), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    cells = trimmed.to_pylist()
    out = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        if cell.lower() in _NA:
            out[i] = np.nan
            continue
        try:
            out[i] = float(cell)
        except ValueError:
            return out, i
    return out, None


def _squeeze(data: bytes) -> bytes:
    """Runs of spaces, tabs and carriage returns as one space, none at the start or end of a
    line, a lone carriage return read as a line end (vectorised: a Python loop over lines, or bytes.replace with millions of matches,
    costs seconds on a 50 MB file)."""
    a = np.frombuffer(data, dtype=np.uint8)
    lone_cr = a == 13
    lone_cr[:-1] &= a[1:] != 10
    if lone_cr.any():  # classic Mac OS line ends ("\r" alone): make them "\n"
        a = a.copy()
        a[lone_cr] = 10
    blank = a == 32
    blank |= a == 9
    blank |= a == 13
    keep = ~blank
    keep[1:] |= ~blank[:-1]  # a blank is kept when the byte before it is not blank
    out = a[keep]
    out[(out == 9) | (out == 13)] = 32
    space, newline = out == 32, out == 10
    edge = np.ones(out.shape[0] + 1, dtype=bool)  # (m + 1,) a newline (or the start) before
    edge[1:] = newline
    drop = space & (edge[:-1] | np.append(newline[1:], True))  # at a line's start or end
    return out[~drop].tobytes()


def _to_numpy(table, include: list[str]) -> np.ndarray:
    """The float64 columns as one (n, k) C-ordered array. Filled column by column, chunk by
    chunk, into a Fortran-ordered array (each chunk is a zero-copy view; writing a column of a
    C-ordered array is strided and ten times slower), then transposed in memory once."""
    values = np.empty((table.num_rows, len(include)), dtype=np.float64, order="F")
    for j, name in enumerate(include):
        start = 0
        for chunk in table.column(name).chunks:
            values[start : start + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    return np.ascontiguousarray(values)


def _read_text(path: Path, columns, delimiter: str | None, header: bool | None = None):
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv
    except ImportError as err:
        raise MissingDependencyError(
            "reading delimited text needs pyarrow: pip install pyarrow"
        ) from err
    layout = _sniff(path, delimiter, header)
    if layout is None:
        raise DataError(f"{path} is empty: no header and no rows")
    if layout.doubt is not None:
        import warnings

        warnings.warn(layout.doubt, UserWarning, stacklevel=3)
    # R's write.csv puts an unnamed row index first: drop it.
    skip = 1 if layout.header is not None and layout.header[0] in ("", '""') else 0
    names = None if layout.header is None else layout.header[skip:]
    width = layout.width - skip
    shown = names if names is not None else [f"x{j}" for j in range(width)]  # x0, x1, ...
    keep = _resolve(shown, width, columns, path)
    if keep is None:
        _check_unique(shown, path)
        keep = list(range(width))
    raw_names = [f"c{j}" for j in range(layout.width)]  # unique, whatever the header says
    parsed = list(dict.fromkeys(keep))  # a column asked for twice is parsed once
    include = [raw_names[j + skip] for j in parsed]
    compressed = path.suffix.lower() in _COMPRESSED
    if compressed:
        text = _decompressed(path, layout.offset)
        source = pa.BufferReader(_squeeze(text) if layout.squeeze else text)
    elif layout.squeeze:  # runs of blanks: make them single spaces, which pyarrow splits on
        with _open(path) as f:
            f.seek(layout.offset)
            source = pa.BufferReader(_squeeze(f.read()))
    else:  # an Arrow memory map, not a Python file: no GIL, no copy into Python buffers
        source = pa.memory_map(str(path), "r")

    # pyarrow's threads pay on a large file with idle cores; on two busy cores they cost more
    # than they save (benchmarks/README.md), so small files and small machines read in one.
    threads = path.stat().st_size > _THREADED_BYTES and _cpus() > 2

    def read(column_type, nulls, columns=include):
        source.seek(0 if layout.squeeze or compressed else layout.offset)
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=raw_names, use_threads=threads),
            parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, column_type),
                include_columns=columns,
                null_values=nulls,
                strings_can_be_null=False,
                quoted_strings_can_be_null=True,
            ),
        )

    with source:
        strings = None  # the selected columns as text, read only when needed
        try:
            table = read(pa.float64(), _NULLS)
            values = _to_numpy(table, include)
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):  # only the header, and blank lines
                raise DataError(f"{path} has a header but no data rows") from None
            if "conversion error" not in str(err):
                bad = _ragged(path, layout)
                if bad is None:
                    raise DataError(f"{path} is not a readable delimited file: {err}") from None
                line, n = bad
                which = "the header" if layout.header is not None else "the first row"
                raise DataError(
                    f"{path}: line {line} has {n} fields, {which} has {layout.width}; "
                    "check the delimiter (--delimiter) or the quoting of that line"
                ) from None
            try:
                strings = read(pa.string(), [])
            except pa.ArrowInvalid as err:  # e.g. bytes that are not UTF-8 past the sniffed part
                raise DataError(f"{path} is not a readable text file: {err}") from None
            values = _slow_values(path, layout, strings, include, parsed, shown, pa, pc)
        big = _past_exact(values)
        if big:  # only there can an integer have become another one
            if strings is None:
                strings = read(pa.string(), [], [include[p] for p in big])
            _check_integers(path, layout, values, strings, include, big, parsed, shown)
    if values.shape[0] == 0:
        raise DataError(f"{path} has a header but no data rows")
    if len(parsed) != len(keep):
        values = values[:, [parsed.index(j) for j in keep]]
    return FileColumns([shown[j] for j in keep], keep), values


def _past_exact(values: np.ndarray) -> list[int]:
    """The columns of ``values`` holding a number of magnitude 2**53 or more (NaN ignored),
    found without a copy of the table."""
    if values.shape[0] == 0:
        return []
    hi, lo = np.fmax.reduce(values, axis=0), np.fmin.reduce(values, axis=0)
    return np.flatnonzero((hi >= EXACT_INTEGER) | (lo <= -EXACT_INTEGER)).tolist()


def _check_integers(path, layout, values, strings, include, big, keep, shown) -> None:
    """A DataError at the first cell (row first, then the leftmost column) written as a whole
    number that float64 would read as another one: past 2**53 (9,007,199,254,740,992) a
    17-digit identifier such as 12345678901234567 becomes 12345678901234568. A number written
    with a decimal point or an exponent is a measurement, whose rounding is expected."""
    first = None  # (row, position in include, cell, value read)
    for j in big:
        rows = np.flatnonzero(np.abs(values[:, j]) >= EXACT_INTEGER)
        if first is not None:
            rows = rows[rows < first[0]]
        cells = strings.column(include[j]).take(rows).to_pylist()
        for i, cell in zip(rows.tolist(), cells, strict=True):
            cell = cell.strip()
            if not _INTEGER.fullmatch(cell):
                continue
            read_as = float(values[i, j])
            try:
                exact = math.isfinite(read_as) and int(cell) == int(read_as)
            except ValueError:  # more digits than Python converts (thousands): not exact
                exact = False
            if not exact:
                first = (i, j, cell, read_as)
                break
    if first is None:
        return
    i, j, cell, read_as = first
    col = keep[j]
    short = len(cell) <= 40
    shown_cell = cell if short else f"{cell[:20]}...{cell[-10:]} ({len(cell)} digits)"
    advice = (
        "leave it out with --columns (columns= in Python); if rounding is acceptable, write its "
        f"values with a decimal point or an exponent (e.g. {cell}.0)"
        if short and math.isfinite(read_as)
        else "leave it out with --columns (columns= in Python)"
    )
    raise DataError(
        f"{path}: row {i} (line {_line_of(path, layout, i)}), column {col} ({shown[col]!r}) "
        f"holds {inexact_integer_words(shown_cell, read_as)}. If the column is an identifier, "
        f"{advice}"
    )


def _slow_values(path, layout, table, include, keep, shown, pa, pc) -> np.ndarray:
    """The values of the selected columns read as text, or a DataError at the first bad cell
    in row-major order (the row first, then the leftmost column)."""
    values = np.empty((table.num_rows, len(include)), dtype=np.float64)
    first = None  # (row, position in include)
    for j, name in enumerate(include):
        values[:, j], row = _parse_column(table.column(name), pa, pc)
        if row is not None and (first is None or row < first[0]):
            first = (row, j)
    if first is None:
        return values
    i, j = first
    cell = table.column(include[j])[i].as_py().strip()
    col = keep[j]
    others = [d for d in (*_CANDIDATES, " ") if d != layout.delimiter and d in cell]
    if others and not re.fullmatch(r"[-+]?\d*,\d+", cell):
        hint = f"; it holds {others[0]!r}: is the delimiter right (--delimiter, delimiter=)?"
    elif re.fullmatch(r"[-+]?\d*,\d+", cell):
        hint = "; write decimal points, not decimal commas (1.5, not 1,5)"
    else:
        hint = ""
    raise DataError(
        f"{path}: row {i} (line {_line_of(path, layout, i)}), column {col} ({shown[col]!r}) "
        f"holds the non-numeric value {cell!r}; encode it as a number or leave the column out "
        f"with --columns (columns= in Python){hint}"
    )


def column_names(path, delimiter=None, header=None) -> list[str] | None:
    """The column names :func:`load_array` reads from ``path`` (a delimited text header or
    ``#`` comment line, sniffed as it sniffs them, or a Parquet schema), or None when the file
    names no columns (no header, .npy, .npz) or cannot be read. ``delimiter`` and ``header``
    as :func:`load_array` takes them. The one place the package learns a file's column
    names: the command line prints and stores these."""
    path = Path(path)
    header = check_header(header)
    suffix = _text_suffix(path)
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        if suffix not in TEXT_SUFFIXES or not path.is_file():
            return None
        layout = _sniff(path, parse_delimiter(delimiter), header)
    except (OSError, ValueError, ImportError, zlib.error):  # DataError is a ValueError
        return None
    if layout is None or layout.header is None:
        return None
    skip = 1 if layout.header[0] in ("", '""') else 0  # R's unnamed row index, as read
    return layout.header[skip:]


def load_array(
    path,
    *,
    columns=None,
    allow_nan: bool = False,
    dtype=torch.float64,
    delimiter=None,
    header: bool | None = None,
) -> torch.Tensor:
    """Read ``path`` into a (n, d) float tensor.

    Formats by suffix: delimited text (``.csv``, ``.tsv``, ``.txt``, ``.tab``, ``.dat``, each
    also compressed as ``.gz`` or ``.bz2``: ``data.csv.gz``),
    ``.npy``, ``.npz`` (the only array, or the one named first in ``columns``), ``.parquet``.
    Text is UTF-8 (a byte-order mark is ignored); its delimiter (tab, semicolon, comma, pipe,
    or runs of spaces as ``numpy.savetxt`` writes) is sniffed unless ``delimiter`` names it
    (see :func:`parse_delimiter`), and its first row is taken as column names only when it
    holds text above numbers: a headerless file keeps its first row. ``header=True`` or
    ``False`` says so instead of sniffing; a sniffed first line that could be either (names
    that include numbers, or data that are the column numbers 0..d-1 or 1..d, as pandas
    writes for unnamed columns) is read as decided above with a UserWarning naming the line
    and the ``header=`` that settles it. ``#`` lines before the
    data are skipped (the last names the columns when it has one name per column, as
    ``numpy.savetxt(header=...)`` writes); ``""``, ``nan`` and ``na`` cells are NaN. ``columns`` keeps
    some columns, in the order given: names from a CSV header or Parquet schema, or 0-based
    positions (ints or digit strings) in every format; a name where a file has none, or a
    position past the last column, is a :class:`~latentfit.errors.DataError`. Errors name the
    row and column of non-numeric, NaN or infinite values, and of whole numbers that float64
    would read as other whole numbers (past 2**53: a 17-digit identifier column, say; a value
    written with a decimal point or an exponent is rounded as usual); empty, damaged and binary files
    and folders are refused with a DataError. Columns left out are never converted, so a text
    column can stay in the file.
    """
    from latentfit._files import file_status

    status = file_status(path)  # a name too long to be a file is said as such
    path = Path(path)
    delimiter = parse_delimiter(delimiter)
    header = check_header(header)
    if status is None:
        raise FileNotFoundError(f"no data file at {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the data file inside it")
    if status.st_size == 0:
        raise DataError(f"{path} is empty")
    suffix = _text_suffix(path)
    check_text_options(path, delimiter, header)
    if suffix in TEXT_SUFFIXES:
        header, values = _read_text(path, columns, delimiter, header)
    elif suffix == ".npy":
        header, values = _select(None, _read_npy(path), columns, path)
    elif suffix == ".npz":
        columns = list(columns or [])
        values = _read_npz(path, columns)
        header, values = _select(None, values, columns, path)
    elif suffix in (".parquet", ".pq"):
        header, values = _read_parquet(path, columns)
    else:
        raise DataError(
            f"{path}: unknown format {suffix!r}; use .csv (or .tsv, .txt, each may be .gz or "
            ".bz2 compressed), .npy, .npz or .parquet"
        )
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.size == 0:
        raise DataError(f"{path} holds no values (shape {values.shape})")
    return as_float_tensor(
        values, name=str(path.name), dtype=dtype, allow_nan=allow_nan, columns=header
    )
