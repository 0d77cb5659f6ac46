"""``latentfit select FAMILY DATA -k 1-8``: BIC/AIC/ICL tables for every EM family, and
``latentfit select hmm DATA -k 1-6 [--lengths F]`` for the number of hidden states.

Every command prints the table for a person, or with ``--json`` / ``--csv`` the same numbers
for a program (:meth:`latentfit.select.SelectionResult.to_dict`)."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    cli_words,
    data_argument,
    data_name,
    data_source,
    dataset_option,
    delimiter_option,
    fail,
    finite_number,
    force_option,
    header_option,
    load_data,
    output_option,
    parse_range,
    seed_option,
    select_app,
    written_together,
)
from latentfit.cli.figures import figure_format, new_figure, save_figure
from latentfit.cli.gmm import read_data
from latentfit.cli.hmm_options import SSM_N_ITER, device_option
from latentfit.cli.output import check_format, csv_option, json_option, print_json
from latentfit.cli.sequences import duration_option, max_duration_option, order_option

_CSV_HELP = "Print the table as CSV, one row per candidate (the same numbers as the text)."

#: The families of ``select`` that take ``--missing marginalize``.
MARGINALIZING = ("gmm", "fa", "ppca")
_HELP = {
    "gmm": "Gaussian mixtures over K and covariance types.",
    "bernoulli": "Bernoulli mixtures (binary data) over K.",
    "categorical": "Latent class models (integer-coded categories) over K.",
    "multinomial": "Multinomial mixtures (count vectors, e.g. bag of words) over K.",
    "poisson": "Poisson mixtures (count vectors) over K.",
    "fa": "Factor analysis over the number of factors.",
    "ppca": "Probabilistic PCA over the latent dimension.",
}

#: ``select hmm --model M --emission E``: the public latentfit class of each pair. The classes
#: are looked up by name when the command runs, so a model kind that this installation lacks
#: is a clear error, and one that arrives needs only its line here.
SEQUENCE_MODELS = {
    "hmm": {
        "gaussian": "GaussianHMM",
        "gmm": "GMMHMM",
        "poisson": "PoissonHMM",
        "categorical": "CategoricalHMM",
        "multinomial": "MultinomialHMM",
    },
    "hsmm": {
        "gaussian": "GaussianHSMM",
        "poisson": "PoissonHSMM",
        "categorical": "CategoricalHSMM",
    },
    "ssm": {"gaussian": "LinearGaussianSSM"},
    "arhmm": {"gaussian": "AutoregressiveHMM"},
    "vhmm": {"gaussian": "VariationalGaussianHMM", "categorical": "VariationalCategoricalHMM"},
}
#: The covariance types ``select gmm`` sweeps (those of :class:`latentfit.GaussianMixture`).
GMM_COVARIANCES = ("full", "tied", "diag", "spherical")
#: Models whose fits also carry a variational lower bound, printed as an extra column.
BOUND_MODELS = ("vhmm",)
#: The covariance types ``select hmm`` sweeps when ``--covariance`` is not given.
SEQUENCE_COVARIANCES = {"hmm": "full,tied,diag,spherical", "hsmm": "full,tied,diag,spherical",
                        "ssm": "full,diag", "arhmm": "full",
                        "vhmm": "full,tied,diag,spherical"}  # fmt: skip


def _csv_cell(value) -> str:
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""  # NA: read back as NaN by pandas
    if isinstance(value, float):
        return repr(value)  # every digit: the same number as to_dict()
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def print_csv(rows: list[dict]) -> None:
    """One CSV row per candidate, the columns of :data:`latentfit.select.COLUMNS` and any
    more that the rows carry (``lower_bound``)."""
    import csv

    from latentfit.select import COLUMNS

    columns = list(COLUMNS) + [c for c in rows[0] if c not in COLUMNS] if rows else COLUMNS
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    sys.stdout.flush()


def _bound_lines(result, bounds: list) -> list[str]:
    """The lower bound of every candidate, for the text after the summary."""
    width = max([22] + [len(r["label"]) + 2 for r in result.rows])
    lines = ["variational lower bound (ELBO, nats; not a criterion here, higher fits better):"]
    for r, b in zip(result.rows, bounds, strict=True):
        lines.append(f"{r['label']:<{width}}" + ("NA" if b is None else f"{b:>12.2f}"))
    return lines


def _show_fit_warnings(result) -> None:
    """Each warning of the sweep's fits once, naming the fits that gave it, as every command
    shows its warnings; not those the table says in its words: a fit "not converged" and a
    degenerate component (NA)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from latentfit.cli.hmm_report import BEST_NOT_CONVERGED
    from latentfit.errors import DegenerateComponentWarning

    n = len(result.rows)
    for category, text, labels in result.fit_warnings:
        if issubclass(category, DegenerateComponentWarning) or (
            issubclass(category, ConvergenceWarning) and re.match(BEST_NOT_CONVERGED, text)
        ):
            continue
        fits = (
            "every fit" if len(labels) == n else f"{len(labels)} of {n} fits: " + ", ".join(labels)
        )
        warnings.showwarning(category(f"{text} (in {fits})"), category, "", 0)


