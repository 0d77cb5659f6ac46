"""``latentfit tour``: the report of the whole chain on bundled data."""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import (
    app,
    check_outputs,
    fail,
    force_option,
    seed_option,
    written_together,
)
from latentfit.cli.output import json_option


@app.command()
def tour(
    out: Path = typer.Option(Path("report"), "--out", help="Folder for index.html and figures."),
    only: str | None = typer.Option(
        None, help="Comma-separated section names to run (default: all)."
    ),
    seed: int = seed_option("Seed for every random choice in the report."),
    force: bool = force_option(),
    as_json: bool = json_option(),
):
    """Walk MLE → MAP → ELBO → EM → VI → VAE on the bundled data and write DIR/index.html.

    A folder that already holds a report (index.html) or any of its figures is refused unless
    --force is given.
    """
    from latentfit._interrupt import not_stoppable
    from latentfit._outputs import Output
    from latentfit.errors import LatentfitError
    from latentfit.tour import FIGURES, SECTIONS, run_tour

    known = [name for name, _ in SECTIONS]
    names = None if only is None else [s.strip() for s in only.split(",") if s.strip()]
    if names == []:  # --only "" would otherwise run every section, minutes of work
        fail(f"--only {only!r} names no section; choose from {', '.join(known)}")
    unknown = [s for s in names or [] if s not in known]
    if unknown:
        fail(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    figures = [f for name in names or known for f in FIGURES.get(name, ())]
    report = Output(out, "--out", folder=True, replaces=("index.html", *figures))
    check_outputs([report], force=force)
    try:
        # checked again before the first write: a report made meanwhile is refused
        publish = written_together([report], force=force)
        with not_stoppable():  # the report's fits run to their end, or Ctrl-C aborts
            index = run_tour(out, sections=names, seed=seed, publish=publish)
    except (LatentfitError, OSError) as err:
        fail(str(err))
    if as_json:
        from latentfit.cli.output import print_json

        return print_json({"report": index.resolve(), "sections": names or known})
    typer.echo(f"report written to {index.resolve()}")
