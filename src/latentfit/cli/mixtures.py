"""``latentfit fit mixture DATA -k K --family F`` (Bernoulli, categorical, multinomial and
Poisson mixtures) and ``latentfit fit fa|ppca DATA -k Q`` (factor models): fit and print."""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    check_settings,
    cli_words,
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
    output_option,
    seed_option,
    split_columns,
    written_together,
)
from latentfit.cli.output import csv_option, json_option

#: --family: the estimator and the name of its per-component parameter.
FAMILIES = {
    "bernoulli": ("BernoulliMixture", "means_", "probability of a 1"),
    "categorical": ("CategoricalMixture", "probs_", "category probabilities"),
    "multinomial": ("MultinomialMixture", "probs_", "category probabilities"),
    "poisson": ("PoissonMixture", "rates_", "Poisson rates"),
}


def _save(model, out: Path | None, data: Path | None, force: bool) -> str | None:
    """Save ``model`` to --out (checked again first: a file made there while the model was
    fitted is refused without --force); the path written, or None without --out."""
    if out is None:
        return None
    from latentfit.errors import LatentfitError

    with written_together([(out, "--out")], [data], force):
        try:
            return str(model.save(out))
        except (LatentfitError, OSError) as err:
            fail(str(err))


def _fit(
    model,
    data: Path | None,
    columns: str,
    dataset: str | None,
    delimiter: str,
    header: bool | None = None,
):
    """Read DATA or --dataset, fit ``model`` and name its columns (stored with --out, matched
    by name in predict/score); (X, log-likelihood, BIC, AIC, column names)."""
    from latentfit.cli.gmm import read_data
    from latentfit.cli.model_data import record_columns
    from latentfit.cli.output import column_names

    allow_nan = getattr(model, "missing", "error") == "marginalize"
    X = read_data(data, columns, allow_nan, dataset, delimiter, header)
    try:
        model.fit(X)
        ll = model.score(X) * X.shape[0]
        bic, aic = model.bic(X), model.aic(X)
    except (ValueError, FloatingPointError) as err:
        fail(cli_words(str(err), data_name(data, dataset), "-k"))
    record_columns(model, data, split_columns(columns), delimiter, dataset, header)
    return X, ll, bic, aic, column_names(data, columns, X.shape[1], model, delimiter, header)


