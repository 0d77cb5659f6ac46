"""The tour's sequence section: the HSMM's likelihood and BIC beside the HMM's on the geyser
series, and the tracking example's figures."""

import re

from latentfit import GaussianHMM
from latentfit.datasets import load_geyser
from latentfit.tour import SECTIONS
from latentfit.tour.report import TourContext
from latentfit.tour.sequences import build


def test_tour_section(tmp_path):
    assert ("sequences", "latentfit.tour.sequences") in SECTIONS
    section = build(TourContext(out=tmp_path, seed=0))
    assert len(section.figures) == 2
    for name, _ in section.figures:
        assert (tmp_path / name).stat().st_size > 10_000
    hmm_row = next(r for r in section.tables[0].splitlines() if r.startswith("GaussianHMM"))
    ll, bic = (float(v) for v in re.findall(r"-?\d+\.\d", hmm_row))
    X = load_geyser().data.numpy()
    hmm = GaussianHMM(3, covariance_type="full", n_iter=100, tol=1e-4, n_init=3, random_state=0)
    hmm.fit(X)
    assert abs(ll - hmm.score(X)) < 0.06 and abs(bic - hmm.bic(X)) < 0.06
    assert "RMSE" in section.paragraphs[1]
