"""An opt-in compiled leapfrog step: traced once into a graph of tensor operations, compiled.

On a CPU a small model's leapfrog step is ~100 tensor operations launched from Python (the
log-density, autograd's backward pass, the integrator), each costing a few microseconds, while
its arithmetic is a few hundred flops; the sampler's time is that launch cost. With
``compile=True`` the whole step — momentum half-step, position update, log-density, its
gradient, second half-step — is traced with ``torch.fx``'s ``make_fx`` (the backward pass
becomes explicit operations) and the graph compiled by ``torch.compile`` (inductor: fused C++
loops on a CPU, Triton kernels on a GPU). Measured on the posteriordb posteriors, 4 chains: one
step costs 40-80 µs instead of 340-620 µs with autograd (benchmarks/README.md).

The trace runs on fake tensors, so a log-density that branches in Python on a tensor's value
(``if x > 0:``) cannot be traced rather than being frozen on one branch; it then samples
eagerly, with a ``CompileFallbackWarning`` saying why. The compiled step is checked against
the eager one at the chains' starting points before it is used. The density runs once, at
tracing: Python side effects in it (printing, counting calls) do not happen per step. Where the
compiled step raises (a density that throws at some chain's point), that one step is taken
eagerly, which rejects the offending chains as the eager sampler always does.

Compiling takes seconds (5-25 s for a new model on a CPU; inductor caches its output on disk,
so a second run of the same model is faster), which is why it is not the default: the first
call of a sampler must not wait on a compiler. It pays for itself on long runs and deep trees.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch

from latentfit.errors import CompileFallbackWarning, user_stacklevel
from latentfit.mcmc.kernels import Metric, State, _leapfrog, velocity
from latentfit.mcmc.target import Target

__all__ = ["compile_leapfrog"]


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
        with warnings.catch_warnings():  # torch's notes to its own developers, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            graph, fake = _trace(raw, example)
            compiled = _inductor(graph, fake)
            got = compiled(*example)
    except Exception as exc:  # any failure of tracing or compiling: sample eagerly instead
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        _fallback(f"it could not be traced or compiled ({reason[:300]})")
        return None, time.perf_counter() - t0
    want = raw(*example)
    if not all(_close(a, b) for a, b in zip(got, want, strict=True)):
        _fallback("the compiled step disagrees with the eager one at the chains' starts")
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


def _trace(raw: Callable, example: tuple) -> tuple[torch.fx.GraphModule, list]:
    """``raw`` as a graph of aten operations, traced on fake tensors, and those fake inputs.

    The fake mode carries a (static) shape environment so that inductor can key its on-disk
    cache on the graph: a second run of the same model loads the compiled code (~1.5 s on a
    CPU) instead of generating it again. ``torch.distributions``' argument checks are off
    while tracing: each is a Python branch on a value (raise if outside the support), which no
    graph can hold; without them a value outside the support gives a NaN or infinite
    log-density, which the sampler rejects as it rejects a raise."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributions import Distribution
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True, static_shapes=True)
    fake = [mode.from_tensor(x, static_shapes=True) for x in example]
    validate = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        with mode:
            graph = make_fx(raw, tracing_mode="real", _allow_non_fake_inputs=True)(*fake)
    finally:
        Distribution.set_default_validate_args(validate)
    return graph, fake


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


def _fallback(why: str) -> None:
    warnings.warn(
        f"compile=True: the leapfrog step is not compiled because {why}; sampling eagerly "
        "(slower, and the draws of the eager run)",
        CompileFallbackWarning,
        stacklevel=user_stacklevel(),
    )
