"""Advice the library gives its Python callers (scikit-learn's StandardScaler, a float64 dtype,
keyword arguments such as ``alpha=``) reaches the command line's user in the command's words:
what to do to the data, or the command's option, never a class or argument the command line
has no way to name."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()

#: What only Python can name: keyword syntax (but the NAME=VALUE of --fixed and --init),
#: scikit-learn's scaler, a dtype argument.
_PYTHON_ONLY = re.compile(
    r"(?<![\w-])(?<!--fixed )(?<!--init )[a-z_]+=(?!\d)|StandardScaler|float64\b|torch\."
)


def _said(args, code: int = 0) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, res.output
    return " ".join(res.stderr.split())


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    tied = np.r_[rng.normal(0, 1, (30, 2)), np.full((5, 2), 9.0)]
    np.savetxt("tied.csv", tied, delimiter=",", header="a,b", comments="")
    return tmp_path


def test_a_collapsed_component_is_told_to_standardise_the_data_not_to_use_a_scaler(files):
    """Without --reg-covar a component on five equal rows has a singular covariance; the
    remedy said "scaling the data (e.g. StandardScaler)", a scikit-learn class."""
    text = _said(["fit", "gmm", "tied.csv", "-k", "2", "--reg-covar", "0", "--quiet"], code=2)
    assert "error: the covariance of component(s) [0] is not positive definite" in text, text
    assert (
        "Try increasing --reg-covar (it is added to every variance), fewer components, scaling "
        "the data (e.g. standardising each column), or removing constant/duplicated columns."
    ) in text, text
    assert not _PYTHON_ONLY.search(text), text


def test_the_remedies_of_a_failed_fit_name_no_dtype_the_command_line_cannot_set():
    """Every EM command computes in float64 already, and no command has a dtype option: the
    remedies' "float64" and "dtype='float64'" are left out, the rest kept."""
    from latentfit.cli.words import cli_words
    from latentfit.em.driver import _REMEDY
    from latentfit.em.hmm.emissions import HMM_REMEDY
    from latentfit.em.hmm.variational import VB_REMEDY

    assert cli_words(_REMEDY) == (
        "Try a larger regularisation (reg_covar), fewer components, or scaling the data."
    )
    assert cli_words("Try fewer components, scaling the data, or dtype='float64'.") == (
        "Try fewer components, or scaling the data."
    )
    for remedy in (HMM_REMEDY, VB_REMEDY):
        said = cli_words(remedy)
        assert said.endswith(
            "scaling the data (e.g. standardising each column), or removing "
            "constant/duplicated columns."
        ), said
        assert "float64" not in said and "StandardScaler" not in said, said


def test_a_level_below_one_half_is_answered_with_the_level_option_not_alpha(files):
    """fit dist --level 0.3 computes a 30% interval and warns that statsmodels' conf_int(0.3)
    means alpha: the command line has no alpha, so the warning names --level and the level
    that statsmodels' call means, 1 - 0.3."""
    np.savetxt("x.csv", np.random.default_rng(1).normal(size=30), header="x", comments="")
    text = _said(["fit", "dist", "x.csv", "--family", "normal", "--level", "0.3"])
    assert (
        "warning: --level 0.3 asks for a 30% interval. statsmodels' conf_int takes alpha, the "
        "level's complement: for its conf_int(0.3) pass --level 0.7"
    ) in text, text
    assert "alpha=" not in text and "level=" not in text, text
    assert "Python API" not in text, text


@pytest.mark.parametrize(
    ("args", "advice"),
    [
        (["fit", "gmm", "nan.csv", "-k", "2"], "or pass --missing marginalize"),
        (["fit", "fa", "nan.csv", "-k", "1"], "or pass --missing marginalize"),
        # no --missing here (fit arhmm was told to pass it all the same)
        (["fit", "arhmm", "nan.csv", "-k", "2"], "or fit them with --missing marginalize, "),
        (["fit", "flow", "nan.csv"], "or fit them with --missing marginalize, "),
        (["fit", "vae", "--dataset", "nan.csv"], "or fit them with --missing marginalize, "),
    ],
)
def test_a_nan_is_answered_with_the_missing_option_not_the_python_argument(files, args, advice):
    """The loader's advice for a NaN names the estimators that take missing='marginalize':
    a command that has --missing says it, the others name the commands that have it."""
    X = np.random.default_rng(0).normal(size=(20, 2))
    X[3, 1] = np.nan
    np.savetxt("nan.csv", X, delimiter=",", header="a,b", comments="")
    text = _said([*args, "--quiet"], code=2)
    assert (
        "error: nan.csv contains NaN at row 3, column 1 ('b'): every value must be finite; "
        f"drop or impute those rows, {advice}"
    ) in text, text
    if advice.startswith("or fit them"):
        assert text.endswith(
            "which latentfit fit gmm, fit hmm, fit hsmm, fit fa and fit ppca take"
        ), text
    else:
        assert text.endswith(advice), text
    assert not _PYTHON_ONLY.search(text) and "GaussianMixture" not in text, text


