"""CSV tables written by ``predict``, ``score``, ``sample`` and ``fit gmm|bgmm --labels``: to a
file (atomically) or to standard output, floats in full."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from latentfit.cli.app import fail


def _cell(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(v)


#: Rows formatted at a time: the text of a table is written chunk by chunk, so that writing
#: it costs a few MB whatever its length (the whole text can be many times the array's size).
CHUNK_ROWS = 10_000


def table_chunks(header: list[str], columns: list):
    """CSV text of the given columns (1-D arrays of equal length), :data:`CHUNK_ROWS` rows
    at a time after the header line; floats are written in full (the shortest text that
    reads back as the same number)."""
    import numpy as np

    arrays = [np.asarray(c) for c in columns]
    yield ",".join(header) + "\n"
    n = len(arrays[0]) if arrays else 0
    for start in range(0, n, CHUNK_ROWS):
        lists = [a[start : start + CHUNK_ROWS].tolist() for a in arrays]
        yield "".join(",".join(_cell(v) for v in row) + "\n" for row in zip(*lists, strict=True))


def table_text(header: list[str], columns: list) -> str:
    """CSV text of the given columns (see :func:`table_chunks`)."""
    return "".join(table_chunks(header, columns))


def write_table(out: Path | None, header: list[str], columns: list) -> None:
    """The table to ``out`` (atomically) or to standard output, chunk by chunk."""
    if out is None:
        for text in table_chunks(header, columns):
            sys.stdout.write(text)
        return
    from latentfit._files import atomic_path
    from latentfit.errors import LatentfitError

    try:
        with atomic_path(out) as tmp, tmp.open("w") as f:
            for text in table_chunks(header, columns):
                f.write(text)
    except (LatentfitError, OSError) as err:
        fail(str(err))


def write_labels(path: Path, labels) -> None:
    """``fit gmm|bgmm --labels``: the component of every row, one a line under ``label``."""
    import numpy as np

    write_table(path, ["label"], [np.asarray(labels)])
    typer.echo(f"labels written to {path}", err=True)  # stdout may carry --json or --csv
