"""Requests whose size comes from the data or an option: refused with a documented error
(ResourceLimitError, or another LatentfitError) before they allocate, never a MemoryError,
a raw allocator error or a killed process.

Each case runs in a fresh interpreter under ``resource.setrlimit(RLIMIT_AS)``: the address
space torch and latentfit occupy once imported (measured in that process, about 1-3 GiB of
mostly unbacked mappings) plus MEMORY_BOUND_BYTES. A case passes if it finishes within that
bound (success) or raises one of latentfit.errors.DOCUMENTED_ERRORS (other than a bare
MemoryError) with a message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .oracle import MEMORY_BOUND_BYTES

SRC = Path(__file__).resolve().parents[2] / "src"

PRELUDE = """
import json, resource, sys, traceback
import numpy as np
import torch
import latentfit
from latentfit.cli import app
from latentfit.errors import DOCUMENTED_ERRORS, ResourceLimitError
from typer.testing import CliRunner

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

baseline = vm_size()
limit = baseline + BOUND
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def report(name, outcome, err=None):
    print("RESULT " + json.dumps({
        "case": name, "outcome": outcome, "baseline": baseline,
        "type": type(err).__name__ if err is not None else None,
        "message": str(err)[:500] if err is not None else None,
        "traceback": traceback.format_exc()[-2000:] if err is not None else None,
    }), flush=True)

def cli(*args):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = result.output
    if result.exit_code == 2 and "error:" in out and "Traceback" not in out:
        raise latentfit.errors.LatentfitError(out.strip())  # the CLI's documented failure
    if result.exit_code != 0:
        raise RuntimeError(f"exit code {result.exit_code}: {out[-500:]}")

def run(name, body):
    try:
        exec(body, globals())
    except DOCUMENTED_ERRORS as err:
        if isinstance(err, MemoryError) and not isinstance(err, ResourceLimitError):
            report(name, "raw", err)
        else:
            report(name, "documented" if str(err).strip() else "empty message", err)
    except BaseException as err:
        report(name, "raw", err)
    else:
        report(name, "ok")
    import gc; gc.collect()

for name, body in CASES:
    run(name, body)
"""

CODES = "np.array([[0], [1], [10**9], [2]] * 10)"

CASES = {
    "CategoricalHMM code 1e9": f"latentfit.CategoricalHMM(2, n_iter=2).fit({CODES})",
    "CategoricalMixture code 1e9": f"latentfit.CategoricalMixture(2, max_iter=2).fit({CODES})",
    "fit_mle categorical code 30000": "latentfit.fit_mle('categorical', [0, 1, 2, 30000])",
    "fit_mle categorical code 1e9": "latentfit.fit_mle('categorical', [0, 1, 2, 10**9])",
    "GaussianMixture K=1e9": (
        "latentfit.GaussianMixture(10**9).fit(np.random.default_rng(0).normal(size=(20, 2)))"
    ),
    "GaussianHMM K=1e6": (
        "latentfit.GaussianHMM(10**6, n_iter=1).fit(np.random.default_rng(0).normal(size=(20, 2)))"
    ),
    "select gmm -k 1-1000000000": (
        "np.savetxt('d.csv', np.random.default_rng(0).normal(size=(20, 2)), delimiter=',')\n"
        "cli('select', 'gmm', 'd.csv', '-k', '1-1000000000')"
    ),
    "fit gmm -k 1000000000": (
        "np.savetxt('d.csv', np.random.default_rng(0).normal(size=(20, 2)), delimiter=',')\n"
        "cli('fit', 'gmm', 'd.csv', '-k', '1000000000', '--quiet')"
    ),
    "VAE file with hidden=[10**6, 10**6]": (
        "from tests.property.test_cli import _vae_model\n"
        "from pathlib import Path\n"
        "path = _vae_model(Path('.'), 'spec:{\"hidden\": [1000000, 1000000]}', 2)\n"
        "from latentfit.vae import load_model\n"
        "load_model(path)"
    ),
    "latentfit eval on a VAE file with hidden=[10**6, 10**6]": (
        "from tests.property.test_cli import _vae_model\n"
        "from pathlib import Path\n"
        "path = _vae_model(Path('.'), 'spec:{\"hidden\": [1000000, 1000000]}', 2)\n"
        "np.savetxt('d.csv', np.random.default_rng(0).random(size=(20, 2)), delimiter=',')\n"
        "cli('eval', str(path), '--dataset', 'd.csv', '-k', '2')"
    ),
}


def run_cases(cases: dict[str, str], folder: Path) -> dict[str, dict]:
    """Run ``cases`` one after another in one fresh, memory-limited interpreter (importing
    torch once, not once per case); return each case's result by name."""
    code = PRELUDE.replace("BOUND", str(MEMORY_BOUND_BYTES)).replace(
        "CASES", repr(list(cases.items()))
    )
    root = SRC.parent
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(SRC), str(root)]),
        OMP_NUM_THREADS="1",
        MALLOC_ARENA_MAX="2",  # per-thread malloc arenas reserve 64 MiB of address space each
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            results[result["case"]] = result
    for name in cases:
        results.setdefault(
            name,
            {
                "outcome": f"the process died (exit code {proc.returncode}) during or before it",
                "type": None,
                "message": proc.stderr[-3000:],
                "traceback": "",
                "baseline": 0,
            },
        )
    return results


# Controls, run in the same interpreter: the limit is real (an allocation past it fails) and
# not too tight (one well inside it succeeds). Without both the cases would prove nothing.
CONTROLS = {
    "control: past the bound": f"torch.ones({MEMORY_BOUND_BYTES + 2**30}, dtype=torch.uint8)",
    "control: inside the bound": f"torch.ones({MEMORY_BOUND_BYTES // 4}, dtype=torch.uint8)",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_cases({**CONTROLS, **CASES}, tmp_path_factory.mktemp("memory"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_memory_bound(case, results):
    result = results[case]
    assert result["outcome"] in ("ok", "documented"), (
        f"{case}: {result['outcome']} {result['type']}: {result['message']} within "
        f"baseline {result['baseline'] / 2**30:.2f} GiB + "
        f"{MEMORY_BOUND_BYTES / 2**30:.0f} GiB\n{result['traceback']}"
    )


def test_the_bound_is_enforced_and_leaves_room(results):
    over, inside = (results[name] for name in CONTROLS)
    assert over["outcome"] == "raw", over
    assert inside["outcome"] == "ok", inside
