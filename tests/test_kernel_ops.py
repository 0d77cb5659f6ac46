"""latentfit._kernel_ops: the numba functions the compiled kernels use in place of numba's
builtins, which compile error-message formatting into every kernel (a first decode after an
install compiled for ~7 s): the same values as Python's and numpy's, and no kernel calls the
builtins they replace."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import latentfit

SRC = Path(latentfit.__file__).parent
#: what the kernels call instead: latentfit._kernel_ops
REPLACED = {"min", "max", "np.searchsorted"}


def _kernels():
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) in ("jit", "_jit", "_compiled.jit") for d in node.decorator_list
            ):
                yield path.relative_to(SRC), node


def test_no_kernel_calls_what_kernel_ops_replaces():
    found = []
    kernels = 0
    for path, fn in _kernels():
        kernels += 1
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            name = ast.unparse(call.func)
            if name in REPLACED or (name.endswith(".max") and not call.args):
                found.append(f"{path}:{call.lineno} {fn.name}: {ast.unparse(call)}")
    assert kernels > 20  # the walk finds the kernels
    assert not found, found


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 2),
        (2, 1),
        (3, 3),
        (1.5, -2.0),
        (-0.0, 0.0),
        (0.0, -0.0),
        (math.nan, 1.0),
        (1.0, math.nan),
    ],
)
def test_minimum_and_maximum_are_pythons(a, b):
    from latentfit._kernel_ops import maximum, minimum

    for ours, python in ((minimum(a, b), min(a, b)), (maximum(a, b), max(a, b))):
        assert ours == python or (math.isnan(ours) and math.isnan(python))
        assert math.copysign(1, ours) == math.copysign(1, python)


def test_searchsorted_and_largest_are_numpys():
    from latentfit._kernel_ops import largest, searchsorted_left

    rng = np.random.default_rng(0)
    values = np.sort(rng.integers(0, 20, 30))
    for x in range(-1, 22):
        assert searchsorted_left(values, x) == np.searchsorted(values, x)
    for m in (rng.normal(size=7), np.array([-np.inf, -np.inf]), np.array([1.0, np.nan, 2.0])):
        assert largest(m) == m.max() or (np.isnan(largest(m)) and np.isnan(m.max()))
