"""``latentfit sample MODEL``: draw rows from a saved model of any kind, VAEs included;
registered as ``latentfit sample`` by :mod:`latentfit.cli.models`."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    cli_words,
    fail,
    force_option,
    max_work_option,
    output_option,
    seed_option,
    work_limit,
    written_together,
)
from latentfit.cli.hmm_options import device_option
from latentfit.cli.model_data import SEQUENCE_KINDS, load_model, model_columns, vae_generator
from latentfit.cli.output import check_json_size, json_option, print_json
from latentfit.cli.tables import write_table
from latentfit.cli.vae import reads_codes


def _image_shape(model, text: str) -> tuple[int, ...]:
    from latentfit.cli.vae import _sizes

    d = model.spec.x_dim
    if text:
        shape = tuple(_sizes(text, "--image-shape", "28,28"))
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] not in (1, 3, 4)):
            fail(
                f"--image-shape takes H,W (or C,H,W with 1, 3 or 4 channels), such as 28,28; "
                f"got {text!r}"
            )
    elif model.spec.image_shape:
        shape = tuple(model.spec.image_shape)
    else:
        side = math.isqrt(d)
        shape = (side, side) if side * side == d else (1, d)
    if math.prod(shape) != d:
        fail(f"--image-shape {shape} does not hold the model's {d} values")
    return shape


def draw(model, kind: str, n: int, seed: int, max_work=1e15):
    """(draws (n, d), labels (n,) or None, the labels' name): the draws of a saved model
    with ``seed``, exactly as the same calls on the model in memory give them; ``max_work``
    (``--max-work``) caps a flow's or DDPM's arithmetic."""
    import numpy as np

    if kind == "vae":
        from latentfit.vae.images import sample_images

        return sample_images(model, n, vae_generator(model, seed)).numpy(), None, None
    if kind in SEQUENCE_KINDS:  # an SSM's states are vectors: (n, k)
        X, states = model.sample(n, random_state=seed)
        return np.asarray(X), np.asarray(states), "state"
    if kind == "density":
        return (
            np.asarray(model.sample(n, random_state=seed, max_work=work_limit(max_work))),
            None,
            None,
        )
    model.set_params(random_state=seed)  # mixtures and FA/PPCA draw from their random_state
    out = model.sample(n)
    if isinstance(out, tuple):
        return np.asarray(out[0]), np.asarray(out[1]), "component"
    return np.asarray(out), None, None


def sample(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model file (latentfit fit ... --out)."
    ),
    n: int = typer.Option(64, "-n", "--n", min=1, help="Number of draws."),
    seed: int = seed_option("Seed of the draws (the same seed gives the same draws)."),
    out: Path | None = output_option(
        None,
        "--out",
        help=".csv, .npy or (VAEs) .png image grid. Default: CSV on standard output; a VAE "
        "writes samples.png.",
    ),
    image_shape: str = typer.Option(
        "", "--image-shape", help="VAEs, .png: H,W (default: from the model, or square)."
    ),
    force: bool = force_option(),
    max_work: float = max_work_option("a flow's or DDPM's draws"),
    device: str = device_option(),
    as_json: bool = json_option(),
):
    """Draw rows from a saved model of any kind, VAEs included.

    A mixture or HMM also gives each draw's component or state; a VAE the decoded means of
    z ~ p(z), written as an image grid (samples.png) unless --out names a .csv or .npy (a
    categorical VAE fitted to integer codes writes each mean as its nearest code)."""
    import numpy as np

    from latentfit._validation import check_sample_count
    from latentfit.errors import LatentfitError
    from latentfit.io import read_header

    check_device(device)
    check_outputs([(out, "--out")], [model_path], force=force)
    if out is None and not as_json:
        try:
            is_vae = read_header(model_path).get("kind") == "vae"
        except (LatentfitError, FileNotFoundError) as err:
            fail(str(err))
        if is_vae:
            out = Path("samples.png")  # what 'latentfit sample' has always written for a VAE
            check_outputs([(out, "--out")], [model_path], force=force)
    if out is not None and out.suffix.lower() not in (".csv", ".npy", ".png"):
        fail(f"--out {out}: write .csv, .npy or (VAEs) .png")
    model, kind = load_model(model_path, device)
    if out is not None and out.suffix.lower() == ".png" and kind != "vae":
        fail(
            f"--out {out}: a .png grid is drawn for VAEs; write .csv or .npy for a "
            f"{type(model).__name__} (flows and DDPM: 'latentfit density sample')"
        )
    if image_shape and kind != "vae":
        fail(
            f"--image-shape shapes a VAE's .png grid; a {type(model).__name__} writes rows "
            "(.csv or .npy): drop --image-shape"
        )
    shape = _image_shape(model, image_shape) if kind == "vae" else None
    if kind != "vae":  # sized here to name the option; a VAE's draws are sized by its spec
        width = getattr(model, "n_features_in_", None) or getattr(model, "n_features", None)
        try:
            check_sample_count(n, int(width or 1))
        except LatentfitError as err:
            fail(cli_words(str(err), count="-n"))
    if as_json:  # a number is held as text and objects, not 8 bytes: sized apart
        d = model.spec.x_dim if kind == "vae" else int(width or 1)
        check_json_size(
            n * (d + 1), f"{n:,} draws", "write them with --out FILE.npy or .csv, or a smaller -n"
        )
    try:
        X, labels, label = draw(model, kind, n, seed, max_work)
    except (ValueError, FloatingPointError) as err:
        # a model sizes its draws itself (a VAE by its layers, FA with its latents): -n
        fail(cli_words(str(err), count="-n"))
    suffix = out.suffix.lower() if out is not None else ".csv"
    likelihood = model.decoder.likelihood if kind == "vae" else None
    if suffix != ".png" and hasattr(likelihood, "n_levels"):
        import torch

        # a categorical likelihood: each mean written as its nearest level on the data's scale,
        # the integer code (fitted to codes) or code / (N - 1), so that score reads the file
        # back (a .png grid shows the means themselves)
        X = likelihood.levels(torch.as_tensor(X)).numpy()
        if not reads_codes(model):
            X = X / (likelihood.n_levels - 1)
    names = model_columns(model, kind)
    X2 = X.reshape(len(X), -1)
    if names is None or len(names) != X2.shape[1]:
        names = [f"x{j}" for j in range(X2.shape[1])]
    with written_together([(out, "--out")], [model_path], force):
        if suffix == ".png":
            import torch

            from latentfit.vae.images import save_grid

            try:
                save_grid(out, torch.as_tensor(X2), shape, nrow=math.ceil(math.sqrt(n)))
            except (LatentfitError, OSError) as err:
                fail(str(err))
        elif suffix == ".npy":
            from latentfit._files import atomic_path

            try:
                with atomic_path(out) as tmp, tmp.open("wb") as f:
                    np.save(f, X2)
            except (LatentfitError, OSError) as err:
                fail(str(err))
        elif out is not None or not as_json:
            cols = [X2[:, j] for j in range(X2.shape[1])]
            header = list(names)
            if labels is not None and labels.ndim == 2:  # continuous states, one column each
                cols += [labels[:, j] for j in range(labels.shape[1])]
                header += [f"{label}_{j}" for j in range(labels.shape[1])]
            elif labels is not None:
                cols.append(labels)
                header.append(label)
            write_table(out, header, cols)
    if as_json:  # once --out is written: a summary on stdout says the command succeeded
        result = {"model": str(model_path), "class": type(model).__name__, "kind": kind}
        result.update(columns=names, samples=X2)
        if labels is not None:
            result[f"{label}s"] = labels
        print_json(result)
    if out is not None and not as_json:
        typer.echo(f"{n} samples written to {out}")
