"""Every command line command, on generated files and option values, through typer's runner.

A run passes when it exits 0, or exits 2 with an ``error:`` line (or typer's own usage error
for an option value of the wrong type), prints no traceback, leaves every input file's bytes
as they were, leaves an existing output alone unless ``--force`` was given, and leaves no file
in the folder other than the outputs it was asked for (no stray temporaries).

predict, score, show, eval, sample and density read model files that the command line itself
fitted (once, then copied into each example), files of another kind, and spoilt files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from latentfit.cli import app

from .files import data_files, materialise, write_lengths
from .oracle import budget
from .strategies import base_values

COMMANDS = (
    "fit dist",
    "fit gmm",
    "fit hmm",
    "fit hsmm",
    "fit arhmm",
    "fit bgmm",
    "fit vae",
    "eval",
    "sample",
    "select",
    "tour",
    "fit flow",
    "fit diffusion",
    "fit mixture",
    "fit fa",
    "fit ppca",
    "fit ssm",
    "predict",
    "score",
    "show",
    "density score",
    "density sample",
    "compile",
)

# Commands that write files, and so take --force to replace an existing output.
WRITERS = tuple(c for c in COMMANDS if c not in ("fit dist", "eval", "show", "compile"))


def opt(good: list, bad: list):
    """An option value: one of ``good`` five times in six, else one of ``bad``, so that most
    runs get far enough to fit and write, and every bad value is still tried. A clean run
    (see ``Run``) draws from ``good`` only."""
    strategy = st.integers(0, 5).flatmap(
        lambda i: st.sampled_from(bad) if i == 0 else st.sampled_from(good)
    )
    strategy.good = st.sampled_from(good)
    return strategy


K_VALUES = opt(["1", "2", "2", "3"], ["0", "-1", "abc", "40"])
K_RANGES = opt(["1-3", "2", "1,2", "2-2"], ["0", "3-1", "a-b", "1-", "", "-3"])
DEVICES = opt([None, "cpu"], ["tpu", "cuda:7", ""])
COLUMNS = opt([None, "a", "a,b", "b,a"], ["zz", "0", "a,a", ""])
# at the start of a line as a terminal shows it: after a newline, or after the carriage return
# with which a closed progress bar hands its line back
ERROR_LINE = re.compile(r"(?:^|\r)error: \S", re.M)
# what a command line user cannot type, in an error or a warning: a keyword argument (the
# NAME=VALUE of --fixed and --init, a value quoted back and a spoilt model file's field are
# the user's own), a scikit-learn class, a torch dtype
MESSAGE = re.compile(r"(?:^|\r)(?:error|warning): .*", re.M)
PYTHON_WORDS = re.compile(
    r"(?<![\w'\-])(?<!--fixed )(?<!--init )(?<!spec: )[a-z][a-z_]+=(?![=\d])"
    r"|StandardScaler|torch\.float"
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> dict[Path, str]:
    return {p: _digest(p) for p in folder.rglob("*") if p.is_file()}


class Run:
    """One command line being built: its arguments, inputs and declared outputs."""

    def __init__(self, folder: Path, data):
        self.folder = folder
        self.data = data
        self.args: list[str] = []
        self.inputs: list[Path] = []
        self.outputs: list[Path] = []  # files or folders the command may create
        self.force = data.draw(st.booleans(), label="--force")
        # With a dozen options each spoilt now and then, few runs would get as far as a fit:
        # one run in three is clean, with good option values, clean data and new outputs.
        self.clean = data.draw(st.sampled_from([True, False, False]), label="clean run")

    def value(self, strategy, label: str):
        """A drawn value: from ``strategy``, or from its good values only in a clean run."""
        if self.clean and hasattr(strategy, "good"):
            strategy = strategy.good
        return self.data.draw(strategy, label=label)

    def option(self, name: str, strategy, label=None):
        value = self.value(strategy, label=label or name)
        if value is not None:
            self.args += [name, str(value)]
        return value

    def input_file(self, kind: str, name: str = "data", d: int | None = None) -> Path:
        """A data file; ``d``: its number of columns in a clean run (default: drawn)."""
        recipe = data_files(kind, name, self.clean, d if self.clean else None)
        recipe = self.data.draw(recipe, label=f"{name} file")
        path = materialise(self.folder, recipe, name)
        self.inputs.append(path)
        self.n_rows = recipe[3]
        return path

    def output(self, name: str, suffix: str, flag: str | None = "--out", optional=True) -> Path:
        """Declare an output: sometimes absent, sometimes existing, sometimes an input."""
        spoilt = [] if self.clean else ["existing", "is_input", "directory", "missing_folder"]
        how = self.data.draw(
            st.sampled_from(["new", "new", *spoilt] + (["none"] if optional else [])),
            label=f"{flag} {name}",
        )
        if how == "none":
            return None
        if how == "is_input" and self.inputs:
            path = self.inputs[0]
        elif how == "missing_folder":
            path = self.folder / "no" / "such" / f"{name}{suffix}"
        else:
            path = self.folder / f"{name}{suffix}"
            if how == "existing":
                path.write_bytes(b"an existing file\n")
            elif how == "directory":
                path.mkdir()
        self.outputs.append(path)
        if flag:
            self.args += [flag, str(path)]
        return path


def _vae_model(folder: Path, how: str, x_dim: int) -> Path:
    """A model file for eval/sample: a real small VAE, or one of the ways to spoil it."""
    from latentfit.vae import build_model, save_model

    path = folder / "model.safetensors"
    if how == "missing":
        return path
    if how == "directory":
        path.mkdir()
        return path
    if how == "garbage":
        path.write_bytes(os.urandom(64))
        return path
    if how == "gmm_model":
        from latentfit import GaussianMixture

        GaussianMixture(1).fit(np.arange(8.0).reshape(4, 2)).save(path)
        return path
    if how == "flow_model":
        path.write_bytes(_fitted("flow"))
        return path
    likelihood = "bernoulli" if how == "bernoulli" else "gaussian"
    model = build_model(x_dim=x_dim, z_dim=2, hidden=[4], likelihood=likelihood, seed=0)
    save_model(model, path)
    if how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif how.startswith("spec:"):
        _rewrite_spec(path, json.loads(how[len("spec:") :]))
    return path


def _rewrite_spec(path: Path, change: dict) -> None:
    """Edit the VAE spec (the model header's ``params``) stored in a safetensors header (tensor
    offsets are unaffected)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    model_header = json.loads(header["__metadata__"]["latentfit"])
    model_header["params"].update(change)
    header["__metadata__"]["latentfit"] = json.dumps(model_header)
    header["__metadata__"].pop("sha256", None)  # as a crafted file: the checks behind it
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


