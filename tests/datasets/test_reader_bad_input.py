"""Bad data files end in a latentfit error that names the file and the problem, in memory
(:func:`load_array`), streamed (:func:`open_source`) and on the command line; files that are
only unusual (classic Mac line ends, float128, big-endian) are read."""

from __future__ import annotations

import gzip
import io
import re
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.datasets import load_array
from latentfit.em.sources.chunks import NpySource, ParquetSource, open_source
from latentfit.errors import DataError, DataTypeError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()
X = np.arange(12, dtype=np.float64).reshape(6, 2) / 4.0  # (n, d) = (6, 2)


def _streamed(path) -> np.ndarray:
    source = open_source(path)
    return np.concatenate([Xc.numpy() for Xc, _ in source])


def _cli_error(argv, *needles):
    res = runner.invoke(app, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "Traceback" not in res.output
    for needle in needles:
        assert needle in res.output, res.output


def _lying_npy(shape, data_bytes: int = 64) -> bytes:
    """A .npy file whose header claims ``shape`` of float64 but holds ``data_bytes`` bytes."""
    f = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + bytes(data_bytes)


# ---------------------------------------------------------------------- .npy headers
@pytest.mark.parametrize("shape", [(10**12, 2), (10**7, 1000), (40, 2)])
def test_npy_header_claiming_more_than_the_file_holds(tmp_path, shape):
    path = tmp_path / "lying.npy"
    path.write_bytes(_lying_npy(shape))
    need = f"{shape[0] * shape[1] * 8:,} bytes"
    for read in (load_array, NpySource, _streamed):
        with pytest.raises(DataError, match="truncated or damaged") as info:
            read(path)
        assert "lying.npy" in str(info.value) and need in str(info.value)
        assert "64 bytes follow the header" in str(info.value)


def test_cli_lying_npy_is_a_clean_error_in_memory_and_streamed(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(_lying_npy((10**12, 2)))
    for extra in ([], ["--stream-above", "0"]):
        _cli_error(["fit", "gmm", str(path), "-k", "2", "--quiet", *extra], "huge.npy", "truncated")


def test_npy_with_a_negative_shape_or_object_header(tmp_path):
    path = tmp_path / "neg.npy"
    path.write_bytes(_lying_npy((-5, 2)))
    with pytest.raises(DataError, match="negative shape"):
        load_array(path)
    with pytest.raises(DataError, match="negative shape"):
        NpySource(path)
    np.save(tmp_path / "obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(DataTypeError, match="pickled Python objects"):
        NpySource(tmp_path / "obj.npy")


def test_npz_and_npy_swapped(tmp_path):
    np.savez(tmp_path / "a.npz", x=X)
    (tmp_path / "zip.npy").write_bytes((tmp_path / "a.npz").read_bytes())
    for read in (load_array, NpySource):
        with pytest.raises(DataError, match=r"zip archive .* name it \.npz") as info:
            read(tmp_path / "zip.npy")
        assert "zip.npy" in str(info.value)
    np.save(tmp_path / "a.npy", X)
    (tmp_path / "arr.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    with pytest.raises(DataError, match=r"arr.npz is a .npy array, not a .npz archive"):
        load_array(tmp_path / "arr.npz")


# ---------------------------------------------------------------------- .npz archives
def test_empty_npz(tmp_path):
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(DataError, match=re.escape("empty.npz holds no arrays")):
        load_array(tmp_path / "empty.npz")
    _cli_error(["fit", "gmm", str(tmp_path / "empty.npz"), "-k", "2"], "empty.npz holds no arrays")


def test_npz_that_is_not_a_zip(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 4)
    with pytest.raises(DataError, match=re.escape("fake.npz is not a numeric .npz array file")):
        load_array(path)
    _cli_error(["fit", "gmm", str(path), "-k", "2"], "fake.npz", "not a zip archive")


def test_npz_member_claiming_more_than_it_holds(tmp_path):
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _lying_npy((10**12, 2)))
    with pytest.raises(DataError, match=r"lie.npz: array 'x' is truncated or damaged"):
        load_array(path)


def test_npz_with_a_damaged_compressed_member(tmp_path):
    f = io.BytesIO()
    np.savez_compressed(f, x=np.random.default_rng(0).random((1000, 2)))
    raw = bytearray(f.getvalue())
    raw[200:260] = bytes(60)
    (tmp_path / "bad.npz").write_bytes(raw)
    with pytest.raises(DataError, match=r"bad.npz: array 'x'"):
        load_array(tmp_path / "bad.npz")


# ---------------------------------------------------------------------- dtypes torch lacks
@pytest.mark.parametrize("dtype", [np.longdouble, ">f8", ">i4", ">f4"])
def test_float128_and_big_endian_are_read(tmp_path, dtype):
    path = tmp_path / "x.npy"
    np.save(path, X.astype(dtype))
    want = X.astype(dtype).astype(np.float64)
    np.testing.assert_array_equal(load_array(path).numpy(), want)
    np.testing.assert_array_equal(_streamed(path), want)
    np.savez(tmp_path / "x.npz", x=X.astype(dtype))
    np.testing.assert_array_equal(load_array(tmp_path / "x.npz").numpy(), want)


def test_float128_sample_weights_are_read(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", np.ones(6, dtype=np.longdouble))
    source = NpySource(tmp_path / "x.npy", sample_weight=tmp_path / "w.npy")
    np.testing.assert_array_equal(np.concatenate([w.numpy() for _, w in source]), np.ones(6))


def test_cli_fits_float128_and_big_endian(tmp_path):
    for i, dtype in enumerate((np.longdouble, ">f8")):
        path = tmp_path / f"x{i}.npy"
        np.save(path, np.random.default_rng(0).normal(size=(40, 2)).astype(dtype))
        for extra in ([], ["--stream-above", "0"]):
            res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--quiet", *extra])
            assert res.exit_code == 0, res.output


# ---------------------------------------------------------------------- text line ends
def test_cr_only_line_ends_are_read(tmp_path):
    text = "a,b\n" + "".join(f"{a},{b}\n" for a, b in X)
    (tmp_path / "lf.csv").write_text(text)
    (tmp_path / "cr.csv").write_bytes(text.replace("\n", "\r").encode())
    (tmp_path / "cr.csv.gz").write_bytes(gzip.compress(text.replace("\n", "\r").encode()))
    (tmp_path / "cr.txt").write_bytes(text[4:].replace(",", "  ").replace("\n", "\r").encode())
    for name in ("cr.csv", "cr.csv.gz", "cr.txt"):
        np.testing.assert_array_equal(load_array(tmp_path / name).numpy(), X)
    res = runner.invoke(app, ["fit", "gmm", str(tmp_path / "cr.csv"), "-k", "1", "--quiet"])
    assert res.exit_code == 0, res.output


def test_cr_only_errors_name_the_right_line(tmp_path):
    (tmp_path / "bad.csv").write_bytes(b"a,b\r1,2\r3,x\r5,6\r")
    with pytest.raises(DataError, match=r"row 1 \(line 3\), column 1 \('b'\) .* 'x'"):
        load_array(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_bytes(b"a,b\r1,2\r3,4\r5,6,7\r")
    with pytest.raises(DataError, match="line 4 has 3 fields, the header has 2"):
        load_array(tmp_path / "ragged.csv")


def test_a_field_past_the_csv_module_limit_is_reported_as_ragged(tmp_path):
    (tmp_path / "long.csv").write_bytes(b"a,b\n1,2\n3," + b"9" * 200_000 + b",7\n")
    with pytest.raises(DataError, match="line 3 has 3 fields"):
        load_array(tmp_path / "long.csv")


def test_damaged_gzip_text(tmp_path):
    raw = gzip.compress(b"a,b\n" + b"".join(f"{i},{i}\n".encode() for i in range(5000)))
    (tmp_path / "bad.csv.gz").write_bytes(raw[:20] + bytes(200) + raw[220:])
    with pytest.raises(DataError, match=re.escape("bad.csv.gz cannot be decompressed")):
        load_array(tmp_path / "bad.csv.gz")


# ---------------------------------------------------------------------- duplicate names
def test_duplicate_csv_header_names_are_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,a,b\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"columns \[0, 1\] are all named 'a'") as info:
        load_array(path)
    assert "dup.csv" in str(info.value)
    with pytest.raises(DataError, match="all named 'a'"):
        load_array(path, columns=["a", "b"])  # which a?
    # columns picked by position are read whatever their names
    np.testing.assert_array_equal(load_array(path, columns=["b", 1]).numpy(), [[3, 2], [6, 5]])
    _cli_error(["fit", "gmm", str(path), "-k", "1"], "dup.csv", "all named 'a'")


def test_empty_header_names_twice_are_refused(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("a,,\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"columns \[1, 2\] are all unnamed"):
        load_array(path)


def test_score_refuses_a_file_whose_columns_repeat_a_fitted_name(tmp_path):
    rng = np.random.default_rng(0)
    fit_csv, model = tmp_path / "ab.csv", tmp_path / "g.lf"
    np.savetxt(fit_csv, rng.normal(size=(30, 2)), delimiter=",", header="a,b", comments="")
    res = runner.invoke(
        app, ["fit", "gmm", str(fit_csv), "-k", "1", "--quiet", "--out", str(model)]
    )
    assert res.exit_code == 0, res.output
    dup = tmp_path / "aab.csv"
    np.savetxt(dup, rng.normal(size=(30, 3)), delimiter=",", header="a,a,b", comments="")
    _cli_error(["score", str(model), str(dup)], "aab.csv", "all named 'a'")


def _parquet(path, names, columns=None):
    columns = columns or [pa.array([1.0, 2.0, 3.0]) for _ in names]
    pq.write_table(pa.Table.from_arrays(columns, names=names), path)
    return path


@pytest.mark.parametrize("names, message", [(["a", "a"], "all named 'a'"), (["", ""], "unnamed")])
def test_duplicate_parquet_names_are_refused(tmp_path, names, message):
    path = _parquet(tmp_path / "dup.parquet", names)
    for read in (load_array, ParquetSource, _streamed):
        with pytest.raises(DataError, match=message) as info:
            read(path)
        assert "dup.parquet" in str(info.value) and "[0, 1]" in str(info.value)
    _cli_error(["fit", "gmm", str(path), "-k", "1", "--stream-above", "0"], "dup.parquet", message)


def test_parquet_columns_around_a_duplicate_are_read(tmp_path):
    cols = [pa.array([1.0, 2.0]), pa.array([3.0, 4.0]), pa.array([5.0, 6.0])]
    path = _parquet(tmp_path / "dup3.parquet", ["a", "a", "b"], cols)
    np.testing.assert_array_equal(load_array(path, columns=["b"]).numpy(), [[5], [6]])
    np.testing.assert_array_equal(load_array(path, columns=[1, "b"]).numpy(), [[3, 5], [4, 6]])
    with pytest.raises(DataError, match="all named 'a'"):
        load_array(path, columns=["a"])
    source = ParquetSource(path, columns=["b"])
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in source]), [[5], [6]])


def test_parquet_without_columns(tmp_path):
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({}), path)
    for read in (load_array, ParquetSource):
        with pytest.raises(DataError, match=re.escape("none.parquet has no columns")):
            read(path)


@pytest.mark.parametrize(
    "content",
    [b"PAR1" + bytes(100) + b"PAR1", b"a,b\n1,2\n", None],
    ids=["garbage", "text", "truncated"],
)
def test_streamed_damaged_parquet_names_the_file(tmp_path, content):
    path = tmp_path / "bad.parquet"
    if content is None:
        _parquet(tmp_path / "ok.parquet", ["a", "b"])
        content = (tmp_path / "ok.parquet").read_bytes()[:-30]
    path.write_bytes(content)
    for read in (load_array, ParquetSource):
        with pytest.raises(
            DataError, match=re.escape("bad.parquet is not a readable Parquet file")
        ):
            read(path)
    _cli_error(
        ["fit", "gmm", str(path), "-k", "1", "--stream-above", "0"],
        "bad.parquet",
        "not a readable Parquet file",
    )


def test_parquet_bool_and_int_columns_with_nulls_become_nan(tmp_path):
    cols = [pa.array([True, None, False]), pa.array([1, None, 3], pa.int64())]
    path = _parquet(tmp_path / "nulls.parquet", ["b", "i"], cols)
    got = load_array(path, allow_nan=True).numpy()
    np.testing.assert_array_equal(got, [[1, 1], [np.nan, np.nan], [0, 3]])
    source = open_source(path).configured(allow_nan=True)
    streamed = np.concatenate([x.numpy() for x, _ in source])
    np.testing.assert_array_equal(streamed, got)


# ---------------------------------------------------------------------- integers past 2**53
IDS = "id,x\n12345678901234567,1.5\n12345678901234568,2.5\n"  # both read as ...568 in float64


def test_an_integer_that_float64_would_change_is_refused_by_row_and_column(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text(IDS)
    with pytest.raises(DataError) as info:
        load_array(path)
    message = str(info.value)
    for needle in ("ids.csv: row 0 (line 2), column 0 ('id')", "12345678901234567", "--columns"):
        assert needle in message, message
    assert "read as 12345678901234568" in message
    np.testing.assert_array_equal(load_array(path, columns=["x"]).numpy(), [[1.5], [2.5]])


def test_a_text_column_beside_a_long_integer_still_names_the_integer(tmp_path):
    # the slow path (a text cell refused by the fast parse, then left out) checks it too
    path = tmp_path / "mixed.csv"
    path.write_text("name,a,b\nx,1,2\ny,3,123456789012345678901\n")
    with pytest.raises(DataError, match=re.escape("row 1 (line 3), column 2 ('b')")):
        load_array(path, columns=["a", "b"])


def test_integers_float64_holds_exactly_and_decimals_are_read(tmp_path):
    path = tmp_path / "exact.csv"
    path.write_text(f"a,b,c\n{2**60},1e300,-{2**53}\n12345678901234567.0,1.5e17,7\n")
    got = load_array(path).numpy()
    np.testing.assert_array_equal(
        got, [[2.0**60, 1e300, -(2.0**53)], [12345678901234568.0, 1.5e17, 7]]
    )


def test_the_command_line_refuses_an_identifier_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.csv").write_text(IDS + "3,0.5\n")
    _cli_error(["fit", "gmm", "ids.csv", "-k", "1"], "ids.csv: row 0 (line 2), column 0 ('id')")


def test_64_bit_integer_arrays_float64_would_change_are_refused(tmp_path):
    a = np.array([[1, 2], [3, 2**53 + 1]], dtype=np.int64)
    np.save(tmp_path / "i.npy", a)
    for read in (load_array, _streamed):
        with pytest.raises(
            DataError, match=re.escape("row 1, column 1, the integer 9007199254740993")
        ):
            read(tmp_path / "i.npy")
    ids = pa.array([1, None, 2**60 + 1], pa.int64())
    path = _parquet(tmp_path / "i.parquet", ["x", "id"], [pa.array([1.0, 2.0, 3.0]), ids])
    for read in (load_array, _streamed):
        with pytest.raises(DataError, match=re.escape("row 2, column")) as info:
            read(path)
        assert "'id'" in str(info.value) and "1152921504606846977" in str(info.value)
    exact = np.array([[2**60, -(2**63)], [2**63 - 2**10, 5]], dtype=np.int64)
    np.save(tmp_path / "exact.npy", exact)
    np.testing.assert_array_equal(load_array(tmp_path / "exact.npy").numpy(), exact.astype(float))
