"""``fit hmm --online``: online EM (``partial_fit``) over chunks of the rows, its options and
their settings."""

from __future__ import annotations

import re
from collections.abc import Callable

import typer

from latentfit.cli.app import cli_words, fail

#: Rows per ``partial_fit`` call of ``fit hmm --online`` when --chunk-rows is not given.
DEFAULT_CHUNK_ROWS = 10_000
#: ``fit hmm --online``'s settings of ``partial_fit``: option → (argument, its default there).
ONLINE_SETTINGS = {
    "--burn-in": ("burn_in", 100),
    "--mstep-every": ("mstep_every", 50),
    "--learning-decay": ("learning_decay", 0.9),
}


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
        None,
        option,
        min=minimum,
        help=f"--online: {what}. Default: {default}.",
        show_default=False,
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


def check_some_mstep(n_rows: int, settings: dict) -> None:
    """Refuse --burn-in/--mstep-every that leave online EM no M-step over ``n_rows`` steps:
    the fit would only save its initial model. M-steps run after the steps t >= burn_in with
    (t - burn_in) % mstep_every == 0, steps counted from 1 (see ``partial_fit``)."""
    burn_in, every = settings["burn_in"], settings["mstep_every"]
    first = max(burn_in, 1)
    first += (-(first - burn_in)) % every
    if first <= n_rows:
        return
    default = " (its default)" if burn_in == ONLINE_SETTINGS["--burn-in"][1] else ""
    if burn_in > n_rows:
        fail(
            f"--burn-in {burn_in}{default} reads {burn_in} steps before the first M-step, but "
            f"the data have {n_rows} rows: online EM would make no M-step and save the initial "
            f"model; pass a smaller --burn-in (e.g. --burn-in {max(n_rows // 10, 0)})"
        )
    fail(
        f"--burn-in {burn_in} with --mstep-every {every} puts the first M-step after step "
        f"{first}, but the data have {n_rows} rows: online EM would make no M-step; pass a "
        "smaller --mstep-every or --burn-in"
    )


def _first_chunk_words(rows: int, k: int, data: str) -> str:
    """Why online EM cannot start from its first chunk, of ``rows`` rows, with ``k`` states."""
    return (
        f"online EM starts the states from the first chunk of {data}, and --chunk-rows {rows} "
        f"gives it {rows} rows, fewer than n_components={k}: k-means needs a row per state; "
        f"pass --chunk-rows {k} or more"
    )


def online_fit(
    model, X, seq, chunk_rows: int, settings: dict, data: str
) -> tuple[Callable[[], None], dict]:
    """(the fit, the record of the run) of online EM over chunks of X with ``partial_fit``'s
    ``settings``; the record is filled in when the fit has run. Errors name ``data`` (see
    :func:`~latentfit.cli.app.data_name`)."""
    from latentfit.em.hmm.sequences import check_lengths

    try:
        lengths = check_lengths(seq, X.shape[0])
    except ValueError as err:
        fail(cli_words(str(err), data))
    check_some_mstep(X.shape[0], settings)
    run: dict = {}

    def fit() -> None:
        from latentfit._interrupt import stop_requested, stoppable, stopped_by
        from latentfit.errors import BatchRowError, DataError

        chunks = list(online_chunks(X.shape[0], lengths, chunk_rows))
        done = 0
        # Ctrl-C stops after a chunk: the model of the chunks read so far (latentfit._interrupt)
        with stoppable("chunk", "the model of the chunks read so far"):
            for a, b, pieces, starts in chunks:
                try:
                    model.partial_fit(X[a:b], pieces, new_sequence=starts, **settings)
                except BatchRowError as err:  # about a row of the chunk: name its row of DATA
                    raise err.shifted(a) from None
                except ValueError as err:  # the first chunk's rows too few to start from
                    few = re.match(r"X has (\d+) rows, fewer than n_components=(\d+)", str(err))
                    if a == 0 and few is not None and b < X.shape[0]:
                        raise DataError(_first_chunk_words(b, int(few[2]), data)) from None
                    raise
                done += 1
                if stop_requested() and done < len(chunks):
                    run.update(stopped_after=b, stopped_by=stopped_by())
                    break
        run.update(
            chunk_rows=chunk_rows,
            **settings,
            n_chunks=done,
            n_steps=model.n_steps_,
            n_updates=model.n_updates_,
            online_log_likelihood=model.online_log_likelihood_,
        )

    return fit, run
