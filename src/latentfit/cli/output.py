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
