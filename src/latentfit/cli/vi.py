"""``latentfit fit bgmm DATA -k K``: a variational Bayesian Gaussian mixture by CAVI."""

from __future__ import annotations

import warnings
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
    show_warnings,
    split_columns,
    written_together,
)
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure
from latentfit.cli.output import csv_option, json_option


def _fmt(a) -> str:
    import numpy as np

    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


@fit_app.command("bgmm")
def fit_bgmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
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
        None,
        help="Weight concentration prior γ₀ (default 1/k); smaller switches off more.",
        callback=finite_number,
    ),
    n_init: int = typer.Option(1, "--n-init", min=1, help="CAVI restarts; the best ELBO is kept."),
    max_iter: int = typer.Option(
        500, "--max-iter", min=1, help="Most CAVI iterations per restart."
    ),
    tol: float = typer.Option(
        1e-3, help="Stop when the lower bound changes less than this.", callback=finite_number
    ),
    reg_covar: float = reg_covar_option(),
    init: str = typer.Option("kmeans", help="kmeans, k-means++, random or random_from_data."),
    active: float = typer.Option(
        0.01,
        min=0.0,
        max=1.0,
        help="Weight above which a component counts as used.",
        callback=finite_number,
    ),
    columns: str | None = typer.Option(None, help="Comma-separated columns to use (default: all)."),
    seed: int = seed_option("Seed for the initialisation."),
    out: Path | None = output_option(None, "--out", help="Save the fitted model to this file."),
    labels: Path | None = csv_output_option(
        None, "--labels", help="CSV file of the most probable component of every row."
    ),
    plot: Path | None = plot_option("the used components' ellipses over the first two columns"),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit a Bayesian Gaussian mixture by coordinate-ascent VI; print the ELBO and components.

    The components printed are those the posterior keeps."""
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning

    from latentfit.cli.model_data import record_columns
    from latentfit.cli.output import check_format, column_names
    from latentfit.cli.tables import write_labels
    from latentfit.errors import LatentfitError
    from latentfit.vi.bgmm import BayesianGaussianMixture

    check_format(as_json, as_csv)
    check_outputs([(out, "--out"), (labels, "--labels"), (plot, "--plot")], [data], force=force)
    fmt = figure_format(plot)
    check_device(device)
    model = BayesianGaussianMixture(
        n_components=k,
        covariance_type=covariance,
        weight_concentration_prior_type=prior,
        weight_concentration_prior=concentration,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        reg_covar=reg_covar,
        init_params=init,
        random_state=seed,
        verbose=0 if quiet else 1,
        device=device,
    )
    check_settings(model)
    X = load_data(data, columns, dataset=dataset, delimiter=delimiter, header=header)
    failed = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(X)
        except (ValueError, FloatingPointError) as err:
            failed = cli_words(str(err), data_name(data, dataset), "-k")
    # recorded to tell restarts that did not converge; the rest are shown, before an error too
    show_warnings(caught, skip=(ConvergenceWarning,))
    if failed is not None:
        fail(failed)
    record_columns(model, data, split_columns(columns), delimiter, dataset, header)
    n, d = X.shape
    names = column_names(data, columns, d, model, delimiter, header)
    used = np.flatnonzero(model.weights_ > active)
    saved = None
    with written_together(
        [(out, "--out"), (labels, "--labels"), (plot, "--plot")], [data], force=force
    ):
        if out is not None:
            try:
                saved = str(model.save(out))
            except (LatentfitError, OSError) as err:
                fail(str(err))
        if labels is not None:
            write_labels(labels, model.predict(X))
        if plot is not None:
            from latentfit.plot import plot_mixture

            fig, ax = new_figure(figsize=(6, 4.5))
            plot_mixture(model, X, min_weight=active, ax=ax)
            save_figure(fig, plot, fmt)
    if as_csv:
        from latentfit.cli.output import gaussian_columns, print_csv

        print_csv(
            [
                {"component": i, "weight": float(model.weights_[i]), "used": bool(i in used)}
                | gaussian_columns(model.means_, model.covariances_, covariance, names, i)
                for i in range(k)
            ]
        )
    partial = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    result = {
        "model": "BayesianGaussianMixture",
        "n_components": k,
        "covariance_type": covariance,
        "weight_concentration_prior_type": prior,
        "n_samples": n,
        "n_features": d,
        "features": names,
        "n_iter": model.n_iter_,
        "converged": bool(model.converged_),
        "some_restarts_not_converged": partial and bool(model.converged_),
        "n_init": n_init,
        "inits_made": inits_made(model, n_init),
        "elbo": model.elbo_,
        "elbo_per_sample": model.elbo_ / n,
        "lower_bound": model.lower_bound_,
        "active_threshold": active,
        "used_components": used,
        "weights": model.weights_,
        "means": model.means_,
        "covariances": model.covariances_,
        "model_file": saved,
    }
    if as_json:
        from latentfit.cli.output import print_json

        print_json(result)
    elif not as_csv:
        _print_text(result, model)


def _print_text(r: dict, model) -> None:
    from latentfit.cli.output import format_covariances, format_table

    k, n, covariance, used = (
        r["n_components"],
        r["n_samples"],
        r["covariance_type"],
        r["used_components"],
    )
    echo = typer.echo
    echo(
        f"BayesianGaussianMixture: K={k} (max), covariance={covariance}, "
        f"prior={r['weight_concentration_prior_type']}, n={n}, d={r['n_features']}"
    )
    state = fit_state(r["converged"])
    echo(f"CAVI iterations: {r['n_iter']} ({state}); {inits_words(r)}")
    if r["some_restarts_not_converged"]:
        echo("note: some restarts did not converge")
    echo(
        f"ELBO: {r['elbo']:.6f} nats (per sample {r['elbo'] / n:.6f}); "
        f"scikit-learn's lower bound: {r['lower_bound']:.6f}"
    )
    echo(f"components used (weight > {r['active_threshold']}): {len(used)} of {k}: {used.tolist()}")
    echo(f"weights:\n{_fmt(r['weights'])}")
    rows = [str(i) for i in used]
    echo(
        "means (used components):\n"
        + format_table(r["means"][used], r["features"], rows, label="component")
    )
    cov = r["covariances"] if covariance == "tied" else r["covariances"][used]
    echo(
        f"covariances ({covariance}, used components):\n"
        + format_covariances(cov, covariance, r["features"], rows)
    )
    if r["model_file"] is not None:
        echo(f"model saved to {r['model_file']} (read it with latentfit.load)")
