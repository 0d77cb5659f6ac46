"""The sampler's progress: a bar per chain, as Stan prints each chain's iterations and Pyro
draws a bar per chain. Batched chains move together; at their own pace (paced.py) each bar
shows how many transitions its chain has made, so a chain that lags (deep trees, a funnel's
neck) shows where it is. Past ``MAX_BARS`` chains (a GPU's hundreds) one bar stands for all,
at the slowest chain's count."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

__all__ = ["MAX_BARS", "ChainBars"]

#: the most chains drawn a bar each
MAX_BARS = 16


class ChainBars:
    """A tqdm bar of ``total`` transitions for each of ``chains`` chains (one for all past
    ``MAX_BARS``), labelled ``phase`` ("warm-up", "sampling"); nothing is drawn unless
    ``show``. A context manager: the bars close (and vanish, ``leave=False``) on exit."""

    def __init__(self, chains: int, total: int, phase: str, show: bool):
        names = [f"chain {i} {phase}" for i in range(chains)]
        if chains > MAX_BARS:
            names = [f"{chains} chains {phase} (the slowest)"]
        self.bars = [
            tqdm(total=total, desc=name, position=i, leave=False, disable=not show)
            for i, name in enumerate(names)
        ]

    def advance(self, n: int = 1) -> None:
        """Every chain made ``n`` more transitions (the batched pace)."""
        for bar in self.bars:
            bar.update(n)

    def reach(self, counts: np.ndarray) -> None:
        """Chain ``i`` has made ``counts[i]`` transitions in all (the own pace)."""
        if len(self.bars) < len(counts):
            counts = counts.min(keepdims=True)
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
