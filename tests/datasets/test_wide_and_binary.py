"""Text tables whose first line is longer than the 64 KiB first read, binary content under a
text name, names too long for the file system, and values that are not numbers."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from latentfit.datasets import column_names, load_array
from latentfit.errors import DataError, DataTypeError, ParameterError


def test_a_row_longer_than_64_kib_is_read(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text(",".join(["1.5"] * 20000) + "\n")  # one row of 80 KB
    got = load_array(path)
    assert got.shape == (1, 20000) and bool((got == 1.5).all())


@pytest.mark.parametrize("opener", [open, gzip.open], ids=["csv", "csv.gz"])
def test_a_header_longer_than_64_kib_is_read(tmp_path, opener):
    path = tmp_path / ("h.csv" if opener is open else "h.csv.gz")
    names = [f"c{i}" for i in range(50000)]
    rows = np.arange(3 * 50000, dtype=float).reshape(3, 50000)
    with opener(path, "wt") as f:
        f.write("# a comment line first\n" + ",".join(names) + "\n")
        for row in rows:
            f.write(",".join(f"{v:g}" for v in row) + "\n")
    got = load_array(path, columns=["c0", "c49999"])
    np.testing.assert_array_equal(got.numpy(), rows[:, [0, -1]])
    assert column_names(path) == names


@pytest.mark.parametrize(
    "content, byte", [(b"\x00\x01\x02\x03binary", "0x00"), (b"\x01\x02\x03binary\n1\n", "0x01")]
)
def test_binary_content_under_a_csv_name_is_refused(tmp_path, content, byte):
    path = tmp_path / "b.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"not a text CSV file: byte {byte} at offset 0"):
        load_array(path)
    assert column_names(path) is None


def test_tabs_and_form_feeds_are_text(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"a\tb\r\n1\t2\r\n3\t4\x0c\n")
    np.testing.assert_array_equal(load_array(path).numpy(), [[1, 2], [3, 4]])


def test_a_name_too_long_is_a_latentfit_error(tmp_path):
    with pytest.raises(ParameterError, match=r"too long.*choose a shorter name"):
        load_array(tmp_path / ("a" * 300 + ".csv"))


def test_a_structured_npy_says_its_values_are_not_numbers(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]))
    # it said "holds np.void((0.0, 0), ...) at row 0, column 0, which is not a number"
    with pytest.raises(DataTypeError, match=r"s\.npy is a structured array \(fields a, b\)"):
        load_array(path)