def _sweep(
    X,
    *,
    lengths,
    family,
    sizes: list[int],
    covs: list[str] | None,
    criterion: str,
    cv: int,
    seed: int,
    kwargs: dict,
    plot: Path | None,
    fmt: str | None,
    as_json: bool,
    as_csv: bool,
    desc: str,
    data: str,
    inputs: list,
    force: bool,
    bound: bool = False,
    quiet: bool = False,
):
    """Run the sweep with a progress bar (none with ``quiet``) and print the result as text, JSON or CSV; with
    ``bound``, each fit's variational lower bound as one more column (``lower_bound``).
    Errors name ``data`` (see :func:`~latentfit.cli.app.data_name`); ``--plot`` is checked
    again against ``inputs`` (and ``force``) just before it is written."""
    from tqdm.auto import tqdm

    from latentfit._interrupt import stoppable
    from latentfit.select import select_model

    n_fits = len(sizes) * (len(covs) if covs else 1)
    bar = tqdm(total=n_fits, desc=desc, leave=False, disable=quiet)
    try:
        # Ctrl-C stops the running fit and the sweep: the table is of the fits before it
        with stoppable("EM iteration", "the fits before it (this one shown stopped)"):
            result = select_model(
                X,
                lengths,
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
        bar.close()  # before the message, so that the bar does not overwrite it
        fail(cli_words(str(err), data, "-k"))
    finally:
        bar.close()
    for row in result.rows:  # a failed fit's error, printed in the table, in the same words
        for key in ("error", "cv_error"):
            if row.get(key):
                row[key] = cli_words(row[key], data, "-k")
    doc = result.to_dict()
    if bound:
        bounds = [None if m is None else float(m.lower_bound_) for m in result.models]
        for row, b in zip(doc["rows"], bounds, strict=True):
            row["lower_bound"] = b
    if plot is not None:  # before the result: printed, it says the command succeeded
        from latentfit.plot import plot_selection

        fig, ax = new_figure(figsize=(6, 4))
        plot_selection(result, ax=ax)
        with written_together([(plot, "--plot")], inputs, force):
            save_figure(fig, plot, fmt)
    if as_json:
        print_json(doc)
    elif as_csv:
        print_csv(doc["rows"])
    else:
        typer.echo(result.table())
        typer.echo("")
        typer.echo(result.summary())
        if bound:
            typer.echo("\n".join(_bound_lines(result, bounds)))
    _show_fit_warnings(result)
    if result.best_index() is None:
        import math

        fitted = [r for r in result.rows if not r.get("error") and math.isfinite(r["loglik"])]
        if fitted:  # the fits stand; only the criterion is NA (held-out folds that failed)
            fail(
                f"no fit has a {criterion} score (NA for every size: see the errors above); "
                "the fits themselves succeeded: rank them by another --criterion, or fewer "
                "--cv folds"
            )
        fail("every fit failed; see the errors above")


def _covariances(text: str, known: tuple[str, ...] | list[str], what: str = "") -> list[str]:
    """The covariance types of ``--covariance``, each one of ``known`` and named once, refused
    before any data are read (an unknown name would fail every fit of the sweep)."""
    covs = [c.strip() for c in text.split(",")]
    if not any(covs):
        fail(f"--covariance names no covariance type ({text!r}); give e.g. full,diag")
    for c in covs:
        if not c:
            fail(f"--covariance {text!r} holds an empty name; give e.g. full,diag")
        if c not in known:
            fail(f"--covariance {c!r}: {what or 'gmm'} sweeps {', '.join(known)}; got {text!r}")
    twice = sorted({c for c in covs if covs.count(c) > 1})
    if twice:
        fail(f"--covariance {text!r} names {', '.join(twice)} more than once; name each once")
    return covs


#: ``--criterion``'s values: the criteria of :func:`latentfit.select.select_model`.
CRITERIA = ("bic", "aic", "icl", "heldout", "cv_loglik")


def _check_criterion(criterion: str, cv: int) -> None:
    """Refuse a bad ``--criterion``/``--cv`` pair before any data are read."""
    if criterion not in CRITERIA:
        fail(f"--criterion must be one of bic, aic, icl or heldout (with --cv); got {criterion!r}")
    if cv < 0 or cv == 1:
        fail(f"--cv is the number of folds, at least 2 (0: no held-out score); got {cv}")
    if criterion in ("heldout", "cv_loglik") and cv == 0:
        fail(
            f"--criterion {criterion} needs cv folds to rank by held-out log-likelihood: add "
            "--cv N, the number of folds (e.g. --cv 5)"
        )


def _run(
    family: str,
    data: Path,
    k: str,
    covariance: str | None,
    criterion: str,
    cv: int,
    n_init: int,
    max_iter: int,
    seed: int,
    columns: str,
    missing: str,
    plot: Path | None,
    force: bool = False,
    as_json: bool = False,
    as_csv: bool = False,
    dataset: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    quiet: bool = False,
    device: str = "cpu",
):
    check_format(as_json, as_csv)
    parse_range(k)  # refuse a malformed or absurd -k before reading anything
    _check_criterion(criterion, cv)
    check_device(device)
    if family != "gmm" and covariance is not None:
        fail(f"--covariance: select {family} has no covariance types to sweep; drop it")
    covs = (
        _covariances(covariance or ",".join(GMM_COVARIANCES), GMM_COVARIANCES)
        if family == "gmm"
        else None
    )
    if missing not in ("error", "marginalize"):
        fail(f"--missing must be error or marginalize; got {missing!r}")
    check_outputs([(plot, "--plot")], [data], force=force)
    fmt = figure_format(plot)
    marginalize = missing == "marginalize"
    advice = None
    if family not in MARGINALIZING:  # --missing marginalize is refused below
        advice = (
            "use latentfit "
            + ", ".join(f"select {f}" for f in MARGINALIZING[:-1])
            + f" or select {MARGINALIZING[-1]} with --missing marginalize ({family} mixtures "
            "take no missing values)"
        )
    X = read_data(data, columns, marginalize, dataset, delimiter, header, advice)
    sizes = parse_range(k, most=X.shape[0])
    kwargs = {"max_iter": max_iter, "device": device}
    if family in ("fa", "ppca"):
        if marginalize:
            kwargs["missing"] = missing
    else:
        kwargs["n_init"] = n_init
        if family == "gmm":
            kwargs["missing"] = missing
        elif marginalize:
            fail(
                f"--missing marginalize is available for {', '.join(MARGINALIZING[:-1])} and "
                f"{MARGINALIZING[-1]}, not {family}"
            )
    _sweep(
        X,
        lengths=None,
        family=family,
        sizes=sizes,
        covs=covs,
        criterion=criterion,
        cv=cv,
        seed=seed,
        kwargs=kwargs,
        plot=plot,
        fmt=fmt,
        as_json=as_json,
        as_csv=as_csv,
        desc=f"select {family}",
        data=data_name(data, dataset),
        inputs=[data],
        force=force,
        quiet=quiet,
    )


def _register(family: str) -> None:
    def command(
        data: Path | None = data_argument(),
        dataset: str | None = dataset_option(),
        delimiter: str = delimiter_option(),
        header: bool | None = header_option(),
        k: str = typer.Option(
            "1-8",
            "-k",
            help="Numbers of components (factors for fa, latent dimensions for ppca) to try: "
            "3, 1-8 or 2,4,8.",
        ),
        covariance: str | None = typer.Option(
            None,
            help="Covariance types to sweep, for gmm only (default: full,tied,diag,spherical).",
            show_default=False,
        ),
        criterion: str = typer.Option(
            "bic", help="bic, aic, icl or heldout (= cv_loglik, with --cv)."
        ),
        cv: int = typer.Option(0, help="K-fold held-out log-likelihood with this many folds."),
        n_init: int = typer.Option(
            1, "--n-init", min=1, help="EM restarts per fit; the best is kept."
        ),
        max_iter: int = typer.Option(
            200, "--max-iter", min=1, help="Most EM iterations per restart."
        ),
        seed: int = seed_option("Seed for the initialisations and the folds."),
        columns: str | None = typer.Option(None, help="Comma-separated columns to use."),
        missing: str = typer.Option("error", help="error or marginalize (gmm, fa, ppca)."),
        plot: Path | None = output_option(
            None, "--plot", help="Write the criterion-over-K figure here."
        ),
        force: bool = force_option(),
        as_json: bool = json_option(),
        as_csv: bool = csv_option(_CSV_HELP),
        quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
        device: str = device_option(),
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
            as_json,
            as_csv,
            dataset,
            delimiter,
            header,
            quiet,
            device,
        )

    command.__doc__ = _HELP[family]
    select_app.command(family, help=_HELP[family])(command)


for _family in _HELP:
    _register(_family)


def _sequence_class(model: str, emission: str):
    """The latentfit class for ``--model``/``--emission``, or a clear error."""
    import latentfit

    if model not in SEQUENCE_MODELS:
        fail(f"--model must be one of {', '.join(SEQUENCE_MODELS)}; got {model!r}")
    names = SEQUENCE_MODELS[model]
    if emission not in names:
        fail(f"--model {model} takes --emission {' or '.join(names)}; got {emission!r}")
    cls = getattr(latentfit, names[emission], None)
    if cls is None:
        fail(
            f"--model {model} --emission {emission} needs latentfit.{names[emission]}, which "
            f"this installation of latentfit {latentfit.__version__} does not have; "
            "use --model hmm"
        )
    return cls


def _constructor_kwargs(cls, wanted: dict) -> dict:
    """The settings ``cls`` takes (an HMM has ``n_iter``, a model with ``max_iter`` gets the
    same number under that name)."""
    takes = inspect.signature(cls).parameters
    if "n_iter" not in takes and "max_iter" in takes and "n_iter" in wanted:
        wanted = {**wanted, "max_iter": wanted["n_iter"]}
    return {key: v for key, v in wanted.items() if key in takes}


@select_app.command("hmm")
def select_hmm(
    data: Path | None = data_argument(
        "Data file (.csv, .tsv, .txt, .npy, .npz or Parquet), one row per step. Leave it out "
        "to use --dataset."
    ),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    k: str | None = typer.Option(
        None,
        "-k",
        help="Numbers of hidden states: 3, 1-6 or 2,4,8 (default: 1-6; 2-6 for --model hsmm).",
        show_default=False,
    ),
    lengths: Path | None = typer.Option(
        None,
        "--lengths",
        help="Text file of sequence lengths (rows per sequence, in order); default: one sequence.",
    ),
    emission: str = typer.Option(
        "gaussian", help="gaussian, gmm, poisson, categorical or multinomial (rows of counts)."
    ),
    model: str = typer.Option(
        "hmm",
        help="hmm; hsmm (semi-Markov), arhmm (autoregressive), ssm (linear-Gaussian) or vhmm "
        "(variational Bayesian HMM, gaussian or categorical: its lower bound is printed too) "
        "where latentfit has them.",
    ),
    duration: str = duration_option(),
    max_duration: int | None = max_duration_option(),
    order: int | None = order_option(None),
    covariance: str | None = typer.Option(
        None,
        help="Covariance types to sweep (gaussian and gmm emissions; default: "
        "full,tied,diag,spherical; for --model ssm, of the observation noise: full,diag).",
        show_default=False,
    ),
    n_mix: int = typer.Option(2, "--n-mix", min=1, help="Mixture components per state (gmm)."),
    criterion: str = typer.Option("bic", help="bic, aic, icl or heldout (with --cv)."),
    cv: int = typer.Option(
        0,
        help="Held-out log-likelihood over N folds of whole sequences (fewer sequences than N: "
        "each is cut into N contiguous blocks). 0: not computed.",
    ),
    n_init: int = typer.Option(1, "--n-init", min=1, help="EM restarts per fit; the best is kept."),
    n_iter: int | None = typer.Option(
        None,
        "--n-iter",
        "--max-iter",
        min=1,
        help="Most Baum-Welch (EM) iterations (n_iter); default 100, for --model ssm 2000 (its "
        "EM creeps: it stops by Aitken's estimate of the gain to come, as 'fit ssm').",
    ),
    tol: float = typer.Option(
        1e-2,
        help="Stop when the log-likelihood gains less than this (--model ssm: is estimated "
        "to gain less, as 'fit ssm').",
        callback=finite_number,
    ),
    seed: int = seed_option("Seed for the initialisations and the folds."),
    columns: str | None = typer.Option(None, help="Comma-separated columns to use (default: all)."),
    plot: Path | None = output_option(
        None, "--plot", help="Write the criterion-over-K figure here."
    ),
    force: bool = force_option(),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(_CSV_HELP),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    device: str = device_option(),
):
    """Hidden Markov models over the number of states K, by BIC, AIC, ICL or held-out score.

    The held-out log-likelihood is taken over whole sequences."""
    import numpy as np

    from latentfit.cli.hmm_inputs import read_lengths
    from latentfit.cli.hmm_options import check_choice
    from latentfit.cli.sequences import DURATIONS, check_max_duration

    check_format(as_json, as_csv)
    if k is None:  # a semi-Markov model has no 1-state form (its transition diagonal is 0)
        k = "2-6" if model == "hsmm" else "1-6"
    sizes = parse_range(k)  # refuse a malformed or absurd -k before reading anything
    if model == "hsmm" and min(sizes) < 2:
        fail(
            f"-k {k}: a semi-Markov model needs at least 2 states (a segment is always "
            "followed by one of another state); start the sizes at 2, e.g. -k 2-6"
        )
    _check_criterion(criterion, cv)
    check_device(device)
    cls = _sequence_class(model, emission)
    takes_cov = "covariance_type" in inspect.signature(cls).parameters
    known = SEQUENCE_COVARIANCES[model].split(",")
    covs = None
    if takes_cov:
        covs = _covariances(covariance or SEQUENCE_COVARIANCES[model], known, f"--model {model}")
    elif covariance is not None:
        fail(f"--covariance: --model {model} --emission {emission} has no covariance; drop it")
    check_choice("--duration", duration, tuple(DURATIONS))
    if model != "hsmm" and (duration != "poisson" or max_duration is not None):
        fail("--duration and --max-duration are settings of --model hsmm; drop them")
    if model != "arhmm" and order is not None:
        fail("--order is a setting of --model arhmm; drop it")
    check_outputs([(plot, "--plot")], [data, lengths], force=force)
    fmt = figure_format(plot)
    name = data_source(data, dataset)
    # the state-space model takes a NaN as a missing value (as `fit ssm` does); the others
    # read complete rows, and this command has no --missing to say otherwise
    X = load_data(
        data,
        columns,
        dataset=dataset,
        delimiter=delimiter,
        header=header,
        allow_nan=model == "ssm",
        nan_advice="select with --model ssm, which takes them",
    )
    seq = read_lengths(lengths) if lengths is not None else None
    sizes = parse_range(k, most=X.shape[0])
    # the candidates' settings (random_state is select_model's to give each of them)
    if n_iter is None:
        n_iter = SSM_N_ITER if model == "ssm" else 100
    wanted = {"n_iter": n_iter, "tol": tol, "n_init": n_init, "device": device}
    if model == "hsmm":
        wanted["duration"] = DURATIONS[duration]
        wanted["max_duration"] = check_max_duration(max_duration, X.shape[0], seq)
    if model == "arhmm":
        wanted["order"] = order or 1
    if emission == "gmm":
        wanted["n_mix"] = n_mix
    if emission == "categorical":
        values = X.numpy()
        if values.shape[1] != 1:
            fail(f"categorical emissions need one column of symbols; {name} has {X.shape[1]}")
        bad = np.flatnonzero((values != np.round(values)) | (values < 0))
        if len(bad):
            fail(
                f"categorical emissions need whole-number symbols 0, 1, 2, ...; row {bad[0]} "
                f"holds {float(values[bad[0], 0]):g}"
            )
        wanted["n_features"] = int(values.max()) + 1  # every fold can score every symbol
    kwargs = _constructor_kwargs(cls, wanted)
    _sweep(
        X,
        lengths=seq,
        family=cls,
        sizes=sizes,
        covs=covs,
        criterion=criterion,
        cv=cv,
        seed=seed,
        kwargs=kwargs,
        plot=plot,
        fmt=fmt,
        as_json=as_json,
        as_csv=as_csv,
        desc=f"select {cls.__name__}",
        data=data_name(data, dataset),
        inputs=[data, lengths],
        force=force,
        bound=model in BOUND_MODELS,
        quiet=quiet,
    )
