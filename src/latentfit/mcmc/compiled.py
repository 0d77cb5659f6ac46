"""Opt-in compiled sampling: the leapfrog step and NUTS's tree bookkeeping, each traced once
into a graph of tensor operations and compiled.

On a CPU a small model's leapfrog step is ~100 tensor operations launched from Python (the
log-density, autograd's backward pass, the integrator), each costing a few microseconds, while
its arithmetic is a few hundred flops; the sampler's time is that launch cost. With
``compile=True`` the whole step — momentum half-step, position update, log-density, its
gradient, second half-step — is traced with ``torch.fx``'s ``make_fx`` (the backward pass
becomes explicit operations) and the graph compiled by inductor (fused C++ loops on a CPU,
Triton kernels on a GPU): one step costs 5-60 µs instead of 340-620 µs with autograd on the
posteriordb posteriors. NUTS's bookkeeping of a doubling (``kernels.merge_subtree``: energies,
divergences, U-turn checks, the multinomial draw, the merge) is traced too, with the number of
leaves symbolic, so that one graph serves every depth: ~30-40 µs a doubling of up to 8
leaves instead of ~250-330 µs.

The trace runs on fake tensors, so a log-density that branches in Python on a tensor's value
(``if x > 0:``) cannot be traced rather than being frozen on one branch; it then samples
eagerly, with a ``CompileFallbackWarning`` saying why. The compiled step is checked against
the eager one at the chains' starting points before it is used, the compiled bookkeeping on
random subtrees of 2, 8 and 64 leaves. The density runs once, at tracing: Python side effects
in it (printing, counting calls) do not happen per step. Where the compiled step raises (a
density that throws at some chain's point), that one step is taken eagerly, which rejects the
offending chains as the eager sampler always does; a ``CompileFallbackWarning`` says so once,
as each such step costs milliseconds. Where such steps are frequent (two in 64 calls), the
replayed step takes over for a while (raising.py), by counts of raises only, so that the same
seed still gives the same draws.

Compiled graphs are AOTInductor packages kept on disk (compiled_cache.py): the first run of a
model, number of chains and dtype needs 25-35 s of a CPU to compile them, every later run loads
them in milliseconds. Where a graph cannot be exported or compiled ahead of time, inductor
compiles it in this process only (4-25 s, every run). This module compiles and waits
(``compile="wait"``: ``compile_leapfrog``, ``compile_merge``); ``compile=True`` hands the
compiling to child processes and samples meanwhile (background.py, builds.py) with the traced
graphs replayed by TorchScript's interpreter (replay.py), so that no first call waits on a
compiler. It pays for itself on reruns, long runs, many chains and deep trees
(benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import warnings
from collections.abc import Callable

import torch

from latentfit.errors import CompileCacheWarning, CompileFallbackWarning, user_stacklevel
from latentfit.mcmc import builds, compiled_cache
from latentfit.mcmc.builds import Build
from latentfit.mcmc.compiled_cache import without_validation
from latentfit.mcmc.kernels import (
    ONE_LEAF_NONE,
    Metric,
    State,
    _leapfrog,
    merge_in_blocks,
    merge_one_leaf,
    merge_subtree,
    velocity,
)
from latentfit.mcmc.raising import RaiseCounter, replayed_step, wrap_replayed
from latentfit.mcmc.reciprocal import reciprocal_divisions
from latentfit.mcmc.record import record_graph
from latentfit.mcmc.short_lse import ShortLogSumExp
from latentfit.mcmc.target import Target
from latentfit.mcmc.uturn import _leaf_consts, _subtree_nodes

__all__ = ["compile_leapfrog", "compile_merge", "start_merge_build"]


def _raw_step(target: Target, dense: bool) -> Callable:
    """The leapfrog as a pure function of tensors: ``(u, grad, p, e, half, inv)`` ->
    ``(u, log_prob, grad, p)``, every tensor with the chain dimension first."""

    def value_and_grad(u):
        if target.value_and_grad is not None:
            return target._given_value_and_grad(u)
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            lp = target.log_prob(u)
            (grad,) = torch.autograd.grad(lp.sum(), u)
        return lp.detach(), grad

    def step(u, grad, p, e, half, inv):
        p = torch.addcmul(p, half, grad)
        u = torch.addcmul(u, e, velocity(inv, p, dense))
        lp, grad = value_and_grad(u)
        return u, lp, grad, torch.addcmul(p, half, grad)

    return step


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal non-finite pattern and finite values within the dtype's tolerance."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb):
        return False
    tol = 1e-8 if a.dtype == torch.float64 else 1e-3
    x, y = a[fa], b[fb]
    return bool(((x - y).abs() <= tol * (1 + y.abs())).all())


def leapfrog_parts(
    target: Target, metric: Metric, state: State, step_size: torch.Tensor
) -> tuple[Callable, tuple, str, Callable[[Callable], bool]]:
    """What compiling the leapfrog needs: the step as a function of tensors, the example it is
    traced and checked on, its cache tag, and the check of a compiled version against it."""
    raw = _raw_step(target, metric.dense)
    # The example is a step of size zero: the graph is the same for any step size (an input),
    # and the check below then evaluates the density where the chains are, which is finite
    # (a step away it might raise, and this would be no place for the user's error).
    e = torch.zeros_like(step_size)[:, None]
    gen = torch.Generator(device=state.u.device).manual_seed(0)  # not the sampler's stream
    p = torch.randn(state.u.shape, generator=gen, dtype=state.u.dtype, device=state.u.device)
    example = tuple(x.contiguous() for x in (state.u, state.grad, p, e, e.clone(), metric.inv))
    # At a zero step the momentum, the metric and the step size change nothing, and a version
    # that read any input stale (its value when it was recorded, baked in) would pass. It is
    # checked on a second example too, every input other than the first and a small step
    # taken, where the density is finite there (else on the zero step alone).
    moving = _moving_example(raw, example, gen)
    return (
        raw,
        example,
        f"leapfrog:{metric.dense}",
        lambda f: _agree(f, raw, example) and (moving is None or _agree(f, raw, moving)),
    )


def _moving_example(raw: Callable, example: tuple, gen: torch.Generator) -> tuple | None:
    """``example`` with every input changed (the position moved by 1e-6, the gradient and
    the metric scaled by 1.25, a new momentum, a step of 1e-3, else 1e-6) where the eager
    step gives finite values there; None where it does not."""
    u, grad, _, e, _, inv = example

    def noise():
        return torch.randn(u.shape, generator=gen, dtype=u.dtype, device=u.device)

    u2, p2 = (u + 1e-6 * noise()).contiguous(), noise()
    for size in (1e-3, 1e-6):
        step = torch.full_like(e, size)
        moved = (u2, (1.25 * grad).contiguous(), p2, step, 0.5 * step, (1.25 * inv).contiguous())
        try:
            with torch.no_grad():
                out = raw(*moved)
        except Exception:  # the density raised a step away: closer, else the zero step alone
            continue
        if all(bool(torch.isfinite(o).all()) for o in out if o.is_floating_point()):
            return moved
    return None


def compile_leapfrog(
    target: Target, metric: Metric, state: State, step_size: torch.Tensor
) -> tuple[Callable | None, float]:
    """The compiled leapfrog for this target, metric kind and number of chains, and the
    seconds spent compiling; ``(None, seconds)`` with a ``CompileFallbackWarning`` when the
    log-density cannot be traced or compiled, or the compiled step disagrees with the eager
    one at ``state``. Compiled here, waiting for it (``compile="wait"``); background.py
    compiles in child processes instead.

    The returned function has the signature of ``kernels._leapfrog``:
    ``step(target, metric, state, p, e, half) -> (State, p)``."""
    t0 = time.perf_counter()
    raw, example, tag, check = leapfrog_parts(target, metric, state, step_size)
    try:
        with quiet():
            compiled = _compiled(raw, example, tag, check)
    except Exception as exc:  # any failure of tracing or compiling: sample eagerly instead
        fallback(f"the leapfrog step could not be traced or compiled ({reason(exc)})")
        return None, time.perf_counter() - t0
    if compiled is None:
        fallback(LEAPFROG_DISAGREES)
        return None, time.perf_counter() - t0
    return (
        wrap_leapfrog(compiled, lambda: replayed_step(raw, example, check)),
        time.perf_counter() - t0,
    )


LEAPFROG_DISAGREES = "the compiled leapfrog disagrees with the eager one at the chains' starts"


def wrap_leapfrog(
    compiled: Callable, replayed: Callable[[], Callable | None] | None = None
) -> Callable:
    """A compiled ``(u, grad, p, e, half, inv) -> (u, lp, grad, p)`` as the sampler calls a
    leapfrog: ``step(target, metric, state, p, e, half) -> (State, p)``.

    Where the compiled call raises (the density raised at some chain's point: a Cholesky
    factor of a matrix that is not positive definite, say), that step is taken eagerly, which
    rejects the offending chains one by one. The first time, a ``CompileFallbackWarning``
    says so: such a step costs ~6 ms (torch builds a C++ backtrace for the error) against
    ~0.03 ms, so a density that returns -inf outside its support keeps the compiled speed.
    Where raises are frequent, ``replayed`` (called once, then: the same step replayed by
    replay.py, or None) takes the steps over for a while (``raising.wrap_replayed``), as
    raising.py decides from the count of raises. A compiled package's runtime also prints one
    line of its own to the native standard error for each such call ("Error: ... API call
    failed at ...wrapper.cpp"): from then on the calls run with that stream silenced
    (``_without_native_stderr``, ~1 µs a call: not paid by densities that never raise)."""
    raised = False
    counter: RaiseCounter | None = None  # from the first raise on, where ``replayed`` is given
    other: list[Callable | None] = []  # the replayed step, once asked for

    def step(target_, metric_, cur: State, p_, e_, half_):
        nonlocal raised, counter
        if counter is not None and not counter.use_compiled():
            counter.replayed_call()
            return other[0](target_, metric_, cur, p_, e_, half_)
        args = [x.contiguous() for x in (cur.u, cur.grad, p_, e_, half_, metric_.inv)]
        try:
            if raised:
                u, lp, grad, p_new = _without_native_stderr(compiled, args)
            else:
                u, lp, grad, p_new = compiled(*args)
        except (RuntimeError, ValueError) as exc:
            if not raised:
                raised = True
                counter = RaiseCounter() if replayed is not None else None
                warnings.warn(
                    f"compile=True: the log-density raised at some chains' points ({reason(exc)}"
                    "); such steps are taken eagerly, rejecting those chains, each costing "
                    "milliseconds (~6 ms for a compiled package; any 'API call failed' line "
                    "above is its report of the error, silenced from here on), and while they "
                    "are frequent the step runs replayed instead. A log-density that returns "
                    "-inf there instead keeps the compiled speed.",
                    CompileFallbackWarning,
                    stacklevel=user_stacklevel(),
                )
            if counter is not None:
                counter.record(True)
                if not counter.use_compiled() and not other:
                    found = replayed()
                    other.append(None if found is None else wrap_replayed(found))
                if other and other[0] is None:  # no replayed step: compiled throughout
                    counter = None
            return _leapfrog(target_, metric_, cur, p_, e_, half_)
        if counter is not None:
            counter.record(False)
        return State(u, lp, grad), p_new

    return step


_DEVNULL: int | None = None


def _without_native_stderr(fn: Callable, args: list) -> tuple:
    """``fn(*args)`` with file descriptor 2 on the null device meanwhile.

    A compiled package's runtime writes "Error: ... API call failed at ...wrapper.cpp" to the
    process's native standard error whenever an operation in it raises, before the exception
    reaches Python: a density that raises at some points (a Cholesky factor of a matrix that
    is not positive definite) printed one such line per step that met one, 897 in a run of
    tests/mcmc/test_compiled.py's semicircle, although each such step is then taken eagerly
    and nothing is wrong. Python's own ``sys.stderr`` is untouched. The redirection costs ~1
    µs a call (4 system calls; eight schools' whole run, 4 chains, 1.7% slower with it on
    every call), so ``wrap_leapfrog`` turns it on only once a call has raised; where
    descriptor 2 cannot be duplicated (closed), the call runs as it is."""
    global _DEVNULL
    try:
        if _DEVNULL is None:
            _DEVNULL = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(2)
    except OSError:
        return fn(*args)
    try:
        os.dup2(_DEVNULL, 2)
        return fn(*args)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _compiled(
    fn: Callable,
    example: tuple,
    tag: str,
    check: Callable[[Callable], bool],
    dynamic: dict[int, int] | None = None,
    options: dict | None = None,
) -> Callable | None:
    """``fn`` compiled for ``example``'s shapes (``dynamic`` as in ``_trace``; ``options``,
    inductor settings, as in ``compiled_cache.build``), or None when the compiled function
    fails ``check``.

    From the on-disk cache when it holds this computation (compiled_cache.py: milliseconds);
    otherwise compiled ahead of time into a package that is cached for the next run; where that
    fails, compiled by inductor in this process only. A cached package that fails ``check`` is
    removed and compiled afresh."""
    key = compiled_cache.fingerprint(fn, example, tag)
    if key is not None:
        cached = compiled_cache.load(key, example[0].device)
        if cached is not None:
            if check(cached):
                return cached
            compiled_cache.discard(key)
        try:
            module = AsModule(fn) if dynamic is not None else static_graph(fn, example)
            built = compiled_cache.build(key, module, example, dynamic, options)
        except Exception as exc:  # export or ahead-of-time compiling failed: in-process
            not_kept = reason(exc)
        else:
            return built if check(built) else None
    return in_process(fn, example, check, dynamic, not_kept if key is not None else None, options)


def in_process(
    fn: Callable,
    example: tuple,
    check: Callable[[Callable], bool],
    dynamic: dict[int, int] | None = None,
    not_kept: str | None = None,
    options: dict | None = None,
) -> Callable | None:
    """``fn`` compiled by inductor in this process only, or None when it fails ``check``;
    ``not_kept`` says why no package could be kept for the next run (a warning), where one
    was tried."""
    compiled = _inductor(*_trace(fn, example, dynamic), options)
    if not_kept is not None:  # compiled after all, but the next run compiles again: say why
        warnings.warn(
            f"compile=True: compiled in this process only, not kept in "
            f"{compiled_cache.cache_dir()} for the next run, because {not_kept}",
            CompileCacheWarning,
            stacklevel=user_stacklevel(),
        )
    return compiled if check(compiled) else None


class AsModule(torch.nn.Module):
    """A function of tensors as a module, which is what ``torch.export`` takes."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def static_graph(fn: Callable, example: tuple) -> torch.fx.GraphModule:
    """``fn`` traced with every size static, ready for ``torch.export``: the trace's fake
    values are dropped (export fakes the inputs again, in a mode of its own). The leapfrog
    goes through this trace because it calls autograd, which export cannot hold but the trace
    writes out as the backward pass's operations. Recorded from one eager step where it can be
    (record.py: no fake tensors, and so no dynamo import, ~0.55 s of a first run), else traced
    by ``make_fx``."""
    graph = record_graph(fn, example)
    if graph is not None:
        reciprocal_divisions(graph)
    else:
        graph, _ = _trace(fn, example)
    for node in graph.graph.nodes:
        node.meta.pop("val", None)
    return graph


