"""One process of the distributed-EM agreement and timeout tests (tests/em/test_distributed.py),
run by torchrun.

Usage: dist_check_worker.py OUT_DIR DATA2.npy DATA3.npy CASE [CASE ...]
Each case makes the two ranks disagree on one thing (rank 1 differs) and records, per rank,
the error it got in OUT_DIR/rank{r}.json. Case ``timeout`` joins the group with a 2-second
timeout and leaves rank 1 asleep; rank 0 then exits with status 3 so that torchrun stops
rank 1.
"""

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from latentfit import PPCA, GaussianHMM, GaussianMixture
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import DistributedSource, init_distributed


def _fit(case: str, rank: int, data2: str, data3: str) -> None:
    other = rank == 1
    kw = dict(random_state=0, max_iter=3)
    if case == "n_features":
        GaussianMixture(2, **kw).fit(DistributedSource(NpySource(data3 if other else data2)))
    elif case == "n_components":
        GaussianMixture(3 if other else 2, **kw).fit(DistributedSource(NpySource(data2)))
    elif case == "covariance_type":
        ct = "diag" if other else "full"
        GaussianMixture(2, covariance_type=ct, **kw).fit(DistributedSource(NpySource(data2)))
    elif case == "dtype":
        dt = "float32" if other else "float64"
        GaussianMixture(2, dtype=dt, **kw).fit(DistributedSource(NpySource(data2)))
    elif case == "model":
        model = PPCA(1, max_iter=3) if other else GaussianMixture(2, **kw)
        model.fit(DistributedSource(NpySource(data2)))
    elif case == "hmm_n_components":
        GaussianHMM(3 if other else 2, n_iter=3, random_state=0).fit(
            DistributedSource(NpySource(data2)), [100, 100, 101]
        )
    elif case == "agree":  # the same model everywhere still fits
        rows = 50 if other else 100
        GaussianMixture(2, chunk_rows=rows, **kw).fit(DistributedSource(NpySource(data2)))
    elif case == "timeout":
        if other:
            time.sleep(300)  # a stopped process: it never joins the fit's collectives
        else:
            GaussianMixture(2, **kw).fit(DistributedSource(NpySource(data2)))
    else:
        raise AssertionError(case)


def main(out: Path, data2: str, data3: str, cases: list[str]) -> None:
    timeout = 2.0 if cases == ["timeout"] else 120.0
    rank, _ = init_distributed(timeout=timeout)
    torch.set_num_threads(1)
    res = {}
    for case in cases:
        try:
            _fit(case, rank, data2, data3)
            res[case] = ""
        except Exception as err:  # what reached the user, whatever it is
            res[case] = f"{type(err).__module__}.{type(err).__name__}: {err}"
            if not isinstance(err, ValueError):
                res[case] += "\n" + traceback.format_exc()
    (out / f"rank{rank}.json").write_text(json.dumps(res))
    if cases == ["timeout"]:
        os._exit(3)  # a failed rank: torchrun stops the sleeping one
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:])
