"""The typer application and the helpers every command shares.

Each family's commands live in their own module of this package and register themselves on
``fit_app`` (``latentfit fit NAME``), ``select_app`` (``latentfit select NAME``) or ``app``.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="latentfit: fit models with hidden variables (MLE/MAP, EM, VI, VAEs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fit_app = typer.Typer(help="Fit a model to data and print what was fitted.", no_args_is_help=True)
select_app = typer.Typer(
    help="Compare models by BIC/AIC over a range of sizes.", no_args_is_help=True
)
app.add_typer(fit_app, name="fit")
app.add_typer(select_app, name="select")


def fail(message: str, code: int = 2):
    """Print an error for a person (no traceback) and exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def parse_range(text: str, name: str = "-k") -> list[int]:
    """``"3"`` → [3]; ``"1-8"`` → [1..8]; ``"2,4,8"`` → [2, 4, 8]."""
    try:
        out: list[int] = []
        for part in text.split(","):
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        fail(f"{name} takes a number, a range such as 1-8, or a list such as 2,4,8; got {text!r}")
    if not out or min(out) < 1:
        fail(f"{name} must name sizes of at least 1; got {text!r}")
    return out


def load_data(path: Path, columns: list[str] | None = None):
    """Read a user data file into a float64 tensor, turning loader errors into CLI errors."""
    from latentfit.datasets import load_array

    try:
        return load_array(path, columns=columns)
    except (ValueError, FileNotFoundError, ImportError) as err:
        fail(str(err))
