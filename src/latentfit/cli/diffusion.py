"""``latentfit fit diffusion``: a DDPM from the command line (score and sample it with
``latentfit density score|sample``)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_number,
    check_settings,
    delimiter_option,
    fail,
    finite_number,
    fit_app,
    force_option,
    header_option,
    output_option,
    record_run_options,
    resume_words,
    seed_option,
    split_words,
)
from latentfit.cli.flows import (
    check_out,
    check_read_as,
    history_rows,
    level_scale_of,
    levels_of,
    load_split,
    read_as_option,
    record_data_columns,
    report_history,
    report_stop,
    written_out,
)
from latentfit.cli.output import json_option


@fit_app.command("diffusion")
def fit_diffusion(
    ctx: typer.Context,
    dataset: str = typer.Option("mnist", help="mnist, digits, faithful, geyser or a data file."),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    steps: int = typer.Option(1000, min=1, help="Diffusion steps T."),
    schedule: str = typer.Option("linear", help="linear or cosine."),
    variance: str = typer.Option(
        "small",
        help="Reverse variance: small (β̃_t), large (β_t) or learned (per pixel, Nichol & "
        "Dhariwal 2021).",
    ),
    vlb_weight: float = typer.Option(
        0.001,
        "--vlb-weight",
        min=0.0,
        help="Weight of the bound in the loss (learned variance).",
        callback=finite_number,
    ),
    gaussian_skip: bool = typer.Option(
        False,
        "--gaussian-skip/--no-gaussian-skip",
        help="Add E[ε | x_t] under a Gaussian fitted to the data to the network's ε.",
    ),
    clip_denoised: bool = typer.Option(
        False,
        "--clip-denoised/--no-clip-denoised",
        help="Clip the predicted x_0 to the grey levels' range (discrete data).",
    ),
    decoder_fraction: float = typer.Option(
        0.0,
        "--decoder-fraction",
        help="Extra share of training rows drawn at t = 1 (terms weighted by 1/p(t)).",
        callback=finite_number,
    ),
    skip_floor: float | None = typer.Option(
        None,
        "--skip-floor",
        help="Variance floor of the skip's Gaussian (default: chosen on held-out training rows).",
        callback=finite_number,
    ),
    hidden: int = typer.Option(512, min=1, help="Hidden units of the denoising MLP."),
    n_hidden: int = typer.Option(3, "--n-hidden", min=1, help="Hidden layers of the MLP."),
    discrete: bool | None = typer.Option(
        None, help="Grey-level data with the discretised decoder. Default: on for mnist, digits."
    ),
    levels: int | None = typer.Option(
        None, min=2, help="Grey levels of --discrete data. Default: 256, or 17 for digits."
    ),
    read_as: str | None = read_as_option(),
    epochs: int = typer.Option(50, min=1, help="Passes over the training rows."),
    batch_size: int = typer.Option(100, "--batch-size", min=1, help="Rows per gradient step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate.", callback=finite_number),
    patience: int = typer.Option(
        0, min=0, help="Early-stopping patience in epochs (0: never stop)."
    ),
    eval_t: int = typer.Option(
        50, "--eval-t", min=0, help="Draws of t per test row for the bound (0: every t)."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Resume from / write last.pt in this folder."
    ),
    out: Path = output_option(Path("ddpm.safetensors"), "--out", help="Where to save the model."),
    force: bool = force_option(),
    seed: int = seed_option("Seed for the data split, the weights and the batches."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ..."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar."),
    as_json: bool = json_option(),
):
    """Train a DDPM with the simplified loss; print its variational bound on the test split."""
    from latentfit.diffusion import DDPM

    check_out(out, force, [dataset], checkpoint_dir)
    check_device(device)
    check_number("--lr", lr, minimum=0, above=True, example="1e-3")
    if skip_floor is not None and not gaussian_skip:
        fail(
            "--skip-floor sets the variance floor of --gaussian-skip's Gaussian, which is off: "
            "add --gaussian-skip, or drop --skip-floor"
        )
    check_read_as(read_as)
    model = DDPM(
        steps,
        schedule=schedule,
        variance=variance,
        vlb_weight=vlb_weight,
        gaussian_skip=gaussian_skip,
        skip_floor=skip_floor,
        clip_denoised=clip_denoised,
        decoder_fraction=decoder_fraction,
        hidden=hidden,
        n_hidden=n_hidden,
        eval_timesteps=eval_t or None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience or None,
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        random_state=seed,
        device=device,
        verbose=not quiet,
    )
    check_settings(model, None)  # before the data; what they decide is set below
    split = load_split(dataset, seed, delimiter, model="a DDPM", header=header)
    disc = split.image_shape is not None if discrete is None else discrete
    n_levels = levels_of(dataset, levels, disc, "--discrete")
    scale = level_scale_of(split, n_levels, read_as, "--discrete", disc)
    record_run_options(ctx, checkpoint_dir)
    try:
        model.set_params(discrete=disc, n_levels=n_levels, level_scale=scale)
        model.fit(split.train, X_val=split.val)
    except ValueError as err:
        words = resume_words(ctx, str(err), checkpoint_dir, dataset)
        fail(words or split_words(str(err), split.split, "train", dataset))
    try:  # the validation rows chose the epoch: the bound is reported on the test rows
        terms = model.bound_terms(split.test, eval_t or None, random_state=seed)
    except ValueError as err:
        fail(split_words(str(err), split.split, "test", dataset))
    d = split.test.shape[1]
    bits = {k: float(v.mean()) / (d * math.log(2)) for k, v in terms._asdict().items()}
    record_data_columns(model, dataset, delimiter, header)
    with written_out(out, force, [dataset]):
        model.save(out)
    if as_json:
        from latentfit.cli.output import print_json

        return print_json(
            {
                "model": "DDPM",
                "data": split.name,
                "n_train": split.train.shape[0],
                "n_val": split.val.shape[0],
                "n_test": split.test.shape[0],
                "steps": steps,
                "history": history_rows(model.history_),
                "test_bound_bits_per_dim": bits,
                "model_file": str(out),
            }
        )
    typer.echo(
        f"{split.name}: {split.train.shape[0]} train / {split.val.shape[0]} val / "
        f"{split.test.shape[0]} test, T={steps}"
    )
    report_history(model.history_)
    report_stop(model.history_, checkpoint_dir, epochs)
    typer.echo(
        "test bound (bits/dim, an upper bound on the NLL): "
        + ", ".join(f"{k} {v:.4f}" for k, v in bits.items())
    )
    typer.echo(f"model saved to {out}")
