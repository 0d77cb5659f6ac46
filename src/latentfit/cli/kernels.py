"""``latentfit compile``: compile the CPU kernels ahead of the first fit
(:mod:`latentfit._warm`), e.g. when building a container image or after ``pip install``."""

from __future__ import annotations

import time

import typer

from latentfit.cli.app import app, fail, parse_range
from latentfit.cli.output import json_option, print_json

_DTYPES = ("float64", "float32")


@app.command("compile")
def compile_command(
    dtype: str = typer.Option(
        "both", "--dtype", help="float64, float32 or both: the model dtypes to prepare."
    ),
    states: str | None = typer.Option(
        None,
        "-k",
        "--components",
        help="Numbers of HMM states to prepare: 3, 1-8 or 2,4,8 (default: every count the "
        "kernels are specialised for, 4-16, and the one build all other counts share).",
    ),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="Print nothing but errors."),
    as_json: bool = json_option(),
) -> None:
    """Compile latentfit's CPU kernels (numba) ahead, so no later fit waits on the compiler.

    They go into numba's disk cache; a first fit, decode or score otherwise compiles what it
    uses, a few seconds each. Run it once after installing: about 3 minutes of CPU for
    everything."""
    if dtype not in (*_DTYPES, "both"):
        fail(f"--dtype must be float64, float32 or both, not {dtype!r}")
    counts = None if states is None else parse_range(states, "-k")
    from latentfit import _compiled

    if not _compiled.available():
        if as_json:
            print_json({"numba": False, "groups": [], "seconds": 0.0})
        elif not quiet:
            typer.echo(
                "numba is not available here: latentfit runs its torch kernels, which need no compiling"
            )
        return
    import warnings

    from latentfit.errors import CompileCacheWarning

    # where the kernels will be kept, checked before minutes of compiling: defining the first
    # kernel finds numba's cache folder, or that it has none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileCacheWarning)
        import latentfit._kernel_ops  # noqa: F401
    if _compiled.cache_missing():
        fail(
            "numba has no writable folder for its disk cache here (latentfit's install folder "
            "and the user's cache folder are read-only), so nothing compiled now could be "
            "kept. Set NUMBA_CACHE_DIR to a writable folder (in the environment of every later "
            "process too) and run latentfit compile again",
            1,
        )
    from latentfit._warm import compile_kernels

    start = time.perf_counter()
    done = []

    def progress(what: str) -> None:
        done.append(what)
        if not quiet:
            typer.echo(f"compiling: {what}", err=True)

    n = compile_kernels(_DTYPES if dtype == "both" else (dtype,), counts, progress)
    seconds = time.perf_counter() - start
    if as_json:
        print_json({"numba": True, "groups": done, "seconds": round(seconds, 3)})
    elif not quiet:
        typer.echo(f"{n} groups of kernels ready in {seconds:.1f} s (cached on disk)")
