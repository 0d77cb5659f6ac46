"""The sampling driver: initialise every chain, warm up (Stan's windowed adaptation), draw.

``sample(log_density, init=..., constraints=...)`` runs NUTS (or static HMC) on all chains as one
batched computation and returns an ``MCMCResult``; ``MCMCResult.resume(n)`` draws more from
where the chains stopped, with the adapted step size and metric (no second warm-up).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentfit._interrupt import keeping_fit_on_ctrl_c, stop_requested, stoppable
from latentfit._memory import MAX_WORK
from latentfit._validation import (
    _is_real,
    check_bool,
    check_positive_int,
    device_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.errors import ParameterError, StrandedChainWarning, user_stacklevel
from latentfit.mcmc.adaptation import (
    DualAveraging,
    WindowSchedule,
    find_reasonable_step_size,
    regularized_metric,
)
from latentfit.mcmc.budget import (
    check_counts,
    check_iterations,
    check_run,
    nuts_parts,
)
from latentfit.mcmc.fit_posterior import fit_target
from latentfit.mcmc.kernels import Metric, State, hmc_transition, nuts_transition
from latentfit.mcmc.progress import ChainBars
from latentfit.mcmc.target import Target, init_values

__all__ = ["SamplerConfig", "sample", "sample_target"]


COMPILE_MODES = ("replay", "wait")  # besides True and False


#: The most leapfrog steps a static HMC transition may take: NUTS's deepest tree at
#: max_depth=20 (~1e6 gradient evaluations a chain and transition)
MAX_NUM_STEPS = 2**20 - 1


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample: the kernel and its settings (Stan's defaults)."""

    kernel: str = "nuts"  # "nuts" or "hmc"
    metric: str = "diag"  # "diag", "dense" or "unit"
    max_depth: int = 10
    num_steps: int = 10  # leapfrog steps of static HMC
    target_accept: float = 0.8
    init_radius: float = 2.0  # Stan: uniform(-2, 2) in unconstrained space
    # move chains stranded far below the others at the end of the first warm-up buffer
    # (a latentfit departure from Stan; see _Run._move_stranded)
    relocate_stranded: bool = True
    # "replay" (the default): the leapfrog step and tree bookkeeping traced once and replayed
    # by TorchScript's Static Runtime, no compiler (mcmc/replay.py; eager on other devices
    # than the CPU); True: compiled (mcmc/compiled.py), several times faster steps, replayed until
    # child processes have built them (mcmc/background.py: 15-25 s the first time a model is
    # seen, kept on disk after); "wait" compiles before the first transition; False: eager
    compile: bool | str = "replay"
    # "own" (the default): each chain at its own pace inside the batch (mcmc/paced.py; NUTS
    # on the CPU with numba, else "batch"); "batch": every chain's transition in step with the
    # others' (a transition runs until its longest trajectory ends)
    pace: str = "own"

    def check(self) -> None:
        if self.kernel not in ("nuts", "hmc"):
            raise ParameterError(f"kernel must be 'nuts' or 'hmc', got {self.kernel!r}")
        if self.metric not in ("diag", "dense", "unit"):
            raise ParameterError(f"metric must be 'diag', 'dense' or 'unit', got {self.metric!r}")
        check_positive_int(self.max_depth, "max_depth")
        check_positive_int(self.num_steps, "num_steps")
        if self.num_steps > MAX_NUM_STEPS:
            raise ParameterError(
                f"num_steps={self.num_steps:,} leapfrog steps a transition is more than the "
                f"{MAX_NUM_STEPS:,} of NUTS's deepest tree at max_depth=20 (a run would not "
                "end in any useful time; static HMC takes tens to hundreds); kernel='nuts' "
                "chooses the path length itself"
            )
        if not (_is_real(self.target_accept) and 0 < self.target_accept < 1):
            raise ParameterError(
                f"target_accept must lie strictly between 0 and 1, got {self.target_accept!r}"
            )
        if not (
            _is_real(self.init_radius) and math.isfinite(self.init_radius) and self.init_radius >= 0
        ):
            raise ParameterError(
                f"init_radius must be a finite number >= 0, got {self.init_radius!r}"
            )
        check_bool(self.relocate_stranded, "relocate_stranded")
        if self.pace not in ("batch", "own"):
            raise ParameterError(f"pace must be 'batch' or 'own', got {self.pace!r}")
        if not (self.compile is True or self.compile is False or self.compile in COMPILE_MODES):
            raise ParameterError(
                f"compile must be True, False, 'replay' or 'wait', got {self.compile!r}"
            )


