"""Distributed EM on ``torch.distributed`` (gloo on CPU, nccl on GPU).

Each process holds a shard of the rows. The E-step statistics are sums over samples, so
summing every process's statistics (one all-reduce per iteration) gives the statistics of the
whole data set: every process then runs the same M-step and ends with the same parameters,
equal to a single-process fit on all the data up to the rounding of a differently ordered sum
(the map-reduce form of EM, Chu et al. 2007 "Map-Reduce for machine learning on multicore").

Initialisation is made identical on every process: each draws an in-memory sample from its own
shard (all of it when small), the samples are gathered in rank order, every process initialises
from the gathered sample, and rank 0's parameters are broadcast. With a data set of at most
``init_rows`` rows the gathered sample is the whole data set in file order, so a distributed
fit starts exactly where the single-process fit starts.

Before the first statistic is exchanged, the processes exchange a short description of what
each fits (model class and settings, n_features, column names, dtype, device type;
:meth:`DistributedSource.agree`), so that processes that disagree all stop with an error naming
the rank and the field instead of exchanging buffers of different sizes. A process that does
not answer within the process group's ``timeout`` (stopped, crashed, far slower) makes the
others stop with an error naming that setting.

Launch with the standard launcher, one process per device (or per core on CPU)::

    torchrun --nproc-per-node 2 -m latentfit fit gmm data.npy -k 8 --distributed
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import NamedTuple

import torch
import torch.distributed as dist

from latentfit._validation import resolve_device
from latentfit.em.sources.chunks import ChunkSource, open_source
from latentfit.em.sources.stream import stream_loglik
from latentfit.em.sources.tensors import TensorChunks
from latentfit.errors import (
    BatchRowError,
    DataError,
    DataTypeError,
    LatentfitError,
    MissingDependencyError,
    ParameterError,
    ResourceLimitError,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistributedFit",
    "DistributedSource",
    "all_reduce_stats",
    "broadcast_params",
    "check_timeout",
    "fit_distributed",
    "in_process_group",
    "init_distributed",
    "is_distributed",
    "local_device",
]

#: Seconds a process waits for the others in one collective before it gives up with an error:
#: longer than one EM pass over a shard should take between two collectives, short enough that
#: a stopped process does not hold the others for half an hour.
DEFAULT_TIMEOUT_S = 300.0

#: The command line the launch hint shows by default (``init_distributed``'s ``command``).
_GMM_COMMAND = "fit gmm DATA -k 8 --distributed"


def _launch_hint(command: str = _GMM_COMMAND) -> str:
    """How to start the processes of a distributed fit, for ``latentfit command``."""
    return (
        "start every process with the standard launcher, e.g. "
        f"`torchrun --nproc-per-node 2 -m latentfit {command}` (it sets RANK, WORLD_SIZE, "
        "MASTER_ADDR and MASTER_PORT), or call torch.distributed.init_process_group first"
    )


def in_process_group() -> bool:
    """True when this process has joined a torch.distributed process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True when a process group with more than one process is running: the one test, for EM
    and for the trainers (:mod:`latentfit.train.distributed`), of whether to exchange anything."""
    return in_process_group() and dist.get_world_size() > 1


#: The longest timeout taken: far beyond any run, and inside what ``timedelta`` can hold
#: (~8.6e13 s), which a larger number overflows.
MAX_TIMEOUT_S = 1e9


def check_timeout(timeout) -> timedelta:
    """``timeout`` (seconds, a positive finite number) as the timedelta torch.distributed takes."""
    ok = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if not ok or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ParameterError(
            f"timeout must be a positive number of seconds up to {MAX_TIMEOUT_S:.0e} (about "
            f"30 years), got {timeout!r} (the default is {DEFAULT_TIMEOUT_S:g})"
        )
    return timedelta(seconds=float(timeout))


def _group_timeout(group=None) -> float | None:
    """The timeout the process group was created with, in seconds, where torch tells it."""
    if not in_process_group():
        return None
    try:
        pg = group if group is not None else dist.group.WORLD
        return pg._get_backend(torch.device("cpu")).options._timeout.total_seconds()
    except (AttributeError, RuntimeError, ValueError):
        return None


@contextmanager
def collective_errors(what: str, group=None, timeout: float | None = None) -> Iterator[None]:
    """Turn a failed collective (torch.distributed raises RuntimeError) into a LatentfitError
    that says which process waited for what, and which setting to raise when it timed out."""
    try:
        yield
    except RuntimeError as err:
        rank = dist.get_rank(group) if in_process_group() else os.environ.get("RANK", "?")
        text = str(err).strip()
        detail = text.splitlines()[0] if text else type(err).__name__
        if "timed out" in text.lower() or "timeout" in text.lower():
            t = timeout if timeout is not None else _group_timeout(group)
            waited = f"timeout={t:g} s" if t is not None else "the process group's timeout"
            raise LatentfitError(
                f"rank {rank} waited longer than {waited} for the other processes in {what}: "
                "one of them is stopped, hung or much slower. If it is only slower, raise the "
                "timeout the process group is made with: `--timeout SECONDS` on the command "
                "line, timeout=SECONDS of init_distributed / fit_distributed (EM) or of "
                f"init_from_env / init_process (trainers). ({detail})"
            ) from None
        raise LatentfitError(
            f"rank {rank}: {what} failed ({detail}). If another process stopped with an error "
            "or was killed, its own message says why."
        ) from None


def local_device(device=None) -> torch.device:
    """The device of this process: ``cuda`` without an index becomes ``cuda:LOCAL_RANK``.
    A value that is not a torch device is a ParameterError (whether this machine has it is
    checked where the device is used, by :func:`init_distributed`)."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError, ValueError):
        raise ParameterError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:0'"
        ) from None
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def init_distributed(
    device=None,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    command: str = _GMM_COMMAND,
) -> tuple[int, int]:
    """Join the process group the launcher describes in the environment; returns (rank, world_size).

    The backend is nccl for CUDA devices and gloo otherwise. ``timeout`` (seconds) bounds how
    long a process waits for the others in any one collective before it raises. Already
    initialised: nothing to do (the group keeps the timeout it was created with). ``command``:
    the ``latentfit`` command line the error shows how to launch when the launcher's variables
    are missing.
    """
    if not dist.is_available():
        raise MissingDependencyError("this build of torch has no torch.distributed")
    wait = check_timeout(timeout)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [
        v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ
    ]
    if missing:
        raise ParameterError(
            f"distributed EM needs {', '.join(missing)} in the environment: "
            + _launch_hint(command)
        )
    dev = resolve_device(local_device(device))  # a ParameterError if this machine lacks it
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    with collective_errors("joining the process group", timeout=wait.total_seconds()):
        dist.init_process_group(backend, timeout=wait)
    return dist.get_rank(), dist.get_world_size()


