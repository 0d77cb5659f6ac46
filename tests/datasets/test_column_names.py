"""latentfit.datasets.column_names: the one place the package learns a file's column names,
and the names the reader itself resolves --columns against."""

from __future__ import annotations

import numpy as np
import pytest

from latentfit.datasets import column_names, load_array

X = np.arange(12, dtype=float).reshape(4, 3) / 7


@pytest.mark.parametrize(
    "name,text,want",
    [
        ("h.csv", "a,b,c\n", ["a", "b", "c"]),
        ("h.tsv", "a\tb\tc\n", ["a", "b", "c"]),
        ("semi.txt", "a;b;c\n", ["a", "b", "c"]),
        ("comment.txt", "# a b c\n", ["a", "b", "c"]),  # numpy.savetxt(header=...)
        ("none.csv", "", None),
    ],
)
def test_names_are_the_ones_the_reader_selects_by(tmp_path, name, text, want):
    path = tmp_path / name
    sep = {"h.tsv": "\t", "semi.txt": ";", "comment.txt": " "}.get(name, ",")
    body = "\n".join(sep.join(repr(float(v)) for v in row) for row in X) + "\n"
    path.write_text(text + body)
    assert column_names(path) == want
    if want is not None:  # every name selects its own column through load_array
        for j, c in enumerate(want):
            np.testing.assert_array_equal(load_array(path, columns=[c]).numpy()[:, 0], X[:, j])


def test_r_row_index_is_dropped_as_the_reader_drops_it(tmp_path):
    path = tmp_path / "r.csv"
    rows = [f'"{i + 1}",' + ",".join(repr(float(v)) for v in row) for i, row in enumerate(X)]
    path.write_text('"","a","b","c"\n' + "\n".join(rows) + "\n")
    names = column_names(path)
    assert names is not None and len(names) == load_array(path).shape[1] == 3


def test_parquet_schema_npy_and_unreadable(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"u": X[:, 0], "v": X[:, 1]}), tmp_path / "t.parquet")
    assert column_names(tmp_path / "t.parquet") == ["u", "v"]
    np.save(tmp_path / "x.npy", X)
    assert column_names(tmp_path / "x.npy") is None
    assert column_names(tmp_path / "missing.csv") is None
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00a,b\n")
    assert column_names(tmp_path / "bin.csv") is None


def test_fit_prints_and_saves_the_names_the_reader_sees(tmp_path):
    """A numpy.savetxt '# a b' header names the columns for the reader, so it names them in
    fit gmm --json and in the saved model too (one source of column names)."""
    import json

    from typer.testing import CliRunner

    import latentfit
    from latentfit.cli import app

    rng = np.random.default_rng(0)
    path = tmp_path / "d.txt"
    np.savetxt(path, rng.normal(size=(40, 2)), header="u v")
    out = tmp_path / "m.lf"
    res = CliRunner().invoke(
        app, ["fit", "gmm", str(path), "-k", "1", "--quiet", "--json", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["features"] == ["u", "v"]
    assert list(latentfit.load(out).feature_names_in_) == ["u", "v"]
