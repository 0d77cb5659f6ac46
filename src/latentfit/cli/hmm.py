"""``latentfit fit hmm DATA -k K [--lengths FILE]``: fit a hidden Markov model, print its
parameters and write the decoded state path.

The options and the steps after a fit that every hidden-state sequence model shares (``fit
hmm``, and ``fit hsmm`` / ``fit arhmm`` of :mod:`latentfit.cli.sequences`) live here: the
model is fitted and decoded, its result printed as text, ``--json`` or ``--csv``, the decoded
states written to ``--states``, the model to ``--out`` and the figure to ``--plot`` in one way
for all of them."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

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
)
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure
from latentfit.cli.gmm import DEFAULT_TIMEOUT_S
from latentfit.cli.output import csv_option, json_option

EMISSIONS = ("gaussian", "gmm", "categorical", "poisson")
ALGORITHMS = ("viterbi", "map")
COVARIANCES = ("full", "tied", "diag", "spherical")
MISSING = ("error", "marginalize")
#: The emissions that ``fit hmm --variational`` fits (VariationalGaussianHMM,
#: VariationalCategoricalHMM).
VARIATIONAL_EMISSIONS = ("gaussian", "categorical")
#: Rows per ``partial_fit`` call of ``fit hmm --online`` when --chunk-rows is not given.
DEFAULT_CHUNK_ROWS = 10_000
#: ``fit hmm --online``'s settings of ``partial_fit``: option → (argument, its default there).
ONLINE_SETTINGS = {
    "--burn-in": ("burn_in", 100),
    "--mstep-every": ("mstep_every", 50),
    "--learning-decay": ("learning_decay", 0.9),
}
#: The hyperparameters of a variational HMM, each an estimator attribute ``<name>_prior_`` and
#: ``<name>_posterior_``.
HYPERPARAMETERS = ("startprob", "transmat", "means", "beta", "dof", "scale", "emissionprob")


# ---------------------------------------------------------------------- shared options
def components_option():
    """``-k/--components``: the number of hidden states."""
    return typer.Option(..., "-k", "--components", min=1, help="Number of hidden states.")


def lengths_option():
    """``--lengths FILE``: how the rows of DATA are cut into sequences."""
    return typer.Option(
        None, "--lengths", help="Text file of sequence lengths (rows per sequence, in order)."
    )


def emission_option(names: tuple[str, ...]):
    """``--emission``: the law of an observation given its state."""
    return typer.Option("gaussian", help=f"{', '.join(names[:-1])} or {names[-1]}.")


def covariance_option():
    """``--covariance``: the covariance type of Gaussian emissions."""
    return typer.Option("diag", help="full, tied, diag or spherical (Gaussian).")


def n_iter_option(what: str = "Baum-Welch"):
    """``--n-iter``/``--max-iter``: the most EM iterations of one restart."""
    return typer.Option(
        100, "--n-iter", "--max-iter", min=1, help=f"Most {what} iterations (n_iter)."
    )


def tol_option(what: str = "log-likelihood"):
    """``--tol``: the gain of log-likelihood (or of another objective) below which EM stops."""
    return typer.Option(1e-2, help=f"Stop when the {what} gains less than this.")


def n_init_option():
    """``--n-init``: EM restarts."""
    return typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept.")


def algorithm_option():
    """``--algorithm``: how the states are decoded."""
    return typer.Option("viterbi", help="viterbi (best path) or map (best states).")


def missing_option():
    """``--missing``: what NaN cells mean to Gaussian emissions."""
    return typer.Option(
        "error",
        help="error, or marginalize to fit, score and decode rows with NaNs (gaussian emissions).",
    )


def columns_option():
    """``--columns``: the columns of DATA to use."""
    return typer.Option("", help="Comma-separated columns to use (default: all).")


def seed_option():
    """``--seed``: the seed of the initialisation."""
    return typer.Option(0, help="Seed for the initialisation.")


def states_option(what: str = "decoded states"):
    """``--states FILE``: where the per-row states go."""
    return typer.Option(
        None,
        "--states",
        help=f"Where to write the {what} (default: DATA_states.csv in the current folder, "
        "e.g. s_states.csv for s.csv).",
    )


def out_option():
    """``--out FILE``: the model file to write."""
    return typer.Option(None, "--out", help="Save the fitted model to this file.")


def quiet_option():
    """``--quiet``: no progress bar."""
    return typer.Option(False, "--quiet/--no-quiet", help="No progress bar.")


def device_option():
    """``--device``: the torch device of the fit."""
    return typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ...")


def states_plot_option():
    """``--plot FILE``: the series coloured by decoded state."""
    return plot_option("every column over time, coloured by decoded state")


# ---------------------------------------------------------------------- shared steps
def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a value of ``option`` outside ``choices``, naming them."""
    if value not in choices:
        fail(f"{option} must be one of {', '.join(choices)}; got {value!r}")


