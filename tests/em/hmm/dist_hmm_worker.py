"""One process of the distributed HMM test (tests/em/hmm/test_hmm_streaming.py), run by
torchrun.

Usage: dist_hmm_worker.py OUT_DIR DATA.npy LENGTHS.npy
Writes OUT_DIR/rank{r}.npz with what this process fitted and the sequences it read.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from latentfit import CategoricalHMM, GaussianHMM, MultinomialHMM
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import DistributedSource, init_distributed


def main(out: Path, data: str, lengths_path: str) -> None:
    rank, _ = init_distributed()
    torch.set_num_threads(1)
    lengths = np.load(lengths_path).tolist()
    res = {}
    for ct in ("diag", "full"):
        src = DistributedSource(NpySource(data, chunk_rows=13))
        model = GaussianHMM(3, covariance_type=ct, random_state=0, n_iter=25, tol=1e-12)
        model.fit(src, lengths)
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            res[f"{ct}_{name}"] = getattr(model, name)
        res[f"{ct}_bounds"] = np.array(model.lower_bounds_)
    # Symbols (the first column, rounded and shifted to 0..4) with the symbol count given.
    symbols = Path(data).with_name("symbols.npy")
    if rank == 0:
        X = np.load(data)
        np.save(symbols, np.clip(np.round(X[:, :1]) + 2, 0, 4))
    dist.barrier()
    cat = CategoricalHMM(3, n_features=5, random_state=0, n_iter=25, tol=1e-12)
    cat.fit(DistributedSource(NpySource(symbols, chunk_rows=13)), lengths)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        res[f"cat_{name}"] = getattr(cat, name)
    res["cat_bounds"] = np.array(cat.lower_bounds_)
    # Counts (the data's absolute values, doubled and rounded), every row its own total.
    counts = Path(data).with_name("counts.npy")
    if rank == 0:
        np.save(counts, np.abs(np.round(np.load(data) * 2)))
    dist.barrier()
    mult = MultinomialHMM(3, random_state=0, n_iter=25, tol=1e-12)
    mult.fit(DistributedSource(NpySource(counts, chunk_rows=13)), lengths)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        res[f"mult_{name}"] = getattr(mult, name)
    res["mult_bounds"] = np.array(mult.lower_bounds_)
    # Fewer sequences than processes: every process refuses, none waits on the others.
    try:
        GaussianHMM(3).fit(DistributedSource(NpySource(data)), [int(sum(lengths))])
        res["error"] = np.array("")
    except ValueError as err:
        res["error"] = np.array(str(err))
    np.savez(out / f"rank{rank}.npz", **res)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:4])
