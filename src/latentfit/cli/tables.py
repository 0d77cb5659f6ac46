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


def table_text(header: list[str], columns: list) -> str:
    """CSV text of the given columns (1-D arrays of equal length); floats are written in
    full (the shortest text that reads back as the same number)."""
    import numpy as np

    lists = [np.asarray(c).tolist() for c in columns]
    lines = [",".join(header)]
    lines += [",".join(_cell(v) for v in row) for row in zip(*lists, strict=True)]
    return "\n".join(lines) + "\n"


def write_table(out: Path | None, header: list[str], columns: list) -> None:
    """The table to ``out`` (atomically) or to standard output."""
    text = table_text(header, columns)
    if out is None:
        sys.stdout.write(text)
        return
    from latentfit._files import atomic_path
    from latentfit.errors import LatentfitError

    try:
        with atomic_path(out) as tmp:
            tmp.write_text(text)
    except (LatentfitError, OSError) as err:
        fail(str(err))


def write_labels(path: Path, labels) -> None:
    """``fit gmm|bgmm --labels``: the component of every row, one a line under ``label``."""
    import numpy as np

    write_table(path, ["label"], [np.asarray(labels)])
    typer.echo(f"labels written to {path}", err=True)  # stdout may carry --json or --csv
