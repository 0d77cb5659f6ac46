"""The tour's estimation section builds its figures and text on the bundled data."""

from latentfit.tour import SECTIONS
from latentfit.tour.estimate import build
from latentfit.tour.report import TourContext


def test_estimate_section(tmp_path):
    assert SECTIONS[0] == ("estimate", "latentfit.tour.estimate")  # first link of the chain
    section = build(TourContext(out=tmp_path, seed=0))
    assert len(section.figures) == 3
    for name, caption in section.figures:
        assert (tmp_path / name).stat().st_size > 10_000 and caption
    text = " ".join(section.paragraphs)
    assert "Ridge" in text and "Lasso" in text and "credible interval" in text
    assert "MLE results: Gamma" in section.tables[0]
