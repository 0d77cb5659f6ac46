"""em.flat_columns.constant_columns, which the Gaussian models' ConstantColumnWarning names, on
generated data: the columns that hold one value among the rows of positive weight (NaN left
out, at least two such rows), checked against a plain numpy loop; the warning names exactly
those columns."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from latentfit.em.flat_columns import constant_columns, warn_constant_columns
from latentfit.errors import ConstantColumnWarning

VALUES = st.sampled_from([0.0, -0.0, 1.0, 0.1, -3.5, 1e300, 5e-324, 7.0])


@st.composite
def tables(draw):
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 5))
    X = np.array([[draw(VALUES) for _ in range(d)] for _ in range(n)])
    for j in range(d):  # some columns constant by construction, others as drawn
        if draw(st.booleans()):
            X[:, j] = draw(VALUES)
    holes = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, d - 1)), max_size=6))
    for i, j in holes:
        X[i, j] = np.nan
    w = None
    if draw(st.booleans()):
        w = np.array([draw(st.sampled_from([0.0, 1.0, 2.5, 1e-300])) for _ in range(n)])
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    with np.errstate(over="ignore"):  # 1e300 as float32 is inf: a value like any other here
        return X.astype(dtype), w


def _by_loop(X, w):
    cols, values = [], []
    for j in range(X.shape[1]):
        kept = [X[i, j] for i in range(X.shape[0])
                if not np.isnan(X[i, j]) and (w is None or w[i] > 0)]  # fmt: skip
        if len(kept) >= 2 and all(v == kept[0] for v in kept):
            cols.append(j)
            values.append(float(kept[0]))
    return cols, values


@given(tables())
def test_constant_columns_are_those_a_loop_finds(case):
    X, w = case
    tw = None if w is None else torch.as_tensor(w, dtype=torch.float64)
    cols, values = constant_columns(torch.as_tensor(X), tw)
    want_cols, want_values = _by_loop(X, w)
    assert cols == want_cols
    np.testing.assert_array_equal(values, want_values)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warn_constant_columns(torch.as_tensor(X), tw, "M", "components")
    said = [str(m.message) for m in seen if m.category is ConstantColumnWarning]
    if X.shape[0] < 2 or not want_cols:
        assert not said
        return
    assert len(said) == 1
    if len(want_cols) == 1:
        assert f"column {want_cols[0]} of X holds one value" in said[0]
    else:
        shown = ", ".join(str(j) for j in want_cols[:10])
        assert f"columns {shown} of X each hold one value" in said[0]
