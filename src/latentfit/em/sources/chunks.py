"""Data sources that stream ``(X, w)`` chunks to the EM driver from outside memory.

EM only ever needs sums of per-sample statistics, so a pass over the data can read it one chunk
at a time and the fit is the in-memory fit up to the rounding of a differently ordered sum
(Neal & Hinton 1998). A source is a re-iterable of ``(X (m, d), w (m,))`` tensors on the model's
device and dtype; each chunk is read, checked, moved to the device and dropped in turn, so
only one chunk lives in (device) memory at a time.

- :class:`NpySource`: a ``.npy`` file, memory-mapped (the page cache does the buffering).
- :class:`ParquetSource`: a Parquet file read one row group at a time (needs pyarrow).
- :class:`IterableSource`: arrays from a callable that returns a fresh iterator for every pass,
  or from a list; a one-shot iterator serves one pass (enough for ``partial_fit``).
- :class:`ArraySource`: an in-memory array, useful to shard it over processes.

Every source can be restricted to one process's rows (:meth:`ChunkSource.shard`) and
draws the in-memory sample a model initialises from (:meth:`ChunkSource.init_chunks`):
the whole data when it has at most ``init_rows`` rows (then the fit is the in-memory fit), else a
uniform sample without replacement drawn in one pass (reservoir sampling with random keys,
Efraimidis & Spirakis 2006, with equal weights).
"""

from __future__ import annotations

import copy
import itertools
import numbers
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from latentfit._validation import (
    _check_flushed,
    _check_overflow,
    as_numeric_array,
    check_exact_integers,
    check_positive_int,
    check_sample_weight,
    first_nonfinite,
    resolve_device,
    resolve_dtype,
)
from latentfit.datasets._binary import arrow_floats, native_dtype, npy_header
from latentfit.em.sources.tensors import TensorChunks
from latentfit.errors import (
    BatchRowError,
    DataError,
    DataTypeError,
    MissingDependencyError,
    ParameterError,
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

Block = tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor | None]


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous rows ``[start, stop)`` of process ``rank`` out of ``world_size``: sizes differ by
    at most one row and the shards, in rank order, are the rows in file order."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ParameterError(f"rank must lie in [0, {world_size}), got rank={rank}")
    return rank * n // world_size, (rank + 1) * n // world_size


def is_source(obj) -> bool:
    """True for the streaming sources of this module (what ``fit`` accepts in place of X)."""
    return isinstance(obj, ChunkSource)


