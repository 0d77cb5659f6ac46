"""Ctrl-C or SIGTERM at any moment of a fit command (latentfit._interrupt; gmm, hmm, hsmm,
ssm, fa, bgmm and arhmm; vae, flow, diffusion and dist's sampler): the command ends
with every output written and whole (exit 0), or aborted (exit 130 or 143) with none of them
or, aborted after its writes, all of them, as the abort says; never with a part of them or a
temporary file left behind.

The moment is the k-th Python function call of the command (counted by ``sys.setprofile``,
k drawn over the calls a run makes), so that every phase is reached: reading the data, the
start, EM's iterations, the report, each write. One signal, or a second after it (which
aborts), as a user pressing Ctrl-C twice."""

from __future__ import annotations

import io
import re
import signal
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import latentfit
from latentfit import _interrupt as interrupt
from latentfit.cli import main

from .oracle import budget

RNG = np.random.default_rng(0)
ROWS = np.r_[RNG.normal(size=(150, 2)), RNG.normal(size=(150, 2)) + 3]

#: command: (its arguments, DATA standing for the rows' file; the outputs written at its end
#: as option -> file name, the model file first; those written as it runs)
COMMANDS = {
    "gmm": (
        ["fit", "gmm", "DATA", "-k", "2"],
        {"--out": "m.lf", "--labels": "l.csv", "--plot": "p.png"},
        {},
    ),
    "hmm": (
        ["fit", "hmm", "DATA", "-k", "2", "--n-iter", "20"],
        {"--out": "h.lf", "--states": "s.csv"},
        {},
    ),
    "flow": (
        ["fit", "flow", "DATA", "--epochs", "2", "--hidden", "8", "--layers", "2"],
        {"--out": "f.lf"},
        {"--checkpoint-dir": "ck"},
    ),
    "ddpm": (
        ["fit", "diffusion", "--dataset", "faithful", "--epochs", "2", "--hidden", "8"],
        {"--out": "d.lf"},
        {"--checkpoint-dir": "ck"},
    ),
    "nuts": (
        [
            "fit",
            "dist",
            "DATA",
            "--family",
            "normal",
            "--column",
            "x0",
            "--prior",
            "loc=normal:0,10",
            "--sample",
            "nuts",
            "--chains",
            "2",
            "--warmup",
            "30",
            "--draws",
            "60",
        ],
        {},
        {},
    ),
    "hsmm": (
        ["fit", "hsmm", "DATA", "-k", "2", "--n-iter", "10"],
        {"--out": "x.lf", "--states": "s.csv", "--plot": "p.png"},
        {},
    ),
    "ssm": (
        ["fit", "ssm", "DATA", "-k", "1", "--n-iter", "20"],
        {"--out": "x.lf", "--states": "s.csv"},
        {},
    ),
    "fa": (["fit", "fa", "DATA", "-k", "1"], {"--out": "x.lf"}, {}),
    "bgmm": (
        ["fit", "bgmm", "DATA", "-k", "3"],
        {"--out": "x.lf", "--labels": "l.csv", "--plot": "p.png"},
        {},
    ),
    "arhmm": (
        ["fit", "arhmm", "DATA", "-k", "2", "--n-iter", "10"],
        {"--out": "x.lf", "--states": "s.csv", "--plot": "p.png"},
        {},
    ),
    "vae": (
        ["fit", "vae", "--dataset", "digits", "--epochs", "2", "--hidden", "16", "--latent", "2"],
        {"--out": "v.lf", "--plot": "v.png"},
        {"--metrics-csv": "metrics.csv", "--checkpoint-dir": "ck"},  # every epoch
    ),
}


def _run(folder: Path, name: str, presses: list[tuple[int, int]]) -> tuple[int, str, int]:
    """Run ``latentfit`` (its ``main``, as the installed command) with command ``name`` on
    the rows in ``folder``, raising each (call, signal) of ``presses`` at that Python function
    call; returns (exit status, standard output and error, the calls made)."""
    args, outputs, progressive = COMMANDS[name]
    data = folder / "x.csv"
    np.savetxt(data, ROWS, delimiter=",")
    argv = ["latentfit", *(str(data) if a == "DATA" else a for a in args), "--quiet"]
    for option, file in {**outputs, **progressive}.items():
        argv += [option, str(folder / file)]
    count, pending, state, loop = [0], sorted(presses), interrupt._state, []

    def profile(frame, event, arg):
        if event == "call" and state["installed"]:  # from main's handler on
            count[0] += 1
            if state["depth"] > 0:  # the calls inside a loop that Ctrl-C stops
                loop[1:] = [count[0]] if loop else []
                loop[:1] = loop[:1] or [count[0]]
            if pending and count[0] == pending[0][0]:
                signal.raise_signal(pending.pop(0)[1])

    # an abort can land between a context manager's change of torch's grad mode and its
    # return (no __exit__ then): harmless in a command, which ends, but this process goes on
    torch.set_grad_enabled(True)
    text, code = io.StringIO(), 0
    with mock.patch.object(sys, "argv", argv), redirect_stdout(text), redirect_stderr(text):
        sys.setprofile(profile)
        try:
            main()
        except SystemExit as ended:
            code = ended.code if isinstance(ended.code, int) else 1
        finally:
            sys.setprofile(None)
    _LOOPS[name] = (loop[0], loop[-1]) if loop else (1, 1)
    return code, text.getvalue(), count[0]


