"""The ``latentfit`` command line. Each module imported here registers its commands."""

import sys

import typer

from latentfit.cli import (  # noqa: F401  (registration)
    diffusion,
    estimate,
    flows,
    gmm,
    hmm,
    kernels,
    mixtures,
    models,
    select,
    sequences,
    ssm,
    tour,
    vae,
    vi,
)
from latentfit.cli.app import app


def main() -> None:
    """The ``latentfit`` command. Ctrl-C: the first press stops a running fit where it can and
    keeps it, the second aborts and says what was written (:mod:`latentfit._interrupt`)."""
    from latentfit._interrupt import (
        abort_status,
        abort_words,
        aborted,
        interrupt_handling,
        uninstall,
    )

    try:
        with interrupt_handling():
            app()
    except BaseException as ended:
        uninstall()  # done already, unless the abort landed as the block ended
        finished = isinstance(ended, SystemExit) and ended.code in (0, None)
        if finished or not (aborted() or isinstance(ended, KeyboardInterrupt)):
            raise  # no abort, or one that a library swallowed and the command finished
        # After the outputs' all-or-none undo and its note. Whatever ended the command is
        # the abort's doing: typer's exit, a KeyboardInterrupt it did not see (before or
        # after the command ran, or outside the handler's block), or an error of a library
        # interrupted mid-way (matplotlib drawing a figure raised ValueError on the transform
        # it was computing).
        files = sys.modules.get("latentfit._files")  # loaded if anything was written
        if files is not None:  # a write the abort cut where its own cleanup could not run
            files.remove_left_temporaries()
        typer.secho(abort_words(), err=True, fg=typer.colors.YELLOW)
        raise SystemExit(abort_status()) from None


__all__ = ["app", "main"]
