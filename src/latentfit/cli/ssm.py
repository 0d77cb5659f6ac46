"""``latentfit fit ssm DATA -k STATE_DIM [--lengths FILE]``: fit a linear-Gaussian state-space
model by EM, print its parameters and write the smoothed state means."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    check_settings,
    cli_words,
    data_argument,
    data_name,
    data_source,
    dataset_option,
    delimiter_option,
    fail,
    finite_number,
    fit_app,
    fit_state,
    force_option,
    header_option,
    inits_made,
    inits_words,
    load_data,
    split_columns,
    written_together,
)
from latentfit.cli.hmm_inputs import read_lengths, states_target
from latentfit.cli.hmm_options import (
    SSM_N_ITER,
    columns_option,
    device_option,
    lengths_option,
    n_init_option,
    n_iter_option,
    out_option,
    quiet_option,
    seed_option,
    states_option,
    tol_option,
)
from latentfit.cli.hmm_report import ignore_best_not_converged
from latentfit.cli.output import json_option

#: The fitted covariances a degenerate fit can leave indefinite, as this command prints them.
_COVARIANCES = {
    "transition_covariance_": "state noise covariance Q",
    "observation_covariance_": "observation noise covariance R",
    "initial_state_covariance_": "initial state covariance",
}


def _degenerate_fit(text: str, X, data: str) -> str | None:
    """The model's refusal of its own fitted covariance (``observation_covariance_ must be
    positive definite``, the words for a parameter set by hand, or the fit's ``the fitted
    observation_covariance_ stopped being positive definite``) as what happened: the fit of
    ``data`` (the rows ``X``) ended degenerate, with where its largest value is and the way
    out; None for any other message."""
    import re

    import numpy as np

    found = re.match(
        r"(\w+_) must be (positive (?:semi-)?definite) (\(smallest eigenvalue \S+\))", text
    ) or re.match(  # the fit's own check of an M-step's covariance
        r"the fitted (\w+_) stopped being (positive (?:semi-)?definite) (\(eigenvalues [^)]*\))",
        text,
    )
    if found is None or found[1] not in _COVARIANCES:
        return None
    row, col = np.unravel_index(np.nanargmax(np.abs(X)), X.shape)
    return (
        f"the fit of {data} ended degenerate: its {_COVARIANCES[found[1]]} is not "
        f"{found[2]} {found[3]}, lost to rounding at the scale of the data (largest |value| "
        f"{abs(X[row, col]):.3g}, at row {row}, column {col}). Rescale the data (e.g. "
        "standardise each column) and fit again, or drop columns that repeat others"
    )


def _fmt(a) -> str:
    import numpy as np

    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


@fit_app.command("ssm")
def fit_ssm(
    data: Path | None = data_argument(
        "Data file (.csv, .tsv, .txt, .npy, .npz or Parquet), one row per step; empty/NaN "
        "cells are missing. Leave it out to use --dataset."
    ),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    k: int = typer.Option(
        ...,
        "-k",
        "--state-dim",
        min=1,
        help="Number of hidden state components (the dimension of the state).",
    ),
    lengths: Path | None = lengths_option(),
    covariance: str = typer.Option("full", help="Observation noise covariance: full or diag."),
    n_iter: int = n_iter_option("EM", SSM_N_ITER),
    tol: float = tol_option(
        rule="Stop when the log-likelihood is estimated to gain less than this from the "
        "iteration before to its maximum (Aitken's estimate: this EM's gains shrink slowly)."
    ),
    n_init: int = n_init_option(),
    ridge: float = typer.Option(
        0.0, min=0.0, help="Ridge (MAP) strength on A and C.", callback=finite_number
    ),
    columns: str | None = columns_option(),
    seed: int = seed_option(),
    states: Path | None = states_option("smoothed state means"),
    out: Path | None = out_option(),
    force: bool = force_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
    as_json: bool = json_option(),
):
    """Fit a linear dynamical system by EM with the Kalman smoother; print A, C, Q, R and d.

    It prints the log-likelihood and BIC/AIC too, and writes the smoothed state of every row
    (--states, by default DATA_states.csv)."""
    import numpy as np

    from latentfit._files import atomic_path
    from latentfit.cli.model_data import record_columns
    from latentfit.em.ssm import LinearGaussianSSM
    from latentfit.errors import LatentfitError

    if covariance not in ("full", "diag"):
        fail(f"--covariance must be full or diag; got {covariance!r}")
    check_device(device)
    data_source(data, dataset)
    target = states_target(states, data, dataset)
    check_outputs([(target, "--states"), (out, "--out")], [data, lengths], force=force)
    model = LinearGaussianSSM(
        k,
        covariance_type=covariance,
        ridge=ridge,
        n_iter=n_iter,
        tol=tol,
        n_init=n_init,
        random_state=seed,
        verbose=not quiet,
        device=device,
    )
    check_settings(model)
    X = load_data(
        data, columns, dataset=dataset, delimiter=delimiter, header=header, allow_nan=True
    ).numpy()
    seq = read_lengths(lengths) if lengths is not None else None
    try:
        with warnings.catch_warnings():
            ignore_best_not_converged()  # the "NOT converged" line says it
            model.fit(X, seq)
        means = model.predict(X, seq)
        ll = model.score(X, seq)
        bic, aic = model.bic(X, seq), model.aic(X, seq)
    except (ValueError, FloatingPointError) as err:
        text = _degenerate_fit(str(err), X, data_name(data, dataset))
        fail(text or cli_words(str(err), data_name(data, dataset), "-k"))
    record_columns(model, data, split_columns(columns), delimiter, dataset, header)  # by name
    result = {
        "model": "LinearGaussianSSM",
        "state_dim": k,
        "covariance_type": covariance,
        "n_samples": X.shape[0],
        "n_sequences": 1 if seq is None else len(seq),
        "n_features": X.shape[1],
        "n_missing": int(np.isnan(X).sum()),
        "n_iter": model.n_iter_,
        "converged": bool(model.converged_),
        "n_init": n_init,
        "inits_made": inits_made(model, n_init),
        "log_likelihood": ll,
        "bic": bic,
        "aic": aic,
        "transition_matrix": model.transition_matrix_,
        "transition_covariance": model.transition_covariance_,
        "observation_matrix": model.observation_matrix_,
        "observation_offset": model.observation_offset_,
        "observation_covariance": model.observation_covariance_,
        "states_file": str(target),
        "model_file": None,
    }
    outputs = [(target, "--states"), (out, "--out")]
    with written_together(outputs, [data, lengths], force=force):
        try:
            with atomic_path(target) as tmp:
                names = ",".join(f"x{i}" for i in range(k))
                np.savetxt(tmp, means, delimiter=",", header=names, comments="")
            if out is not None:
                result["model_file"] = str(model.save(out))
        except (LatentfitError, OSError) as err:
            fail(str(err))
    if as_json:
        from latentfit.cli.output import print_json

        return print_json(result)
    _print_text(result)


def _print_text(r: dict) -> None:
    echo = typer.echo
    echo(
        f"LinearGaussianSSM: state k={r['state_dim']}, n={r['n_samples']} steps in "
        f"{r['n_sequences']} sequence(s), d={r['n_features']}, {r['n_missing']} missing value(s)"
    )
    state = fit_state(r["converged"], "--n-iter or --tol")
    echo(f"EM iterations: {r['n_iter']} ({state}); {inits_words(r)}")
    echo(f"log-likelihood: {r['log_likelihood']:.6f}")
    echo(f"BIC: {r['bic']:.4f}   AIC: {r['aic']:.4f}")
    echo(f"transition matrix A:\n{_fmt(r['transition_matrix'])}")
    echo(f"transition covariance Q:\n{_fmt(r['transition_covariance'])}")
    echo(f"observation matrix C:\n{_fmt(r['observation_matrix'])}")
    echo(f"observation offset d:\n{_fmt(r['observation_offset'])}")
    echo(f"observation covariance R ({r['covariance_type']}):\n{_fmt(r['observation_covariance'])}")
    echo(f"smoothed state means written to {r['states_file']}")
    if r["model_file"] is not None:
        echo(f"model saved to {r['model_file']} (read it with latentfit.load)")