def sample(
    log_density: Callable[..., torch.Tensor],
    init: dict,
    *,
    constraints: dict | None = None,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_draws: int = 1000,
    kernel: str = "nuts",
    metric: str = "diag",
    max_depth: int = 10,
    num_steps: int = 10,
    target_accept: float = 0.8,
    init_strategy: str = "uniform",
    vectorized: bool = False,
    value_and_grad: Callable | None = None,
    generator: torch.Generator | int | None = None,
    progress_bar: bool = True,
    dtype=None,
    device=None,
    compile: bool | str = "replay",
    pace: str = "own",
    max_work: int | float | None = MAX_WORK,
):
    """Sample the posterior ``exp(log_density(**params))`` by NUTS or static HMC.

    ``log_density(**params)`` returns a scalar (one chain's parameters; chains are batched with
    ``torch.func.vmap``), or with ``vectorized=True`` a vector (c,) for parameters with a leading
    chain dimension (faster). ``init`` names every parameter with a value of its shape;
    ``constraints`` gives ``torch.distributions.constraints`` (``positive``,
    ``interval(a, b)``, ``simplex``, ``latentfit.mcmc.ordered_vector``, ...): each is sampled in
    unconstrained space through ``biject_to`` with its Jacobian added, as Stan does.
    ``init_strategy="uniform"`` starts each chain uniformly in (-2, 2) in unconstrained space
    (Stan's default); ``"init"`` starts every chain at ``init``. ``value_and_grad``, optional,
    returns ``(log_density, {name: gradient})`` for the same parameters, written by hand: the
    sampler then runs without autograd (see ``Target``).

    ``metric`` is ``"diag"`` (Stan's default), ``"dense"`` or ``"unit"``; the warm-up of
    ``num_warmup`` iterations adapts each chain's step size (dual averaging to
    ``target_accept``) and metric in Stan's expanding windows. All chains advance together as one
    batched computation in ``dtype`` (float64 by default) on ``device``. Randomness comes only
    from ``generator`` (a ``torch.Generator`` or a seed): the same seed gives the same draws.
    ``progress_bar`` draws a bar per chain (tqdm; at the own pace each follows its chain;
    past 16 chains one bar for all).
    By default (``pace="own"``) NUTS runs each chain's transitions at its own pace inside the
    batch (``mcmc.paced``, on the CPU where numba is installed: every batched step is one
    leapfrog step of every chain, then one leaf of each chain's tree in a compiled kernel),
    its random numbers keyed by chain and transition, so that a resumed run is the longer run
    bit for bit; the kernel's first run after an install does not wait for its compiler
    (``mcmc.paced_compile``). ``pace="batch"`` runs every chain's transition in step with the
    others', each until its longest trajectory ends (static HMC, other devices than the CPU,
    and a CPU without numba always do; 1.4-3.7x fewer effective samples per second on the
    posteriordb posteriors on the CPU).

    By default (``compile="replay"``) the leapfrog step (log-density, gradient, integrator)
    and NUTS's tree bookkeeping are traced once, in milliseconds, and replayed by TorchScript's
    Static Runtime (``mcmc.replay``; no compiler; whole runs 2.5-3.8x faster than eager on the
    posteriordb posteriors); each is checked against the eager function first, and a density that cannot be traced runs
    eagerly, silently. On other devices than the CPU the default runs eagerly.
    ``compile=False`` always runs eagerly. ``compile=True`` runs both parts compiled (see
    ``latentfit.mcmc.compiled``), several times faster still. The first time a model is seen
    they compile in child processes (15-25 s of a CPU core) while the chains sample replayed,
    and take over when ready (``mcmc.background``); they are kept on disk, so later runs load
    them in milliseconds and are compiled throughout. Compiled arithmetic rounds differently,
    so a first run's draws depend on when the compiled code arrived
    (``warmup_stats["compiled_from"]``); ``compile="wait"`` compiles before the first
    transition instead. A density that cannot be traced for ``compile=True`` samples eagerly
    with a ``CompileFallbackWarning``.

    ``max_work``: the most multiply-adds the ``num_warmup + num_draws`` transitions may take
    by the least count of their work (:func:`check_work`; by default about a day of one CPU
    core, a count off by digits); None or ``math.inf``: no limit.

    Ctrl-C (a notebook's interrupt) after warm-up ends the draws after a transition, once each
    chain has 4, and returns the result holding them, with a warning (``resume`` continues the
    chains); during warm-up, or pressed twice, it raises KeyboardInterrupt at once.
    """
    vectorized = check_bool(vectorized, "vectorized")
    progress_bar = check_bool(progress_bar, "progress_bar")
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    values = init_values(init, dtype, device)
    shapes = {k: tuple(v.shape) for k, v in values.items()}
    target = Target(
        log_density,
        shapes,
        constraints,
        vectorized=vectorized,
        dtype=dtype,
        device=device,
        value_and_grad=value_and_grad,
    )
    if init_strategy not in ("uniform", "init"):
        raise ParameterError(f"init_strategy must be 'uniform' or 'init', got {init_strategy!r}")
    num_chains, num_warmup, num_draws = check_counts(num_chains, num_warmup, num_draws)
    start = None
    if init_strategy == "init":
        start = {k: v.expand(num_chains, *v.shape) for k, v in values.items()}
    config = SamplerConfig(
        kernel, metric, max_depth, num_steps, target_accept, compile=compile, pace=pace
    )
    return sample_target(
        target,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_draws=num_draws,
        config=config,
        start=start,
        generator=generator,
        progress_bar=progress_bar,
        max_work=max_work,
    )


