"""``latentfit fit gmm DATA -k K``: fit a Gaussian mixture and print what was fitted."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    check_settings,
    cli_words,
    csv_output_option,
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
    output_option,
    reg_covar_option,
    seed_option,
    split_columns,
    stream_option,
    stream_path,
    written_together,
)
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure
from latentfit.cli.output import csv_option, json_option

#: latentfit.em.sources.distributed.DEFAULT_TIMEOUT_S, written out so that --help need not import torch
#: (tests/cli/test_cold_start.py checks the two agree).
DEFAULT_TIMEOUT_S = 300.0


def read_data(
    path: Path | None,
    columns: str,
    allow_nan: bool,
    dataset: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    nan_advice: str | None = None,
):
    """Read DATA or --dataset (NaN allowed when the model marginalises missing values;
    ``nan_advice`` as :func:`~latentfit.cli.app.load_data` takes it)."""
    return load_data(
        path,
        columns,
        dataset=dataset,
        delimiter=delimiter,
        header=header,
        allow_nan=allow_nan,
        nan_advice=nan_advice,
    )


def _fit_streamed(model, data: Path, columns: str, missing: str):
    """Fit ``model`` chunk by chunk from the file and score it in one more pass; returns
    (n, d, log-likelihood) without ever holding the data in memory."""
    import numpy as np

    from latentfit.em.sources.chunks import ArraySource, open_source

    cols = split_columns(columns)
    if cols and data.suffix.lower() == ".npy":
        # a memory-mapped .npy has no column names; copy only the columns asked for
        from latentfit.datasets._columns import _resolve
        from latentfit.em.sources.chunks import NpySource

        mapped = NpySource(data)._X  # (n, d) memory map; refuses what is not a numeric 2-D array
        idx = _resolve(None, mapped.shape[1], cols, data)
        source = ArraySource(np.ascontiguousarray(mapped[:, idx]))
        source.name = data.name
    else:
        source = open_source(data, columns=cols)
    model.fit(source)
    n, ll = 0, 0.0
    for Xc, _ in source.configured(allow_nan=missing == "marginalize"):
        ll += float(model.score_samples(Xc).sum())
        n += Xc.shape[0]
    return n, source.n_features, ll


def _fmt(a) -> str:
    import numpy as np

    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


@fit_app.command("gmm")
def fit_gmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    stream_above: float = stream_option(),
    k: int = typer.Option(..., "-k", "--components", min=1, help="Number of components."),
    covariance: str = typer.Option("full", help="full, tied, diag or spherical."),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept."),
    max_iter: int = typer.Option(100, "--max-iter", min=1, help="Most EM iterations per restart."),
    tol: float = typer.Option(
        1e-3, help="Stop when the mean log-likelihood changes less.", callback=finite_number
    ),
    reg_covar: float = reg_covar_option(),
    init: str = typer.Option("kmeans", help="kmeans, k-means++, random or random_from_data."),
    missing: str = typer.Option("error", help="error, or marginalize to fit rows with NaNs."),
    columns: str | None = typer.Option(None, help="Comma-separated columns to use (default: all)."),
    seed: int = seed_option("Seed for the initialisation."),
    out: Path | None = output_option(None, "--out", help="Save the fitted model to this file."),
    labels: Path | None = csv_output_option(
        None, "--labels", help="CSV file of the most probable component of every row."
    ),
    plot: Path | None = plot_option("the components' 1σ/2σ ellipses over the first two columns"),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    distributed: bool = typer.Option(
        False,
        "--distributed/--no-distributed",
        help="One process per rank under torchrun: each reads its shard of DATA and the EM "
        "statistics are all-reduced; rank 0 prints and saves.",
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout",
        min=0.001,
        help="Seconds a --distributed process waits for the others in any one exchange before "
        "it stops with an error (a stopped or crashed process).",
        callback=finite_number,
    ),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit a Gaussian mixture by EM; print weights, means, covariances, log-likelihood, BIC/AIC.

    --labels writes the label of every row."""
    from latentfit.cli.model_data import record_columns
    from latentfit.cli.output import check_format, column_names
    from latentfit.cli.tables import write_labels
    from latentfit.em.mixture.gmm import GaussianMixture

    check_format(as_json, as_csv)
    data_source(data, dataset)
    check_outputs([(out, "--out"), (labels, "--labels"), (plot, "--plot")], [data], force=force)
    if distributed and labels is not None:
        fail(
            "--labels is not written by a --distributed fit (no process holds every row); "
            "save the model with --out and run 'latentfit predict MODEL DATA --out FILE'"
        )
    fmt = figure_format(plot)
    check_device(device)
    X = None
    model = GaussianMixture(
        k,
        covariance_type=covariance,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        reg_covar=reg_covar,
        init_params=init,
        random_state=seed,
        missing=missing,
        verbose=0 if quiet else 1,
        device=device,
    )
    check_settings(model)
    if distributed:
        from latentfit.em.sources.distributed import fit_distributed

        if data is None:
            fail("--distributed reads shards of a DATA file; save the data set to a file first")
        try:
            cols = split_columns(columns)
            res = fit_distributed(
                model, data, columns=cols, delimiter=delimiter, header=header, timeout=timeout
            )
        except (ValueError, RuntimeError, FloatingPointError, FileNotFoundError) as err:
            fail(cli_words(str(err), data_name(data), "-k"))
        if res.rank != 0:
            return
        n, d, ll = res.n_samples, res.n_features, res.loglik
    elif stream_path(data, stream_above):
        if labels is not None:
            fail(
                f"--labels needs every row in memory, and {data} is streamed from the file "
                f"(over --stream-above {stream_above:g} MiB); raise --stream-above, or save "
                "the model with --out and run 'latentfit predict MODEL DATA --out FILE'"
            )
        from latentfit.datasets._files import check_text_options, parse_delimiter

        try:  # a .npy or Parquet file: a --delimiter or --header would be ignored
            check_text_options(data, parse_delimiter(delimiter), header)
        except ValueError as err:
            fail(str(err))
        typer.echo(
            f"{data} is streamed from the file (--stream-above {stream_above:g} MiB)", err=True
        )
        try:
            n, d, ll = _fit_streamed(model, data, columns, missing)
        except (ValueError, FloatingPointError, FileNotFoundError) as err:
            fail(cli_words(str(err), data_name(data), "-k"))
    else:
        X = read_data(data, columns, missing == "marginalize", dataset, delimiter, header)
        try:
            model.fit(X)
        except (ValueError, FloatingPointError) as err:
            fail(cli_words(str(err), data_name(data, dataset), "-k"))
        n, d, ll = X.shape[0], X.shape[1], model.score(X) * X.shape[0]
    record_columns(model, data, split_columns(columns), delimiter, dataset, header)
    names = column_names(data, columns, d, model, delimiter, header)
    with written_together(
        [(out, "--out"), (labels, "--labels"), (plot, "--plot")], [data], force=force
    ):
        saved = _save(model, out)
        if labels is not None:
            write_labels(labels, model.predict(X))
        if plot is not None:
            from latentfit.plot import plot_mixture

            fig, ax = new_figure(figsize=(6, 4.5))
            plot_mixture(model, None if X is None else X.cpu(), ax=ax)  # --distributed: no rows
            save_figure(fig, plot, fmt)
    p = model._n_parameters()
    result = {
        "model": "GaussianMixture",
        "n_components": k,
        "covariance_type": covariance,
        "n_samples": n,
        "n_features": d,
        "features": names,
        "n_iter": model.n_iter_,
        "converged": bool(model.converged_),
        "n_init": n_init,
        "inits_made": inits_made(model, n_init),
        "log_likelihood": ll,
        "log_likelihood_per_sample": ll / n,
        "bic": -2 * ll + p * math.log(n),
        "aic": -2 * ll + 2 * p,
        "n_parameters": p,
        "weights": model.weights_,
        "means": model.means_,
        "covariances": model.covariances_,
        "model_file": saved,
    }
    if as_json:
        from latentfit.cli.output import print_json

        print_json(result)
    elif as_csv:
        from latentfit.cli.output import gaussian_columns, print_csv

        print_csv(
            [
                {"component": i, "weight": float(model.weights_[i])}
                | gaussian_columns(model.means_, model.covariances_, covariance, names, i)
                for i in range(k)
            ]
        )
    else:
        _print_text(result)


