"""``latentfit fit bgmm DATA -k K``: a variational Bayesian Gaussian mixture by CAVI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    data_argument,
    dataset_option,
    delimiter_option,
    fail,
    fit_app,
    force_option,
    load_data,
    split_columns,
)
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure
from latentfit.errors import LatentfitError


def _fmt(a) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


@fit_app.command("bgmm")
def fit_bgmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    k: int = typer.Option(
        ...,
        "-k",
        "--components",
        min=1,
        help="Maximum number of components (unneeded ones are switched off).",
    ),
    covariance: str = typer.Option("full", help="full, tied, diag or spherical."),
    prior: str = typer.Option(
        "dirichlet_process", help="Weight prior: dirichlet_process or dirichlet_distribution."
    ),
    concentration: float | None = typer.Option(
        None, help="Weight concentration prior γ₀ (default 1/k); smaller switches off more."
    ),
    n_init: int = typer.Option(1, "--n-init", min=1, help="CAVI restarts; the best ELBO is kept."),
    max_iter: int = typer.Option(500, "--max-iter", min=1),
    tol: float = typer.Option(1e-3, help="Stop when the lower bound changes less than this."),
    init: str = typer.Option("kmeans", help="kmeans, k-means++, random or random_from_data."),
    active: float = typer.Option(0.01, help="Weight above which a component counts as used."),
    columns: str = typer.Option("", help="Comma-separated columns to use (default: all)."),
    seed: int = typer.Option(0, help="Seed for the initialisation."),
    out: Path | None = typer.Option(None, "--out", help="Save the fitted model to this file."),
    labels: Path | None = typer.Option(
        None, "--labels", help="CSV file of the most probable component of every row."
    ),
    plot: Path | None = plot_option("the used components' ellipses over the first two columns"),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
):
    """Fit a Bayesian Gaussian mixture by coordinate-ascent VI; print the ELBO and the
    components it keeps."""
    from sklearn.exceptions import ConvergenceWarning

    from latentfit.cli.models import record_columns, write_labels
    from latentfit.vi.bgmm import BayesianGaussianMixture

    check_outputs([(out, "--out"), (labels, "--labels"), (plot, "--plot")], [data], force=force)
    fmt = figure_format(plot)
    check_device(device)
    X = load_data(data, columns, dataset=dataset, delimiter=delimiter)
    model = BayesianGaussianMixture(
        n_components=k,
        covariance_type=covariance,
        weight_concentration_prior_type=prior,
        weight_concentration_prior=concentration,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        init_params=init,
        random_state=seed,
        verbose=0 if quiet else 1,
        device=device,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(X)
        except (ValueError, FloatingPointError) as err:
            fail(str(err))
    record_columns(model, data, split_columns(columns))
    n, d = X.shape
    echo = typer.echo
    echo(
        f"BayesianGaussianMixture: K={k} (max), covariance={covariance}, prior={prior}, "
        f"n={n}, d={d}"
    )
    state = "converged" if model.converged_ else "NOT converged (try --max-iter or --tol)"
    echo(f"CAVI iterations: {model.n_iter_} ({state}); best of {n_init} init(s)")
    if any(issubclass(w.category, ConvergenceWarning) for w in caught) and model.converged_:
        echo("note: some restarts did not converge")
    echo(
        f"ELBO: {model.elbo_:.6f} nats (per sample {model.elbo_ / n:.6f}); "
        f"scikit-learn's lower bound: {model.lower_bound_:.6f}"
    )
    used = np.flatnonzero(model.weights_ > active)
    echo(f"components used (weight > {active}): {len(used)} of {k}: {used.tolist()}")
    echo(f"weights:\n{_fmt(model.weights_)}")
    echo(f"means (used components):\n{_fmt(model.means_[used])}")
    cov = model.covariances_ if covariance == "tied" else model.covariances_[used]
    echo(f"covariances ({covariance}, used components):\n{_fmt(cov)}")
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
        plot_mixture(model, X, min_weight=active, ax=ax)
        save_figure(fig, plot, fmt)
