"""The tour's density section: its table and figure, and its place after the VAE section."""

from latentfit.tour import SECTIONS
from latentfit.tour.density import build
from latentfit.tour.report import TourContext


def test_density_section_tabulates_bits_per_dim_and_draws_samples(tmp_path):
    names = [n for n, _ in SECTIONS]
    assert names.index("density") == names.index("vae") + 1
    section = build(TourContext(out=tmp_path, seed=0))
    rows = section.tables[0].splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["GMM,", "MAF,", "DDPM,"]
    bits = [float(r.split()[-1]) for r in rows]
    assert all(0 < b < 20 for b in bits)
    assert bits[1] < bits[0]  # the flow beats the diagonal mixture even at this size
    assert (tmp_path / section.figures[0][0]).stat().st_size > 0
