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
offending chains as the eager sampler always does.

Compiled graphs are AOTInductor packages kept on disk (compiled_cache.py): the first run of a
model, number of chains and dtype spends 25-35 s on a CPU compiling them, every later run loads
them in milliseconds. Where a graph cannot be exported or compiled ahead of time, inductor
compiles it in this process only (4-25 s, every run). That first-run cost is why compiling is
not the default: the first call of a sampler must not wait on a compiler. It pays for itself on
reruns, long runs, many chains and deep trees (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from latentfit.errors import CompileCacheWarning, CompileFallbackWarning, user_stacklevel
from latentfit.mcmc import compiled_cache
from latentfit.mcmc.compiled_cache import without_validation
from latentfit.mcmc.kernels import (
    Metric,
    State,
    _leaf_consts,
    _leapfrog,
    _subtree_nodes,
    merge_subtree,
    velocity,
)
from latentfit.mcmc.target import Target

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


def compile_leapfrog(
    target: Target, metric: Metric, state: State, step_size: torch.Tensor
) -> tuple[Callable | None, float]:
    """The compiled leapfrog for this target, metric kind and number of chains, and the
    seconds spent compiling; ``(None, seconds)`` with a ``CompileFallbackWarning`` when the
    log-density cannot be traced or compiled, or the compiled step disagrees with the eager
    one at ``state``.

    The returned function has the signature of ``kernels._leapfrog``:
    ``step(target, metric, state, p, e, half) -> (State, p)``."""
    t0 = time.perf_counter()
    raw = _raw_step(target, metric.dense)
    # The example is a step of size zero: the graph is the same for any step size (an input),
    # and the check below then evaluates the density where the chains are, which is finite
    # (a step away it might raise, and this would be no place for the user's error).
    e = torch.zeros_like(step_size)[:, None]
    gen = torch.Generator(device=state.u.device).manual_seed(0)  # not the sampler's stream
    p = torch.randn(state.u.shape, generator=gen, dtype=state.u.dtype, device=state.u.device)
    example = tuple(x.contiguous() for x in (state.u, state.grad, p, e, e.clone(), metric.inv))
    try:
        with _quiet():
            compiled = _compiled(
                raw, example, f"leapfrog:{metric.dense}", lambda f: _agree(f, raw, example)
            )
    except Exception as exc:  # any failure of tracing or compiling: sample eagerly instead
        _fallback(f"the leapfrog step could not be traced or compiled ({_reason(exc)})")
        return None, time.perf_counter() - t0
    if compiled is None:
        _fallback("the compiled leapfrog disagrees with the eager one at the chains' starts")
        return None, time.perf_counter() - t0

    def step(target_, metric_, cur: State, p_, e_, half_):
        try:
            u, lp, grad, p_new = compiled(
                cur.u.contiguous(),
                cur.grad.contiguous(),
                p_.contiguous(),
                e_.contiguous(),
                half_.contiguous(),
                metric_.inv.contiguous(),
            )
        except (RuntimeError, ValueError):
            # the density raised at some chain's point (a Cholesky factor of a matrix that is
            # not positive definite, say): the eager step rejects such chains one by one
            return _leapfrog(target_, metric_, cur, p_, e_, half_)
        return State(u, lp, grad), p_new

    return step, time.perf_counter() - t0


def _compiled(
    fn: Callable,
    example: tuple,
    tag: str,
    check: Callable[[Callable], bool],
    dynamic: dict[int, int] | None = None,
) -> Callable | None:
    """``fn`` compiled for ``example``'s shapes (``dynamic`` as in ``_trace``), or None when
    the compiled function fails ``check``.

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
            module = _AsModule(fn) if dynamic is not None else _static_graph(fn, example)
            built = compiled_cache.build(key, module, example, dynamic)
        except Exception as exc:  # export or ahead-of-time compiling failed: in-process
            not_kept = _reason(exc)
        else:
            return built if check(built) else None
    compiled = _inductor(*_trace(fn, example, dynamic))
    if key is not None:  # compiled after all, but the next run compiles again: say why
        warnings.warn(
            f"compile=True: compiled in this process only, not kept in "
            f"{compiled_cache.cache_dir()} for the next run, because {not_kept}",
            CompileCacheWarning,
            stacklevel=user_stacklevel(),
        )
    return compiled if check(compiled) else None


class _AsModule(torch.nn.Module):
    """A function of tensors as a module, which is what ``torch.export`` takes."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _static_graph(fn: Callable, example: tuple) -> torch.fx.GraphModule:
    """``fn`` traced with every size static, ready for ``torch.export``: the trace's fake
    values are dropped (export fakes the inputs again, in a mode of its own). The leapfrog
    goes through this trace because it calls autograd, which export cannot hold but the trace
    writes out as the backward pass's operations."""
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
    (``compiled_cache.without_validation``)."""
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
    with without_validation(), mode:
        graph = make_fx(
            raw,
            tracing_mode="real" if dynamic is None else "symbolic",
            _allow_non_fake_inputs=True,
        )(*fake)
    return graph, fake


@contextlib.contextmanager
def _quiet():
    """Torch's notes to its own developers while tracing and compiling, not the user's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _reason(exc: Exception) -> str:
    """The first line of an exception, with its class, for a fallback warning."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _inductor(graph: torch.fx.GraphModule, fake: list) -> Callable:
    """The graph compiled by inductor. Called directly, the compiled function skips dynamo's
    frame evaluation and guards (14-23 µs per eight-schools step instead of 80 µs through
    ``torch.compile``): the graph is already traced, and the sampler only ever calls it with
    the example's shapes, dtypes and (contiguous) layouts. Where this torch has no
    ``compile_fx`` of that form, ``torch.compile`` does the same, with its guards."""
    try:
        from torch._inductor.compile_fx import compile_fx
    except ImportError:
        return torch.compile(graph, dynamic=False, fullgraph=True)
    return compile_fx(graph, fake)


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
_MERGE_DYNAMIC = {0: 2, 1: 1, 16: 1, 18: 0, 23: 0, 24: 0, 25: 0, 26: 0}


def start_merge_build(metric: Metric, state: State) -> subprocess.Popen | None:
    """Where the on-disk cache lacks the tree bookkeeping's package for these chains,
    parameters and metric kind, start compiling it in a child process, so that it compiles
    while this process compiles the leapfrog: each takes ~12 s on a CPU, half of it a C++
    compiler on one core, so on two cores a first run waits for one instead of both. None when
    the package is there or no child can start (``compile_merge`` then compiles it here)."""
    c, d = state.u.shape
    dt, dev, dense = state.u.dtype, state.u.device, metric.dense
    example = _merge_example(c, d, 8, dense, dt, dev, seed=0)
    key = compiled_cache.fingerprint(functools.partial(merge_subtree, dense), example, _tag(dense))
    if key is None or compiled_cache.exists(key):
        return None
    args = [str(c), str(d), str(int(dense)), str(dt).removeprefix("torch."), str(dev)]
    src = str(Path(__file__).resolve().parents[2])  # the child imports this very latentfit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "latentfit.mcmc.compiled", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None


def _tag(dense: bool) -> str:
    return f"merge:{dense}"


def _build_merge(c: int, d: int, dense: bool, dtype: torch.dtype, device: str) -> None:
    """What the child of ``start_merge_build`` does: compile and store the package, unless
    another process stored it first."""
    fn = functools.partial(merge_subtree, dense)
    example = _merge_example(c, d, 8, dense, dtype, torch.device(device), seed=0)
    key = compiled_cache.fingerprint(fn, example, _tag(dense))
    if key is not None and not compiled_cache.exists(key):
        with _quiet():
            compiled_cache.build(key, _AsModule(fn), example, _MERGE_DYNAMIC)


def compile_merge(
    metric: Metric, state: State, child: subprocess.Popen | None = None
) -> tuple[Callable | None, float]:
    """``merge_subtree`` (the tree bookkeeping of a NUTS doubling) traced once with the number
    of leaves symbolic, so that one compiled graph serves every depth, and compiled; checked
    against the eager function on random subtrees of 2, 8 and 64 leaves. ``(None, seconds)``
    and a ``CompileFallbackWarning`` where that fails (the doublings then run eagerly).
    ``child``, from ``start_merge_build``, is waited for first: its package is then loaded."""
    t0 = time.perf_counter()
    if child is not None:
        try:
            child.wait(timeout=900)
        except subprocess.TimeoutExpired:  # stuck: compiled here instead
            child.kill()
    c, d = state.u.shape
    dt, dev, dense = state.u.dtype, state.u.device, metric.dense
    fn = functools.partial(merge_subtree, dense)

    wrong: list[int] = []  # the subtree sizes where the compiled merge disagrees

    def check(compiled: Callable) -> bool:
        wrong[:] = [
            L
            for L, seed in ((2, 1), (8, 2), (64, 3))
            if not _agree(compiled, fn, _merge_example(c, d, L, dense, dt, dev, seed))
        ]
        return not wrong

    try:
        with _quiet():
            example = _merge_example(c, d, 8, dense, dt, dev, seed=0)
            compiled = _compiled(fn, example, _tag(dense), check, _MERGE_DYNAMIC)
    except Exception as exc:
        _fallback(f"the tree bookkeeping could not be compiled ({_reason(exc)})")
        return None, time.perf_counter() - t0
    if compiled is None:
        _fallback(f"the compiled tree bookkeeping disagrees with the eager one at {wrong} leaves")
        return None, time.perf_counter() - t0

    def merge(*args):
        try:  # the compiled code checks every input's layout: views of packed state are copied
            return compiled(*(x.contiguous() for x in args))
        except Exception:  # never the user's code: any failure takes the eager bookkeeping
            return fn(*args)

    return merge, time.perf_counter() - t0


def _fallback(why: str) -> None:
    warnings.warn(
        f"compile=True: not compiled, because {why}; that part runs eagerly "
        "(slower; the draws of an eager run where it is the leapfrog)",
        CompileFallbackWarning,
        stacklevel=user_stacklevel(),
    )


if __name__ == "__main__":  # the child process of ``start_merge_build``
    _c, _d, _dense, _dtype, _device = sys.argv[1:6]
    _build_merge(int(_c), int(_d), _dense == "1", getattr(torch, _dtype), _device)
