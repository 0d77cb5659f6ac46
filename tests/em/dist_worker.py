"""One process of the distributed EM test (tests/em/test_distributed.py), run by torchrun.

Usage: dist_worker.py OUT_DIR DATA.npy WEIGHTS.npy BAD.npy
Writes OUT_DIR/rank{r}.npz with what this process fitted and saw.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from latentfit import GaussianMixture
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import DistributedSource, all_reduce_stats, init_distributed


def main(out: Path, data: str, weights: str, bad: str) -> None:
    rank, _ = init_distributed()
    torch.set_num_threads(1)
    res = {}
    # A fit on this process's shard, all-reduced: must equal the single-process fit.
    for ct in ("full", "diag"):
        src = DistributedSource(NpySource(data, sample_weight=weights, chunk_rows=50))
        gm = GaussianMixture(3, covariance_type=ct, random_state=0, tol=1e-10, max_iter=30)
        gm.fit(src)
        res[f"{ct}_means"] = gm.means_
        res[f"{ct}_weights"] = gm.weights_
        res[f"{ct}_covariances"] = gm.covariances_
        res[f"{ct}_bounds"] = np.array(gm.lower_bounds_)
        res[f"{ct}_rows"] = np.array(src.n_samples)
    # The collective itself: mixed dtypes and shapes come back summed, in their own dtype.
    stats = {
        "a": torch.full((2, 3), float(rank + 1), dtype=torch.float64),
        "b": torch.tensor([rank + 1.0], dtype=torch.float32),
    }
    red = all_reduce_stats(stats)
    res["reduced_a"], res["reduced_b"] = red["a"].numpy(), red["b"].numpy()
    res["reduced_b_is_f32"] = np.array(red["b"].dtype == torch.float32)
    # A shard that cannot be read makes every process raise instead of hanging.
    try:
        GaussianMixture(2, random_state=0, init_params="random", max_iter=3).fit(
            DistributedSource(NpySource(bad, chunk_rows=50, init_rows=10))
        )
        res["error"] = np.array("")
    except (ValueError, RuntimeError) as err:
        res["error"] = np.array(f"{type(err).__name__}: {err}")
    # Online EM reads a source in one process: a sharded one is refused with advice.
    try:
        GaussianMixture(2).partial_fit(DistributedSource(NpySource(data)))
        res["online_error"] = np.array("")
    except ValueError as err:
        res["online_error"] = np.array(str(err))
    np.savez(out / f"rank{rank}.npz", **res)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:5])
