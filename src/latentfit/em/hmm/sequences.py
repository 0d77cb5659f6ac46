"""Baum-Welch over a data source: out-of-core and distributed HMM fitting.

The Baum-Welch statistics (start counts, transition counts, posterior-weighted emission
moments, log-likelihood) are sums over sequences (Rabiner 1989, eqs. 40a-c and 109-110), so
a pass over the data may visit groups of *whole* sequences one at a time and the fit is the
in-memory fit up to the rounding of a differently ordered sum. A source (see
:mod:`latentfit.em.sources.chunks`) is read chunk by chunk; the rows are cut at the sequence
boundaries given by ``lengths`` (a sequence that spans chunks is buffered until it is
complete), and groups of whole sequences of about ``chunk_rows`` rows go to the E-step. One
sequence must therefore fit in memory.

Distributed fitting shards by whole sequences: process ``r`` of ``w`` takes the contiguous
block of sequences :func:`~latentfit.em.sources.chunks.shard_range` ``(n_sequences, r, w)``, and the
statistics are all-reduced by :class:`~latentfit.em.sources.distributed.DistributedSource`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch

from latentfit.em.sources.chunks import ChunkSource, shard_range
from latentfit.em.sources.distributed import DistributedSource
from latentfit.em.sources.stream import describe_fit
from latentfit.errors import DataError, ParameterError

__all__ = [
    "FEATURE_BYTES",
    "MAX_BATCH_STEPS",
    "SequenceBatches",
    "SequenceSource",
    "batch_sequences",
    "check_lengths",
    "prepare_sequences",
    "sequence_windows",
    "with_states",
]

DEFAULT_CHUNK_ROWS = 1 << 16  # rows per E-step batch when neither the source nor fit sets it


def sequence_windows(lengths: list[int], rank: int, world_size: int) -> tuple[int, int, int, int]:
    """Process ``rank``'s contiguous block of sequences ``[s0, s1)`` and its rows ``[r0, r1)``:
    returns ``(s0, s1, r0, r1)``."""
    s0, s1 = shard_range(len(lengths), rank, world_size)
    ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return s0, s1, int(ends[s0]), int(ends[s1])


class SequenceSource(ChunkSource):
    """The rows of ``source`` with the sequence ``lengths`` that cut them; sharding
    (:meth:`shard`) is by whole sequences instead of rows.

    Iteration yields the (checked) rows of this process's block of sequences; ``lengths``
    holds that block's sequence lengths. ``source`` is read whole (unsharded) and the rows
    outside the block are skipped.
    """

    def __init__(self, source: ChunkSource, lengths: list[int]):
        super().__init__(
            chunk_rows=source.chunk_rows,
            device=source.device,
            dtype=source.dtype,
            progress=source.progress,
            init_rows=source.init_rows,
        )
        self.name = source.name
        self._inner = source
        self.all_lengths = list(lengths)
        self.lengths = list(lengths)
        self._rows = (0, int(sum(lengths)))
        n = source.n_samples
        if n is not None and n != self._rows[1]:
            raise DataError(
                f"lengths sum to {self._rows[1]} but {source.name} has {n} rows: lengths must "
                "give the number of rows of every sequence in the data, in order"
            )

    @property
    def n_features(self) -> int:
        return self._inner.n_features

    @property
    def n_samples(self) -> int:
        return self._rows[1] - self._rows[0]

    @property
    def column_names(self) -> list[str] | None:
        return self._inner.column_names

    def shard(self, rank: int, world_size: int) -> SequenceSource:
        s0, s1, r0, r1 = sequence_windows(self.all_lengths, rank, world_size)
        out = copy.copy(self)
        out.lengths = self.all_lengths[s0:s1]
        out._rows = (r0, r1)
        return out

    def _row_offset(self) -> int:
        return self._rows[0]

    def _blocks(self):
        lo, hi = self._rows
        inner = self._inner
        if inner.chunk_rows is None and self.chunk_rows is not None:
            inner = copy.copy(inner)
            inner.chunk_rows = self.chunk_rows
        total = int(sum(self.all_lengths))
        pos = 0
        for X, w in inner._blocks():
            X = X if torch.is_tensor(X) else np.asarray(X)
            if X.ndim == 1:  # one row of d values, or d == 1 values in a column
                X = X.reshape(1, -1) if self.n_features > 1 else X.reshape(-1, 1)
            m = X.shape[0]
            a, b = max(lo, pos), min(hi, pos + m)
            if a < b:
                yield X[a - pos : b - pos], None if w is None else w[a - pos : b - pos]
            pos += m
            if pos >= hi and hi < total:  # the last block of sequences reads on, to check
                break
        if pos != total and (pos < hi or hi == total):
            raise DataError(
                f"{self.name} has {pos} rows but lengths sum to {total}: lengths must give "
                "the number of rows of every sequence in the data, in order"
            )


def unsharded(source: ChunkSource) -> ChunkSource:
    """A copy of a source that a :class:`~latentfit.em.sources.distributed.DistributedSource` sharded
    by rows, reading all rows again (HMMs re-shard it by sequences)."""
    out = copy.copy(source)
    out._rank, out._world = 0, 1
    return out


class SequenceBatches:
    """The driver's data: a re-iterable of ``(X (t, d), lengths)`` groups of whole sequences
    read from ``data`` (a configured :class:`SequenceSource`, possibly inside a
    ``DistributedSource``), each of at least ``batch_rows`` rows unless it holds the last
    sequence. Delegates ``init_chunks``/``sync_params``/``reduce`` to ``data``."""

    def __init__(self, data: ChunkSource, lengths: list[int], batch_rows: int, all_lengths=None):
        self.data, self.lengths, self.batch_rows = data, list(lengths), batch_rows
        # the sequences of the whole data (``lengths``: this process's block of them)
        self.all_lengths = self.lengths if all_lengths is None else list(all_lengths)
        self._ends = np.cumsum(self.lengths, dtype=np.int64)

    def __getattr__(self, name):  # init_chunks, sync_params, reduce, name...
        return getattr(self.__dict__["data"], name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[int]]]:
        ends, n_seq = self._ends, len(self.lengths)
        total = int(ends[-1]) if n_seq else 0
        pending: list[torch.Tensor] = []
        done_rows, seen, first = 0, 0, 0  # rows handed out, rows read, next sequence
        for X, w in self.data:
            if X.shape[0] == 0:
                continue
            if bool((w != 1).any()):
                raise ParameterError(
                    f"{self.data.name} carries sample weights; hidden Markov models take none "
                    "(weight whole sequences by repeating them instead)"
                )
            pending.append(X)
            seen += X.shape[0]
            if seen > total:
                raise DataError(
                    f"{self.data.name} has more rows than the {total} that lengths account "
                    "for: lengths must give the number of rows of every sequence, in order"
                )
            complete = int(np.searchsorted(ends, seen, side="right"))  # sequences fully read
            if complete == first:
                continue
            rows = int(ends[complete - 1]) - done_rows
            if rows < self.batch_rows and complete < n_seq:
                continue
            buf = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield buf[:rows], self.lengths[first:complete]
            pending = [buf[rows:]] if buf.shape[0] > rows else []
            done_rows += rows
            first = complete
        if first < n_seq:
            raise DataError(
                f"{self.data.name} ended after {seen} rows but lengths sum to {total}: lengths "
                "must give the number of rows of every sequence in the data, in order"
            )


def prepare_sequences(model, source: ChunkSource, lengths, max_rows_in_memory=None):
    """The driver's data for ``model.fit(source, lengths)``: ``source`` configured for the
    model (device, dtype, NaN as missing, its per-chunk check), cut into groups of whole
    sequences, re-sharded by whole sequences when it is a ``DistributedSource``."""

    name = type(model).__name__
    if model._stream_check is False:
        raise ParameterError(f"{name} is fitted in memory only; pass the array of symbols")
    distributed = isinstance(source, DistributedSource)
    # Before any collective: every process must fit the same model on the same kind of data.
    source.agree(describe_fit(model, source.configured(device=model._device, dtype=model._dtype)))
    if lengths is None:
        n = source.n_samples_total if distributed else source.n_samples
        if n is None:
            raise ParameterError(
                f"fitting {name} on a source needs lengths (the rows of every sequence): "
                "the source does not know its row count before a pass"
            )
        lengths = [n]
    lengths = check_lengths(lengths, int(np.sum(lengths)))
    longest = int(np.argmax(lengths))
    if max_rows_in_memory is not None and lengths[longest] > max_rows_in_memory:
        raise ParameterError(
            f"sequence {longest} has {lengths[longest]} rows, more than max_rows_in_memory="
            f"{max_rows_in_memory}: one whole sequence is held in memory at a time. Split it "
            "into shorter sequences or raise max_rows_in_memory"
        )
    if sum(lengths) < model.n_components:
        raise DataError(f"X has {sum(lengths)} rows, fewer than n_components={model.n_components}")
    check_states = getattr(model, "_check_state_memory", None)
    if check_states is not None:  # one group of whole sequences is in memory at a time
        check_states(lengths[longest])
    if distributed:  # re-shard by whole sequences
        if len(lengths) < source.world_size:
            raise DataError(
                f"{len(lengths)} sequence(s) cannot be shared by {source.world_size} processes: "
                "the data is sharded by whole sequences, at least one per process"
            )
        inner = SequenceSource(unsharded(source.source), lengths)
        source = DistributedSource(inner, group=source.group)
    else:
        source = SequenceSource(source, lengths)
    data = source.configured(
        device=model._device,
        dtype=model._dtype,
        chunk_rows=DEFAULT_CHUNK_ROWS,
        allow_nan=model._allow_nan(),
    )
    if model._stream_check is not None:
        data = data.with_check(model._stream_check)
    model._set_stream_features(data)
    seq = data.source if distributed else data
    return SequenceBatches(data, seq.lengths, data.chunk_rows, seq.all_lengths)


MAX_BATCH_STEPS = 1 << 22  # steps of data per E-step batch (sequences are never split)
FEATURE_BYTES = 1 << 29  # memory for per-fit features of the data kept across iterations


def check_lengths(lengths, n: int) -> list[int]:
    """Sequence lengths as a list of positive ints summing to ``n``."""
    if lengths is None:
        return [n]
    try:
        arr = np.asarray(lengths)
    except (TypeError, ValueError):
        raise DataError(
            f"lengths must be a 1-D list of sequence lengths, got {lengths!r:.60}"
        ) from None
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"lengths must be a 1-D list of sequence lengths, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise DataError(f"lengths must be integers, got {arr.tolist()[:10]}")
    if arr.dtype.kind in "fO":  # whole numbers past int64 (10**20) are objects or floats
        values = arr.tolist()
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            i = next((i for i, v in enumerate(values) if v > n or v < 1), None)
            if i is not None and values[i] < 1:
                raise DataError(
                    f"every sequence needs at least one step; lengths[{i}] = {values[i]:.6g}"
                )
            if i is not None:
                raise DataError(
                    f"lengths[{i}] = {values[i]:.6g} is more than the {n} rows of X: lengths "
                    "must give the number of rows of every sequence in X, in order"
                )
            arr = np.asarray(values, dtype=np.float64)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"lengths must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr < 1)
    if len(bad):
        raise DataError(
            f"every sequence needs at least one step; lengths[{bad[0]}] = {arr[bad[0]]}"
        )
    if int(arr.sum()) != n:
        raise DataError(
            f"lengths sum to {int(arr.sum())} but X has {n} rows: lengths must give the number "
            "of rows of every sequence in X, in order"
        )
    return arr.tolist()


def batch_sequences(
    X: torch.Tensor, lengths: list[int], max_steps: int = MAX_BATCH_STEPS
) -> list[tuple[torch.Tensor, list[int]]]:
    """Groups of whole sequences of at most ``max_steps`` steps (a longer sequence is a group
    of its own), each processed in one pass of the kernels."""
    out, start, group, size = [], 0, [], 0
    for n in lengths:
        if group and size + n > max_steps:
            out.append((X[start : start + size], group))
            start, group, size = start + size, [], 0
        group.append(n)
        size += n
    out.append((X[start : start + size], group))
    return out


def with_states(batches: list[tuple], states: torch.Tensor | None) -> list[tuple]:
    """The groups of :func:`batch_sequences`, each with the known states (r,) of its rows
    appended when ``states`` (n,) is given (−1 where unknown), as the E-step takes them."""
    if states is None:
        return batches
    ends = np.cumsum([b[0].shape[0] for b in batches]).tolist()
    return [
        (Xb, lb, states[e - Xb.shape[0] : e]) for (Xb, lb), e in zip(batches, ends, strict=True)
    ]
