"""Pictures of a VAE: prior samples, reconstructions, latent interpolations and traversals.

Each function returns decoded means as a tensor (rows are flat images, n × d, on the CPU);
:func:`image_grid` tiles them into one array and :func:`save_grid` writes it as a PNG.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import torch

from latentfit._files import atomic_path
from latentfit._validation import (
    as_float_tensor,
    as_generator,
    as_numeric_array,
    check_positive_int,
    check_sample_count,
    first_nonfinite,
)
from latentfit.errors import DataError, ParameterError
from latentfit.model_tensors import overflowing_layer
from latentfit.vae.diagnostics import _eval_mode, model_rows
from latentfit.vae.likelihoods import input_columns
from latentfit.vae.objectives import hidden_width

__all__ = ["image_grid", "interpolate", "reconstruct", "sample_images", "save_grid", "traverse"]


def _row_width(model) -> int:
    """Numbers a decoded row holds on its way: latents, hidden layers and the image, from the
    model's spec (1 for a model without one: then only the count's type is checked)."""
    inner = hidden_width(model)
    if inner is None:
        return 1
    return inner + int(getattr(getattr(model, "module", model).spec, "x_dim", 0) or 0)


def _one_row(model, x, name: str) -> torch.Tensor:
    """``x``, one row of the model's data given as (d,) or (1, d), as ``model_rows`` takes it:
    (1, d) in the model's dtype, finite and in its likelihood's support. DataError naming
    ``name``, the shape given and the one expected otherwise (a wrong width reached the
    encoder as torch's "mat1 and mat2 shapes cannot be multiplied")."""
    row = as_float_tensor(
        x, name=name, ndim=None, allow_nan=True, min_samples=0, missing_hint=False
    )
    d = input_columns(model)
    width = "d" if d is None else str(d)
    if not (row.dim() == 1 or (row.dim() == 2 and row.shape[0] == 1)) or row.numel() == 0:
        raise DataError(
            f"{name} must be one row of the model's data, shape ({width},) or (1, {width}), "
            f"got shape {tuple(row.shape)}"
            + ("; flatten an image first, e.g. x.reshape(-1)" if row.dim() > 2 else "")
            + ("; pass one row, e.g. X[0]" if row.dim() == 2 and row.shape[0] > 1 else "")
        )
    if d is not None and row.shape[-1] != d:
        raise DataError(
            f"the model expects {d} columns, {name} has {row.shape[-1]} (shape "
            f"{tuple(row.shape)}); pass a row of the data the model was built for, {d} values"
        )
    return model_rows(model, row.reshape(1, -1), name)  # finite, in the support, model dtype


def _latent_values(values, like: torch.Tensor) -> torch.Tensor:
    """The values ``traverse`` sets a latent dimension to: a non-empty 1-D sequence of finite
    numbers (prior standard deviations), as a tensor like ``like``."""
    if values is None:
        return torch.linspace(-3, 3, 7, dtype=like.dtype, device=like.device)
    try:
        v = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        v = None
    if v is None or v.dim() != 1 or v.numel() == 0 or not bool(torch.isfinite(v).all()):
        raise ParameterError(
            "values must be a non-empty 1-D sequence of finite numbers (the latent values, in "
            f"prior standard deviations, e.g. [-2, 0, 2]), got {values!r:.80}"
        )
    return v.to(like)


def _latent_dims(dims, d_z: int) -> list[int]:
    """``dims`` as a list of latent indices 0 … d_z - 1 (one int is taken as [int])."""
    if isinstance(dims, (np.ndarray, torch.Tensor)):
        dims = dims.tolist()  # integer arrays: their entries as ints (floats stay refused)
    if isinstance(dims, numbers.Integral) and not isinstance(dims, bool):
        dims = [dims]
    try:
        out = list(dims)
    except TypeError:
        out = None
    if (
        not out
        or isinstance(dims, (str, bytes))
        or not all(
            isinstance(j, numbers.Integral) and not isinstance(j, bool) and 0 <= j < d_z
            for j in out
        )
    ):
        raise ParameterError(
            f"dims must be a non-empty list of latent dimensions, integers from 0 to "
            f"{d_z - 1} (the model has {d_z} latent dimensions), got {dims!r:.80}"
        )
    return [int(j) for j in out]


def sample_images(model, n: int = 64, generator=None) -> torch.Tensor:
    """Means of p(x | z) for n draws z ~ p(z): (n, d). ``n`` is refused up front where the
    draws cannot be held (``check_sample_count``)."""
    n = check_sample_count(n, _row_width(model), name="n")
    generator = as_generator(generator)
    with _eval_mode(model):
        z = model.sample_prior(n, generator)  # (n, d_z)
        means = model.decode(z).float().cpu()  # (n, d)
        idx = first_nonfinite(means)
        if idx is not None:
            found = overflowing_layer(model, lambda: model.decode(z[idx[0] : idx[0] + 1]))
            if found is not None and found[1]:
                where = f"the layer {found[0]} gives NaN or inf"
            else:  # finite in float64, beyond float32
                where = "its means exceed float32, in which draws are written" + (
                    f" (the layer {found[0]})" if found is not None else ""
                )
            raise ParameterError(
                f"the {type(model).__name__} drew a non-finite mean ({float(means[idx]):g}) at "
                f"row {idx[0]}, column {idx[1]}: {where}. Its weights are beyond what it can "
                "compute with (the fit diverged, or the model file was altered); fit it again"
            )
        return means


def reconstruct(model, X: torch.Tensor, generator=None) -> torch.Tensor:
    """Means of p(x | z) at z = E_q[z | x] for each row of X: (n, d)."""
    X = model_rows(model, X)
    generator = as_generator(generator)
    with _eval_mode(model):
        return model.decode(model.posterior_mean(X, generator=generator)).float().cpu()


def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, n_steps: int = 10, generator=None):
    """Decoded means along the straight line between E_q[z | x_a] and E_q[z | x_b]: (n_steps, d).

    ``x_a`` and ``x_b`` are single rows of the model's data, each of shape (d,) or (1, d)."""
    x_a, x_b = _one_row(model, x_a, "x_a"), _one_row(model, x_b, "x_b")
    n_steps = check_sample_count(n_steps, _row_width(model), name="n_steps")
    generator = as_generator(generator)
    with _eval_mode(model):
        z = model.posterior_mean(torch.cat([x_a, x_b]), generator=generator)  # (2, d_z)
        t = torch.linspace(0, 1, n_steps, dtype=z.dtype, device=z.device)[:, None]
        return model.decode((1 - t) * z[0] + t * z[1]).float().cpu()


