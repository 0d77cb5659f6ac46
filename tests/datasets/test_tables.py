"""Delimited text of every common kind, read by load_array and checked against numpy.loadtxt
and pandas.read_csv on the same file."""

import bz2
import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

from latentfit.datasets import (
    column_names,
    load_array,
    load_dataset,
    load_faithful,
    parse_delimiter,
)
from latentfit.errors import DataError, ParameterError

X = np.random.default_rng(0).normal(size=(40, 3)) * [1, 10, 100]

# name, suffix, numpy.savetxt keyword arguments, the delimiter numpy.loadtxt needs (None:
# runs of whitespace)
KINDS = [
    ("comma", ".csv", {"delimiter": ","}, ","),
    ("tab", ".tsv", {"delimiter": "\t"}, "\t"),
    ("semicolon", ".csv", {"delimiter": ";"}, ";"),
    ("pipe", ".txt", {"delimiter": "|"}, "|"),
    ("savetxt-default", ".txt", {}, None),
    ("aligned", ".txt", {"fmt": "%12.5f"}, None),  # runs of spaces, leading spaces
]


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
def test_every_delimiter_with_and_without_header_matches_numpy_loadtxt(tmp_path, kind, header):
    _, suffix, kwargs, delim = kind
    path = tmp_path / f"d{suffix}"
    names = (kwargs.get("delimiter") or " ").join(["a", "b", "c"])
    np.savetxt(path, X, header=names if header else "", comments="", **kwargs)
    want = np.loadtxt(path, delimiter=delim, skiprows=1 if header else 0)
    got = load_array(path).numpy()
    assert got.shape == want.shape == X.shape  # a headerless file keeps its first row
    np.testing.assert_array_equal(got, want)
    if header:  # the names are found whatever the delimiter
        np.testing.assert_array_equal(load_array(path, columns=["c", "a"]).numpy(), want[:, [2, 0]])


def test_numpy_savetxt_commented_header_names_the_columns(tmp_path):
    path = tmp_path / "d.txt"
    np.savetxt(path, X, header="a b c")  # writes '# a b c' first, as numpy does by default
    want = np.loadtxt(path)
    np.testing.assert_array_equal(load_array(path).numpy(), want)
    np.testing.assert_array_equal(load_array(path, columns=["b"]).numpy(), want[:, [1]])


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    path = tmp_path / "bom.csv"
    text = "a,b\n" + "".join(f"{u!r},{v!r}\n" for u, v in X[:, :2].tolist())
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    want = pd.read_csv(path, encoding="utf-8-sig").to_numpy()
    np.testing.assert_array_equal(load_array(path).numpy(), want)
    np.testing.assert_array_equal(load_array(path, columns=["a"]).numpy(), want[:, [0]])
    path.write_bytes(b"\xef\xbb\xbf" + text.split("\n", 1)[1].encode())  # no header either
    np.testing.assert_array_equal(load_array(path).numpy(), want)


@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
def test_a_text_column_is_dropped_before_conversion_by_name_or_position(tmp_path, delimiter):
    path = tmp_path / "iris.csv"
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame.insert(1, "species", ["setosa", "versicolor"] * 20)
    frame.to_csv(path, sep=delimiter, index=False)
    ref = pd.read_csv(path, sep=delimiter, usecols=["a", "c"])[["c", "a"]].to_numpy()
    for columns in (["c", "a"], [3, 0], ["3", "0"], ["c", 0]):
        np.testing.assert_array_equal(load_array(path, columns=columns).numpy(), ref)
    with pytest.raises(DataError, match=r"row 0 \(line 2\), column 1 \('species'\).*'setosa'"):
        load_array(path)


def test_headerless_text_column_keeps_the_first_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,setosa\n3,4,virginica\n")
    np.testing.assert_array_equal(load_array(path, columns=[1, 0]).numpy(), [[2, 1], [4, 3]])


def test_delimiter_override(tmp_path):
    path = tmp_path / "d.txt"
    np.savetxt(path, X, delimiter="\t")
    want = np.loadtxt(path, delimiter="\t")
    for spelling in ("tab", "\\t", "\t", "TAB"):
        np.testing.assert_array_equal(load_array(path, delimiter=spelling).numpy(), want)
    with pytest.raises(DataError, match=r"it holds '\\t': is the delimiter right"):
        load_array(path, delimiter="comma")
    # a comma file read with the delimiter named: commas inside quotes stay in the cell
    path.write_text('"x,1";y\n1;2\n3;4\n')
    got = load_array(path, delimiter=";", columns=["y"]).numpy()
    np.testing.assert_array_equal(got, [[2], [4]])


@pytest.mark.parametrize(
    "text, want",
    [(None, None), ("auto", None), ("comma", ","), ("semicolon", ";"), ("whitespace", " "),
     ("space", " "), ("|", "|"), ("tab", "\t")],
)  # fmt: skip
def test_parse_delimiter_names(text, want):
    assert parse_delimiter(text) == want


