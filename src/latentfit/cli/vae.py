"""``latentfit fit vae`` and ``latentfit eval``: VAEs from the command line (``latentfit sample``,
which draws from every kind of saved model, VAEs included, lives in :mod:`latentfit.cli.sample`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from latentfit.cli.app import (
    CHECKPOINT_FILES,
    MAX_WORK_WORDS,
    RAISE_MAX_WORK,
    app,
    check_device,
    check_outputs,
    cli_words,
    csv_output_option,
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
from latentfit.cli.figures import figure_format, new_figure, plot_option, save_figure
from latentfit.cli.output import json_option

#: What ``-k`` names on these commands: in latentfit ``-k`` is always the number of
#: components or states, so the VAE commands refuse it with the name of their option.
_NOT_K = (
    "-k is the number of components or states in latentfit; the samples of z per data point "
    "are --samples (e.g. --samples 5000)"
)


def samples_words(text: str, option: str = "--samples") -> str:
    """:func:`~latentfit.vae.marginal_log_likelihood`'s words for its ``k`` in the command
    line's: the option that set it, and ``--max-work`` for ``max_work``."""
    import re

    text = re.sub(r"\bk=([\d,]+)", rf"{option} \1", text)
    text = re.sub(r"\bk <= ([\d,]+)", rf"{option} <= \1", text)
    return text.replace(MAX_WORK_WORDS, RAISE_MAX_WORK)


def _refuse_k():
    """A hidden ``-k`` that says which option to use instead of click's 'No such option'."""
    return typer.Option(None, "-k", hidden=True, help=_NOT_K)


