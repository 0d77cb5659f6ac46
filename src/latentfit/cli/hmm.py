"""``latentfit fit hmm DATA -k K [--lengths FILE]``: fit a hidden Markov model, print its
parameters and write the decoded state path."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
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
from latentfit.cli.gmm import DEFAULT_TIMEOUT_S
from latentfit.cli.output import csv_option, json_option

EMISSIONS = ("gaussian", "gmm", "categorical", "poisson")


def _fmt(a) -> str:
    import numpy as np

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


def _model(emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet, device, missing):
    from latentfit import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM

    common = dict(
        n_iter=n_iter, tol=tol, n_init=n_init, random_state=seed, verbose=not quiet, device=device
    )
    if emission == "gaussian":
        return GaussianHMM(k, covariance_type=covariance, missing=missing, **common)
    if emission == "gmm":
        return GMMHMM(k, n_mix=n_mix, covariance_type=covariance, **common)
    if emission == "categorical":
        return CategoricalHMM(k, **common)
    return PoissonHMM(k, **common)


def _emissions(model, emission: str) -> dict:
    """The emission parameters, under the names of the estimator's attributes."""
    if emission == "gaussian":
        return {"means": model.means_, "covariances": model._covars_}
    if emission == "gmm":
        return {"weights": model.weights_, "means": model.means_, "covariances": model.covars_}
    if emission == "categorical":
        return {"emissionprob": model.emissionprob_}
    return {"lambdas": model.lambdas_}


def _print_emissions(r: dict) -> None:
    from latentfit.cli.output import format_covariances, format_table

    echo, names, covariance = typer.echo, r["features"], r["covariance_type"]
    states = [f"state {i}" for i in range(r["n_components"])]
    if r["emission"] == "gaussian":
        echo(f"means:\n{format_table(r['means'], names, states)}")
        echo(
            f"covariances ({covariance}):\n"
            + format_covariances(r["covariances"], covariance, names, states)
        )
    elif r["emission"] == "gmm":
        echo(f"mixture weights:\n{_fmt(r['weights'])}")
        echo("means:")
        for i, m in enumerate(r["means"]):
            echo(format_table(m, names, label=f"state {i}"))
        echo(f"covariances ({covariance}):\n{_fmt(r['covariances'])}")
    elif r["emission"] == "categorical":
        symbols = [str(s) for s in range(len(r["emissionprob"][0]))]
        echo(f"emission probabilities:\n{format_table(r['emissionprob'], symbols, states)}")
    else:
        echo(f"Poisson rates:\n{format_table(r['lambdas'], names, states)}")