def test_the_data_readers_name_the_options_without_their_keyword_arguments(files):
    """The readers' messages name both the option and the keyword argument ("--columns
    (columns= in Python)", "delimiter=',' (--delimiter on the command line)"): on the command
    line only the option is said."""
    X = np.random.default_rng(0).normal(size=(20, 2))
    np.save("x.npy", X)
    text = _said(["fit", "gmm", "x.npy", "-k", "1", "--delimiter", ",", "--quiet"], code=2)
    assert "no header line: --delimiter ',' applies to delimited text files" in text, text
    text = _said(["fit", "gmm", "x.npy", "-k", "1", "--header", "--quiet"], code=2)
    assert "no header line: --header applies to delimited text files" in text, text
    with open("semi.csv", "w") as f:
        f.write("a;b\n1;x\n3;4\n5;6\n")
    text = _said(["fit", "gmm", "semi.csv", "-k", "1", "--delimiter", ",", "--quiet"], code=2)
    assert text.endswith(
        "encode it as a number or leave the column out with --columns; it holds ';': is the "
        "delimiter right (--delimiter)?"
    ), text
    with open("pd.csv", "w") as f:  # the column numbers pandas writes for unnamed columns
        f.write("0,1\n" + "".join(f"{u},{v}\n" for u, v in X))
    text = _said(["fit", "gmm", "pd.csv", "-k", "1", "--quiet"])
    assert (
        "if they name the columns, pass --header; --no-header keeps it as data without this warning"
    ) in text, text
    assert not _PYTHON_ONLY.search(text), text


def test_fit_dist_names_its_fixed_option_and_the_data_file(files):
    """fit_mle's refusals name its arguments fixed= and data; fit dist sets the first by
    --fixed and reads the second from DATA."""
    rng = np.random.default_rng(0)
    np.savetxt("n.csv", rng.poisson(3, (20, 1)), header="n", comments="", fmt="%d")
    text = _said(["fit", "dist", "n.csv", "--family", "binomial"], code=2)
    assert text == (
        "error: Binomial needs --fixed total_count=NUMBER (a known count is not estimated)"
    ), text
    X = np.c_[rng.normal(size=20), np.full(20, 7.0)]
    np.savetxt("const.csv", X, delimiter=",", header="a,b", comments="")
    text = _said(["fit", "dist", "const.csv", "--family", "mvn"], code=2)
    assert text.startswith("error: column 1 of const.csv is constant (7): its variance is 0"), text
    np.savetxt("dep.csv", np.c_[X[:, 0], 2 * X[:, 0]], delimiter=",", header="a,b", comments="")
    text = _said(["fit", "dist", "dep.csv", "--family", "mvn"], code=2)
    assert text.startswith("error: the columns of dep.csv are linearly dependent"), text
    tiny = np.c_[X[:, 0], 1e-160 * rng.normal(size=20)]  # a column whose squares underflow
    np.savetxt("tiny.csv", tiny, delimiter=",", header="a,b", comments="")
    text = _said(["fit", "dist", "tiny.csv", "--family", "mvn"], code=2)
    assert "column 1 of tiny.csv spans only" in text, text
    assert "underflow float64 arithmetic" in text, text
    assert not re.search(r"\bdata\b(?! \()", text.replace("rescale the data", "")), text


def test_a_start_by_hand_is_left_out(files):
    """The HMMs' k-means advice to set means_ by hand and leave 'm' out of init_params, which
    only Python can follow, is left out. (A refusal whose subject is a setting, "... must
    be", names the option: tests/cli/test_setting_words.py.)"""
    np.savetxt("one.csv", [[1.0, 2.0]], delimiter=",", header="a,b", comments="")
    text = _said(["fit", "hmm", "one.csv", "-k", "2", "--states", "s.csv", "--quiet"], code=2)
    assert text == (
        "error: one.csv has 1 rows, fewer than -k 2: k-means needs a row per state to start "
        "the means from; pass more rows or a smaller -k"
    ), text


