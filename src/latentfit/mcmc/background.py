"""``compile=True``: the chains start sampling at once, eagerly, while the compiled code is built
in child processes; each compiled part takes over from the next transition after it is ready.

The sampler has two compiled parts (compiled.py): the leapfrog step and, for NUTS, the tree
bookkeeping of a doubling. For each, at the start of a run:

- its package is on disk (a model run before): loaded and checked against the eager function,
  in milliseconds; the run is compiled from its first transition;
- it is not: the graph is traced here (~1 s for the leapfrog, which needs the user's density;
  nothing for the bookkeeping, which is latentfit's own code) and a child process compiles it
  (builds.py, ~12 s of one core each on a CPU). The run samples meanwhile with the traced
  graph replayed by TorchScript's interpreter (replay.py; eagerly where it cannot be) and polls the
  child before every transition (a ``waitpid``, a microsecond); when the package is stored it is
  loaded, checked and used from then on. The child outlives a run that ends first, so that the
  next run finds the package. A process keeps at most one child per spare core: a loop that
  samples many data sets (each a new package) queues its parts behind the busy children, and
  a run that ends before a child is free compiles nothing.

Where no child can start (the cache folder cannot be written) or a child stores no package,
that part compiles in this process (``compiled.in_process``, waited for) with a
``CompileCacheWarning`` naming the reason; where the graph cannot be traced or the compiled
code disagrees with the eager one, it runs eagerly with a ``CompileFallbackWarning``, as with
``compile="wait"``.

``compile="replay"``, the sampler's default, is this without the children: both parts are
traced and replayed for the whole run, with no package looked for or built and nothing left
running after it; what cannot be traced runs eagerly, as the user asked for no compiling.

So a first run of a model never waits for a compiler, and runs compiled from the transition its
packages arrive; draws are the same for the same seed once the packages are on disk. The
transition at which each part took over is recorded (``warmup_stats["compiled_from"]`` of the
result) because compiled arithmetic rounds differently from eager arithmetic: a first run's
draws depend on when its packages arrived, which ``compile="wait"`` (compiling before the
first transition) avoids.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from latentfit.mcmc import builds, compiled_cache
from latentfit.mcmc.compiled import (
    LEAPFROG_DISAGREES,
    MERGE_DYNAMIC,
    AsModule,
    fallback,
    in_process,
    leapfrog_parts,
    merge_agrees,
    merge_options,
    merge_parts,
    quiet,
    reason,
    static_graph,
    wrap_leapfrog,
    wrap_merge,
)
from latentfit.mcmc.kernels import Metric, State
from latentfit.mcmc.narrow import NarrowSteps, can_narrow, elements_per_chain
from latentfit.mcmc.raising import replayed_step, wrap_replayed
from latentfit.mcmc.replay import ReplayedMerge
from latentfit.mcmc.target import Target

__all__ = ["BackgroundCompile"]

#: niceness added to a compiling child: the sampler's own transitions come first, the compiler
#: takes the cores they leave idle
CHILD_NICE = 10


def _slots() -> int:
    """How many children of this process compile at once: one per core the sampler leaves (at
    least one). One child compiles its packages in turn, the leapfrog's (which matters most)
    first; parts beyond the slots wait for one, and are not compiled where the run ends
    first."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class _Part:
    """One compiled part of the sampler and where its compiling stands."""

    name: str  # "leapfrog" or "merge"
    what: str  # for messages
    fn: Callable
    example: tuple
    tag: str
    check: Callable[[Callable], bool]
    wrap: Callable[[Callable], Callable]
    disagrees: Callable[[], str]
    dynamic: dict[int, int] | None = None
    options: dict | None = None  # inductor's settings (compiled_cache.build)
    key: str | None = None
    module: torch.nn.Module | None = field(default=None, repr=False)  # what a child compiles
    build: builds.Build | None = field(default=None, repr=False)  # None while queued


