"""The sampler's progress: a bar per chain, as Stan prints each chain's iterations and Pyro
draws a bar per chain. Batched chains move together; at their own pace (paced.py) each bar
shows how many transitions its chain has made, so a chain that lags (deep trees, a funnel's
neck) shows where it is."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

__all__ = ["ChainBars"]


class ChainBars:
    """``chains`` tqdm bars of ``total`` transitions each, labelled ``phase`` ("warm-up",
    "sampling"); nothing is drawn unless ``show``. A context manager: the bars close (and,
    with ``leave=False``, vanish) on exit."""

    def __init__(self, chains: int, total: int, phase: str, show: bool):
        self.bars = [
            tqdm(total=total, desc=f"chain {i} {phase}", position=i, leave=False, disable=not show)
            for i in range(chains)
        ]

    def advance(self, n: int = 1) -> None:
        """Every chain made ``n`` more transitions (the batched pace)."""
        for bar in self.bars:
            bar.update(n)

    def reach(self, counts: np.ndarray) -> None:
        """Chain ``i`` has made ``counts[i]`` transitions in all (the own pace)."""
        for bar, n in zip(self.bars, counts.tolist(), strict=True):
            if n > bar.n:
                bar.update(n - bar.n)

    def close(self) -> None:
        for bar in reversed(self.bars):  # the lowest first, so that none is left in between
            bar.close()

    def __enter__(self) -> ChainBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
