"""Fitting a model on a data source: the glue between :mod:`latentfit.em.sources.chunks` and the EM
driver.

:func:`prepare_stream` configures a source for a model (device, dtype, chunk size, NaN as
missing, the model's own checks) and wraps the model's hooks so that it initialises from the
source's in-memory sample and synchronises parameters across processes; :func:`stream_loglik`
sums a fitted model's log-likelihood over a source one chunk at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from latentfit.em.sources.chunks import ChunkSource
from latentfit.em.sources.tensors import TensorChunks
from latentfit.errors import BatchRowError, DataError

__all__ = ["EMStream", "StreamHooks", "describe_fit", "prepare_stream", "stream_loglik"]

# Settings each process may hold differently without changing the statistics it exchanges:
# the printout, its own device index, how it cuts its rows into chunks, and the seed (the start
# is broadcast from rank 0).
_PER_PROCESS = frozenset({"verbose", "verbose_interval", "device", "chunk_rows", "random_state"})


def _printable(value) -> str:
    """A short text that is equal on two processes exactly when the values are (arrays by
    shape, dtype and a digest of their bytes)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()[:12]
        return f"array(shape={value.shape}, dtype={value.dtype}, sha1={digest})"
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))  # an address differs per process
    if len(text) > 80:
        return text[:60] + f"... (sha1={hashlib.sha1(text.encode()).hexdigest()[:12]})"
    return text


def describe_fit(model, data: ChunkSource) -> dict[str, str]:
    """What every process of a distributed fit must agree on: the model class and its settings
    (``get_params``, less the per-process ones), and the data as the model reads it (number of
    features, column names, dtype, kind of device). Printable values, compared as text."""
    desc = {"model": type(model).__name__}
    if hasattr(model, "get_params"):
        for name, value in sorted(model.get_params(deep=False).items()):
            if name not in _PER_PROCESS:
                desc[name] = _printable(value)
    desc["n_features"] = str(data.n_features)
    desc["column_names"] = _printable(data.column_names)
    desc["dtype"] = str(data.dtype).removeprefix("torch.")
    desc["device_type"] = data.device.type
    return desc


class StreamHooks:
    """A model's EM hooks fitted on a source: initialise from the source's in-memory sample
    (:meth:`ChunkSource.init_chunks`), then let the source synchronise the parameters over
    processes. The E-step, M-step and bound are the model's own.

    Models whose hooks take other batches than ``(X, w)`` pass adapters: ``batch(X, w)`` builds
    the E-step's batch (e.g. ``(X, w, None)`` with no labels) and ``init_data(chunks)`` turns the
    in-memory :class:`~latentfit.em.sources.tensors.TensorChunks` sample into what ``initialize`` takes.
    """

    def __init__(
        self,
        hooks,
        min_rows: int = 1,
        batch: Callable | None = None,
        init_data: Callable[[TensorChunks], object] | None = None,
    ):
        self.hooks = hooks
        self.min_rows = min_rows
        self.batch = batch
        self.init_data = init_data

    def initialize(self, data: ChunkSource, generator: torch.Generator):
        sample = data.init_chunks(generator)
        if sample.X.shape[0] < self.min_rows:
            raise DataError(
                f"{data.name} yielded {sample.X.shape[0]} row(s) to initialise from; at least "
                f"{self.min_rows} are needed (one per component)"
            )
        init = sample if self.init_data is None else self.init_data(sample)
        return data.sync_params(self.hooks.initialize(init, generator))

    def estep(self, params, batch):
        return self.hooks.estep(params, batch if self.batch is None else self.batch(*batch))

    def __getattr__(self, name):  # mstep, lower_bound, recenter...
        return getattr(self.hooks, name)


class EMStream(NamedTuple):
    """What a model passes to :func:`~latentfit.em.driver.run_em` to fit a source."""

    data: ChunkSource
    hooks: StreamHooks
    reduce: Callable[[dict], dict]


def prepare_stream(
    source: ChunkSource,
    hooks,
    *,
    device,
    dtype,
    chunk_rows: int | None,
    min_rows: int = 1,
    allow_nan: bool = False,
    batch: Callable | None = None,
    init_data: Callable[[TensorChunks], object] | None = None,
    check: Callable[[torch.Tensor], None] | None = None,
) -> EMStream:
    """Configure ``source`` for a model (device, dtype, chunk size, NaN as missing, the model's
    own ``check`` of every block) and wrap its hooks (see :class:`StreamHooks` for
    ``batch``/``init_data``): the one call a model's ``fit`` makes to accept a source in place
    of an array. A source shared by several processes first checks that they all fit the same
    model (``hooks.model``) on the same kind of data (:func:`describe_fit`)."""
    data = source.configured(device=device, dtype=dtype, chunk_rows=chunk_rows, allow_nan=allow_nan)
    data.agree(describe_fit(getattr(hooks, "model", hooks), data))
    if check is not None:
        data = data.with_check(check)
    return EMStream(data, StreamHooks(hooks, min_rows, batch, init_data), data.reduce)


def stream_loglik(model, source: ChunkSource, allow_nan: bool = False) -> tuple[float, float, int]:
    """Σ w log p(x), Σ w and the row count of a fitted model over a source, one chunk at a time
    (over every process for a distributed source): what BIC, AIC and ``score`` need. A row the
    model refuses is named by its row of the whole data; as in the fit's E-step, an error in
    this process's pass is told to the other processes (``stop_together``), which would
    otherwise wait for its sums until the timeout: every process raises it."""
    data = source.configured(device=model._device, dtype=model._dtype, allow_nan=allow_nan)
    dev = data.device
    total = {
        "loglik": torch.zeros((), dtype=torch.float64, device=dev),
        "weight": torch.zeros((), dtype=torch.float64, device=dev),
        "rows": torch.zeros((), dtype=torch.float64, device=dev),
    }
    offset = data._row_offset()
    try:
        for X, w in data:
            if X.shape[0]:
                try:
                    ll = torch.as_tensor(model.score_samples(X), dtype=torch.float64, device=dev)
                except BatchRowError as err:  # its row counted from the start of the data
                    raise err.shifted(offset) from None
                total["loglik"] += (w.double() * ll).sum()
            total["weight"] += w.double().sum()
            total["rows"] += X.shape[0]
            offset += X.shape[0]
    except Exception as err:
        data.stop_together(err)
        raise
    total = data.reduce(total)
    return float(total["loglik"]), float(total["weight"]), int(total["rows"])
