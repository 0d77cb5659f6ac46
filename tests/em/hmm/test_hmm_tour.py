"""The tour's HMM section builds its figure and text from the geyser series."""

from latentfit.tour import SECTIONS
from latentfit.tour.hmm import build
from latentfit.tour.report import TourContext


def test_tour_section(tmp_path):
    assert ("hmm", "latentfit.tour.hmm") in SECTIONS
    section = build(TourContext(out=tmp_path, seed=0))
    ((name, _),) = section.figures
    assert (tmp_path / name).stat().st_size > 10_000
    assert "transition" in section.tables[0]
    assert "BIC" in section.paragraphs[1]
