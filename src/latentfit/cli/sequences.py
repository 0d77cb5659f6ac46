"""``latentfit fit hsmm`` and ``latentfit fit arhmm``: the hidden semi-Markov models and the
autoregressive HMM, fitted, printed and saved as ``fit hmm`` does (its options and its steps
after the fit, :mod:`latentfit.cli.hmm_report`), with the parameters of their own: the state
durations of an HSMM, the regressions on the previous rows of an AR-HMM."""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import (
    data_argument,
    data_name,
    dataset_option,
    delimiter_option,
    fail,
    finite_number,
    fit_app,
    force_option,
    header_option,
)
from latentfit.cli.hmm_emissions import emission_cells, emission_parameters, print_emissions
from latentfit.cli.hmm_inputs import read_series
from latentfit.cli.hmm_options import (
    COVARIANCES,
    algorithm_option,
    check_choice,
    check_missing,
    columns_option,
    components_option,
    covariance_option,
    device_option,
    emission_option,
    lengths_option,
    missing_option,
    n_init_option,
    n_iter_option,
    out_option,
    quiet_option,
    seed_option,
    states_option,
    states_plot_option,
    tol_option,
)
from latentfit.cli.hmm_report import SequenceRun, fit_and_decode, per_state_rows
from latentfit.cli.output import csv_option, json_option

HSMM_EMISSIONS = ("gaussian", "poisson", "categorical")
#: ``--duration`` → the estimator's ``duration`` (negbin is short for negative_binomial).
DURATIONS = {
    "poisson": "poisson",
    "negbin": "negative_binomial",
    "negative_binomial": "negative_binomial",
    "nonparametric": "nonparametric",
}
#: ``--max-duration`` when it is not given (the estimators' default), if no sequence is shorter.
DEFAULT_MAX_DURATION = 20
#: The estimator attribute of every duration parameter → its name in the printed tables.
_DURATION_NAMES = {
    "duration_lambdas_": "lambda",
    "duration_r_": "r",
    "duration_p_": "p",
}


# ---------------------------------------------------------------------- the models' own options
def duration_option():
    """``--duration``: the family of the HSMM's state durations."""
    return typer.Option(
        "poisson",
        help="How long a state lasts: poisson (d - 1 ~ Poisson), negbin (negative binomial) "
        "or nonparametric (a free probability for every d up to --max-duration).",
    )


def max_duration_option():
    """``--max-duration``: D, the longest segment of an HSMM."""
    return typer.Option(
        None,
        "--max-duration",
        min=1,
        help="Longest segment in steps, D (time and memory ~ T·K·D); at most the longest "
        f"sequence. Default: {DEFAULT_MAX_DURATION}, or the longest sequence when shorter.",
        show_default=False,
    )


def order_option(default: int | None = 1):
    """``--order``: the lags p of an autoregressive HMM."""
    return typer.Option(
        default,
        "--order",
        min=1,
        help="Lags p: every row is regressed on the p rows before it (the first p rows of each "
        "sequence only condition)." + ("" if default else " Default: 1."),
        show_default=default is not None,
    )


def check_max_duration(given: int | None, n_rows: int, seq: list[int] | None) -> int:
    """D: ``--max-duration``, refused when longer than every sequence (no segment could last
    that long, and the duration arrays grow with D), or its default for these sequences."""
    if seq is None:
        longest = n_rows
    elif sum(seq) == n_rows and min(seq) > 0:
        longest = max(seq)
    else:
        longest = None  # lengths that do not cut the rows: the estimator names what is wrong
    if given is None:
        return DEFAULT_MAX_DURATION if longest is None else min(DEFAULT_MAX_DURATION, longest)
    if longest is not None and given > longest:
        where = "the data's" if seq is None else "the longest sequence's"
        fail(
            f"--max-duration {given} is longer than {where} {longest} rows: no segment can last "
            f"that long; give at most {longest}"
        )
    return given


