"""Cold start of the command line and the package: ``latentfit --help``, ``--version``,
``import latentfit`` and the first estimator import, each in a fresh interpreter.

Usage: python benchmarks/cold_start.py [--repeat 5] [--src PATH]

Prints the median wall time and the median CPU time (user + system, of the child process) of
each; the CPU time is the figure to compare on a shared machine, where the wall time also
counts the waits for a core.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "latentfit --help": ["-m", "latentfit", "--help"],
    "latentfit --version": ["-m", "latentfit", "--version"],
    "import latentfit": ["-c", "import latentfit"],
    "from latentfit import GaussianMixture": ["-c", "from latentfit import GaussianMixture"],
}


def run(args: list[str], env: dict) -> tuple[float, float] | None:
    """(wall, CPU) seconds of one fresh interpreter, or None when the command failed (an
    older checkout without ``--version``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src}
    print(f"{'case':<40} {'wall (s)':>9} {'CPU (s)':>8}")
    for name, argv in CASES.items():
        runs = [run(argv, env) for _ in range(args.repeat)]
        if None in runs:
            print(f"{name:<40} {'fails':>9}")
            continue
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{name:<40} {wall:>9.2f} {cpu:>8.2f}")


if __name__ == "__main__":
    main()