def _initial_state(target: Target, num_chains: int, start, radius: float, gen) -> State:
    """Stan's initialisation: uniform(-radius, radius) in unconstrained space, redrawn (up to
    100 times) for chains whose log-density or gradient is not finite."""
    p, dt, dev = target.n_free, target.dtype, target.device
    if start is not None:
        if not isinstance(start, dict) or set(start) != set(target.names):
            given = list(start) if isinstance(start, dict) else type(start).__name__
            raise ParameterError(
                f"start must be a dict naming every parameter ({target.names}) with a value per "
                f"chain, shape (num_chains, *shape); got {given}"
            )
        values = {k: torch.as_tensor(v, dtype=dt, device=dev) for k, v in start.items()}
        for slot in target.slots:
            if tuple(values[slot.name].shape) != (num_chains, *slot.shape):
                raise ParameterError(
                    f"start[{slot.name!r}] must have shape {(num_chains, *slot.shape)} (a value "
                    f"per chain), got {tuple(values[slot.name].shape)}"
                )
        outside = target.outside(values)
        if outside:
            raise ParameterError(
                f"init lies outside the support of the constraints: {outside}; choose init "
                "inside the support"
            )
        u = target.unconstrain(values)
        lp, grad = target.log_prob_and_grad(u)
        bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))
        if bool(bad.any()) and _out_of_torch(target):
            raise ParameterError(_out_of_torch(target))
        if bool(bad.any()):
            raise ParameterError(
                "the log-density or its gradient is not finite at init "
                f"(chains {bad.nonzero().squeeze(1).tolist()}); choose init inside the support"
                + _raised(target)
            )
        return State(u, lp, grad)
    u = (torch.rand(num_chains, p, generator=gen, dtype=dt, device=dev) * 2 - 1) * radius
    lp, grad = target.log_prob_and_grad(u)
    for _ in range(100):
        bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))
        if not bool(bad.any()):
            return State(u, lp, grad)
        fresh = (torch.rand(num_chains, p, generator=gen, dtype=dt, device=dev) * 2 - 1) * radius
        u = torch.where(bad[:, None], fresh, u)
        lp, grad = target.log_prob_and_grad(u)
    if _out_of_torch(target):
        raise ParameterError(_out_of_torch(target))
    raise ParameterError(
        f"no finite log-density in 100 random starts in (-{radius}, {radius}) (unconstrained) for "
        f"chains {bad.nonzero().squeeze(1).tolist()}; pass init= with init_strategy='init'"
        + _raised(target)
    )


#: What torch.func.vmap raises where a density copies a parameter out of torch: torch.tensor
#: of it, .item() (torch.tensor of a list of parameters calls it), numpy.
_OUT_OF_TORCH = (
    "Can't detach views in-place",
    "calling .item() on a Tensor",
    "Cannot access data pointer of Tensor that doesn't have storage",
)


def _out_of_torch(target: Target) -> str:
    """The refusal of a density that raised, where it was rejected, what vmap raises when a
    density takes a parameter out of torch (:data:`_OUT_OF_TORCH`), or ``""``. That is the
    cause, so it is said first: the density raises at every point, and advice about the
    starts (init=, the support) would send the user the wrong way."""
    exc = target.last_error
    text = str(exc).strip().splitlines()[0][:300] if exc is not None and str(exc).strip() else ""
    if not any(what in text for what in _OUT_OF_TORCH):
        return ""
    text = text.split(". ")[0]  # torch's advice after it is about other cases (DDP)
    return (
        "the log-density takes a parameter out of torch (torch.tensor(...) of a parameter, "
        ".item(), float() or numpy), which torch.func.vmap cannot map over the chains: it "
        f"raised {type(exc).__name__}: {text}. Build it from the parameters with torch "
        "operations, torch.stack([a, b]) rather than torch.tensor([a, b]): with "
        "vectorized=True such a term has no gradient and is refused too"
    )


def _raised(target: Target) -> str:
    """What the log-density raised where it was rejected, for a message: a density that raises
    at every point is a bug in it (or an operation vmap cannot map), not a bad start."""
    exc = target.last_error
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    hint = ""
    if not target.vectorized and "vmap" in text:
        hint = (
            " (the density is mapped over the chains with torch.func.vmap, which cannot map "
            "this operation: write it for all chains at once, each parameter with a leading "
            "chain dimension, and pass vectorized=True)"
        )
    return f". Where it was rejected the log-density raised {type(exc).__name__}: {text}{hint}"