def _trace(
    raw: Callable, example: tuple, dynamic: dict[int, int] | None = None
) -> tuple[torch.fx.GraphModule, list]:
    """``raw`` as a graph of aten operations, traced on fake tensors, and those fake inputs.

    Every size is static, except, with ``dynamic`` ({input index: dimension}), those
    dimensions, which stay symbolic (one graph for every subtree depth). The fake mode carries
    a shape environment so that inductor can key its on-disk cache on the graph: a second run
    of the same model loads the compiled code (~1.5 s on a CPU) instead of generating it
    again. ``torch.distributions``' argument checks are off while tracing
    (``compiled_cache.without_validation``), a log-sum-exp over 2-32 components is
    written out as slices (short_lse.py), and a division by a broadcast tensor becomes a
    multiplication by its reciprocal (reciprocal.py)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    if dynamic is None:
        mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True, static_shapes=True)
        fake = [mode.from_tensor(x, static_shapes=True) for x in example]
    else:
        mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
        fake = []
        for i, x in enumerate(example):
            sizes = [DimDynamic.STATIC] * x.dim()
            if i in dynamic:
                sizes[dynamic[i]] = DimDynamic.DYNAMIC
            ctx = StatelessSymbolicContext(dynamic_sizes=sizes)
            fake.append(mode.from_tensor(x, symbolic_context=ctx))
    with without_validation(), mode, ShortLogSumExp():
        graph = make_fx(
            raw,
            tracing_mode="real" if dynamic is None else "symbolic",
            _allow_non_fake_inputs=True,
        )(*fake)
    reciprocal_divisions(graph)
    return graph, fake


@contextlib.contextmanager
def quiet():
    """Torch's notes to its own developers while tracing and compiling, not the user's: its
    warnings, and its inductor's log records below ERROR ("aten.linalg_cholesky_ex.default is
    missing a c-shim implementation, using proxy executor as fallback", for a density with a
    Cholesky factor, printed while compiling with ``compile="wait"``)."""
    log = logging.getLogger("torch._inductor")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        log.setLevel(level)


def reason(exc: Exception) -> str:
    """The first line of an exception, with its class, for a fallback warning."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _inductor(graph: torch.fx.GraphModule, fake: list, options: dict | None = None) -> Callable:
    """The graph compiled by inductor. Called directly, the compiled function skips dynamo's
    frame evaluation and guards (14-23 µs per eight-schools step instead of 80 µs through
    ``torch.compile``): the graph is already traced, and the sampler only ever calls it with
    the example's shapes, dtypes and (contiguous) layouts. Where this torch has no
    ``compile_fx`` of that form, ``torch.compile`` does the same, with its guards."""
    try:
        from torch._inductor.compile_fx import compile_fx
    except ImportError:
        return torch.compile(graph, dynamic=False, fullgraph=True, options=options)
    return compile_fx(graph, fake, config_patches=options)


