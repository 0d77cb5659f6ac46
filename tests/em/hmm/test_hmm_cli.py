"""``latentfit fit hmm``: prints the fitted model, writes the decoded states, refuses bad input."""

import numpy as np
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.datasets import load_geyser


def test_fit_hmm_with_lengths(tmp_path):
    data = tmp_path / "geyser.csv"
    np.savetxt(
        data, np.asarray(load_geyser().data), delimiter=",", header="waiting,duration", comments=""
    )
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("100\n199\n")
    states = tmp_path / "states.csv"
    result = CliRunner().invoke(
        app,
        [
            "fit",
            "hmm",
            str(data),
            "-k",
            "2",
            "--lengths",
            str(lengths),
            "--states",
            str(states),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "transition matrix" in result.output and "2 sequence(s)" in result.output
    path = np.loadtxt(states, skiprows=1, dtype=int)
    assert path.shape == (299,) and set(path) <= {0, 1}


def test_fit_hmm_errors(tmp_path):
    data = tmp_path / "x.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(30, 2)), delimiter=",")
    bad = tmp_path / "bad.txt"
    bad.write_text("10\n10\n")
    result = CliRunner().invoke(app, ["fit", "hmm", str(data), "-k", "2", "--lengths", str(bad)])
    assert result.exit_code == 2 and f"lengths sum to 20 but {data} has 30 rows" in result.output
    bad.write_text("10\nten\n")
    result = CliRunner().invoke(app, ["fit", "hmm", str(data), "-k", "2", "--lengths", str(bad)])
    assert result.exit_code == 2 and "whole numbers" in result.output
    result = CliRunner().invoke(app, ["fit", "hmm", str(data), "-k", "2", "--emission", "beta"])
    assert result.exit_code == 2 and "--emission must be one of" in result.output