_CALLS: dict[str, tuple[int, tuple[int, int]]] = {}
#: the first and last call of the last run inside the stoppable loop (EM's iterations)
_LOOPS: dict[str, tuple[int, int]] = {}


def _calls(name: str) -> tuple[int, tuple[int, int]]:
    """The Python function calls a run of ``name`` makes without a signal, and the first and
    last of them inside EM's iterations (the second run: the first imports what the command
    needs, many calls that later runs do not make)."""
    if name not in _CALLS:
        for _ in range(2):
            with tempfile.TemporaryDirectory() as tmp:
                code, output, calls = _run(Path(tmp), name, [])
                assert code == 0, output
        _CALLS[name] = calls, _LOOPS[name]
    return _CALLS[name]


@pytest.mark.parametrize("name", ["gmm", "hmm", "hsmm", "ssm", "fa", "bgmm", "arhmm"])
@budget(5)
@given(data=st.data())
def test_a_signal_at_any_moment_leaves_every_output_or_none(name, data):
    _check_a_signal(name, data)


@budget(3)
@given(data=st.data())
def test_a_signal_at_any_moment_of_a_training_run_leaves_every_output_or_none(data):
    """fit vae, flow and diffusion, and the sampler of fit dist: the files a training run
    writes as it runs (its checkpoint, the metrics) may be left by an abort, which names
    them."""
    for name in ("flow", "ddpm", "nuts"):
        _check_a_signal(name, data)


def _check_a_signal(name, data):
    total, (start, end) = _calls(name)
    # half the cases in EM's iterations, which are a small part of all the calls
    # (the count of a run varies by a few dozen calls: caches, the collector's finalisers)
    low, high = (start, end) if data.draw(st.booleans(), label="in the loop") else (1, total - 500)
    first = data.draw(st.integers(low, high), label="call of the first signal")
    signum = data.draw(st.sampled_from([signal.SIGINT, signal.SIGTERM]), label="signal")
    presses = [(first, signum)]
    if data.draw(st.booleans(), label="a second signal"):
        presses.append((data.draw(st.integers(first + 1, total + 1), label="its call"), signum))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code, output, calls = _run(folder, name, presses)
        assert calls >= first, "the run ended before the signal: the count is not the run's"
        files = [folder / f for f in COMMANDS[name][1].values()]
        ck = folder / "ck"
        running = [folder / "metrics.csv", ck / "last.pt", ck / "options.json"]
        left = sorted(p.name for p in folder.rglob("*") if p.name.endswith(".lftmp"))
        assert not left, f"temporary files left: {left}\n{output}"
        if code == 0:
            assert all(f.exists() for f in files), output
            # a stop said, or a run that ended anyway (a stop in its last iteration or step)
            ended = {
                "vae": r"(?m)^ +2 +-",
                "flow": r"(?m)^ +2 +-",
                "ddpm": r"(?m)^ +2 +-",
                "nuts": "draws",
            }.get(name, r"\(converged\)")  # epoch 2's row
            stopped = low == start and len(presses) == 1
            assert not stopped or "stopped by" in output or re.search(ended, output), output
            if files:
                latentfit.load(files[0])  # whole: its checksum holds
        else:
            assert code == 128 + signum, output
            made = [f for f in files if f.exists()]
            by = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            kept = [f for f in running if f.exists()]  # named by the abort, as written
            if not made and not kept:
                assert f"latentfit: aborted ({by}); no file was written" in output
            elif not made:
                said = output[output.index(f"latentfit: aborted ({by}); written before it:") :]
                assert all(str(f) in said for f in kept), output
            else:  # aborted after the outputs were written (printing the report): all of them
                assert len(made) == len(files), f"an abort left a part: {made}\n{output}"
                said = output[output.index(f"latentfit: aborted ({by}); written before it:") :]
                assert all(str(f) in said for f in files), output
                latentfit.load(files[0])
