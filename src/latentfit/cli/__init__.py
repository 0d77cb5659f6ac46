"""The ``latentfit`` command line. Each module imported here registers its commands."""

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
    from latentfit._interrupt import abort_words, aborted, interrupt_handling

    with interrupt_handling():
        try:
            app()
        except (SystemExit, KeyboardInterrupt):
            if aborted():  # after the outputs' all-or-none undo and its note
                typer.secho(abort_words(), err=True, fg=typer.colors.YELLOW)
            raise


__all__ = ["app", "main"]
