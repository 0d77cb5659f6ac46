"""Compiling a package in a child process: the sampler goes on while a C++ compiler runs.

A package (compiled_cache.py) takes ~12 s to compile on a CPU, most of it in inductor's code
generation and a C++ compiler, all of it single-threaded Python or one compiler process.
Inductor cannot compile two graphs at once in threads of one process (its imports and
configuration are not thread-safe), and a process waiting for it samples nothing, so each
package compiles in a child: ``python -m latentfit.mcmc.builds JOB``, where ``JOB`` is a file
holding the key, the graph (a ``torch.fx.GraphModule`` traced here, or a module naming a
latentfit function), the example inputs and their free dimensions. The child writes the package
into the cache (atomically, as ``compiled_cache.build`` does) and removes the job file.

The job file, ``<cache>/jobs/<key>.job``, is created exclusively, so a second run of the same
model while the first one's child still compiles (a script run twice in a row) waits for that
child instead of starting another: ``Build.done()`` is true once the file is gone. A child
outlives the run that started it, so that the package is there for the next run; ``wait()``
waits for every child this process started. The child's messages go to ``<key>.log`` beside
the job, whose last line is the reason given when no package came out of it. A job file left
by a child that was killed (older than ``STALE_SECONDS``, or whose process is gone) is taken
over.

Written here rather than taken from ``concurrent.futures`` or ``multiprocessing``: a pool's
workers end with the process that owns them, and the package is wanted by the next run even
when this one ends first; a plain ``subprocess`` child does not."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from latentfit.mcmc import compiled_cache

__all__ = ["Build", "held", "jobs_dir", "running", "spawn", "wait"]

#: a job file older than this, whatever its process, belongs to a child that died
STALE_SECONDS = 15 * 60

#: every child this process started and has not seen end
_CHILDREN: list[subprocess.Popen] = []


def jobs_dir() -> Path:
    """Where job files and the children's messages are kept."""
    return compiled_cache.cache_dir() / "jobs"


class Build:
    """A package being compiled under ``key``: by a child of this process (``child``, whose
    messages go to ``log``), or by a child another process started."""

    def __init__(self, key: str, child: subprocess.Popen | None = None, log: Path | None = None):
        self.key, self.child, self.log = key, child, log
        self.job = jobs_dir() / f"{key}.job"

    def done(self) -> bool:
        """Whether the compiling has ended (a package stored, or a failure)."""
        if self.child is not None:
            if self.child.poll() is None:
                return not self.job.exists()  # its child went on to its next job
            with contextlib.suppress(ValueError):
                _CHILDREN.remove(self.child)
            self.job.unlink(missing_ok=True)  # a child that crashed before removing it
            return True
        return not self.job.exists() or _stale(self.job)

    def wait(self, timeout: float = 900.0) -> None:
        """Wait until ``done()``; past ``timeout`` seconds a child of ours is killed."""
        end = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > end:
                if self.child is not None:
                    self.child.kill()
                    self.child.wait()
                return
            time.sleep(0.05)

    def why_not(self) -> str:
        """Why no package came out: the line the child wrote about this key, else how it
        ended."""
        lines: list[str] = []
        if self.log is not None:
            with contextlib.suppress(OSError):
                lines = self.log.read_text(errors="replace").splitlines()
        prefix = f"{self.key}: "
        said = [x.removeprefix(prefix) for x in lines if x.startswith(prefix)]
        if said:
            return said[-1][:300]
        if self.child is not None and self.child.returncode not in (0, None):
            return f"the compiling process ended with code {self.child.returncode}"
        return "the compiling process stored no package"