def traverse(model, x: torch.Tensor, dims, values=None, generator=None) -> torch.Tensor:
    """Vary one latent dimension at a time around E_q[z | x], others fixed.

    ``x`` is a single row of the model's data, of shape (d,) or (1, d); ``dims`` the latent
    dimensions to vary (integers from 0 to d_z - 1, or one such integer). Returns
    (len(dims) · len(values), d): row block i holds dimension ``dims[i]`` set to each of
    ``values`` (default: -3 … 3 in 7 steps, prior standard deviations).
    """
    x = _one_row(model, x, "x")
    generator = as_generator(generator)
    with _eval_mode(model):
        z0 = model.posterior_mean(x, generator=generator)[0]  # (d_z,)
        dims = _latent_dims(dims, z0.shape[0])
        values = _latent_values(values, z0)
        check_sample_count(
            len(dims) * len(values), _row_width(model), name="len(dims) x len(values)"
        )
        rows = []
        for j in dims:
            z = z0.repeat(len(values), 1)
            z[:, j] = values
            rows.append(z)
        return model.decode(torch.cat(rows)).float().cpu()


def image_grid(
    images: torch.Tensor, image_shape=(28, 28), nrow: int = 8, pad: int = 1
) -> np.ndarray:
    """Tile (n, d) images into one (H, W) or (H, W, 3) array with values clipped to [0, 1]."""
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) not in (2, 3)
        or (len(shape) == 3 and shape[0] not in (1, 3, 4))
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape)
        or min(shape) < 1
    ):
        raise ParameterError(
            f"image_shape must be (height, width) or (channels, height, width) with 1, 3 or 4 "
            f"channels, positive integers; got {image_shape!r}"
        )
    nrow = check_positive_int(nrow, "nrow")
    pad = check_positive_int(pad, "pad", minimum=0)
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(as_numeric_array(images, "images").astype(np.float64))
    if images.is_floating_point():  # ±inf are clipped as documented; NaN is no pixel
        images = images.detach().clamp(0, 1)
    imgs = as_float_tensor(
        images, name="images", dtype=torch.float32, ndim=None, missing_hint=False
    )
    size = math.prod(shape)
    # rows (n, d), one row (d,) or images (n, *image_shape)
    flat = imgs.reshape(1, -1) if imgs.dim() < 2 else imgs.reshape(imgs.shape[0], -1)
    if imgs.dim() == 0 or flat.shape[0] == 0 or flat.shape[1] != size:
        raise DataError(
            f"images must be rows of {size} values (image_shape={shape}), shape (n, {size}), "
            f"got shape {tuple(imgs.shape)}; pass the image_shape the rows were made with"
        )
    imgs = flat.clamp(0, 1).numpy()
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    imgs = imgs.reshape(-1, *shape)
    if imgs.ndim == 4:  # (n, c, h, w) → (n, h, w, c)
        imgs = imgs.transpose(0, 2, 3, 1)
    n, h, w = imgs.shape[:3]
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.ones((nrows * (h + pad) + pad, ncol * (w + pad) + pad, *imgs.shape[3:]))
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = imgs[i]
    return grid


def save_grid(path, images: torch.Tensor, image_shape=(28, 28), nrow: int = 8) -> Path:
    """Write :func:`image_grid` of ``images`` to ``path`` as a PNG (atomically).

    Written by ``matplotlib.image.imsave``, which needs no pyplot and leaves the user's
    matplotlib backend as it is (a notebook keeps its inline figures)."""
    from matplotlib.image import imsave

    path = Path(path)
    grid = image_grid(images, image_shape, nrow)
    with atomic_path(path) as tmp:
        imsave(tmp, grid, cmap="gray", vmin=0, vmax=1, format="png")
    return path