# ---------------------------------------------------------------------- fit hsmm
def _hsmm_durations(model) -> dict:
    """The duration family, its parameters per state, the pmf over 1..D and the mean."""
    import numpy as np

    pmf = np.asarray(model.duration_pmf_)  # (k, D)
    params = {n.rstrip("_"): getattr(model, n) for n in _DURATION_NAMES if hasattr(model, n)}
    return {
        "duration": model.duration,
        "max_duration": int(model.max_duration),
        "right_censoring": bool(model.right_censoring),
        "duration_parameters": params,
        "mean_duration": pmf @ np.arange(1, pmf.shape[1] + 1),
        "duration_pmf": pmf,
    }


def _print_hsmm(r: dict) -> None:
    import numpy as np

    from latentfit.cli.output import format_table

    print_emissions(r)
    states = [f"state {i}" for i in range(r["n_components"])]
    params = r["duration_parameters"]
    cols = [_DURATION_NAMES[f"{n}_"] for n in params] + ["mean"]
    values = np.column_stack([*(np.asarray(v) for v in params.values()), r["mean_duration"]])
    censored = "the last segment of a sequence may be cut" if r["right_censoring"] else (
        "every sequence ends with a segment")  # fmt: skip
    typer.echo(
        f"durations ({r['duration']}, 1..{r['max_duration']} steps; {censored}):\n"
        + format_table(values, cols, states)
    )
    if r["duration"] == "nonparametric":
        steps = [str(d) for d in range(1, r["max_duration"] + 1)]
        typer.echo(f"duration probabilities:\n{format_table(r['duration_pmf'], steps, states)}")


def _hsmm_cells(model, r: dict, i: int) -> dict:
    row = emission_cells(model, r, i)
    for name, value in r["duration_parameters"].items():
        row[name] = float(value[i])
    row["mean_duration"] = float(r["mean_duration"][i])
    if r["duration"] == "nonparametric":
        pmf = r["duration_pmf"][i]
        row |= {f"duration_prob_{d}": float(p) for d, p in enumerate(pmf, start=1)}
    return row


