"""``latentfit select FAMILY DATA -k 1-8``: BIC/AIC/ICL tables for every EM family."""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import check_outputs, fail, force_option, parse_range, select_app
from latentfit.cli.figures import figure_format, new_figure, save_figure
from latentfit.cli.gmm import read_data

_HELP = {
    "gmm": "Gaussian mixtures over K and covariance types.",
    "bernoulli": "Bernoulli mixtures (binary data) over K.",
    "categorical": "Latent class models (integer-coded categories) over K.",
    "multinomial": "Multinomial mixtures (count vectors, e.g. bag of words) over K.",
    "poisson": "Poisson mixtures (count vectors) over K.",
    "fa": "Factor analysis over the number of factors.",
    "ppca": "Probabilistic PCA over the latent dimension.",
}


def _run(
    family: str,
    data: Path,
    k: str,
    covariance: str,
    criterion: str,
    cv: int,
    n_init: int,
    max_iter: int,
    seed: int,
    columns: str,
    missing: str,
    plot: Path | None,
    force: bool = False,
):
    from latentfit.select import select_model

    parse_range(k)  # refuse a malformed or absurd -k before reading anything
    check_outputs([(plot, "--plot")], [data], force=force)
    fmt = figure_format(plot)
    marginalize = missing == "marginalize"
    X = read_data(data, columns, allow_nan=marginalize)
    sizes = parse_range(k, most=X.shape[0])
    kwargs = {"max_iter": max_iter}
    if family in ("fa", "ppca"):
        if marginalize:
            kwargs["missing"] = missing
    else:
        kwargs["n_init"] = n_init
        if family == "gmm":
            kwargs["missing"] = missing
        elif marginalize:
            fail(f"--missing marginalize is available for gmm, fa and ppca, not {family}")
    covs = [c for c in covariance.split(",") if c]
    bar = None
    if family == "gmm":
        n_fits = len(sizes) * len(covs)
    else:
        n_fits = len(sizes)
    from tqdm.auto import tqdm

    bar = tqdm(total=n_fits, desc=f"select {family}", leave=False)
    try:
        result = select_model(
            X,
            family=family,
            n_components=sizes,
            covariance_types=covs,
            criterion=criterion,
            cv=cv or None,
            random_state=seed,
            callback=lambda i, n, row: bar.update(1),
            **kwargs,
        )
    except ValueError as err:
        fail(str(err))
    finally:
        bar.close()
    typer.echo(result.table())
    typer.echo("")
    typer.echo(result.summary())
    if plot is not None:
        from latentfit.plot import plot_selection

        fig, ax = new_figure(figsize=(6, 4))
        plot_selection(result, ax=ax)
        save_figure(fig, plot, fmt)
    if result.best_index() is None:
        fail("every fit failed; see the errors above", code=1)


def _register(family: str) -> None:
    def command(
        data: Path = typer.Argument(..., help="CSV, .npy, .npz or Parquet file."),
        k: str = typer.Option("1-8", "-k", help="Sizes: 3, 1-8 or 2,4,8."),
        covariance: str = typer.Option(
            "full,tied,diag,spherical", help="Covariance types to sweep (gmm only)."
        ),
        criterion: str = typer.Option("bic", help="bic, aic, icl or cv_loglik (with --cv)."),
        cv: int = typer.Option(0, help="K-fold held-out log-likelihood with this many folds."),
        n_init: int = typer.Option(1, "--n-init", min=1),
        max_iter: int = typer.Option(200, "--max-iter", min=1),
        seed: int = typer.Option(0),
        columns: str = typer.Option("", help="Comma-separated columns to use."),
        missing: str = typer.Option("error", help="error or marginalize (gmm, fa, ppca)."),
        plot: Path | None = typer.Option(None, help="Write the criterion-over-K figure here."),
        force: bool = force_option(),
    ):
        _run(
            family,
            data,
            k,
            covariance,
            criterion,
            cv,
            n_init,
            max_iter,
            seed,
            columns,
            missing,
            plot,
            force,
        )

    command.__doc__ = _HELP[family]
    select_app.command(family, help=_HELP[family])(command)


for _family in _HELP:
    _register(_family)
