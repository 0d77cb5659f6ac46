"""``latentfit fit ssm DATA -k STATE_DIM [--lengths FILE]``: fit a linear-Gaussian state-space
model by EM, print its parameters and write the smoothed state means."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import typer

from latentfit.cli.app import check_outputs, fail, fit_app, force_option
from latentfit.cli.hmm import read_lengths


def _fmt(a) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


@fit_app.command("ssm")
def fit_ssm(
    data: Path = typer.Argument(
        ..., help="CSV, .npy, .npz or Parquet file, one row per step; empty/NaN cells missing."
    ),
    k: int = typer.Option(..., "-k", "--state-dim", min=1, help="Dimension of the hidden state."),
    lengths: Path | None = typer.Option(
        None, "--lengths", help="Text file of sequence lengths (rows per sequence, in order)."
    ),
    covariance: str = typer.Option("full", help="Observation noise covariance: full or diag."),
    n_iter: int = typer.Option(100, "--n-iter", min=1, help="Most EM iterations."),
    tol: float = typer.Option(1e-2, help="Stop when the log-likelihood gains less than this."),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept."),
    ridge: float = typer.Option(0.0, min=0.0, help="Ridge (MAP) strength on A and C."),
    columns: str = typer.Option("", help="Comma-separated columns to use (default: all)."),
    seed: int = typer.Option(0, help="Seed for the initialisation."),
    states: Path | None = typer.Option(
        None,
        "--states",
        help="Where to write the smoothed state means (default: DATA_states.csv in the current "
        "folder).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Save the fitted model to this file."),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Fit a linear dynamical system by EM with the Kalman smoother; print A, C, Q, R, d,
    log-likelihood and BIC/AIC; write the smoothed state of every row."""
    from latentfit.datasets import load_array
    from latentfit.em.ssm import LinearGaussianSSM
    from latentfit.errors import LatentfitError
    from latentfit.io import atomic_path

    if covariance not in ("full", "diag"):
        fail(f"--covariance must be full or diag; got {covariance!r}")
    target = states if states is not None else Path(f"{data.stem}_states.csv")
    check_outputs([(target, "--states"), (out, "--out")], [data, lengths], force=force)
    cols = [c for c in columns.split(",") if c] or None
    try:
        X = load_array(data, columns=cols, allow_nan=True).numpy()
    except (ValueError, FileNotFoundError, ImportError) as err:
        fail(str(err))
    seq = read_lengths(lengths) if lengths is not None else None
    model = LinearGaussianSSM(
        k,
        covariance_type=covariance,
        ridge=ridge,
        n_iter=n_iter,
        tol=tol,
        n_init=n_init,
        random_state=seed,
        verbose=not quiet,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit(X, seq)
        means = model.predict(X, seq)
        ll = model.score(X, seq)
    except (ValueError, FloatingPointError) as err:
        fail(str(err))
    echo = typer.echo
    n_seq = 1 if seq is None else len(seq)
    n_missing = int(np.isnan(X).sum())
    echo(
        f"LinearGaussianSSM: state k={k}, n={X.shape[0]} steps in {n_seq} sequence(s), "
        f"d={X.shape[1]}, {n_missing} missing value(s)"
    )
    state = "converged" if model.converged_ else "NOT converged (try --n-iter or --tol)"
    echo(f"EM iterations: {model.n_iter_} ({state}); best of {n_init} init(s)")
    echo(f"log-likelihood: {ll:.6f}")
    echo(f"BIC: {model.bic(X, seq):.4f}   AIC: {model.aic(X, seq):.4f}")
    echo(f"transition matrix A:\n{_fmt(model.transition_matrix_)}")
    echo(f"transition covariance Q:\n{_fmt(model.transition_covariance_)}")
    echo(f"observation matrix C:\n{_fmt(model.observation_matrix_)}")
    echo(f"observation offset d:\n{_fmt(model.observation_offset_)}")
    echo(f"observation covariance R ({covariance}):\n{_fmt(model.observation_covariance_)}")
    try:
        with atomic_path(target) as tmp:
            header = ",".join(f"x{i}" for i in range(k))
            np.savetxt(tmp, means, delimiter=",", header=header, comments="")
        echo(f"smoothed state means written to {target}")
        if out is not None:
            echo(f"model saved to {model.save(out)} (read it with latentfit.load)")
    except (LatentfitError, OSError) as err:
        fail(str(err))
