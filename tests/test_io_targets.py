"""save, load and atomic_path on paths that are not (or cannot be) regular files.

The write ends with a rename over the target, which would replace a named pipe, a device or
a socket with a regular file: such a target is refused before anything is written. A named
pipe made in tmp_path stands for every such node (never point a test at a real device).
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import latentfit
from latentfit._files import atomic_path
from latentfit.errors import ModelFileError, OutputError, ParameterError


@pytest.fixture(scope="module")
def model():
    X = np.random.default_rng(0).normal(size=(60, 2))
    return latentfit.GaussianMixture(2, random_state=0).fit(X)


def test_save_and_atomic_path_refuse_a_named_pipe(tmp_path, model):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(OutputError, match=r"pipe is a named pipe \(FIFO\), not a regular file"):
        latentfit.save(model, pipe)
    with pytest.raises(OutputError, match="named pipe"):
        with atomic_path(pipe) as tmp:
            tmp.write_text("x")
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_save_to_a_folder_is_refused(tmp_path, model):
    with pytest.raises(OutputError, match="is a folder, not a regular file"):
        latentfit.save(model, tmp_path)


def test_a_name_too_long_is_a_latentfit_error(tmp_path, model):
    long = tmp_path / ("a" * 300 + ".lfm")
    with pytest.raises(OutputError, match=r"too long.*choose a shorter name"):
        latentfit.save(model, long)
    with pytest.raises(ParameterError, match=r"too long.*choose a shorter name"):
        latentfit.load(long)
    with pytest.raises(ParameterError, match="too long"):
        latentfit.io.read_header(long)


def test_a_long_name_the_file_system_takes_is_saved(tmp_path, model):
    path = tmp_path / ("b" * 246 + ".lfm")  # 250 bytes: its temporary's name is shortened
    latentfit.save(model, path)
    assert latentfit.load(path).n_components == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("bad", [None, 5, 1.5, b"m.lfm"])
def test_load_refuses_what_is_not_a_path(bad):
    with pytest.raises(ParameterError, match=r"a file path must be a str or os.PathLike"):
        latentfit.load(bad)


def test_load_names_a_named_pipe(tmp_path):
    pipe = tmp_path / "pipe.lfm"
    os.mkfifo(pipe)
    with pytest.raises(ModelFileError, match=r"named pipe \(FIFO\), not a file"):
        latentfit.load(pipe)