def _data(
    dataset: str,
    idx: Path | None,
    seed: int,
    split=None,
    delimiter: str | None = None,
    header: bool | None = None,
):
    from latentfit.vae.data import load_vae_data

    try:
        return load_vae_data(
            dataset, seed=seed, idx_folder=idx, split=split, delimiter=delimiter, header=header
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        fail(cli_words(str(err)))


def _load(model_path: Path, device: str | None = None):
    from latentfit.io import read_header
    from latentfit.vae import load_model

    try:
        header = read_header(model_path) if model_path.is_file() else {}
        if header.get("kind", "vae") != "vae":  # the Python advice of load_model, in CLI words
            fail(
                f"{model_path} holds a {header.get('class')}, not a VAE; 'latentfit eval' "
                f"scores VAEs: use 'latentfit score {model_path} DATA' for its log-likelihood"
            )
        return load_model(model_path, device=device)
    except (ValueError, FileNotFoundError) as err:  # ModelFileError, ResourceLimitError
        fail(str(err))


#: The most levels ``--levels`` takes: the most a saved model's spec holds (``n_levels``).
MAX_LEVELS = 65536


def reads_codes(model) -> bool:
    """Whether ``model`` (a VAE) was fitted to integer level codes 0..N-1 (``fit vae
    --likelihood categorical`` on a file whose values exceed 1): its files are read and
    written as codes. A model file that does not say holds intensities."""
    return getattr(model, "level_scale_", None) == 1.0


def from_codes(model, X, words, more: str = "fit the model with --levels"):
    """The rows ``X`` (n, d) of a file as ``model`` reads them: for a VAE fitted to integer
    codes (:func:`reads_codes`), the codes as the intensities code / (N - 1) its encoder reads
    (as the Python functions read an integer array, :func:`~latentfit.vae.likelihoods.
    integer_levels`), after an error naming the first value that is no code (``words`` turns
    the library's message into the command line's, ``more`` says how to get more levels);
    anything else as it is."""
    from latentfit.errors import DataError
    from latentfit.vae.likelihoods import integer_levels, level_codes

    if not reads_codes(model):
        return X
    try:
        return integer_levels(model, level_codes(X, model.spec.n_levels, "X", more))
    except DataError as err:
        fail(words(str(err)))


def _levels(dataset: str, levels: int | None, likelihood: str) -> int:
    """The levels of ``--likelihood categorical`` (256; 17 for digits, as ``fit flow``
    counts them), with ``--levels`` refused where it would be ignored or not fit a spec."""
    from latentfit.cli.flows import levels_of

    if likelihood != "categorical":
        if levels is not None:
            fail(
                f"--levels sets the levels of --likelihood categorical; --likelihood "
                f"{likelihood} has none: add --likelihood categorical, or drop --levels"
            )
        return 256  # the spec's default, unused by other likelihoods
    if levels is not None and levels > MAX_LEVELS:
        fail(
            f"--levels takes 2 to {MAX_LEVELS:,} levels (the decoder emits a logit per level "
            f"and column); got {levels:,}"
        )
    return levels_of(dataset, levels, True, "--likelihood categorical")


def _sizes(text: str, name: str, example: str = "200,200") -> list[int]:
    parts = [s.strip() for s in text.split(",")]
    if any(not s for s in parts):
        fail(
            f"{name} {text!r} holds an empty size; give comma-separated positive whole numbers "
            f"such as {example}"
        )
    try:
        sizes = [int(s) for s in parts]
    except ValueError:
        fail(f"{name} takes comma-separated positive whole numbers such as {example}; got {text!r}")
    if not sizes or min(sizes) < 1:
        fail(f"{name} needs at least one positive size; got {text!r}")
    return sizes


#: ``fit vae``'s choices, checked before the data are read: option -> the values it takes.
_CHOICES = {
    "--objective": ("elbo", "beta", "iwae", "dreg"),
    "--kind": ("gaussian", "discrete", "ladder"),
    "--network": ("mlp", "conv"),
    "--likelihood": ("bernoulli", "gaussian", "categorical"),
    "--read-as": (None, "codes", "intensities"),
    "--flow": ("none", "planar", "iaf"),
    "--activation": ("tanh", "relu", "elu", "softplus"),
    "--kl-schedule": ("none", "linear", "cyclical"),
}


def _check_fit_options(choices: dict, lr, beta, free_bits, warmup_epochs, kind, flow) -> None:
    """Every ``fit vae`` option whose value alone can be wrong, refused before any data are
    read or any network is built."""
    from latentfit.cli.app import check_number

    for option, value in choices.items():
        if value not in _CHOICES[option]:
            fail(
                f"{option} must be one of {', '.join(filter(None, _CHOICES[option]))}; got {value!r}"
            )
    if flow != "none" and kind != "gaussian":
        fail(f"--flow {flow} is available for --kind gaussian only, not --kind {kind}")
    check_number("--lr", lr, minimum=0, above=True, example="1e-3")
    check_number("--beta", beta, minimum=0, example="1 or 4")
    check_number("--free-bits", free_bits, minimum=0, example="0 or 0.5")
    check_number("--warmup-epochs", warmup_epochs, minimum=0, example="10")
    ignored = [f"{o} {v:g}" for o, v, off in (("--beta", beta, 1.0), ("--free-bits", free_bits, 0.0))
               if v != off]  # fmt: skip
    if choices["--objective"] in ("iwae", "dreg") and ignored:
        fail(
            f"--objective {choices['--objective']} has no KL term to weight or floor, so "
            f"{' and '.join(ignored)} would be ignored; use --objective elbo or beta for them "
            "(--kl-schedule linear warms up the iwae bound's KL part)"
        )


def _check_network_memory(build, hidden: str, latent: int, device: str) -> None:
    """Refuse, before a weight is allocated, a network whose weights (with their gradients and
    Adam's moments) exceed the memory available: --hidden 1000000000 is a typo, not a VAE."""
    from latentfit._memory import check_module_memory
    from latentfit.errors import ResourceLimitError

    try:
        check_module_memory(
            lambda _layers, _depth: build(),
            f"--hidden {hidden} and --latent {latent} (weights, gradients and Adam's moments)",
            device=device,
            hint="use smaller --hidden or --latent",
        )
    except ResourceLimitError as err:
        fail(f"the VAE does not fit in memory on {device}: {err}")


def _rows(dataset: str, delimiter: str | None = None, header: bool | None = None):
    """Every row of a data source, in its order (eval --all-rows)."""
    from latentfit.vae.data import source_rows

    if dataset in ("mnist", "digits", "mnist-idx"):
        fail(
            f"--all-rows scores a file of held-out rows; {dataset!r} is a bundled source whose "
            "rows may include the model's training rows"
        )
    try:
        return source_rows(dataset, None, delimiter, header)[0]
    except (ValueError, FileNotFoundError, ImportError) as err:
        fail(str(err))


@fit_app.command("vae")
def fit_vae(
    ctx: typer.Context,
    dataset: str = typer.Option(
        "mnist", help="mnist, digits, mnist-idx (with --idx) or a data file."
    ),
    idx: Path | None = typer.Option(None, help="Folder of the MNIST IDX files for mnist-idx."),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    objective: str = typer.Option("elbo", help="elbo, beta, iwae or dreg."),
    samples: int = typer.Option(
        1, "--samples", min=1, help="Samples of z per data point (the k of the iwae/dreg bounds)."
    ),
    old_k: int | None = _refuse_k(),
    beta: float = typer.Option(
        1.0, help="KL multiplier for --objective beta.", callback=finite_number
    ),
    kind: str = typer.Option("gaussian", help="gaussian, discrete or ladder."),
    latent: int = typer.Option(
        50, min=1, help="Latent dimension (discrete: number of categoricals)."
    ),
    hidden: str = typer.Option("200,200", help="Hidden layer sizes, comma-separated."),
    network: str = typer.Option("mlp", help="mlp or conv (image data)."),
    likelihood: str = typer.Option("bernoulli", help="bernoulli, gaussian or categorical."),
    levels: int | None = typer.Option(
        None,
        "--levels",
        min=2,
        help="Levels of --likelihood categorical (default: 256, or 17 for digits). A file "
        "whose values exceed 1 holds integer codes 0..N-1; else intensities in [0, 1].",
    ),
    read_as: str | None = typer.Option(
        None,
        "--read-as",
        help="codes or intensities: how --likelihood categorical reads the data, integer "
        "level codes 0..N-1 or intensities k/(N-1) in [0, 1] (default: codes where a value "
        "exceeds 1; a file of 0s and 1s alone must say). The model file records it.",
    ),
    flow: str = typer.Option("none", help="none, planar or iaf (gaussian kind)."),
    activation: str = typer.Option("tanh", help="tanh, relu, elu or softplus."),
    epochs: int = typer.Option(20, min=1, help="Passes over the training rows."),
    batch_size: int = typer.Option(100, "--batch-size", min=1, help="Rows per gradient step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate.", callback=finite_number),
    kl_schedule: str = typer.Option("none", "--kl-schedule", help="none, linear or cyclical."),
    warmup_epochs: float = typer.Option(
        10.0,
        "--warmup-epochs",
        help="Epochs of the KL warm-up (linear, cyclical).",
        callback=finite_number,
    ),
    free_bits: float = typer.Option(
        0.0, "--free-bits", help="KL floor per latent dimension (nats).", callback=finite_number
    ),
    patience: int = typer.Option(
        10, min=0, help="Early-stopping patience in epochs (0: never stop)."
    ),
    binarize: bool = typer.Option(True, help="Dynamic binarisation of [0, 1] data (Bernoulli)."),
    grad_accum: int = typer.Option(
        1, "--grad-accum", min=1, help="Batches whose gradients are summed per optimiser step."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Resume from/write last.pt."
    ),
    metrics_csv: Path | None = csv_output_option(
        None, "--metrics-csv", help="Write the per-epoch metrics to this CSV file."
    ),
    eval_samples: int = typer.Option(
        0,
        "--eval-samples",
        min=0,
        help="Report log p(x) on the test rows with this many importance samples (0: not).",
    ),
    max_work: float = max_work_option("the --eval-samples log p(x)"),
    out: Path = output_option(Path("vae.safetensors"), "--out", help="Where to save the model."),
    plot: Path | None = plot_option(
        "the bound per epoch and validation rows above their reconstructions"
    ),
    force: bool = force_option(),
    seed: int = seed_option("Seed for the data split, the weights and the batches."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    as_json: bool = json_option(),
):
    """Train a VAE and save it; print the bound per epoch, active units and KL per dimension.

    The data are cut into training, validation and test rows (seeded by --seed). Early
    stopping and the best weights use the validation rows only; --eval-samples scores the test rows,
    which the saved model records so that 'latentfit eval' scores exactly them.

    Under ``torchrun --nproc_per_node N`` every process trains on its share of each batch
    (DistributedDataParallel); rank 0 prints and saves.
    """
    from latentfit._outputs import Output
    from latentfit.cli.flows import read_codes
    from latentfit.errors import DataError, LatentfitError, ParameterError, ResourceLimitError
    from latentfit.train import TrainConfig, train
    from latentfit.train import distributed as dist_utils
    from latentfit.vae import (
        build_model,
        diagnose,
        init_decoder_bias,
        make_objective,
        marginal_log_likelihood,
        save_model,
    )
    from latentfit.vae.data import SPLITS
    from latentfit.vae.evaluate import check_work
    from latentfit.vae.likelihoods import check_model_data
    from latentfit.vae.objectives import check_pass_memory

    if old_k is not None:
        fail(_NOT_K)
    # A resumed run (last.pt in --checkpoint-dir) continues its own metrics file.
    resuming = checkpoint_dir is not None and (checkpoint_dir / "last.pt").is_file()
    named = ("mnist", "digits", "mnist-idx")  # bundled data sets, not files
    inputs = [None if dataset in named else Path(dataset), idx]
    if dataset == "mnist-idx" and idx is not None:
        from latentfit.datasets._idx import idx_files

        inputs += idx_files(idx)  # the files read from the folder, each an input
    check_outputs(
        [
            Output(out, "--out"),
            Output(checkpoint_dir, "--checkpoint-dir", folder=True, holds=CHECKPOINT_FILES),
            Output(metrics_csv, "--metrics-csv", may_exist=resuming),
            Output(plot, "--plot"),
        ],
        inputs,
        force=force,
    )
    fmt = figure_format(plot)
    check_device(device)
    choices = {"--objective": objective, "--kind": kind, "--network": network,
               "--likelihood": likelihood, "--flow": flow, "--activation": activation,
               "--kl-schedule": kl_schedule, "--read-as": read_as}  # fmt: skip
    _check_fit_options(choices, lr, beta, free_bits, warmup_epochs, kind, flow)
    if read_as is not None and likelihood != "categorical":
        fail(
            f"--read-as says how --likelihood categorical reads level data; --likelihood "
            f"{likelihood} has no levels: add --likelihood categorical, or drop --read-as"
        )
    n_levels = _levels(dataset, levels, likelihood)
    sizes = _sizes(hidden, "--hidden")
    dist_utils.init_from_env()
    data = _data(dataset, idx, seed, delimiter=delimiter, header=header)
    if binarize and likelihood == "bernoulli" and not data.intensities:
        fail(f"{data.name} is not in [0, 1]; pass --no-binarize or use --likelihood gaussian")
    bern = likelihood == "bernoulli" and binarize
    image = list(data.image_shape) if data.image_shape else None
    if network == "conv" and image is None:
        fail(
            f"--network conv reads images (mnist, digits, mnist-idx); {data.name} is a table "
            f"of {data.train.shape[1]} columns: use --network mlp"
        )

    def build():
        return build_model(
            x_dim=data.train.shape[1],
            z_dim=latent,
            hidden=sizes,
            kind=kind,
            activation=activation,
            network=network,
            image_shape=image,
            likelihood=likelihood,
            n_levels=n_levels,
            flow=None if flow == "none" else flow,
            seed=seed,
        )

    _check_network_memory(build, hidden, latent, device)
    record_run_options(ctx, checkpoint_dir)
    try:
        model = build()
        if likelihood == "categorical":  # saved: score, eval, predict, sample read it so
            codes = read_codes(
                data,
                n_levels,
                read_as,
                f"a categorical likelihood of {n_levels} levels",
                "--levels 2, or --likelihood bernoulli",
            )
            model.level_scale_ = 1.0 if codes else float(n_levels - 1)
            parts = {
                part: from_codes(
                    model,
                    getattr(data, part),
                    lambda text, part=part: split_words(text, data.split, part, dataset),
                    more="pass --levels",
                )
                for part in SPLITS
            }
            data = data._replace(**parts)
        # every row against the likelihood's support, the test rows too: only eval would
        # read them, after the training and the save
        for part in SPLITS:
            try:
                check_model_data(model, getattr(data, part))
            except DataError as err:
                fail(split_words(str(err), data.split, part, dataset))
        init_decoder_bias(model, data.train)
        obj = make_objective(objective, k=samples, beta=beta, free_bits=free_bits)
        # a training batch's pass of --samples, sized before the first epoch starts
        rows = min(batch_size, data.train.shape[0]) if batch_size > 0 else data.train.shape[0]
        check_pass_memory(model, data.train[:rows], samples, "--samples")
        if eval_samples:  # the test rows' log p(x), refused before the training it would end
            try:
                check_work(model, data.test.shape[0], eval_samples, work_limit(max_work))
            except ResourceLimitError as err:
                fail(samples_words(str(err), "--eval-samples"))
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            grad_accum=grad_accum,
            kl_schedule=kl_schedule,
            warmup_epochs=warmup_epochs,
            patience=patience or None,
            binarize=bern,
            seed=seed,
            device=device,
            checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
            metrics_csv=str(metrics_csv) if metrics_csv else None,
            progress=not quiet,
        )
        res = train(model, obj, data.train, data.val, cfg)
    except (ValueError, TypeError) as err:
        words = resume_words(ctx, str(err), checkpoint_dir, dataset)
        fail(words or split_words(str(err), data.split, "train", dataset))
    except (MemoryError, RuntimeError) as err:
        text = str(err)
        if not isinstance(err, MemoryError) and "alloc" not in text and "out of memory" not in text:
            raise
        fail(
            f"the VAE does not fit in memory on {device} ({text.splitlines()[0]}); "
            "use smaller --hidden, --latent or --batch-size"
        )
    # saved with the model: eval scores exactly the test rows, binarised as in training
    model.split = dataclasses.replace(data.split, binarized=bern)
    if dataset not in ("mnist", "digits", "mnist-idx"):
        from latentfit.cli.model_data import header_names

        names = header_names(Path(dataset), delimiter, header)  # saved: predict/score match them
        if names is not None and len(names) == data.train.shape[1]:
            model.feature_names = names
    if not dist_utils.is_main():
        return dist_utils.cleanup()
    import torch

    val, test = data.val.to(device), data.test.to(device)
    if bern:
        val = torch.bernoulli(val, generator=torch.Generator(val.device).manual_seed(seed + 1))
        test = torch.bernoulli(test, generator=torch.Generator(test.device).manual_seed(seed + 1))
    # seeded as the trainer's per-epoch diagnostics and as 'latentfit eval --seed' (which then
    # reports the same test log-likelihood): the global generator made every run differ
    diag = diagnose(model, val, generator=torch.Generator(val.device).manual_seed(seed + 2))
    ll = overflow = None
    if eval_samples and not res.stopped_on_request:  # Ctrl-C asked for the model, not a wait
        try:
            ll = marginal_log_likelihood(
                model,
                test,
                k=eval_samples,
                generator=torch.Generator(test.device).manual_seed(seed),
                progress=not quiet,
                max_work=work_limit(max_work),
            )
        except ParameterError as err:  # non-finite on test rows: the fit is kept, then said
            overflow = str(err).replace("X has", "the test split has", 1)
    with written_together(
        [(out, "--out"), (plot, "--plot")],
        inputs,
        force,
    ):
        try:
            save_model(model, out)
        except (LatentfitError, OSError) as err:
            fail(str(err))
        if plot is not None:
            from latentfit.plot import plot_convergence, plot_reconstructions

            fig, axes = new_figure(1, 2, figsize=(11, 4.5))
            if res.history:
                plot_convergence(res, ax=axes[0])
            else:  # Ctrl-C stopped it before an epoch ended: no bound to draw
                axes[0].text(0.5, 0.5, "stopped before its first epoch ended", ha="center")
                axes[0].set_axis_off()
            plot_reconstructions(model, val, n=32, image_shape=image, ax=axes[1])
            save_figure(fig, plot, fmt)
    if overflow is not None:
        fail(
            f"the fitted model is saved in {out}, but its test log-likelihood is not finite: "
            f"{overflow}. Score other rows with 'latentfit eval {out} --dataset FILE --all-rows'"
        )
    from latentfit._interrupt import stopped_by

    result = {
        "data": data.name,
        "objective": repr(obj),
        "history": [
            {
                "epoch": r["epoch"],
                "train_bound": r["train_bound"],
                "val_bound": r["val_bound"],
                "active_units": r.get("active_units"),
                "kl_total": r.get("kl_total"),
            }
            for r in res.history
        ],
        "best_val_bound": res.best_val_bound,
        "best_epoch": res.best_epoch,
        "n_skipped": res.n_skipped,
        "stopped_early": res.stopped_early,
        "stopped_by": stopped_by() if res.stopped_on_request else None,
        "steps": res.steps,
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
        "kl_per_dim": diag.kl_per_dim,
        "active_units": diag.n_active,
        "latent_units": diag.unit_variance.numel(),
        "mutual_info": diag.mutual_info,
        "test_log_likelihood": None if ll is None else ll.mean,
        "test_bits_per_dim": None if ll is None else ll.bits_per_dim,
        "eval_samples": eval_samples or None,
        "model_file": str(out),
    }
    if likelihood == "categorical":
        result.update(levels=n_levels, level_codes=reads_codes(model))
    if as_json:
        from latentfit.cli.output import print_json

        print_json(result)
    else:
        _print_fit(result)
    dist_utils.cleanup()


def _print_fit(r: dict) -> None:
    echo = typer.echo
    echo(f"{r['data']}, {r['objective']}")
    if r.get("levels"):
        L = r["levels"]
        scale = f"integer codes 0..{L - 1}" if r["level_codes"] else "intensities in [0, 1]"
        echo(f"categorical likelihood of {L} levels; the data read as {scale}")
    echo(f"{'epoch':>5} {'train bound':>12} {'val bound':>10} {'active':>6} {'KL':>7}")
    for h in r["history"]:
        kl, active = h["kl_total"], h["active_units"]
        echo(
            f"{h['epoch']:>5} {h['train_bound']:>12.2f} {h['val_bound']:>10.2f} "
            f"{'' if active is None else active:>6} {'' if kl is None else f'{kl:7.2f}'}"
        )
    if r["best_epoch"] > 0:
        echo(
            f"best validation bound {r['best_val_bound']:.2f} nats at epoch {r['best_epoch']}"
            + (f"; {r['n_skipped']} non-finite steps skipped" if r["n_skipped"] else "")
            + ("; stopped early" if r["stopped_early"] else "")
        )
    if r["stopped_by"]:
        echo(
            f"stopped by {r['stopped_by']} after {r['steps']:,} optimiser steps ("
            + (
                f"the model of epoch {r['best_epoch']}, the best"
                if r["best_epoch"] > 0
                else "before the end of the first epoch: the weights of that step"
            )
            + "); "
            + (
                f"the same command with --force (which replaces {r['model_file']}) resumes it "
                f"from its checkpoint in {r['checkpoint_dir']}"
                if r["checkpoint_dir"]
                else "not resumable: it had no --checkpoint-dir"
            )
            + (
                "; the test log-likelihood was skipped: 'latentfit eval' computes it"
                if r["eval_samples"]
                else ""
            )
        )
    if r["kl_per_dim"] is not None:
        kl = r["kl_per_dim"]
        echo(f"KL per dimension (nats): {' '.join(f'{v:.2f}' for v in kl.tolist())}")
    mi = r["mutual_info"]
    echo(
        f"active units {r['active_units']}/{r['latent_units']}"
        + (f", I(x; z) ≈ {mi:.2f} nats" if mi is not None else "")
    )
    if r["test_log_likelihood"] is not None:
        echo(
            f"test log p(x) (k={r['eval_samples']}): {r['test_log_likelihood']:.2f} nats, "
            f"{r['test_bits_per_dim']:.4f} bits/dim"
        )
    echo(f"model saved to {r['model_file']}")


@app.command("eval")
def eval_vae(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A VAE saved by 'latentfit fit vae'."
    ),
    dataset: str | None = typer.Option(
        None,
        help="mnist, digits, mnist-idx or a data file (default: the data the model was fitted "
        "to, as recorded in the model file).",
    ),
    idx: Path | None = typer.Option(None, help="Folder of the MNIST IDX files for mnist-idx."),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    samples: int = typer.Option(
        5000, "--samples", min=1, help="Importance samples per data point."
    ),
    old_k: int | None = _refuse_k(),
    n: int = typer.Option(0, min=0, help="Evaluate the first N test points (0: all)."),
    all_rows: bool = typer.Option(
        False,
        "--all-rows/--no-all-rows",
        help="Score every row of --dataset (a file of held-out rows) instead of the test rows "
        "the model recorded; needed for models saved without a split.",
    ),
    binarize: bool | None = typer.Option(
        None,
        "--binarize/--no-binarize",
        help="Binarise [0, 1] test data once (seeded). Default: as the model was fitted "
        "(binarised where its file does not say).",
    ),
    seed: int = seed_option("Seed of the binarisation and the importance samples."),
    max_work: float = max_work_option("the importance samples"),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    as_json: bool = json_option(),
):
    """Importance-sampled test log-likelihood of a VAE, in nats and bits per dimension.

    It scores the test rows recorded in the model file by 'latentfit fit vae' (after checking
    that --dataset holds the same data), never rows the model was trained or early-stopped on.
    """
    import torch

    from latentfit.vae import marginal_log_likelihood

    if old_k is not None:
        fail(_NOT_K)
    check_device(device)
    model = _load(model_path, device)
    if all_rows:
        if dataset is None:
            fail("--all-rows needs --dataset, the file of held-out rows to score")
        X = _rows(dataset, delimiter, header)
        name = dataset
    else:
        if model.split is None:
            fail(
                f"{model_path} records no train/validation/test split (it was not saved by "
                "'latentfit fit vae'), so its test rows are unknown; pass --all-rows with "
                "--dataset a file of rows the model was not fitted to"
            )
        source = model.split.source if dataset is None else dataset
        data = _data(source, idx, seed, split=model.split, delimiter=delimiter, header=header)
        X, name = data.test, data.name
    X = X[: n or None].to(device)
    if X.shape[1] != model.spec.x_dim:
        fail(f"the model expects {model.spec.x_dim} columns, {name} has {X.shape[1]}")
    X = from_codes(
        model,
        X,
        (lambda text: cli_words(text, name))
        if all_rows
        else (lambda text: split_words(text, data.split, "test", source)),
    )
    intensities = bool((X.min() >= 0) & (X.max() <= 1))
    if binarize is None:  # as in training: fit vae records it with the split
        said = None if model.split is None else model.split.binarized
        binarize = True if said is None else said
    if binarize and model.spec.likelihood == "bernoulli" and intensities:
        X = torch.bernoulli(X, generator=torch.Generator(X.device).manual_seed(seed + 1))
    try:
        ll = marginal_log_likelihood(
            model,
            X,
            k=samples,
            generator=torch.Generator(X.device).manual_seed(seed),
            progress=not quiet,
            max_work=work_limit(max_work),
        )
    except ValueError as err:  # DataError: data outside the likelihood's support, ...
        words = (
            cli_words(str(err), name)
            if all_rows
            else split_words(str(err), data.split, "test", source)
        )
        fail(samples_words(words))  # ResourceLimitError: --samples
    if as_json:
        from latentfit.cli.output import print_json

        return print_json(
            {
                "data": name,
                "n_rows": X.shape[0],
                "samples": samples,
                "log_likelihood_mean": ll.mean,
                "nll": ll.nll,
                "bits_per_dim": ll.bits_per_dim,
            }
        )
    typer.echo(
        f"{name}, {X.shape[0]} test points, k={samples}: log p(x) = {ll.mean:.2f} nats "
        f"(NLL {ll.nll:.2f}), {ll.bits_per_dim:.4f} bits/dim"
    )