def test_a_model_recommended_by_its_class_is_the_command_that_fits_it(files):
    """The library recommends models by class (PPCA, FactorAnalysis) and its select_model;
    on the command line they are the commands fit ppca, fit fa and select."""
    rng = np.random.default_rng(0)
    np.savetxt("square.csv", rng.normal(size=(3, 3)), delimiter=",")
    text = _said(["fit", "gmm", "square.csv", "-k", "1", "--quiet"])
    assert text.endswith(
        "Use --covariance diag or spherical, fewer columns, or a model of n < d (latentfit fit "
        "ppca, fit fa)."
    ), text
    X = np.c_[rng.normal(size=40), np.full(40, 7.0) + 1e-9 * rng.normal(size=40)]
    np.savetxt("flat.csv", X, delimiter=",")
    text = _said(["fit", "ppca", "flat.csv", "-k", "1", "--quiet"])
    assert text.endswith(
        "or use latentfit fit fa, which gives each column its own noise variance"
    ), text
    text = _said(["fit", "gmm", "tied.csv", "-k", "2", "--quiet"])
    assert "(mclust reports such models as NA; latentfit select does too)" in text, text
    assert not re.search(r"FactorAnalysis|PPCA,|select_model", text), text


@pytest.mark.parametrize(
    ("device", "refusal"),
    [
        ("", "is not a torch device; use 'cpu', 'cuda', 'cuda:0', 'mps', ..."),
        ("tpu", "is not a torch device; use 'cpu', 'cuda', 'cuda:0', 'mps', ..."),
        ("cuda:7", "was requested but no CUDA device is available; use 'cpu'"),
    ],
)
def test_a_device_refused_is_said_as_the_value_of_device_not_a_keyword(files, device, refusal):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal is of another kind")
    text = _said(["fit", "gmm", "tied.csv", "-k", "1", "--device", device, "--quiet"], code=2)
    assert text.startswith(f"error: --device: '{device}' {refusal}"), text
    assert "device=" not in text, text


@pytest.mark.parametrize("command", ["gmm", "bgmm", "fa", "ppca"])
def test_one_row_is_counted_in_rows_not_as_n_samples(files, command):
    np.savetxt("one.csv", [[1.0, 2.0]], delimiter=",", header="a,b", comments="")
    text = _said(["fit", command, "one.csv", "-k", "1", "--quiet"], code=2)
    assert "needs at least 2 samples (rows of one.csv), got 1: one row gives no " in text, text
    assert "n_samples" not in text, text


def test_the_saddle_warning_and_the_icl_refusal_name_options(files):
    # found by the command-line property test: fit fa/ppca's saddle warning said "Use
    # init='pca'" and select's ICL refusal "criterion='icl' needs ...", keyword arguments
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    np.savetxt("spread.csv", np.c_[a * 1e8, b, a + b], delimiter=",")
    said = _said(["fit", "ppca", "spread.csv", "-k", "2", "--quiet", "--init", "random",
                  "--seed", "0", "--out", "p.lf"])  # fmt: skip
    assert "saddle point" in said and "Use --init pca" in said
    assert not _PYTHON_ONLY.search(said), said
    # a start the command cannot give was named, "(noise_variance_init is a setting of the
    # Python API: this command has no option for it)"; it is named where it was given
    assert "noise_variance_init" not in said and "has no option" not in said, said
    said = _said(["select", "fa", "tied.csv", "-k", "1-2", "--criterion", "icl"], code=2)
    assert "--criterion icl needs a model of discrete latent classes" in said
    assert "criterion=" not in said


def test_scoring_short_sequences_is_not_told_to_lower_a_fitted_models_order(files):
    """score with a fitted AR-HMM on a one-row file said "... or lower order (order is a
    setting of the Python API: this command has no option for it)": a fitted model's order is
    fixed, so the remedy is the sequences alone."""
    rng = np.random.default_rng(0)
    np.savetxt("s.csv", rng.normal(size=(60, 2)).cumsum(0), delimiter=",", header="a,b",
               comments="")  # fmt: skip
    np.savetxt("one.csv", rng.normal(size=(1, 2)), delimiter=",", header="a,b", comments="")
    _said(["fit", "arhmm", "s.csv", "-k", "2", "--out", "ar.safetensors", "--quiet"])
    text = _said(["score", "ar.safetensors", "one.csv"], code=2)
    assert "an AutoregressiveHMM of order 1 needs at least 2 per sequence" in text, text
    assert text.endswith("Join or drop the short sequences"), text
    assert "order" not in text.split("sequences")[-1] and " has no option " not in text, text


