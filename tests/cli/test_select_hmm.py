"""`latentfit select hmm` and `--json`/`--csv` on every select command: the numbers printed
are select_model's, parsed back and compared."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.em.ssm import LinearGaussianSSM
from latentfit.select import COLUMNS, select_model

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Three sticky 2-D Gaussian states over five sequences: (csv path, lengths path, X, L)."""
    rng = np.random.default_rng(3)
    lengths = [60, 45, 70, 50, 55]
    parts = []
    for n in lengths:
        z = np.repeat(rng.integers(0, 3, n // 5 + 1), 5)[:n]
        parts.append(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])[z] + rng.normal(size=(n, 2)))
    X = np.vstack(parts)
    folder = tmp_path_factory.mktemp("series")
    path, lpath = folder / "series.csv", folder / "lengths.txt"
    np.savetxt(path, X, delimiter=",", header="x,y", comments="")
    lpath.write_text("\n".join(map(str, lengths)) + "\n")
    return path, lpath, X, lengths


def python_result(X, lengths, **kw):
    kw.setdefault("n_iter", 100)
    kw.setdefault("tol", 1e-2)
    return select_model(X, lengths, n_components=[1, 2, 3], **kw)


def assert_same_rows(doc_rows, result):
    assert [r["label"] for r in doc_rows] == [r["label"] for r in result.rows]
    for got, want in zip(doc_rows, result.rows, strict=True):
        assert got["n_parameters"] == want["n_parameters"]
        for c in ("loglik", "bic", "aic", "icl", "cv_loglik"):
            if want[c] is None or not np.isfinite(want[c]):
                assert got[c] is None
            else:
                assert got[c] == pytest.approx(want[c], rel=1e-10), c


