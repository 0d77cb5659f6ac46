"""One process of the distributed scoring error test (tests/em/test_distributed.py), run by
torchrun.

Usage: dist_score_worker.py OUT_DIR CASE DATA.npy
The case (``mixture``: ``fit_distributed``; ``hmm``: the body of ``fit hmm --distributed``)
fits on 40 rows, then the scoring of the fitted model refuses row 33 (in rank 1's share), a
row the fit took; every rank records the error it got in OUT_DIR/rank{r}.json. The process
group's timeout is 10 s, so that a process left waiting for the others fails the test instead
of holding it.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from dist_estep_worker import record  # a sibling: the script's folder is on sys.path

from latentfit import GaussianHMM, GaussianMixture
from latentfit.cli._hmm_distributed import fit_hmm_distributed
from latentfit.em.hmm.labels import SequenceRowError
from latentfit.em.sources.distributed import fit_distributed
from latentfit.errors import BatchRowError


class FarRowScoringMixture(GaussianMixture):
    """A GaussianMixture whose scoring refuses a row holding a value beyond 100 (its fit
    takes it), as a model's score_samples refuses a row it cannot weigh."""

    def score_samples(self, X):
        far = (torch.as_tensor(X).abs() > 100).any(1).nonzero()
        if len(far):
            raise BatchRowError(int(far[0]), "row {row} of X is beyond 100")
        return super().score_samples(X)


class FarRowScoringHMM(GaussianHMM):
    """The same for an HMM's score, naming the row with its step and sequence."""

    def score(self, X, lengths=None, y=None):
        far = (np.abs(np.asarray(X)) > 100).any(1).nonzero()[0]
        if len(far):
            raise SequenceRowError(int(far[0]), "{where} is beyond 100", lengths)
        return super().score(X, lengths, y)


def _fit(case: str, data: str) -> None:
    if case == "mixture":  # row 33 of 40: in rank 1's shard (rows 20..39)
        fit_distributed(FarRowScoringMixture(2, random_state=0, max_iter=5), data, timeout=10)
    elif case == "hmm":  # row 33 of 40: step 3 of sequence 3, in rank 1's sequences 2 and 3
        model = FarRowScoringHMM(2, n_iter=3, random_state=0)
        fit_hmm_distributed(model, data, None, [10, 10, 10, 10], timeout=10)
    else:
        raise AssertionError(case)


def main(out: Path, case: str, data: str) -> None:
    record(_fit, out, case, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:4])
