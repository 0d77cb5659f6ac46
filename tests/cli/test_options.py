"""Every command's options: help text, shown defaults, --x/--no-x switches, one meaning of -k."""

from __future__ import annotations

import re

import pytest
import typer

from latentfit.cli import app

#: Commands left out of these checks (none: every command, the saved-model commands, select
#: and fit ssm included, follows the same rules).
SKIP: set = set()


def _commands():
    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, (*path, name))
        elif not any(path[: len(s)] == s for s in SKIP):
            yield path, cmd

    return list(walk(typer.main.get_command(app), ()))


COMMANDS = _commands()


def _options(cmd):
    return [
        p
        for p in cmd.params
        if p.param_type_name == "option" and not p.hidden and "--help" not in p.opts
    ]


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help_and_every_switch_has_a_no_form(path, cmd):
    for p in _options(cmd):
        assert p.help, f"{' '.join(path)} {p.opts[0]} has no help"
        if p.is_flag:
            assert p.secondary_opts, f"{' '.join(path)} {p.opts[0]} is a switch without --no-"
        if not p.required and p.default is not None and not p.is_flag:
            assert p.show_default, f"{' '.join(path)} {p.opts[0]} hides its default"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_k_always_names_components_or_states(path, cmd):
    for p in _options(cmd):
        if "-k" in p.opts:
            assert any(w in p.help for w in ("components", "states")), (path, p.help)


def test_every_fit_and_select_command_reads_data_or_a_bundled_set():
    """DATA or --dataset, and --delimiter and --header/--no-header, on every command that
    fits a table of rows; --delimiter and --header wherever a text file's layout is read."""
    for path, cmd in COMMANDS:
        opts = {o for p in _options(cmd) for o in (*p.opts, *p.secondary_opts)}
        if path[0] == "select" or (
            path[0] == "fit" and path[1] not in ("vae", "flow", "diffusion")
        ):
            assert {"--dataset", "--delimiter"} <= opts, " ".join(path)
        if "--delimiter" in opts:
            assert {"--header", "--no-header"} <= opts, " ".join(path)


def test_score_refuses_k_and_names_samples(tmp_path):
    """score's VAE importance samples are --samples; -k (components/states elsewhere) is
    refused with the option to use, before the model file is read."""
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["score", "m.lf", "d.csv", "-k", "5"])
    assert res.exit_code == 2 and "--samples" in res.output, res.output


def test_the_commands_that_take_output_formats():
    """--json on every command here; --csv where the result is a table per component (or per
    candidate of a selection sweep)."""
    paths = {path for path, _ in COMMANDS}
    for new in [
        ("predict",),
        ("score",),
        ("show",),
        ("sample",),
        ("fit", "ssm"),
        ("fit", "hsmm"),
        ("fit", "arhmm"),
        ("select", "hmm"),
    ]:
        assert new in paths, new  # the walk reaches every command, those from other modules too
    for path, cmd in COMMANDS:
        opts = {o for p in _options(cmd) for o in p.opts}
        assert "--json" in opts, " ".join(path)
        table = (
            path
            in {
                ("fit", name)
                for name in ("gmm", "hmm", "hsmm", "arhmm", "bgmm", "dist", "mixture", "fa", "ppca")
            }
            or path[0] == "select"
        )
        assert ("--csv" in opts) == table, " ".join(path)


