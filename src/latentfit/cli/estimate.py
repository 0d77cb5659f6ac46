"""``latentfit fit dist DATA --family gamma [--column x]``: maximum likelihood with uncertainty."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from latentfit.cli.app import fail, fit_app, load_data


def _parse_fixed(items: list[str]) -> dict:
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            fixed[name.strip()] = (
                int(value) if value.strip().lstrip("-").isdigit() else float(value)
            )
        except ValueError:
            fail(f"--fixed takes NAME=NUMBER (e.g. --fixed total_count=10), got {item!r}")
    return fixed


@fit_app.command("dist")
def fit_dist(
    data: Path = typer.Argument(..., help="CSV, .npy, .npz or Parquet file of numbers."),
    family: str = typer.Option(
        ..., "--family", "-f", help="gamma, normal, poisson, beta, weibull, mvn, dirichlet, ..."
    ),
    column: list[str] = typer.Option(
        [], "--column", "-c", help="Column(s) to fit (repeat for vector families); default all."
    ),
    fixed: list[str] = typer.Option(
        [], "--fixed", help="A known parameter, NAME=NUMBER (e.g. total_count=10); repeatable."
    ),
    cov: str = typer.Option("observed", "--cov", help="observed, expected or sandwich."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the Wald intervals."),
):
    """Fit a distribution by maximum likelihood and print a summary table with standard errors
    and Wald confidence intervals."""
    from latentfit.estimate import fit_mle, get_family

    try:
        fam = get_family(family)
    except ValueError as err:
        fail(str(err))
    if not 0 < level < 1:
        fail(f"--level must lie strictly between 0 and 1, got {level}")
    x = load_data(data, list(column) or None)
    if fam.event_dim == 0 and x.shape[1] > 1:
        fail(f"{fam.name} fits one column, but {data} has {x.shape[1]}; choose one with --column")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", RuntimeWarning)  # what latentfit warns about a fit
        try:
            fit = fit_mle(fam, x, fixed=_parse_fixed(fixed), cov_type=cov)
            table = fit.summary(level=level)
        except ValueError as err:
            fail(str(err))
    typer.echo(table)
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            typer.secho(f"warning: {w.message}", err=True, fg=typer.colors.YELLOW)
