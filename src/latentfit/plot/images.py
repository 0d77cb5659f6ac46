"""Images as one tiled picture: any rows of pixels, a VAE's samples and reconstructions."""

from __future__ import annotations

import math

import torch

from latentfit.errors import ParameterError
from latentfit.plot._axes import new_axes

__all__ = ["image_shape_of", "plot_image_grid", "plot_reconstructions", "plot_samples"]


def image_shape_of(model, d: int | None = None) -> tuple[int, ...]:
    """The image shape a VAE records, else a square when d is one, else a single row."""
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "image_shape", None):
        return tuple(spec.image_shape)
    d = d if d is not None else spec.x_dim
    side = math.isqrt(d)
    return (side, side) if side * side == d else (1, d)


def plot_image_grid(images, image_shape=(28, 28), *, nrow: int | None = None, ax=None, cmap="gray"):
    """Tile ``images`` (n, d) — rows of pixel values in [0, 1] — into a grid of ``nrow``
    columns (default: about √n) with :func:`latentfit.vae.images.image_grid`, and show it.
    Returns the Axes."""
    from latentfit.vae.images import image_grid

    images = torch.as_tensor(images)
    if images.ndim != 2 or math.prod(image_shape) != images.shape[1]:
        raise ParameterError(
            f"image_shape {tuple(image_shape)} must hold the {images.shape[-1]} values of each "
            f"row of images (shape {tuple(images.shape)})"
        )
    n = images.shape[0]
    grid = image_grid(images, image_shape, nrow or math.ceil(math.sqrt(n)))
    ax = new_axes(ax, figsize=(5, 5))
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=1)
    ax.set_axis_off()
    return ax


def plot_samples(model, n: int = 64, *, generator=None, image_shape=None, nrow=None, ax=None):
    """Means of p(x | z) for n draws z ~ p(z) of a VAE, as a grid
    (:func:`latentfit.vae.images.sample_images`). Returns the Axes."""
    from latentfit.vae.images import sample_images

    imgs = sample_images(model, n, generator)
    ax = plot_image_grid(
        imgs, image_shape or image_shape_of(model, imgs.shape[1]), nrow=nrow, ax=ax
    )
    ax.set_title("samples: means of p(x | z), z ~ p(z)")
    return ax


def plot_reconstructions(
    model, X, *, n: int = 32, generator=None, image_shape=None, nrow=8, ax=None
):
    """The first ``n`` rows of X, then their reconstructions (means of p(x | z) at
    z = E_q[z | x], :func:`latentfit.vae.images.reconstruct`), in one grid of ``nrow``
    columns. Returns the Axes."""
    from latentfit.vae.images import reconstruct

    X = torch.as_tensor(X)[:n]
    device = next(model.parameters()).device
    rec = reconstruct(model, X.to(device), generator)
    shown = X.float().cpu()
    spec = getattr(model, "spec", None)
    if getattr(spec, "likelihood", None) == "categorical" and shown.numel() and shown.max() > 1:
        shown = shown / (spec.n_levels - 1)  # integer levels, on the [0, 1] scale of the means
    pair = torch.cat([shown, rec])
    ax = plot_image_grid(pair, image_shape or image_shape_of(model, X.shape[1]), nrow=nrow, ax=ax)
    rows = math.ceil(len(X) / nrow)
    ax.set_title(f"data (top {rows} rows) and reconstructions")
    return ax
