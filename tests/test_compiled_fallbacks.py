"""A numba that is installed but does not import: the sequence models run their torch
kernels, say so once, and give the compiled kernels' results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import latentfit
from tests.compile_events import COUNT_COMPILES

SRC = Path(latentfit.__file__).resolve().parents[1]

FITS = """
import warnings
import numpy as np
from latentfit import GaussianHMM, GaussianHSMM, LinearGaussianSSM
X = np.random.default_rng(0).normal(size=(5000, 2))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    hsmm = GaussianHSMM(2, n_iter=3, random_state=0).fit(X[:300])
    hmm = GaussianHMM(3, n_iter=3, random_state=0).fit(X)  # 5,000 steps: the compiled E-step
    path = hmm.predict(X)
    ssm = LinearGaussianSSM(1, n_iter=3, random_state=0).fit(X[:300])
fallback = [w for w in caught if type(w.message).__name__ == "CompileFallbackWarning"]
print(len(fallback), *{w.filename for w in fallback})
print(repr(hsmm.score(X[:300])), repr(hmm.score(X)), repr(ssm.score(X[:300])), path.sum())
for w in fallback:
    print(w.message)
"""


def _run(code: str, numba_path: str | None) -> list[str]:
    path = [str(SRC)] if numba_path is None else [numba_path, str(SRC)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.splitlines()


def test_a_numba_that_does_not_import_leaves_the_torch_kernels(tmp_path):
    # Found by reading _compiled.available (find_spec only): a numba built for another numpy
    # ("Numba needs NumPy 2.3 or less", after `pip install -U numpy`) made every HSMM and
    # state-space fit, and every long HMM fit, fail with numba's ImportError.
    broken = tmp_path / "site" / "numba"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise ImportError("Numba needs NumPy 2.3 or less. Got NumPy 2.4.")\n'
    )
    out = _run(FITS, str(broken.parent))
    assert out[0] == "1 <string>"  # once a process, at the user's line
    assert "Numba needs NumPy 2.3 or less" in out[2] and "torch kernels" in out[2]
    torch_scores = [float(v) for v in out[1].split()[:3]]
    compiled = _run(FITS, None)
    assert compiled[0] == "0"
    compiled_scores = [float(v) for v in compiled[1].split()[:3]]
    for a, b in zip(torch_scores, compiled_scores, strict=True):
        assert abs(a - b) <= 1e-9 * abs(b), (torch_scores, compiled_scores)
    assert out[1].split()[3] == compiled[1].split()[3]  # the same decoded path (its sum)


HSMM_COUNTING = (
    COUNT_COMPILES
    + """
import numpy as np
from latentfit import GaussianHSMM
X = np.random.default_rng(0).normal(size=(200, 2))
m = GaussianHSMM(2, n_iter=2, random_state=0, tol=0).fit(X)
print(repr(m.score(X)), len(compiled))
"""
)


def test_a_damaged_cache_file_is_compiled_again(tmp_path):
    # Found by damaging numba's cache by hand: a truncated index or compiled entry raised
    # pickle's UnpicklingError at the kernel's first call in every process, until deleted.
    env = {**os.environ, "PYTHONPATH": str(SRC), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> tuple[str, int]:
        res = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", HSMM_COUNTING], capture_output=True,
            text=True, env=env, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        score, n = res.stdout.split()
        return score, int(n)

    score, n = run()
    assert n > 0  # an empty cache: the kernels compile
    damaged = list((tmp_path / "cache").rglob("*.nb[ic]"))
    assert damaged
    for path in damaged:  # every index and entry cut to 20 bytes
        path.write_bytes(path.read_bytes()[:20])
    assert run() == (score, n)  # compiled again, the same fit
    assert run() == (score, 0)  # and cached again
