"""Bundled data and the loaders for user files."""

import gzip
import struct

import numpy as np
import pytest
import torch

from latentfit.datasets import (
    load_array,
    load_faithful,
    load_geyser,
    load_mnist_5k,
    load_mnist_idx,
    read_idx,
)
from latentfit.errors import DataError


def test_bundled_sets_have_their_documented_shapes_and_values():
    f = load_faithful()
    assert f.data.shape == (272, 2) and f.feature_names == ["eruptions", "waiting"]
    assert f.data[0].tolist() == [3.6, 79.0]  # first row of R's datasets::faithful
    g = load_geyser()
    assert g.data.shape == (299, 2) and g.feature_names == ["waiting", "duration"]
    assert g.data[0, 0].item() == 80.0
    m = load_mnist_5k()
    assert m.data.shape == (5000, 784) and m.target.shape == (5000,)
    assert torch.bincount(m.target).tolist() == [500] * 10
    assert 0 <= m.data.min() and m.data.max() == 1.0
    raw = load_mnist_5k(scale=False)
    assert raw.data.max() == 255.0 and raw.extra["image_shape"] == (28, 28)


def _write_idx(path, array: np.ndarray, code: int, gz: bool = False):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loader_reads_what_was_written(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, 0x08, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, 0x08, gz)
    X, y = load_mnist_idx(tmp_path, "test")
    assert X.shape == (7, 784) and X.dtype == torch.float64
    np.testing.assert_allclose(X.numpy(), images.reshape(7, -1) / 255.0)
    np.testing.assert_array_equal(y.numpy(), labels)
    floats = rng.normal(size=(3, 4)).astype(np.float32)
    _write_idx(tmp_path / "f.idx", floats, 0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


def test_idx_errors_name_the_problem(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((2, 3), dtype=np.uint8)
    _write_idx(tmp_path / "short", arr, 0x08)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(DataError, match="holds 5 bytes of data but its header"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="has no train-images"):
        load_mnist_idx(tmp_path, "train")


def test_csv_with_header_and_r_row_index(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('"","a","b"\n"1",1.5,2\n"2",3,4\n')
    np.testing.assert_array_equal(load_array(p).numpy(), [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(load_array(p, columns=["b"]).numpy(), [[2], [4]])
    with pytest.raises(ValueError, match=r"has no column 'c'; its columns are \['a', 'b'\]"):
        load_array(p, columns=["c"])


def test_csv_errors_name_row_and_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("x,y\n1,2\n3,abc\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\), column 1 \('y'\).*'abc'"):
        load_array(p)
    p.write_text("x,y\n1,2\n3,NaN\n")
    with pytest.raises(ValueError, match=r"NaN at row 1, column 1 \('y'\)"):
        load_array(p)
    assert torch.isnan(load_array(p, allow_nan=True)[1, 1])
    p.write_text("x,y\n1,2\ninf,3\n")
    with pytest.raises(ValueError, match=r"inf at row 1, column 0 \('x'\)"):
        load_array(p)
    p.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_array(p)
    p.write_text("x,y\n")
    with pytest.raises(ValueError, match="no data rows"):
        load_array(p)
    p.write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="line 2 has 1 fields"):
        load_array(p)


def test_numpy_and_parquet_files(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "x.npy", X)
    np.testing.assert_array_equal(load_array(tmp_path / "x.npy").numpy(), X)
    np.savez(tmp_path / "one.npz", data=X)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz").numpy(), X)
    np.savez(tmp_path / "two.npz", a=X, b=X)
    with pytest.raises(ValueError, match=r"holds arrays \['a', 'b'\]"):
        load_array(tmp_path / "two.npz")
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz", columns=["b"]).numpy(), X)
    bad = X.copy()
    bad[2, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"NaN at row 2, column 1"):
        load_array(tmp_path / "bad.npy")

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"u": [1.0, 2.0], "v": [3, 4]}), tmp_path / "t.parquet")
    np.testing.assert_array_equal(load_array(tmp_path / "t.parquet").numpy(), [[1, 3], [2, 4]])
    pq.write_table(pa.table({"u": [1.0, 2.0], "s": ["a", "b"]}), tmp_path / "s.parquet")
    with pytest.raises(ValueError, match=r"column 1 \('s'\) has type string"):
        load_array(tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="unknown format"):
        (tmp_path / "x.xlsx").write_text("x")
        load_array(tmp_path / "x.xlsx")


def _same_table_in_every_format(tmp_path, X):
    """X written as CSV (header a,b,c), headerless CSV, .npy, one-array .npz and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.savetxt(tmp_path / "h.csv", X, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "n.csv", X, delimiter=",")
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", X)
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]}), tmp_path / "x.parquet")
    return [tmp_path / n for n in ("h.csv", "n.csv", "x.npy", "x.npz", "x.parquet")]


@pytest.mark.parametrize("columns", [[2, 0], ["2", "0"], [1]])
def test_columns_by_position_are_honoured_in_every_format(tmp_path, columns):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    want = X[:, [int(c) for c in columns]]  # numpy's own column selection
    for path in _same_table_in_every_format(tmp_path, X):
        np.testing.assert_array_equal(load_array(path, columns=columns).numpy(), want)


def test_columns_by_name_where_the_file_has_names_and_npz_array_then_positions(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    h, n, npy, npz, parquet = _same_table_in_every_format(tmp_path, X)
    for path in (h, parquet):
        np.testing.assert_array_equal(load_array(path, columns=["c", "a"]).numpy(), X[:, [2, 0]])
    np.testing.assert_array_equal(load_array(n, columns=["x1"]).numpy(), X[:, [1]])
    np.savez(tmp_path / "two.npz", A=X, B=2 * X)
    np.testing.assert_array_equal(
        load_array(tmp_path / "two.npz", columns=["B", "2"]).numpy(), 2 * X[:, [2]]
    )
    # a name where a file has none, and a position past the last column, are refused
    for path in (npy, npz):
        with pytest.raises(DataError, match=r"no column names.*by position, 0 to 2"):
            load_array(path, columns=["a"])
    for path in (h, n, npy, npz, parquet):
        with pytest.raises(DataError, match=r"no column .?3"):
            load_array(path, columns=[3])
    with pytest.raises(DataError, match=r"no column 'zz'; its columns are \['a', 'b', 'c'\]"):
        load_array(parquet, columns=["zz"])


def test_parquet_selection_drops_a_text_column_before_the_type_check(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"u": [1.0, 2.0], "s": ["a", "b"]}), tmp_path / "s.parquet")
    np.testing.assert_array_equal(
        load_array(tmp_path / "s.parquet", columns=["u"]).numpy(), [[1.0], [2.0]]
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bin.csv", bytes(range(128, 256)), "not a text CSV file"),
        ("nul.csv", b"a,b\n1,\x002\n", "not a text CSV file: byte 0x00 at offset 6"),
        ("bin.npy", bytes(range(256)) * 2, "not a numeric .npy array file"),
        ("bin.npz", bytes(range(256)) * 2, "not a numeric .npz array file"),
        ("bin.parquet", bytes(range(256)) * 2, "not a readable Parquet file"),
        ("empty.npy", b"", "is empty"),
    ],
)
def test_damaged_and_binary_files_are_data_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_array(path)
    assert name in str(info.value)


def test_pickled_npy_is_refused_not_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled Python objects"):
        load_array(tmp_path / "obj.npy")


def test_a_folder_is_not_a_data_file(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        load_array(tmp_path / "d.csv")


@pytest.mark.parametrize("damage", ["cut", "not gzip"])
def test_a_damaged_gzipped_idx_file_is_a_data_error(tmp_path, damage):
    # gzip's EOFError / BadGzipFile used to reach the caller
    arr = np.arange(60, dtype=np.uint8).reshape(6, 10)
    _write_idx(tmp_path / "f.idx.gz", arr, 0x08, gz=True)
    whole = (tmp_path / "f.idx.gz").read_bytes()
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx.gz"), arr)  # intact: it reads
    (tmp_path / "f.idx.gz").write_bytes(whole[: len(whole) // 2] if damage == "cut" else b"x" * 40)
    with pytest.raises(DataError, match=r"not a readable gzip file.*download it again"):
        read_idx(tmp_path / "f.idx.gz")
