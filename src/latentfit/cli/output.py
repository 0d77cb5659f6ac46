"""Machine-readable output shared by every command: ``--json`` and ``--csv``.

A command builds one plain result (dicts, lists, numbers, strings, tensors or arrays) and
either prints it for a person or hands it to :func:`print_json`; the numbers are the same.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import typer


def json_option():
    """The ``--json`` flag: print the result as one JSON document instead of text."""
    return typer.Option(
        False, "--json/--no-json", help="Print the result as JSON (the same numbers as the text)."
    )


def to_jsonable(obj: Any) -> Any:
    """``obj`` with tensors and arrays as (nested) lists and non-finite floats as ``null``.

    JSON has no NaN or infinity; ``null`` keeps the document valid for every parser.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):  # torch.Tensor, numpy arrays and numpy scalars
        return to_jsonable(tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Sequence):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return str(obj)


def print_json(obj: Any) -> None:
    """Write ``obj`` as one JSON document (and a newline) to standard output."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


#: Bytes ``--json`` takes per number of a result while it is built and printed: the nested
#: lists, a Python float for each number and the encoder's text (~180 measured for a table
#: of floats, against the 24 a drawn value is sized by).
JSON_BYTES_PER_VALUE = 200


def check_json_size(n_values: int, what: str, hint: str) -> None:
    """Refuse, before any work, a ``--json`` result of ``n_values`` numbers that the memory
    available cannot hold while it is printed."""
    from latentfit._memory import check_allocation
    from latentfit.errors import ResourceLimitError

    try:
        check_allocation(JSON_BYTES_PER_VALUE * n_values, f"--json of {what}", hint=hint)
    except ResourceLimitError as err:
        from latentfit.cli.app import fail

        fail(str(err))


def csv_option(
    help: str = "Print the parameters as CSV, one row per component (or state), for a spreadsheet.",
):
    """The ``--csv`` flag of commands whose result is a table (one row per component or state,
    or per candidate for ``select``)."""
    return typer.Option(False, "--csv/--no-csv", help=help)


def check_format(as_json: bool, as_csv: bool) -> None:
    """``--json`` and ``--csv`` choose one output format; both at once is an error."""
    if as_json and as_csv:
        from latentfit.cli.app import fail

        fail("--json and --csv each choose the output format; choose one")


def column_names(
    path,
    columns: list[str] | str | None,
    d: int,
    model=None,
    delimiter: str | None = None,
    header: bool | None = None,
) -> list[str]:
    """The names of the ``d`` columns a command read from ``path``, for printed parameters:
    the model's ``feature_names_in_``, else the columns chosen by ``--columns`` (named, or by
    position in the header), else the file's header, else ``x0 .. x{d-1}``. The header is
    the data reader's own (:func:`latentfit.datasets.column_names`), with the ``--delimiter``
    and ``--header`` given."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) == d:
        return [str(n) for n in names]
    if isinstance(columns, str):
        from latentfit.cli.app import split_columns

        columns = split_columns(columns)
    read = None  # the names the reader found in the file
    if path is not None:
        from latentfit.datasets import column_names as header_of

        read = header_of(path, delimiter, header)
    if columns:
        out = []
        for c in columns:
            c = str(c)
            if c.isdigit() and (read is None or c not in read):
                i = int(c)
                out.append(read[i] if read is not None and i < len(read) else f"x{i}")
            else:
                out.append(c)
        if len(out) == d:
            return out
    if read is not None:
        if len(read) == d + 1 and read[0] in ("", '""'):  # a written row index
            read = read[1:]
        if len(read) == d:
            return read
    return [f"x{j}" for j in range(d)]


def format_table(values, columns: list[str], rows: list[str] | None = None, label: str = "") -> str:
    """A 2-D array as aligned text with the column names on top and a label on every row."""
    import numpy as np

    values = np.atleast_2d(np.asarray(values, dtype=float))
    rows = [str(i) for i in range(values.shape[0])] if rows is None else rows
    cells = [[f"{v:.6g}" for v in row] for row in values]
    width = max([len(c) for c in columns] + [len(c) for row in cells for c in row] + [1])
    first = max([len(label)] + [len(r) for r in rows])
    lines = [f"{label:<{first}}  " + "  ".join(f"{c:>{width}}" for c in columns)]
    for r, row in zip(rows, cells, strict=True):
        lines.append(f"{r:<{first}}  " + "  ".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)


def print_csv(rows: list[Mapping[str, Any]]) -> None:
    """Write ``rows`` (dicts with the same keys) as CSV with a header to standard output."""
    import csv

    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: to_jsonable(v) for k, v in row.items()})
    sys.stdout.flush()


def gaussian_columns(
    means, covariances, covariance_type: str, names: list[str], i: int
) -> dict[str, float]:
    """Component ``i``'s mean and covariance as named CSV cells: ``mean_<col>``, then
    ``cov_<a>_<b>`` (full, tied: the upper triangle), ``var_<col>`` (diag) or ``var``
    (spherical). ``covariances`` has the estimator's shape for ``covariance_type``."""
    import numpy as np

    row = {f"mean_{n}": float(v) for n, v in zip(names, np.asarray(means)[i], strict=True)}
    cov = np.asarray(covariances)
    if covariance_type in ("full", "tied"):
        c = cov if covariance_type == "tied" else cov[i]
        for a in range(len(names)):
            for b in range(a, len(names)):
                row[f"cov_{names[a]}_{names[b]}"] = float(c[a, b])
    elif covariance_type == "diag":
        row.update({f"var_{n}": float(v) for n, v in zip(names, cov[i], strict=True)})
    else:
        row["var"] = float(cov[i])
    return row


#: the most columns whose covariance matrices the text output prints in full
MATRIX_COLUMNS = 30


def format_covariances(
    covariances, covariance_type: str, names: list[str], labels: list[str] | None = None
) -> str:
    """Covariances as text tables that carry the column names: one d x d table per component
    (full), one shared table (tied), or one row of variances per component (diag, spherical).
    ``labels`` names the components (default 0, 1, ...)."""
    import numpy as np

    cov = np.asarray(covariances)
    if covariance_type in ("full", "tied") and len(names) > MATRIX_COLUMNS:
        # d x d numbers per component are no reading on a terminal (3,000 columns: 126 MB)
        variances = np.diagonal(cov, axis1=-2, axis2=-1).reshape(-1, len(names))
        rows = ["(all)"] if covariance_type == "tied" else None
        head = (
            f"(the {covariance_type} {len(names)} x {len(names)} covariance matrices are not "
            f"printed past {MATRIX_COLUMNS} columns: their variances below; --json or --csv "
            "print every entry, --out keeps the model)"
        )
        labels = labels if rows is None else rows
        return head + "\n" + format_table(variances, names, labels, label="component")
    if covariance_type == "tied":
        return format_table(cov, names, names, label="(all)")
    labels = [str(i) for i in range(len(cov))] if labels is None else labels
    if covariance_type == "full":
        return "\n".join(
            format_table(c, names, names, label=f"[{i}]") for i, c in zip(labels, cov, strict=True)
        )
    if covariance_type == "diag":
        return format_table(cov, names, labels, label="component")
    return format_table(cov.reshape(-1, 1), ["variance"], labels, label="component")
