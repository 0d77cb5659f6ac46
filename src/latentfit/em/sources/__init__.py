"""Where EM's data comes from: chunks of an array, file or iterable (chunks), tensors already
in memory (tensors), a fit streamed over a source (stream) and sharded over processes
(distributed)."""

from latentfit.em.sources.chunks import (
    ArraySource,
    ChunkSource,
    IterableSource,
    NpySource,
    ParquetSource,
    is_source,
    open_source,
    shard_range,
)

__all__ = [
    "ArraySource",
    "ChunkSource",
    "IterableSource",
    "NpySource",
    "ParquetSource",
    "is_source",
    "open_source",
    "shard_range",
]