def _csv_rows(model, r: dict) -> list[dict]:
    """One row per state (per state and mixture component for gmm emissions)."""
    import numpy as np

    from latentfit.cli.output import gaussian_columns

    k, names, rows = r["n_components"], r["features"], []
    for i in range(k):
        row = {"state": i, "startprob": float(model.startprob_[i])}
        row |= {f"transmat_{j}": float(model.transmat_[i, j]) for j in range(k)}
        if r["emission"] == "gaussian":
            row |= gaussian_columns(model.means_, model._covars_, r["covariance_type"], names, i)
        elif r["emission"] == "categorical":
            row |= {f"prob_{s}": float(p) for s, p in enumerate(model.emissionprob_[i])}
        elif r["emission"] == "poisson":
            row |= {f"rate_{n}": float(v) for n, v in zip(names, model.lambdas_[i], strict=True)}
        else:
            ct = r["covariance_type"]
            cov = np.asarray(model.covars_)[i]
            for m in range(model.n_mix):
                mix = {"mix": m, "weight": float(model.weights_[i, m])}
                mix |= gaussian_columns(model.means_[i], cov, ct, names, m)
                rows.append(row | mix)
            continue
        rows.append(row)
    return rows


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
    n_iter: int = typer.Option(
        100, "--n-iter", "--max-iter", min=1, help="Most Baum-Welch iterations (n_iter)."
    ),
    tol: float = typer.Option(1e-2, help="Stop when the log-likelihood gains less than this."),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept."),
    algorithm: str = typer.Option("viterbi", help="viterbi (best path) or map (best states)."),
    missing: str = typer.Option(
        "error",
        help="error, or marginalize to fit, score and decode rows with NaNs (gaussian emissions).",
    ),
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
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    distributed: bool = typer.Option(
        False,
        "--distributed/--no-distributed",
        help="One process per rank under torchrun: each fits its share of the sequences "
        "(--lengths) and the statistics are all-reduced; rank 0 prints and saves. The states "
        "are not decoded (decode with the saved model).",
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout",
        min=0.001,
        help="Seconds a --distributed process waits for the others in any one exchange before "
        "it stops with an error (a stopped or crashed process).",
    ),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit an HMM by Baum-Welch; print start/transition probabilities, emissions,
    log-likelihood and BIC/AIC; write the decoded state of every row."""
    import numpy as np

    from latentfit.cli.models import record_columns
    from latentfit.cli.output import check_format, column_names
    from latentfit.errors import LatentfitError

    check_format(as_json, as_csv)
    if emission not in EMISSIONS:
        fail(f"--emission must be one of {', '.join(EMISSIONS)}; got {emission!r}")
    if algorithm not in ("viterbi", "map"):
        fail(f"--algorithm must be viterbi or map; got {algorithm!r}")
    if missing not in ("error", "marginalize"):
        fail(f"--missing must be error or marginalize; got {missing!r}")
    if missing == "marginalize" and emission != "gaussian":
        fail(f"--missing marginalize needs --emission gaussian; {emission} emissions take no NaN")
    name = data_source(data, dataset)
    target = None
    if not distributed:
        from latentfit.datasets._files import file_stem

        stem = file_stem(data) if data is not None else dataset
        target = states if states is not None else Path(f"{stem}_states.csv")
    elif states is not None:
        fail("--states: a --distributed fit decodes no states; decode with the saved --out model")
    elif data is None:
        fail("--distributed reads shards of a DATA file; save the data set to a file first")
    elif plot is not None:
        fail("--plot: a --distributed fit decodes no states; plot from the saved --out model")
    check_outputs(
        [(target, "--states"), (out, "--out"), (plot, "--plot")], [data, lengths], force=force
    )
    fmt = figure_format(plot)
    check_device(device)
    cols = split_columns(columns)
    seq = read_lengths(lengths) if lengths is not None else None
    model = _model(
        emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet, device, missing
    )
    if distributed:
        if emission == "categorical":
            fail(
                "--distributed fits gaussian, gmm and poisson emissions; categorical fits in memory"
            )
        from latentfit.cli._hmm_distributed import fit_hmm_distributed

        try:
            res = fit_hmm_distributed(model, data, cols, seq, timeout)
        except (ValueError, RuntimeError, FloatingPointError, FileNotFoundError) as err:
            fail(str(err))
        if res.rank != 0:
            return
        n_rows, d, ll, bic, aic = res.n_samples, res.n_features, res.loglik, res.bic, res.aic
        path, logprob = None, None
    else:
        X = load_data(
            data,
            cols,
            dataset=dataset,
            delimiter=delimiter,
            allow_nan=missing == "marginalize",
            hint=" (pass --missing marginalize)",
        ).numpy()
        if emission == "categorical":
            if X.shape[1] != 1:
                fail(f"categorical emissions need one column of symbols; {name} has {X.shape[1]}")
            if not np.all(X == np.round(X)):
                fail("categorical emissions need whole-number symbols 0, 1, 2, ...")
            X = X.astype(np.int64)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                model.fit(X, seq)
            logprob, path = model.decode(X, seq, algorithm=algorithm)
            ll = model.score(X, seq)
            bic, aic = model.bic(X, seq), model.aic(X, seq)
        except (ValueError, FloatingPointError) as err:
            fail(str(err))
        n_rows, d = X.shape
    record_columns(model, data, cols, delimiter, dataset)  # predict/score match them by name
    names = column_names(data, columns, d, model, delimiter)
    result = {
        "model": type(model).__name__,
        "emission": emission,
        "n_components": k,
        "covariance_type": covariance if emission in ("gaussian", "gmm") else None,
        "n_samples": n_rows,
        "n_sequences": 1 if seq is None else len(seq),
        "n_features": d,
        "features": names,
        "n_iter": model.n_iter_,
        "converged": bool(model.converged_),
        "n_init": n_init,
        "log_likelihood": ll,
        "bic": bic,
        "aic": aic,
        "startprob": model.startprob_,
        "transmat": model.transmat_,
        **_emissions(model, emission),
        "algorithm": None if path is None else algorithm,
        "decoded_log_probability": logprob,
        "state_counts": None if path is None else np.bincount(path, minlength=k),
        "states_file": None if target is None else str(target),
        "model_file": None,
    }
    try:
        if path is not None:
            from latentfit.io import atomic_path

            with atomic_path(target) as tmp:
                np.savetxt(tmp, path, fmt="%d", header="state", comments="")
        if out is not None:
            result["model_file"] = str(model.save(out))
    except (LatentfitError, OSError) as err:
        fail(str(err))
    if as_json:
        from latentfit.cli.output import print_json

        print_json(result)
    elif as_csv:
        from latentfit.cli.output import print_csv

        print_csv(_csv_rows(model, result))
    else:
        _print_text(result)
    if plot is not None:
        from latentfit.plot import plot_states

        fig, axes = new_figure(X.shape[1], 1, figsize=(10, 2.6 * X.shape[1] + 0.6), sharex=True)
        plot_states(model, X, seq, states=path, ax=axes)
        save_figure(fig, plot, fmt)


def _print_text(r: dict) -> None:
    from latentfit.cli.output import format_table

    echo, k = typer.echo, r["n_components"]
    echo(
        f"{r['model']}: K={k}, n={r['n_samples']} steps in {r['n_sequences']} sequence(s), "
        f"d={r['n_features']}"
    )
    state = "converged" if r["converged"] else "NOT converged (try --n-iter or --tol)"
    echo(f"Baum-Welch iterations: {r['n_iter']} ({state}); best of {r['n_init']} init(s)")
    echo(f"log-likelihood: {r['log_likelihood']:.6f}")
    echo(f"BIC: {r['bic']:.4f}   AIC: {r['aic']:.4f}")
    echo(f"start probabilities:\n{_fmt(r['startprob'])}")
    to = [f"to {j}" for j in range(k)]
    echo(f"transition matrix:\n{format_table(r['transmat'], to, label='from')}")
    _print_emissions(r)
    if r["state_counts"] is not None:
        echo(
            f"decoded ({r['algorithm']}) log-probability: {r['decoded_log_probability']:.6f}; "
            f"steps per state: {r['state_counts']}"
        )
        echo(f"decoded states written to {r['states_file']}")
    if r["model_file"] is not None:
        echo(f"model saved to {r['model_file']} (read it with latentfit.load)")