def all_reduce_stats(stats: dict[str, torch.Tensor], group=None) -> dict[str, torch.Tensor]:
    """Sum a statistics dict over all processes in one collective.

    The tensors are flattened into one buffer of their common (promoted) dtype, in sorted key
    order so every process packs them alike; each comes back in its own dtype and shape.
    """
    keys = sorted(stats)
    if not keys:
        return {}
    dtype = stats[keys[0]].dtype
    for k in keys[1:]:
        dtype = torch.promote_types(dtype, stats[k].dtype)
    flat = torch.cat([stats[k].detach().reshape(-1).to(dtype) for k in keys])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    out, i = {}, 0
    for k in keys:
        v = stats[k]
        out[k] = flat[i : i + v.numel()].view(v.shape).to(v.dtype)
        i += v.numel()
    return out


def broadcast_params(params: dict[str, torch.Tensor], src: int = 0, group=None) -> dict:
    """Every process gets process ``src``'s parameters (same keys and shapes on every process)."""
    out = {}
    for k in sorted(params):
        t = params[k].detach().clone().contiguous()
        dist.broadcast(t, src=src, group=group)
        out[k] = t
    return {k: out[k] for k in params}


#: The errors another process's failure is raised as (the first its error is an instance of).
_SHARED_ERRORS = (
    BatchRowError,
    DataTypeError,
    DataError,
    ResourceLimitError,
    ParameterError,
    LatentfitError,
)


