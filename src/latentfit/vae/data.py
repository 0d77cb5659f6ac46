"""Data for VAEs: the bundled MNIST digits, scikit-learn's digits, the MNIST IDX files, any array.

Every loader returns a :class:`VAEData` with three disjoint splits as float32 tensors (in [0, 1]
for pixel intensities, to be binarised dynamically by the trainer): ``train`` to fit on, ``val``
for early stopping and the choice of the best weights, and ``test``, untouched until the final
report. The :class:`DataSplit` records which rows went where, plus the number of rows and a
SHA-256 of the data, so that a model saved with it is later evaluated on exactly its test rows
(``load_vae_data(source, split=model.split)``) and a different data file is detected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from latentfit._validation import as_float_tensor, check_seed
from latentfit.errors import DataError, ParameterError

__all__ = ["DataSplit", "VAEData", "load_vae_data"]


@dataclass(frozen=True, eq=False)
class DataSplit:
    """Which rows of a data source are training, validation and test rows.

    ``train``, ``val``, ``test``: sorted int64 row indices into the source's rows (for
    ``"mnist-idx"`` the training file's rows followed by the test file's). ``n_rows`` and
    ``data_sha256`` (of the rows as float32) identify the data the indices refer to.
    ``binarized``: whether the model was trained on dynamically binarised rows (None where
    the file does not say), so that evaluation reads the test rows the same way.
    """

    source: str
    n_rows: int
    data_sha256: str
    seed: int
    train: torch.Tensor  # (n_train,) int64
    val: torch.Tensor  # (n_val,) int64
    test: torch.Tensor  # (n_test,) int64
    binarized: bool | None = None


SPLITS = ("train", "val", "test")


class VAEData(NamedTuple):
    train: torch.Tensor  # (n_train, d) fit on these
    val: torch.Tensor  # (n_val, d) early stopping / best weights
    test: torch.Tensor  # (n_test, d) reported only, never used to select anything
    image_shape: tuple[int, ...] | None  # (c, h, w) or None for non-image data
    intensities: bool  # values in [0, 1]: dynamic binarisation applies
    name: str
    split: DataSplit


def data_sha256(X: torch.Tensor) -> str:
    """SHA-256 of the rows of X as contiguous float32 (shape included)."""
    h = hashlib.sha256(repr(tuple(X.shape)).encode())
    h.update(X.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def source_rows(
    source: str, idx_folder, delimiter: str | None = None, header: bool | None = None
) -> tuple[torch.Tensor, tuple | None, str, int | None]:
    """All rows of a source, the image shape, a name and the number of rows fixed as test rows
    at the end (the MNIST test file) or None."""
    if source == "mnist":
        from latentfit.datasets import load_mnist_5k

        return load_mnist_5k().data.float(), (1, 28, 28), "bundled MNIST", None
    if source == "digits":
        from sklearn.datasets import load_digits

        X = torch.from_numpy(load_digits().data).float() / 16.0
        return X, (1, 8, 8), "scikit-learn digits (8×8)", None
    if source in ("faithful", "geyser"):
        from latentfit.datasets import load_dataset

        ds = load_dataset(source)
        return ds.data.float(), None, source, None
    if source == "mnist-idx":
        from latentfit.datasets import load_mnist_idx

        if idx_folder is None:
            raise ParameterError(
                "dataset 'mnist-idx' needs the folder holding the MNIST IDX files (--idx)"
            )
        train, _ = load_mnist_idx(idx_folder, "train")
        test, _ = load_mnist_idx(idx_folder, "test")
        X = torch.cat([train.float(), test.float()])
        return X, (1, 28, 28), "MNIST", test.shape[0]
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"no data file at {source!r}; use 'mnist', 'digits', 'mnist-idx' or a data file"
        )
    from latentfit.datasets import load_array

    X = load_array(path, delimiter=delimiter, header=header)
    # float32, as the networks compute: a value beyond its range is named, not made inf
    # (NaN is left to the models' own checks); no dtype can be chosen here, so rescaling is
    # the only advice
    X = as_float_tensor(
        X,
        name=str(path),
        dtype=torch.float32,
        ndim=None,
        allow_nan=True,
        float64_option=None,
        missing_hint=False,  # a VAE marginalises nothing: an inf is not to become a NaN
    )
    return X, None, str(path), None


def _make_split(
    n: int, n_fixed_test: int | None, test_fraction: float, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if n_fixed_test is not None:  # the source's own test rows sit at the end
        test = torch.arange(n - n_fixed_test, n)
        rest = torch.randperm(n - n_fixed_test, generator=gen)
    else:
        perm = torch.randperm(n, generator=gen)
        n_test = max(1, round(test_fraction * n))
        test, rest = perm[:n_test], perm[n_test:]
    n_val = max(1, round(val_fraction * rest.shape[0]))
    if rest.shape[0] - n_val < 1:
        raise DataError(
            f"{n} rows cannot be cut into training, validation and test rows "
            f"(test_fraction={test_fraction}, val_fraction={val_fraction}); a VAE needs at "
            "least one row of each: use more rows or smaller fractions"
        )
    val, train = rest[:n_val], rest[n_val:]
    return train.sort().values, val.sort().values, test.sort().values


def check_split(split: DataSplit, n: int, sha: str, source: str) -> None:
    """DataError unless ``split`` was made on these rows (same count and contents)."""
    if split.n_rows != n or split.data_sha256 != sha:
        what = (
            f"{n} rows, the split {split.n_rows}"
            if split.n_rows != n
            else f"the same number of rows ({n}) but different values"
        )
        raise DataError(
            f"the model's train/validation/test split was made on {split.source!r}, and "
            f"{source!r} is other data ({what}; SHA-256 {sha[:12]}… vs {split.data_sha256[:12]}…): "
            "evaluate on the data the model was fitted to (scoring other rows could score "
            "training rows as test rows), or score a file of held-out rows as a whole"
        )


def load_vae_data(
    source: str,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    idx_folder=None,
    split: DataSplit | None = None,
    delimiter: str | None = None,
    model: str = "a VAE",
    header: bool | None = None,
) -> VAEData:
    """Load a source and cut it into disjoint training, validation and test rows.

    ``source``: ``"mnist"`` (the bundled 5,000 digits), ``"digits"`` (scikit-learn's 1,797 8×8
    digits, grey levels 0–16 scaled to [0, 1]), ``"faithful"`` and ``"geyser"`` (the bundled
    tables), ``"mnist-idx"`` (the full MNIST from the IDX
    files in ``idx_folder``) or a path to a CSV / .npy / .npz / Parquet file of (n, d) numbers.

    Test rows: 1,000 random rows of the bundled MNIST, the 10,000 rows of the MNIST test file,
    otherwise a random ``test_fraction`` of the rows. Validation rows: a random ``val_fraction``
    of the remaining rows (bundled MNIST: 3,600 train / 400 validation / 1,000 test). All draws
    come from ``seed``. With ``split`` (a :class:`DataSplit`, e.g. ``model.split`` of a loaded
    model) its rows are used instead, after checking that the source holds the same data
    (:class:`~latentfit.errors.DataError` if not). ``delimiter`` names the delimiter of a text
    file and ``header`` whether its first line names the columns (default: both sniffed; see
    :func:`latentfit.datasets.load_array`). ``model`` names the
    model the rows are for in the error of a source too small to split ("a VAE", "a flow").
    """
    if not 0 < test_fraction < 1:
        raise ParameterError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if not 0 < val_fraction < 1:
        raise ParameterError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    seed = check_seed(seed, "seed")
    X, image_shape, name, n_fixed = source_rows(source, idx_folder, delimiter, header)
    if source == "mnist":
        n_fixed = None
        test_fraction = 1000 / X.shape[0]
    n = X.shape[0]
    if n < 3:
        raise DataError(
            f"{name} holds {n} row(s); {model} needs a training, a validation and a test row "
            "(at least 3 rows); pass more rows"
        )
    sha = data_sha256(X)
    if split is not None:
        check_split(split, n, sha, source)
    else:
        train, val, test = _make_split(n, n_fixed, test_fraction, val_fraction, seed)
        split = DataSplit(str(source), n, sha, seed, train, val, test)
    intensities = bool((X.min() >= 0) & (X.max() <= 1))
    parts = [X[getattr(split, s)] for s in SPLITS]
    sizes = " / ".join(f"{p.shape[0]:,} {s}" for p, s in zip(parts, SPLITS, strict=True))
    return VAEData(*parts, image_shape, intensities, f"{name} ({sizes})", split)
