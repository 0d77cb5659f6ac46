"""Pictures of a VAE: prior samples, reconstructions, latent interpolations and traversals.

Each function returns decoded means as a tensor (rows are flat images, n × d, on the CPU);
:func:`image_grid` tiles them into one array and :func:`save_grid` writes it as a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentfit._files import atomic_path
from latentfit._validation import check_sample_count
from latentfit.errors import ParameterError
from latentfit.vae.diagnostics import _eval_mode, model_rows
from latentfit.vae.objectives import hidden_width

__all__ = ["image_grid", "interpolate", "reconstruct", "sample_images", "save_grid", "traverse"]


def _row_width(model) -> int:
    """Numbers a decoded row holds on its way: latents, hidden layers and the image, from the
    model's spec (1 for a model without one: then only the count's type is checked)."""
    inner = hidden_width(model)
    if inner is None:
        return 1
    return inner + int(getattr(getattr(model, "module", model).spec, "x_dim", 0) or 0)


def sample_images(model, n: int = 64, generator=None) -> torch.Tensor:
    """Means of p(x | z) for n draws z ~ p(z): (n, d). ``n`` is refused up front where the
    draws cannot be held (``check_sample_count``)."""
    n = check_sample_count(n, _row_width(model), name="n")
    with _eval_mode(model):
        return model.decode(model.sample_prior(n, generator)).float().cpu()


def reconstruct(model, X: torch.Tensor, generator=None) -> torch.Tensor:
    """Means of p(x | z) at z = E_q[z | x] for each row of X: (n, d)."""
    X = model_rows(model, X)
    with _eval_mode(model):
        return model.decode(model.posterior_mean(X, generator=generator)).float().cpu()


def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, n_steps: int = 10, generator=None):
    """Decoded means along the straight line between E_q[z | x_a] and E_q[z | x_b]: (n_steps, d)."""
    n_steps = check_sample_count(n_steps, _row_width(model), name="n_steps")
    with _eval_mode(model):
        z = model.posterior_mean(
            torch.stack([x_a.reshape(-1), x_b.reshape(-1)]), generator=generator
        )
        t = torch.linspace(0, 1, n_steps, dtype=z.dtype, device=z.device)[:, None]
        return model.decode((1 - t) * z[0] + t * z[1]).float().cpu()


def traverse(model, x: torch.Tensor, dims, values=None, generator=None) -> torch.Tensor:
    """Vary one latent dimension at a time around E_q[z | x], others fixed.

    Returns (len(dims) · len(values), d): row block i holds dimension ``dims[i]`` set to each
    of ``values`` (default: -3 … 3 in 7 steps, prior standard deviations).
    """
    values = torch.linspace(-3, 3, 7) if values is None else torch.as_tensor(values)
    with _eval_mode(model):
        z0 = model.posterior_mean(x.reshape(1, -1), generator=generator)[0]  # (d_z,)
        rows = []
        for j in dims:
            z = z0.repeat(len(values), 1)
            z[:, j] = values.to(z)
            rows.append(z)
        return model.decode(torch.cat(rows)).float().cpu()


def image_grid(
    images: torch.Tensor, image_shape=(28, 28), nrow: int = 8, pad: int = 1
) -> np.ndarray:
    """Tile (n, d) images into one (H, W) or (H, W, 3) array with values clipped to [0, 1]."""
    imgs = images.detach().float().cpu().clamp(0, 1).numpy()
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] not in (1, 3, 4)):
        raise ParameterError(
            f"image_shape must be (height, width) or (channels, height, width) with 1, 3 or 4 "
            f"channels; got {shape}"
        )
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