class ChunkSource:
    """Base class: a re-iterable of ``(X (m, d), w (m,))`` chunks of at most ``chunk_rows`` rows.

    Subclasses implement ``_blocks()`` (raw blocks in file order, numpy or torch, with weights
    or ``None``), ``n_features`` and, when known without a pass, ``n_samples``. The base class
    checks every block (finite values, width, non-negative weights; errors name the row of the
    whole data set and the column), converts it to ``dtype`` on ``device`` and cuts it into
    chunks. ``progress=True`` shows a tqdm bar per pass over the data.
    """

    name = "data"

    def __init__(
        self,
        *,
        chunk_rows: int | None = None,
        device=None,
        dtype=torch.float64,
        progress: bool = False,
        init_rows: int = 100_000,
    ):
        if chunk_rows is not None:
            chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
        init_rows = check_positive_int(init_rows, "init_rows")
        self.chunk_rows = chunk_rows
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.progress = progress
        self.init_rows = init_rows
        self.allow_nan = False
        self._check: Callable[[torch.Tensor], None] | None = None
        self._rank, self._world = 0, 1

    # -------------------------------------------------------------- to implement
    @property
    def n_features(self) -> int:
        raise NotImplementedError

    @property
    def n_samples(self) -> int | None:
        """Rows this source yields (this process's shard), or None when unknown before a pass."""
        return None

    def _blocks(self) -> Iterator[Block]:
        raise NotImplementedError

    @property
    def column_names(self) -> list[str] | None:
        """The names of the feature columns, where the file has them (Parquet), else None."""
        return None

    def agree(self, description: dict[str, str]) -> None:
        """Check that every process fits what ``description`` says; one process: nothing to
        compare (:meth:`latentfit.em.sources.distributed.DistributedSource.agree` does it over a group)."""

    # -------------------------------------------------------------- options
    def configured(
        self, *, device=None, dtype=None, chunk_rows: int | None = None, allow_nan: bool = False
    ) -> ChunkSource:
        """A copy that yields ``dtype`` tensors on ``device``; ``chunk_rows`` applies unless the
        source was given its own; ``allow_nan`` keeps NaN as the missing-value marker (inf is
        still refused). Models call this with their own settings."""
        out = copy.copy(self)
        out.allow_nan = allow_nan
        if device is not None:
            out.device = resolve_device(device)
        if dtype is not None:
            out.dtype = resolve_dtype(dtype)
        if out.chunk_rows is None:
            out.chunk_rows = chunk_rows
        return out

    def with_check(self, check: Callable[[torch.Tensor], None]) -> ChunkSource:
        """A copy that also passes every block to ``check(X)`` (a model's own rule, e.g. binary
        values); a ValueError it raises is re-raised naming the block's first row. A check with
        a ``start_pass()`` method is told when a pass over the data begins (one that judges
        the whole pass, such as :class:`~latentfit.em.gaussian.PassOverflowCheck`); one whose
        ``weighted`` is true is passed the block's sample weights as well, ``check(X, w)``. A wrapper
        around another source (one with a ``source`` attribute) hands the check to it, so that
        its own error handling (e.g. over processes) applies."""
        out = copy.copy(self)
        inner = vars(out).get("source")
        if isinstance(inner, ChunkSource):
            out.source = inner.with_check(check)
        else:
            out._check = check
        return out

    def shard(self, rank: int, world_size: int) -> ChunkSource:
        """A copy that yields only the rows of process ``rank`` (see :func:`shard_range`);
        sources without random access (iterables) take every ``world_size``-th block."""
        shard_range(0, rank, world_size)  # validates
        out = copy.copy(self)
        out._rank, out._world = rank, world_size
        return out

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = self.chunk_rows or 65536
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.n_samples, desc=f"pass over {self.name}", unit="rows", leave=False
            )
        try:
            for X, w in self._checked_blocks():
                for start in range(0, X.shape[0], rows):
                    Xc, wc = X[start : start + rows], w[start : start + rows]
                    yield Xc, wc
                    if bar is not None:
                        bar.update(Xc.shape[0])
        finally:
            if bar is not None:
                bar.close()

    def _checked_blocks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        offset = start = self._row_offset()
        if hasattr(self._check, "start_pass"):  # a check of the whole pass starts over
            self._check.start_pass()
        d = self.n_features
        mass = 0.0  # Σ w over the pass: all zero is refused, as check_sample_weight does
        for raw, w in self._blocks():
            raw = self._numeric(raw, "values", offset)
            X = self._to_tensor(raw, "values", offset)
            if X.dim() == 1:
                X = X.reshape(-1, 1) if d == 1 else X.reshape(1, -1)
            if X.dim() != 2 or X.shape[1] != d:
                raise DataError(
                    f"{self.name}: the block starting at row {offset} has shape "
                    f"{tuple(X.shape)}; every block must be (rows, {d})"
                )
            # A finite sum proves every value finite (NaN and ±inf propagate); only a
            # non-finite sum, or an overflow, pays for the search that names the entry.
            finite = bool(torch.isfinite(X.sum()))
            bad = None
            if not finite:
                bad = first_nonfinite(
                    X.nan_to_num(0.0, posinf=np.inf, neginf=-np.inf) if self.allow_nan else X
                )
            if bad is not None:
                # finite in the data but past the model's dtype (6e38 as float32): said so
                _check_overflow(
                    raw.reshape(tuple(X.shape)),
                    bad,
                    self.dtype,
                    self.name,
                    None,
                    "dtype=float64",
                    row_offset=offset,
                )
                raise DataError(
                    f"{self.name} contains {X[bad].item()} at row {offset + bad[0]}, column "
                    f"{bad[1]}: every value must be finite"
                )
            if w is None:
                w = torch.ones(X.shape[0], dtype=self.dtype, device=self.device)
            elif isinstance(w, numbers.Real) and not isinstance(w, bool | np.bool_):
                # one number: that weight for every row, as check_sample_weight takes it
                w = torch.full((X.shape[0],), float(w), dtype=self.dtype, device=self.device)
            else:
                w = self._to_tensor(w, "sample weights", offset).reshape(-1)
                if w.shape[0] != X.shape[0]:
                    raise DataError(
                        f"{self.name}: the block starting at row {offset} has {X.shape[0]} rows "
                        f"but {w.shape[0]} sample weights"
                    )
                bad_w = (~torch.isfinite(w) | (w < 0)).nonzero()
                if len(bad_w):
                    i = int(bad_w[0])
                    raise DataError(
                        f"{self.name}: sample weight of row {offset + i} is {w[i].item()}; "
                        "weights must be finite and non-negative"
                    )
            if self._check is not None:
                try:
                    if getattr(self._check, "weighted", False):  # weighs the rows by w
                        self._check(X, w)
                    else:
                        self._check(X)
                except BatchRowError as err:  # its row counted from the start of the data
                    raise err.shifted(offset, f"{self.name}: ") from None
                except ValueError as err:
                    raise DataError(
                        f"{self.name}, in the block starting at row {offset} (rows counted "
                        f"from there): {err}"
                    ) from None
            mass += float(w.double().sum())
            yield X, w
            offset += X.shape[0]
        # A shard of a distributed fit may hold only zero weights; the other shards judge.
        if self._world == 1 and offset > start and not mass > 0:
            raise DataError(
                f"{self.name}: the sample weights sum to zero: at least one sample needs a "
                "positive weight"
            )

    def _numeric(self, a, what: str, offset: int):
        """A block as a tensor or numpy array; anything else (a list of rows) is read as the
        in-memory path reads it, so ragged rows and objects are said by row."""
        if isinstance(a, torch.Tensor | np.ndarray):
            return a
        return as_numeric_array(a, f"{self.name} ({what} of the block from row {offset})")

    def _to_tensor(self, a, what: str, offset: int = 0) -> torch.Tensor:
        if not isinstance(a, torch.Tensor):
            a = self._numeric(a, what, offset)
            if a.dtype.kind not in "biuf":
                raise DataTypeError(
                    f"{self.name}: {what} of dtype {a.dtype} are not numeric; encode them as numbers"
                )
            # A copy of the (read-only, memory-mapped) rows: one chunk at a time, in a dtype
            # torch takes (native byte order; float128 as float64).
            with np.errstate(over="ignore"):  # a long double past float64 is inf, then named
                a = torch.from_numpy(np.array(a, dtype=native_dtype(a.dtype), copy=True))
        check_exact_integers(a, f"{self.name} ({what})", row_offset=offset)
        # a value the model's dtype makes 0 is named by its row
        _check_flushed(a, self.dtype, f"{self.name} ({what})", None, "dtype=float64", offset)
        return a.to(device=self.device, dtype=self.dtype)

    def _row_offset(self) -> int:
        """Row of the whole data set at which this shard starts (for error messages)."""
        return 0

    # -------------------------------------------------------------- initialisation sample
    def init_chunks(self, generator: torch.Generator, max_rows: int | None = None) -> TensorChunks:
        """The rows a model initialises from, in memory: all of them (in order) when there are at
        most ``max_rows`` (default ``init_rows``), else a uniform sample of ``max_rows`` rows
        without replacement, kept in data order. Draws from ``generator`` only in the second case,
        so that a small data set gives the in-memory initialisation exactly."""
        cap = max_rows or self.init_rows
        keptX: list[torch.Tensor] = []
        keptW: list[torch.Tensor] = []
        keys: torch.Tensor | None = None  # (m,) random keys once there are more rows than cap
        kept = 0
        for X, w in self:
            if keys is None:
                keptX.append(X)
                keptW.append(w)
                kept += X.shape[0]
                if kept <= cap:
                    continue
                keptX, keptW = [torch.cat(keptX)], [torch.cat(keptW)]
                keys = _uniform(kept, generator, X.device)
            else:
                keptX.append(X)
                keptW.append(w)
                keys = torch.cat([keys, _uniform(X.shape[0], generator, X.device)])
            # Keep the cap rows with the smallest keys, in data order.
            Xa, wa = torch.cat(keptX), torch.cat(keptW)
            order = keys.topk(cap, largest=False).indices.sort().values
            keptX, keptW, keys = [Xa[order]], [wa[order]], keys[order]
        if not keptX:
            X = torch.empty(0, self.n_features, dtype=self.dtype, device=self.device)
            return TensorChunks(X, X.new_empty(0), self.chunk_rows or 65536)
        X, w = torch.cat(keptX), torch.cat(keptW)
        return TensorChunks(X, w, self.chunk_rows or 65536)

    # -------------------------------------------------------------- distributed hooks
    def reduce(self, stats: dict) -> dict:
        """Combine the statistics of every process (the identity for one process)."""
        return stats

    def sync_params(self, params: dict) -> dict:
        """Make every process hold the same parameters (the identity for one process)."""
        return params

    def stop_together(self, err: BaseException | None) -> None:
        """Where this process's pass failed with ``err``, make every process stop with it
        before they wait for its statistics (nothing to tell for one process; the caller
        raises ``err``)."""