@fit_app.command("mixture")
def fit_mixture(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    k: int = typer.Option(..., "-k", "--components", min=1, help="Number of components."),
    family: str = typer.Option(
        ...,
        "--family",
        "-f",
        help="bernoulli (binary data), categorical (integer-coded categories, a latent class "
        "model), multinomial (count vectors) or poisson (counts).",
    ),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept."),
    max_iter: int = typer.Option(100, "--max-iter", min=1, help="Most EM iterations per restart."),
    tol: float = typer.Option(
        1e-3, help="Stop when the mean log-likelihood changes less.", callback=finite_number
    ),
    init: str = typer.Option("kmeans", help="kmeans, k-means++, random or random_from_data."),
    columns: str | None = typer.Option(None, help="Comma-separated columns to use (default: all)."),
    seed: int = seed_option("Seed for the initialisation."),
    out: Path | None = output_option(None, "--out", help="Save the fitted model to this file."),
    force: bool = force_option(),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit a mixture of Bernoulli, categorical, multinomial or Poisson components by EM.

    It prints the weights, the parameters of each component, the log-likelihood and BIC/AIC."""
    import importlib

    from latentfit.cli.output import check_format

    check_format(as_json, as_csv)
    if family not in FAMILIES:
        fail(f"--family must be one of {', '.join(FAMILIES)}; got {family!r}")
    data_source(data, dataset)
    check_outputs([(out, "--out")], [data], force=force)
    check_device(device)
    name, attr, what = FAMILIES[family]
    cls = getattr(importlib.import_module("latentfit"), name)
    model = cls(
        k,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        init_params=init,
        random_state=seed,
        verbose=0 if quiet else 1,
        device=device,
    )
    check_settings(model)
    X, ll, bic, aic, names = _fit(model, data, columns, dataset, delimiter, header)
    n, d = X.shape
    result = {
        "model": name,
        "family": family,
        "n_components": k,
        "n_samples": n,
        "n_features": d,
        "features": names,
        "n_iter": model.n_iter_,
        "converged": bool(model.converged_),
        "n_init": n_init,
        "inits_made": inits_made(model, n_init),
        "log_likelihood": ll,
        "log_likelihood_per_sample": ll / n,
        "bic": bic,
        "aic": aic,
        "weights": model.weights_,
        attr.rstrip("_"): getattr(model, attr),
        "model_file": _save(model, out, data, force),
    }
    if as_json:
        from latentfit.cli.output import print_json

        return print_json(result)
    params = getattr(model, attr)  # (k, d), or (k, d, c) for categorical
    if as_csv:
        from latentfit.cli.output import print_csv

        rows = []
        for i in range(k):
            row = {"component": i, "weight": float(model.weights_[i])}
            if family == "categorical":
                for j, col in enumerate(names):
                    for c in range(int(model.n_categories_[j])):
                        row[f"prob_{col}_{c}"] = float(params[i, j, c])
            else:
                row |= {
                    f"{attr.rstrip('_')}_{c}": float(v)
                    for c, v in zip(names, params[i], strict=True)
                }
            rows.append(row)
        return print_csv(rows)
    _print_text(result, params, what, getattr(model, "n_categories_", None))


def _print_text(r: dict, params, what: str, n_categories=None) -> None:
    import numpy as np

    from latentfit.cli.output import format_table

    echo, n, ll = typer.echo, r["n_samples"], r["log_likelihood"]
    echo(f"{r['model']}: K={r['n_components']}, n={n}, d={r['n_features']}")
    state = fit_state(r["converged"])
    echo(f"EM iterations: {r['n_iter']} ({state}); {inits_words(r)}")
    echo(f"log-likelihood: {ll:.6f} (per sample {ll / n:.6f})")
    echo(f"BIC: {r['bic']:.4f}   AIC: {r['aic']:.4f}")
    echo(
        f"weights:\n{format_table(np.asarray(r['weights'])[:, None], ['weight'], label='component')}"
    )
    params = np.asarray(params)
    if params.ndim == 3:  # categorical: one table per column, a row per component
        for j, col in enumerate(r["features"]):
            c = int(n_categories[j])
            cats = [str(v) for v in range(c)]
            echo(f"{what} of {col}:\n{format_table(params[:, j, :c], cats, label='component')}")
    else:
        echo(f"{what}:\n{format_table(params, r['features'], label='component')}")
    if r["model_file"] is not None:
        echo(f"model saved to {r['model_file']} (read it with latentfit.load)")


def _register_factor(kind: str, cls_name: str, doc: str) -> None:
    def command(
        data: Path | None = data_argument(),
        dataset: str | None = dataset_option(),
        delimiter: str = delimiter_option(),
        header: bool | None = header_option(),
        k: int = typer.Option(
            ...,
            "-k",
            "--components",
            min=1,
            help="Number of components: the factors (latent dimensions).",
        ),
        max_iter: int = typer.Option(1000, "--max-iter", min=1, help="Most EM iterations."),
        tol: float = typer.Option(
            1e-6, help="Stop when the mean log-likelihood changes less.", callback=finite_number
        ),
        init: str = typer.Option("pca", help="pca or random: where EM starts."),
        rotation: str = typer.Option(
            "none",
            help="none, varimax or quartimax: rotate the fitted loadings (the likelihood is "
            "unchanged) so that each factor loads on few features.",
        ),
        missing: str = typer.Option("error", help="error, or marginalize to fit rows with NaNs."),
        columns: str | None = typer.Option(
            None, help="Comma-separated columns to use (default: all)."
        ),
        seed: int = seed_option("Seed for a random start."),
        out: Path | None = output_option(None, "--out", help="Save the fitted model to this file."),
        force: bool = force_option(),
        quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
        device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
        as_json: bool = json_option(),
        as_csv: bool = csv_option(),
    ):
        import importlib

        import numpy as np

        from latentfit.cli.output import check_format

        check_format(as_json, as_csv)
        data_source(data, dataset)
        check_outputs([(out, "--out")], [data], force=force)
        check_device(device)
        if rotation not in ("none", "varimax", "quartimax"):
            fail(f"--rotation takes none, varimax or quartimax, got {rotation!r}")
        cls = getattr(importlib.import_module("latentfit"), cls_name)
        model = cls(
            k,
            max_iter=max_iter,
            tol=tol,
            init=init,
            rotation=None if rotation == "none" else rotation,
            missing=missing,
            random_state=seed,
            verbose=0 if quiet else 1,
            device=device,
        )
        check_settings(model)
        X, ll, bic, aic, names = _fit(model, data, columns, dataset, delimiter, header)
        n, d = X.shape
        noise = np.broadcast_to(np.asarray(model.noise_variance_, dtype=float), (d,))
        result = {
            "model": cls_name,
            "n_components": k,
            "n_samples": n,
            "n_features": d,
            "features": names,
            "rotation": rotation,
            "n_iter": model.n_iter_,
            "converged": bool(model.converged_),
            "log_likelihood": ll,
            "log_likelihood_per_sample": ll / n,
            "bic": bic,
            "aic": aic,
            "mean": model.mean_,
            "components": model.components_,
            "noise_variance": model.noise_variance_,
            "model_file": _save(model, out, data, force),
        }
        if as_json:
            from latentfit.cli.output import print_json

            return print_json(result)
        if as_csv:  # one row per feature: its mean, noise variance and loadings
            from latentfit.cli.output import print_csv

            return print_csv(
                [
                    {"feature": col, "mean": float(model.mean_[j]), "noise_variance": noise[j]}
                    | {f"loading_{q}": float(model.components_[q, j]) for q in range(k)}
                    for j, col in enumerate(names)
                ]
            )
        from latentfit.cli.output import format_table

        echo = typer.echo
        turned = "" if rotation == "none" else f", loadings rotated by {rotation}"
        echo(f"{cls_name}: {k} factor(s), n={n}, d={d}{turned}")
        state = fit_state(model.converged_)
        echo(f"EM iterations: {model.n_iter_} ({state})")
        echo(f"log-likelihood: {ll:.6f} (per sample {ll / n:.6f})")
        echo(f"BIC: {bic:.4f}   AIC: {aic:.4f}")
        echo(f"mean:\n{format_table(model.mean_, names, ['mean'])}")
        factors = [f"factor {q}" for q in range(k)]
        echo(f"loadings (components_):\n{format_table(model.components_, names, factors)}")
        echo(f"noise variance:\n{format_table(noise, names, ['variance'])}")
        if result["model_file"] is not None:
            echo(f"model saved to {result['model_file']} (read it with latentfit.load)")

    command.__doc__ = doc
    fit_app.command(kind, help=doc)(command)


_register_factor(
    "fa",
    "FactorAnalysis",
    "Fit factor analysis by EM; print the mean, loadings, noise variance per feature, "
    "log-likelihood and BIC/AIC.",
)
_register_factor(
    "ppca",
    "PPCA",
    "Fit probabilistic PCA by EM; print the mean, loadings, the one noise variance, "
    "log-likelihood and BIC/AIC.",
)