def _error_words(err: BaseException | None) -> tuple[int, int, str] | None:
    """What the other processes need to raise ``err`` again: its kind (an index of
    _SHARED_ERRORS), its row (a BatchRowError's, else -1) and its message."""
    if err is None:
        return None
    kind = next((i for i, c in enumerate(_SHARED_ERRORS) if isinstance(err, c)), None)
    if kind is None:  # not one of latentfit's errors: said with its type
        return len(_SHARED_ERRORS) - 1, -1, f"{type(err).__name__}: {err}"
    return kind, getattr(err, "row", -1), str(err)


class DistributedSource(ChunkSource):
    """This process's shard of ``source``, with the collectives distributed EM needs.

    - iteration yields the rows of rank ``r`` (:meth:`ChunkSource.shard`); a shard that cannot
      be read still takes part in the collectives (with no rows) so the other processes never
      hang, and every process then raises;
    - :meth:`reduce` all-reduces the statistics; :meth:`sync_params` broadcasts rank 0's;
    - a process whose pass fails (its E-step refuses a row) calls :meth:`stop_together` where
      the others call :meth:`reduce`: every process then raises that error;
    - :meth:`init_chunks` gathers every shard's initialisation sample in rank order;
    - :meth:`agree` checks, before any statistic is exchanged, that every process fits the same
      model on the same kind of data (models call it when they adopt the source).

    A collective that fails (a process stopped or gone, or silent past the process group's
    timeout) raises a :class:`~latentfit.errors.LatentfitError` that says so.

    ``n_samples`` is this shard's size; ``n_samples_total`` that of the whole data set.
    """

    def __init__(self, source: ChunkSource, group=None):
        if not in_process_group():
            raise ParameterError(
                f"DistributedSource needs a running process group: {_launch_hint()}"
            )
        self.group = group
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        self.source = source.shard(rank, world)
        self.rank, self.world_size = rank, world
        self.name = f"{source.name} (rank {rank} of {world})"
        self._error: list[BaseException | None] = [None]
        self._pass_check = None  # the model's check of every block (with_check)

    # Options live on the wrapped source.
    def __getattr__(self, name):
        if name in ("chunk_rows", "device", "dtype", "progress", "init_rows", "allow_nan"):
            return getattr(self.__dict__["source"], name)
        raise AttributeError(name)

    def configured(
        self, *, device=None, dtype=None, chunk_rows=None, allow_nan=False
    ) -> DistributedSource:
        out = object.__new__(DistributedSource)
        out.__dict__.update(self.__dict__)
        out.source = self.source.configured(
            device=device, dtype=dtype, chunk_rows=chunk_rows, allow_nan=allow_nan
        )
        out._error = [None]
        return out

    def with_check(self, check) -> DistributedSource:
        out = super().with_check(check)  # the shard's source runs it on this process's rows
        out._pass_check = check
        return out

    def shard(self, rank, world_size):
        raise ParameterError("a DistributedSource is already sharded over the process group")

    @property
    def n_features(self) -> int:
        return self.source.n_features

    @property
    def n_samples(self) -> int | None:
        return self.source.n_samples

    @property
    def column_names(self) -> list[str] | None:
        return self.source.column_names

    def _row_offset(self) -> int:
        # the row of the whole data this process's shard starts at, for the errors naming a row
        return self.source._row_offset()

    @property
    def n_samples_total(self) -> int:
        n = torch.tensor([self.source.n_samples or 0], dtype=torch.int64, device=self.device)
        with collective_errors("the sum of the row counts", self.group):
            dist.all_reduce(n, group=self.group)
        return int(n)

    def agree(self, description: dict[str, str]) -> None:
        """Gather every process's ``description`` of its fit (field → printable value, e.g.
        from :func:`~latentfit.em.sources.stream.describe_fit`) and raise on every process, naming the
        rank and the field, where one differs from rank 0's. One ``all_gather_object``, made
        before the first statistic is exchanged: statistics of different shapes or dtypes
        would otherwise meet in an all-reduce (gloo aborts the process, nccl may hang)."""
        gathered: list[dict | None] = [None] * self.world_size
        with collective_errors("the exchange of what every process fits", self.group):
            dist.all_gather_object(gathered, dict(description), group=self.group)
        ref = gathered[0] or {}
        diffs = []
        for r, desc in enumerate(gathered[1:], start=1):
            desc = desc or {}
            for field in [*ref, *(f for f in desc if f not in ref)]:
                if desc.get(field, "(not set)") != ref.get(field, "(not set)"):
                    diffs.append((r, field, desc.get(field, "(not set)"), ref.get(field)))
        if not diffs:
            return
        if any(f == "model" for _, f, _, _ in diffs):  # other models have other settings
            diffs = [d for d in diffs if d[1] == "model"]
        said = "; ".join(
            f"rank {r} has {f}={v} where rank 0 has {f}={v0}" for r, f, v, v0 in diffs[:6]
        )
        more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
        data_fields = {"n_features", "column_names", "dtype", "device_type"}
        cls = DataError if any(f in data_fields for _, f, _, _ in diffs) else ParameterError
        raise cls(
            f"the processes disagree on what to fit: {said}{more}. Every process must fit the "
            "same model, with the same settings, on the same columns in the same dtype and on "
            f"the same kind of device; fix the launch of rank {diffs[0][0]} (this is rank "
            f"{self.rank})."
        )

    def __iter__(self):
        self._error[0] = None
        yielded = False
        try:
            for chunk in self.source:
                yielded = True
                yield chunk
        except (ValueError, OSError, RuntimeError) as err:
            self._error[0] = err
        if not yielded or self._error[0] is not None:
            # An empty chunk keeps this process in step with the others' collectives.
            X = torch.empty(0, self.n_features, dtype=self.dtype, device=self.device)
            yield X, X.new_empty(0)

    def stop_together(self, err: BaseException | None) -> None:
        """Tell every process whether this one failed (``err``, or an error reading its
        shard), in one all-reduce of a flag that every process makes before it waits for the
        others' statistics; where any failed, raise on every process the error of the first
        that did, its message gathered from it (a process that failed raises its own)."""
        err = self._error[0] or err
        flag = torch.tensor([float(err is not None)], device=self.device)
        with collective_errors("the check that every process finished its pass", self.group):
            dist.all_reduce(flag, group=self.group)
        if not flag.item():
            return
        said: list[tuple[int, int, str] | None] = [None] * self.world_size
        with collective_errors("the exchange of the errors that stopped the fit", self.group):
            dist.all_gather_object(said, _error_words(err), group=self.group)
        if err is not None:
            raise err
        r, (kind, row, text) = next((r, s) for r, s in enumerate(said) if s is not None)
        text += f" (found by rank {r}; this is rank {self.rank})"
        if _SHARED_ERRORS[kind] is BatchRowError:
            raise BatchRowError(row, text.replace("{", "{{").replace("}", "}}"))
        raise _SHARED_ERRORS[kind](text)

    def _raise_if_failed(self, failed: float) -> None:
        if failed > 0:
            if self._error[0] is not None:
                raise self._error[0]
            raise DataError(
                f"{int(failed)} process(es) could not read their shard of the data; "
                "see their error messages"
            )

    def reduce(self, stats: dict) -> dict:
        self.stop_together(None)  # the processes that failed in their pass call it with why
        self._check_totals()
        with collective_errors("the all-reduce of the EM statistics", self.group):
            return all_reduce_stats(stats, self.group)

    def _check_totals(self) -> None:
        """A check of the whole pass (one with ``totals``/``check_totals``, such as
        :class:`~latentfit.em.gaussian.PassOverflowCheck`) saw only this process's rows,
        while the M-step takes the sums over every process: 3e18 among small values passed
        on each half of the rows and overflowed once summed. Every process gathers the
        totals of all and judges them alike, so that all raise the same error, naming the
        row of the whole data."""
        check = self._pass_check
        if not hasattr(check, "check_totals"):
            return
        mine = check.totals(self._row_offset(), self.n_features).to(self.device)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        with collective_errors("the exchange of the totals of every process's pass", self.group):
            dist.all_gather(parts, mine, group=self.group)
        try:
            check.check_totals(torch.stack(parts), self.dtype)
        except BatchRowError as err:  # its row counted from the start of the whole data
            raise err.shifted(0, f"{self.source.name}: ") from None

    def sync_params(self, params: dict) -> dict:
        src = dist.get_global_rank(self.group, 0) if self.group else 0
        with collective_errors("the broadcast of rank 0's parameters", self.group):
            return broadcast_params(params, src=src, group=self.group)

    def init_chunks(self, generator: torch.Generator, max_rows: int | None = None) -> TensorChunks:
        """Each process samples ``max_rows / world_size`` rows of its shard; the samples are
        gathered in rank order (all processes get the same rows)."""
        cap = max(1, (max_rows or self.init_rows) // self.world_size)
        d, dev = self.n_features, self.device
        try:
            local = self.source.init_chunks(generator, cap)
            X, w, m = local.X, local.weights, local.X.shape[0]
        except (ValueError, OSError, RuntimeError) as err:
            self._error[0] = err
            X = torch.empty(0, d, dtype=self.dtype, device=dev)
            w, m = X.new_empty(0), -1
        counts = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(self.world_size)]
        mine = torch.tensor([m], dtype=torch.int64, device=dev)
        with collective_errors("the exchange of the initialisation samples", self.group):
            dist.all_gather(counts, mine, group=self.group)
        sizes = [int(c) for c in counts]
        self._raise_if_failed(sum(s < 0 for s in sizes))
        top = max(sizes)
        # all_gather needs equal shapes: pad with zero rows, then cut them off.
        Xw = torch.zeros(top, d + 1, dtype=self.dtype, device=dev)
        Xw[:m, :d], Xw[:m, d] = X, w
        parts = [torch.empty_like(Xw) for _ in range(self.world_size)]
        with collective_errors("the exchange of the initialisation samples", self.group):
            dist.all_gather(parts, Xw, group=self.group)
        full = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
        return TensorChunks(
            full[:, :d].contiguous(), full[:, d].contiguous(), self.chunk_rows or 65536
        )


