"""``latentfit tour``: the report of the whole chain on bundled data."""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import app


@app.command()
def tour(
    out: Path = typer.Option(Path("report"), "--out", help="Folder for index.html and figures."),
    only: str = typer.Option("", help="Comma-separated section names to run (default: all)."),
    seed: int = typer.Option(0, help="Seed for every random choice in the report."),
):
    """Walk MLE → MAP → ELBO → EM → VI → VAE on the bundled data and write DIR/index.html."""
    from latentfit.tour import run_tour

    names = [s for s in only.split(",") if s] or None
    index = run_tour(out, sections=names, seed=seed)
    typer.echo(f"report written to {index.resolve()}")