def _save(model, out: Path | None) -> str | None:
    if out is None:
        return None
    from latentfit.errors import LatentfitError

    try:
        return str(model.save(out))
    except (LatentfitError, OSError) as err:
        fail(str(err))


def _print_text(r: dict) -> None:
    from latentfit.cli.output import format_covariances, format_table

    echo = typer.echo
    n, ll = r["n_samples"], r["log_likelihood"]
    echo(
        f"GaussianMixture: K={r['n_components']}, covariance={r['covariance_type']}, n={n}, "
        f"d={r['n_features']}"
    )
    state = fit_state(r["converged"])
    echo(f"EM iterations: {r['n_iter']} ({state}); {inits_words(r)}")
    echo(f"log-likelihood: {ll:.6f} (per sample {ll / n:.6f})")
    echo(f"BIC: {r['bic']:.4f}   AIC: {r['aic']:.4f}   parameters: {r['n_parameters']}")
    echo(f"weights:\n{_fmt(r['weights'])}")
    echo(f"means:\n{format_table(r['means'], r['features'], label='component')}")
    echo(
        f"covariances ({r['covariance_type']}):\n"
        + format_covariances(r["covariances"], r["covariance_type"], r["features"])
    )
    if r["model_file"] is not None:
        echo(f"model saved to {r['model_file']} (read it with latentfit.load)")
