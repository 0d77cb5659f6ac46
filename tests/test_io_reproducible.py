"""A model file is the same bytes for the same model, so that users can checksum and diff it:
two saves of one fitted model, the saves of two fits from one int seed in one process, and
those of two fits in two processes, each with its own PYTHONHASHSEED (every str hash, and so
every set, in another order) and its global RNGs in a state of its own, through the API and
the command line's ``fit ... --out``. The same two processes write the results of the
random-state law's seeded functions and samplers (tests/test_random_state_law.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.test_random_state_law import BINARY, COUNTS, ESTIMATORS, FUNCTIONS, SAMPLERS, SEEDED, X


def _estimator(name):
    def fit():
        make, data = ESTIMATORS[name]
        return make(11).fit(data)

    return fit


def _vae(kind):
    def fit():
        from latentfit.train import TrainConfig, train
        from latentfit.vae import ELBO, build_model

        extra = {"z2_dim": 2} if kind == "ladder" else {}
        model = build_model(x_dim=3, z_dim=2, hidden=[4], kind=kind, seed=11, **extra)
        data = torch.tensor(BINARY[:40]).float()
        config = TrainConfig(epochs=1, batch_size=20, seed=11, progress=False, diagnostics=False)
        train(model, ELBO(), data, data, config)
        return model

    return fit


#: every saveable estimator (a one-step fit of an int seed) and the VAEs of build_model
FITS = {
    **{name: _estimator(name) for name in ESTIMATORS},
    **{f"{kind} VAE": _vae(kind) for kind in ("gaussian", "discrete", "ladder")},
}
#: every ``latentfit fit`` command that writes a model file (given --seed, --quiet, --out)
COMMANDS = {
    "gmm": ["gmm", "x.csv", "-k", "2", "--max-iter", "2"],
    "hmm": ["hmm", "x.csv", "-k", "2", "--n-iter", "2"],
    "mixture": ["mixture", "counts.csv", "-k", "2", "-f", "poisson", "--max-iter", "2"],
    "fa": ["fa", "x.csv", "-k", "1", "--max-iter", "2"],
    "ppca": ["ppca", "x.csv", "-k", "1", "--max-iter", "2"],
    "hsmm": ["hsmm", "x.csv", "-k", "2", "--max-duration", "4", "--n-iter", "2"],
    "arhmm": ["arhmm", "x.csv", "-k", "2", "--n-iter", "2"],
    "ssm": ["ssm", "x.csv", "-k", "1", "--n-iter", "2"],
    "bgmm": ["bgmm", "x.csv", "-k", "2", "--max-iter", "2"],
    "vae": ["vae", "--dataset", "x.csv", "--epochs", "1", "--hidden", "4", "--latent", "2",
            "--likelihood", "gaussian", "--no-binarize", "--batch-size", "20"],
    "flow": ["flow", "x.csv", "--epochs", "1", "--hidden", "4", "--layers", "1"],
    "diffusion": ["diffusion", "--dataset", "x.csv", "--epochs", "1", "--hidden", "8",
                  "--steps", "10"],
}  # fmt: skip

_SAVE = """
import sys, warnings
from typer.testing import CliRunner
import latentfit
from latentfit.cli.app import app
from tests.test_io_reproducible import COMMANDS, FITS
from pathlib import Path
from tests.test_random_state_law import FUNCTIONS, SAMPLERS, SEEDED, _call, _run, _stir_global_rngs
out = sys.argv[1]
_stir_global_rngs(int(sys.argv[2]))  # a state of each process's own, which no fit may read
warnings.simplefilter("ignore")  # one-step fits do not converge: not what is tested here
for name in FUNCTIONS:  # the random-state law's functions and samplers, given an int seed
    Path(f"{out}/{name}.bin").write_bytes(_call(name, 11))
for name in SAMPLERS:
    Path(f"{out}/{name}.bin").write_bytes(_run(name, 11))
for name in SEEDED:
    Path(f"{out}/{name}.bin").write_bytes(SEEDED[name](11))
for name, fit in FITS.items():
    model = fit()
    latentfit.save(model, f"{out}/{name}.lf")
    latentfit.save(model, f"{out}/{name} again.lf")
    latentfit.save(fit(), f"{out}/{name} refit.lf")
for name, args in COMMANDS.items():
    for copy in ("", " refit"):
        path = f"{out}/latentfit fit {name}{copy}.lf"
        res = CliRunner().invoke(app, ["fit", *args, "--seed", "11", "--quiet", "--force", "--out", path])
        assert res.exit_code == 0, (name, res.output)
"""


def test_one_model_and_one_seed_give_the_same_file_bytes(tmp_path, monkeypatch):
    # before: two saves of one GaussianMixture differed in the order of the safetensors
    # metadata's keys (a Rust hash map's), about one save in two
    monkeypatch.chdir(tmp_path)
    np.savetxt("x.csv", X, delimiter=",", header="a,b", comments="")
    np.savetxt("counts.csv", COUNTS, delimiter=",", header="a,b", comments="", fmt="%d")
    root = Path(__file__).resolve().parents[1]
    for hash_seed in ("1", "2"):
        (tmp_path / hash_seed).mkdir()
        env = {"PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        env["PYTHONPATH"] = f"{root / 'src'}:{root}"
        res = subprocess.run(
            [sys.executable, "-c", _SAVE, hash_seed, hash_seed],
            env=env,
            cwd=tmp_path,
            capture_output=True,
        )
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    names = [*FITS, *(f"latentfit fit {name}" for name in COMMANDS)]
    copies = {name: [f"1/{name}.lf", f"1/{name} refit.lf", f"2/{name}.lf"] for name in names}
    for name in FITS:
        copies[name].append(f"1/{name} again.lf")
    differ = [
        f"{path} differs from 1/{name}.lf"
        for name, paths in copies.items()
        for path in paths[1:]
        if Path(path).read_bytes() != Path(paths[0]).read_bytes()
    ]
    assert not differ, differ
    for name in [*FUNCTIONS, *SAMPLERS, *SEEDED]:  # the functions' results too
        one, two = (Path(f"{h}/{name}.bin").read_bytes() for h in ("1", "2"))
        assert one == two, name
