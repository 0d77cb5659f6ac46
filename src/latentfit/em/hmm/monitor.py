"""The record of an HMM fit as hmmlearn keeps it (:class:`ConvergenceMonitor`) and the
warning for states that no data visits (:class:`UnvisitedStateWarning`)."""

from __future__ import annotations

import warnings
from collections import deque

from latentfit.errors import user_stacklevel

__all__ = ["ConvergenceMonitor", "UnvisitedStateWarning", "warn_unvisited"]


class UnvisitedStateWarning(RuntimeWarning):
    """A state received no posterior mass: its parameters were kept instead of re-estimated."""


class ConvergenceMonitor:
    """hmmlearn's convergence monitor: ``history`` holds the total log-likelihood of every
    iteration, ``iter`` their number, ``converged`` is true when the last gain was below
    ``tol`` or ``n_iter`` iterations were made (hmmlearn's definition; latentfit's stricter
    ``converged_`` attribute is true only for the former)."""

    def __init__(self, tol: float, n_iter: int, verbose: bool, history=()):
        self.tol, self.n_iter, self.verbose = tol, n_iter, verbose
        self.history = deque(history)
        self.iter = len(self.history)

    @property
    def converged(self) -> bool:
        h = self.history
        return self.iter == self.n_iter or (len(h) >= 2 and h[-1] - h[-2] < self.tol)

    def __repr__(self):
        return (
            f"ConvergenceMonitor(tol={self.tol}, n_iter={self.n_iter}, iter={self.iter}, "
            f"history={list(self.history)[-2:]})"
        )


def warn_unvisited(model, states, why: str, kept: str) -> None:
    """Warn (:class:`UnvisitedStateWarning`) that ``states`` received no posterior mass in an
    M-step of ``model`` (``why``: what no data explains) and keep their previous ``kept``;
    nothing when ``states`` is empty."""
    if states:
        warnings.warn(
            f"{type(model).__name__}: state(s) {list(states)} received no posterior mass "
            f"({why}); they keep their previous {kept}. Try fewer components, another "
            "random_state or n_init > 1.",
            UnvisitedStateWarning,
            stacklevel=user_stacklevel(),
        )
