"""Outputs that are not regular files, and names the file system cannot take.

A write ends with a rename over the target, which would swap a named pipe, a device or a
socket for a regular file: such a target is refused before any work, with or without
``--force`` (named pipes made in tmp_path stand for every such node; never point a test at a
real device). A name too long for the file system is a one-line error, not a traceback.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()
LONG = "a" * 300


@pytest.fixture
def model(tmp_path, data) -> Path:
    out = tmp_path / "m.lfm"
    res = runner.invoke(app, ["fit", "gmm", str(data), "-k", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def _still_a_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.stat(path).st_mode)


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("option", ["--out", "--labels", "--plot"])
def test_fit_refuses_to_replace_a_named_pipe(data, fifo, option, force):
    res = runner.invoke(app, ["fit", "gmm", str(data), "-k", "2", option, str(fifo), *force])
    assert res.exit_code == 2, res.output
    assert f"{option} {fifo} is a named pipe (FIFO), not a regular file" in res.output
    assert "Traceback" not in res.output and _still_a_fifo(fifo)


@pytest.mark.parametrize(
    "command",
    [
        lambda m, d, f: ["predict", str(m), str(d), "--out", str(f)],
        lambda m, d, f: ["sample", str(m), "-n", "3", "--out", str(f)],
        lambda m, d, f: ["score", str(m), str(d), "--per-row", str(f)],
    ],
    ids=["predict", "sample", "score"],
)
def test_commands_on_a_model_refuse_a_named_pipe(model, data, fifo, command):
    res = runner.invoke(app, [*command(model, data, fifo), "--force"])
    assert res.exit_code == 2, res.output
    assert "is a named pipe (FIFO), not a regular file" in res.output
    assert _still_a_fifo(fifo)


def test_a_folder_output_refuses_a_named_pipe_where_it_writes_a_file(tmp_path):
    folder = tmp_path / "tour"
    folder.mkdir()
    os.mkfifo(folder / "index.html")
    res = runner.invoke(app, ["tour", "--out", str(folder), "--force"])
    assert res.exit_code == 2, res.output
    assert "index.html is a named pipe (FIFO), not a regular file" in res.output
    assert _still_a_fifo(folder / "index.html")
    os.mkfifo(tmp_path / "pipe3")
    res = runner.invoke(app, ["tour", "--out", str(tmp_path / "pipe3"), "--force"])
    assert res.exit_code == 2 and "is a named pipe (FIFO), not a folder" in res.output


@pytest.mark.parametrize(
    "command",
    [
        lambda m, d, t: ["fit", "gmm", str(d), "-k", "2", "--out", str(t / f"{LONG}.lfm")],
        lambda m, d, t: ["fit", "gmm", str(d), "-k", "2", "--labels", str(t / f"{LONG}.csv")],
        lambda m, d, t: ["fit", "gmm", str(t / f"{LONG}.csv"), "-k", "2"],
        lambda m, d, t: ["predict", str(m), str(d), "--out", str(t / f"{LONG}.csv")],
        lambda m, d, t: ["sample", str(m), "-n", "3", "--out", str(t / f"{LONG}.csv")],
        lambda m, d, t: ["show", str(t / f"{LONG}.lfm")],
        lambda m, d, t: ["score", str(t / f"{LONG}.lfm"), str(d)],
    ],
    ids=["fit-out", "fit-labels", "data", "predict-out", "sample-out", "show", "score-model"],
)
def test_a_file_name_too_long_is_one_line_not_a_traceback(tmp_path, model, data, command):
    res = runner.invoke(app, command(model, data, tmp_path))
    assert res.exit_code == 2, res.output
    assert "too long" in res.output and "choose a shorter name" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output


def test_a_long_name_the_file_system_takes_is_written(tmp_path, data):
    # 250 characters: a valid name, though its temporary file's would be too long
    out = tmp_path / ("b" * 246 + ".lfm")
    res = runner.invoke(app, ["fit", "gmm", str(data), "-k", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["d.csv", out.name]
    )