def test_parse_delimiter_refuses_more_than_one_character():
    with pytest.raises(ParameterError, match="'ab' is not one character; use auto, comma"):
        parse_delimiter("ab")


@pytest.mark.parametrize(
    "delimiter, suffix", [("\t", ".tsv"), (";", ".csv"), (" ", ".txt")], ids=["tab", "semi", "ws"]
)
def test_errors_name_row_line_column_and_value_in_every_format(tmp_path, delimiter, suffix):
    path = tmp_path / f"d{suffix}"
    rows = [["x", "y", "z"], ["1", "2", "3"], ["4", "5", "6"], ["7", "8", "oops"]]
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"row 2 \(line 4\), column 2 \('z'\).*'oops'"):
        load_array(path)
    rows[3] = ["7", "8"]
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    with pytest.raises(DataError, match="line 4 has 2 fields, the header has 3"):
        load_array(path)


def test_a_bad_cell_far_into_a_large_file_is_found_exactly(tmp_path):
    # past the 64 KiB the layout is sniffed from and past pyarrow's first 1 MiB block
    path = tmp_path / "big.csv"
    values = np.arange(300_000, dtype=np.float64).reshape(-1, 3)
    lines = ["a,b,c"] + [f"{u:.0f},{v:.0f},{w:.0f}" for u, v, w in values]
    lines[70_001] = "1,zz,3"  # data row 70,000, on line 70,002
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 70000 \(line 70002\), column 1 \('b'\).*'zz'"):
        load_array(path)
    lines[70_001] = "1,2,3"
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(load_array(path).numpy(), pd.read_csv(path).to_numpy())


def test_missing_cells_are_nan_as_before(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,NA\nnan,2\n,3\nNaN, \n5,6\n")
    got = load_array(path, allow_nan=True).numpy()
    want = np.array([[1, np.nan], [np.nan, 2], [np.nan, 3], [np.nan, np.nan], [5, 6]])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match=r"NaN at row 0, column 1 \('b'\)"):
        load_array(path)


def test_decimal_commas_get_their_own_hint(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("a;b\n1,5;2\n3;4\n")
    with pytest.raises(DataError, match=r"'1,5'.*decimal points, not decimal commas"):
        load_array(path)


def test_text_that_is_not_utf8_past_the_sniffed_part_is_a_data_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 30_000 + b"3,\xff\xfe\n")
    with pytest.raises(DataError, match=r"d\.csv"):
        load_array(path)


def test_blank_and_comment_only_files(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\n\n# nothing here\n")
    with pytest.raises(DataError, match="is empty: no header and no rows"):
        load_array(path)
    path.write_text("a,b\n\n\n")
    with pytest.raises(DataError, match="has a header but no data rows"):
        load_array(path)


def test_load_dataset_by_name_with_columns():
    f = load_faithful()
    ds = load_dataset("faithful", columns=["waiting", 0])
    np.testing.assert_array_equal(ds.data.numpy(), f.data.numpy()[:, [1, 0]])
    assert ds.feature_names == ["waiting", "eruptions"]
    assert load_dataset("mnist").data.shape == (5000, 784)
    with pytest.raises(ParameterError, match=r"no bundled data set 'iris'.*faithful, geyser"):
        load_dataset("iris")
    with pytest.raises(DataError, match="has no column 'x'"):
        load_dataset("geyser", columns=["x"])


def test_a_column_named_twice_is_returned_twice_as_numpy_indexing_does(tmp_path):
    path = tmp_path / "d.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    want = np.loadtxt(path, delimiter=",", skiprows=1)[:, [0, 0, 2]]
    np.testing.assert_array_equal(load_array(path, columns=[0, "a", "c"]).numpy(), want)


def test_mixed_blanks_and_crlf_read_as_numpy_loadtxt_does(tmp_path):
    path = tmp_path / "d.txt"
    lines = [" \t".join(f"{v:.6f}" for v in row) + ("  \r\n" if i % 2 else "\n")
             for i, row in enumerate(X)]  # fmt: skip
    path.write_text("\t  " + "   ".join(lines), newline="")
    np.testing.assert_array_equal(load_array(path).numpy(), np.loadtxt(path))


@pytest.mark.parametrize("opener, suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2")])
@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
def test_compressed_text_reads_as_the_plain_file(tmp_path, kind, opener, suffix):
    _, ext, kwargs, _ = kind
    plain = tmp_path / f"d{ext}"
    np.savetxt(plain, X, header=(kwargs.get("delimiter") or " ").join("abc"), comments="", **kwargs)
    packed = tmp_path / f"d{ext}{suffix}"
    with opener(packed, "wb") as f:
        f.write(plain.read_bytes())
    np.testing.assert_array_equal(load_array(packed).numpy(), load_array(plain).numpy())
    np.testing.assert_array_equal(
        load_array(packed, columns=["c"]).numpy(), load_array(plain, columns=["c"]).numpy()
    )
    assert column_names(packed) == ["a", "b", "c"]