def _uniform(m: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(m, generator=generator, device=generator.device, dtype=torch.float64).to(
        device
    )


class ParquetSource(ChunkSource):
    """A Parquet file read one row group at a time (pyarrow); ``columns`` selects features,
    ``weight_column`` names a column of sample weights (excluded from the features)."""

    def __init__(self, path, *, columns=None, weight_column: str | None = None, **options):
        super().__init__(**options)
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise MissingDependencyError(
                "reading Parquet needs pyarrow: pip install 'latentfit[parquet]'"
            ) from err
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.exists():
            raise FileNotFoundError(f"no data file at {self.path}")
        if self.path.is_dir():
            raise DataError(f"{self.path} is a folder; give the Parquet file inside it")
        try:
            meta = pq.ParquetFile(self.path)
            schema = meta.schema_arrow
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(
                f"{self.path} is not a readable Parquet file: {str(err).strip()}"
            ) from None
        names = list(schema.names)
        if not names:
            raise DataError(
                f"{self.path} has no columns: the Parquet file holds a table without data"
            )
        if columns is None:
            columns = [c for c in names if c != weight_column]
        for c in [*columns, *([weight_column] if weight_column else [])]:
            if c not in names:
                raise DataError(f"{self.path} has no column {c!r}; its columns are {names}")
            if names.count(c) > 1:
                same = [i for i, name in enumerate(names) if name == c]
                what = f"named {c!r}" if c else "unnamed (an empty name)"
                raise DataError(
                    f"{self.path}: columns {same} are all {what}; column names must be "
                    "unique: rename them in the file, or pick other columns by name with "
                    "--columns (columns= in Python)"
                )
            t = schema.field(c).type
            if not str(t).startswith(("int", "uint", "float", "double", "bool", "halffloat")):
                raise DataTypeError(f"{self.path}: column {c!r} has type {t}, which is not numeric")
        if not columns:
            raise ParameterError(f"{self.path}: no feature column is left to fit")
        self.columns = list(columns)
        self.weight_column = weight_column
        self._group_rows = [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)]
        if sum(self._group_rows) == 0:
            raise DataError(f"{self.path} holds no rows")

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    @property
    def n_samples(self) -> int:
        start, stop = shard_range(sum(self._group_rows), self._rank, self._world)
        return stop - start

    def _row_offset(self) -> int:
        return shard_range(sum(self._group_rows), self._rank, self._world)[0]

    def _blocks(self) -> Iterator[Block]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        start, stop = shard_range(sum(self._group_rows), self._rank, self._world)
        try:
            f = pq.ParquetFile(self.path)
        except (OSError, ValueError) as err:  # changed since the source was opened
            raise DataError(
                f"{self.path} is not a readable Parquet file: {str(err).strip()}"
            ) from None
        wanted = self.columns + ([self.weight_column] if self.weight_column else [])
        first = 0
        for g, m in enumerate(self._group_rows):
            lo, hi = max(start, first), min(stop, first + m)
            if lo < hi:
                try:
                    table = f.read_row_group(g, columns=wanted).slice(lo - first, hi - lo)
                    # bool and integer columns with nulls as float64 NaN, not Python objects
                    converted = [arrow_floats(c, pa, pc) for c in table.columns]
                except (OSError, ValueError, KeyError) as err:
                    raise DataError(
                        f"{self.path}: row group {g} (rows {first} to {first + m - 1}) cannot be "
                        f"read: {err}"
                    ) from None
                cols = [values for values, _ in converted]
                inexact = [(b[0], j, b[1]) for j, (_, b) in enumerate(converted) if b is not None]
                if inexact:
                    i, j, words = min(inexact)
                    raise DataError(
                        f"{self.path}: row {lo + i}, column {wanted[j]!r} holds {words}; if the "
                        "column is an identifier, leave it out of the columns read"
                    )
                X = np.column_stack(cols[: len(self.columns)])
                yield X, cols[-1] if self.weight_column else None
            first += m


