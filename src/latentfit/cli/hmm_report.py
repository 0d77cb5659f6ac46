"""The steps after the fit that every hidden-state sequence model shares (``fit hmm``, and
``fit hsmm`` / ``fit arhmm`` of :mod:`latentfit.cli.sequences`): the model is fitted and
decoded, its result built in one shape, printed as text, ``--json`` or ``--csv``, the decoded
states written to ``--states``, the model to ``--out`` and the figure to ``--plot``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import typer

from latentfit.cli.app import fail
from latentfit.cli.figures import new_figure, save_figure


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