def _stale(job: Path) -> bool:
    try:
        age = time.time() - job.stat().st_mtime
        pid = int(job.read_text().split()[0]) if job.stat().st_size else None
    except (OSError, ValueError, IndexError):
        return False  # being written this moment
    if age > STALE_SECONDS:
        return True
    if pid is None:
        return False
    if pid == os.getpid():
        # claimed here for a child that was to name itself in it: with no child of this
        # process still running, none ever will (it died first), and waiting on it would
        # wait on ourselves for Build.wait's whole timeout
        return running() == 0
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and only waits to be reaped: ``os.kill(pid, 0)`` succeeds on
    such a process. A child of this very process that died holding its job (killed, out of
    memory) stays one until this process waits for it, and ``Build.wait`` then waited its
    whole timeout (15 minutes of a test run) for a job no one would finish."""
    running()  # reaps the children this process started that have ended
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): a dead child is then seen by its age
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def spawn(
    jobs: list[tuple[str, torch.nn.Module, tuple[torch.Tensor, ...], dict | None, dict | None]],
    nice: int = 0,
) -> list[Build | None]:
    """Start one child process that compiles each job in turn, ``(key, module, example,
    dynamic, options)`` as ``compiled_cache.build`` takes them, at ``nice`` more niceness than this
    process. Returns a ``Build`` for each job: the child's, or that of a child another run
    started for the same key; None where no child can start (the cache folder cannot be
    written, the graph cannot be pickled, no interpreter runs): the caller compiles it."""
    folder = jobs_dir()
    builds: list[Build | None] = [None] * len(jobs)
    mine: list[int] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i, (key, module, example, dynamic, options) in enumerate(jobs):
            if _claim(folder / f"{key}.job"):
                mine.append(i)
                task = {"key": key, "module": module, "example": example, "dynamic": dynamic}
                torch.save({**task, "options": options}, folder / f"{key}.pt")
            else:
                builds[i] = Build(key)  # another run's child compiles it
        if not mine:
            return builds
        log = folder / f"{jobs[mine[0]][0]}.log"
        src = str(Path(__file__).resolve().parents[2])  # the child imports this very latentfit
        path = os.pathsep.join(x for x in (src, os.environ.get("PYTHONPATH")) if x)
        with open(log, "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "latentfit.mcmc.builds", str(nice)]
                + [str(folder / f"{jobs[i][0]}.pt") for i in mine],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, "PYTHONPATH": path},
            )
    except Exception:  # unwritable folder, unpicklable graph, no interpreter
        with contextlib.suppress(OSError):
            for i in mine:
                (folder / f"{jobs[i][0]}.job").unlink(missing_ok=True)
                (folder / f"{jobs[i][0]}.pt").unlink(missing_ok=True)
        return builds  # the jobs claimed here stay None
    _CHILDREN.append(child)
    for i in mine:
        builds[i] = Build(jobs[i][0], child, log)
    return builds


def held(key: str) -> Build | None:
    """The build of ``key`` that another run's child has under way, or None."""
    job = jobs_dir() / f"{key}.job"
    return Build(key) if job.exists() and not _stale(job) else None


def _claim(job: Path) -> bool:
    """Create ``job`` exclusively (taking over a stale one), naming this process until its
    child names itself; False where another run's child holds it."""
    try:
        fd = os.open(job, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if not _stale(job):
            return False
        job.unlink(missing_ok=True)
        fd = os.open(job, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with os.fdopen(fd, "w") as f:  # a process that dies before its child starts leaves a
        f.write(f"{os.getpid()}\n")  # job that the next run sees is stale
    return True


def running() -> int:
    """How many children this process started are still compiling."""
    for child in list(_CHILDREN):
        if child.poll() is not None:
            with contextlib.suppress(ValueError):
                _CHILDREN.remove(child)
    return len(_CHILDREN)


def wait(timeout: float = 900.0) -> None:
    """Wait for every package this process's children compile (a notebook or a test session
    that wants them stored before it goes on); past ``timeout`` seconds the rest are killed."""
    end = time.monotonic() + timeout
    for child in list(_CHILDREN):
        try:
            child.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        with contextlib.suppress(ValueError):
            _CHILDREN.remove(child)


def _main(nice: int, specs: list[Path]) -> None:
    """The child: compile each job's package in turn, unless another process stored it first,
    and remove its job file when it is done with it; a failure is written as ``key: reason``
    and the next job goes on. The log is removed when every job succeeded."""
    for spec in specs:  # whose jobs these are, for a run that finds them
        with contextlib.suppress(OSError):
            spec.with_suffix(".job").write_text(f"{os.getpid()}\n")
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    # unpickling a traced graph traces it again, which reads this module as an attribute of its
    # package without importing it (torch 2.13): a process that traced nothing has not
    import torch._higher_order_ops.triton_kernel_wrap

    from latentfit.mcmc.compiled import quiet

    failed = False
    for spec in specs:
        job = spec.with_suffix(".job")
        try:
            task = torch.load(spec, weights_only=False)
            if not compiled_cache.exists(task["key"]):
                with quiet():
                    compiled_cache.build(
                        task["key"],
                        task["module"],
                        task["example"],
                        task["dynamic"],
                        task["options"],
                    )
        except Exception as exc:
            failed = True
            text = str(exc).strip()
            first = text.splitlines()[0] if text else ""
            sys.stderr.write(f"{spec.stem}: {type(exc).__name__}: {first}\n")
            sys.stderr.flush()
        finally:
            spec.unlink(missing_ok=True)
            job.unlink(missing_ok=True)
    if not failed:
        (specs[0].parent / f"{specs[0].stem}.log").unlink(missing_ok=True)


if __name__ == "__main__":
    _main(int(sys.argv[1]), [Path(x) for x in sys.argv[2:]])
