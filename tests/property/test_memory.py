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
    # sizes that a sampler's or a model's count implies (checked before the work starts)
    "mcmc.sample num_chains=1e9": (
        "from latentfit.mcmc import sample\n"
        "sample(lambda mu: -0.5 * (mu**2).sum(), init={'mu': torch.zeros(2)}, "
        "num_chains=10**9, num_draws=5, num_warmup=5, progress_bar=False)"
    ),
    "mcmc.sample num_draws=1e12": (
        "from latentfit.mcmc import sample\n"
        "sample(lambda mu: -0.5 * (mu**2).sum(), init={'mu': torch.zeros(2)}, "
        "num_draws=10**12, num_warmup=5, progress_bar=False)"
    ),
    "mcmc.sample max_depth=100": (
        "from latentfit.mcmc import sample\n"
        "sample(lambda mu: -0.5 * (mu**2).sum(), init={'mu': torch.zeros(2)}, "
        "max_depth=100, num_draws=5, num_warmup=5, progress_bar=False)"
    ),
    "fit_map(...).sample_posterior num_chains=1e9": (
        "latentfit.fit_map('normal', [0.3, -1.2, 0.8], prior={'loc': "
        "torch.distributions.Normal(0.0, 10.0)}).sample_posterior(num_chains=10**9, "
        "progress_bar=False)"
    ),
    "gibbs_gmm num_chains=1e9": (
        "from latentfit.mcmc import gibbs_gmm\n"
        "gibbs_gmm(np.random.default_rng(0).normal(size=(40, 2)), 2, num_chains=10**9)"
    ),
    "gibbs_gmm K=1e9": (
        "from latentfit.mcmc import gibbs_gmm\n"
        "gibbs_gmm(np.random.default_rng(0).normal(size=(40, 2)), 10**9, num_draws=3)"
    ),
    "gibbs_hmm num_draws=1e12": (
        "from latentfit.mcmc import gibbs_hmm\n"
        "gibbs_hmm(np.random.default_rng(0).normal(size=(40, 2)), 2, num_draws=10**12)"
    ),
    "svgd num_particles=1e7": (
        "from latentfit.mcmc.svgd import svgd\n"
        "svgd(lambda mu: -0.5 * (mu**2).sum(), {'mu': torch.zeros(2)}, "
        "num_particles=10**7, num_iter=2, progress_bar=False)"
    ),
    "gmm_log_density K=1e9": (
        "from latentfit.mcmc.gibbs import gmm_log_density\n"
        "gmm_log_density(np.random.default_rng(0).normal(size=(40, 2)), 10**9)"
    ),
    "hmm_log_density K=1e5": (
        "from latentfit.mcmc.gibbs import hmm_log_density\n"
        "hmm_log_density(np.random.default_rng(0).normal(size=40), 10**5)"
    ),
    "hmm_conjugate_log_density K=1e5": (
        "from latentfit.mcmc.gibbs_hmm import hmm_conjugate_log_density\n"
        "hmm_conjugate_log_density(np.random.default_rng(0).normal(size=40), 10**5)"
    ),
    "GaussianMixture.sample(1e11)": (
        "latentfit.GaussianMixture(2).fit(np.random.default_rng(0).normal(size=(40, 2)))"
        ".sample(10**11)"
    ),
    "GaussianHMM.sample(1e11)": (
        "latentfit.GaussianHMM(2, n_iter=2).fit(np.random.default_rng(0).normal(size=(40, 2)))"
        ".sample(10**11)"
    ),
    "CategoricalHMM K=1e5": f"latentfit.CategoricalHMM(10**5, n_iter=1).fit({CODES} % 3)",
    "LinearGaussianSSM K=1e5": (
        "latentfit.LinearGaussianSSM(10**5, n_iter=1)"
        ".fit(np.random.default_rng(0).normal(size=(40, 2)))"
    ),
    "MAF hidden=1e7": (
        "latentfit.MAF(hidden=10**7, epochs=1).fit(np.random.default_rng(0).normal(size=(40, 2)))"
    ),
    "NeuralSplineFlow n_layers=1e6": (
        "latentfit.NeuralSplineFlow(n_layers=10**6, epochs=1)"
        ".fit(np.random.default_rng(0).normal(size=(40, 2)))"
    ),
    "DDPM n_steps=1e10": (
        "latentfit.DDPM(10**10, epochs=1, discrete=False)"
        ".fit(np.random.default_rng(0).normal(size=(40, 2)))"
    ),
    "IWAE k=1e9": (
        "from tests.vae.test_objectives import linear_gaussian_vae\n"
        "from latentfit.vae import IWAE\n"
        "IWAE(10**9)(linear_gaussian_vae()[0], torch.randn(7, 4, dtype=torch.float64))"
    ),
    "fit dist --sample nuts --chains 1e8": (
        "np.savetxt('c.csv', [3, 1, 4, 2, 5])\n"
        "cli('fit', 'dist', 'c.csv', '-f', 'poisson', '--prior', 'rate=gamma:2,0.5', "
        "'--sample', 'nuts', '--chains', '100000000')"
    ),
    "sample -n 1e11 from a VAE file": (
        "from tests.property.test_cli import _vae_model\n"
        "from pathlib import Path\n"
        "path = _vae_model(Path('.'), 'gaussian', 2)\n"
        "cli('sample', str(path), '-n', '100000000000', '--out', 'v.npy')"
    ),
    # ordinary data, sized so that the whole of X's Gaussian features (d(d+1)/2 + d numbers a
    # row) would pass the bound: a first moment pass built them all at once (2.3-2.7 GB)
    "GaussianMixture full on 150,000 x 60": (
        "latentfit.GaussianMixture(3, max_iter=1, init_params='random')"
        ".fit(np.random.default_rng(0).normal(size=(150000, 60)))"
    ),
    "GaussianMixture full, 16 components, on 1,500,000 x 16": (
        "latentfit.GaussianMixture(16, max_iter=1, init_params='random')"
        ".fit(np.random.default_rng(0).normal(size=(1500000, 16)))"
    ),
    "BayesianGaussianMixture full on 150,000 x 60": (
        "latentfit.BayesianGaussianMixture(n_components=3, max_iter=1, init_params='random')"
        ".fit(np.random.default_rng(0).normal(size=(150000, 60)))"
    ),
    "sample -n 1e11": (
        "np.savetxt('d.csv', np.random.default_rng(0).normal(size=(40, 2)), delimiter=',')\n"
        "cli('fit', 'gmm', 'd.csv', '-k', '2', '--out', 'm.lf', '--quiet', '--force')\n"
        "cli('sample', 'm.lf', '-n', '100000000000', '--out', 's.npy')"
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
