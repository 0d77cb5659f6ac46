"""One process of the distributed E-step error test (tests/em/test_distributed.py), run by
torchrun.

Usage: dist_estep_worker.py OUT_DIR CASE DATA.npy
The case (``mixture`` or ``hmm``) makes the E-step of rank 1 only refuse a row of its shard;
every rank records the error it got in OUT_DIR/rank{r}.json. The process group's timeout is 10 s, so that a process
left waiting for the others fails the test instead of holding it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from latentfit import CategoricalHMM, GaussianMixture
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import DistributedSource, init_distributed
from latentfit.errors import BatchRowError


class FarRowMixture(GaussianMixture):
    """A GaussianMixture whose E-step refuses a row holding a value beyond 100, as a model's
    E-step refuses a row it cannot weigh (a BatchRowError about a row of its batch)."""

    def _hooks(self):
        hooks = super()._hooks()
        estep = hooks.estep

        def refusing(params, batch):
            far = (batch[0].abs() > 100).any(1).nonzero()
            if len(far):
                raise BatchRowError(int(far[0]), "row {row} of X is beyond 100")
            return estep(params, batch)

        hooks.estep = refusing
        return hooks


def _fit(case: str, data: str) -> None:
    if case == "mixture":  # row 33 of 40: in rank 1's shard (rows 20..39), in its 2nd chunk
        model = FarRowMixture(2, random_state=0, max_iter=5)
        model.fit(DistributedSource(NpySource(data, chunk_rows=10)))
    elif case == "hmm":  # row 13 of 20: in rank 1's sequences 2 and 3 (rows 10..19)
        model = CategoricalHMM(2, n_features=3, init_params="st", params="st", random_state=0)
        model.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])  # symbol 2: never
        model.fit(DistributedSource(NpySource(data, chunk_rows=5)), [5, 5, 5, 5])
    else:
        raise AssertionError(case)


def record(fit, out: Path, case: str, data: str) -> None:
    """Run ``fit(case, data)`` in a process group of timeout 10 s and write the error it
    raised (or "") to OUT/rank{r}.json; the distributed scoring worker shares it."""
    rank, _ = init_distributed(timeout=10)
    torch.set_num_threads(1)
    try:
        fit(case, data)
        said = ""
    except Exception as err:  # what reached the user, whatever it is
        said = f"{type(err).__name__}: {err}"
    (out / f"rank{rank}.json").write_text(json.dumps(said))
    dist.destroy_process_group()


def main(out: Path, case: str, data: str) -> None:
    record(_fit, out, case, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:4])