def check_missing(missing: str, emission: str) -> None:
    check_choice("--missing", missing, MISSING)
    if missing == "marginalize" and emission != "gaussian":
        fail(f"--missing marginalize needs --emission gaussian; {emission} emissions take no NaN")


def states_target(states: Path | None, data: Path | None, dataset: str | None) -> Path:
    """--states, or DATA_states.csv in the current folder (s.csv.gz: s_states.csv)."""
    from latentfit.datasets._files import file_stem

    stem = file_stem(data) if data is not None else dataset
    return states if states is not None else Path(f"{stem}_states.csv")


def read_series(data, columns, dataset, delimiter, emission: str, missing: str = "error"):
    """The rows of DATA or --dataset as a (n, d) array; whole-number symbols (int64) in one
    column for categorical emissions."""
    import numpy as np

    name = data_source(data, dataset)
    X = load_data(
        data,
        columns,
        dataset=dataset,
        delimiter=delimiter,
        allow_nan=missing == "marginalize",
        hint=" (pass --missing marginalize)",
    ).numpy()
    if emission == "categorical":
        if X.shape[1] != 1:
            fail(f"categorical emissions need one column of symbols; {name} has {X.shape[1]}")
        bad = np.flatnonzero((X[:, 0] != np.round(X[:, 0])) | (X[:, 0] < 0))
        if len(bad):
            fail(
                "categorical emissions need whole-number symbols 0, 1, 2, ...; row "
                f"{bad[0]} holds {X[bad[0], 0]:g}"
            )
        X = X.astype(np.int64)
    return X


