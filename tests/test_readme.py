"""Every example of README.md runs.

The ```python blocks of a section run in order in one namespace (the README continues an
example within its section), seeded with the names the README leaves to the reader (`X`,
`counts`, `lengths`, ...: GIVEN below, small data of the right kind). Every `latentfit ...`
line of a ```bash/```sh/```console block runs through the typer application in a folder that
holds the files the README names (data.csv, series.csv, ...: `files`). A block, or the lines of
a block that start with a given prefix, may be left out only by an HTML comment right above
it, `<!-- not run: REASON -->` or `<!-- not run "PREFIX": REASON -->`; any other line of a shell
block fails the test, so a new example is either run or its reason written down.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.datasets import load_faithful, load_geyser

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL = ("bash", "sh", "console")
runner = CliRunner()


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    section: str
    code: str
    skip: str | None = None  # the reason the whole block is not run
    skip_prefixes: dict[str, str] = field(default_factory=dict)  # line prefix -> reason


def read_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks, section, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            block = Block(i + 1, fence.group(1), section, "\n".join(lines[i + 1 : end]))
            k = i - 1
            while k >= 0 and lines[k].startswith("<!-- not run"):
                marker = re.match(r'<!-- not run(?: "([^"]+)")?: (.+) -->$', lines[k])
                assert marker, (
                    f'README.md:{k + 1}: a marker reads `<!-- not run[ "PREFIX"]: REASON -->`'
                )
                if marker.group(1):
                    block.skip_prefixes[marker.group(1)] = marker.group(2)
                else:
                    block.skip = marker.group(2)
                k -= 1
            blocks.append(block)
            i = end + 1
            continue
        i += 1
    return blocks


BLOCKS = read_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SECTIONS = list(dict.fromkeys(b.section for b in PYTHON))


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command) of every command of a shell block: continuations joined, comments cut."""
    commands, pending, start = [], "", 0
    for offset, raw in enumerate(block.code.splitlines(), start=block.line + 1):
        text = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = offset
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        command = (pending + text).strip()
        pending = ""
        if command:
            commands.append((start, command))
    return commands


# --- what the README leaves to the reader -------------------------------------------------


def _faithful():
    return load_faithful().data


def _hmm_series(n=1000, seed=0):
    """Three well separated 2-d states, sticky transitions: (n, 2)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0], [4.0, 4.0], [-4.0, 4.0]], dtype=torch.float64)
    z = [0]
    for _ in range(n - 1):
        z.append(
            z[-1] if torch.rand((), generator=g) < 0.9 else int(torch.randint(3, (), generator=g))
        )
    return means[z] + torch.randn(n, 2, generator=g, dtype=torch.float64)


def _given_estimation():
    g = torch.Generator().manual_seed(0)
    n, d, alpha = 100, 3, 0.1
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64) + 0.5 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    counts = torch.poisson(torch.full((50,), 3.0, dtype=torch.float64), generator=g)
    flips = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    return {"n": n, "d": d, "alpha": alpha, "X": X, "y": y, "counts": counts, "flips": flips}


def _given_gmm():
    X = _faithful()
    y_partial = np.full(len(X), -1)
    y_partial[[0, 1]] = [0, 1]
    return {"X": X, "w": np.ones(len(X)), "y_partial": y_partial}


def _given_mixtures():
    g = torch.Generator().manual_seed(0)
    return {
        "X": _faithful() / 50,
        "counts": torch.poisson(torch.full((60, 4), 3.0, dtype=torch.float64), generator=g),
        "codes": torch.randint(3, (60, 4), generator=g),
        "x": torch.rand(100, 1, generator=g, dtype=torch.float64) * 4 + 0.5,
    }


def _given_hmm():
    X = _hmm_series()
    X_with_nans = X.clone()
    X_with_nans[::7, 1] = float("nan")
    lengths = [500, 320, 180]
    log_lik = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return {
        "X": X,
        "X_with_nans": X_with_nans,
        "lengths": lengths,
        "chunks_of_one_long_series": list(X.split(250)),
        "log_lik": log_lik,
        "startprob": torch.full((3,), 1 / 3, dtype=torch.float64),
        "transmat": torch.full((3, 3), 0.1, dtype=torch.float64)
        + 0.7 * torch.eye(3, dtype=torch.float64),
    }


def _given_ssm():
    X = _hmm_series(300)
    return {"Y": X, "lengths": [200, 100]}


def _given_streaming():
    X = torch.randn(200, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return {"stream": list(X.split(40))}


def _given_mcmc():
    return {  # eight schools (Rubin 1981)
        "y": torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
        "sigma": torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
    }


GIVEN = {
    "Estimation: MLE, MAP and conjugate Bayes": _given_estimation,
    "EM: Gaussian mixtures": _given_gmm,
    "EM: more mixtures, factor models, missing data, model selection": _given_mixtures,
    "Hidden Markov models": _given_hmm,
    "Linear-Gaussian state-space models": _given_ssm,
    "Streaming, online and distributed EM; devices": _given_streaming,
    "Variational inference": lambda: {"X": _faithful()},
    "Sampling: NUTS, Gibbs and SVGD": _given_mcmc,
}


@pytest.fixture
def files(tmp_path, monkeypatch):
    """The reader's files the shell examples name, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    faithful, geyser = load_faithful(), load_geyser()
    np.savetxt(
        "data.csv", faithful.data.numpy(), delimiter=",", header="eruptions,waiting", comments=""
    )
    np.savetxt(
        "new.csv",
        faithful.data[:20].numpy(),
        delimiter=",",
        header="eruptions,waiting",
        comments="",
    )
    gaps = faithful.data.numpy().copy()
    gaps[::9, 0] = np.nan
    np.savetxt("gaps.csv", gaps, delimiter=",", header="eruptions,waiting", comments="")
    np.save("data.npy", faithful.data.numpy())
    for name in ("series.csv", "steps.csv"):
        np.savetxt(name, geyser.data.numpy(), delimiter=",", header="waiting,duration", comments="")
    Path("lengths.txt").write_text("150\n149\n")
    counts = torch.poisson(torch.full((200, 1), 4.0), generator=torch.Generator().manual_seed(0))
    np.savetxt("counts.csv", counts.numpy(), delimiter=",", header="count", comments="", fmt="%d")
    np.save("digits.npy", (load_digits().data[:300] > 7).astype(np.float64))
    for args in (
        ["fit", "gmm", "data.csv", "-k", "3", "--out", "gm.lf"],
        ["fit", "hmm", "series.csv", "-k", "3", "--out", "hmm.lf", "--lengths", "lengths.txt"],
    ):
        result = runner.invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, result.output
    Path("series_states.csv").unlink()
    return tmp_path


