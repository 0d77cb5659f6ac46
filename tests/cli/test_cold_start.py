"""Cold start: ``import latentfit`` and ``latentfit --help`` load none of the heavy libraries.

Each check runs in a fresh interpreter and reads ``sys.modules``: what is imported, not how
long it takes (timings live in benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import latentfit

SRC = Path(latentfit.__file__).resolve().parents[1]
HEAVY = [
    "torch", "torch.distributed", "numpy", "scipy", "sklearn", "pandas", "pyarrow",
    "matplotlib", "numba", "arviz", "safetensors", "tqdm",
]  # fmt: skip


def _loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_latentfit_loads_no_heavy_library():
    assert _loaded_after("import latentfit") == []


def test_help_and_version_load_no_heavy_library():
    for argv in (
        ["latentfit", "--help"],
        ["latentfit", "fit", "gmm", "--help"],
        ["latentfit", "--version"],
    ):
        code = (
            "import contextlib, io, sys\n"
            f"sys.argv = {argv!r}\n"
            "from latentfit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main()\n"
            "    except SystemExit:\n"
            "        pass"
        )
        assert _loaded_after(code) == [], argv


def test_every_public_name_resolves_and_is_listed():
    names = set(latentfit.__all__)
    assert names == set(latentfit._EXPORTS)
    for name in names:
        obj = getattr(latentfit, name)
        assert obj.__module__.startswith("latentfit."), name
    assert names <= set(dir(latentfit))
    from latentfit import GaussianMixture, load  # the usual spelling keeps working

    assert GaussianMixture is latentfit.GaussianMixture and load is latentfit.load
    assert latentfit.vae.VAE is latentfit.VAE  # a subpackage read as an attribute


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'GausianMixture'"):
        latentfit.GausianMixture  # noqa: B018


def test_the_cli_timeout_default_is_the_library_default():
    from latentfit.cli.gmm import DEFAULT_TIMEOUT_S
    from latentfit.em.sources.distributed import DEFAULT_TIMEOUT_S as LIBRARY

    assert DEFAULT_TIMEOUT_S == LIBRARY
