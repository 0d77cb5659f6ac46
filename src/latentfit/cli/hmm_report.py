"""The steps around the fit that every hidden-state sequence model shares (``fit hmm``, and
``fit hsmm`` / ``fit arhmm`` of :mod:`latentfit.cli.sequences`): its outputs and lengths are
checked before, the model is fitted and decoded, its result built in one shape, printed as text, ``--json`` or ``--csv``, the decoded
states written to ``--states``, the model to ``--out`` and the figure to ``--plot``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    cli_words,
    data_source,
    fail,
    fit_state,
    inits_made,
    inits_words,
    split_columns,
    written_together,
)
from latentfit.cli.figures import figure_format, new_figure, save_figure
from latentfit.cli.hmm_inputs import read_lengths, states_target
from latentfit.cli.hmm_options import ALGORITHMS, check_choice

#: The most columns ``--plot`` draws (one panel each).
PLOT_COLUMNS = 12


# ---------------------------------------------------------------------- one run
@dataclass
class SequenceRun:
    """What one ``fit hmm|hsmm|arhmm`` invocation reads and writes, checked before the fit
    (by :meth:`check`, or by the command itself, which then gives ``target``, ``fmt`` and
    ``seq``)."""

    data: Path | None
    dataset: str | None
    delimiter: str
    columns: str | None
    lengths: Path | None
    n_init: int
    algorithm: str
    states: Path | None
    out: Path | None
    plot: Path | None
    force: bool
    device: str
    as_json: bool
    as_csv: bool
    target: Path | None = None
    fmt: str | None = None
    seq: list[int] | None = None
    header: bool | None = None  # --header/--no-header (None: sniffed)

    def check(self) -> None:
        """The output format, the outputs (decoded states, model file, figure), the device
        and the lengths, before any data is read; sets ``target``, ``fmt`` and ``seq``."""
        from latentfit.cli.output import check_format

        check_format(self.as_json, self.as_csv)
        check_choice("--algorithm", self.algorithm, ALGORITHMS)
        data_source(self.data, self.dataset)
        self.target = states_target(self.states, self.data, self.dataset)
        outputs = [(self.target, "--states"), (self.out, "--out"), (self.plot, "--plot")]
        check_outputs(outputs, [self.data, self.lengths], force=self.force)
        self.fmt = figure_format(self.plot)
        check_device(self.device)
        self.seq = read_lengths(self.lengths) if self.lengths is not None else None

    def finish(
        self,
        model,
        X,
        fitted: dict,
        settings: dict,
        parameters: dict,
        csv_rows: Callable[[dict], list[dict]],
        print_parameters: Callable[[dict], None],
        shape: tuple[int, int] | None = None,
    ) -> None:
        """Record the column names, build the result and report it: ``csv_rows(result)`` are
        the rows of --csv; ``shape`` is (rows, columns) of data not read here (X is None)."""
        from latentfit.cli.model_data import record_columns
        from latentfit.cli.output import column_names

        n_rows, d = X.shape if shape is None else shape
        cols = split_columns(self.columns)
        # predict/score match the columns by name
        record_columns(model, self.data, cols, self.delimiter, self.dataset, self.header)
        names = column_names(self.data, self.columns, d, model, self.delimiter, self.header)
        result = sequence_result(
            model,
            fitted,
            settings,
            parameters,
            n_rows=n_rows,
            d=d,
            seq=self.seq,
            names=names,
            n_init=self.n_init,
            algorithm=self.algorithm,
            target=self.target,
        )
        report(
            model,
            result,
            path=fitted["path"],
            target=self.target,
            out=self.out,
            as_json=self.as_json,
            as_csv=self.as_csv,
            csv_rows=lambda: csv_rows(result),
            print_parameters=print_parameters,
            plot=self.plot,
            fmt=self.fmt,
            X=X,
            seq=self.seq,
            inputs=[self.data, self.lengths],
            force=self.force,
        )


def per_state_rows(model, cells: Callable) -> Callable[[dict], list[dict]]:
    """The --csv rows of a result with one row per state: :func:`state_row` and
    ``cells(model, result, i)``."""

    def rows(result: dict) -> list[dict]:
        return [state_row(model, i) | cells(model, result, i) for i in range(model.n_components)]

    return rows


# ---------------------------------------------------------------------- fit, result, report
#: The EM driver's ConvergenceWarning about the best of the restarts (see
#: :func:`latentfit.em.driver.run_em`), which a report replaces by its "NOT converged" line.
BEST_NOT_CONVERGED = r".*: best of \d+ initialization\(s\) did not converge in \d+ iterations"


def ignore_best_not_converged() -> None:
    """Inside ``warnings.catch_warnings()``: drop the fit's warning that its best restart did
    not converge, which the command's report says in its own words, and only that one: every
    other warning of the fit reaches the user (a plain ``UserWarning`` filter hid them all)."""
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", BEST_NOT_CONVERGED, ConvergenceWarning)


def fit_and_decode(
    model, X, seq, algorithm: str, data: str, fit: Callable[[], None] | None = None
) -> dict:
    """Fit ``model`` to the sequences of X (by ``fit()`` when given, else ``model.fit``),
    decode their states and score them; estimator errors become CLI errors naming ``data``
    (see :func:`~latentfit.cli.app.data_name`)."""
    try:
        with warnings.catch_warnings():
            ignore_best_not_converged()  # the report's "NOT converged" line says it
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
        fail(cli_words(str(err), data, "-k"))


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
        "inits_made": inits_made(model, n_init),
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
    inputs=(),
    force: bool = False,
) -> None:
    """Write the decoded states, the model file and --plot, all or none (checked again against
    ``inputs`` and ``force``), then print the result (text, --json or --csv): what every
    ``fit`` of a hidden-state sequence model does after the fit."""
    import numpy as np

    from latentfit.errors import LatentfitError

    with written_together(
        [(target if path is not None else None, "--states"), (out, "--out"), (plot, "--plot")],
        inputs,
        force,
    ):
        try:
            if path is not None:
                from latentfit._files import atomic_path

                with atomic_path(target) as tmp:
                    np.savetxt(tmp, path, fmt="%d", header="state", comments="")
            if out is not None:
                result["model_file"] = str(model.save(out))
        except (LatentfitError, OSError) as err:
            fail(str(err))
        if plot is not None:
            from latentfit.plot import plot_states

            # one panel a column, at most PLOT_COLUMNS of them: 300 columns drew a 944 x
            # 66,186 pixel image in 53 s (a helper's hunt), and width is unbounded
            drawn = min(X.shape[1], PLOT_COLUMNS)
            fig, axes = new_figure(drawn, 1, figsize=(10, 2.6 * drawn + 0.6), sharex=True)
            plot_states(model, X, seq, states=path, ax=axes, features=list(range(drawn)))
            save_figure(fig, plot, fmt)
            if drawn < X.shape[1]:
                typer.secho(
                    f"note: --plot draws the first {drawn} of the {X.shape[1]} columns",
                    err=True,
                    fg=typer.colors.YELLOW,
                )
    if as_json:
        from latentfit.cli.output import print_json

        print_json(result)
    elif as_csv:
        from latentfit.cli.output import print_csv

        print_csv(csv_rows())
    else:
        _print_text(result, print_parameters)


def _fmt(a) -> str:
    import numpy as np

    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


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
        if r.get("stopped_after") is not None:
            echo(
                f"stopped by {r['stopped_by']} after {r['stopped_after']} of {r['n_samples']} steps: the "
                "model of those steps (the rest was not read)"
            )
    else:
        state = fit_state(r["converged"], "--n-iter or --tol")
        # an HSMM's EM runs the forward-backward over segments, not Baum-Welch's over steps
        method = (
            "VB-EM"
            if "lower_bound" in r
            else "EM (segment forward-backward)"
            if "HSMM" in r["model"]
            else "Baum-Welch"
        )
        echo(f"{method} iterations: {r['n_iter']} ({state}); {inits_words(r)}")
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
