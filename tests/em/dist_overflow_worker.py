"""One process of the distributed overflow test (tests/em/test_distributed.py), run by
torchrun.

Usage: dist_overflow_worker.py OUT_DIR DATA.npy WDATA.npy WEIGHTS.npy CASE [CASE ...]
Each case fits a float32 model on the two processes' shares of DATA.npy (``gmm_weights``:
WDATA.npy weighted by WEIGHTS.npy), whose moments overflow float32 only once summed over both
shares, and records, per rank, the error it got
in OUT_DIR/rank{r}.json (an empty string where the fit went through). The process group's
timeout is 10 s, so that a process left waiting for the others fails the test instead of
holding it.
"""

import json
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from latentfit import PPCA, GaussianHMM, GaussianMixture
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import DistributedSource, init_distributed


def _fit(case: str, data: str, wdata: str, weights: str) -> None:
    source = DistributedSource(NpySource(data, chunk_rows=10))
    if case == "gmm":
        GaussianMixture(2, dtype="float32", random_state=0, max_iter=3).fit(source)
    elif case == "gmm_weights":
        model = GaussianMixture(2, dtype="float32", random_state=0, max_iter=3)
        model.fit(DistributedSource(NpySource(wdata, chunk_rows=10, sample_weight=weights)))
    elif case == "ppca":
        PPCA(1, dtype="float32", max_iter=3).fit(source)
    elif case == "hmm":
        GaussianHMM(2, dtype="float32", n_iter=3, random_state=0).fit(source, [50] * 4)
    else:
        raise AssertionError(case)


def main(out: Path, data: str, wdata: str, weights: str, cases: list[str]) -> None:
    rank, _ = init_distributed(timeout=10)
    torch.set_num_threads(1)
    said = {}
    for case in cases:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what a fit that went through warned of
                _fit(case, data, wdata, weights)
            said[case] = ""
        except Exception as err:  # what reached the user, whatever it is
            said[case] = f"{type(err).__name__}: {err}"
    (out / f"rank{rank}.json").write_text(json.dumps(said))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:5], sys.argv[5:])