def _agree(compiled: Callable, fn: Callable, example: tuple) -> bool:
    """Both functions give the same outputs on ``example``: integers and flags equal, floats
    within ``_close``."""
    got, want = compiled(*example), fn(*example)
    return all(
        _close(a, b) if a.is_floating_point() else torch.equal(a, b)
        for a, b in zip(got, want, strict=True)
    )


def _merge_example(c: int, d: int, L: int, dense: bool, dt, dev, seed: int) -> tuple:
    """Inputs of ``merge_subtree`` for a subtree of ``L`` leaves, drawn at random: a subtree
    that may turn, diverge or be rejected, for checking the compiled merge against the eager
    one."""
    g = torch.Generator(device=dev).manual_seed(seed)

    def r(*shape, dtype=dt):
        return torch.randn(*shape, generator=g, dtype=dtype, device=dev)

    leaf, L_t, no_div, no_stop, zero, _ = _leaf_consts(L, dev, dt)
    inv = r(c, d, d) if dense else r(c, d).exp()
    if dense:
        inv = inv @ inv.transpose(-1, -2) + torch.eye(d, dtype=dt, device=dev)
    lp = r(c, L) * 3
    lp[0, L // 2] = -5000.0  # a divergent leaf
    return (
        r(c, 3, L, d), lp, r(c, 1), inv, r(c), r(c, d), r(c, 3, d), r(c),
        torch.randint(0, 50, (c,), generator=g, device=dev), r(c).abs(),
        torch.rand(c, generator=g, device=dev) < 0.2,
        torch.randint(0, 5, (c,), generator=g, device=dev),
        torch.rand(c, generator=g, device=dev) < 0.8,
        r(c, d), r(c, d), r(c, d),
        torch.rand(c, L, generator=g, dtype=dt, device=dev),
        torch.rand(c, generator=g, dtype=dt, device=dev),
        leaf, L_t, no_div, no_stop, zero, *_subtree_nodes(L, dev),
    )  # fmt: skip


#: which dimension of each input of ``merge_subtree`` is the number of leaves (or nodes)
MERGE_DYNAMIC = {0: 2, 1: 1, 16: 1, 18: 0, 23: 0, 24: 0, 25: 0, 26: 0}


def start_merge_build(metric: Metric, state: State) -> Build | None:
    """Where the on-disk cache lacks the tree bookkeeping's package for these chains,
    parameters and metric kind, start compiling it in a child process (builds.py), so that it
    compiles while this process compiles the leapfrog: each takes ~12 s on a CPU, half of it a
    C++ compiler on one core, so on two cores a first run waits for one instead of both. None
    when the package is there or no child can start (``compile_merge`` then compiles it here)."""
    fn, example, tag, _, _ = merge_parts(metric, state)
    key = compiled_cache.fingerprint(fn, example, tag)
    if key is None or compiled_cache.exists(key):
        return None
    options = merge_options(state.u.device)
    return builds.spawn([(key, AsModule(fn), example, MERGE_DYNAMIC, options)])[0]


def merge_options(device: torch.device) -> dict:
    """Inductor's settings for the tree bookkeeping: its loops run over the parameters and the
    leaves, short ones (``compiled_cache.narrow_vectors``)."""
    return compiled_cache.narrow_vectors(device)


def _tag(dense: bool) -> str:
    # the settings of merge_options follow from the CPU's instruction set, which the key names
    return f"merge:{dense}"


def merge_parts(
    metric: Metric, state: State
) -> tuple[Callable, tuple, str, Callable[[Callable], bool], list[int]]:
    """What compiling the tree bookkeeping needs: ``merge_subtree`` for this metric kind, the
    example subtree (8 leaves) it is traced on, its cache tag, the check of a compiled version
    against it on subtrees of 2, 8 and 64 leaves, and the list that check fills with the sizes
    where they disagree."""
    c, d = state.u.shape
    fn = functools.partial(merge_subtree, metric.dense)
    agrees = merge_agrees(metric, state)
    wrong: list[int] = []

    def check(compiled: Callable) -> bool:
        wrong[:] = [L for L, seed in ((2, 1), (8, 2), (64, 3)) if not agrees(compiled, L, seed)]
        return not wrong

    example = _merge_example(c, d, 8, metric.dense, state.u.dtype, state.u.device, seed=0)
    return fn, example, _tag(metric.dense), check, wrong


def merge_agrees(metric: Metric, state: State) -> Callable[..., bool]:
    """``agrees(merge, L, seed, chains=None)``: ``merge`` gives ``merge_subtree``'s outputs on
    a random subtree of ``L`` leaves (``_merge_example``) for these chains (or that many of
    them: a doubling of few growing chains, narrow.py), parameters and metric kind."""
    c, d = state.u.shape
    dt, dev, dense = state.u.dtype, state.u.device, metric.dense
    fn = functools.partial(merge_subtree, dense)

    def agrees(merge: Callable, L: int, seed: int, chains: int | None = None) -> bool:
        example = _merge_example(c if chains is None else chains, d, L, dense, dt, dev, seed)
        if L == 1:  # the first doubling's merge: merge_one_leaf's inputs
            kept = tuple(a for i, a in enumerate(example[:23]) if i not in ONE_LEAF_NONE)
            return _agree(merge, functools.partial(merge_one_leaf, dense), kept)
        return _agree(merge, fn, example)

    return agrees


def compile_merge(
    metric: Metric, state: State, child: Build | None = None
) -> tuple[Callable | None, float]:
    """``merge_subtree`` (the tree bookkeeping of a NUTS doubling) traced once with the number
    of leaves symbolic, so that one compiled graph serves every depth, and compiled; checked
    against the eager function on random subtrees of 2, 8 and 64 leaves. ``(None, seconds)``
    and a ``CompileFallbackWarning`` where that fails (the doublings then run eagerly).
    ``child``, from ``start_merge_build``, is waited for first: its package is then loaded."""
    t0 = time.perf_counter()
    if child is not None:
        child.wait(timeout=900)
    try:
        with quiet():
            fn, example, tag, check, wrong = merge_parts(metric, state)
            options = merge_options(state.u.device)
            compiled = _compiled(fn, example, tag, check, MERGE_DYNAMIC, options)
    except Exception as exc:
        fallback(f"the tree bookkeeping could not be compiled ({reason(exc)})")
        return None, time.perf_counter() - t0
    if compiled is None:
        fallback(f"the compiled tree bookkeeping disagrees with the eager one at {wrong} leaves")
        return None, time.perf_counter() - t0
    return wrap_merge(compiled, metric.dense), time.perf_counter() - t0


def wrap_merge(compiled: Callable, dense: bool) -> Callable:
    """A compiled ``merge_subtree`` as the sampler calls it, with the eager one (in blocks,
    ``kernels.merge_in_blocks``) where the compiled code fails."""

    def merge(*args):
        try:  # the compiled code checks every input's layout: views of packed state are copied
            return compiled(*(x.contiguous() for x in args))
        except Exception:  # never the user's code: any failure takes the eager bookkeeping
            return merge_in_blocks(dense, *args)

    return merge


def fallback(why: str) -> None:
    warnings.warn(
        f"compile=True: not compiled, because {why}; that part runs eagerly "
        "(slower; the draws of an eager run where it is the leapfrog)",
        CompileFallbackWarning,
        stacklevel=user_stacklevel(),
    )
