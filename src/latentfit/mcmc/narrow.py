"""Deep doublings stepped for the chains still growing only.

Chains step together (kernels.nuts_transition): a doubling of ``L`` leapfrog steps costs ``L``
steps of every chain, the chains whose trajectories have ended taking steps of size zero. With
many chains the last doublings are mostly idle: at 32 chains on arK, the doubling of 32 leaves
ran in 192 of 500 draws with 1.27 chains growing on average. A replayed step of 1 or 2 chains
costs ~35 µs there against ~51 µs for 32, so such doublings step only a few rows: the growing
chains, padded with idle ones to a power of two (at most a quarter of the chains, so that a run
builds a handful of sizes), each size's step replayed from its own trace the first time it is
needed (~40 ms on arK), and the subtree's other rows filled with the value a step of size zero
gives, the chain's near end. The tree bookkeeping still merges every chain: an idle chain's
leaves are masked out there whatever they hold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["MIN_LEAVES", "NarrowSteps", "narrow_rows"]

#: the fewest leaves of a doubling that is narrowed: the ~12 operations of selecting the rows
#: and writing the subtree back cost about what a shallower doubling would save
MIN_LEAVES = 4


def narrow_rows(active: torch.Tensor, n_growing: int) -> torch.Tensor | None:
    """The rows (s,) to step for a doubling where ``n_growing`` of the chains ``active`` (c,)
    grow: those chains first, then idle ones up to the power of two ``s >= n_growing``, all
    distinct; None where ``s`` would exceed a quarter of the chains."""
    c = active.shape[0]
    s = 1 << max(0, n_growing - 1).bit_length()
    if n_growing == 0 or 4 * s > c:
        return None
    # a stable sort of the flags: growing chains first, each row once
    return torch.sort(active.to(torch.uint8), descending=True, stable=True).indices[:s]


class NarrowSteps:
    """The replayed leapfrog for fewer chains than a run has: ``steps(target, metric, state)``
    gives the step for ``state``'s number of chains (traced, replayed and checked there the
    first time, on those chains' points, as the run's own step was: compiled.leapfrog_parts,
    raising.replayed_step), or None where that size cannot be replayed (the doubling then
    steps every chain)."""

    def __init__(self) -> None:
        self.by_size: dict[int, Callable | None] = {}

    def __call__(self, target, metric, state) -> Callable | None:
        s = state.u.shape[0]
        if s not in self.by_size:
            from latentfit.mcmc.compiled import leapfrog_parts
            from latentfit.mcmc.raising import replayed_step, wrap_replayed

            try:
                raw, example, _, check = leapfrog_parts(target, metric, state, state.log_prob)
                replayed = replayed_step(raw, example, check)
            except Exception:  # the density raised at these points: every chain steps
                replayed = None
            self.by_size[s] = None if replayed is None else wrap_replayed(replayed)
        return self.by_size[s]
