"""The tour section on sampling the Old Faithful mixture builds its figures and table, and its
Gibbs and NUTS posterior means sit near the EM estimate (272 eruptions: a narrow posterior)."""

from latentfit.tour import SECTIONS
from latentfit.tour.mcmc import build
from latentfit.tour.report import TourContext


def test_mcmc_section_builds(tmp_path):
    assert ("mcmc", "latentfit.tour.mcmc") in SECTIONS
    section = build(TourContext(out=tmp_path, seed=0))
    assert len(section.figures) == 2
    for name, _ in section.figures:
        assert (tmp_path / name).stat().st_size > 5000
    rows = {line[:22].strip(): line[22:].split() for line in section.tables[0].splitlines()[1:7]}
    for key in ("mean 1 (eruptions)", "mean 1 (waiting)", "weight 1"):
        em, gibbs, nuts = (float(v) for v in rows[key])
        # posterior sds: ~0.04 min (eruptions), ~0.6 min (waiting), ~0.03 (weight)
        tol = {"mean 1 (eruptions)": 0.15, "mean 1 (waiting)": 2.0, "weight 1": 0.1}[key]
        assert abs(gibbs - em) < tol and abs(nuts - em) < tol, (key, em, gibbs, nuts)
    # 500 + 1,000 NUTS transitions a chain: converged (R-hat within 1.01, no divergence)
    assert section.tables[0].splitlines()[7] == "NUTS: no problems found", section.tables[0]
    # the HMM's Gibbs chains: R-hat read out in words (this seed's posterior has a second mode
    # that one chain of four reaches later: 1.05 at 300 draws, 1.10 at 1,000, 1.26 at 1,500)
    last = section.tables[1].splitlines()[-1]
    assert last.startswith("Gibbs: 4 chains from EM's Viterbi path, largest R-hat ")
    worst = float(last.split("R-hat ")[1].split()[0])
    assert last.endswith("(mixed)" if worst <= 1.01 else "not yet reliable)"), last
