"""Deep doublings stepped for the chains still growing only.

Chains step together (kernels.nuts_transition): a doubling of ``L`` leapfrog steps costs ``L``
steps of every chain, the chains whose trajectories have ended taking steps of size zero. With
many chains the last doublings are mostly idle: at 32 chains on arK, the doubling of 32 leaves
ran in 192 of 500 draws with 1.27 chains growing on average. A replayed step of 1 or 2 chains
costs ~35 µs there against ~51 µs for 32, so such doublings step only a few rows: the growing
chains, padded with idle ones to a power of two (at most half the chains, so that a run builds
a handful of sizes), each size's step replayed from its own trace the first time it is needed
(~40 ms on arK). The tree bookkeeping (replayed, a trace per number of chains and leaves, or
eager) then merges those rows only, and the other chains keep what the merge of an idle chain
leaves them; a compiled bookkeeping, made for every chain, gets the other chains' leaves
filled with the value a step of size zero gives, their near end (masked out there).

Only a step whose cost grows with its rows is narrowed. The step's operations write
``per_chain`` elements a chain (counted once, interpreting its graph on the example); a
doubling narrows to ``s`` rows where ``(c - s) * per_chain`` is at least ``MIN_SAVED_ELEMENTS``
and ``c - s`` at least ``MIN_ROWS_SAVED``.
Eight schools' step writes ~300 elements a chain, and at 32 chains a step of one chain is no
faster (each operation costs its launch); arK's ~2,000 a chain save ~25 µs a step (~0.4 ns an
element); a two-component mixture of 1,000 points writes ~56,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "MIN_LEAVES",
    "MIN_ROWS_SAVED",
    "MIN_SAVED_ELEMENTS",
    "NarrowSteps",
    "can_narrow",
    "elements_per_chain",
    "narrow_rows",
]

#: the fewest leaves of a doubling that is narrowed: the ~12 operations of selecting the rows
#: and writing the subtree back cost about what a shallower doubling would save
MIN_LEAVES = 4

#: the fewest rows a narrowed doubling must leave out: each size of step and of bookkeeping is
#: traced once (~40-100 ms and ~20 ms), which at 4 chains (1 row of 4) a run did not repay
MIN_ROWS_SAVED = 4

#: the fewest elements a narrowed step must write less than a step of every chain (~8 µs at
#: ~0.4 ns an element)
MIN_SAVED_ELEMENTS = 20_000


def narrow_rows(
    active: torch.Tensor, n_growing: int, per_chain: float = math.inf
) -> torch.Tensor | None:
    """The rows (s,) to step for a doubling where ``n_growing`` of the chains ``active`` (c,)
    grow: those chains first, then idle ones up to the power of two ``s >= n_growing``, all
    distinct; None where ``s`` would exceed half the chains or leave out fewer than
    ``MIN_ROWS_SAVED``, or where the step, which writes ``per_chain`` elements a chain, would
    write fewer than ``MIN_SAVED_ELEMENTS`` less."""
    c = active.shape[0]
    s = 1 << max(0, n_growing - 1).bit_length()
    if n_growing == 0 or 2 * s > c or c - s < MIN_ROWS_SAVED:
        return None
    if (c - s) * per_chain < MIN_SAVED_ELEMENTS:
        return None
    # a stable sort of the flags: growing chains first, each row once
    return torch.sort(active.to(torch.uint8), descending=True, stable=True).indices[:s]


def can_narrow(chains: int) -> bool:
    """Whether a run of ``chains`` chains can ever narrow a doubling (``narrow_rows``: one row
    at least, half the chains at most, ``MIN_ROWS_SAVED`` left out); at the usual 1-4 chains
    it cannot, and its set-up (``elements_per_chain``) is not paid."""
    return chains >= 2 and chains - 1 >= MIN_ROWS_SAVED


def elements_per_chain(graph: torch.fx.GraphModule, example: tuple) -> float | None:
    """The elements the operations of the step ``graph`` write, per chain, on ``example``
    (its inputs, chains first): one interpretation of the graph (~1-5 ms), or None where it
    raises."""
    total = 0

    class Counting(torch.fx.Interpreter):
        def run_node(self, n):
            nonlocal total
            out = super().run_node(n)
            if n.op == "call_function":
                outs = out if isinstance(out, tuple | list) else (out,)
                total += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))
            return out

    try:
        with torch.no_grad():
            Counting(graph).run(*example)
    except Exception:  # the step raised at the example: nothing is narrowed
        return None
    return total / example[0].shape[0]


class NarrowSteps:
    """The replayed leapfrog for fewer chains than a run has: ``narrow(target, metric, state)``
    gives the step for ``state``'s number of chains (traced, replayed and checked there the
    first time, on those chains' points, as the run's own step was: compiled.leapfrog_parts,
    raising.replayed_step), or None where that size cannot be replayed (the doubling then
    steps every chain). ``per_chain``: the elements the step writes a chain
    (``elements_per_chain``), which decides where narrowing pays (``narrow_rows``)."""

    def __init__(self, per_chain: float) -> None:
        self.per_chain = per_chain
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
