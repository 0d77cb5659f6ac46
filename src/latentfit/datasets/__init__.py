"""Bundled real data sets and loaders for user data."""

from latentfit.datasets._bundled import (
    BUNDLED,
    Dataset,
    load_dataset,
    load_faithful,
    load_geyser,
    load_mnist_5k,
)
from latentfit.datasets._files import column_names, load_array, parse_delimiter
from latentfit.datasets._idx import load_mnist_idx, read_idx

__all__ = [
    "BUNDLED",
    "Dataset",
    "column_names",
    "load_array",
    "load_dataset",
    "load_faithful",
    "load_geyser",
    "load_mnist_5k",
    "load_mnist_idx",
    "parse_delimiter",
    "read_idx",
]