def _iterate(data, what: str) -> Iterator:
    """``iter(data)``, or a ParameterError saying what the array stream takes."""
    try:
        return iter(data)
    except TypeError:
        raise ParameterError(
            f"{what} is {type(data).__name__}, not an iterable of arrays: give IterableSource a "
            "callable returning a fresh iterator of arrays, a list of arrays, or an iterator"
        ) from None


def _stream_item(item: list, i: int) -> np.ndarray:
    """Item ``i`` of an array stream given as a list of rows, as an array; a DataError when it
    is not rectangular, with the hint that a pair ``(X, sample_weight)`` is a tuple when the
    list has two parts."""
    try:
        return as_numeric_array(item, f"item {i} of the array stream")
    except DataError as err:
        if isinstance(item, list) and len(item) == 2:
            raise DataError(
                f"{err}. A pair (X, sample_weight) must be a tuple, not a list"
            ) from None
        raise


class IterableSource(ChunkSource):
    """Arrays from ``data``: a callable returning a fresh iterator for every pass (re-iterable),
    a list/tuple of arrays, or a one-shot iterator (a single pass, e.g. for ``partial_fit``).
    Each item is an array (rows, d) or a pair ``(X, sample_weight)``. ``n_features`` is read
    from the first item when not given."""

    def __init__(self, data: Callable[[], Iterable] | Iterable, *, n_features=None, **options):
        super().__init__(**options)
        self.name = "the array stream"
        self._one_shot = not callable(data) and not isinstance(data, list | tuple)
        self._data = _iterate(data, "data") if self._one_shot else data
        self._head: list = []  # items read ahead from a one-shot iterator
        self._passes = [0]  # shared by configured copies: a one-shot iterator is consumed once
        self._d = None if n_features is None else check_positive_int(n_features, "n_features")
        if self._d is None:
            if self._one_shot:
                self._head = list(itertools.islice(self._data, 1))
                first = self._head[0] if self._head else None
            else:
                first = next(self._items(), None)
            if first is None:
                raise DataError("the array stream is empty: there is nothing to fit")
            X = first[0] if isinstance(first, tuple) else first
            if isinstance(X, list):
                X = _stream_item(X, 0)
            if np.ndim(X) not in (1, 2):
                raise DataError(
                    f"each item of the array stream must be an array (rows, d) or a pair "
                    f"(X, sample_weight); the first is {type(X).__name__} of shape {np.shape(X)}"
                )
            self._d = 1 if np.ndim(X) == 1 else int(np.shape(X)[-1])

    def _items(self) -> Iterator:
        if not self._one_shot:
            if callable(self._data):
                return _iterate(self._data(), "what data() returned")
            return iter(self._data)
        if self._passes[0]:
            raise ParameterError(
                "the array stream was an iterator and has been consumed: EM needs one pass per "
                "iteration, so pass a callable that returns a fresh iterator (e.g. "
                "`lambda: read_chunks(path)`) or a list of arrays"
            )
        self._passes[0] += 1
        return itertools.chain(self._head, self._data)

    @property
    def n_features(self) -> int:
        return int(self._d)

    def _blocks(self) -> Iterator[Block]:
        for i, item in enumerate(self._items()):
            if i % self._world != self._rank:
                continue
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise DataError("each item of the array stream must be X or (X, sample_weight)")
                yield item[0], item[1]
            elif isinstance(item, list):
                yield _stream_item(item, i), None
            else:
                yield item, None


