"""The library's messages name its settings by their Python names (``reg_covar``,
``covariance_type='diag'``, ``AutoregressiveHMM(order=3)``); on the command line an error or
warning names the command's option for each (``--reg-covar``, ``--covariance diag``,
``--order 3``), and says of a setting that the command has no option for that it is set in
Python only."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()

#: Python names of settings that commands set by an option: none may reach a command's user.
_PYTHON_NAMES = re.compile(
    r"(?<![\w.\-])(reg_covar|max_iter|n_iter|tol|n_init|random_state|covariance_type|"
    r"warmup_epochs|batch_size|n_steps|lengths)\b|\b(order|epochs|schedule)="
)


def _said(args, code: int = 0) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, res.output
    return " ".join(res.output.split())


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    two = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(5, 1, (60, 2))]
    np.savetxt("two.csv", two, delimiter=",")
    np.savetxt("tied.csv", np.r_[rng.normal(0, 1, (30, 2)), np.full((5, 2), 9.0)], delimiter=",")
    np.savetxt("square.csv", rng.normal(size=(3, 3)), delimiter=",")
    np.savetxt("seq.csv", two[:, :1], delimiter=",")
    (tmp_path / "short.txt").write_text("2\n118\n")
    (tmp_path / "long.txt").write_text("60\n61\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (  # ConvergenceWarning: "last change above tol=0.001). Try a larger max_iter or tol"
            ["fit", "gmm", "two.csv", "-k", "2", "--max-iter", "1"],
            0,
            ["above --tol 0.001). Try a larger --max-iter or --tol,"],
        ),
        (  # DegenerateComponentWarning: "the reg_covar floor ... another random_state"
            ["fit", "gmm", "tied.csv", "-k", "2"],
            0,
            ["at the --reg-covar floor", "another --seed or more --n-init"],
        ),
        (  # fewer rows than columns: "Use covariance_type='diag' or 'spherical'"
            ["fit", "gmm", "square.csv", "-k", "1"],
            0,
            ["invertible only through --reg-covar (1e-06)", "Use --covariance diag or spherical,"],
        ),
        (  # "covariance_type must be one of ..."
            ["fit", "gmm", "two.csv", "-k", "2", "--covariance", "round"],
            2,
            ["error: --covariance must be one of 'full', 'tied', 'diag', 'spherical'; got 'round'"],
        ),
        (  # "an AutoregressiveHMM of order 3 needs at least 4 per sequence ... or lower order"
            ["fit", "arhmm", "seq.csv", "-k", "2", "--order", "3", "--lengths", "short.txt"],
            2,
            [
                "has 2 row(s); an AutoregressiveHMM of order 3 needs at least 4 per sequence",
                "or lower --order",
            ],
        ),
        (  # "lengths sum to 121 but X has 120 rows: lengths must give ..."
            ["fit", "hmm", "seq.csv", "-k", "2", "--lengths", "long.txt"],
            2,
            ["error: --lengths sum to 121 but seq.csv has 120 rows: --lengths must give"],
        ),
    ],
)
def test_a_message_names_the_option_that_sets_the_setting(files, args, code, said):
    text = _said([*args, "--quiet"], code)
    for words in said:
        assert words in text, (words, text)
    assert not _PYTHON_NAMES.search(text), text
    assert "Python API" not in text  # every setting named has an option here


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "gmm", "two.csv", "-k", "2"],
        ["fit", "bgmm", "two.csv", "-k", "2"],
        ["fit", "mixture", "bits.csv", "--family", "bernoulli", "-k", "2"],
        ["fit", "fa", "two.csv", "-k", "1"],
        ["fit", "ppca", "two.csv", "-k", "1"],
    ],
)
def test_a_start_the_command_does_not_know_is_refused_as_its_init_option(files, args):
    """init_params (the mixtures) and init (factor analysis) are set by --init: the refusal
    of an unknown start names it, and does not call it a Python-only setting."""
    rng = np.random.default_rng(2)
    np.savetxt("bits.csv", (rng.random((40, 3)) < 0.5).astype(int), delimiter=",", fmt="%d")
    text = _said([*args, "--init", "bogus", "--quiet"], code=2)
    assert re.search(r"error: --init must be (one of '|'pca' or 'random')", text), text
    assert "got 'bogus'" in text, text
    assert "Python API" not in text and "init_params" not in text, text


def test_a_floor_the_command_has_no_option_for_is_named_by_what_it_is(files):
    """fit hmm has no option for the floor of the variances (min_covar, covars_prior): the
    warning said "at the covars_prior/min_covar floor ... The fitted model lists them in
    degenerate_components_. (min_covar and covars_prior are settings of the Python API: this
    command has no option for them)", advice the command line cannot follow. It names the
    variance floor; the settings it has options for are options."""
    text = _said(["fit", "hmm", "tied.csv", "-k", "3", "--quiet"])
    assert "has its variance in feature" in text and "at the variance floor" in text, text
    assert "another --seed or more --n-init, or jitter/remove the tied values." in text, text
    for python in ("min_covar", "covars_prior", "degenerate_components_", " has no option "):
        assert python not in text, text
    assert not _PYTHON_NAMES.search(text), text


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
def test_a_collapsed_mixture_component_of_fit_hmm_gmm_is_said_in_the_commands_words(
    files, covariance
):
    """fit hmm --emission gmm said nothing of a mixture component on the five tied rows of
    tied.csv; its warning names the state, the component and the rows, the variance floor by
    what it is, and the remedies by the options (--n-mix, -k, --seed, --n-init)."""
    args = ["fit", "hmm", "tied.csv", "-k", "2", "--emission", "gmm", "--n-mix", "2"]
    text = _said([*args, "--covariance", covariance, "--quiet"])
    assert re.search(
        r"warning: GMMHMM: state \d, mixture component \d \(on 5 row\(s\): 30, 31, 32, 33, 34\)"
        r" has its variance( in feature \d)? at the variance floor",
        text,
    ), text
    remedy = (
        "Try fewer mixture components per state (--n-mix) or states (-k), another --seed or "
        "more --n-init, or jitter/remove the tied values."
    )
    assert remedy in text, text
    for python in ("min_covar", "n_mix", "n_components", "degenerate_components_", "Python API"):
        assert python not in text, text
    assert not _PYTHON_NAMES.search(text), text


def test_bgmm_names_its_options_and_its_python_only_settings(files):
    text = _said(["fit", "bgmm", "square.csv", "-k", "1", "--quiet"], code=2)
    # the command takes neither weights nor a prior covariance: its remedies are its options
    assert "is singular for --covariance full; use --covariance diag, or drop the" in text, text
    assert "covariance_prior" not in text and "sample_weight" not in text, text
    assert not _PYTHON_NAMES.search(text), text


def test_training_settings_are_the_training_options(files):
    """The trainer's words for fit vae (batch_size=, warmup_epochs= ... below epochs) and the
    DDPM's for fit diffusion (DDPM(n_steps=2, schedule='linear'), use n_steps=12)."""
    rng = np.random.default_rng(1)
    np.savetxt("bits.csv", (rng.random((64, 6)) < 0.5).astype(int), delimiter=",", fmt="%d")
    vae = ["fit", "vae", "--dataset", "bits.csv", "--hidden", "8", "--out", "v.lf", "--quiet"]
    text = _said([*vae, "--batch-size", "16", "--grad-accum", "32"], code=2)
    assert "error: --batch-size 16 cannot be cut into 1 processes × 32 accumulation steps; " in (
        text
    ), text
    assert "accumulation steps; raise --batch-size" in text, text
    text = _said([*vae, "--epochs", "3", "--warmup-epochs", "10", "--kl-schedule", "linear"])
    assert "KL warm-up over --warmup-epochs 10 epochs" in text, text
    assert "use --warmup-epochs well below --epochs (e.g. half of them)" in text, text
    assert not _PYTHON_NAMES.search(text), text
    text = _said(
        ["fit", "diffusion", "--dataset", "two.csv", "--steps", "2", "--epochs", "1"]
        + ["--hidden", "8", "--out", "d.lf", "--quiet"]
    )
    assert "warning: --steps 2 --schedule linear: step t=2 takes alpha_bar" in text, text
    assert "use --steps 12 or more (Ho et al. use 1000)" in text, text
    assert not _PYTHON_NAMES.search(text), text