def sample_target(
    target: Target,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_draws: int = 1000,
    config: SamplerConfig | None = None,
    start: dict | None = None,
    generator: torch.Generator | int | None = None,
    progress_bar: bool = True,
    max_work: int | float | None = MAX_WORK,
):
    """``sample`` on a ``Target`` already built (the fit_map path and the tests use it)."""
    from latentfit.mcmc.result import MCMCResult

    config = config or SamplerConfig()
    config.check()
    progress_bar = check_bool(progress_bar, "progress_bar")
    num_chains, num_warmup, num_draws = check_counts(num_chains, num_warmup, num_draws)
    check_memory(target, config, num_chains, num_warmup, num_draws)
    check_work(target, num_chains, num_warmup + num_draws, max_work=max_work)
    gen = device_generator(generator, target.device)
    if runs_paced(config, target):  # its kernels compile (first time) while the run sets up
        from latentfit.mcmc.paced_compile import prepare

        prepare()
    state = _initial_state(target, num_chains, start, config.init_radius, gen)
    target.check_followed(state.u[0], config.kernel.upper())
    p, dt = target.n_free, target.dtype
    if config.metric == "dense":
        inv = torch.eye(p, dtype=dt, device=target.device).expand(num_chains, p, p).clone()
    else:
        inv = torch.ones(num_chains, p, dtype=dt, device=target.device)
    metric = Metric(inv)
    step = find_reasonable_step_size(
        target, metric, state, torch.ones(num_chains, dtype=dt, device=target.device), gen
    )
    # NUTS's tree bookkeeping, batched (a merge per doubling), unless the chains run at their
    # own pace (the compiled kernel of paced.py builds the trees)
    nuts = config.kernel == "nuts" and not runs_paced(config, target)
    leapfrog_step = merge_step = background = None
    t0 = time.perf_counter()
    if config.compile == "wait":
        from latentfit.mcmc.compiled import compile_leapfrog, compile_merge, start_merge_build

        child = start_merge_build(metric, state) if nuts else None  # compiles alongside
        leapfrog_step, _ = compile_leapfrog(target, metric, state, step)
        if nuts:
            merge_step, _ = compile_merge(metric, state, child)
    elif config.compile is True or (config.compile == "replay" and target.device.type == "cpu"):
        from latentfit.mcmc.background import BackgroundCompile

        children = config.compile is True  # "replay": traced and replayed, nothing compiled
        background = BackgroundCompile(target, metric, state, step, nuts, children=children)
        leapfrog_step, merge_step = background.leapfrog, background.merge  # loaded from disk
    tried = background is not None or config.compile == "wait"
    waited = time.perf_counter() - t0 if tried else None
    sampler = _Run(target, config, metric, step, state, gen, leapfrog_step, merge_step)
    sampler.background, sampler.compile_seconds = background, waited
    # Ctrl-C from Python after warm-up ends the draws after a transition and returns them
    with keeping_fit_on_ctrl_c("sample", raising=False) as pressed:
        warm = sampler.warmup(num_warmup, progress_bar)
        draws = sampler.draw(num_draws, progress_bar)
    warm.update(sampler.compile_stats())
    result = MCMCResult(target=target, runner=sampler, draws=draws, warmup=warm)
    if pressed.stopped and result.num_draws < num_draws:
        warn_stopped(result.num_draws, num_draws)
    return result


def warn_stopped(made: int, asked: int) -> None:
    """Say that Ctrl-C ended the draws early, and how to go on (from Python: the command line
    says it in its report)."""
    frame, level = sys._getframe(0), 1  # the warning names the first line outside latentfit
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"sampling stopped by Ctrl-C after {made} of {asked} draws per chain; the result holds "
        f"them, and its resume({asked - made}) continues the chains",
        UserWarning,
        stacklevel=level,
    )


#: latentfit's own files (sample, sample_target, fit_map's sample_posterior, resume)
_PACKAGE = str(Path(__file__).resolve().parents[1])


def check_memory(
    target: Target, config: SamplerConfig, chains: int, warmup: int, draws: int
) -> None:
    """Refuse a run whose draws, warm-up records, deepest trajectory (NUTS: 2^(max_depth - 1)
    states a chain) or dense metric would exceed the memory available (budget.py)."""
    p = target.n_free
    values = sum(math.prod(slot.shape) for slot in target.slots)
    leaves = 2 ** min(config.max_depth - 1, 64) if config.kernel == "nuts" else 2
    parts = nuts_parts(
        chains, draws, warmup, p, values, target.dtype.itemsize,
        leaves=leaves, dense=config.metric == "dense",
    )  # fmt: skip
    check_run(
        f"sampling {chains:,} chains x {draws:,} draws of {p} parameters",
        parts,
        device=target.device,
        hint=_MEMORY_REMEDY[max(parts, key=parts.get)],
    )


def check_work(
    target: Target,
    chains: int,
    iterations: int,
    option: str = "num_warmup + num_draws",
    *,
    max_work: int | float | None = MAX_WORK,
) -> None:
    """Refuse ``iterations`` transitions that would take more than ``max_work`` multiply-adds,
    by default about a day of one core (budget.check_iterations; None: no limit). A transition
    takes at least one leapfrog step of every chain and a density's cost is unknown, so only
    the least is counted: what a count off by digits (``num_warmup=10**12``, which keeps no
    records for the memory check to see) would take."""
    check_iterations(
        f"sampling {chains:,} chains of {target.n_free} parameters",
        iterations,
        chains * target.n_free,
        option=option,
        max_work=max_work,
    )