def test_compressed_text_errors_name_the_line_and_damage(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(b"a,b\n1,2\n3,x\n"))
    with pytest.raises(DataError, match=r"row 1 \(line 3\), column 1 \('b'\).*'x'"):
        load_array(bad)
    cut = tmp_path / "cut.csv.gz"
    text = "a,b\n" + "".join(f"{u},{v}\n" for u, v in X[:, :2])
    whole = gzip.compress(text.encode())
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cannot be decompressed"):
        load_array(cut)
    fake = tmp_path / "fake.csv.gz"
    fake.write_bytes(b"a,b\n1,2\n")  # a plain file with a .gz name
    with pytest.raises(DataError, match="cannot be decompressed"):
        load_array(fake)


def test_a_compressed_file_that_expands_past_memory_is_refused_by_name(tmp_path, monkeypatch):
    from latentfit.datasets import _files
    from latentfit.errors import ResourceLimitError

    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 100_000))  # 400 kB of text
    monkeypatch.setattr(_files, "_DECOMPRESS_BLOCK", 1 << 14)
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 100_000)
    with pytest.raises(ResourceLimitError, match=r"decompressing big\.csv\.gz"):
        load_array(path)


# ---------------------------------------------------------------------- header or data
COLUMN_NUMBERS = "0,1\n1.5,2.5\n3.5,4.5\n"  # pandas' header for unnamed columns, or a row?


def test_a_first_line_of_column_numbers_is_data_with_a_warning_naming_the_override(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text(COLUMN_NUMBERS)
    with pytest.warns(UserWarning, match=r"n\.csv: line 1 \('0,1'\) is read as the first row") as w:
        got = load_array(path).numpy()
    assert "--header (header=True in Python)" in str(w[0].message)
    np.testing.assert_array_equal(got, [[0, 1], [1.5, 2.5], [3.5, 4.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said either way: no warning
        np.testing.assert_array_equal(load_array(path, header=True).numpy(), got[1:])
        np.testing.assert_array_equal(load_array(path, header=False).numpy(), got)
        assert column_names(path, header=True) == ["0", "1"]
        assert column_names(path) is None and column_names(path, header=False) is None
        np.testing.assert_array_equal(
            load_array(path, header=True, columns=["1"]).numpy(), got[1:, 1:]
        )


def test_a_first_line_of_names_holding_numbers_is_names_with_a_warning(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("1,?\n2,3\n4,5\n")  # '?' over numbers makes it names; 1 is a number
    with pytest.warns(UserWarning, match=r"line 1 \('1,\?'\) is read as column names.*--no-header"):
        np.testing.assert_array_equal(load_array(path).numpy(), [[2, 3], [4, 5]])
    with pytest.raises(DataError, match=r"row 0 \(line 1\), column 1 .*'\?'"):
        load_array(path, header=False)


@pytest.mark.parametrize(
    "text",
    [
        "0,1\n1,0\n0,1\n",  # binary data whose first row recurs
        "a,b\n1,2\n3,4\n",  # names
        '"","a","b"\n"1",1,2\n',  # R's row index
        "3,1\n1.5,2.5\n",  # numbers that are not column numbers
    ],
)
def test_clear_first_lines_are_read_without_a_warning(tmp_path, text):
    path = tmp_path / "c.csv"
    path.write_text(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = load_array(path)
    assert caught == []
    assert X.shape[0] >= 1


def test_header_takes_none_true_or_false(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text(COLUMN_NUMBERS)
    with pytest.raises(ParameterError, match="header must be None"):
        load_array(path, header="yes")


def test_column_numbers_under_a_comment_naming_the_columns_are_data(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# a b\n0 1\n1.5 2.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_array(path, columns=["b"]).numpy(), [[1], [2.5]])


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".parquet"])
def test_a_delimiter_or_header_for_a_file_that_is_not_text_is_refused(tmp_path, suffix):
    """delimiter= and header=True were read and ignored for .npy, .npz and Parquet files: a
    user who meant another file (or believed the first row to be names) got no word of it."""
    path = tmp_path / f"d{suffix}"
    if suffix == ".npy":
        np.save(path, X)
    elif suffix == ".npz":
        np.savez(path, X=X)
    else:
        pd.DataFrame(X, columns=["a", "b", "c"]).to_parquet(path)
    for kwargs, name in (({"delimiter": ";"}, "delimiter=';'"), ({"header": True}, "header=True")):
        with pytest.raises(ParameterError, match=rf"d{suffix} is a \{suffix} file.*{name}"):
            load_array(path, **kwargs)
    # the defaults, "auto" and a headerless file said as such read the values
    for kwargs in ({}, {"delimiter": "auto"}, {"header": False}):
        np.testing.assert_array_equal(load_array(path, **kwargs).numpy(), X)
