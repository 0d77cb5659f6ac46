"""The tour section on Bernoulli mixtures, PPCA and BIC builds its figures and table."""

from latentfit.tour import SECTIONS
from latentfit.tour.mixtures import build
from latentfit.tour.report import TourContext


def test_mixtures_section_builds(tmp_path):
    assert ("mixtures", "latentfit.tour.mixtures") in SECTIONS
    section = build(TourContext(out=tmp_path, seed=0))
    assert len(section.figures) == 3
    for name, _ in section.figures:
        assert (tmp_path / name).stat().st_size > 5000
    assert "*" in section.tables[0] and "BIC" in section.tables[0]
    assert "purity" in section.paragraphs[0]