def test_fit_bgmm_on_rows_in_a_subspace_names_the_options_it_has(files):
    """Two rows in two columns: the default prior covariance is singular. The remedy said
    "(with positive sample_weight)" and "pass covariance_prior", which the command cannot
    set, and added that it has no option for them."""
    np.savetxt("two.csv", [[0.99, 0.64], [4.15, -0.18]], delimiter=",", header="a,b",
               comments="")  # fmt: skip
    text = _said(["fit", "bgmm", "two.csv", "-k", "1", "--quiet"], code=2)
    assert "error: the rows of two.csv lie in a lower-dimensional subspace" in text, text
    assert "use --covariance diag, or drop the redundant columns" in text, text
    for python in ("sample_weight", "covariance_prior", " has no option "):
        assert python not in text, text


def test_fit_dist_names_the_cov_option_a_covariance_is_refused_by(files):
    """fit dist --family mvn --cov expected said "cov_type='expected' is not available"."""
    np.savetxt("mv.csv", [[0.73], [0.09]], delimiter=",", header="a", comments="")
    text = _said(["fit", "dist", "mv.csv", "--family", "mvn", "--cov", "expected"], code=2)
    assert "error: --cov expected is not available" in text, text
    assert not _PYTHON_ONLY.search(text), text


def test_select_names_neither_numpy_nor_a_setting_it_cannot_set(files):
    """select categorical on a sparse code said "(numpy.unique(column, return_inverse=True))
    or pass n_categories"; select gmm on two rows said "its likelihood is reg_covar's" and
    added that the command has no option for reg_covar."""
    np.savetxt("cat.csv", [[12000000], [1]], delimiter=",", header="a", comments="", fmt="%d")
    text = _said(["select", "categorical", "cat.csv", "-k", "1-2"], code=2)
    assert "Recode the column as 0..c-1 (each category as its index among the column's" in text
    assert "numpy" not in text and " has no option " not in text, text
    assert not _PYTHON_ONLY.search(text), text
    np.savetxt("g.csv", [[0.5], [1.5]], delimiter=",", header="a", comments="")
    text = _said(["select", "gmm", "g.csv", "-k", "1-2"], code=2)
    assert "so its likelihood is the variance floor's, not the data's" in text, text
    assert "reg_covar" not in text and " has no option " not in text, text


def test_the_spherical_prior_warning_names_the_covariance_option(files):
    # fit hmm --emission gmm --covariance spherical on one column (fewer than --n-mix 2)
    # warned "Pass covars_prior=-1.5 ... (covars_prior is a setting of the Python API: this
    # command has no option for it)"
    rng = np.random.default_rng(0)
    np.savetxt("one.csv", np.r_[rng.normal(0, 1, 50), rng.normal(8, 1, 50)], delimiter=",")
    said = _said(["fit", "hmm", "one.csv", "-k", "2", "--emission", "gmm", "--covariance",
                  "spherical", "--quiet", "--states", "s.csv"])  # fmt: skip
    assert "--covariance spherical with the 1 column(s) of one.csv < --n-mix 2" in said, said
    assert said.endswith("Use --covariance diag, whose default prior is flat (for one column "
                         "it is the same model).")  # fmt: skip
    assert "covars_prior" not in said and "has no option" not in said, said
    assert not _PYTHON_ONLY.search(said), said


@pytest.mark.parametrize(
    ("args", "remedy"),
    [
        (["fit", "hmm", "cat.csv", "-k", "2", "--emission", "categorical", "--quiet"], ""),
        (["fit", "hsmm", "cat.csv", "-k", "2", "--emission", "categorical", "--quiet"], ""),
        (
            ["fit", "dist", "cat.csv", "--family", "categorical"],
            " or pass --fixed num_categories=K",
        ),
    ],
)
def test_sparse_symbols_are_answered_with_a_recoding_not_numpy_or_a_keyword(files, args, remedy):
    """A symbol far beyond the rows: fit hmm/hsmm said "(numpy.unique(X, return_inverse=True))
    or pass n_features=K" and fit dist "... or pass fixed={'num_categories': K}" half
    translated (a property test of the command line found the first)."""
    np.savetxt("cat.csv", [[0], [1], [12000000], [1]], delimiter=",", header="a", comments="",
               fmt="%d")  # fmt: skip
    text = _said(args, code=2)
    assert "(each category as its index among the column's distinct values)" + remedy in text
    assert "numpy" not in text and "n_features" not in text and "{" not in text, text
    assert not _PYTHON_ONLY.search(text), text
