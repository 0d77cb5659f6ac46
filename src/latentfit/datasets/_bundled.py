"""The real data sets shipped inside the package (provenance in data/README.md)."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

__all__ = ["BUNDLED", "Dataset", "load_dataset", "load_faithful", "load_geyser", "load_mnist_5k"]


@dataclass(frozen=True)
class Dataset:
    """A bundled data set: ``data`` (n, d) float64, optional integer ``target`` (n,)."""

    data: torch.Tensor
    feature_names: list[str]
    description: str
    target: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


def _read_r_csv(name: str) -> tuple[list[str], np.ndarray]:
    """Read a CSV exported from R: quoted header, first column is the row index."""
    with resources.files("latentfit.datasets").joinpath("data", name).open("r") as f:
        rows = list(csv.reader(f))
    header = rows[0][1:]
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float64)
    return header, values


def load_faithful() -> Dataset:
    """Old Faithful: 272 eruptions × [eruptions (min), waiting (min)].

    Härdle (1991); Azzalini & Bowman (1990). R ``datasets::faithful``.
    """
    names, values = _read_r_csv("faithful.csv")
    return Dataset(
        torch.from_numpy(values),
        names,
        "Old Faithful geyser: eruption duration and waiting time to the next eruption (minutes).",
    )


def load_geyser() -> Dataset:
    """The MASS geyser series: 299 consecutive eruptions (1–15 August 1985) × [waiting, duration].

    A time series: row t is the waiting time before eruption t and its duration. Some night-time
    durations were coded as 2, 3 or 4 minutes. Azzalini & Bowman (1990); R ``MASS::geyser``.
    """
    names, values = _read_r_csv("geyser.csv")
    return Dataset(
        torch.from_numpy(values),
        names,
        "Old Faithful, 299 consecutive eruptions: waiting time before each eruption and its duration.",
    )


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("latentfit.datasets").joinpath("data", "mnist_5k.csv.gz").open("rb") as f:
        raw = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.uint8)
    return raw[:, :784], raw[:, 784].astype(np.int64)


def load_mnist_5k(*, scale: bool = True) -> Dataset:
    """5,000 MNIST digits, 500 per class, as (5000, 784) pixels and labels 0–9.

    Pixels are grey levels 0–255, divided by 255 when ``scale`` (the default). LeCun, Cortes &
    Burges, MNIST (CC BY-SA 3.0). ``extra["image_shape"]`` is (28, 28).
    """
    pixels, labels = _mnist_arrays()
    data = torch.from_numpy(pixels.astype(np.float64))
    if scale:
        data = data / 255.0
    return Dataset(
        data,
        [f"pixel{i}" for i in range(784)],
        "5,000 MNIST handwritten digits (500 per class), 28×28 grey levels, row-major.",
        target=torch.from_numpy(labels),
        extra={"image_shape": (28, 28)},
    )


#: The bundled data sets by the names the command line knows them by (``--dataset NAME``).
BUNDLED = {"faithful": load_faithful, "geyser": load_geyser, "mnist": load_mnist_5k}


def load_dataset(name: str, *, columns=None) -> Dataset:
    """The bundled data set ``name``: ``faithful``, ``geyser`` or ``mnist`` (5,000 digits,
    pixels in [0, 1]); ``columns`` keeps some columns (names or 0-based positions) in the
    order given, as :func:`~latentfit.datasets.load_array` does for files."""
    if name not in BUNDLED:
        from latentfit.errors import ParameterError

        raise ParameterError(
            f"there is no bundled data set {name!r}; the bundled sets are "
            f"{', '.join(BUNDLED)} (or give a data file)"
        )
    ds = BUNDLED[name]()
    if not columns:
        return ds
    from dataclasses import replace

    from latentfit.datasets._columns import _resolve

    idx = _resolve(ds.feature_names, len(ds.feature_names), columns, name)
    return replace(ds, data=ds.data[:, idx], feature_names=[ds.feature_names[i] for i in idx])