#: What shrinks each part of ``nuts_parts``, for the message of a run refused by its size
_MEMORY_REMEDY = {
    "draws": "use fewer chains or draws",
    "warm-up": "use fewer warm-up iterations (num_warmup) or chains",
    "trajectory": "use a smaller max_depth (NUTS's deepest tree keeps 2^(max_depth - 1) states "
    "a chain) or fewer chains",
    "dense metric": "use metric='diag' or fewer chains",
}


class _Run:
    """The kernel with its adapted step size and metric, and where the chains are."""

    def __init__(self, target, config, metric, step, state, gen, leapfrog_step=None, merge=None):
        self.target, self.config, self.metric = target, config, metric
        self.step, self.state, self.gen = step, state, gen
        self.leapfrog_step = leapfrog_step  # the compiled step, or None (eager)
        self.merge_step = merge  # the compiled tree bookkeeping of NUTS, or None (eager)
        self.background = None  # a BackgroundCompile whose parts take over when ready
        self.compile_seconds = None  # what this process spent compiling before it sampled
        self.n_done = 0  # draws
        self.n_transitions = 0  # warm-up and draws
        self.n_paced = 0  # transitions of every chain at its own pace (mcmc/paced.py)
        self.seed = None  # their random numbers' key, drawn at the first

    def compile_stats(self) -> dict:
        """Whether each compiled part runs, and from which transition (0: from the first);
        which parts ran replayed while their packages compiled (mcmc/replay.py)."""
        bg = self.background
        replayed: tuple[str, ...] = ()
        replaying: set[str] = set()
        if bg is not None:
            self.compile_seconds = bg.seconds
            since = dict(bg.took_over)
            replayed, replaying = tuple(bg.replayed), bg.replaying
        else:
            since = {"leapfrog": 0 if self.leapfrog_step is not None else None}
            if self.config.kernel == "nuts":
                since["merge"] = 0 if self.merge_step is not None else None
        return {
            "compile_seconds": self.compile_seconds,
            "compiled": self.leapfrog_step is not None and "leapfrog" not in replaying,
            "compiled_merge": self.merge_step is not None and "merge" not in replaying,
            "compiled_from": since if self.config.compile in (True, "wait") else None,
            "replayed": replayed,
        }

    def transition(self):
        bg = self.background
        if bg is not None and bg.pending:  # a part compiled in a child process may be ready
            bg.poll(self.n_transitions)
            self.leapfrog_step, self.merge_step = bg.leapfrog, bg.merge
        self.n_transitions += 1
        if self.config.kernel == "nuts":
            return nuts_transition(
                self.target,
                self.metric,
                self.state,
                self.step,
                self.gen,
                self.config.max_depth,
                self.leapfrog_step,
                self.merge_step,
            )
        return hmc_transition(
            self.target,
            self.metric,
            self.state,
            self.step,
            self.gen,
            self.config.num_steps,
            self.leapfrog_step,
        )

    def warmup(self, num_warmup: int, progress_bar: bool) -> dict:
        """Stan's windowed adaptation; returns the warm-up statistics (each transition's
        ``accept_stat``, ``n_leapfrog`` and ``tree_depth``, (c, num_warmup), as Stan's
        ``save_warmup`` keeps them)."""
        if self.paced():
            return self._warmup_paced(num_warmup, progress_bar)
        sched = WindowSchedule(num_warmup)
        da = DualAveraging(self.step, self.config.target_accept)
        window: list[torch.Tensor] = []
        accept, n_leap, depth = [], [], []
        adapt_metric = self.config.metric != "unit"
        lps: list[torch.Tensor] = []
        relocated: list[int] = []
        check_at = sched.init_buffer - 1 if sched.ends and self.config.relocate_stranded else -1
        bars = ChainBars(self.state.u.shape[0], num_warmup, "warm-up", progress_bar)
        for it in range(num_warmup):
            self.state, stats = self.transition()
            bars.advance()
            accept.append(stats.accept_stat)
            n_leap.append(stats.n_leapfrog)
            depth.append(stats.tree_depth)
            self.step = da.update(stats.accept_stat)
            lps.append(self.state.log_prob)
            if it == check_at:
                donor, relocated = self._move_stranded(torch.stack(lps[-25:], 1))
                if donor is not None:  # with the dual averaging's state
                    da.mu, da.s_bar, da.x_bar = da.mu[donor], da.s_bar[donor], da.x_bar[donor]
            if adapt_metric and sched.collects(it):
                window.append(self.state.u)
            if adapt_metric and it in sched.ends and len(window) > 2:
                self.metric = Metric(
                    regularized_metric(torch.stack(window), self.config.metric == "dense")
                )
                window = []
                self.step = find_reasonable_step_size(
                    self.target, self.metric, self.state, self.step, self.gen
                )
                da.restart(self.step)
        bars.close()
        if num_warmup > 0:
            self.step = da.final()
            check_bounded(self.target, torch.stack(lps, 1), self.state.u, "warm-up iteration")
        return {
            "accept_stat": torch.stack(accept, 1) if accept else None,
            "n_leapfrog": torch.stack(n_leap, 1) if n_leap else None,
            "tree_depth": torch.stack(depth, 1) if depth else None,
            "windows": list(sched.ends),
            "relocated": relocated,
        }

    def paced(self) -> bool:
        """Whether the chains run at their own pace (:func:`runs_paced`)."""
        return runs_paced(self.config, self.target)

    def _poll(self) -> None:
        """A part compiled in a child process may be ready (as :meth:`transition` asks)."""
        bg = self.background
        if bg is not None and bg.pending:
            bg.poll(self.n_transitions)
            self.leapfrog_step, self.merge_step = bg.leapfrog, bg.merge

    def _warmup_paced(self, num_warmup: int, progress_bar: bool) -> dict:
        """:meth:`warmup` with every chain at its own pace (mcmc/paced.py): each chain's step
        size adapts after each of its transitions; the chains wait for one another where a
        window ends (the metric and a new step size set for all, as :meth:`warmup` does) and
        where stranded chains are moved."""
        from latentfit.mcmc.paced import dual_averaging_state, final_step, run_paced

        sched = WindowSchedule(num_warmup)
        adapt_metric = self.config.metric != "unit"
        check_at = sched.init_buffer - 1 if sched.ends and self.config.relocate_stranded else -1
        marks = {check_at, num_warmup - 1, *(sched.ends if adapt_metric else ())}
        events = sorted(m for m in marks if 0 <= m < num_warmup)
        da = dual_averaging_state(self.step)
        recs: list[dict] = []
        relocated: list[int] = []
        begin = 0
        bars = ChainBars(self.state.u.shape[0], num_warmup, "warm-up", progress_bar)
        for end in events:
            self._poll()
            rec = run_paced(
                self, end + 1 - begin, da, progress=lambda n, b=begin: bars.reach(b + n)
            )
            recs.append({k: rec[k] for k in ("lp", *_WARM_KEYS)})  # positions: the window's
            self.n_transitions += end + 1 - begin
            if end == check_at:
                lp = torch.cat([r["lp"] for r in recs], 1)[:, -25:]
                donor, relocated = self._move_stranded(lp)
                if donor is not None:  # with the dual averaging's state
                    da[:] = da[donor.cpu().numpy()]
            window = rec["u"][:, max(0, sched.init_buffer - begin) :]  # (c, n, p)
            if adapt_metric and end in sched.ends and window.shape[1] > 2:
                dense = self.config.metric == "dense"
                self.metric = Metric(regularized_metric(window.transpose(0, 1), dense))
                self.step = find_reasonable_step_size(
                    self.target, self.metric, self.state, self.step, self.gen
                )
                da[:] = dual_averaging_state(self.step)
            begin = end + 1
        bars.close()
        stats = {k: torch.cat([r[k] for r in recs], 1) if recs else None for k in _WARM_KEYS}
        if num_warmup > 0:
            self.step = final_step(da, self.step)
            check_bounded(
                self.target,
                torch.cat([r["lp"] for r in recs], 1),
                self.state.u,
                "warm-up iteration",
            )
        return {**stats, "windows": list(sched.ends), "relocated": relocated}

    def _move_stranded(self, lp: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
        """Move every chain stranded far below the others to another chain's position, and
        say so (a StrandedChainWarning).

        ``lp`` (c, k) holds the log-densities of the last k iterations of the initial warm-up
        buffer. A chain is stranded when even its highest value stays below another chain's
        lowest value by more than ``10 * sqrt(p)`` (the log-density of a p-dimensional typical
        set spreads by about ``sqrt(p / 2)``, so chains in one mode overlap by far). Such a
        chain sits in a minor mode: the first trajectories from a random start carry the
        start's excess potential energy as kinetic energy and can land anywhere, e.g. in a
        mixture's mode with both means on one cluster, 450 nats below the posterior's mode,
        which a chain never leaves. Its warm-up draws are discarded anyway, so it restarts from
        the position, step size and dual-averaging state of a chain drawn at random among the
        others (Stan does not do this; ``SamplerConfig(relocate_stranded=False)`` keeps every
        chain where it is, so that R-hat reports it). Returns each chain's donor (itself where
        it is not stranded; None where no chain is), for the caller to move the dual
        averaging's state too, and the stranded chains' indices."""
        c = lp.shape[0]
        if c < 2:
            return None, []
        margin = 10.0 * math.sqrt(self.target.n_free)
        floor = lp.min(1).values.max()
        stranded = lp.max(1).values < floor - margin  # (c,)
        if not bool(stranded.any()):
            return None, []
        good = (~stranded).nonzero().squeeze(1)
        pick = torch.randint(len(good), (c,), generator=self.gen, device=self.gen.device)
        donor = torch.where(
            stranded, good[pick.to(good.device)], torch.arange(c, device=good.device)
        )
        self.state = State(*(x[donor] for x in self.state))
        self.step = self.step[donor]
        relocated = stranded.nonzero().squeeze(1).tolist()
        warnings.warn(  # said, not hidden: the posterior may have a minor mode there
            f"chain(s) {relocated} were stranded far below the others' log-density at the "
            "end of the first warm-up window (a minor mode) and restart from other chains' "
            "positions; pass SamplerConfig(relocate_stranded=False) to keep them where they "
            "are (R-hat then reports them)",
            StrandedChainWarning,
            stacklevel=user_stacklevel(),
        )
        return donor, relocated

    def snapshot(self) -> tuple:
        """What :meth:`draw` moves on: the chains' state, the random stream and the counts (the
        kernels return a new state, so holding the old one keeps it)."""
        return self.state, self.gen.get_state(), self.n_done, self.n_transitions, self.n_paced

    def restore(self, snapshot: tuple) -> None:
        """The chains put back where :meth:`snapshot` found them."""
        self.state, gen_state, self.n_done, self.n_transitions, self.n_paced = snapshot
        self.gen.set_state(gen_state)

    def draw(self, num_draws: int, progress_bar: bool) -> dict:
        """``num_draws`` transitions with the adaptation frozen: (c, n, ...) records."""
        if self.paced():
            return self._draw_paced(num_draws, progress_bar)
        keys = ("u", "lp", "accept_stat", "n_leapfrog", "tree_depth", "diverging", "energy")
        rec: dict[str, list] = {k: [] for k in (*keys, "divergence_u")}
        # Ctrl-C at the command line (latentfit._interrupt) ends the draws after a transition,
        # once each chain has the 4 draws its diagnostics need
        chains = self.state.u.shape[0]
        with ChainBars(chains, num_draws, "sampling", progress_bar) as bars:
            with stoppable("transition", "the draws so far"):
                for t in range(num_draws):
                    self.state, stats = self.transition()
                    bars.advance()
                    rec["u"].append(self.state.u)
                    rec["lp"].append(self.state.log_prob)
                    for k in keys[2:]:
                        rec[k].append(getattr(stats, k))
                    rec["divergence_u"].append(stats.divergence_u)
                    if stop_requested() and t + 1 >= min(4, num_draws):
                        break
        out = {k: torch.stack(v, 1) for k, v in rec.items()}
        check_bounded(self.target, out["lp"], self.state.u, "draw", self.n_done)
        self.n_done += len(rec["u"])
        return out

    def _draw_paced(self, num_draws: int, progress_bar: bool) -> dict:
        """:meth:`draw` with every chain at its own pace (mcmc/paced.py)."""
        from latentfit.mcmc.paced import run_paced

        self._poll()
        chains = self.state.u.shape[0]
        with ChainBars(chains, num_draws, "sampling", progress_bar) as bars:
            with stoppable("transition", "the draws so far"):
                out = run_paced(self, num_draws, stop=stop_requested, progress=bars.reach)
        made = out["u"].shape[1]
        self.n_transitions += made
        check_bounded(self.target, out["lp"], self.state.u, "draw", self.n_done)
        self.n_done += made
        return out


#: the warm-up statistics kept per transition
_WARM_KEYS = ("accept_stat", "n_leapfrog", "tree_depth")


def runs_paced(config: SamplerConfig, target: Target) -> bool:
    """Whether the chains run at their own pace: ``SamplerConfig(pace="own")``, NUTS, on the
    CPU, where the compiled kernels can run (else batched)."""
    if config.pace != "own" or config.kernel != "nuts" or target.device.type != "cpu":
        return False
    from latentfit import _compiled

    return _compiled.available()


def check_bounded(target: Target, lp: torch.Tensor, u: torch.Tensor, what: str, first=0) -> None:
    """Refuse (ParameterError) a run whose log-densities ``lp`` (c, n) reached +inf: a density
    unbounded there (a singularity) puts all its mass at such points, and a chain that reaches
    one does not leave, since from an energy of -inf no leaf of a trajectory has a finite
    weight. ``u`` (c, p) is where the chains are now, named where its log-density is still
    +inf; ``first`` numbers the first of the n iterations."""
    hit = lp == math.inf  # (c, n)
    if not bool(hit.any()):
        return
    now = hit[:, -1]  # (c,): the chains at such a point now
    chain = int((now if bool(now.any()) else hit.any(1)).nonzero()[0])
    at = ""
    if bool(now[chain]):
        at = f" at { ({k: v[0].tolist() for k, v in target.constrain(u[chain : chain + 1])[0].items()}) }"
    raise ParameterError(
        f"the log-density is +inf{at} (chain {chain}, first at {what} "
        f"{first + int(hit[chain].nonzero()[0])}): it is unbounded there, so the draws would "
        "sit at such points. A proper density is finite everywhere: check the model there "
        "(a Gamma or Beta density with a shape below 1 at its boundary, a scale reaching 0), "
        "or constrain the parameter away from it"
    )


def _config(options: dict) -> SamplerConfig:
    known = set(SamplerConfig.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ParameterError(f"unknown sampler option(s) {unknown}; choose from {sorted(known)}")
    return SamplerConfig(**options)


def _finite_starts(target: Target, u_map: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
    """The chains' starts ``u0`` (c, p) around the MAP ``u_map`` (1, p), each moved halfway
    back to the MAP while its log-density or gradient is not finite (30 times, then onto the
    MAP): a prior of bounded support, a callable ``Uniform(2.9, 3.6).log_prob`` about a MAP
    of 3.25, put chains started a factor e from it outside, and the run was refused with
    "choose init inside the support", which ``sample_posterior`` takes none of."""
    for _ in range(30):
        lp, grad = target.log_prob_and_grad(u0)
        bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))  # (c,)
        if not bool(bad.any()):
            return u0
        u0 = torch.where(bad[:, None], (u0 + u_map) / 2, u0)
    u0 = torch.where(bad[:, None], u_map, u0)
    if target.last_error is not None and not bool(
        torch.isfinite(target.log_prob_and_grad(u_map)[0]).all()
    ):
        # the density raised even at the MAP, where fit_map evaluated it: it fails where the
        # chains are mapped with vmap. sample()'s words ("choose init", "pass
        # vectorized=True") name options sample_posterior does not take
        exc = target.last_error
        text = " ".join(str(exc).split())[:300].rstrip(" .")
        raise ParameterError(
            f"sample_posterior maps the posterior over the chains with torch.func.vmap, where "
            f"it raised {type(exc).__name__}: {text}. Write the log-density of the family and "
            "of a callable prior with torch operations only (torch.where rather than an if on "
            "a parameter's value; no .item(), float() or numpy), or give the prior as torch "
            "distributions, {name: distribution}"
        )
    return u0


def _check_fit_run(target, num_chains, num_warmup, num_draws, max_work, options):
    """The sampler's options and counts checked, and the run's memory and work, for
    :func:`sample_fit` on ``target``: (config, num_chains, num_warmup, num_draws)."""
    config = _config(options)
    config.check()
    num_chains, num_warmup, num_draws = check_counts(num_chains, num_warmup, num_draws)
    check_memory(target, config, num_chains, num_warmup, num_draws)
    check_work(target, num_chains, num_warmup + num_draws, max_work=max_work)
    return config, num_chains, num_warmup, num_draws


def check_sample_fit(
    family,
    x: torch.Tensor,
    shapes: dict[str, tuple[int, ...]],
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_draws: int = 1000,
    max_work: int | float | None = MAX_WORK,
    **options,
) -> None:
    """What :func:`sample_fit` checks before its first density (options, counts, memory and
    work), for a ``fit_map`` of ``family`` to ``x`` with parameters of ``shapes`` not yet
    made: a run refused so is refused before the MAP fit's work."""

    def unused(**params):  # the checks read only the parameters' sizes
        raise ParameterError(
            "check_sample_fit evaluated its stand-in log-density; its checks read only the "
            "parameters' sizes"
        )

    target = Target(unused, shapes, family.constraints, dtype=x.dtype, device=x.device)
    _check_fit_run(target, num_chains, num_warmup, num_draws, max_work, options)


def sample_fit(
    fit,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_draws: int = 1000,
    generator=None,
    progress_bar: bool = True,
    max_work: int | float | None = MAX_WORK,
    **options,
):
    """NUTS on the posterior of a ``fit_map`` result: ``log p(data | θ) + log p(θ)`` in the
    family's parameters and constraints; the chains start within ±1 (unconstrained) of the MAP.
    The chains' densities are computed at once where the family broadcasts over them
    (fit_posterior.py), else one chain at a time through vmap. ``max_work`` as in
    :func:`sample`."""
    if fit.log_prior_fn is None or fit.data is None:
        raise ParameterError(
            f"sample_posterior needs a prior: this is a{'n' if fit.method == 'MLE' else ''} "
            f"{fit.method} fit; use fit_map(family, data, prior={{...}}) first"
        )
    x = fit.data
    target = fit_target(fit)
    progress_bar = check_bool(progress_bar, "progress_bar")
    config, num_chains, num_warmup, num_draws = _check_fit_run(
        target, num_chains, num_warmup, num_draws, max_work, options
    )  # before the starts
    gen = device_generator(generator, x.device)
    u_map = target.unconstrain({k: v[None] for k, v in fit.params.items()})  # (1, p)
    if not bool(torch.isfinite(u_map).all()):
        u_map = torch.zeros_like(u_map)  # a MAP on the boundary: start at the origin instead
    jitter = torch.rand(num_chains, target.n_free, generator=gen, dtype=x.dtype, device=x.device)
    u0 = _finite_starts(target, u_map, u_map + 2 * jitter - 1)
    start = target.constrain(u0)[0]
    target = fit_target(fit, u0)
    return sample_target(
        target,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_draws=num_draws,
        config=config,
        start=start,
        generator=gen,
        progress_bar=progress_bar,
        max_work=max_work,
    )
