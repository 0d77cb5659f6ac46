"""Reading a delimited table: latentfit.datasets.load_array vs pandas.read_csv.

A 200,000 × 16 CSV of seeded normal draws (header a0..a15, numpy's '%.18e' written with commas,
about 78 MiB), read into a float64 array by each library in the same process: the reads
alternate (so both see the same machine load) and each library's best wall-clock and best
process CPU time (all its threads) of ``--repeats`` reads after a warm-up are printed; the
two arrays are checked to be equal.

    .venv/bin/python benchmarks/read.py [--rows 200000] [--cols 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latentfit.datasets import load_array


def timed(fn, times):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    times.append((wall, cpu))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    X = np.random.default_rng(0).normal(size=(args.rows, args.cols))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        header = ",".join(f"a{j}" for j in range(args.cols))
        np.savetxt(path, X, delimiter=",", header=header, comments="")
        size = path.stat().st_size / 2**20
        ours, ref = [], []
        for _ in range(args.repeats + 1):  # the first round is the warm-up
            A = timed(lambda: load_array(path).numpy(), ours)
            B = timed(lambda: pd.read_csv(path).to_numpy(dtype=np.float64), ref)
    assert A.shape == B.shape and np.array_equal(A, B), "the two readers disagree"
    (ow, oc), (rw, rc) = (np.min(t[1:], axis=0) for t in (ours, ref))
    print(f"{args.rows} x {args.cols} CSV ({size:.1f} MiB), best of {args.repeats}")
    print(f"latentfit load_array: {ow:.3f} s wall, {oc:.3f} s CPU")
    print(f"pandas.read_csv:      {rw:.3f} s wall, {rc:.3f} s CPU")
    print(f"ratio (pandas / latentfit): {rw / ow:.2f}x wall, {rc / oc:.2f}x CPU")


if __name__ == "__main__":
    main()
