"""latentfit never chooses matplotlib's backend: a notebook's inline figures keep working.

Run in a fresh interpreter each, since a backend, once chosen, stays for the process."""

import subprocess
import sys
from pathlib import Path

import pytest

import latentfit

SRC = str(Path(latentfit.__file__).resolve().parents[1])

SCRIPT = """
import sys
import matplotlib
{choose}
before = matplotlib.get_backend()
import latentfit, latentfit.plot
assert "matplotlib.pyplot" not in sys.modules, "importing latentfit.plot imported pyplot"
import latentfit.cli, latentfit.tour, latentfit.tour.report, latentfit.vae.images
import torch
from latentfit.vae.images import save_grid
save_grid(sys.argv[1], torch.rand(4, 9), (3, 3), 2)
from latentfit import GaussianMixture
from latentfit.datasets import load_faithful
from latentfit.plot import plot_mixture
X = load_faithful().data.numpy()
plot_mixture(GaussianMixture(2, random_state=0).fit(X), X)
print(before, matplotlib.get_backend())
"""


@pytest.mark.parametrize(
    "choose, env",
    [
        ('matplotlib.use("svg")', {}),  # chosen in code, as a notebook's %matplotlib does
        ("", {"MPLBACKEND": "pdf"}),  # chosen by the environment
    ],
    ids=["use", "MPLBACKEND"],
)
def test_importing_and_plotting_keep_the_users_backend(choose, env, tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(choose=choose), str(tmp_path / "grid.png")],
        env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    before, after = res.stdout.split()[-2:]
    assert before.lower() in ("svg", "pdf")
    assert after == before
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
