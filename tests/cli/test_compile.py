"""``latentfit compile``: after it, a fresh process's first fits and decodes compile nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import latentfit
from latentfit import _compiled
from latentfit.cli import app
from tests.compile_events import COUNT_COMPILES

SRC = Path(latentfit.__file__).resolve().parents[1]
runner = CliRunner()

pytestmark = pytest.mark.skipif(not _compiled.available(), reason="numba is not installed")

# A fresh process fits and decodes every model family that calls a compiled kernel, counting
# numba's compile events (a kernel loaded from the disk cache raises none).
FIRST_CALLS = (
    COUNT_COMPILES
    + """
import numpy as np, torch
from latentfit import GaussianHMM, GaussianHSMM, LinearGaussianSSM
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(m, 1.0, (60, 2)) for m in (-4, 0, 4, 8, 12)] * 2)
hmm = GaussianHMM(5, dtype=torch.float32, n_iter=3, random_state=0).fit(X)
hmm.predict(X), hmm.score(X), hmm.predict_proba(X)
GaussianHSMM(2, max_duration=8, n_iter=2, random_state=0).fit(X[:200]).predict(X[:200])
LinearGaussianSSM(1, dtype=torch.float32, n_iter=2, random_state=0).fit(X[:200])
print("compiled:", sorted(set(compiled)))
# the kernels these calls ran, compiled or loaded from the cache: a dispatcher holds the
# signatures it was called with either way
import sys
from numba.core.registry import CPUDispatcher
print("ran:", sorted({
    mod for mod, m in list(sys.modules.items()) if mod.startswith("latentfit")
    for v in vars(m).values() if isinstance(v, CPUDispatcher) and v.signatures
}))
"""
)


def _run(code: str, cache: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC), "NUMBA_CACHE_DIR": str(cache)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_after_compile_the_first_calls_compile_nothing(tmp_path):
    # Found by timing: a first float32 HMM fit, HSMM fit or state-space fit in a fresh install
    # waited 1.4-5.7 s on numba. A cache of its own, so that no other test process writes to
    # it meanwhile; in it, after `compile`, the first calls run the compiled kernels of every
    # family (the HMM's, the HSMM's, the Kalman filter's) and compile none of them.
    warm = tmp_path / "warm"
    out = _run(
        "import sys\nfrom latentfit.cli import app\n"
        "sys.argv = ['latentfit', 'compile', '--dtype', 'float32', '-k', '5']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code",
        warm,
    )
    assert "groups of kernels ready" in out
    first = _run(FIRST_CALLS, warm).splitlines()
    assert first[0] == "compiled: []", first
    ran = eval(first[1].removeprefix("ran: "))
    assert set(ran) == {
        f"latentfit.em.{m}"
        for m in (
            "hmm.inference.compiled",
            "hmm.inference.compiled_densities",
            "hmm.inference.compiled_viterbi",
            "hsmm.compiled",
            "ssm.kalman_cpu",
        )
    }, ran


def test_compile_names_each_group_and_counts_them():
    res = runner.invoke(app, ["compile", "--dtype", "float64", "-k", "3,5,40"])
    assert res.exit_code == 0, res.output
    # 3 and 40 share the build of every count outside 4-16: it is compiled once
    assert res.output.count("every count of states not in 4-16") == 1
    assert "HMM, 5 states, float64" in res.output
    assert "Kalman filter and smoother, float64" in res.output
    assert "NUTS with chains at their own pace, float64" in res.output
    assert "7 groups of kernels ready" in res.output
    quiet = runner.invoke(app, ["compile", "--dtype", "float64", "-k", "3", "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--dtype", "half"], "--dtype must be float64, float32 or both, not 'half'"),
        (["-k", "0"], "-k must name sizes of at least 1"),
        (["-k", "three"], "-k takes a number, a range such as 1-8"),
        (["-k", "1-100000"], "names 100000 sizes"),
    ],
)
def test_bad_settings_are_refused_before_any_compiling(args, words):
    res = runner.invoke(app, ["compile", *args])
    assert res.exit_code == 2 and words in res.output, res.output
    assert "compiling" not in res.output


def test_without_numba_there_is_nothing_to_compile(monkeypatch):
    monkeypatch.setattr(_compiled, "available", lambda: False)
    res = runner.invoke(app, ["compile"])
    assert res.exit_code == 0 and "numba is not available here" in res.output, res.output
    res = runner.invoke(app, ["compile", "--json"])
    assert res.exit_code == 0 and '"numba": false' in res.stdout, res.output


def test_json_lists_the_groups_and_prints_nothing_else():
    import json

    res = runner.invoke(app, ["compile", "--dtype", "float64", "-k", "5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["numba"] is True and doc["seconds"] >= 0
    assert doc["groups"] == [
        "HMM, 5 states, float64",
        "HMM densities, float64",
        "Kalman filter and smoother, float64",
        "NUTS with chains at their own pace, float64",
        "semi-Markov recursions, float64",
        "long paths, float64",
    ]


# numba finds no writable cache folder (a read-only install run by a user without a writable
# home): simulated by leaving numba only the locator for zipped sources, which finds none
NO_CACHE_FOLDER = {"NUMBA_CACHE_LOCATOR_CLASSES": "ZipCacheLocator"}
HSMM_FIT = """
import warnings
import numpy as np
from latentfit import GaussianHSMM
X = np.random.default_rng(0).normal(size=(200, 2))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = GaussianHSMM(2, n_iter=2, random_state=0).fit(X)
    m.predict(X)
cache = [w for w in caught if type(w.message).__name__ == "CompileCacheWarning"]
print("warnings:", len(cache), *{w.filename for w in cache})
print("score:", repr(m.score(X)))
"""


def _has_locator_setting() -> bool:
    import numba.core.config

    return hasattr(numba.core.config, "CACHE_LOCATOR_CLASSES")


@pytest.mark.skipif(not _has_locator_setting(), reason="numba without NUMBA_CACHE_LOCATOR_CLASSES")
def test_without_a_writable_cache_folder_the_kernels_compile_in_the_process(tmp_path):
    # Found by reading numba: with no writable cache folder, defining a cache=True kernel
    # raised numba's RuntimeError ("cannot cache function 'minimum': no locator available"),
    # so every HMM, HSMM and state-space fit of such an install failed with it.
    env = {**os.environ, "PYTHONPATH": str(SRC), "NUMBA_CACHE_DIR": ""}
    env.pop("NUMBA_CACHE_DIR")

    def run(code: str, extra: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
            env={**env, **extra}, cwd=tmp_path,
        )  # fmt: skip

    res = run(HSMM_FIT, NO_CACHE_FOLDER)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines[0] == "warnings: 1 <string>"  # once, at the user's line
    cached = run(HSMM_FIT, {})
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert cached.stdout.splitlines() == ["warnings: 0", lines[1]]  # the same fit
    cmd = "import sys\nfrom latentfit.cli import main\nsys.argv = ['latentfit', 'compile']\nmain()"
    res = run(cmd, NO_CACHE_FOLDER)
    assert res.returncode == 1
    assert "error: numba has no writable folder for its disk cache" in res.stderr
    assert "NUMBA_CACHE_DIR" in res.stderr and "compiling" not in res.stderr
