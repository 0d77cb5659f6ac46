"""Bundled real data sets and loaders for user data."""

from latentfit.datasets._bundled import Dataset, load_faithful, load_geyser, load_mnist_5k
from latentfit.datasets._files import load_array
from latentfit.datasets._idx import load_mnist_idx, read_idx

__all__ = [
    "Dataset",
    "load_array",
    "load_faithful",
    "load_geyser",
    "load_mnist_5k",
    "load_mnist_idx",
    "read_idx",
]
