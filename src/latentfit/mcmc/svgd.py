"""Stein variational gradient descent (Liu & Wang 2016, *Stein Variational Gradient Descent: A
General Purpose Bayesian Inference Algorithm*, NeurIPS).

A set of particles (s, p) in unconstrained space moves along

    phi(x_i) = 1/s sum_j [ k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i) ],

the direction of steepest descent of KL(q || p) in the unit ball of the RBF kernel's RKHS: the
first term pulls particles toward high density, the second pushes them apart. The kernel is
``k(x, y) = exp(-|x - y|^2 / h)`` with the median heuristic ``h = med^2 / log s``, and the step
uses AdaGrad with momentum, as the paper's code does. All particles are one batch: one gradient
evaluation of the ``Target`` per iteration.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from latentfit._memory import MAX_WORK
from latentfit._validation import (
    _is_real,
    check_bool,
    check_positive_int,
    device_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.errors import DivergedParticlesWarning, ParameterError, user_stacklevel
from latentfit.mcmc.budget import check_iterations, check_run, svgd_parts
from latentfit.mcmc.result import check_name
from latentfit.mcmc.sampler import _out_of_torch, _raised
from latentfit.mcmc.target import Target, init_values

__all__ = ["SVGDResult", "rbf_median_kernel", "step_to_spread", "svgd", "svgd_direction"]

#: A run whose particles still move, in its last tenth of iterations, by more than this share
#: of their median distance apart each iteration is said to overshoot (see _check_settled).
_SETTLED = 0.5


def rbf_median_kernel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The RBF kernel matrix (s, s) of particles x (s, p) with the median-heuristic bandwidth
    ``h = median(|x_i - x_j|^2) / log s``, and h."""
    sq = torch.cdist(x, x).pow(2)  # (s, s)
    s = x.shape[0]
    h = sq.median() / math.log(max(s, 2))
    h = torch.clamp(h, min=1e-12)
    return torch.exp(-sq / h), h