class ArraySource(ChunkSource):
    """An in-memory array (n, d) with optional ``sample_weight`` (n,), served chunk by chunk (to
    shard it over processes, or to keep the full array on the host while fitting on a GPU)."""

    def __init__(self, X, *, sample_weight=None, **options):
        super().__init__(**options)
        self._X = X if isinstance(X, torch.Tensor | np.ndarray) else as_numeric_array(X)
        if self._X.ndim != 2 or self._X.shape[0] == 0:
            raise DataError(f"X must be a non-empty 2-D array, got shape {tuple(self._X.shape)}")
        n = self._X.shape[0]
        if isinstance(sample_weight, np.memmap):  # read with the rows (a pass checks them)
            if sample_weight.shape != (n,):
                raise DataError(
                    f"sample_weight must have shape ({n},) to match X, got {sample_weight.shape}"
                )
        elif sample_weight is not None:
            # the in-memory rules: a number for every row, shape (n,), finite, >= 0, not all 0
            sample_weight = check_sample_weight(sample_weight, n, dtype=torch.float64, device="cpu")
        self._w = sample_weight

    @property
    def n_features(self) -> int:
        return int(self._X.shape[1])

    @property
    def n_samples(self) -> int:
        start, stop = shard_range(self._X.shape[0], self._rank, self._world)
        return stop - start

    def _row_offset(self) -> int:
        return shard_range(self._X.shape[0], self._rank, self._world)[0]

    def _blocks(self) -> Iterator[Block]:
        start, stop = shard_range(self._X.shape[0], self._rank, self._world)
        rows = self.chunk_rows or 65536
        for i in range(start, stop, rows):
            j = min(stop, i + rows)
            yield self._X[i:j], None if self._w is None else self._w[i:j]