MODEL_FILES = st.sampled_from(
    [
        "gaussian",
        "gaussian",
        "bernoulli",
        "missing",
        "directory",
        "garbage",
        "gmm_model",
        "truncated",
        'spec:{"hidden": [5]}',
        'spec:{"hidden": [-4]}',
        'spec:{"kind": "bogus"}',
        'spec:{"x_dim": "two"}',
        'spec:{"bogus_field": 1}',
        "flow_model",
    ]
)

# How each kind of model file is made, by the command line itself, from two-column data
# (header a,b) of the kind the model reads; each is fitted once and copied into every example.
FITS = {
    "gmm": ("real", "fit gmm {data} -k 2"),
    "bgmm": ("real", "fit bgmm {data} -k 2"),
    "hmm": ("real", "fit hmm {data} -k 2 --n-iter 3 --states {s}"),
    "hsmm": ("real", "fit hsmm {data} -k 2 --n-iter 3 --states {s}"),
    "arhmm": ("real", "fit arhmm {data} -k 2 --n-iter 3 --states {s}"),
    "categorical_hmm": (
        "codes",
        "fit hmm {data} -k 2 --emission categorical --columns a --n-iter 3 --states {s}",
    ),
    "bernoulli": ("binary", "fit mixture {data} -k 2 -f bernoulli"),
    "poisson": ("counts", "fit mixture {data} -k 2 -f poisson"),
    "fa": ("real", "fit fa {data} -k 1"),
    "ppca": ("real", "fit ppca {data} -k 1"),
    "ssm": ("real", "fit ssm {data} -k 1 --n-iter 3 --states {s}"),
    "vae": (
        "real",
        "fit vae --dataset {data} --epochs 1 --hidden 4 --latent 2 --likelihood gaussian",
    ),
    "flow": ("real", "fit flow {data} --epochs 1 --hidden 4 --layers 1"),
    "ddpm": ("real", "fit diffusion --dataset {data} --epochs 1 --steps 5 --hidden 4 --n-hidden 1"),
}


