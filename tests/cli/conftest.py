"""Fixtures the command-line tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def data(tmp_path) -> Path:
    """Two well-separated clusters of 40 rows in two named columns, as a CSV file."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))]
    path = tmp_path / "d.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    return path