class DistributedFit(NamedTuple):
    """What :func:`fit_distributed` returns on every process (the totals are over all of them)."""

    rank: int
    world_size: int
    n_samples: int
    n_features: int
    loglik: float


def fit_distributed(
    model,
    path,
    *,
    columns=None,
    weight_column=None,
    delimiter=None,
    header=None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DistributedFit:
    """Fit ``model`` on this process's shard of the data file ``path`` (the body of
    ``latentfit fit gmm DATA --distributed`` under torchrun).

    Joins the process group from the launcher's environment (nccl for a CUDA model, which is
    placed on ``cuda:LOCAL_RANK``), reads rows ``shard_range(n, rank, world_size)`` of the file
    (memory-mapped .npy, Parquet by row group; CSV is read whole, with ``delimiter`` and
    ``header`` as :func:`~latentfit.datasets.load_array` takes them, and sliced), fits with the
    statistics all-reduced, then scores the data in one more pass. Only rank 0 shows progress.
    ``timeout`` (seconds) bounds the wait for the other processes in any one collective.
    """
    device = local_device(model.device)
    started_here = not in_process_group()
    rank, world = init_distributed(device, timeout=timeout)
    if str(device) != str(model.device) and model.device is not None:
        model.set_params(device=str(device))
    if rank != 0:
        model.set_params(verbose=0)
    try:
        source = DistributedSource(
            open_source(
                path,
                columns=columns,
                weight_column=weight_column,
                delimiter=delimiter,
                header=header,
                progress=False,
            )
        )
        model.fit(source)
        missing = model.get_params().get("missing") == "marginalize"
        loglik, _, rows = stream_loglik(model, source, allow_nan=missing)
    finally:
        if started_here and dist.is_initialized():  # leave no process group behind
            dist.destroy_process_group()
    return DistributedFit(rank, world, rows, source.n_features, loglik)
