"""torch.distributed helpers shared by every data-parallel trainer in latentfit.

Processes are started by ``torchrun`` (which sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
or by :func:`init_process` (tests, notebooks). Every helper is a no-op in a single process,
so training code calls them unconditionally. Whether a run is distributed and how long a
process waits for the others are decided by the same helpers as distributed EM
(:func:`latentfit.em.sources.distributed.is_distributed`, ``DEFAULT_TIMEOUT_S``).
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from latentfit.em.sources.distributed import (
    DEFAULT_TIMEOUT_S,
    check_timeout,
    collective_errors,
    in_process_group,
    is_distributed,
)

__all__ = [
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "free_port",
    "in_process_group",
    "init_from_env",
    "init_process",
    "is_distributed",
    "is_main",
    "rank",
    "shard",
    "world_size",
]


def rank() -> int:
    return dist.get_rank() if in_process_group() else 0


def world_size() -> int:
    return dist.get_world_size() if in_process_group() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and prints."""
    return rank() == 0


def default_backend(device=None) -> str:
    dev = torch.device(device) if device is not None else None
    use_cuda = dev.type == "cuda" if dev is not None else torch.cuda.is_available()
    return "nccl" if use_cuda else "gloo"


def init_from_env(backend: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group described by torchrun's environment variables.

    Returns True when running with more than one process. Selects the CUDA device
    LOCAL_RANK when the backend is NCCL. ``timeout`` (seconds) bounds the wait for the other
    processes in any one collective.
    """
    wait = check_timeout(timeout)
    if in_process_group():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    with collective_errors("joining the process group", timeout=wait.total_seconds()):
        dist.init_process_group(backend, timeout=wait)
    return True


def init_process(
    rank: int,
    world_size: int,
    port: int,
    addr: str = "127.0.0.1",
    backend: str = "gloo",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Join a process group explicitly (for processes started without torchrun)."""
    dist.init_process_group(
        backend,
        init_method=f"tcp://{addr}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=check_timeout(timeout),
    )


def cleanup() -> None:
    if in_process_group():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        with collective_errors("the trainers' barrier"):
            dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes in place (and return it); unchanged in a single process."""
    if is_distributed():
        with collective_errors("the trainers' all-reduce of their sums"):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shard(n: int, rank: int | None = None, world: int | None = None) -> slice:
    """The contiguous slice of ``range(n)`` owned by ``rank`` of ``world`` (sizes differ by ≤ 1)."""
    rank = globals()["rank"]() if rank is None else rank
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, for a process group on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]