def test_switches_and_names_that_are_also_words():
    """``name=True`` / ``name=False`` are the switch's two flags; ``order`` and ``epochs`` are
    settings only as ``name=value`` or after lower/raise/below/above; a quoted name is a
    file's field; outside a command nothing changes."""
    import click

    from latentfit.cli.words import setting_words

    params = {
        "right_censoring": click.Option(["--right-censoring/--no-right-censoring"]),
        "max_duration": click.Option(["--max-duration"]),
        "order": click.Option(["--order"]),
    }
    assert setting_words(
        "Try right_censoring=True, a larger max_duration, or right_censoring=False", params
    ) == ("Try --right-censoring, a larger --max-duration, or --no-right-censoring")
    assert setting_words("in the order the fit saw them; lower order", params) == (
        "in the order the fit saw them; lower --order"
    )
    assert setting_words("over 5 epochs; lower order", {}) == (
        "over 5 epochs; lower order (order is a setting of the Python API: this command has "
        "no option for it)"
    )
    # a file's field by name, and the name inside a longer one, are no settings
    said = "the field 'reg_covar' of model.reg_covar and of reg_covar_"
    assert setting_words(said, {"reg_covar": click.Option(["--reg-covar"])}) == said
    assert setting_words("a larger max_iter", None) == "a larger max_iter"


def test_a_failed_fit_of_select_is_said_in_the_words_of_its_errors(files):
    """select prints each failed fit's error in its table (and --json); it names DATA and -k
    as the error of fit fa would, not the library's X and n_components=2."""
    args = ["select", "fa", "square.csv", "-k", "1-3"]
    text = _said(args)
    for k in (2, 3):
        assert (
            f"fa K={k} failed: DataError: square.csv has 3 row(s) of 3 column(s): centred, they "
            f"span at most 2 dimension(s), no more than the -k {k} factors"
        ) in text, text
    assert not re.search(r"\bX\b|n_components", text), text
    import json

    rows = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["rows"]
    errors = [r["error"] or "" for r in rows]
    assert [e.startswith("DataError: square.csv has 3 row(s)") for e in errors] == [
        False,
        True,
        True,
    ], rows
