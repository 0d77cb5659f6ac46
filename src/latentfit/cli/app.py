"""The typer application and the helpers every command shares.

Each family's commands live in their own module of this package and register themselves on
``fit_app`` (``latentfit fit NAME``), ``select_app`` (``latentfit select NAME``) or ``app``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from latentfit.cli.usage import Typer, UsageGroup, usage_words
from latentfit.cli.words import (  # noqa: F401  (the commands import them from here)
    MAX_CLI_DEPTH,
    MAX_WORK_WORDS,
    MISSING_ADVICE,
    RAISE_MAX_WORK,
    _current_context,
    cli_words,
    data_name,
    setting_words,
    split_words,
    warning_words,
)


class _Commands(UsageGroup):
    """The top command group. A usage error (an unknown option, a missing argument, a value
    of the wrong type: click's words in typer's boxed panel) is printed as one ``error:`` line
    (:func:`~latentfit.cli.usage.usage_words`). An OSError no command turned into a message of
    its own (a file name too long for the file system, a file gone between the checks and the
    read, a full disk) is printed as one line naming the file, never as a traceback; so is an
    OutputError (a write that failed midway, see :class:`latentfit._files.atomic_path`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        try:
            with _usage_errors():
                return super().invoke(ctx)
        except ValueError as err:
            # an OutputError can only come from a command that loaded latentfit.errors, which
            # imports scikit-learn: looked up, not imported, so that --help stays light
            errors = sys.modules.get("latentfit.errors")
            if errors is not None and isinstance(err, errors.OutputError):
                fail(str(err))
            raise
        except BrokenPipeError:
            # the reader of the output closed it (``latentfit show m.lf | head``): stop quietly,
            # as a shell tool does, with the rest of the output sent nowhere so that Python's
            # own flush at exit does not report the same closed pipe (Python's documented way)
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None
        except OSError as err:
            import errno

            name = f"{err.filename}"
            if len(name) > 100:
                name = f"{name[:60]}... ({len(name)} characters)"
            what = f"{name}: " if err.filename is not None else ""
            advice = (
                "; choose a shorter name (at most 255 bytes per name)"
                if err.errno == errno.ENAMETOOLONG
                else ""
            )
            fail(f"{what}{err.strerror or err}{advice}")


@contextmanager
def _usage_errors():
    """Print click's usage errors as one ``error:`` line and exit 2; a group named without a
    command still prints its help (``no_args_is_help``)."""
    from latentfit.cli.usage import _click

    try:
        yield
    except _click.UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            raise
        fail(usage_words(err), err.exit_code)


app = Typer(
    cls=_Commands,
    help="latentfit: fit models with hidden variables (MLE/MAP, EM, VI, VAEs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fit_app = Typer(help="Fit a model to data and print what was fitted.", no_args_is_help=True)
select_app = Typer(help="Compare models by BIC/AIC over a range of sizes.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")
app.add_typer(select_app, name="select")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line read as one line for a person, like errors: the file and
    line of latentfit's source that raised them mean nothing to someone running a command,
    and the data are the command's DATA, not ``X`` (:func:`warning_words`)."""
    typer.secho(f"warning: {warning_words(str(message))}", err=True, fg=typer.colors.YELLOW)


def _print_version(value: bool) -> None:
    if value:
        from latentfit import __version__

        typer.echo(f"latentfit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version of latentfit and exit.",
    ),
) -> None:
    """latentfit: fit models with hidden variables (MLE/MAP, EM, VI, VAEs)."""
    import warnings

    # for this command only: a command run in-process (a notebook, a test) gives Python's own
    # back when it ends, whether it succeeded or failed
    before = warnings.showwarning
    warnings.showwarning = _show_warning
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", before))


def fit_state(converged: bool, options: str = "--max-iter or --tol") -> str:
    """A report's words for whether EM converged: a fit that Ctrl-C stopped says so instead
    of advising ``options`` (see :mod:`latentfit._interrupt`)."""
    from latentfit._interrupt import stop_requested, stopped_by

    if converged:
        return "converged"
    if stop_requested():
        return f"NOT converged (stopped by {stopped_by()})"
    return f"NOT converged (try {options})"


def inits_made(model, n_init: int) -> int:
    """The restarts a fit made: ``n_init``, or fewer where Ctrl-C stopped one of them (the
    runs after it were not made; see :mod:`latentfit._interrupt`)."""
    runs = getattr(model, "all_lower_bounds_", None)
    return len(runs) if runs else n_init


def inits_words(r: dict) -> str:
    """'best of 5 init(s)', or 'best of 2 of 5 init(s)' for a fit stopped during its second."""
    made, asked = r.get("inits_made", r["n_init"]), r["n_init"]
    return f"best of {made} init(s)" if made == asked else f"best of {made} of {asked} init(s)"


def fail(message: str, code: int = 2):
    """Print an error for a person (no traceback) and exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def show_warnings(caught, skip: tuple[type[Warning], ...] = ()) -> None:
    """Show warnings recorded by ``warnings.catch_warnings(record=True)`` (call it after that
    block, whose recorder would take them again) as the command line shows warnings: each
    distinct one once, those of the ``skip`` categories (a command's report says them in its
    own words) left out. A command that then fails shows them first: they often say why."""
    import warnings

    said = set()
    for w in caught:
        key = (w.category, str(w.message))
        if key not in said and not issubclass(w.category, skip):
            said.add(key)
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


#: Most sizes one ``-k`` may name: each is at least one fit, so more is a typo, not a sweep.
MAX_SIZES = 1000


def parse_range(text: str, name: str = "-k", most: int | None = None) -> list[int]:
    """``"3"`` → [3]; ``"1-8"`` → [1..8]; ``"2,4,8"`` → [2, 4, 8].

    Sizes must lie in 1..``most`` (when given) and number at most :data:`MAX_SIZES`; both are
    checked on the bounds of each range, before any list is built.
    """
    parts: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            if "-" in part.strip().lstrip("-"):
                lo, hi = (int(p) for p in part.split("-", 1))
            else:
                lo = hi = int(part)
            parts.append((lo, hi))
    except ValueError:
        fail(f"{name} takes a number, a range such as 1-8, or a list such as 2,4,8; got {text!r}")
    for lo, hi in parts:
        if lo > hi:
            fail(f"{name}: the range {lo}-{hi} is empty; write the smaller size first")
        if lo < 1:
            fail(f"{name} must name sizes of at least 1; got {text!r}")
        if most is not None and hi > most:
            fail(
                f"{name} names the size {hi}, more than the {most} rows of the data; "
                f"sizes run from 1 to {most}"
            )
    count = sum(hi - lo + 1 for lo, hi in parts)
    if count > MAX_SIZES:
        fail(
            f"{name} {text!r} names {count} sizes; sweep at most {MAX_SIZES} "
            "(e.g. -k 1-20 or -k 2,4,8,16)"
        )
    return [k for lo, hi in parts for k in range(lo, hi + 1)]


def max_work_option(what: str, default: float | None = 1e15):
    """``--max-work``, the command line's ``max_work=``: the most multiply-adds ``what`` may
    take before it is refused (the library's default, :data:`latentfit._memory.MAX_WORK`,
    about a day of one CPU core; written out here so that ``--help`` imports no torch).
    ``inf`` lifts the limit; read it with :func:`work_limit`. ``default=None``: a command that
    refuses the option where it would be ignored sees whether it was given."""
    return typer.Option(
        default,
        "--max-work",
        help=f"The most multiply-adds {what} may take before it is refused (about a day of "
        "one CPU core by default; inf: no limit).",
        callback=_positive_or_inf,
        show_default=default is not None,
    )


def _positive_or_inf(param: typer.CallbackParam, value):
    if value is not None and not value >= 1:  # NaN too
        fail(f"{param.opts[0]} takes a number of multiply-adds >= 1, such as 1e16; got {value}")
    return value


def work_limit(value: float) -> int | None:
    """``--max-work`` as the library's ``max_work``: an int, or None (no limit) for inf."""
    import math

    return None if math.isinf(value) else int(value)


def force_option():
    """The ``--force``/``--overwrite`` flag every command that writes files takes."""
    return typer.Option(
        False,
        "--force/--no-force",
        "--overwrite",
        help="Replace output files that already exist.",
    )


def output_option(default, name: str, help: str):
    """A ``Path`` option naming a file the command writes (``--out``, ``--labels``, ``--plot``,
    ...), read by :func:`output_file`."""
    return typer.Option(default, name, parser=output_file(name), metavar="<path>", help=help)


#: Names of files that hold something other than comma-separated text (binary tables,
#: compressed files, images, other delimiters): refused for a table the command writes as CSV
NOT_CSV = frozenset(
    (".npy", ".npz", ".parquet", ".pq", ".feather", ".arrow", ".json", ".xlsx", ".xls", ".h5")
    + (".hdf5", ".pkl", ".pickle", ".gz", ".bz2", ".xz", ".zip", ".tsv", ".png", ".jpg")
    + (".jpeg", ".pdf", ".svg", ".safetensors")
)


def csv_output_option(default, name: str, help: str):
    """:func:`output_option` for a table the command writes as comma-separated text
    (``--labels``, ``--states``, ``predict --out``, ...): a name whose suffix says another
    format is refused as the command line is read (see :func:`csv_output_file`)."""
    return typer.Option(default, name, parser=csv_output_file(name), metavar="<path>", help=help)


def csv_output_file(option: str):
    """:func:`output_file`, refusing a name of :data:`NOT_CSV`: ``--labels lab.npy`` or
    ``predict --out lab.parquet`` wrote CSV text under that name, which numpy and pyarrow then
    could not read."""
    base = output_file(option)

    def parse(value) -> Path:
        path = base(value)
        suffix = path.suffix.lower()
        if suffix in NOT_CSV:
            fail(
                f"{option} {path}: {option} is written as comma-separated text, which a "
                f"{suffix} file does not hold; name it .csv (or .txt)"
            )
        return path

    return parse


def output_file(option: str):
    """The parser of ``option``, a file to write: the value as a ``Path``, refusing a name that
    ends in a slash (or in ``/.`` or ``/..``), or an empty one. Such a name means a folder, and
    ``Path`` drops a trailing slash (``Path("new/")`` is ``new``): ``--out new/`` wrote a
    file named ``new``. ``-`` (standard output, to most tools) is refused too: it wrote a file
    named ``-``."""

    def parse(value) -> Path:
        from latentfit._files import names_a_folder

        text = os.fspath(value)
        if not text:
            fail(f"{option} is empty: give the name of a file to write")
        if text == "-":  # the usual name of standard output, which a file named - is not
            fail(
                f"{option} - would write a file named '-', not standard output: leave "
                f"{option} out where the command prints its result, or name the file ./-"
            )
        if names_a_folder(text):
            seps = os.sep + (os.altsep or "")
            last = text.rstrip(seps).rsplit(os.sep, 1)[-1]
            if text[-1] in seps:
                inside = text
            else:  # x/. -> x/, . -> (the current folder), x/.. -> x/../
                inside = text[:-1] if last == "." else text + os.sep
            fail(
                f"{option} {text} names a folder, and {option} is a file to write: give the "
                f"file's name, e.g. {inside}NAME"
            )
        return Path(value)

    return parse


def check_outputs(outputs, inputs=(), force: bool = False) -> None:
    """Refuse unwritable outputs before any work (see :func:`latentfit._outputs.check_outputs`);
    ``outputs`` are ``(path, option)`` pairs or :class:`~latentfit._outputs.Output` entries."""
    from latentfit._outputs import Output
    from latentfit._outputs import check_outputs as check
    from latentfit.errors import OutputError

    entries = [
        o if isinstance(o, Output) else Output(Path(o[0]), o[1])
        for o in outputs
        if isinstance(o, Output) or o[0] is not None
    ]
    try:
        check(entries, inputs, force=force)
    except OutputError as err:
        fail(str(err))


@contextmanager
def written_together(outputs, inputs=(), force: bool = False):
    """The writes that end a command, all or none: ``outputs`` (as for :func:`check_outputs`)
    are checked again first (a file made, or a folder made read-only, while the command worked
    is refused before anything is written); if a write in the block then fails (a full disk, a
    figure that cannot be drawn), the outputs written before it are put back as they were
    (:class:`latentfit._files.all_or_none`) and a note names them after the error."""
    from latentfit._files import all_or_none
    from latentfit._outputs import Output
    from latentfit.errors import OutputError

    check_outputs(outputs, inputs, force)
    # a folder output (the tour's report) is written as the files it names
    together = all_or_none(
        path for o in outputs for path in (o.files() if isinstance(o, Output) else [o[0]])
    )
    try:
        with together:
            yield
    except OutputError as err:  # a write that failed midway, not worded by the command
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        _note_undone(together.undone)
        raise typer.Exit(2) from None
    except BaseException:
        _note_undone(together.undone)
        raise


def _note_undone(undone) -> None:
    if undone:
        typer.secho(
            f"note: {', '.join(f'{path} {what}' for path, what in undone)}: a command writes "
            "its outputs all or none",
            err=True,
            fg=typer.colors.YELLOW,
        )


def check_device(device: str, option: str = "--device") -> None:
    """Refuse an unknown or absent torch device before any work."""
    from latentfit._validation import resolve_device
    from latentfit.errors import ParameterError

    try:
        resolve_device(device)
    except ParameterError as err:
        fail(f"{option}: {cli_words(str(err))}")


def check_settings(model, k: str | None = "-k") -> None:
    """Refuse the model's settings, in the command's words, before any data are read: the
    estimator's own data-free check (``_checked_parameters``, the one its ``fit`` starts
    with). A wrong ``--covariance``, ``--init`` or ``--missing`` was otherwise named only
    after the whole DATA file had been read, as the model met it."""
    check = getattr(model, "_checked_parameters", None) or model._check_parameters
    try:
        check()
    except (ValueError, TypeError) as err:
        fail(cli_words(str(err), None, k))


#: What DATA may be, for the help of every command that reads a table.
DATA_HELP = (
    "Data file: delimited text (.csv, .tsv, .txt; delimiter and header sniffed, or set by "
    "--delimiter and --header/--no-header), .npy, .npz or "
    "Parquet, one row per sample. Leave it out to use --dataset."
)
#: Files at least this large (.npy, Parquet) are streamed by commands whose model can fit
#: chunk by chunk (``--stream-above``), instead of being read into memory.
STREAM_ABOVE_MIB = 64.0


def data_argument(help: str = DATA_HELP):
    """The optional DATA argument of a command that reads a table (see :func:`load_data`)."""
    return typer.Argument(None, help=help, show_default=False, metavar="DATA")


def dataset_option():
    """``--dataset NAME``: a bundled data set in place of DATA."""
    return typer.Option(
        None,
        "--dataset",
        help="A bundled data set instead of DATA: faithful, geyser or mnist.",
        show_default=False,
    )


def delimiter_option():
    """``--delimiter``: the field delimiter of a text DATA file."""
    return typer.Option(
        "auto",
        "--delimiter",
        help="Field delimiter of a text DATA file: auto (sniffed), comma, tab, semicolon, pipe, "
        "whitespace (runs of spaces, as numpy.savetxt writes) or any one character.",
        callback=_delimiter,
    )


def _delimiter(value):
    """The callback of ``--delimiter``: a value that is no delimiter is refused as the command
    line is read. It was refused only when a text file came to be read, so with a bundled data
    set or a .npy file ``--delimiter zzz`` was ignored and the command went on."""
    if value is None or value.lower() == "auto":
        return value
    from latentfit.datasets._files import parse_delimiter
    from latentfit.errors import ParameterError

    try:
        parse_delimiter(value)
    except ParameterError as err:
        fail(f"--{err}")
    return value


def header_option():
    """``--header/--no-header``: whether the first line of a text DATA file names the columns
    (None when neither is given: sniffed)."""
    return typer.Option(
        None,
        "--header/--no-header",
        help="Whether the first line of a text DATA file names the columns. Default: sniffed "
        "(names when it holds text over columns of numbers), with a warning where that line "
        "could be either.",
        show_default=False,
    )


def stream_option():
    """``--stream-above MIB``: the size from which .npy and Parquet DATA are streamed."""
    return typer.Option(
        STREAM_ABOVE_MIB,
        "--stream-above",
        min=0,
        callback=_not_nan,
        help="Fit .npy and Parquet DATA of at least this many MiB chunk by chunk from the file "
        "(out of core) instead of reading it into memory; 0 streams every such file.",
    )


def data_source(data: Path | None, dataset: str | None) -> str:
    """Check that exactly one of DATA and ``--dataset`` is given; return a name for it."""
    if (data is None) == (dataset is None):
        fail(
            ("give DATA or --dataset, not both" if data is not None else "no data given")
            + ": name a data file, or a bundled data set with --dataset faithful, geyser or mnist"
        )
    return str(data) if data is not None else dataset


def split_columns(columns, option: str = "--columns") -> list | None:
    """``"a,b"`` (a ``--columns`` value) or a list (repeated ``--column``) → list, or None
    when the option was not given (None, or an empty list of repeated ``--column``).

    An empty name (``--columns ""``, ``a,,b``, a trailing comma) and a column named twice are
    refused, naming ``option``: neither can mean what was typed."""
    if columns is None:
        return None
    shown = columns if isinstance(columns, str) else ",".join(map(str, columns))
    if isinstance(columns, str):
        columns = columns.split(",")
    names = [str(c).strip() for c in columns]
    if not names:
        return None
    if any(not c for c in names):
        fail(
            f"{option} {shown!r} holds an empty column name; name each column once, separated "
            "by commas (e.g. a,b), or leave the option out to use every column"
        )
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        fail(
            f"{option} {shown!r} names the column(s) {', '.join(twice)} more than once; "
            "name each column once"
        )
    return names


#: The largest ``--seed``, that of the API (``latentfit._validation.SEED_MAX``, not imported:
#: it would load torch before ``--help``): torch's CPU generator keeps only the low 32 bits of
#: a seed, so --seed 0 and --seed 4294967296 would give the same run; seeds run from 0 to
#: 2**32 - 1.
SEED_MAX = 2**32 - 1


def seed_option(help: str = "Seed for the initialisation."):
    """``--seed``: a whole number from 0 to :data:`SEED_MAX`, checked when the command line is
    read (before any data are loaded)."""
    return typer.Option(0, "--seed", min=0, max=SEED_MAX, help=help)


def reg_covar_option():
    """``--reg-covar`` of the Gaussian mixtures' commands (``reg_covar``): at least 0, finite."""
    return typer.Option(
        1e-6,
        "--reg-covar",
        min=0.0,
        help="Added to the diagonal of every covariance: keeps them positive definite.",
        callback=finite_number,
    )


def finite_number(param: typer.CallbackParam, value):
    """The callback of a number option: NaN and infinity are refused as the command line is
    read, naming the option (click's ranges let NaN through: every comparison with it fails)."""
    import math

    if value is not None and not math.isfinite(value):
        fail(f"{param.opts[0]} must be a finite number; got {value}")
    return value


def _not_nan(value):
    """The callback of ``--stream-above``: infinity means never stream; NaN means nothing."""
    if value is not None and value != value:
        fail("--stream-above takes a number of MiB such as 64 (0 streams every file); got nan")
    return value


def check_number(
    option: str,
    value: float,
    *,
    minimum: float | None = None,
    above: bool = False,
    maximum: float | None = None,
    example: str = "",
) -> None:
    """Refuse a NaN or infinite float option, or one below ``minimum`` (``above``: at or below
    it) or above ``maximum``, naming the option and the value."""
    import math

    hint = f" (e.g. {example})" if example else ""
    if not math.isfinite(value):
        fail(f"{option} must be a finite number{hint}; got {value}")
    if minimum is not None and (value <= minimum if above else value < minimum):
        bound = f"greater than {minimum:g}" if above else f"at least {minimum:g}"
        fail(f"{option} must be {bound}{hint}; got {value:g}")
    if maximum is not None and value > maximum:
        fail(f"{option} must be at most {maximum:g}{hint}; got {value:g}")


def load_data(
    path: Path | None,
    columns=None,
    *,
    dataset: str | None = None,
    delimiter: str | None = None,
    allow_nan: bool = False,
    nan_advice: str | None = None,
    header: bool | None = None,
):
    """Read DATA (a file) or ``--dataset`` (a bundled set; exactly one of the two) into a
    float64 tensor, keeping ``columns`` (names or positions), with the ``--delimiter`` and
    ``--header`` given (None: sniffed); loader errors become CLI errors in the command's
    words (:func:`cli_words`), ``nan_advice`` (where given) in place of the loader's advice
    for a NaN."""
    import re

    import latentfit.datasets as datasets

    data_source(path, dataset)
    cols = split_columns(columns)
    try:
        if dataset is not None:
            return datasets.load_dataset(dataset, columns=cols).data
        return datasets.load_array(
            path, columns=cols, allow_nan=allow_nan, delimiter=delimiter, header=header
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        text = str(err)
        if nan_advice is not None:
            text = re.sub(MISSING_ADVICE, nan_advice, text)
        fail(cli_words(text))


def stream_path(path: Path | None, stream_above: float) -> bool:
    """Whether DATA is a .npy or Parquet file large enough to be fitted out of core."""
    if path is None or not path.is_file():
        return False
    if path.suffix.lower() not in (".npy", ".parquet", ".pq"):
        return False
    return path.stat().st_size >= stream_above * 2**20


#: The file in a ``--checkpoint-dir`` that records the options of the run that wrote it, so
#: that a resume with other settings is refused in the command line's words.
RUN_OPTIONS_FILE = "options.json"
#: The files a training run writes into its ``--checkpoint-dir``: the checkpoint it resumes
#: from and the options file above. No other output of the command may name them.
CHECKPOINT_FILES = ("last.pt", RUN_OPTIONS_FILE)
#: Options a resumed training run may change: how the data are read (the trainer checks the
#: rows themselves), where and how it reports, and more epochs (the trainer's free settings).
_FREE_OPTIONS = frozenset(
    {"data", "dataset", "idx", "delimiter", "header", "old_k", "epochs", "checkpoint_dir",
     "metrics_csv", "eval_samples", "out", "plot", "force", "device", "quiet", "as_json"}
)  # fmt: skip


def _run_options(ctx: typer.Context) -> dict:
    """The options of the command being run (``ctx``) that define its training run (every
    parameter but :data:`_FREE_OPTIONS`), by parameter name, as JSON values."""
    import json

    run = {k: v for k, v in ctx.params.items() if k not in _FREE_OPTIONS}
    return json.loads(json.dumps(run, default=str))


def record_run_options(ctx: typer.Context, checkpoint_dir: Path | None) -> None:
    """Write the run's options into a fresh ``--checkpoint-dir`` (one without ``last.pt``),
    for :func:`resume_words` to compare a later run against; only the first process of a
    ``torchrun`` writes."""
    import json
    import os

    if checkpoint_dir is None or (checkpoint_dir / "last.pt").exists():
        return
    if os.environ.get("RANK", "0") != "0":
        return
    from latentfit._files import atomic_path, write_target

    write_target(checkpoint_dir).mkdir(parents=True, exist_ok=True)  # through a dangling link
    with atomic_path(checkpoint_dir / RUN_OPTIONS_FILE) as tmp:
        tmp.write_text(json.dumps(_run_options(ctx), indent=1) + "\n")


def _shown_option(param, value) -> str:
    """``--lr 0.001``; a switch as the flag that gives its value (``--no-binarize``)."""
    if isinstance(value, bool) and param.secondary_opts:
        return param.opts[0] if value else param.secondary_opts[0]
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"{param.opts[0]} {'(not given)' if value is None else shown}"


def resume_words(
    ctx: typer.Context, text: str, checkpoint_dir: Path | None, data: str
) -> str | None:
    """The trainer's refusal to resume a checkpoint written by a different run (``text``) in
    the command line's words: the options that differ from those the checkpoint's run
    recorded (:func:`record_run_options`), with their values then and now, and what the
    trainer says of ``--epochs`` and of the rows of DATA (``data``). None when ``text`` is
    not that refusal, or says nothing of these (a checkpoint written from Python, which
    recorded no options): the trainer's own words are then the message."""
    import json
    import re

    found = re.match(r"checkpoint (.*) was written by a different run: (.*?)\. Resume with", text)
    if checkpoint_dir is None or found is None:
        return None
    try:
        then = json.loads((checkpoint_dir / RUN_OPTIONS_FILE).read_text())
    except (OSError, ValueError):
        return None
    now = _run_options(ctx)
    params = {p.name: p for p in ctx.command.params}
    changed = [
        f"{_shown_option(params[k], then.get(k))} in the checkpoint, "
        f"{_shown_option(params[k], now.get(k))} now"
        for k in now
        if k in params and k in then and then[k] != now[k]
    ]
    # what no option says: the epochs done, and rows other than the checkpoint's
    epochs = re.search(r"has done (\d+) epochs, this run asks for (\d+)", found.group(2))
    if epochs:
        changed.append(
            f"--epochs {epochs.group(2)}: the checkpoint has done {epochs.group(1)} epochs"
        )
    if re.search(r"(training|validation) data: not the rows", found.group(2)):
        changed.append(
            f"{data}: not the rows the checkpoint was trained on (DATA and --seed choose them)"
        )
    if not changed:
        return None
    return (
        f"checkpoint {found.group(1)} was written by a run with other options: "
        + "; ".join(changed)
        + ". Resume with the checkpoint's options (a larger --epochs continues its run), or "
        "start afresh in another --checkpoint-dir (or delete that checkpoint)"
    )