def test_a_warning_on_the_command_line_is_one_line_for_a_person(tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, rng.normal(size=(60, 2)), delimiter=",", header="a,b", comments="")
    res = CliRunner().invoke(
        app, ["fit", "gmm", str(data), "-k", "3", "--max-iter", "1", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "did not converge" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: GaussianMixture")
    assert ".py:" not in res.output  # no source file and line of latentfit's own code


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["fit", "gmm", "x.csv", "-k", "2", "--max-iter", "2"],
            [
                "warning: GaussianMixture: --reg-covar 1e-06 is 95.1 times the variance of "
                "column 1 of x.csv (1.05e-08)",
                "Rescale x.csv (e.g. standardise the columns",
                "Try a larger --max-iter or --tol",
            ],
        ),
        (
            ["fit", "flow", "z.csv", "--epochs", "1"],
            [
                "warning: z.csv holds only whole numbers, and column 0 only 3 distinct values",
                "If the data are levels, pass --dequantize (with --levels above 2)",
            ],
        ),
    ],
)
def test_a_warning_names_the_data_file_and_the_options_as_errors_do(
    tmp_path, monkeypatch, argv, said
):
    """Warnings printed the library's words as they are ("column 1 of X", "X holds only
    whole numbers", "pass dequantize=True (--dequantize) (with n_levels above 2)", "a larger
    max_iter or tol", "reg_covar=1e-06") where the errors of the same command name DATA and the options."""
    import numpy as np
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=200), rng.normal(size=200) * 1e-4]  # column 1: under reg_covar
    np.savetxt("x.csv", X, delimiter=",")
    np.savetxt("z.csv", rng.integers(0, 3, size=(100, 2)), delimiter=",", fmt="%d")
    res = CliRunner().invoke(app, [*argv, "--quiet", "--out", "m.lf"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for words in said:
        assert words in text, (words, text)
    assert not re.search(r"\bX\b|n_levels|max_iter|reg_covar|(?<!-)\btol\b|dequantize=", text), text


def test_fit_bgmm_shows_the_warnings_of_its_fit(tmp_path, monkeypatch):
    """fit bgmm records the fit's warnings to tell restarts that did not converge; the others
    (here: a column whose variance is below --reg-covar, which it names as its option) are
    shown as every command shows them, not dropped with the record."""
    import numpy as np
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=200), rng.normal(size=200) * 1e-4]  # column 1: under reg_covar
    np.savetxt("x.csv", X, delimiter=",")
    res = CliRunner().invoke(app, ["fit", "bgmm", "x.csv", "-k", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert (
        "warning: BayesianGaussianMixture: --reg-covar 1e-06 is 95.1 times the variance of "
        "column 1 of x.csv (1.05e-08)"
    ) in text, text
    assert "pass a smaller --reg-covar (below 1.05e-10)" in text, text  # an option it has
    res = CliRunner().invoke(
        app, ["fit", "bgmm", "x.csv", "-k", "3", "--quiet", "--reg-covar", "1e-12"]
    )
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    assert "did not converge" not in text  # the restarts' record, said as "NOT converged"


def test_header_is_sniffed_with_a_warning_or_set_by_the_option(tmp_path, monkeypatch):
    """A first line of column numbers (pandas' names for unnamed columns) is data by default,
    with a warning naming the line and --header; --header makes it the names, --no-header
    keeps it as data without the warning."""
    import json

    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    (tmp_path / "n.csv").write_text("0,1\n1.5,2.5\n3.5,4.5\n2,3\n")
    argv = ["fit", "gmm", "n.csv", "-k", "1", "--quiet", "--json"]
    runner = CliRunner()
    for extra, rows, names, warned in [
        ([], 4, ["x0", "x1"], True),
        (["--header"], 3, ["0", "1"], False),
        (["--no-header"], 4, ["x0", "x1"], False),
    ]:
        res = runner.invoke(app, [*argv, *extra])
        assert res.exit_code == 0, res.output
        warning = "warning: n.csv: line 1 ('0,1') is read as the first row of data"
        assert (warning in res.output) == warned, res.output
        if warned:
            assert "pass --header" in res.output
        got = json.loads(res.output[res.output.index("{") :])
        assert got["n_samples"] == rows and got["features"] == names


def _commands_and_groups():
    def walk(cmd, path):
        yield path, cmd
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


@pytest.mark.parametrize(
    "path,cmd",
    _commands_and_groups(),
    ids=[" ".join(p) or "latentfit" for p, _ in _commands_and_groups()],
)
def test_every_command_has_a_one_line_summary(path, cmd):
    """A group's listing prints the first paragraph of each command's help with its line
    breaks: a summary broken over lines made ``latentfit fit --help`` ragged (a line cut after
    "print start and"). The first paragraph is one line; the rest follows a blank line."""
    first = (cmd.help or "").strip().split("\n\n")[0]
    assert first, f"{' '.join(path)} has no help"
    assert "\n" not in first, f"{' '.join(path)}: the summary spans lines: {first!r}"