def svgd_direction(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Liu & Wang's update direction phi (s, p) for particles x with score ``grad`` (s, p)."""
    k, h = rbf_median_kernel(x)  # k[j, i] = k(x_j, x_i), symmetric
    drive = k @ grad  # sum_j k(x_j, x_i) grad log p(x_j)
    # sum_j grad_{x_j} k(x_j, x_i) = (2/h) (x_i sum_j k_ji - sum_j k_ji x_j)
    repulse = (2.0 / h) * (x * k.sum(0)[:, None] - k @ x)
    return (drive + repulse) / x.shape[0]


def step_to_spread(u: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """How far one update moves the particles ``u`` (s, p) relative to their spread: the
    median particle's move |step_i| over the median distance between two particles (0-D)."""
    spread = torch.pdist(u).median()  # over the s(s-1)/2 pairs: no zero of a particle to itself
    return step.norm(dim=-1).median() / spread.clamp_min(torch.finfo(u.dtype).tiny)


@dataclass
class SVGDResult:
    """The final particles: ``particles[name]`` (s, *shape) in natural coordinates."""

    target: Target
    u: torch.Tensor  # (s, p) unconstrained particles
    n_iter: int

    @property
    def particles(self) -> dict[str, torch.Tensor]:
        return self.target.constrain(self.u)[0]

    def __getitem__(self, name: str) -> torch.Tensor:
        check_name(self, name, self.target.names)
        return self.particles[name]


def _at(target: Target, u: torch.Tensor) -> dict:
    """Natural parameter values of one particle ``u`` (p,), for a message."""
    return {k: v[0].tolist() for k, v in target.constrain(u[None])[0].items()}


def svgd(
    log_density,
    init: dict,
    *,
    constraints: dict | None = None,
    num_particles: int = 100,
    num_iter: int = 1000,
    step_size: float = 0.1,
    init_scale: float = 1.0,
    vectorized: bool = False,
    generator=None,
    progress_bar: bool = True,
    dtype=None,
    device=None,
    max_work: int | float | None = MAX_WORK,
) -> SVGDResult:
    """Approximate the posterior ``exp(log_density(**params))`` by ``num_particles`` particles.

    The interface is that of ``latentfit.mcmc.sample``; particles start at ``init`` (mapped to
    unconstrained space) plus ``Normal(0, init_scale)`` noise from ``generator``.
    ``max_work``: the most multiply-adds the ``num_iter`` steps may take (by default about a
    day of one CPU core); None or ``math.inf``: no limit.
    """
    vectorized = check_bool(vectorized, "vectorized")
    progress_bar = check_bool(progress_bar, "progress_bar")
    num_particles = check_positive_int(num_particles, "num_particles", 2)
    num_iter = check_positive_int(num_iter, "num_iter")
    for name, value in (("step_size", step_size), ("init_scale", init_scale)):
        if not (_is_real(value) and math.isfinite(value) and value > 0):
            raise ParameterError(f"{name} must be a finite number > 0, got {value!r}")
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    values = init_values(init, dtype, device)
    target = Target(
        log_density,
        {k: tuple(v.shape) for k, v in values.items()},
        constraints,
        vectorized=vectorized,
        dtype=dtype,
        device=device,
    )
    check_run(
        f"SVGD with {num_particles:,} particles of {target.n_free} parameters",
        svgd_parts(num_particles, target.n_free, dtype.itemsize),
        device=device,
        hint="use fewer particles",
    )
    # an iteration: the kernel's distances and two products with it, (s, s) x (s, p) each
    check_iterations(
        f"SVGD with {num_particles:,} particles of {target.n_free} parameters",
        num_iter,
        num_particles**2 * (3 * target.n_free + 4),
        option="num_iter",
        max_work=max_work,
    )
    gen = device_generator(generator, device, "SVGD")
    u0 = target.unconstrain({k: v[None] for k, v in values.items()})  # (1, p)
    if not bool(torch.isfinite(u0).all()):
        raise ParameterError(
            "init lies outside the support of the constraints (its unconstrained value is not "
            f"finite: {target.outside(values) or 'a parameter maps to NaN or inf'}); choose "
            "init inside the support"
        )
    u = u0 + init_scale * torch.randn(
        num_particles, target.n_free, generator=gen, dtype=dtype, device=device
    )
    hist = torch.zeros_like(u)
    alpha, fudge = 0.9, 1e-6
    lp0 = None
    last = max(1, num_iter // 10)  # the iterations whose moves tell whether the set settled
    moved = torch.zeros((), dtype=dtype, device=device)  # summed over the last iterations
    for it in tqdm(range(num_iter), desc="SVGD", disable=not progress_bar, leave=False):
        lp, grad = target.log_prob_and_grad(u)
        _check_finite(target, u, ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1)), it)
        if it == 0:  # once, where every particle's density and gradient are finite
            target.check_followed(u[0], "SVGD")
        lp0 = lp if lp0 is None else lp0
        phi = svgd_direction(u, grad)
        hist = phi.pow(2) if it == 0 else alpha * hist + (1 - alpha) * phi.pow(2)
        step = step_size * phi / (fudge + hist.sqrt())
        if it >= num_iter - last:
            moved = moved + step_to_spread(u.detach(), step.detach())
        u = u + step
    lp = target.log_prob(u).detach()  # where the last step put them: (s,)
    _check_finite(target, u, ~torch.isfinite(lp), num_iter)
    if not _check_diverged(lp0.detach(), lp, target.n_free, step_size):
        _check_settled(float(moved) / last, last, step_size)
    return SVGDResult(target, u.detach(), num_iter)


def _check_finite(target: Target, u: torch.Tensor, bad: torch.Tensor, it: int) -> None:
    """Refuse particles ``u`` (s, p) where ``bad`` (s,): their log-density or gradient is not
    finite, at iteration ``it`` (the start, or where a step put them)."""
    if not bool(bad.any()):
        return
    if it == 0 and _out_of_torch(target):  # the cause, not the particles' start
        raise ParameterError(_out_of_torch(target))
    i = int(bad.nonzero()[0])
    # a density that raised at the start (an operation vmap cannot map, say) is named with
    # what it raised, as the sampler names it: "choose init where the density is finite"
    # alone misled there. After a step it ran at the start, so what it raised where a step
    # put the particles (a scale of inf its argument checks refuse) is the step's doing
    raised = _raised(target) if it == 0 else ""
    raise ParameterError(
        f"SVGD iteration {it}: the log-density or its gradient is not finite at particle "
        f"{i} ({int(bad.sum())} of {u.shape[0]} particles): {_at(target, u[i])}"
        + (
            raised
            if raised
            else ". The particles start there: choose init where the density is finite, or "
            "a smaller init_scale"
            if it == 0
            else ". Try a smaller step_size"
        )
    )


def _check_diverged(lp0: torch.Tensor, lp: torch.Tensor, p: int, step_size: float) -> bool:
    """Warn when the particles' median log-density ``lp`` (s,) ends far below where it
    started, ``lp0`` (s,). SVGD's drive term moves particles toward higher density, so they
    end no worse than a posterior draw: for a near-Gaussian posterior in p dimensions a draw
    lies chi2_p / 2 (mean p/2) below the mode, at most a few nats more than where a start at
    the mode lies. A fall of more than 50 + 5p nats (e^50 times less probable) is a step that
    overshoots and grows each iteration (step_size=1e10 on a standard normal: particles at
    6e9, a fall of 1e19), not a posterior's spread; a start far from the mass only rises.
    Returns whether it warned."""
    start, end = float(lp0.median()), float(lp.median())
    diverged = start - end > 50 + 5 * p
    if diverged:
        warnings.warn(
            f"SVGD diverged: the particles' median log-density fell from {start:.4g} at the "
            f"start to {end:.4g}, so the particles are spread far past the density's mass "
            f"(step_size={step_size:g} throws them further each iteration); use a smaller "
            "step_size (the default is 0.1)",
            DivergedParticlesWarning,
            stacklevel=user_stacklevel(),
        )
    return diverged


def _check_settled(move: float, last: int, step_size: float) -> None:
    """Warn when the particles still move, over the last ``last`` iterations, by more than
    half their median distance apart each iteration (``move``, the mean of
    :func:`step_to_spread`). SVGD's particles approximate the density at a fixed point of
    the update, where the moves shrink: a set rearranged every iteration is a snapshot of an
    oscillation, not an approximation. A step that overshoots a little does this without the
    fall :func:`_check_diverged` looks for: on a standard normal (100 particles, 1000
    iterations) step sizes 0.01-0.3 end at moves of 0.01-0.25 with the right mean and sd, but
    step_size=1 at 0.69 (sd 0.88), 3 at 1.8 and 10 at 2.2 (particle mean +5.0, sd 3.4); so
    does the default step on a density far narrower than 1 (sd 0.01: 2.9, sd 0.015)."""
    if move > _SETTLED:
        warnings.warn(
            f"SVGD did not settle: over the last {last} iterations each step moved the "
            f"particles by {move:.2g} times their median distance apart, so they jump across "
            f"the density instead of settling on it (step_size={step_size:g} overshoots its "
            "scale); use a smaller step_size (the default is 0.1; the scale of the density "
            "sets what is small), or more num_iter if the particles are still travelling "
            "toward its mass",
            DivergedParticlesWarning,
            stacklevel=user_stacklevel(),
        )
