"""``latentfit fit dist DATA --family gamma [--column x]``: maximum likelihood with uncertainty."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from latentfit.cli.app import (
    data_argument,
    data_source,
    dataset_option,
    delimiter_option,
    fail,
    fit_app,
    load_data,
)
from latentfit.cli.output import csv_option, json_option


def _parse_fixed(items: list[str]) -> dict:
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--fixed takes NAME=NUMBER (e.g. --fixed total_count=10), got {item!r}")
        try:
            fixed[name.strip()] = (
                int(value) if value.strip().lstrip("-").isdigit() else float(value)
            )
        except ValueError:
            fail(f"--fixed takes NAME=NUMBER (e.g. --fixed total_count=10), got {item!r}")
    return fixed


def _check_finite(fit, data: Path) -> None:
    """A non-finite estimate (e.g. a scale of inf from values near 1e300, whose squares
    overflow float64) is an error, not a result to print."""
    import torch

    from latentfit.errors import DataError

    bad = [k for k, v in fit.params.items() if not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(f"{k} = {fit.params[k].tolist()}" for k in bad)
        raise DataError(
            f"the {fit.family.name} fit of {data} overflowed: {shown} is not finite. The data "
            "are too large (or too spread) for float64 arithmetic; rescale them (e.g. divide "
            "by a power of ten) and fit again"
        )


def _parse_prior(items: list[str]) -> dict | None:
    """``--prior rate=gamma:2,0.5`` -> {"rate": torch.distributions.Gamma(2., 0.5)}."""
    import torch
    import torch.distributions as D

    if not items:
        return None
    known = {n.lower(): getattr(D, n) for n in dir(D) if isinstance(getattr(D, n), type)}
    prior = {}
    for item in items:
        name, sep, spec = item.partition("=")
        dist, _, args = spec.partition(":")
        cls = known.get(dist.strip().lower())
        try:
            if not sep or cls is None or not issubclass(cls, D.Distribution):
                cls = None
            values = [torch.tensor(float(a), dtype=torch.float64) for a in args.split(",") if a]
            if cls is not None:
                prior[name.strip()] = cls(*values)
        except (ValueError, TypeError):
            cls = None
        if cls is None:
            fail(
                "--prior takes NAME=DISTRIBUTION:ARG,ARG with a torch.distributions name, e.g. "
                f"--prior rate=gamma:2,0.5 or --prior loc=normal:0,10; got {item!r}"
            )
    return prior


def _posterior(
    fit, sampler: str, chains: int, draws: int, warmup: int, seed: int, compile_: bool = False
):
    """The NUTS draws of the posterior and its table (a pandas frame) with the diagnostics."""
    if sampler != "nuts":
        fail(f"--sample takes 'nuts' (the sampler), got {sampler!r}")
    if chains < 1 or draws < 1 or warmup < 0:
        fail(
            f"--chains and --draws must be at least 1 and --warmup >= 0; got {chains}, {draws}, {warmup}"
        )
    res = fit.sample_posterior(
        num_chains=chains,
        num_warmup=warmup,
        num_draws=draws,
        generator=seed,
        progress_bar=False,
        compile=compile_,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = res.summary()
    return table, res.diagnostics()


def _posterior_text(fit, table, diagnostics, chains, draws, warmup, seed) -> str:
    head = (
        f"NUTS posterior: {fit.family.name}, {chains} chains x {draws} draws "
        f"(warm-up {warmup}), seed {seed}"
    )
    return f"{head}\n{table.to_string()}\n{diagnostics}"


def _rows(fit, level: float) -> list[dict]:
    """One row per reported coordinate: its estimate, standard error and Wald interval."""
    est, se, ci = fit.estimates, fit.std_errors(), fit.conf_int(level)
    return [
        {
            "parameter": name,
            "estimate": float(est[i]),
            "std_error": float(se[i]),
            "ci_lower": float(ci[i, 0]),
            "ci_upper": float(ci[i, 1]),
        }
        for i, name in enumerate(fit.param_names)
    ]


@fit_app.command("dist")
def fit_dist(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
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
    prior: list[str] = typer.Option(
        [], "--prior", help="A prior NAME=DIST:ARGS (e.g. rate=gamma:2,0.5); repeatable: MAP fit."
    ),
    sample: str = typer.Option(
        None, "--sample", help="'nuts': sample the posterior (needs --prior) and print its table."
    ),
    chains: int = typer.Option(4, "--chains", help="Chains for --sample (batched)."),
    draws: int = typer.Option(1000, "--draws", help="Draws per chain for --sample."),
    warmup: int = typer.Option(1000, "--warmup", help="Warm-up iterations for --sample."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler."),
    compile_: bool = typer.Option(
        False,
        "--compile/--no-compile",
        help="Run the sampler's leapfrog step and tree bookkeeping compiled: faster steps. "
        "The first time a model is seen they compile in a background process (25-35 s) while "
        "the chains sample; later runs load them from disk in milliseconds.",
    ),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit a distribution by maximum likelihood and print a summary table with standard errors
    and Wald confidence intervals."""
    from latentfit.cli.output import check_format
    from latentfit.estimate import fit_map, fit_mle, get_family

    check_format(as_json, as_csv)
    try:
        fam = get_family(family)
    except ValueError as err:
        fail(str(err))
    if not 0 < level < 1:
        fail(f"--level must lie strictly between 0 and 1, got {level}")
    name = data_source(data, dataset)
    x = load_data(data, list(column), dataset=dataset, delimiter=delimiter)
    if fam.event_dim == 0 and x.shape[1] > 1:
        fail(f"{fam.name} fits one column, but {name} has {x.shape[1]}; choose one with --column")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", RuntimeWarning)  # what latentfit warns about a fit
        given = _parse_fixed(fixed)
        takes = set(fam.fixed_names or ()) if fam.fixed_names is not None else None
        unknown = [k for k in given if takes is not None and k not in takes]
        if unknown:
            fail(
                f"--fixed {', '.join(unknown)}: {fam.name} has no such parameter; its parameters "
                f"are {', '.join(fam.params + fam.required_fixed)}"
            )
        try:
            priors = _parse_prior(prior)
            if compile_ and sample is None:
                fail("--compile compiles the sampler of --sample nuts; add --sample nuts")
            if sample is not None and priors is None:
                fail("--sample needs a prior for every parameter: add --prior NAME=DIST:ARGS")
            if priors is None:
                fit = fit_mle(fam, x, fixed=given, cov_type=cov)
            else:
                fit = fit_map(fam, x, priors, fixed=given)
            _check_finite(fit, name)
            table = fit.summary(level=level)
            rows = _rows(fit, level)
            posterior = None
            if sample is not None:
                posterior = _posterior(fit, sample, chains, draws, warmup, seed, compile_)
                text = _posterior_text(fit, *posterior, chains, draws, warmup, seed)
                table += "\n\n" + text
        except ValueError as err:
            fail(str(err))
        except TypeError:
            if not given:
                raise
            # torch rejected a keyword: a fixed name the family's distribution does not take
            fail(
                f"--fixed {', '.join(given)}: {fam.name} has no such parameter; its parameters "
                f"are {', '.join(fam.params + fam.required_fixed)}"
            )
    if as_json:
        from latentfit.cli.output import print_json

        print_json(
            {
                "family": fam.name,
                "method": fit.method,
                "n_obs": fit.n_obs,
                "n_params": fit.n_params,
                "log_likelihood": fit.log_likelihood,
                "log_prior": fit.log_prior,
                "aic": fit.aic,
                "bic": fit.bic,
                "converged": bool(fit.converged),
                "n_iter": fit.n_iter,
                "solver": fit.solver,
                "cov_type": fit.cov_type,
                "level": level,
                "fixed": given,
                "parameters": rows,
                "posterior": None
                if posterior is None
                else {
                    "sampler": sample,
                    "chains": chains,
                    "draws": draws,
                    "warmup": warmup,
                    "seed": seed,
                    "summary": posterior[0].to_dict(orient="index"),
                    "diagnostics": posterior[1],
                },
            }
        )
    elif as_csv:
        from latentfit.cli.output import print_csv

        print_csv(rows)
    else:
        typer.echo(table)
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            typer.secho(f"warning: {w.message}", err=True, fg=typer.colors.YELLOW)