def test_the_console_script_prints_json_equal_to_select_model(series):
    path, lpath, X, lengths = series
    script = Path(sys.executable).with_name("latentfit")
    assert script.exists(), f"the console script is not installed beside {sys.executable}"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    args = ["select", "hmm", str(path), "-k", "1-3", "--lengths", str(lpath)]
    args += ["--covariance", "diag,full"]
    res = subprocess.run(
        [str(script), *args, "--json"], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    want = python_result(X, lengths, family="gaussian_hmm", covariance_types=["diag", "full"])
    assert_same_rows(doc["rows"], want)
    assert doc["best"] == want.best_row_["label"] and doc["n_sequences"] == len(lengths)
    assert doc["best"].startswith("GaussianHMM") and "K=3" in doc["best"]
    # the text shows the same numbers, rounded
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    for r in want.rows:
        assert f"{r['bic']:.2f}" in text.stdout and r["label"] in text.stdout
    assert f"best by BIC: {want.best_row_['label']}" in text.stdout


def test_csv_and_heldout_on_one_long_series(series):
    path, _, X, _ = series
    args = ["select", "hmm", str(path), "-k", "1-3", "--covariance", "diag"]
    res = runner.invoke(app, [*args, "--cv", "3", "--criterion", "heldout", "--csv"])
    assert res.exit_code == 0, res.output
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(table[0]) == list(COLUMNS)
    want = python_result(
        X, None, family="gaussian_hmm", covariance_types=["diag"], cv=3, criterion="heldout"
    )
    rows = [
        {**r, **{c: float(r[c]) if r[c] else None for c in ("loglik", "bic", "aic", "icl")}}
        for r in table
    ]
    for r in rows:
        r["cv_loglik"] = float(r["cv_loglik"])
        r["n_parameters"] = int(r["n_parameters"])
    assert_same_rows(rows, want)
    assert [r["best"] == "True" for r in table] == [
        i == want.best_index() for i in range(len(want.rows))
    ]
    assert want.cv_scheme.startswith("3 contiguous blocks")


@pytest.mark.parametrize(
    ("emission", "family"),
    [
        ("poisson", "poisson_hmm"),
        ("categorical", "categorical_hmm"),
        ("multinomial", "multinomial_hmm"),
    ],
)
def test_discrete_emissions(tmp_path, emission, family):
    rng = np.random.default_rng(5)
    z = np.repeat(rng.integers(0, 2, 40), 8)
    if emission == "poisson":
        X = rng.poisson(np.array([[1.0, 6.0], [6.0, 1.0]])[z]).astype(float)
    elif emission == "multinomial":
        X = np.stack([rng.multinomial(7, [[0.2, 0.8], [0.7, 0.3]][s]) for s in z])
    else:
        X = np.where(z == 0, rng.integers(0, 2, len(z)), rng.integers(2, 4, len(z)))[:, None]
    path = tmp_path / "d.npy"
    np.save(path, X.astype(float))
    res = runner.invoke(
        app, ["select", "hmm", str(path), "-k", "1-3", "--emission", emission, "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert_same_rows(doc["rows"], python_result(X.astype(float), None, family=family))
    assert doc["rows"][0]["label"].endswith("HMM K=1")


def test_json_and_csv_on_the_mixture_commands(faithful_csv):
    path, X = faithful_csv
    args = ["select", "gmm", str(path), "-k", "1-3", "--covariance", "full,diag"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    want = select_model(
        X, n_components=[1, 2, 3], covariance_types=["full", "diag"], max_iter=200, n_init=1,
        missing="error",
    )  # fmt: skip
    assert_same_rows(doc["rows"], want)
    assert doc["best"] == "full K=2" and doc["n_sequences"] is None
    res = runner.invoke(app, [*args, "--csv"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 1 + len(want.rows)
    assert float(lines[1].split(",")[5]) == want.rows[0]["bic"]


def test_plot_message_leaves_stdout_one_json_document(series, tmp_path):
    path, lpath, _, _ = series
    fig = tmp_path / "bic.png"
    res = runner.invoke(
        app,
        ["select", "hmm", str(path), "-k", "1-2", "--covariance", "diag", "--lengths",
         str(lpath), "--plot", str(fig), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    json.loads(res.stdout)
    assert "figure written" in res.stderr and fig.stat().st_size > 1000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--json", "--csv"], "choose one"),
        (["--criterion", "heldout"], "needs cv"),
        (["--criterion", "mdl"], "criterion must be"),
        (["--emission", "laplace"], "takes --emission"),
        (["--model", "ssm", "--emission", "poisson"], "--model ssm takes --emission gaussian"),
        (["--model", "hmmm"], "--model must be one of"),
        (["--cv", "200"], "use fewer folds"),
        (["--covariance", ","], "names no covariance type"),
    ],
)
def test_bad_options_are_clear_errors(series, extra, message):
    path, _, _, _ = series
    res = runner.invoke(app, ["select", "hmm", str(path), "-k", "1", *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_bad_lengths_and_symbols_are_clear_errors(series, tmp_path):
    path, _, X, _ = series
    bad = tmp_path / "bad.txt"
    bad.write_text("100 100\n")
    res = runner.invoke(app, ["select", "hmm", str(path), "-k", "1", "--lengths", str(bad)])
    assert res.exit_code == 2 and f"but {path} has {len(X)} rows" in res.output
    res = runner.invoke(app, ["select", "hmm", str(path), "-k", "1", "--emission", "categorical"])
    assert res.exit_code == 2 and "one column of symbols" in res.output
    frac = tmp_path / "frac.csv"
    np.savetxt(frac, [[0.0], [1.5], [2.0]])
    res = runner.invoke(app, ["select", "hmm", str(frac), "-k", "1", "--emission", "categorical"])
    assert res.exit_code == 2 and "row 1 holds 1.5" in res.output


def test_a_sequence_model_kind_plugs_into_the_command(series, monkeypatch):
    """`--model hsmm` finds latentfit.GaussianHSMM by name and gives it only the settings its
    constructor takes; here a stand-in with fit/score/n_parameters_ (the real class, once it
    is there, is used the same way)."""
    from scipy.stats import norm
    from sklearn.base import BaseEstimator

    import latentfit

    class StandIn(BaseEstimator):
        def __init__(self, n_components=1, max_iter=10):
            self.n_components = n_components
            self.max_iter = max_iter

        def fit(self, X, lengths=None):
            X = np.asarray(X)
            self.mean_, self.sd_ = X.mean(0), X.std(0)
            self.n_parameters_ = 2 * X.shape[1] + self.n_components
            return self

        def score(self, X, lengths=None):
            return float(norm.logpdf(np.asarray(X), self.mean_, self.sd_).sum())

    monkeypatch.setattr(latentfit, "GaussianHSMM", StandIn, raising=False)
    path, lpath, X, _ = series
    res = runner.invoke(
        app,
        ["select", "hmm", str(path), "-k", "2-3", "--model", "hsmm", "--lengths", str(lpath),
         "--n-iter", "7", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    ll = norm.logpdf(X, X.mean(0), X.std(0)).sum()
    assert [r["label"] for r in doc["rows"]] == ["StandIn K=2", "StandIn K=3"]
    for r, k in zip(doc["rows"], [2, 3], strict=True):
        assert r["bic"] == pytest.approx(-2 * ll + (4 + k) * np.log(len(X)), rel=1e-12)
    monkeypatch.setattr(latentfit, "GaussianHSMM", None)  # as in an installation without it
    res = runner.invoke(app, ["select", "hmm", str(path), "-k", "2", "--model", "hsmm"])
    assert res.exit_code == 2 and "needs latentfit.GaussianHSMM" in res.output


@pytest.mark.parametrize(
    ("content", "lengths_content"),
    [
        (b"", None),
        (bytes(range(128, 256)), None),
        (b"a,b\n1,x\n2,y\n", None),
        (b"a,b\n1,2\n3\n", None),
        (b"a,b\n", None),
        (None, None),  # no such file
        (b"a\n1\n2\n3\n", b"two\n"),
        (b"a\n1\n2\n3\n", bytes(range(128, 256))),
        (b"a\n1\n2\n3\n", b"1 -1 3\n"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, lengths_content):
    data = tmp_path / "d.csv"
    if content is not None:
        data.write_bytes(content)
    argv = ["select", "hmm", str(data), "-k", "1"]
    if lengths_content is not None:
        (tmp_path / "l.txt").write_bytes(lengths_content)
        argv += ["--lengths", str(tmp_path / "l.txt")]
    res = runner.invoke(app, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    assert ("l.txt" if lengths_content and b"two" in lengths_content else "") in res.output


@pytest.mark.parametrize(
    ("extra", "family", "kw"),
    [
        (["--model", "arhmm", "--order", "2"], "AutoregressiveHMM", {"order": 2}),
        (
            ["--model", "hsmm", "--duration", "negbin", "--max-duration", "8",
             "--covariance", "diag"],
            "GaussianHSMM",
            {"duration": "negative_binomial", "max_duration": 8, "covariance_types": ["diag"]},
        ),
    ],
)  # fmt: skip
def test_select_hmm_sweeps_the_arhmm_and_hsmm_with_their_own_settings(series, extra, family, kw):
    import latentfit

    path, lpath, X, lengths = series
    args = ["select", "hmm", str(path), "-k", "2-3", "--lengths", str(lpath), "--n-iter", "5"]
    res = runner.invoke(app, [*args, *extra, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    want = select_model(
        X, lengths, family=getattr(latentfit, family), n_components=[2, 3], n_iter=5, tol=1e-2,
        n_init=1, **kw,
    )  # fmt: skip
    assert_same_rows(doc["rows"], want)
    assert all(r["label"].startswith(family) for r in doc["rows"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--order", "2"], "--order is a setting of --model arhmm"),
        (["--duration", "negbin"], "settings of --model hsmm"),
        (["--model", "arhmm", "--max-duration", "5"], "settings of --model hsmm"),
        (["--model", "hsmm", "--duration", "gamma"], "--duration must be one of"),
        (["--model", "hsmm", "--max-duration", "100000"], "--max-duration 100000 is longer"),
        (["--model", "arhmm", "--order", "0"], "--order"),
    ],
)
def test_the_model_settings_are_refused_for_other_models(series, extra, message):
    path, _, _, _ = series
    res = runner.invoke(app, ["select", "hmm", str(path), "-k", "2", *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("model", "covariance"), [("hmm", "round"), ("vhmm", "diag,round"), ("ssm", "spherical")]
)
def test_a_covariance_type_the_model_lacks_is_refused_by_name(series, model, covariance):
    """Not a sweep of the default covariance labelled with the unknown name (the sweep builds
    an estimator class with covariance_type only for the four known names)."""
    path, _, _, _ = series
    res = runner.invoke(
        app, ["select", "hmm", str(path), "-k", "1", "--model", model, "--covariance", covariance]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "--covariance" in res.output and repr(covariance.split(",")[-1]) in res.output


def test_model_ssm_takes_missing_values_as_fit_ssm_does(series, tmp_path, monkeypatch):
    """The state-space model marginalises a NaN (``fit ssm`` reads one); `select hmm --model
    ssm` used to refuse it and point at a --missing option this command does not have."""
    monkeypatch.chdir(tmp_path)
    _, lpath, X, lengths = series
    Xm = X.copy()
    Xm[[3, 70, 200], [0, 1, 0]] = np.nan
    path = tmp_path / "gaps.csv"
    np.savetxt(path, Xm, delimiter=",", header="x,y", comments="")
    args = ["select", "hmm", str(path), "--model", "ssm", "-k", "1-2", "--lengths", str(lpath)]
    res = runner.invoke(app, [*args, "--n-iter", "5", "--covariance", "diag", "--json"])
    assert res.exit_code == 0, res.output
    want = select_model(
        Xm, lengths, family=LinearGaussianSSM, n_components=[1, 2], covariance_types=["diag"],
        n_iter=5, tol=1e-2, n_init=1,
    )  # fmt: skip
    assert_same_rows(json.loads(res.stdout)["rows"], want)
    # the other models still refuse it, without naming an option that is not there
    res = runner.invoke(app, ["select", "hmm", str(path), "-k", "1"])
    assert res.exit_code == 2 and "NaN at row 3" in res.output
    assert "--missing" not in res.output and "--model ssm" in res.output


def test_model_ssm_on_too_few_rows_is_refused_not_ranked_best(tmp_path, monkeypatch):
    """A one-row file printed a K=1 state-space model as the best by BIC (-23.96, from a
    log-likelihood of +12 with 11 parameters on 2 values); it is refused, naming the file, the
    counts and -k."""
    monkeypatch.chdir(tmp_path)
    Path("one.csv").write_text("a,b\n0.3,1.2\n")
    res = runner.invoke(app, ["select", "hmm", "one.csv", "--model", "ssm", "-k", "1"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "error: one.csv has 1 row(s) of 2 column(s), 2 observed value(s)" in text
    assert "the 11 parameters LinearGaussianSSM with -k 1 estimates" in text
    assert "best by BIC" not in text


def test_select_fits_on_the_device_it_is_given(series, faithful_csv, device):
    # select had no --device, while the fit commands of the same models have one: a sweep
    # of K on a GPU was Python's alone. Given one, the numbers are select_model's on it.
    path, lpath, X, lengths = series
    args = ["select", "hmm", str(path), "--lengths", str(lpath), "-k", "1-2", "--covariance",
            "diag", "--json", "--device", str(device)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    want = select_model(
        X, lengths, family="gaussian_hmm", n_components=[1, 2], covariance_types=["diag"],
        n_iter=100, tol=1e-2, device=device,
    )  # fmt: skip
    assert_same_rows(json.loads(res.stdout)["rows"], want)
    path, X = faithful_csv
    args = ["select", "gmm", str(path), "-k", "1-2", "--covariance", "diag", "--json"]
    res = runner.invoke(app, [*args, "--device", str(device)])
    assert res.exit_code == 0, res.output
    want = select_model(
        X, n_components=[1, 2], covariance_types=["diag"], max_iter=200, n_init=1,
        missing="error", device=device,
    )  # fmt: skip
    assert_same_rows(json.loads(res.stdout)["rows"], want)


def test_a_semi_markov_sweep_starts_at_two_states(series, tmp_path):
    # Found by running select hmm --model hsmm with its default -k 1-6: every covariance
    # type's K = 1 was a failed row (a semi-Markov model has no 1-state form), four NA rows
    # and four error lines before the table that mattered.
    path, lpath = series[:2]
    args = ["select", "hmm", str(path), "--lengths", str(lpath), "--model", "hsmm",
            "--max-duration", "8", "--covariance", "diag", "--n-iter", "3", "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    assert [r["n_components"] for r in rows] == [2, 3, 4, 5, 6]
    assert all(r["error"] is None for r in rows)
    # a size below 2, named: refused before the data are read
    for k in ("1-3", "1,4"):
        res = runner.invoke(app, [*args, "-k", k])
        assert res.exit_code == 2 and f"-k {k}: a semi-Markov model needs at least 2" in res.output
    res = runner.invoke(app, ["select", "hmm", str(tmp_path / "none.csv"), "--model", "hsmm",
                              "-k", "1-3"])  # fmt: skip
    assert res.exit_code == 2 and "at least 2 states" in res.output
    # the other models keep K = 1 in their default range
    res = runner.invoke(app, [*args[:5], "--n-iter", "3", "--json", "--covariance", "diag"])
    assert [r["n_components"] for r in json.loads(res.stdout)["rows"]] == [1, 2, 3, 4, 5, 6]