@functools.cache
def _fitted(kind: str) -> bytes:
    """The bytes of a small model file of ``kind`` (a key of FITS), fitted by the command line."""
    data_kind, args = FITS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.csv"
        data.write_text(_train_csv(data_kind))
        out = Path(tmp) / "model.safetensors"
        args = args.format(data=data, s=Path(tmp) / "s.csv").split()
        result = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet"])
        assert result.exit_code == 0, f"fitting a {kind} model: {result.output}"
        return out.read_bytes()


def _train_csv(kind: str) -> str:
    X = base_values(kind, 40, 2, seed=0)
    return "a,b\n" + "".join(f"{u!r},{v!r}\n" for u, v in X.tolist())


SEQUENCE_MODELS = ("hmm", "hsmm", "arhmm", "categorical_hmm", "ssm")
# The kinds of model file for predict, score and show: each fitted kind, and spoilt files.
ANY_MODEL = opt(list(FITS), ["missing", "directory", "garbage", "truncated", "not_model"])
# density score and sample: flows and DDPMs mostly, and the other kinds as mismatches.
DENSITY_MODEL = opt(["flow", "ddpm"], ["gmm", "vae", "hmm", "missing", "garbage", "truncated"])


def _model_file(run: Run, how: str) -> Path:
    """A model file of kind ``how`` (a key of FITS, or a way to spoil one) in the run's folder."""
    path = run.folder / "model.safetensors"
    if how == "directory":
        path.mkdir()
    elif how == "garbage":
        path.write_bytes(os.urandom(64))
    elif how == "not_model":
        path.write_text(_train_csv("real"))
    elif how == "truncated":
        raw = _fitted("gmm")
        path.write_bytes(raw[: len(raw) // 2])
    elif how != "missing":
        path.write_bytes(_fitted(how))
    if path.is_file():
        run.inputs.append(path)
    return path


def _reading(run: Run) -> None:
    """The options with which a user says how to read a text data file."""
    run.option("--delimiter", opt([None, "auto", "comma", ","], ["", ";;", "bogus", "tab"]))
    header = run.data.draw(st.sampled_from([None, "--header", "--no-header"]), label="header")
    if header:
        run.args.append(header)


def _lengths(run: Run) -> None:
    """Sometimes a --lengths file: valid for the data's rows, or spoilt."""
    how = run.value(
        opt(["none", "valid", "valid"],
            ["mismatch", "zero", "negative", "fraction", "text", "empty", "missing"]),
        "lengths",
    )  # fmt: skip
    if how != "none":
        lengths = write_lengths(run.folder, how, getattr(run, "n_rows", None))
        if lengths.exists():
            run.inputs.append(lengths)
        run.args += ["--lengths", str(lengths)]


def _sequence_options(run: Run, data_path: Path) -> None:
    """What fit hmm, hsmm and arhmm share: --lengths (valid or spoilt), --algorithm,
    --columns, and their outputs: the decoded states, the model file and the figure."""
    draw = run.data.draw
    _lengths(run)
    run.option("--algorithm", opt([None, "viterbi", "map"], ["bogus"]))
    run.option("--columns", COLUMNS)
    # The decoded states go to --states, or by default to DATA_states.csv.
    if run.output("states", ".csv", "--states") is None:
        run.outputs.append(run.folder / f"{data_path.stem}_states.csv")
        run.outputs.append(data_path.parent / f"{data_path.stem}_states.csv")
    run.output("model", ".safetensors")
    run.output("plot", draw(st.sampled_from([".png", ".svg", ".bogus"])), "--plot")


def _build(command: str, run: Run, data) -> None:
    """Fill ``run`` with a drawn invocation of ``command``."""
    draw = data.draw
    if command == "fit dist":
        family = draw(
            st.sampled_from(["normal", "gamma", "poisson", "mvn", "binomial", "beta", "bogus"]),
            label="--family",
        )
        run.args = ["fit", "dist", str(run.input_file("real")), "--family", family]
        for col in draw(st.lists(st.sampled_from(["a", "b", "0", "zz"]), max_size=2)):
            run.args += ["--column", col]
        for fixed in draw(
            st.lists(st.sampled_from(["total_count=10", "bogus=1", "x", "loc=abc"]), max_size=2)
        ):
            run.args += ["--fixed", fixed]
        run.option("--cov", opt([None, "observed", "expected", "sandwich"], ["bogus"]))
        run.option("--level", opt([None, 0.9], [0, 1.5, "nan"]))
        return
    if command in ("fit gmm", "fit bgmm"):
        name = command.split()[1]
        run.args = ["fit", name, str(run.input_file("real")), "-k", run.value(K_VALUES, "-k")]
        run.option("--covariance", opt([None, "full", "diag", "spherical"], ["bogus"]))
        run.option("--columns", COLUMNS)
        run.option("--max-iter", opt([None, "5"], ["0"]))
        run.option("--device", DEVICES)
        if name == "gmm":
            run.option("--missing", opt([None, "error", "marginalize"], ["bogus"]))
        else:
            run.option("--prior", opt([None, "dirichlet_distribution"], ["bogus"]))
            run.option("--concentration", opt([None, "0.1"], ["0", "-1", "inf"]))
        run.output("model", ".safetensors")
        run.output("plot", draw(st.sampled_from([".png", ".svg", ".bogus"])), "--plot")
        run.args.append("--quiet")
        return
    if command in ("fit hmm", "fit hsmm"):
        name = command.split()[1]
        emissions = ["gaussian", "categorical", "poisson", "bogus"]
        emission = draw(
            st.sampled_from(emissions + (["gmm"] if name == "hmm" else [])), label="--emission"
        )
        kind = {"categorical": "codes", "poisson": "counts"}.get(emission, "real")
        data_path = run.input_file(kind)
        run.args = ["fit", name, str(data_path), "-k", run.value(K_VALUES, "-k")]
        run.args += ["--emission", emission, "--n-iter", "3", "--quiet"]
        if name == "hmm":
            # VB-EM (gaussian and categorical) or online EM; both, or --chunk-rows alone, refused
            how = draw(st.sampled_from(["em", "em", "variational", "online", "both"]), label="fit")
            run.args += {"em": [], "variational": ["--variational"], "online": ["--online"],
                         "both": ["--variational", "--online"]}[how]  # fmt: skip
            if how != "variational":
                run.option("--chunk-rows", opt([None, "1", "7", "100000"], ["0", "-3", "x"]))
                run.option("--burn-in", opt([None, "0", "5"], ["-1", "x"]))
                run.option("--mstep-every", opt([None, "1", "3"], ["0", "x"]))
                run.option("--learning-decay", opt([None, "0.7", "1"], ["0.5", "nan", "inf"]))
        if name == "hsmm":
            run.option("--duration", opt([None, "poisson", "negbin", "nonparametric"], ["bogus"]))
            run.option("--max-duration", opt([None, "1", "3"], ["0", "-2", "1000", "x"]))
            if draw(st.booleans(), label="--no-right-censoring"):
                run.args.append("--no-right-censoring")
        _sequence_options(run, data_path)
        run.option("--covariance", opt([None, "full", "diag"], ["bogus"]))
        return
    if command == "fit arhmm":
        data_path = run.input_file("real")
        run.args = ["fit", "arhmm", str(data_path), "-k", run.value(K_VALUES, "-k")]
        run.args += ["--n-iter", "3", "--quiet"]
        run.option("--order", opt([None, "1", "2"], ["0", "-1", "50", "x"]))
        run.option("--ridge", opt([None, "0.5"], ["-1", "nan", "inf"]))
        _sequence_options(run, data_path)
        return
    if command == "fit vae":
        data_path = run.input_file(draw(st.sampled_from(["real", "binary"]), label="vae data"))
        run.args = ["fit", "vae", "--dataset", str(data_path), "--epochs", "1", "--quiet"]
        run.option("--hidden", opt(["4", "4,3"], ["0", "a", "-1", ""]))
        run.option("--latent", opt(["2"], ["0", "-1"]))
        run.option("--batch-size", opt(["8", "1000"], ["0"]))
        run.option("--likelihood", opt(["gaussian", "bernoulli"], ["bogus"]))
        run.option("--objective", opt([None, "iwae"], ["bogus"]))
        run.option("--kind", opt([None, "discrete", "ladder"], ["bogus"]))
        run.option("--lr", opt([None], ["0", "-1", "nan", "inf"]))
        run.option("--device", DEVICES)
        if draw(st.booleans(), label="--no-binarize"):
            run.args.append("--no-binarize")
        run.output("vae", ".safetensors", optional=False)
        run.output("metrics", ".csv", "--metrics-csv")
        run.output("checkpoints", "", "--checkpoint-dir")
        run.output("plot", draw(st.sampled_from([".png", ".svg", ".bogus"])), "--plot")
        return
    if command in ("eval", "sample"):
        how = draw(MODEL_FILES, label="model file")
        x_dim = draw(st.sampled_from([1, 2, 3]), label="model x_dim")
        model = _vae_model(run.folder, how, x_dim)
        if model.is_file():
            run.inputs.append(model)
        run.args = [command, str(model)]
        if command == "eval":
            run.args += ["--dataset", str(run.input_file("real"))]
            run.option("--samples", opt(["2"], ["0", "-1", "abc"]))
            run.option("--n", opt(["0", "5"], ["-1"]))
            run.option("--device", DEVICES)
        else:
            run.option("--n", opt(["4"], ["0", "-1"]))
            run.option("--image-shape", opt([None, "1,2", "2,1"], ["0,0", "a", "3"]))
            run.output("samples", draw(st.sampled_from([".png", ".pdf", ".bogus"])), optional=False)
        return
    if command == "select":
        family = draw(
            st.sampled_from(
                ["gmm", "bernoulli", "categorical", "multinomial", "poisson", "fa", "ppca"]
            ),
            label="family",
        )
        kind = {
            "bernoulli": "binary",
            "categorical": "codes",
            "multinomial": "counts",
            "poisson": "counts",
        }.get(family, "real")
        run.args = ["select", family, str(run.input_file(kind)), "-k", run.value(K_RANGES, "-k")]
        run.args += ["--max-iter", "10"]
        run.option("--covariance", opt([None, "full,diag"], ["bogus", ""]))
        run.option("--criterion", opt([None, "aic", "icl"], ["cv_loglik", "bogus"]))
        run.option("--cv", opt([None, "0", "2"], ["1", "-1", "1000"]))
        run.option("--columns", COLUMNS)
        run.option("--missing", opt([None, "marginalize"], ["bogus"]))
        run.output("plot", draw(st.sampled_from([".png", ".svg", ".bogus"])), "--plot")
        return
    if command == "compile":
        # always a -k: everything is minutes of compiling; the counts outside 4-16 share one
        # build, so that only the first example compiles
        run.args = [
            "compile",
            "-k",
            run.value(
                opt(["1", "3", "2,17", "99999999999999999999"], ["0", "x", "3-1", "", "1-100000"]),
                "-k",
            ),
        ]
        run.option("--dtype", opt([None, "float64", "float32"], ["half", ""]))
        if draw(st.booleans(), label="--json"):
            run.args.append("--json")
        return
    if command == "tour":
        run.args = ["tour"]
        # Only unknown section names: a real section takes tens of seconds.
        run.option("--only", st.sampled_from(["bogus", "bogus,also_bogus", "gmm,bogus"]))
        run.output("report", "", optional=False)
        return
    if command in ("fit flow", "fit diffusion"):
        data_path = run.input_file(draw(st.sampled_from(["real", "unit", "codes"]), label="kind"))
        if command == "fit flow":
            run.args = ["fit", "flow", str(data_path), "--layers", "1"]
            run.option("--flow", opt([None, "maf", "realnvp", "spline"], ["bogus"]))
            run.option("--n-hidden", opt([None, "1", "2"], ["0"]))
            run.option("--patience", opt([None, "0", "1"], ["-1"]))
            dequantize = draw(st.sampled_from([None, "--dequantize", "--no-dequantize"]))
            levels = dequantize == "--dequantize"
            default_out = "flow.safetensors"
        else:
            run.args = ["fit", "diffusion", "--dataset", str(data_path), "--n-hidden", "1"]
            run.option("--steps", opt(["5", "10"], ["0", "-1"]))
            run.option("--schedule", opt([None, "linear", "cosine"], ["bogus"]))
            run.option("--variance", opt([None, "small", "large", "learned"], ["bogus"]))
            run.option("--vlb-weight", opt([None, "0.01"], ["-1", "nan"]))
            run.option("--decoder-fraction", opt([None, "0.5"], ["-1", "1", "nan"]))
            run.option("--eval-t", opt([None, "0", "3"], ["-1"]))
            for flag in ("--gaussian-skip", "--clip-denoised"):
                if draw(st.booleans(), label=flag):
                    run.args.append(flag)
            if "--gaussian-skip" in run.args or not run.clean:
                run.option("--skip-floor", opt([None, "0.01"], ["-1", "0", "nan"]))
            dequantize = draw(st.sampled_from([None, "--discrete", "--no-discrete"]))
            levels = dequantize == "--discrete"
            default_out = "ddpm.safetensors"
        if dequantize:
            run.args.append(dequantize)
        run.args += ["--epochs", "1", "--quiet"]
        run.option("--hidden", opt(["4"], ["0", "-1"]))
        if levels or not run.clean:  # the grey levels of --dequantize / --discrete data
            run.option("--levels", opt([None, "3", "17"], ["1", "0"]))
            run.option("--read-as", opt([None, "codes", "intensities"], ["bogus"]))
        run.option("--batch-size", opt([None, "8"], ["0"]))
        run.option("--lr", opt([None], ["0", "-1", "nan", "inf"]))
        run.option("--device", DEVICES)
        _reading(run)
        if run.output("model", ".safetensors") is None:
            run.outputs.append(run.folder / default_out)
        run.output("checkpoints", "", "--checkpoint-dir")
        return
    if command in ("fit mixture", "fit fa", "fit ppca"):
        name = command.split()[1]
        family = None
        if name == "mixture":
            family = run.value(
                opt(["bernoulli", "categorical", "multinomial", "poisson"], ["bogus"]), "--family"
            )
        kind = {"bernoulli": "binary", "categorical": "codes"}.get(family, "counts")
        data_path = run.input_file(kind if family else "real")
        run.args = ["fit", name, str(data_path), "-k", run.value(K_VALUES, "-k"), "--quiet"]
        if family:
            run.args += ["--family", family]
            run.option("--n-init", opt([None, "2"], ["0"]))
            run.option("--init", opt([None, "kmeans", "k-means++", "random", "random_from_data"],
                                     ["bogus"]))  # fmt: skip
        else:
            run.option("--init", opt([None, "pca", "random"], ["bogus"]))
            run.option("--rotation", opt([None, "none", "varimax", "quartimax"], ["bogus"]))
            run.option("--missing", opt([None, "error", "marginalize"], ["bogus"]))
        run.option("--max-iter", opt(["5", "30"], ["0"]))
        run.option("--tol", opt([None, "0.01"], ["-1", "nan"]))
        run.option("--columns", COLUMNS)
        run.option("--device", DEVICES)
        run.args += draw(st.sampled_from([[], ["--json"], ["--csv"]]), label="format")
        _reading(run)
        run.output("model", ".safetensors")
        return
    if command == "fit ssm":
        data_path = run.input_file("real")
        run.args = ["fit", "ssm", str(data_path), "-k", run.value(K_VALUES, "-k")]
        run.args += ["--n-iter", "3", "--quiet"]
        _lengths(run)
        run.option("--covariance", opt([None, "full", "diag"], ["bogus"]))
        run.option("--tol", opt([None, "0.1"], ["-1", "nan"]))
        run.option("--n-init", opt([None, "2"], ["0"]))
        run.option("--ridge", opt([None, "0.5"], ["-1", "nan", "inf"]))
        run.option("--columns", COLUMNS)
        if run.output("states", ".csv", "--states") is None:
            run.outputs.append(run.folder / f"{data_path.stem}_states.csv")
        run.output("model", ".safetensors")
        return
    if command in ("predict", "score", "show"):
        how = run.value(ANY_MODEL, "model file")
        run.args = [command, str(_model_file(run, how))]
        if command == "show":
            if draw(st.booleans(), label="--json"):
                run.args.append("--json")
            return
        kind = FITS.get(how, ("real",))[0]
        data_kind = run.value(opt([kind], ["real", "binary"]), "data")
        # the models were fitted on two columns, but for the categorical HMM's one
        width = 1 if how == "categorical_hmm" else 2
        run.args.append(str(run.input_file(data_kind, d=width)))
        if how in SEQUENCE_MODELS or not run.clean:
            _lengths(run)
        run.option("--columns", COLUMNS)
        _reading(run)
        if draw(st.booleans(), label="--json"):
            run.args.append("--json")
        if command == "predict":
            if draw(st.booleans(), label="--proba"):
                run.args.append("--proba")
            if how in SEQUENCE_MODELS[:-1] or not run.clean:
                run.option("--algorithm", opt([None, "viterbi", "map"], ["bogus"]))
            run.output("labels", ".csv")
        else:
            run.option("--samples", opt([None, "3"], ["0", "-1"]))
            run.option("--max-work", opt([None, "1e12", "inf"], ["0", "-1", "nan"]))
            run.output("per_row", ".csv", "--per-row")
        return
    if command in ("density score", "density sample"):
        model = _model_file(run, run.value(DENSITY_MODEL, "model file"))
        run.args = [*command.split(), str(model)]
        if draw(st.booleans(), label="--json"):
            run.args.append("--json")
        if command == "density score":
            data_kind = draw(st.sampled_from(["real", "real", "unit", "codes"]), label="data")
            run.args.append(str(run.input_file(data_kind, d=2)))
            run.option("--n", opt([None, "0", "5"], ["-1"]))
            _reading(run)
            run.output("scores", ".csv")
        else:
            run.option("-n", opt(["4", "9"], ["0", "-1"]))
            run.option("--max-work", opt([None, "1e12", "inf"], ["0", "-1", "nan"]))
            suffix = draw(st.sampled_from([".png", ".csv", ".npy", ".bogus"]), label="suffix")
            if run.output("samples", suffix) is None:
                run.outputs.append(run.folder / "samples.png")
        return
    raise AssertionError(command)


def _check(run: Run, result, before: dict[Path, str], cwd_before: set[Path]) -> None:
    """Each failed assertion names the problem first (hunt.py groups failures by it)."""
    out = result.output
    where = f"\n  in: latentfit {' '.join(run.args)}\n{out}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        err = result.exception
        err.add_note(f"a raw {type(err).__name__} reached the command line user{where}")
        raise err
    assert "Traceback" not in out, f"printed a traceback{where}"
    assert " has no option " not in out, f"an option latentfit should have is missing{where}"
    if result.exit_code != 0:
        documented = ERROR_LINE.search(out)
        assert result.exit_code == 2 and documented, (
            f"exit code {result.exit_code}; a failure exits 2 with an 'error:' line{where}"
        )
    for message in MESSAGE.findall(out):
        said = PYTHON_WORDS.search(message)
        assert said is None, f"named {said[0]!r}, which the command line cannot set{where}"
    after = _files(run.folder)
    for path, digest in before.items():
        if path in run.outputs and run.force and path not in run.inputs:
            continue
        what = "an input" if path in run.inputs else "an existing output (without --force)"
        assert after.get(path) == digest, f"changed or removed {what}: {path.name}{where}"
    allowed = set(run.outputs)
    for path in after:
        if path in before:
            continue
        inside = any(path == o or o in path.parents for o in allowed)
        assert inside, f"left a file it was not asked to write: {path.name}{where}"
        assert not path.name.startswith("."), f"left a temporary file: {path.name}{where}"
    # a folder output in a missing folder is made with its parents (mkdir -p), by design
    ancestors = {a for o in allowed for a in o.parents}
    stray = {p.name for p in set(Path.cwd().iterdir()) - cwd_before - allowed - ancestors}
    assert not stray, f"wrote into the working folder: {stray}{where}"


@pytest.mark.parametrize("command", COMMANDS)
@budget(20)
@given(data=st.data())
def test_command(command, data):
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "work"
        folder.mkdir()
        old = Path.cwd()
        os.chdir(folder)
        try:
            run = Run(folder, data)
            _build(command, run, data)
            run.force = run.force and command in WRITERS
            if run.force:
                run.args.append("--force")
            before = _files(folder)
            cwd_before = set(folder.iterdir())
            result = runner.invoke(app, run.args)
            _check(run, result, before, cwd_before)
        finally:
            os.chdir(old)
