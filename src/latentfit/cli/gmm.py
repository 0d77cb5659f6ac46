"""``latentfit fit gmm DATA -k K``: fit a Gaussian mixture and print what was fitted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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
    stream_option,
    stream_path,
)
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure
from latentfit.em.distributed import DEFAULT_TIMEOUT_S
from latentfit.errors import LatentfitError


def read_data(
    path: Path | None,
    columns: str,
    allow_nan: bool,
    dataset: str | None = None,
    delimiter: str | None = None,
):
    """Read DATA or --dataset (NaN allowed when the model marginalises missing values)."""
    return load_data(
        path,
        columns,
        dataset=dataset,
        delimiter=delimiter,
        allow_nan=allow_nan,
        hint=" (pass --missing marginalize)",
    )


def _fit_streamed(model, data: Path, columns: str, missing: str):
    """Fit ``model`` chunk by chunk from the file and score it in one more pass; returns
    (n, d, log-likelihood) without ever holding the data in memory."""
    from latentfit.em.sources import ArraySource, open_source

    cols = split_columns(columns)
    if cols and data.suffix.lower() == ".npy":
        # a memory-mapped .npy has no column names; copy only the columns asked for
        from latentfit.datasets._files import _resolve
        from latentfit.em.sources import NpySource

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
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


@fit_app.command("gmm")
def fit_gmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    stream_above: float = stream_option(),
    k: int = typer.Option(..., "-k", "--components", min=1, help="Number of components."),
    covariance: str = typer.Option("full", help="full, tied, diag or spherical."),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept."),
    max_iter: int = typer.Option(100, "--max-iter", min=1),
    tol: float = typer.Option(1e-3, help="Stop when the mean log-likelihood changes less."),
    init: str = typer.Option("kmeans", help="kmeans, k-means++, random or random_from_data."),
    missing: str = typer.Option("error", help="error, or marginalize to fit rows with NaNs."),
    columns: str = typer.Option("", help="Comma-separated columns to use (default: all)."),
    seed: int = typer.Option(0, help="Seed for the initialisation."),
    out: Path | None = typer.Option(None, "--out", help="Save the fitted model to this file."),
    labels: Path | None = typer.Option(
        None, "--labels", help="CSV file of the most probable component of every row."
    ),
    plot: Path | None = plot_option("the components' 1σ/2σ ellipses over the first two columns"),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    distributed: bool = typer.Option(
        False,
        "--distributed",
        help="One process per rank under torchrun: each reads its shard of DATA and the EM "
        "statistics are all-reduced; rank 0 prints and saves.",
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout",
        min=0.001,
        help="Seconds a --distributed process waits for the others in any one exchange before "
        "it stops with an error (a stopped or crashed process).",
    ),
):
    """Fit a Gaussian mixture by EM; print weights, means, covariances, log-likelihood, BIC/AIC;
    write the label of every row with --labels."""
    from latentfit.cli.models import record_columns, write_labels
    from latentfit.em.gmm import GaussianMixture

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
        init_params=init,
        random_state=seed,
        missing=missing,
        verbose=0 if quiet else 1,
        device=device,
    )
    if distributed:
        from latentfit.em.distributed import fit_distributed

        if data is None:
            fail("--distributed reads shards of a DATA file; save the data set to a file first")
        try:
            cols = [c for c in columns.split(",") if c] or None
            res = fit_distributed(model, data, columns=cols, timeout=timeout)
        except (ValueError, RuntimeError, FloatingPointError, FileNotFoundError) as err:
            fail(str(err))
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
        typer.echo(
            f"{data} is streamed from the file (--stream-above {stream_above:g} MiB)", err=True
        )
        try:
            n, d, ll = _fit_streamed(model, data, columns, missing)
        except (ValueError, FloatingPointError, FileNotFoundError) as err:
            fail(str(err))
    else:
        X = read_data(data, columns, missing == "marginalize", dataset, delimiter)
        try:
            model.fit(X)
        except (ValueError, FloatingPointError) as err:
            fail(str(err))
        n, d, ll = X.shape[0], X.shape[1], model.score(X) * X.shape[0]
    record_columns(model, data, [c for c in columns.split(",") if c] or None)
    p = model._n_parameters()
    echo = typer.echo
    echo(f"GaussianMixture: K={k}, covariance={covariance}, n={n}, d={d}")
    state = "converged" if model.converged_ else "NOT converged (try --max-iter or --tol)"
    echo(f"EM iterations: {model.n_iter_} ({state}); best of {n_init} init(s)")
    echo(f"log-likelihood: {ll:.6f} (per sample {ll / n:.6f})")
    echo(f"BIC: {-2 * ll + p * math.log(n):.4f}   AIC: {-2 * ll + 2 * p:.4f}   parameters: {p}")
    echo(f"weights:\n{_fmt(model.weights_)}")
    echo(f"means:\n{_fmt(model.means_)}")
    echo(f"covariances ({covariance}):\n{_fmt(model.covariances_)}")
    if labels is not None:
        write_labels(labels, model.predict(X))
    if out is not None:
        try:
            path = model.save(out)
        except (LatentfitError, OSError) as err:
            fail(str(err))
        echo(f"model saved to {path} (read it with latentfit.load)")
    if plot is not None:
        from latentfit.plot import plot_mixture

        fig, ax = new_figure(figsize=(6, 4.5))
        plot_mixture(model, None if X is None else X.cpu(), ax=ax)  # --distributed: no rows here
        save_figure(fig, plot, fmt)
