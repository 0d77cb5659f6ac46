"""``fit hmm --variational``: the prior and posterior hyperparameters of a variational HMM,
their entries in the result, their text and their CSV cells."""

from __future__ import annotations

import typer

#: The hyperparameters of a variational HMM, each an estimator attribute ``<name>_prior_`` and
#: ``<name>_posterior_``.
HYPERPARAMETERS = ("startprob", "transmat", "means", "beta", "dof", "scale", "emissionprob")


# ---------------------------------------------------------------------- fit hmm --variational
def hyperparameters(model) -> dict:
    """The Dirichlet (and Normal-Wishart) hyperparameters of a variational HMM:
    ``{"prior": {name: value}, "posterior": {name: value}}`` under the names of the estimator's
    ``<name>_prior_`` / ``<name>_posterior_`` attributes."""
    names = [n for n in HYPERPARAMETERS if hasattr(model, f"{n}_posterior_")]
    return {
        "prior": {n: getattr(model, f"{n}_prior_") for n in names},
        "posterior": {n: getattr(model, f"{n}_posterior_") for n in names},
    }


def _posterior_columns(r: dict) -> tuple[list[str], list]:
    """The per-state posterior hyperparameters as (names, (k,) columns): the Dirichlet counts of
    the start and of every transition, then β and ν (gaussian) or the emission counts."""
    import numpy as np

    post, k = r["posterior"], r["n_components"]
    names = ["startprob_posterior"] + [f"transmat_posterior_{j}" for j in range(k)]
    cols = [post["startprob"], *np.asarray(post["transmat"]).T]
    if "emissionprob" in post:
        counts = np.asarray(post["emissionprob"])
        names += [f"emissionprob_posterior_{s}" for s in range(counts.shape[1])]
        cols += list(counts.T)
    else:  # a tied model has one ν for every state
        names += ["beta_posterior", "dof_posterior"]
        cols += [post["beta"], np.broadcast_to(post["dof"], (k,))]
    return names, cols


def print_posterior(r: dict) -> None:
    """The posterior hyperparameters of a variational fit, one row per state."""
    import numpy as np

    from latentfit.cli.output import format_table

    names, cols = _posterior_columns(r)
    short = [
        n.replace("startprob_posterior", "start")
        .replace("transmat_posterior_", "to ")
        .replace("emissionprob_posterior_", "symbol ")
        .replace("_posterior", "")
        for n in names
    ]
    states = [f"state {i}" for i in range(r["n_components"])]
    what = "counts" if "emissionprob" in r["posterior"] else "counts; beta, dof: Normal-Wishart"
    typer.echo(f"posterior hyperparameters (Dirichlet {what}):")
    typer.echo(format_table(np.column_stack(cols), short, states))
    if "scale" in r["posterior"]:
        typer.echo("(posterior means: the means above; Wishart scales: covariances x dof)")


def posterior_cells(r: dict, i: int) -> dict:
    """State ``i``'s posterior hyperparameters as named CSV cells."""
    names, cols = _posterior_columns(r)
    return {n: float(c[i]) for n, c in zip(names, cols, strict=True)}
