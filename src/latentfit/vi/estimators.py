"""Gradient estimators for ∇_φ E_{q_φ(z)}[f(z)].

An estimator draws z from q and turns the per-sample learning signal f into a *surrogate*
whose value equals f and whose gradient is an unbiased (or, for the relaxation, a low-variance
biased) estimate of the gradient of E_q[f]:

* :class:`Reparameterization` — z = g_φ(ε) (Kingma & Welling 2014; Rezende et al. 2014).
* :class:`ScoreFunction` — REINFORCE, ∇ = E[(f − b) ∇ log q(z)] (Williams 1992), with a
  leave-one-out or moving-average baseline b, for latents that cannot be reparameterised.
* :class:`GumbelSoftmax` — the relaxed one-hot categorical / Concrete sample (Jang et al.
  2017; Maddison et al. 2017) with a temperature and a straight-through option.

Randomness comes from an explicit ``torch.Generator``: torch.distributions samples from the
global generator, so every draw runs inside a forked RNG seeded from the given generator and
the global state is left untouched.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch
from torch.distributions import (
    Categorical,
    Distribution,
    OneHotCategorical,
    RelaxedOneHotCategorical,
)

from latentfit._validation import as_generator, check_allocation
from latentfit.errors import ParameterError


def _is_number(value) -> bool:
    """A real number (int, float, numpy or 0-d tensor scalar), not a bool or a string."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


__all__ = [
    "GradientEstimator",
    "GumbelSoftmax",
    "Reparameterization",
    "ScoreFunction",
    "log_prob_of",
    "sampling_from",
]


def check_draws(q: Distribution, num_samples: int) -> None:
    """Refuse (ResourceLimitError) ``num_samples`` draws from ``q`` that memory cannot hold:
    the draws, their log-densities and their gradients, ~4 copies of (s, *batch, *event)."""
    per_draw = max(1, (q.batch_shape + q.event_shape).numel())
    check_allocation(
        4 * num_samples * per_draw * 8,  # float64 (float32 needs half)
        f"{num_samples:,} draws of {per_draw:,} latent values",
        hint="use fewer samples (num_samples)",
    )


@contextlib.contextmanager
def sampling_from(generator: torch.Generator | None):
    """Run torch.distributions sampling from ``generator`` without touching global RNG state:
    the default generator of the same device is seeded from ``generator`` and restored after."""
    generator = as_generator(generator)  # an integer seed too, as the samplers take it
    if generator is None:
        yield
        return
    if generator.device.type == "cuda":
        default = torch.cuda.default_generators[generator.device.index or 0]
    else:
        default = torch.default_generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    state = default.get_state()
    default.manual_seed(seed)
    try:
        yield
    finally:
        default.set_state(state)


class GradientEstimator:
    """``sample(q, num_samples, generator)`` → z of shape (s, *batch, *event);
    ``surrogate(f, log_q)`` → tensor equal to f with the estimator's gradient."""

    needs_log_q = False
    needs_analytic_kl = False

    def sample(self, q: Distribution, num_samples: int, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def surrogate(self, f: torch.Tensor, log_q: torch.Tensor | None) -> torch.Tensor:
        return f


class Reparameterization(GradientEstimator):
    """Pathwise gradient: z = rsample(), gradients flow through z into φ."""

    def sample(self, q, num_samples, generator=None):
        if not q.has_rsample:
            raise ParameterError(
                f"{type(q).__name__} has no rsample(): it cannot be reparameterised. Use "
                "ScoreFunction() for it, or GumbelSoftmax() for a categorical latent"
            )
        check_draws(q, num_samples)
        with sampling_from(generator):
            return q.rsample((num_samples,))


class ScoreFunction(GradientEstimator):
    """REINFORCE with a baseline: surrogate = f + (f̄ − b) log q(z) − its value, f̄ = f detached.

    baseline: ``"leave_one_out"`` (b for sample j is the mean signal of the other samples;
    unbiased, needs ``num_samples >= 2``), ``"moving_average"`` (an exponential average of
    past signals with ``decay``, one scalar; the estimator holds it as state, so use one
    estimator object per latent site), or ``None``.
    """

    needs_log_q = True

    def __init__(self, baseline: str | None = "leave_one_out", decay: float = 0.9):
        if baseline not in ("leave_one_out", "moving_average", None):
            raise ParameterError(
                f"baseline must be 'leave_one_out', 'moving_average' or None, got {baseline!r}"
            )
        if not (_is_number(decay) and 0 <= decay < 1):
            raise ParameterError(f"decay must be in [0, 1), got {decay!r}")
        self.baseline, self.decay = baseline, decay
        self.average: torch.Tensor | None = None

    def sample(self, q, num_samples, generator=None):
        check_draws(q, num_samples)
        with sampling_from(generator), torch.no_grad():
            return q.sample((num_samples,))

    def _baseline(self, signal: torch.Tensor) -> torch.Tensor | float:
        s = signal.shape[0]
        if self.baseline == "leave_one_out":
            if s < 2:
                raise ParameterError("the leave-one-out baseline needs num_samples >= 2")
            return (signal.sum(0, keepdim=True) - signal) / (s - 1)
        if self.baseline == "moving_average":
            # One scalar average: mini-batches of local latents change shape from step to step.
            b = 0.0 if self.average is None else self.average
            mean = signal.mean()
            self.average = (
                mean
                if self.average is None
                else (self.decay * self.average + (1 - self.decay) * mean)
            )
            return b
        return 0.0

    def surrogate(self, f, log_q):
        signal = f.detach()
        term = (signal - self._baseline(signal)) * log_q
        return f + term - term.detach()


class GumbelSoftmax(GradientEstimator):
    """Relaxed categorical sample softmax((logits + Gumbel) / temperature) for a Categorical or
    OneHotCategorical q; z is one-hot shaped (s, *batch, k).

    ``hard=True`` (straight-through): the forward value is the exact one-hot argmax sample,
    the gradient is that of the relaxed sample. With ``hard=False`` the ELBO must take the
    KL term in closed form (the relaxed sample has no density under q).
    """

    def __init__(self, temperature: float = 0.5, hard: bool = False):
        if not (_is_number(temperature) and 0 < temperature < math.inf):
            raise ParameterError(
                f"temperature must be a positive, finite number, got {temperature!r} (e.g. 0.5)"
            )
        self.temperature, self.hard = float(temperature), bool(hard)
        self.needs_analytic_kl = not self.hard

    def sample(self, q, num_samples, generator=None):
        if not isinstance(q, (Categorical, OneHotCategorical)):
            raise ParameterError(
                f"GumbelSoftmax needs a Categorical or OneHotCategorical guide, got "
                f"{type(q).__name__}"
            )
        check_draws(q, num_samples)
        t = torch.tensor(self.temperature, dtype=q.logits.dtype, device=q.logits.device)
        with sampling_from(generator):
            soft = RelaxedOneHotCategorical(t, logits=q.logits).rsample((num_samples,))
        if not self.hard:
            return soft
        hard = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft  # value: one-hot; gradient: relaxed


def log_prob_of(q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z), also for one-hot z under a Categorical (the GumbelSoftmax samples)."""
    if isinstance(q, OneHotCategorical) or (isinstance(q, Categorical) and z.is_floating_point()):
        return (z * q.logits).sum(-1)
    return q.log_prob(z)
