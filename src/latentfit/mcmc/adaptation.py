"""Stan's warm-up: dual-averaging step size and a metric estimated in expanding windows.

Hoffman & Gelman 2014, §3.2 (dual averaging, Nesterov 2009) with Stan's constants
(``delta = 0.8, gamma = 0.05, kappa = 0.75, t0 = 10, mu = log(10 eps)``), and Stan's
``windowed_adaptation``: an initial buffer of 75 iterations, slow windows of 25, 50, 100, ...
iterations, each ending with a new (regularised) metric, a fresh step-size search and a restart
of dual averaging, and a terminal buffer of 50 iterations for the final step size. Every
quantity is per chain (a chain dimension first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latentfit.mcmc.kernels import Metric, State, leapfrog

__all__ = ["DualAveraging", "WindowSchedule", "find_reasonable_step_size", "regularized_metric"]


class DualAveraging:
    """Stan's ``stepsize_adaptation`` for a batch of chains."""

    def __init__(self, step_size: torch.Tensor, target_accept: float = 0.8):
        self.delta, self.gamma, self.kappa, self.t0 = target_accept, 0.05, 0.75, 10.0
        self.restart(step_size)

    def restart(self, step_size: torch.Tensor) -> None:
        self.mu = torch.log(10 * step_size)
        self.counter = 0
        self.s_bar = torch.zeros_like(step_size)
        self.x_bar = torch.zeros_like(step_size)

    def update(self, accept_stat: torch.Tensor) -> torch.Tensor:
        """Learn from one transition's acceptance statistic; returns the next step size."""
        self.counter += 1
        stat = accept_stat.clamp(max=1.0)
        eta = 1.0 / (self.counter + self.t0)
        self.s_bar = (1 - eta) * self.s_bar + eta * (self.delta - stat)
        x = self.mu - self.s_bar * math.sqrt(self.counter) / self.gamma
        x_eta = self.counter ** (-self.kappa)
        self.x_bar = (1 - x_eta) * self.x_bar + x_eta * x
        return torch.exp(x)

    def final(self) -> torch.Tensor:
        return torch.exp(self.x_bar)


@dataclass
class WindowSchedule:
    """Which warm-up iterations feed the metric, and where each slow window ends (Stan)."""

    num_warmup: int
    init_buffer: int = 75
    term_buffer: int = 50
    base_window: int = 25

    def __post_init__(self):
        w = self.num_warmup
        if w < 20:
            self.init_buffer, self.term_buffer, self.base_window = w, 0, 0
            self.ends = []
            return
        if self.init_buffer + self.base_window + self.term_buffer > w:
            self.init_buffer = int(0.15 * w)
            self.term_buffer = int(0.1 * w)
            self.base_window = w - (self.init_buffer + self.term_buffer)
        # the last iteration of each slow window (0-based), as Stan's compute_next_window
        last = w - self.term_buffer - 1
        ends, size = [], self.base_window
        nxt = self.init_buffer + size - 1
        while True:
            ends.append(nxt)
            if nxt == last:
                break
            size *= 2
            nxt = nxt + size
            if nxt != last and nxt + 2 * size >= w - self.term_buffer:
                nxt = last
            if nxt > last:
                nxt = last
        self.ends = ends

    def collects(self, it: int) -> bool:
        return bool(self.ends) and self.init_buffer <= it < self.num_warmup - self.term_buffer


def regularized_metric(draws: torch.Tensor, dense: bool) -> torch.Tensor:
    """Stan's regularised window estimate from draws (n, c, p): the sample (co)variance shrunk
    toward ``1e-3`` times the identity with weight ``5 / (n + 5)``."""
    n = draws.shape[0]
    x = draws - draws.mean(0)
    w, shrink = n / (n + 5.0), 1e-3 * 5.0 / (n + 5.0)
    if not dense:
        return w * (x * x).sum(0) / (n - 1) + shrink  # (c, p)
    cov = torch.einsum("nci,ncj->cij", x, x) / (n - 1)  # (c, p, p)
    eye = torch.eye(draws.shape[-1], dtype=draws.dtype, device=draws.device)
    return w * cov + shrink * eye


def find_reasonable_step_size(
    target, metric: Metric, state: State, step_size: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Stan's ``init_stepsize``: double or halve each chain's step until one leapfrog step's
    acceptance ``exp(-ΔH)`` crosses 0.8."""
    log08 = math.log(0.8)
    eps = step_size.clone()
    direction = None
    done = torch.zeros_like(eps, dtype=torch.bool)
    for _ in range(100):
        p = metric.sample(gen)
        h0 = metric.kinetic(p) - state.log_prob
        new, p1 = leapfrog(target, metric, state, p, eps)
        h = metric.kinetic(p1) - new.log_prob
        h = torch.where(torch.isnan(h), torch.full_like(h, math.inf), h)
        delta = h0 - h
        if direction is None:
            direction = torch.where(delta > log08, 1.0, -1.0).to(eps)
            continue
        stop = torch.where(direction > 0, ~(delta > log08), ~(delta < log08))
        done |= stop
        if bool(done.all()):
            break
        eps = torch.where(done, eps, eps * torch.where(direction > 0, 2.0, 0.5).to(eps))
        eps = eps.clamp(min=1e-12, max=1e7)
    return eps