def fit_and_decode(model, X, seq, algorithm: str, fit: Callable[[], None] | None = None) -> dict:
    """Fit ``model`` to the sequences of X (by ``fit()`` when given, else ``model.fit``),
    decode their states and score them; estimator errors become CLI errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            if fit is None:
                model.fit(X, seq)
            else:
                fit()
        logprob, path = model.decode(X, seq, algorithm=algorithm)
        return {
            "path": path,
            "logprob": logprob,
            "ll": model.score(X, seq),
            "bic": model.bic(X, seq),
            "aic": model.aic(X, seq),
        }
    except (ValueError, FloatingPointError) as err:
        fail(str(err))


def sequence_result(
    model,
    fitted: dict,
    settings: dict,
    parameters: dict,
    *,
    n_rows,
    d,
    seq,
    names,
    n_init,
    algorithm,
    target,
) -> dict:
    """The result of a sequence model's fit: the entries every kind shares, the model's own
    ``settings`` after its name and its own ``parameters`` after the transition matrix. The
    record of the run is the EM iterations, or ``fitted["run"]`` when the fit was another
    kind of run (online EM)."""
    import numpy as np

    path = fitted["path"]
    run = fitted.get("run") or {
        "n_iter": model.n_iter_,
        "converged": bool(model.converged_),
        "n_init": n_init,
    }
    head = {
        "model": type(model).__name__,
        **settings,
        "n_components": model.n_components,
        "n_samples": n_rows,
        "n_sequences": 1 if seq is None else len(seq),
        "n_features": d,
        "features": names,
        **run,
        "log_likelihood": fitted["ll"],
        "bic": fitted["bic"],
        "aic": fitted["aic"],
        "startprob": model.startprob_,
        "transmat": model.transmat_,
    }
    counts = None if path is None else np.bincount(path, minlength=model.n_components)
    tail = {
        "algorithm": None if path is None else algorithm,
        "decoded_log_probability": fitted["logprob"],
        "state_counts": counts,
        "states_file": None if target is None else str(target),
        "model_file": None,
    }
    return head | parameters | tail


def state_row(model, i: int) -> dict:
    """The CSV cells every state has: its index, start and transition probabilities."""
    k = model.n_components
    row = {"state": i, "startprob": float(model.startprob_[i])}
    return row | {f"transmat_{j}": float(model.transmat_[i, j]) for j in range(k)}


def report(
    model,
    result: dict,
    *,
    path,
    target: Path | None,
    out: Path | None,
    as_json: bool,
    as_csv: bool,
    csv_rows: Callable[[], list[dict]],
    print_parameters: Callable[[dict], None],
    plot: Path | None = None,
    fmt: str | None = None,
    X=None,
    seq=None,
) -> None:
    """Write the decoded states and the model file, print the result (text, --json or --csv)
    and draw --plot: what every ``fit`` of a hidden-state sequence model does after the fit."""
    import numpy as np

    from latentfit.errors import LatentfitError

    try:
        if path is not None:
            from latentfit.io import atomic_path

            with atomic_path(target) as tmp:
                np.savetxt(tmp, path, fmt="%d", header="state", comments="")
        if out is not None:
            result["model_file"] = str(model.save(out))
    except (LatentfitError, OSError) as err:
        fail(str(err))
    if as_json:
        from latentfit.cli.output import print_json

        print_json(result)
    elif as_csv:
        from latentfit.cli.output import print_csv

        print_csv(csv_rows())
    else:
        _print_text(result, print_parameters)
    if plot is not None:
        from latentfit.plot import plot_states

        fig, axes = new_figure(X.shape[1], 1, figsize=(10, 2.6 * X.shape[1] + 0.6), sharex=True)
        plot_states(model, X, seq, states=path, ax=axes)
        save_figure(fig, plot, fmt)


def _fmt(a) -> str:
    import numpy as np

    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


def read_lengths(path: Path) -> list[int]:
    """Sequence lengths from a text file: integers separated by newlines, commas or spaces."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        fail(f"the lengths file {path} is not a text file of whole numbers")
    except OSError as err:
        fail(f"cannot read the lengths file {path}: {err.strerror or err}")
    tokens = text.replace(",", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        fail(f"{path} must hold whole numbers (one sequence length each); got {tokens[:5]}")
    if not values:
        fail(f"{path} holds no sequence lengths")
    return values


# ---------------------------------------------------------------------- fit hmm
def _model(
    emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet, device, missing, variational
):
    from latentfit import (
        GMMHMM,
        CategoricalHMM,
        GaussianHMM,
        PoissonHMM,
        VariationalCategoricalHMM,
        VariationalGaussianHMM,
    )

    common = dict(
        n_iter=n_iter, tol=tol, n_init=n_init, random_state=seed, verbose=not quiet, device=device
    )
    if variational and emission == "gaussian":
        return VariationalGaussianHMM(k, covariance_type=covariance, **common)
    if variational:
        return VariationalCategoricalHMM(k, **common)
    if emission == "gaussian":
        return GaussianHMM(k, covariance_type=covariance, missing=missing, **common)
    if emission == "gmm":
        return GMMHMM(k, n_mix=n_mix, covariance_type=covariance, **common)
    if emission == "categorical":
        return CategoricalHMM(k, **common)
    return PoissonHMM(k, **common)


def emission_parameters(model, emission: str) -> dict:
    """The emission parameters, under the names of the estimator's attributes."""
    if emission == "gaussian":
        return {"means": model.means_, "covariances": model._covars_}
    if emission == "gmm":
        return {"weights": model.weights_, "means": model.means_, "covariances": model.covars_}
    if emission == "categorical":
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
    else:
        echo(f"Poisson rates:\n{format_table(r['lambdas'], names, states)}")


def emission_cells(model, r: dict, i: int) -> dict:
    """State ``i``'s emission parameters as named CSV cells (gaussian, categorical, poisson)."""
    from latentfit.cli.output import gaussian_columns

    names = r["features"]
    if r["emission"] == "gaussian":
        return gaussian_columns(model.means_, model._covars_, r["covariance_type"], names, i)
    if r["emission"] == "categorical":
        return {f"prob_{s}": float(p) for s, p in enumerate(model.emissionprob_[i])}
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


# ---------------------------------------------------------------------- fit hmm --online
def online_chunks(n_rows: int, lengths: list[int] | None, chunk_rows: int):
    """The ``partial_fit`` calls of ``fit hmm --online``: (first row, end row, the lengths of
    the sequence pieces in the chunk, whether the chunk starts a sequence) for chunks of at
    most ``chunk_rows`` rows; a chunk that does not start a sequence continues the one before."""
    import numpy as np

    bounds = set(np.cumsum([0, *(lengths or [n_rows])]).tolist())
    for a in range(0, n_rows, chunk_rows):
        b = min(a + chunk_rows, n_rows)
        cuts = sorted({a, b} | {c for c in bounds if a < c < b})
        yield a, b, np.diff(cuts).tolist(), a in bounds


def online_option(option: str, what: str, minimum: int | None = None):
    """An option of ``--online`` that sets one argument of ``partial_fit`` (None: its default
    there, see :data:`ONLINE_SETTINGS`)."""
    default = ONLINE_SETTINGS[option][1]
    return typer.Option(
        None, option, min=minimum, help=f"--online: {what}. Default: {default}.", show_default=False
    )


def online_settings(given: dict[str, float | None]) -> dict:
    """``partial_fit``'s keyword arguments from the options given (None: its default)."""
    out = {}
    for option, value in given.items():
        name, default = ONLINE_SETTINGS[option]
        out[name] = default if value is None else value
    if not 0.5 < out["learning_decay"] <= 1:
        fail(
            f"--learning-decay must lie in (0.5, 1] for online EM to converge; got "
            f"{out['learning_decay']!r}"
        )
    return out


def online_fit(model, X, seq, chunk_rows: int, settings: dict) -> tuple[Callable[[], None], dict]:
    """(the fit, the record of the run) of online EM over chunks of X with ``partial_fit``'s
    ``settings``; the record is filled in when the fit has run."""
    from latentfit.em.hmm.sequences import check_lengths

    try:
        lengths = check_lengths(seq, X.shape[0])
    except ValueError as err:
        fail(str(err))
    run: dict = {}

    def fit() -> None:
        chunks = list(online_chunks(X.shape[0], lengths, chunk_rows))
        for a, b, pieces, starts in chunks:
            model.partial_fit(X[a:b], pieces, new_sequence=starts, **settings)
        run.update(
            chunk_rows=chunk_rows,
            **settings,
            n_chunks=len(chunks),
            n_steps=model.n_steps_,
            n_updates=model.n_updates_,
            online_log_likelihood=model.online_log_likelihood_,
        )

    return fit, run


@fit_app.command("hmm")
def fit_hmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    k: int = components_option(),
    lengths: Path | None = lengths_option(),
    emission: str = emission_option(EMISSIONS),
    covariance: str = covariance_option(),
    n_mix: int = typer.Option(2, "--n-mix", min=1, help="Mixture components per state (gmm)."),
    variational: bool = typer.Option(
        False,
        "--variational/--no-variational",
        help="A Bayesian HMM by variational inference (VB-EM; gaussian and categorical "
        "emissions): prints its lower bound and the posterior hyperparameters; the parameters "
        "shown, scored and decoded are the posterior means.",
    ),
    online: bool = typer.Option(
        False,
        "--online/--no-online",
        help="Fit by online EM (partial_fit, Cappé 2011) in one pass over chunks of "
        "--chunk-rows rows, each continuing the series of the one before; DATA is still read "
        "whole. --n-iter, --tol and --n-init do not apply.",
    ),
    chunk_rows: int | None = typer.Option(
        None,
        "--chunk-rows",
        min=1,
        help=f"--online: rows per partial_fit call. Default: {DEFAULT_CHUNK_ROWS}. The first "
        "chunk initialises the model.",
        show_default=False,
    ),
    burn_in: int | None = online_option("--burn-in", "steps read before the first M-step", 0),
    mstep_every: int | None = online_option("--mstep-every", "steps between two M-steps", 1),
    learning_decay: float | None = online_option(
        "--learning-decay", "step sizes t^-decay for step t, decay in (0.5, 1]"
    ),
    n_iter: int = n_iter_option(),
    tol: float = tol_option("log-likelihood (--variational: the lower bound)"),
    n_init: int = n_init_option(),
    algorithm: str = algorithm_option(),
    missing: str = missing_option(),
    columns: str = columns_option(),
    seed: int = seed_option(),
    states: Path | None = states_option(),
    out: Path | None = out_option(),
    plot: Path | None = states_plot_option(),
    force: bool = force_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
    distributed: bool = typer.Option(
        False,
        "--distributed/--no-distributed",
        help="One process per rank under torchrun: each fits its share of the sequences "
        "(--lengths) and the statistics are all-reduced; rank 0 prints and saves. The states "
        "are not decoded (decode with the saved model).",
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout",
        min=0.001,
        help="Seconds a --distributed process waits for the others in any one exchange before "
        "it stops with an error (a stopped or crashed process).",
    ),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit an HMM by Baum-Welch; print start/transition probabilities, emissions,
    log-likelihood and BIC/AIC; write the decoded state of every row."""
    from latentfit.cli.models import record_columns
    from latentfit.cli.output import check_format, column_names

    check_format(as_json, as_csv)
    check_choice("--emission", emission, EMISSIONS)
    check_choice("--covariance", covariance, COVARIANCES)
    check_choice("--algorithm", algorithm, ALGORITHMS)
    check_missing(missing, emission)
    given = {"--chunk-rows": chunk_rows, "--burn-in": burn_in, "--mstep-every": mstep_every,
             "--learning-decay": learning_decay}  # fmt: skip
    _check_fit_kind(variational, online, given, emission, missing, distributed, n_init)
    settings_online = online_settings({k: v for k, v in given.items() if k in ONLINE_SETTINGS})
    data_source(data, dataset)
    target = None
    if not distributed:
        target = states_target(states, data, dataset)
    elif states is not None:
        fail("--states: a --distributed fit decodes no states; decode with the saved --out model")
    elif data is None:
        fail("--distributed reads shards of a DATA file; save the data set to a file first")
    elif plot is not None:
        fail("--plot: a --distributed fit decodes no states; plot from the saved --out model")
    check_outputs(
        [(target, "--states"), (out, "--out"), (plot, "--plot")], [data, lengths], force=force
    )
    fmt = figure_format(plot)
    check_device(device)
    cols = split_columns(columns)
    seq = read_lengths(lengths) if lengths is not None else None
    model = _model(
        emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet, device, missing,
        variational,
    )  # fmt: skip
    X = None
    if distributed:
        if emission == "categorical":
            fail(
                "--distributed fits gaussian, gmm and poisson emissions; categorical fits in memory"
            )
        from latentfit.cli._hmm_distributed import fit_hmm_distributed

        try:
            res = fit_hmm_distributed(model, data, cols, seq, timeout)
        except (ValueError, RuntimeError, FloatingPointError, FileNotFoundError) as err:
            fail(str(err))
        if res.rank != 0:
            return
        n_rows, d = res.n_samples, res.n_features
        fitted = {"path": None, "logprob": None, "ll": res.loglik, "bic": res.bic, "aic": res.aic}
    else:
        X = read_series(data, cols, dataset, delimiter, emission, missing)
        fit, run = None, None
        if online:
            rows = chunk_rows or DEFAULT_CHUNK_ROWS
            fit, run = online_fit(model, X, seq, rows, settings_online)
        fitted = fit_and_decode(model, X, seq, algorithm, fit)
        fitted["run"] = run
        n_rows, d = X.shape
    record_columns(model, data, cols, delimiter, dataset)  # predict/score match them by name
    names = column_names(data, columns, d, model, delimiter)
    settings = {
        "emission": emission,
        "covariance_type": covariance if emission in ("gaussian", "gmm") else None,
        "fit": "online" if online else "variational" if variational else "em",
    }
    parameters = emission_parameters(model, emission)
    print_parameters = print_emissions
    if variational:
        fitted["run"] = {"n_iter": model.n_iter_, "converged": bool(model.converged_),
                         "n_init": n_init, "lower_bound": model.lower_bound_}  # fmt: skip
        parameters |= hyperparameters(model)
        print_parameters = lambda r: (print_emissions(r), print_posterior(r))
    result = sequence_result(
        model,
        fitted,
        settings,
        parameters,
        n_rows=n_rows,
        d=d,
        seq=seq,
        names=names,
        n_init=n_init,
        algorithm=algorithm,
        target=target,
    )
    report(
        model,
        result,
        path=fitted["path"],
        target=target,
        out=out,
        as_json=as_json,
        as_csv=as_csv,
        csv_rows=lambda: _csv_rows(model, result),
        print_parameters=print_parameters,
        plot=plot,
        fmt=fmt,
        X=X,
        seq=seq,
    )


def _check_fit_kind(
    variational: bool,
    online: bool,
    online_options: dict[str, float | None],
    emission: str,
    missing: str,
    distributed: bool,
    n_init: int,
) -> None:
    """Refuse the combinations ``--variational`` and ``--online`` do not take, by name."""
    if variational:
        if emission not in VARIATIONAL_EMISSIONS:
            fail(
                f"--variational fits {' and '.join(VARIATIONAL_EMISSIONS)} emissions; "
                f"--emission {emission} has no variational HMM (drop --variational)"
            )
        if missing != "error":
            fail("--missing marginalize: the variational HMMs take no NaN; drop --variational")
        if online:
            fail(
                "--online and --variational: online EM re-estimates point parameters; the "
                "variational HMMs have no online update (choose one)"
            )
    for option, value in online_options.items():
        if value is not None and not online:
            fail(f"{option} is a setting of --online; add --online or drop {option}")
    if distributed and (variational or online):
        which = "--variational" if variational else "--online"
        fail(f"--distributed fits by Baum-Welch; {which} fits in one process (drop one)")
    if online and n_init != 1:
        fail("--n-init: online EM reads the data once, from one start; drop --n-init")


def _print_text(r: dict, print_parameters: Callable[[dict], None]) -> None:
    from latentfit.cli.output import format_table

    echo, k = typer.echo, r["n_components"]
    echo(
        f"{r['model']}: K={k}, n={r['n_samples']} steps in {r['n_sequences']} sequence(s), "
        f"d={r['n_features']}"
    )
    if "n_steps" in r:
        echo(
            f"online EM: {r['n_steps']} steps read once in {r['n_chunks']} chunk(s) of at most "
            f"{r['chunk_rows']} rows; {r['n_updates']} M-step(s); running mean log p(x_t | "
            f"earlier steps): {r['online_log_likelihood']:.6f}"
        )
    else:
        state = "converged" if r["converged"] else "NOT converged (try --n-iter or --tol)"
        # an HSMM's EM runs the forward-backward over segments, not Baum-Welch's over steps
        method = (
            "VB-EM"
            if "lower_bound" in r
            else "EM (segment forward-backward)"
            if "HSMM" in r["model"]
            else "Baum-Welch"
        )
        echo(f"{method} iterations: {r['n_iter']} ({state}); best of {r['n_init']} init(s)")
    if "lower_bound" in r:
        echo(
            f"lower bound (ELBO): {r['lower_bound']:.6f} nats; the log-likelihood, BIC and AIC "
            "below are those of the posterior means"
        )
    echo(f"log-likelihood: {r['log_likelihood']:.6f}")
    echo(f"BIC: {r['bic']:.4f}   AIC: {r['aic']:.4f}")
    echo(f"start probabilities:\n{_fmt(r['startprob'])}")
    to = [f"to {j}" for j in range(k)]
    echo(f"transition matrix:\n{format_table(r['transmat'], to, label='from')}")
    print_parameters(r)
    if r["state_counts"] is not None:
        echo(
            f"decoded ({r['algorithm']}) log-probability: {r['decoded_log_probability']:.6f}; "
            f"steps per state: {r['state_counts']}"
        )
        echo(f"decoded states written to {r['states_file']}")
    if r["model_file"] is not None:
        echo(f"model saved to {r['model_file']} (read it with latentfit.load)")
