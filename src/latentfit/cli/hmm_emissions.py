"""The emission parameters of an HMM (and of an HSMM, which shares its emissions): their
entries in the result, their text and their CSV cells."""

from __future__ import annotations

import typer

from latentfit.cli.hmm_posterior import posterior_cells
from latentfit.cli.hmm_report import _fmt, state_row


def emission_parameters(model, emission: str) -> dict:
    """The emission parameters, under the names of the estimator's attributes."""
    if emission == "gaussian":
        return {"means": model.means_, "covariances": model._covars_}
    if emission == "gmm":
        return {"weights": model.weights_, "means": model.means_, "covariances": model.covars_}
    if emission in ("categorical", "multinomial"):
        return {"emissionprob": model.emissionprob_}
    return {"lambdas": model.lambdas_}


def print_emissions(r: dict) -> None:
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
    elif r["emission"] == "multinomial":
        table = format_table(r["emissionprob"], names, states)
        echo(f"category probabilities (of one trial):\n{table}")
    else:
        echo(f"Poisson rates:\n{format_table(r['lambdas'], names, states)}")


def emission_cells(model, r: dict, i: int) -> dict:
    """State ``i``'s emission parameters as named CSV cells (gaussian, categorical, poisson,
    multinomial)."""
    from latentfit.cli.output import gaussian_columns

    names = r["features"]
    if r["emission"] == "gaussian":
        return gaussian_columns(model.means_, model._covars_, r["covariance_type"], names, i)
    if r["emission"] == "categorical":
        return {f"prob_{s}": float(p) for s, p in enumerate(model.emissionprob_[i])}
    if r["emission"] == "multinomial":
        return {f"prob_{n}": float(p) for n, p in zip(names, model.emissionprob_[i], strict=True)}
    return {f"rate_{n}": float(v) for n, v in zip(names, model.lambdas_[i], strict=True)}


def _csv_rows(model, r: dict) -> list[dict]:
    """One row per state (per state and mixture component for gmm emissions)."""
    import numpy as np

    from latentfit.cli.output import gaussian_columns

    rows = []
    for i in range(r["n_components"]):
        row = state_row(model, i)
        if r["emission"] != "gmm":
            rows.append(row | emission_cells(model, r, i))
            if "posterior" in r:
                rows[-1] |= posterior_cells(r, i)
            continue
        cov = np.asarray(model.covars_)[i]
        for m in range(model.n_mix):
            mix = {"mix": m, "weight": float(model.weights_[i, m])}
            mix |= gaussian_columns(model.means_[i], cov, r["covariance_type"], r["features"], m)
            rows.append(row | mix)
    return rows