def _map_npy(path: Path) -> np.ndarray:
    """A read-only memory map of the .npy file ``path``, its header first checked against the
    file's size (:func:`~latentfit.datasets._binary.npy_header`)."""
    if not path.exists():
        raise FileNotFoundError(f"no data file at {path}")
    try:
        with path.open("rb") as f:
            npy_header(f, path, path.stat().st_size)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path} is not a readable .npy array: {err}") from None


class NpySource(ArraySource):
    """A ``.npy`` file of shape (n, d), memory-mapped and read ``chunk_rows`` rows at a time.

    ``sample_weight``: None, an array of shape (n,), or the path of a ``.npy`` file holding it
    (memory-mapped too). The page cache does the buffering: only the chunk being read is copied.
    """

    def __init__(self, path, *, sample_weight=None, **options):
        path = Path(path)
        X = _map_npy(path)
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise DataError(f"{path} must hold a non-empty 2-D array, got {X.shape}")
        if X.dtype.kind not in "biuf":
            raise DataTypeError(f"{path} holds {X.dtype} values, which are not numeric")
        if isinstance(sample_weight, str | Path):
            sample_weight = _map_npy(Path(sample_weight))
            if sample_weight.dtype.kind not in "biuf":
                raise DataTypeError(
                    f"{sample_weight.filename} holds {sample_weight.dtype} values, which are "
                    "not numeric sample weights"
                )
        if sample_weight is not None and np.shape(sample_weight) != (X.shape[0],):
            raise DataError(
                f"sample_weight must have shape ({X.shape[0]},) to match {path.name}, "
                f"got {np.shape(sample_weight)}"
            )
        super().__init__(X, sample_weight=sample_weight, **options)
        self.path = path
        self.name = path.name


def open_source(
    path, *, columns=None, weight_column=None, delimiter=None, header=None, **options
) -> ChunkSource:
    """A source for a data file by suffix: ``.npy`` memory-mapped, ``.parquet`` by row group;
    other formats (CSV, ``.npz``) are read into memory by :func:`latentfit.datasets.load_array`,
    with its ``delimiter`` and ``header`` (text files only, as there)."""
    from latentfit.datasets._files import check_text_options, parse_delimiter

    path = Path(path)
    suffix = path.suffix.lower()
    check_text_options(path, parse_delimiter(delimiter), header)
    if suffix == ".npy":
        if columns:
            raise ParameterError(".npy files have no column names; select columns before saving")
        return NpySource(path, **options)
    if suffix in (".parquet", ".pq"):
        return ParquetSource(path, columns=columns, weight_column=weight_column, **options)
    from latentfit.datasets import load_array

    # NaN is kept here; the source refuses it unless the model marginalises missing values.
    X = load_array(path, columns=columns, allow_nan=True, delimiter=delimiter, header=header)
    source = ArraySource(X, **options)
    source.name = path.name
    return source
