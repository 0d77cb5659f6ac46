"""Tables on the command line: bundled sets by name (--dataset), delimited files of every kind,
--delimiter, column selection past a text column, out-of-core .npy/Parquet; through the real
``python -m latentfit`` where the brief is the console script itself, else through typer's
runner. Log-likelihoods are compared with the Python API's on the same data."""

from __future__ import annotations

import bz2
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.datasets import load_dataset
from latentfit.em.mixture.gmm import GaussianMixture

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


def console(*args, cwd) -> subprocess.CompletedProcess:
    """``python -m latentfit ARGS`` in a fresh process, on this checkout's sources."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "latentfit", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def loglik(output: str) -> float:
    return float(re.search(r"log-likelihood: (\S+)", output).group(1))


def python_loglik(X, k=2, **kw) -> float:
    model = GaussianMixture(k, random_state=0, **kw).fit(X)
    return model.score(X) * X.shape[0]


@pytest.mark.parametrize(
    "name, extra",
    [
        ("faithful", []),
        ("geyser", []),
        ("mnist", ["--columns", "pixel350,pixel380", "--covariance", "diag"]),
    ],
)
def test_dataset_by_name_through_the_console_script(tmp_path, name, extra):
    res = console("fit", "gmm", "--dataset", name, "-k", "2", "--quiet", *extra, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ds = load_dataset(name, columns=extra[1].split(",") if extra else None)
    kw = {"covariance_type": "diag"} if extra else {}
    np.testing.assert_allclose(loglik(res.stdout), python_loglik(ds.data, **kw), rtol=1e-9)


def test_text_column_dropped_and_tab_delimiter_through_the_console_script(tmp_path):
    X = load_dataset("faithful").data.numpy()
    frame = pd.DataFrame(X, columns=["eruptions", "waiting"])
    frame.insert(0, "species", np.where(X[:, 0] > 3, "long", "short"))
    frame.to_csv(tmp_path / "f.tsv", sep="\t", index=False)
    res = console("fit", "gmm", "f.tsv", "--columns", "eruptions,waiting", "-k", "2", "--quiet",
                  "--delimiter", "tab", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    ref = pd.read_csv(tmp_path / "f.tsv", sep="\t", usecols=["eruptions", "waiting"]).to_numpy()
    np.testing.assert_allclose(loglik(res.stdout), python_loglik(ref), rtol=1e-9)
    res = console("fit", "gmm", "f.tsv", "-k", "2", "--quiet", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "row 0 (line 2), column 0 ('species')" in res.stderr and "'long'" in res.stderr


def _faithful_files(folder: Path) -> dict[str, Path]:
    X = load_dataset("faithful").data.numpy()
    files = {
        "comma": ("f.csv", {"delimiter": ",", "header": "eruptions,waiting", "comments": ""}),
        "tab": ("f.tsv", {"delimiter": "\t"}),
        "semicolon": ("f.csv", {"delimiter": ";", "header": "eruptions;waiting", "comments": ""}),
        "savetxt": ("f.txt", {}),
        "savetxt-header": ("f.dat", {"header": "eruptions waiting"}),
    }
    out = {}
    for kind, (name, kw) in files.items():
        (folder / kind).mkdir()
        np.savetxt(folder / kind / name, X, **kw)
        out[kind] = folder / kind / name
    bom = folder / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + out["comma"].read_bytes())
    out["bom"] = bom
    for kind, opener in (("gzip", gzip.open), ("bzip2", bz2.open)):
        packed = folder / f"f.csv.{'gz' if kind == 'gzip' else 'bz2'}"
        with opener(packed, "wb") as f:
            f.write(out["comma"].read_bytes())
        out[kind] = packed
    return out


def test_every_kind_of_delimited_file_fits_the_same_model(tmp_path):
    want = python_loglik(load_dataset("faithful").data)
    for kind, path in _faithful_files(tmp_path).items():
        res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--quiet"])
        assert res.exit_code == 0, (kind, res.output)
        np.testing.assert_allclose(loglik(res.output), want, rtol=1e-9, err_msg=kind)
    bom = tmp_path / "bom.csv"  # the first name has no byte-order mark in it
    res = runner.invoke(app, ["fit", "dist", str(bom), "-f", "normal", "-c", "eruptions"])
    assert res.exit_code == 0, res.output


TABLE_COMMANDS = {
    "fit gmm": ["fit", "gmm", "-k", "2", "--quiet"],
    "fit bgmm": ["fit", "bgmm", "-k", "2", "--quiet"],
    "fit hmm": ["fit", "hmm", "-k", "2", "--quiet", "--states", "{tmp}/s.csv", "--force"],
    "fit hsmm": [
        "fit",
        "hsmm",
        "-k",
        "2",
        "--n-iter",
        "3",
        "--quiet",
        "--states",
        "{tmp}/s.csv",
        "--force",
    ],
    "fit arhmm": ["fit", "arhmm", "-k", "2", "--quiet", "--states", "{tmp}/s.csv", "--force"],
    "fit dist": ["fit", "dist", "-f", "normal", "-c", "waiting"],
    "select gmm": ["select", "gmm", "-k", "1-2", "--covariance", "full"],
    "select fa": ["select", "fa", "-k", "1"],
}


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_every_table_command_takes_dataset_and_delimiter(command, tmp_path):
    args = [a.format(tmp=tmp_path) for a in TABLE_COMMANDS[command]]
    res = runner.invoke(app, [*args, "--dataset", "faithful"])
    assert res.exit_code == 0, res.output
    path = _faithful_files(tmp_path)["semicolon"]
    res = runner.invoke(app, [*args, str(path), "--delimiter", "semicolon"])
    assert res.exit_code == 0, res.output
    for extra, needle in (
        ([], "no data given"),
        ([str(path), "--dataset", "faithful"], "give DATA or --dataset, not both"),
        (["--dataset", "iris"], "no bundled data set 'iris'"),
        ([str(path), "--delimiter", "ab"], "'ab' is not one character"),
        ([str(path), "--delimiter", "tab"], "is the delimiter right"),
    ):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 2 and "error:" in res.output and needle in res.output, (
            extra,
            res.output,
        )


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_large_npy_and_parquet_are_fitted_out_of_core(tmp_path, suffix):
    X = load_dataset("faithful").data.numpy()
    path = tmp_path / f"f{suffix}"
    if suffix == ".npy":
        np.save(path, X)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"eruptions": X[:, 0], "waiting": X[:, 1]}), path)
    streamed = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--stream-above", "0"])
    assert streamed.exit_code == 0, streamed.output
    assert "streamed from the file" in streamed.stderr
    in_memory = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--quiet"])
    assert "streamed" not in in_memory.stderr
    # the whole file is the streaming fit's initialisation sample: the same fit as in memory
    np.testing.assert_allclose(loglik(streamed.stdout), loglik(in_memory.stdout), rtol=1e-9)
    np.testing.assert_allclose(loglik(streamed.stdout), python_loglik(X), rtol=1e-9)


def test_flows_take_bundled_tables_by_name(tmp_path):
    from latentfit.vae.data import load_vae_data

    data = load_vae_data("geyser", seed=0)
    rows = np.concatenate([data.train, data.val, data.test])
    want = load_dataset("geyser").data.float().numpy()
    np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(want, axis=0))
    out = tmp_path / "f.safetensors"
    args = ["fit", "flow", "--epochs", "1", "--layers", "1", "--hidden", "8", "--quiet"]
    res = runner.invoke(app, [*args, "--dataset", "faithful", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "faithful (196 train / 22 val / 54 test)" in res.output  # 272 rows, 20% test
    res = runner.invoke(app, [*args, "mnist", "--dataset", "faithful", "--out", str(out)])
    assert res.exit_code == 2 and "give DATA or --dataset, not both" in res.output


def test_streamed_npy_keeps_columns_by_position(tmp_path):
    X = load_dataset("faithful").data.numpy()
    wide = np.column_stack([X[:, 1], np.ones(len(X)), X[:, 0]])
    np.save(tmp_path / "w.npy", wide)
    args = ["fit", "gmm", str(tmp_path / "w.npy"), "-k", "2", "--quiet", "--columns", "2,0"]
    streamed = runner.invoke(app, [*args, "--stream-above", "0"])
    assert streamed.exit_code == 0 and "streamed" in streamed.stderr, streamed.output
    np.testing.assert_allclose(loglik(streamed.stdout), python_loglik(X), rtol=1e-9)
    res = runner.invoke(app, [*args[:-1], "5", "--stream-above", "0"])
    assert res.exit_code == 2 and "no column '5'" in res.output


def test_flows_and_diffusion_take_delimiter(tmp_path):
    path = _faithful_files(tmp_path)["tab"]
    flow = ["fit", "flow", str(path), "--epochs", "1", "--layers", "1", "--hidden", "8"]
    ddpm = ["fit", "diffusion", "--dataset", str(path), "--epochs", "1", "--steps", "5",
            "--hidden", "8", "--n-hidden", "1"]  # fmt: skip
    for args in (flow, ddpm):
        out = ["--quiet", "--force", "--out", str(tmp_path / "m.safetensors")]
        res = runner.invoke(app, [*args, *out, "--delimiter", "tab"])
        assert res.exit_code == 0, res.output
        assert "196 train / 22 val / 54 test" in res.output  # all 272 rows were read
        res = runner.invoke(app, [*args, *out, "--delimiter", "semicolon"])
        assert res.exit_code == 2 and "is the delimiter right" in res.output, res.output


def test_a_bundled_set_gives_its_column_names_to_the_printout_and_the_model(tmp_path):
    import latentfit
    from latentfit.cli import app

    out = tmp_path / "m.lf"
    res = CliRunner().invoke(
        app, ["fit", "gmm", "--dataset", "faithful", "-k", "2", "--quiet", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "eruptions" in res.output and "waiting" in res.output
    assert list(latentfit.load(out).feature_names_in_) == ["eruptions", "waiting"]


def test_a_compressed_table_names_the_states_file_after_the_data_not_the_suffix(tmp_path):
    path = _faithful_files(tmp_path)["gzip"]
    res = runner.invoke(
        app, ["fit", "hmm", str(path), "-k", "2", "--quiet"], catch_exceptions=False
    )
    # the default states file is written in the current folder: the runner's is the test's
    assert res.exit_code == 0, res.output
    assert "f_states.csv" in res.output and "f.csv_states" not in res.output
    Path("f_states.csv").unlink()
