"""One process of the distributed test of the discrete mixtures and factor models
(tests/em/test_streaming_models.py), run by torchrun.

Usage: dist_models_worker.py OUT_DIR COUNTS.npy GAUSSIAN.npy FAR.npy
Writes OUT_DIR/rank{r}.npz with what this process fitted.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from latentfit import PPCA, FactorAnalysis, PoissonMixture
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import DistributedSource, init_distributed


def main(out: Path, counts: str, gaussian: str, far: str) -> None:
    rank, _ = init_distributed()
    torch.set_num_threads(1)
    pm = PoissonMixture(2, random_state=0, tol=1e-10, max_iter=20, chunk_rows=64)
    pm.fit(DistributedSource(NpySource(counts)))
    fa = FactorAnalysis(2, tol=1e-12, max_iter=20, chunk_rows=64)
    fa.fit(DistributedSource(NpySource(gaussian)))
    ppca = PPCA(1, chunk_rows=16).fit(DistributedSource(NpySource(far)))
    np.savez(
        out / f"rank{rank}.npz",
        rates=pm.rates_,
        weights=pm.weights_,
        pm_bounds=np.array(pm.lower_bounds_),
        components=fa.components_,
        noise=fa.noise_variance_,
        fa_bounds=np.array(fa.lower_bounds_),
        far_noise=ppca.noise_variance_,
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:5])