class BackgroundCompile:
    """The compiled parts of one run: ``leapfrog`` and ``merge`` (None while, or where, they
    run eagerly; replayed, replay.py, while their packages compile: the names in
    ``replaying``, and in ``replayed`` once they were), ``took_over`` (the number of
    transitions before each part ran compiled, None where it never did), ``seconds`` (the time
    this process spent on compiling: fingerprints, loads, checks, traces, and any in-process
    compile), and ``pending`` (parts still compiling in a child). With ``children=False``
    (``compile="replay"``) the parts are only traced and replayed: no package is looked for
    or built, and a part that cannot be traced runs eagerly without a warning."""

    def __init__(
        self,
        target: Target,
        metric: Metric,
        state: State,
        step_size: torch.Tensor,
        nuts: bool,
        *,
        children: bool = True,
    ):
        self.children = children  # False (``compile="replay"``): replayed, nothing compiled
        self.leapfrog: Callable | None = None
        self.merge: Callable | None = None
        self.took_over: dict[str, int | None] = {"leapfrog": None}
        self.seconds = 0.0
        self.pending: list[_Part] = []
        self.replayed: list[str] = []  # the parts that ran replayed (replay.py) meanwhile
        self.replaying: set[str] = set()  # those that still do
        self.dense = metric.dense
        raw, example, tag, check = leapfrog_parts(target, metric, state, step_size)
        self._replayed: Callable | None = None  # the leapfrog replayed, where it was
        self._leapfrog_parts = (raw, example, check)
        parts = [
            _Part(
                "leapfrog", "the leapfrog step", raw, example, tag, check,
                lambda c: wrap_leapfrog(c, self._replayed_leapfrog),
                lambda: LEAPFROG_DISAGREES,
            )
        ]  # fmt: skip
        if nuts:
            fn, example, tag, check, wrong = merge_parts(metric, state)
            self._merge_agrees = merge_agrees(metric, state)
            self.took_over["merge"] = None
            parts.append(
                _Part(
                    "merge", "the tree bookkeeping", fn, example, tag, check,
                    lambda c: wrap_merge(c, metric.dense),
                    lambda: f"the compiled tree bookkeeping disagrees with the eager one at "
                    f"{wrong} leaves",
                    MERGE_DYNAMIC, merge_options(state.u.device),
                )
            )  # fmt: skip
        for part in parts:
            self._start(part)
        self._start_children(0)

    def _start_children(self, transition: int) -> None:
        """Start children for the parts waiting for one, at most one per free slot: children
        that earlier runs of this process started (a loop over many data sets, each a new
        package) are counted, so that they queue instead of piling up."""
        queued = [p for p in self.pending if p.build is None]
        free = _slots() - builds.running()
        if not queued or free <= 0:
            return
        t0 = time.perf_counter()
        for group in [queued[i::free] for i in range(free)]:
            if group:
                self._spawn(group, transition)
        self.seconds += time.perf_counter() - t0

    def _start(self, part: _Part) -> None:
        t0 = time.perf_counter()
        if not self.children:
            try:
                with quiet():
                    if part.dynamic is None:
                        part.module = static_graph(part.fn, part.example)
                    self._replay(part)
            except Exception:  # the density cannot be traced: eagerly, as asked for nothing
                pass
            self.seconds += time.perf_counter() - t0
            return None
        try:
            with quiet():
                part.key = compiled_cache.fingerprint(part.fn, part.example, part.tag)
                if part.key is not None:
                    cached = compiled_cache.load(part.key, part.example[0].device)
                    if cached is not None and part.check(cached):
                        return self._use(part, cached, 0)
                    if cached is not None:
                        compiled_cache.discard(part.key)
                    part.build = builds.held(part.key)  # a rerun while a child compiles it
                    if part.build is None:  # to compile in a child
                        part.module = (
                            AsModule(part.fn)
                            if part.dynamic is not None
                            else static_graph(part.fn, part.example)
                        )
                    self.pending.append(part)
                    self._replay(part)
                    return None
                # no key (the function cannot be recorded): compiled here, every run
                return self._use(
                    part,
                    in_process(
                        part.fn, part.example, part.check, part.dynamic, options=part.options
                    ),
                    0,
                )
        except Exception as exc:  # tracing or compiling failed: this part runs eagerly
            fallback(f"{part.what} could not be traced or compiled ({reason(exc)})")
            return None
        finally:
            self.seconds += time.perf_counter() - t0

    def _replay(self, part: _Part) -> None:
        """Until its package arrives, the part runs replayed (replay.py) where it can."""
        if part.name == "leapfrog":
            # part.module is None on a rerun while another process's child compiles it
            replayed = replayed_step(part.fn, part.example, part.check, part.module)
            if replayed is None:  # eagerly until the package arrives, as without the replay
                return
            self._replayed = replayed
            self.leapfrog = wrap_replayed(replayed)
            if part.module is not None and can_narrow(part.example[0].shape[0]):  # narrow.py
                per_chain = elements_per_chain(part.module, part.example)
                if per_chain is not None:
                    self.leapfrog.narrow = NarrowSteps(per_chain)
        else:
            self.merge = ReplayedMerge(self.dense, self._merge_agrees)
        self.replayed.append(part.name)
        self.replaying.add(part.name)

    def _replayed_leapfrog(self) -> Callable | None:
        """The leapfrog replayed, for a compiled one that raises often (raising.py): the one
        that ran while the package compiled, else traced now."""
        if self._replayed is None:
            self._replayed = replayed_step(*self._leapfrog_parts)
        return self._replayed

    def _spawn(self, parts: list[_Part], transition: int) -> None:
        """Start one child compiling ``parts`` in turn; a part no child can take is compiled
        here (waited for), and takes over at ``transition``."""
        jobs = [(p.key, p.module, p.example, p.dynamic, p.options) for p in parts]
        for part, build in zip(parts, builds.spawn(jobs, CHILD_NICE), strict=True):
            part.build = build
            if build is None:
                self.pending.remove(part)
                why = f"no process could be started to compile it in {builds.jobs_dir()}"
                try:
                    with quiet():
                        self._use(part, self._here(part, why), transition)
                except Exception as exc:  # inductor failed too: this part runs eagerly
                    self._eager(part, f"{part.what} could not be compiled ({reason(exc)})")

    def _here(self, part: _Part, why: str) -> Callable | None:
        return in_process(part.fn, part.example, part.check, part.dynamic, why, part.options)

    def _eager(self, part: _Part, why: str) -> None:
        fallback(why)
        setattr(self, part.name, None)  # eagerly, as the warning says, not replayed
        self.replaying.discard(part.name)

    def _use(self, part: _Part, compiled: Callable | None, transition: int) -> None:
        if compiled is None:
            self._eager(part, part.disagrees())
            return
        setattr(self, part.name, part.wrap(compiled))
        self.replaying.discard(part.name)
        self.took_over[part.name] = transition

    def poll(self, transition: int) -> None:
        """Take over every part whose compiling has ended; ``transition`` is the number of
        transitions run so far."""
        self._start_children(transition)
        for part in list(self.pending):
            if part.build is None or not part.build.done():
                continue
            self.pending.remove(part)
            t0 = time.perf_counter()
            try:
                with quiet():
                    compiled = compiled_cache.load(part.key, part.example[0].device)
                    if compiled is not None and not part.check(compiled):
                        compiled_cache.discard(part.key)
                        self._eager(part, part.disagrees())
                        continue
                    if compiled is None:  # the child stored nothing: compiled here instead
                        compiled = self._here(part, part.build.why_not())
                    self._use(part, compiled, transition)
            except Exception as exc:
                self._eager(part, f"{part.what} could not be compiled ({reason(exc)})")
            finally:
                self.seconds += time.perf_counter() - t0
