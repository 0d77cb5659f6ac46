"""Data for VAEs: the bundled MNIST digits, scikit-learn's digits, the MNIST IDX files, any array.

Every loader returns a :class:`VAEData` with a training and a validation (test) split as float32
tensors in [0, 1] when ``binary`` (pixel intensities, to be binarised dynamically by the
trainer), plus the image shape for pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

__all__ = ["VAEData", "load_vae_data"]


class VAEData(NamedTuple):
    train: torch.Tensor  # (n_train, d)
    val: torch.Tensor  # (n_val, d)
    image_shape: tuple[int, ...] | None  # (c, h, w) or None for non-image data
    intensities: bool  # values in [0, 1]: dynamic binarisation applies
    name: str


def _split(X: torch.Tensor, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))
    X = X[perm]
    return X[n_val:], X[:n_val]


def load_vae_data(
    source: str, val_fraction: float = 0.2, seed: int = 0, idx_folder=None
) -> VAEData:
    """``"mnist"`` (bundled 5,000: 4,000 train / 1,000 test), ``"digits"`` (scikit-learn's 1,797
    8×8 digits, grey levels 0–16 scaled to [0, 1]), ``"mnist-idx"`` (the full MNIST from the IDX
    files in ``idx_folder``: 60,000 train / 10,000 test), or a path to a CSV / .npy / .npz /
    Parquet file of (n, d) numbers (a random ``val_fraction`` held out)."""
    if source == "mnist":
        from latentfit.datasets import load_mnist_5k

        train, val = _split(load_mnist_5k().data.float(), 1000, seed)
        return VAEData(train, val, (1, 28, 28), True, "bundled MNIST (4,000 / 1,000)")
    if source == "digits":
        from sklearn.datasets import load_digits

        X = torch.from_numpy(load_digits().data).float() / 16.0
        train, val = _split(X, round(val_fraction * X.shape[0]), seed)
        return VAEData(train, val, (1, 8, 8), True, "scikit-learn digits (8×8)")
    if source == "mnist-idx":
        from latentfit.datasets import load_mnist_idx

        if idx_folder is None:
            raise ValueError("dataset 'mnist-idx' needs the folder holding the MNIST IDX files")
        train, _ = load_mnist_idx(idx_folder, "train")
        test, _ = load_mnist_idx(idx_folder, "test")
        return VAEData(train.float(), test.float(), (1, 28, 28), True, "MNIST (60,000 / 10,000)")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"no data file at {source!r}; use 'mnist', 'digits', 'mnist-idx' or a data file"
        )
    from latentfit.datasets import load_array

    X = torch.as_tensor(load_array(path)).float()
    if X.shape[0] < 2:
        raise ValueError(
            f"{path} holds {X.shape[0]} row(s); a VAE needs a training and a validation row"
        )
    n_val = max(1, round(val_fraction * X.shape[0]))
    train, val = _split(X, n_val, seed)
    intensities = bool((X.min() >= 0) & (X.max() <= 1))
    return VAEData(train, val, None, intensities, str(path))
