"""``latentfit fit hmm DATA -k K [--lengths FILE]``: fit a hidden Markov model, print its
parameters and write the decoded state path.

What every hidden-state sequence model shares (``fit hmm``, and ``fit hsmm`` / ``fit arhmm`` of
:mod:`latentfit.cli.sequences`) lives beside this module: the options in
:mod:`~latentfit.cli.hmm_options`, the reading of DATA and --lengths in
:mod:`~latentfit.cli.hmm_inputs`, the steps after the fit (decoding, the result printed as text,
``--json`` or ``--csv``, the states, model file and figure written) in
:mod:`~latentfit.cli.hmm_report`, the emission parameters in :mod:`~latentfit.cli.hmm_emissions`;
``--variational``'s hyperparameters in :mod:`~latentfit.cli.hmm_posterior` and ``--online``'s
chunks in :mod:`~latentfit.cli.hmm_online`. Their public names are re-exported here, where other
modules imported them from before the split."""

from __future__ import annotations

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
    fit_app,
    force_option,
    header_option,
    split_columns,
)
from latentfit.cli.figures import figure_format
from latentfit.cli.gmm import DEFAULT_TIMEOUT_S
from latentfit.cli.hmm_emissions import (
    _csv_rows,
    emission_cells,
    emission_parameters,
    print_emissions,
)
from latentfit.cli.hmm_inputs import read_lengths, read_series, states_target
from latentfit.cli.hmm_online import (
    DEFAULT_CHUNK_ROWS,
    ONLINE_SETTINGS,
    online_chunks,
    online_fit,
    online_option,
    online_settings,
)
from latentfit.cli.hmm_options import (
    ALGORITHMS,
    COVARIANCES,
    MISSING,
    algorithm_option,
    check_choice,
    check_missing,
    columns_option,
    components_option,
    covariance_option,
    device_option,
    emission_option,
    lengths_option,
    missing_option,
    n_init_option,
    n_iter_option,
    out_option,
    quiet_option,
    seed_option,
    states_option,
    states_plot_option,
    tol_option,
)
from latentfit.cli.hmm_posterior import (
    HYPERPARAMETERS,
    hyperparameters,
    posterior_cells,
    print_posterior,
)
from latentfit.cli.hmm_report import (
    SequenceRun,
    fit_and_decode,
    report,
    sequence_result,
    state_row,
)
from latentfit.cli.output import csv_option, json_option

__all__ = [
    "ALGORITHMS",
    "COVARIANCES",
    "DEFAULT_CHUNK_ROWS",
    "EMISSIONS",
    "HYPERPARAMETERS",
    "MISSING",
    "ONLINE_SETTINGS",
    "VARIATIONAL_EMISSIONS",
    "algorithm_option",
    "check_choice",
    "check_missing",
    "columns_option",
    "components_option",
    "covariance_option",
    "device_option",
    "emission_cells",
    "emission_option",
    "emission_parameters",
    "fit_and_decode",
    "fit_hmm",
    "hyperparameters",
    "lengths_option",
    "missing_option",
    "n_init_option",
    "n_iter_option",
    "online_chunks",
    "online_fit",
    "online_option",
    "online_settings",
    "out_option",
    "posterior_cells",
    "print_emissions",
    "print_posterior",
    "quiet_option",
    "read_lengths",
    "read_series",
    "report",
    "seed_option",
    "sequence_result",
    "state_row",
    "states_option",
    "states_plot_option",
    "states_target",
    "tol_option",
]

EMISSIONS = ("gaussian", "gmm", "categorical", "poisson", "multinomial")
#: The emissions that ``fit hmm --variational`` fits (VariationalGaussianHMM,
#: VariationalCategoricalHMM).
VARIATIONAL_EMISSIONS = ("gaussian", "categorical")


# ---------------------------------------------------------------------- fit hmm
def _model(
    emission, k, covariance, n_mix, n_iter, tol, n_init, seed, quiet, device, missing, variational
):
    from latentfit import (
        GMMHMM,
        CategoricalHMM,
        GaussianHMM,
        MultinomialHMM,
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
    if emission == "multinomial":
        return MultinomialHMM(k, **common)
    return PoissonHMM(k, **common)


@fit_app.command("hmm")
def fit_hmm(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
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
    columns: str | None = columns_option(),
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
        callback=finite_number,
    ),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit an HMM by Baum-Welch; print its probabilities, emissions, log-likelihood, BIC/AIC.

    The start and transition probabilities are printed, and the decoded state of every row
    written (--states, by default DATA_states.csv)."""
    from latentfit.cli.output import check_format

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
                "--distributed fits gaussian, gmm, poisson and multinomial emissions; "
                "categorical fits in memory"
            )
        from latentfit.cli._hmm_distributed import fit_hmm_distributed

        try:
            res = fit_hmm_distributed(model, data, cols, seq, timeout, delimiter, header)
        except (ValueError, RuntimeError, FloatingPointError, FileNotFoundError) as err:
            text = cli_words(str(err), data_name(data), "-k")  # as the fit in one process
            if (  # the streamed reader names a NaN without the in-memory loader's advice
                "contains nan" in text
                and missing != "marginalize"
                and emission == "gaussian"
                and "--missing" not in text
            ):
                text += "; drop or impute those rows, or pass --missing marginalize"
            fail(text)
        if res.rank != 0:
            return
        n_rows, d = res.n_samples, res.n_features
        fitted = {"path": None, "logprob": None, "ll": res.loglik, "bic": res.bic, "aic": res.aic}
    else:
        X = read_series(data, cols, dataset, delimiter, emission, missing, header, variational)
        fit, run = None, None
        if online:
            rows = chunk_rows or DEFAULT_CHUNK_ROWS
            fit, run = online_fit(model, X, seq, rows, settings_online, data_name(data, dataset))
        fitted = fit_and_decode(model, X, seq, algorithm, data_name(data, dataset), fit)
        fitted["run"] = run
        n_rows, d = X.shape
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
    invocation = SequenceRun(data, dataset, delimiter, columns, lengths, n_init, algorithm,
                             states, out, plot, force, device, as_json, as_csv, target, fmt,
                             seq, header)  # fmt: skip
    csv_rows = lambda result: _csv_rows(model, result)
    invocation.finish(
        model, X, fitted, settings, parameters, csv_rows, print_parameters, shape=(n_rows, d)
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