@fit_app.command("hsmm")
def fit_hsmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    k: int = components_option(),
    lengths: Path | None = lengths_option(),
    duration: str = duration_option(),
    max_duration: int | None = max_duration_option(),
    right_censoring: bool = typer.Option(
        True,
        "--right-censoring/--no-right-censoring",
        help="The last segment of a sequence may go on after its end (--no-right-censoring: "
        "every sequence ends with a segment).",
    ),
    emission: str = emission_option(HSMM_EMISSIONS),
    covariance: str = covariance_option(),
    n_iter: int = n_iter_option("EM"),
    tol: float = tol_option(),
    n_init: int = n_init_option(),
    algorithm: str = algorithm_option(),
    missing: str = missing_option(),
    columns: str | None = columns_option(),
    seed: int = seed_option(),
    states: Path | None = states_option(),
    out: Path | None = out_option(),
    plot: Path | None = states_plot_option(),
    force: bool = force_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit a hidden semi-Markov model (an HMM with explicit state durations) by EM.

    It prints the start and segment-to-segment transition probabilities, emissions,
    durations, log-likelihood and BIC/AIC, and writes the decoded state of every row (Viterbi
    over segments; --states, by default DATA_states.csv)."""
    from latentfit import CategoricalHSMM, GaussianHSMM, PoissonHSMM

    check_choice("--emission", emission, HSMM_EMISSIONS)
    check_choice("--covariance", covariance, COVARIANCES)
    check_choice("--duration", duration, tuple(DURATIONS))
    check_missing(missing, emission)
    if k < 2:
        fail(
            f"-k {k}: a semi-Markov model needs at least 2 states (a segment is always followed "
            "by one of another state); use 'latentfit fit hmm' for one state"
        )
    run = SequenceRun(data, dataset, delimiter, columns, lengths, n_init, algorithm, states, out, plot,
               force, device, as_json, as_csv, header=header)  # fmt: skip
    run.check()
    X = read_series(data, columns, dataset, delimiter, emission, missing, header)
    common = dict(
        max_duration=check_max_duration(max_duration, X.shape[0], run.seq),
        duration=DURATIONS[duration],
        right_censoring=right_censoring,
        n_iter=n_iter,
        tol=tol,
        n_init=n_init,
        random_state=seed,
        verbose=not quiet,
        device=device,
    )
    if emission == "gaussian":
        model = GaussianHSMM(k, covariance_type=covariance, missing=missing, **common)
    elif emission == "poisson":
        model = PoissonHSMM(k, **common)
    else:
        model = CategoricalHSMM(k, **common)
    fitted = fit_and_decode(model, X, run.seq, algorithm, data_name(data, dataset))
    settings = {
        "emission": emission,
        "covariance_type": covariance if emission == "gaussian" else None,
    }
    parameters = emission_parameters(model, emission) | _hsmm_durations(model)
    rows = per_state_rows(model, _hsmm_cells)
    run.finish(model, X, fitted, settings, parameters, rows, _print_hsmm)


# ---------------------------------------------------------------------- fit arhmm
def _print_arhmm(r: dict) -> None:
    from latentfit.cli.output import format_covariances, format_table

    echo, names = typer.echo, r["features"]
    states = [f"state {i}" for i in range(r["n_components"])]
    echo(f"intercepts b:\n{format_table(r['intercepts'], names, states)}")
    echo("autoregressive coefficients A (row: the column predicted; column: its lagged value):")
    for i, per_lag in enumerate(r["coefs"]):
        for lag, A in enumerate(per_lag, start=1):
            echo(format_table(A, [f"{n}[t-{lag}]" for n in names], names, label=f"[{i}] lag {lag}"))
    echo(
        "noise covariances (full):\n" + format_covariances(r["covariances"], "full", names, states)
    )


def _arhmm_cells(model, r: dict, i: int) -> dict:
    from latentfit.cli.output import gaussian_columns

    names = r["features"]
    row = {f"intercept_{n}": float(v) for n, v in zip(names, r["intercepts"][i], strict=True)}
    for lag, A in enumerate(r["coefs"][i], start=1):
        for a, out in enumerate(names):
            row |= {f"coef_{lag}_{out}_{src}": float(A[a, b]) for b, src in enumerate(names)}
    cov = gaussian_columns(r["intercepts"], r["covariances"], "full", names, i)
    return row | {key: v for key, v in cov.items() if key.startswith("cov_")}


@fit_app.command("arhmm")
def fit_arhmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    k: int = components_option(),
    lengths: Path | None = lengths_option(),
    order: int = order_option(),
    ridge: float = typer.Option(
        0.0,
        min=0.0,
        help="Ridge (MAP) strength on the autoregressive coefficients.",
        callback=finite_number,
    ),
    n_iter: int = n_iter_option(),
    tol: float = tol_option(),
    n_init: int = n_init_option(),
    algorithm: str = algorithm_option(),
    columns: str | None = columns_option(),
    seed: int = seed_option(),
    states: Path | None = states_option(),
    out: Path | None = out_option(),
    plot: Path | None = states_plot_option(),
    force: bool = force_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit an HMM with vector-autoregressive emissions of order p (a switching VAR(p)).

    Fitted by Baum-Welch, it prints the start/transition probabilities, every state's
    intercepts, coefficients and noise covariance, log-likelihood and BIC/AIC, and writes
    the decoded state of every row (--states, by default DATA_states.csv)."""
    import math

    from latentfit import AutoregressiveHMM

    if not math.isfinite(ridge):
        fail(f"--ridge must be a finite number >= 0; got {ridge}")
    run = SequenceRun(data, dataset, delimiter, columns, lengths, n_init, algorithm, states, out, plot,
               force, device, as_json, as_csv, header=header)  # fmt: skip
    run.check()
    model = AutoregressiveHMM(
        k,
        order=order,
        ridge=ridge,
        n_iter=n_iter,
        tol=tol,
        n_init=n_init,
        random_state=seed,
        verbose=not quiet,
        device=device,
    )
    X = read_series(data, columns, dataset, delimiter, "gaussian", header=header)
    fitted = fit_and_decode(model, X, run.seq, algorithm, data_name(data, dataset))
    parameters = {
        "order": order,
        "ridge": ridge,
        "intercepts": model.intercepts_,
        "coefs": model.coefs_,
        "covariances": model.covars_,
    }
    rows = per_state_rows(model, _arhmm_cells)
    run.finish(model, X, fitted, {}, parameters, rows, _print_arhmm)
