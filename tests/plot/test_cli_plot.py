"""--plot FILE on the fitting commands: the figure is written, a bad format refused first."""

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()

COMMANDS = {
    "fit-gmm": ["fit", "gmm", "{data}", "-k", "2", "--quiet"],
    "fit-bgmm": ["fit", "bgmm", "{data}", "-k", "3", "--quiet"],
    "fit-hmm": ["fit", "hmm", "{data}", "-k", "2", "--quiet", "--states", "{tmp}/s.csv"],
    "select-gmm": ["select", "gmm", "{data}", "-k", "1-2", "--covariance", "full"],
}


def _args(name, data, tmp_path, plot):
    return [a.format(data=data, tmp=tmp_path) for a in COMMANDS[name]] + ["--plot", str(plot)]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_plot_writes_an_image(name, faithful_csv, tmp_path):
    data, _ = faithful_csv
    res = runner.invoke(app, _args(name, data, tmp_path, tmp_path / "f.png"))
    assert res.exit_code == 0, res.output
    assert f"figure written to {tmp_path / 'f.png'}" in res.output
    h, w = imread(tmp_path / "f.png").shape[:2]
    assert h > 100 and w > 100
    res = runner.invoke(app, [*_args(name, data, tmp_path, tmp_path / "f.svg"), "--force"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_unknown_image_format_is_refused_before_the_fit(name, faithful_csv, tmp_path):
    data, _ = faithful_csv
    res = runner.invoke(app, _args(name, data, tmp_path, tmp_path / "f.xyz"))
    assert res.exit_code == 2
    assert "--plot" in res.output and "unknown image format 'xyz'" in res.output
    assert "log-likelihood" not in res.output and "BIC" not in res.output  # nothing was fitted
    assert not (tmp_path / "f.xyz").exists()
