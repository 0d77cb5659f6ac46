"""``latentfit fit hmm DATA -k K [--lengths FILE]``: fit a hidden Markov model, print its
parameters and write the decoded state path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import typer

from latentfit.cli.app import (
    check_outputs,
    data_argument,
    data_source,
    dataset_option,
    delimiter_option,
    fail,
    fit_app,
    force_option,
    load_data,
    split_columns,
)
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure

EMISSIONS = ("gaussian", "gmm", "categorical", "poisson")


def _fmt(a) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


def read_lengths(path: Path) -> list[int]:
    """Sequence lengths from a text file: integers separated by newlines, commas or spaces."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        fail(f"the lengths file {path} is not a text file of whole numbers")
    except OSError as err:
        fail(f"cannot read the lengths file {path}: {err.strerror or err}")
    tokens = text.replace(",", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        fail(f"{path} must hold whole numbers (one sequence length each); got {tokens[:5]}")
    if not values:
        fail(f"{path} holds no sequence lengths")
    return values


def _model(emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet):
    from latentfit.em.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM

    common = dict(n_iter=n_iter, tol=tol, n_init=n_init, random_state=seed, verbose=not quiet)
    if emission == "gaussian":
        return GaussianHMM(k, covariance_type=covariance, **common)
    if emission == "gmm":
        return GMMHMM(k, n_mix=n_mix, covariance_type=covariance, **common)
    if emission == "categorical":
        return CategoricalHMM(k, **common)
    return PoissonHMM(k, **common)


def _print_emissions(model, emission, covariance):
    echo = typer.echo
    if emission in ("gaussian", "gmm"):
        if emission == "gmm":
            echo(f"mixture weights:\n{_fmt(model.weights_)}")
        echo(f"means:\n{_fmt(model.means_)}")
        covars = model.covars_ if emission == "gmm" else model._covars_
        echo(f"covariances ({covariance}):\n{_fmt(covars)}")
    elif emission == "categorical":
        echo(f"emission probabilities:\n{_fmt(model.emissionprob_)}")
    else:
        echo(f"Poisson rates:\n{_fmt(model.lambdas_)}")


@fit_app.command("hmm")
def fit_hmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    k: int = typer.Option(..., "-k", "--components", min=1, help="Number of hidden states."),
    lengths: Path | None = typer.Option(
        None, "--lengths", help="Text file of sequence lengths (rows per sequence, in order)."
    ),
    emission: str = typer.Option("gaussian", help="gaussian, gmm, categorical or poisson."),
    covariance: str = typer.Option("diag", help="full, tied, diag or spherical (Gaussian)."),
    n_mix: int = typer.Option(2, "--n-mix", min=1, help="Mixture components per state (gmm)."),
    n_iter: int = typer.Option(100, "--n-iter", min=1, help="Most Baum-Welch iterations."),
    tol: float = typer.Option(1e-2, help="Stop when the log-likelihood gains less than this."),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept."),
    algorithm: str = typer.Option("viterbi", help="viterbi (best path) or map (best states)."),
    columns: str = typer.Option("", help="Comma-separated columns to use (default: all)."),
    seed: int = typer.Option(0, help="Seed for the initialisation."),
    states: Path | None = typer.Option(
        None,
        "--states",
        help="Where to write the decoded states (default: DATA_states.csv in the current "
        "folder, e.g. s_states.csv for s.csv).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Save the fitted model to this file."),
    plot: Path | None = plot_option("every column over time, coloured by decoded state"),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Fit an HMM by Baum-Welch; print start/transition probabilities, emissions,
    log-likelihood and BIC/AIC; write the decoded state of every row."""
    from latentfit.errors import LatentfitError
    from latentfit.io import atomic_path

    if emission not in EMISSIONS:
        fail(f"--emission must be one of {', '.join(EMISSIONS)}; got {emission!r}")
    if algorithm not in ("viterbi", "map"):
        fail(f"--algorithm must be viterbi or map; got {algorithm!r}")
    name = data_source(data, dataset)
    stem = data.stem if data is not None else dataset
    target = states if states is not None else Path(f"{stem}_states.csv")
    check_outputs(
        [(target, "--states"), (out, "--out"), (plot, "--plot")], [data, lengths], force=force
    )
    fmt = figure_format(plot)
    X = load_data(data, columns, dataset=dataset, delimiter=delimiter).numpy()
    if emission == "categorical":
        if X.shape[1] != 1:
            fail(f"categorical emissions need one column of symbols; {name} has {X.shape[1]}")
        if not np.all(X == np.round(X)):
            fail("categorical emissions need whole-number symbols 0, 1, 2, ...")
        X = X.astype(np.int64)
    seq = read_lengths(lengths) if lengths is not None else None
    model = _model(emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit(X, seq)
        logprob, path = model.decode(X, seq, algorithm=algorithm)
        ll = model.score(X, seq)
    except (ValueError, FloatingPointError) as err:
        fail(str(err))
    from latentfit.cli.models import record_columns

    record_columns(model, data, split_columns(columns))  # predict/score match them by name
    echo = typer.echo
    n_seq = 1 if seq is None else len(seq)
    echo(
        f"{type(model).__name__}: K={k}, n={X.shape[0]} steps in {n_seq} sequence(s), "
        f"d={X.shape[1]}"
    )
    state = "converged" if model.converged_ else "NOT converged (try --n-iter or --tol)"
    echo(f"Baum-Welch iterations: {model.n_iter_} ({state}); best of {n_init} init(s)")
    echo(f"log-likelihood: {ll:.6f}")
    echo(f"BIC: {model.bic(X, seq):.4f}   AIC: {model.aic(X, seq):.4f}")
    echo(f"start probabilities:\n{_fmt(model.startprob_)}")
    echo(f"transition matrix:\n{_fmt(model.transmat_)}")
    _print_emissions(model, emission, covariance)
    counts = np.bincount(path, minlength=k)
    echo(f"decoded ({algorithm}) log-probability: {logprob:.6f}; steps per state: {counts}")
    try:
        with atomic_path(target) as tmp:
            np.savetxt(tmp, path, fmt="%d", header="state", comments="")
        echo(f"decoded states written to {target}")
        if out is not None:
            echo(f"model saved to {model.save(out)} (read it with latentfit.load)")
    except (LatentfitError, OSError) as err:
        fail(str(err))
    if plot is not None:
        from latentfit.plot import plot_states

        fig, axes = new_figure(X.shape[1], 1, figsize=(10, 2.6 * X.shape[1] + 0.6), sharex=True)
        plot_states(model, X, seq, states=path, ax=axes)
        save_figure(fig, plot, fmt)
