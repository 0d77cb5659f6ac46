"""`latentfit fit bgmm` end to end, and the tour's VI section."""

from typer.testing import CliRunner

import latentfit
from latentfit.cli import app
from latentfit.tour.report import TourContext

runner = CliRunner()


def test_fit_bgmm_prints_the_used_components_and_saves(faithful_csv, tmp_path):
    path, X = faithful_csv
    out = tmp_path / "bgmm.lf"
    res = runner.invoke(app, ["fit", "bgmm", str(path), "-k", "10", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    model = latentfit.load(out)
    used = int((model.weights_ > 0.01).sum())
    assert used == 2  # Old Faithful's two clusters
    assert f"components used (weight > 0.01): {used} of 10" in res.output
    assert f"ELBO: {model.elbo_:.6f} nats" in res.output
    assert model.n_components == 10 and model.predict(X).shape == (len(X),)


def test_fit_bgmm_reports_bad_options_without_a_traceback(faithful_csv):
    path, _ = faithful_csv
    res = runner.invoke(
        app, ["fit", "bgmm", str(path), "-k", "3", "--prior", "dirichlet", "--quiet"]
    )
    assert res.exit_code == 2
    assert "--prior must be one of 'dirichlet_process', 'dirichlet_distribution'" in res.output
    assert "weight_concentration_prior_type" not in res.output  # the Python setting's name
    assert "Traceback" not in res.output


def test_tour_section_draws_the_gap_and_the_dp_mixture(tmp_path):
    from latentfit.tour import vi

    section = vi.build(TourContext(out=tmp_path, seed=0))
    assert len(section.figures) == 3
    for name, _ in section.figures:
        assert (tmp_path / name).stat().st_size > 1000
    text = " ".join(section.paragraphs)
    assert "keeps 2" in text and "gap" in text
