"""``--plot FILE``: the option, its format check before any work, and the atomic write.

Figures are ``matplotlib.figure.Figure`` objects made outside pyplot, so a command never
chooses or changes matplotlib's backend and needs no display.
"""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import fail, output_option


def plot_option(what: str):
    """The ``--plot FILE`` option of a command whose figure shows ``what``."""
    return output_option(
        None, "--plot", help=f"Write {what} to this image file (.png, .pdf, .svg, ...)."
    )


def figure_format(path: Path | None, option: str = "--plot") -> str | None:
    """The image format matplotlib writes for ``path``'s suffix (png when there is none);
    an unknown suffix is refused before any work."""
    if path is None:
        return None
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = path.suffix.lstrip(".").lower() or "png"
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        fail(
            f"{option} {path}: unknown image format {fmt!r}; use one of {', '.join(sorted(known))}"
        )
    return fmt


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """(Figure, Axes or array of Axes), the figure unknown to pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path: Path, fmt: str, option: str = "--plot") -> None:
    """Write ``fig`` to ``path`` atomically (never a half-written file), or fail; the note
    that it was written goes to standard error."""
    from latentfit._files import atomic_path
    from latentfit.errors import LatentfitError

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
    except (LatentfitError, OSError) as err:
        fail(f"{option} {path}: {err}")
    typer.echo(f"figure written to {path}", err=True)  # stdout may carry --json or --csv
