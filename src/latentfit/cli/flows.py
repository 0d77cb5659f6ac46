"""``latentfit fit flow`` and ``latentfit density score|sample``: flow and diffusion density
models from the command line (the saved files are read back with :func:`latentfit.load`)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from latentfit.cli.app import (
    CHECKPOINT_FILES,
    app,
    check_device,
    check_number,
    check_outputs,
    cli_words,
    csv_output_option,
    data_source,
    dataset_option,
    delimiter_option,
    fail,
    finite_number,
    fit_app,
    force_option,
    header_option,
    max_work_option,
    output_option,
    record_run_options,
    resume_words,
    seed_option,
    split_words,
    work_limit,
    written_together,
)
from latentfit.cli.hmm_options import device_option
from latentfit.cli.output import json_option
from latentfit.cli.usage import Typer

density_app = Typer(
    help="Score data with, or sample from, a saved flow or diffusion model.",
    no_args_is_help=True,
)
app.add_typer(density_app, name="density")


def _input_files(inputs) -> list[Path | None]:
    """The inputs that are files: named data sets (mnist, digits) cannot be overwritten."""
    named = ("mnist", "digits", "faithful", "geyser")
    return [None if str(p) in named else Path(p) for p in inputs if p is not None]


def check_out(out: Path, force: bool, inputs=(), checkpoint_dir: Path | None = None) -> None:
    """The shared output checks (before any work) for --out and --checkpoint-dir."""
    from latentfit._outputs import Output

    check_outputs(
        [
            Output(Path(out), "--out"),
            Output(checkpoint_dir, "--checkpoint-dir", folder=True, holds=CHECKPOINT_FILES),
        ],
        _input_files(inputs),
        force=force,
    )


def written_out(out: Path | None, force: bool, inputs=()):
    """The block that writes --out at the end of the command (:func:`written_together`):
    --out is checked again first, so that a file made there while the command worked is
    refused without --force."""
    return written_together([(out, "--out")], _input_files(inputs), force)


def load_split(
    data: str,
    seed: int,
    delimiter: str | None = None,
    model: str = "a flow",
    header: bool | None = None,
):
    """A named data set (mnist, digits) or a data file, split as for VAEs; ``model`` names
    the model in the error of a file too small to split."""
    from latentfit.vae.data import load_vae_data

    try:
        return load_vae_data(data, seed=seed, delimiter=delimiter, model=model, header=header)
    except (ValueError, FileNotFoundError, ImportError) as err:
        fail(cli_words(str(err)))


def record_data_columns(model, data: str, delimiter: str | None, header: bool | None) -> None:
    """Name the columns of a flow or DDPM fitted by ``fit flow|diffusion`` (stored in its
    file, shown by ``latentfit show`` and matched by name in ``score``): a data file's header,
    or the feature names of the bundled faithful and geyser tables (the images have none)."""
    from latentfit.cli.model_data import record_columns

    if data in ("faithful", "geyser"):
        record_columns(model, None, None, dataset=data)
    elif data not in ("mnist", "digits"):
        record_columns(model, Path(data), None, delimiter, header=header)


def levels_of(name: str, levels: int | None, on: bool, switch: str) -> int:
    """The number of grey levels: 17 for scikit-learn's digits (0..16), else ``levels``
    (default 256; checked here, so that its error names the option). ``--levels`` is refused
    where it would be ignored: on digits at any other count, and where the data are not
    treated as grey levels (``on`` false: ``switch``, e.g. ``--dequantize``, is off)."""
    from latentfit.errors import LatentfitError
    from latentfit.flows.objectives import check_n_levels

    if levels is not None and not on:
        fail(
            f"--levels sets the grey levels of {switch} data, which is off here: add {switch}, "
            "or drop --levels"
        )
    if name == "digits":
        if levels not in (None, 17):
            fail(
                f"digits hold 17 grey levels (0..16), so --levels {levels} does not fit them: "
                "drop --levels (or pass --levels 17)"
            )
        return 17
    try:
        return check_n_levels(256 if levels is None else levels, name="--levels")
    except LatentfitError as err:
        fail(str(err))


def read_codes(data, n_levels: int, read_as: str | None, what: str, binary: str) -> bool:
    """Whether level data ``data`` (a VAEData) are read as integer level codes 0..N-1 (else
    intensities k/(N-1) in [0, 1]): ``--read-as`` where given, else codes where a value
    exceeds 1. A file of 0s and 1s alone is either (the codes 0 and 1, or the levels 0 and
    N-1), and is refused unless ``--read-as`` says which; ``what`` names the reader (``a
    categorical likelihood of 5 levels``), ``binary`` the options for binary data."""
    from latentfit.vae.data import SPLITS

    if read_as is not None:
        return read_as == "codes"
    parts = [getattr(data, part) for part in SPLITS]
    if max(float(x.max()) for x in parts if x.numel()) > 1:
        return True
    if n_levels > 2 and all(bool(((x == 0) | (x == 1)).all()) for x in parts):
        fail(
            f"{data.name} holds only 0s and 1s, which {what} reads two ways: the level codes 0 "
            f"and 1, or the intensities 0 and 1 (the levels 0 and {n_levels - 1}); say which "
            f"with --read-as codes or --read-as intensities (binary data: {binary})"
        )
    return False


def read_as_option():
    """``--read-as`` of the commands that fit level data."""
    return typer.Option(
        None,
        "--read-as",
        help="codes or intensities: how level data are read, integer level codes 0..N-1 or "
        "intensities k/(N-1) in [0, 1] (default: codes where a value exceeds 1; a file of 0s "
        "and 1s alone must say). The model file records it.",
    )


def check_read_as(read_as: str | None) -> None:
    """Refuse a ``--read-as`` that is neither codes nor intensities, before the data are read."""
    if read_as not in (None, "codes", "intensities"):
        fail(f"--read-as must be one of codes, intensities; got {read_as!r}")


def level_scale_of(split, n_levels: int, read_as: str | None, switch: str, on: bool):
    """The ``level_scale`` of a flow or DDPM fitted to ``split`` by ``fit flow|diffusion``:
    1 (integer codes) or n_levels - 1 (intensities) where ``switch`` (``--dequantize``,
    ``--discrete``) is ``on``, from ``--read-as`` or the data (:func:`read_codes`); None
    (real data) otherwise, where ``--read-as`` is refused."""
    check_read_as(read_as)
    if not on:
        if read_as is not None:
            fail(
                f"--read-as says how {switch} data are read as levels, which is off here: add "
                f"{switch}, or drop --read-as"
            )
        return None
    what = f"{switch} with {n_levels} levels"
    codes = read_codes(split, n_levels, read_as, what, "--levels 2")
    return 1.0 if codes else float(n_levels - 1)


def history_rows(history) -> list[dict]:
    """The per-epoch bounds (nats per row) as plain records for --json."""
    return [
        {"epoch": r["epoch"], "train_bound": r["train_bound"], "val_bound": r.get("val_bound")}
        for r in history
    ]


def report_history(history) -> None:
    typer.echo(f"{'epoch':>5} {'train log p':>12} {'val log p':>10}")
    for r in history:
        val = r.get("val_bound")
        typer.echo(
            f"{r['epoch']:>5} {r['train_bound']:>12.2f} {'' if val is None else f'{val:10.2f}'}"
        )


def report_stop(history, checkpoint_dir: Path | None, epochs: int) -> None:
    """A line for a training run that Ctrl-C stopped before its ``epochs`` ended
    (:mod:`latentfit._interrupt`): where it stopped and how it resumes."""
    from latentfit._interrupt import stop_requested, stopped_by

    if not stop_requested() or len(history) >= epochs:
        return
    typer.echo(
        f"stopped by {stopped_by()} "
        + (
            f"after {len(history)} whole epoch(s), the best epoch's model kept; "
            if history
            else "before its first epoch ended, the weights of its last step kept; "
        )
        + (
            f"the same command with --force (which replaces the model file) resumes it from "
            f"its checkpoint in {checkpoint_dir}"
            if checkpoint_dir is not None
            else "not resumable: it had no --checkpoint-dir"
        )
    )


@fit_app.command("flow")
def fit_flow(
    ctx: typer.Context,
    data: str | None = typer.Argument(
        None,
        help="mnist, digits or a data file (CSV, .npy, .npz, Parquet).",
        show_default=False,
        metavar="DATA",
    ),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    flow: str = typer.Option("maf", help="maf, realnvp or spline."),
    layers: int = typer.Option(5, min=1, help="Number of flow layers."),
    hidden: int = typer.Option(256, min=1, help="Hidden units of each layer's network."),
    n_hidden: int = typer.Option(1, "--n-hidden", min=1, help="Hidden layers per network."),
    dequantize: bool | None = typer.Option(
        None,
        help="Treat the data as grey levels (uniform dequantisation). Default: on for mnist and "
        "digits, off for files.",
    ),
    levels: int | None = typer.Option(
        None, min=2, help="Grey levels of --dequantize data. Default: 256, or 17 for digits."
    ),
    read_as: str | None = read_as_option(),
    epochs: int = typer.Option(20, min=1, help="Passes over the training rows."),
    batch_size: int = typer.Option(100, "--batch-size", min=1, help="Rows per gradient step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate.", callback=finite_number),
    patience: int = typer.Option(
        5, min=0, help="Early-stopping patience in epochs (0: never stop)."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Resume from / write last.pt in this folder."
    ),
    out: Path = output_option(Path("flow.safetensors"), "--out", help="Where to save the model."),
    force: bool = force_option(),
    seed: int = seed_option("Seed for the data split, the weights and the batches."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    as_json: bool = json_option(),
):
    """Fit a normalizing flow by exact maximum likelihood; print held-out log p(x) and bits/dim."""
    from latentfit.flows import MAF, FlowDensity, NeuralSplineFlow, RealNVP

    data = data_source(data, dataset)
    check_out(out, force, [data], checkpoint_dir)
    check_device(device)
    check_number("--lr", lr, minimum=0, above=True, example="1e-3")
    check_read_as(read_as)
    if flow not in ("maf", "realnvp", "spline"):
        fail(f"--flow must be one of maf, realnvp, spline; got {flow!r}")
    split = load_split(data, seed, delimiter, header=header)
    deq = split.image_shape is not None if dequantize is None else dequantize
    L = levels_of(data, levels, deq, "--dequantize")
    scale = level_scale_of(split, L, read_as, "--dequantize", deq)
    record_run_options(ctx, checkpoint_dir)
    try:
        classes = {"maf": MAF, "realnvp": RealNVP, "spline": NeuralSplineFlow}
        cls = classes.get(flow)
        model = (
            (cls() if cls else FlowDensity(flow))
            .set_params(
                n_layers=layers,
                hidden=hidden,
                n_hidden=n_hidden,
                dequantize=deq,
                n_levels=L,
                level_scale=scale,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                patience=patience or None,
                checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
                random_state=seed,
                device=device,
                verbose=not quiet,
            )
            .fit(split.train, X_val=split.val)
        )
    except ValueError as err:
        words = resume_words(ctx, str(err), checkpoint_dir, data)
        fail(words or split_words(str(err), split.split, "train", data))
    try:
        bpd = model.bits_per_dim(split.test)  # the validation rows chose the epoch
    except ValueError as err:
        fail(split_words(str(err), split.split, "test", data))
    record_data_columns(model, data, delimiter, header)
    with written_out(out, force, [data]):
        model.save(out)
    what = "dequantisation bound" if deq else "exact"
    nats = -bpd * split.test.shape[1] * math.log(2)
    if as_json:
        from latentfit.cli.output import print_json

        return print_json(
            {
                "model": type(model).__name__,
                "flow": flow,
                "data": split.name,
                "n_train": split.train.shape[0],
                "n_val": split.val.shape[0],
                "n_test": split.test.shape[0],
                "history": history_rows(model.history_),
                "test_log_likelihood": nats,
                "test_bits_per_dim": bpd,
                "bound": what,
                "model_file": str(out),
            }
        )
    typer.echo(
        f"{split.name}: {split.train.shape[0]} train / {split.val.shape[0]} val / "
        f"{split.test.shape[0]} test, {flow}"
    )
    report_history(model.history_)
    report_stop(model.history_, checkpoint_dir, epochs)
    typer.echo(f"test: {nats:.2f} nats, {bpd:.4f} bits/dim ({what})")
    typer.echo(f"model saved to {out}")


@density_app.command("score")
def score(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model saved by 'latentfit fit flow|diffusion'."
    ),
    data: str = typer.Argument(
        "mnist",
        help="mnist, digits, faithful or geyser (their test split) or a data file.",
        metavar="DATA",
    ),
    n: int = typer.Option(0, min=0, help="Score the first N rows (0: all)."),
    columns: str | None = typer.Option(
        None, help="Comma-separated columns to use (default: the model's columns by name, or all)."
    ),
    out: Path | None = csv_output_option(
        None, "--out", help="Write the per-row scores (one a line)."
    ),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    force: bool = force_option(),
    seed: int = seed_option("Seed of the split of mnist and digits into test rows."),
    device: str = device_option(),
    as_json: bool = json_option(),
):
    """Held-out log p(x) per row of a saved flow or diffusion model.

    Flows: exact, or a dequantisation bound; DDPM: a one-draw estimate of minus its bound,
    which moves with the rows scored beside it."""
    import numpy as np

    from latentfit import load

    check_device(device)
    if out is not None:
        check_out(out, force, [model_path, data])
    try:
        model = load(model_path, device=device)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if not hasattr(model, "bits_per_dim"):
        fail(f"{model_path} holds a {type(model).__name__}; this command scores flows and DDPMs")
    if data in ("mnist", "digits", "faithful", "geyser"):
        if columns is not None:
            fail(f"--columns picks the columns of a data file; {data} is used whole: drop it")
        X = load_split(data, seed).test
    else:
        from latentfit.cli.model_data import read_model_data

        # the model's columns by name where the file and the model both name them, as score
        X = read_model_data(model, "density", Path(data), columns, delimiter, header)
    X = X[: n or None]
    try:
        ll = model.score_samples(X)
    except ValueError as err:
        fail(cli_words(str(err), data))
    d = X.shape[1]
    mean = float(np.mean(ll))
    if out is not None:
        from latentfit._files import atomic_path

        with written_out(out, force, [model_path, data]), atomic_path(out) as tmp:
            np.savetxt(tmp, ll, fmt="%.6f")
    if as_json:
        from latentfit.cli.output import print_json

        return print_json(
            {
                "model": type(model).__name__,
                "n_rows": X.shape[0],
                "log_likelihood_mean": mean,
                "bits_per_dim": -mean / (d * math.log(2)),
                "scores_file": None if out is None else str(out),
            }
        )
    typer.echo(
        f"{X.shape[0]} rows: log p(x) = {mean:.2f} nats, {-mean / (d * math.log(2)):.4f} bits/dim"
    )
    if out is not None:
        typer.echo(f"scores written to {out}")


@density_app.command("sample")
def sample(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model saved by 'latentfit fit flow|diffusion'."
    ),
    n: int = typer.Option(64, "-n", "--n", min=1, help="Number of draws."),
    out: Path = output_option(
        Path("samples.png"), "--out", help=".png (an image grid), .csv or .npy."
    ),
    force: bool = force_option(),
    seed: int = seed_option("Seed of the draws."),
    max_work: float = max_work_option("the draws"),
    device: str = device_option(),
    as_json: bool = json_option(),
):
    """Draw from the model; images (a square number of pixels) can be written as a PNG grid."""
    import numpy as np
    import torch

    from latentfit import load
    from latentfit._validation import check_sample_count
    from latentfit.errors import LatentfitError

    check_device(device)
    check_out(out, force, [model_path])
    suffix = out.suffix.lower()
    if suffix not in (".png", ".csv", ".npy"):
        fail(f"--out {out}: write .png, .csv or .npy")
    try:
        model = load(model_path, device=device)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if not hasattr(model, "sample") or not hasattr(model, "bits_per_dim"):
        fail(f"{model_path} holds a {type(model).__name__}; this command samples flows and DDPMs")
    try:
        check_sample_count(n, int(getattr(model, "n_features_in_", 1) or 1))
        draws = model.sample(n, random_state=seed, max_work=work_limit(max_work))
    except LatentfitError as err:  # ResourceLimitError for an -n off by digits, NaN draws
        fail(cli_words(str(err), count="-n"))
    from latentfit._files import atomic_path

    if suffix == ".png":
        d = draws.shape[1]
        side = math.isqrt(d)
        if side * side != d:
            fail(f"the model's {d} values are not a square image; write .csv or .npy instead")
    with written_out(out, force, [model_path]):
        if suffix == ".png":
            from latentfit.vae.images import save_grid

            imgs = torch.as_tensor(draws).float()
            if getattr(model, "level_scale_", None) == 1.0:  # trained on integer levels
                imgs = imgs / (model.n_levels - 1)
            save_grid(out, imgs, (side, side), nrow=math.ceil(math.sqrt(n)))
        elif suffix == ".csv":
            # every digit the draws' dtype holds: levels k/(N-1) of 8-bit data must read back
            # on their grid (6 digits put 254/255 at 0.996078, off it by 1.1e-4 of a level)
            fmt = "%.9g" if draws.dtype == np.float32 else "%.17g"
            with atomic_path(out) as tmp:
                np.savetxt(tmp, draws, delimiter=",", fmt=fmt)
        else:
            with atomic_path(out) as tmp, tmp.open("wb") as f:
                np.save(f, draws)
    if as_json:
        from latentfit.cli.output import print_json

        return print_json({"model": type(model).__name__, "n": n, "file": str(out)})
    typer.echo(f"{n} draws written to {out}")