def test_every_block_is_run_or_marked():
    for block in BLOCKS:
        assert block.lang in ("python", *SHELL), f"README.md:{block.line}: a ```{block.lang} block"
        if block.skip or block.lang == "python":
            continue
        for prefix in block.skip_prefixes:  # a marker whose lines are gone is stale
            assert any(c.startswith(prefix) for _, c in shell_commands(block)), (block.line, prefix)
        for line, command in shell_commands(block):
            if command.startswith("latentfit "):
                continue
            assert any(command.startswith(p) for p in block.skip_prefixes), (
                f"README.md:{line}: `{command}` is neither a latentfit command nor marked "
                '`<!-- not run "PREFIX": REASON -->` above its block'
            )
    for block in PYTHON:  # a block that is not run still parses
        compile(block.code, f"README.md:{block.line}", "exec")
    for section in SECTIONS:
        if any(b.skip is None for b in PYTHON if b.section == section):
            assert section in GIVEN or section == "A short tour of the API", section


# an example never shows a fit that stopped short
@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    # the sections with a block to run (a marked block is left out, with its reason, in the
    # README itself; test_every_block_is_run_or_marked holds the markers to account)
    "section",
    [s for s in SECTIONS if any(b.skip is None for b in PYTHON if b.section == s)],
)
def test_python_examples(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in PYTHON if b.section == section and b.skip is None]
    namespace = GIVEN.get(section, dict)()
    for block in blocks:
        exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
        # no example shows a NaN or inf: every number, array or tensor it binds is finite
        for name in sorted(_top_level_names(block.code)):
            value = namespace[name]
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            if isinstance(value, (float, np.floating, np.ndarray)) and np.issubdtype(
                np.asarray(value).dtype, np.floating
            ):
                assert np.isfinite(value).all(), f"README.md:{block.line}: {name} = {value}"


def _top_level_names(code: str) -> set[str]:
    """The names a block binds at its top level (assignments, imports, defs)."""
    names = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL and not b.skip]  # marked: not run


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[f"line{b.line}" for b in SHELL_BLOCKS])
def test_shell_examples(block, request):
    request.getfixturevalue("files")
    for line, command in shell_commands(block):
        if any(command.startswith(p) for p in block.skip_prefixes):
            continue
        # each line is an example of its own: the states file that `fit hmm` and its kin write
        # beside their input (replaced only with --force) is not left over from the line before
        for states in Path().glob("*_states.csv"):
            states.unlink()
        words = shlex.split(command)
        out = None
        if ">" in words:
            out, words = words[words.index(">") + 1], words[: words.index(">")]
        result = runner.invoke(app, words[1:])
        assert result.exit_code == 0, (
            f"README.md:{line}: `{command}` exited {result.exit_code}:\n{result.output}"
        )
        if out:
            Path(out).write_text(result.stdout)
