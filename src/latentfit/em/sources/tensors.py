"""Batches of in-memory data for the EM driver.

The driver only needs a re-iterable of batches; this module holds the in-memory one. Streaming
sources (memory-mapped files, Parquet, iterators of arrays) yield the same ``(X, w)`` pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["TensorChunks", "default_chunk_rows"]


def default_chunk_rows(n_features: int, n_components: int, budget: int = 1 << 20) -> int:
    """Rows per chunk so that a chunk's (rows, k, d) work array holds about ``budget`` numbers:
    large enough for efficient matrix products, small enough to stay in cache."""
    return max(256, budget // max(1, n_features * n_components))


@dataclass
class TensorChunks:
    """Row chunks ``(X[i:j], w[i:j])`` of a tensor and its sample weights, with
    ``labels[i:j]`` as a third item when semi-supervised labels (-1 = unknown) are given."""

    X: torch.Tensor  # (n, d)
    weights: torch.Tensor  # (n,)
    chunk_rows: int = 4096
    labels: torch.Tensor | None = None  # (n,) int64

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.X.shape[0]
        for start in range(0, n, self.chunk_rows):
            stop = min(n, start + self.chunk_rows)
            if self.labels is None:
                yield self.X[start:stop], self.weights[start:stop]
            else:
                yield self.X[start:stop], self.weights[start:stop], self.labels[start:stop]

    def __len__(self) -> int:
        return -(-self.X.shape[0] // self.chunk_rows)
