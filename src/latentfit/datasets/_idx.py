"""The MNIST IDX file format (LeCun et al.), for users who have the full 70,000 digits."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from latentfit.errors import DataError, ParameterError

__all__ = ["load_mnist_idx", "read_idx"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic 0x0000TTNN, NN big-endian dimensions, data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no IDX file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # a damaged or cut-off download
        raise DataError(f"{path} is not a readable gzip file ({err}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path} is truncated: its header promises {ndim} dimensions; download it again"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data but its header {shape} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem} (or {stem}.gz)")


def idx_files(folder) -> list[Path]:
    """The files in ``folder`` that :func:`load_mnist_idx` reads for either split (those
    present): inputs that no output may name."""
    found = []
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        try:
            found.append(_find(Path(folder), f"{stem}-ubyte"))
        except FileNotFoundError:
            pass
    return found


def load_mnist_idx(folder, split: str = "train", *, scale: bool = True):
    """Load ``train`` (60,000) or ``t10k``/``test`` (10,000) MNIST from the standard IDX files.

    Returns ``(images (n, 784) float64, labels (n,) int64)``.
    """
    folder = Path(folder)
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
    if prefix is None:
        raise ParameterError(f"split must be 'train' or 'test', got {split!r}")
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"MNIST files disagree: images {images.shape}, labels {labels.shape} in {folder}"
        )
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float64))
    return (x / 255.0 if scale else x), torch.from_numpy(labels.astype(np.int64))
