"""latentfit fit hsmm / fit arhmm (issue 16): what the commands print, write and save equals
the estimator fitted in memory with the same settings and seed; every bad option value is an
``error:`` line naming the option; the per-row scores of a saved HSMM add up as its prefixes'
likelihoods do."""

from __future__ import annotations

import json
import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app
from latentfit.errors import DataError

runner = CliRunner()
rng = np.random.default_rng(3)
# two regimes that alternate in runs of 4-9 steps: something for durations to find
_runs = rng.integers(4, 10, 16)
_states = np.repeat(np.arange(16) % 2, _runs)
SERIES = rng.normal(0, 1, (len(_states), 2)) + 4.0 * _states[:, None]  # (t, 2)
COUNTS = rng.poisson(np.where(_states[:, None] == 1, [6.0, 1.0], [1.0, 4.0]))
SYMBOLS = np.where(_states == 1, rng.integers(2, 4, len(_states)), rng.integers(0, 2, len(_states)))
T = len(_states)
LENGTHS = [T // 2, T - T // 2]


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq")
    out = {}
    for name, X in (("real", SERIES), ("counts", COUNTS), ("symbols", SYMBOLS[:, None])):
        header = "a,b" if X.shape[1] == 2 else "s"
        out[name] = folder / f"{name}.csv"
        np.savetxt(out[name], X, delimiter=",", fmt="%.17g", header=header, comments="")
    out["lengths"] = folder / "lengths.txt"
    out["lengths"].write_text("\n".join(map(str, LENGTHS)))
    return out


def _run(args, tmp_path, *extra):
    states = tmp_path / "states.csv"
    res = runner.invoke(app, [*map(str, args), "--states", str(states), "--quiet", *extra])
    assert res.exit_code == 0, res.output
    return res, states


HSMM_CASES = {
    # emission, duration option, the estimator's duration, data, right-censoring
    "gaussian-poisson": ("gaussian", "poisson", "poisson", "real", True),
    "gaussian-negbin": ("gaussian", "negbin", "negative_binomial", "real", False),
    "poisson-nonparametric": ("poisson", "nonparametric", "nonparametric", "counts", True),
    "categorical-poisson": ("categorical", "poisson", "poisson", "symbols", True),
}


@pytest.mark.parametrize("case", HSMM_CASES)
def test_fit_hsmm_equals_the_estimator_in_memory(case, files, tmp_path):
    emission, option, family, data, censored = HSMM_CASES[case]
    X = {"real": SERIES, "counts": COUNTS, "symbols": SYMBOLS[:, None]}[data]
    cls = {
        "gaussian": latentfit.GaussianHSMM,
        "poisson": latentfit.PoissonHSMM,
        "categorical": latentfit.CategoricalHSMM,
    }[emission]
    kw = {"covariance_type": "full"} if emission == "gaussian" else {}
    model = cls(
        2, max_duration=12, duration=family, right_censoring=censored, n_iter=15, random_state=4,
        **kw,
    )  # fmt: skip
    rows = X if emission == "gaussian" else X.astype(np.int64)
    _quiet(lambda: model.fit(rows, LENGTHS))
    out = tmp_path / "m.lf"
    args = ["fit", "hsmm", files[data], "-k", "2", "--lengths", files["lengths"], "--emission",
            emission, "--duration", option, "--max-duration", "12", "--n-iter", "15", "--seed",
            "4", "--out", out, "--json"]  # fmt: skip
    if emission == "gaussian":
        args += ["--covariance", "full"]
    if not censored:
        args.append("--no-right-censoring")
    res, states = _run(args, tmp_path)
    got = json.loads(res.stdout)
    assert got["model"] == cls.__name__ and got["duration"] == family
    assert got["right_censoring"] is censored and got["max_duration"] == 12
    assert got["log_likelihood"] == pytest.approx(model.score(rows, LENGTHS), rel=1e-10)
    assert got["bic"] == pytest.approx(model.bic(rows, LENGTHS), rel=1e-10)
    np.testing.assert_allclose(got["transmat"], model.transmat_, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got["duration_pmf"], model.duration_pmf_, rtol=1e-9, atol=1e-14)
    mean = (model.duration_pmf_ * np.arange(1, 13)).sum(1)
    np.testing.assert_allclose(got["mean_duration"], mean, rtol=1e-12)
    names = {"poisson": ["duration_lambdas_"], "negative_binomial": ["duration_r_", "duration_p_"]}
    assert set(got["duration_parameters"]) == {n.rstrip("_") for n in names.get(family, [])}
    for name in names.get(family, []):
        want = getattr(model, name)
        np.testing.assert_allclose(got["duration_parameters"][name.rstrip("_")], want, rtol=1e-10)
    emissions = {"gaussian": "means_", "poisson": "lambdas_", "categorical": "emissionprob_"}
    key = emissions[emission]
    np.testing.assert_allclose(got[key.rstrip("_")], getattr(model, key), rtol=1e-9, atol=1e-12)
    path = model.decode(rows, LENGTHS)[1]
    np.testing.assert_array_equal(np.loadtxt(states, skiprows=1), path)
    assert got["decoded_log_probability"] == pytest.approx(model.decode(rows, LENGTHS)[0])
    np.testing.assert_array_equal(got["state_counts"], np.bincount(path, minlength=2))
    saved = latentfit.load(out)
    assert saved.score(rows, LENGTHS) == pytest.approx(got["log_likelihood"], rel=1e-12)


def test_fit_hsmm_csv_and_text_carry_the_same_numbers(files, tmp_path):
    args = ["fit", "hsmm", files["real"], "-k", "2", "--max-duration", "10", "--duration",
            "nonparametric", "--n-iter", "5"]  # fmt: skip
    res, _ = _run([*args, "--json"], tmp_path, "--force")
    got = json.loads(res.stdout)
    res, _ = _run([*args, "--csv"], tmp_path, "--force")
    lines = res.stdout.splitlines()
    header = lines[0].split(",")
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert len(table) == 2
    col = {name: table[:, j] for j, name in enumerate(header)}
    np.testing.assert_array_equal(col["startprob"], got["startprob"])
    np.testing.assert_array_equal(col["mean_a"], np.asarray(got["means"])[:, 0])
    np.testing.assert_array_equal(col["mean_duration"], got["mean_duration"])
    pmf = np.column_stack([col[f"duration_prob_{d}"] for d in range(1, 11)])
    np.testing.assert_array_equal(pmf, got["duration_pmf"])
    res, _ = _run(args, tmp_path, "--force")
    assert f"log-likelihood: {got['log_likelihood']:.6f}" in res.output
    assert "durations (nonparametric, 1..10 steps" in res.output
    assert "duration probabilities:" in res.output
    assert "EM (segment forward-backward) iterations:" in res.output  # not "Baum-Welch"


@pytest.mark.parametrize("order", [1, 2])
def test_fit_arhmm_equals_the_estimator_in_memory(order, files, tmp_path):
    model = latentfit.AutoregressiveHMM(2, order=order, ridge=0.5, n_iter=20, random_state=2)
    _quiet(lambda: model.fit(SERIES, LENGTHS))
    out = tmp_path / "ar.lf"
    args = ["fit", "arhmm", files["real"], "-k", "2", "--order", order, "--ridge", "0.5",
            "--lengths", files["lengths"], "--n-iter", "20", "--seed", "2", "--out", out]  # fmt: skip
    res, states = _run([*args, "--json"], tmp_path)
    got = json.loads(res.stdout)
    assert got["model"] == "AutoregressiveHMM" and got["order"] == order
    assert got["log_likelihood"] == pytest.approx(model.score(SERIES, LENGTHS), rel=1e-10)
    assert got["aic"] == pytest.approx(model.aic(SERIES, LENGTHS), rel=1e-10)
    np.testing.assert_allclose(got["coefs"], model.coefs_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["intercepts"], model.intercepts_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["covariances"], model.covars_, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(np.loadtxt(states, skiprows=1), model.predict(SERIES, LENGTHS))
    saved = latentfit.load(out)
    assert list(saved.feature_names_in_) == ["a", "b"]  # the file's header, as fit hmm records
    # the CSV row of a state: its intercepts, every coefficient by lag, output and input
    res, _ = _run([*args, "--csv"], tmp_path, "--force")
    lines = res.stdout.splitlines()
    row = dict(zip(lines[0].split(","), map(float, lines[2].split(",")), strict=True))  # state 1
    assert row["state"] == 1 and row["intercept_b"] == model.intercepts_[1, 1]
    assert row[f"coef_{order}_a_b"] == model.coefs_[1, order - 1, 0, 1]
    assert row["cov_a_b"] == model.covars_[1, 0, 1]
    res, _ = _run(args, tmp_path, "--force")
    assert f"[1] lag {order}" in res.output and "noise covariances (full)" in res.output


def test_fit_hsmm_and_arhmm_take_a_bundled_data_set_and_plot(tmp_path):
    for command in (["hsmm", "--max-duration", "6"], ["arhmm"]):
        plot = tmp_path / f"{command[0]}.png"
        args = ["fit", *command, "--dataset", "faithful", "-k", "2", "--n-iter", "3"]
        _, states = _run([*args, "--plot", plot], tmp_path, "--force")
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(np.loadtxt(states, skiprows=1)) == 272  # one state per row


BAD = [
    (["hsmm", "-k", "1"], "-k 1"),
    (["hsmm", "-k", "2", "--duration", "geometric"], "--duration"),
    (["hsmm", "-k", "2", "--emission", "gmm"], "--emission"),
    (["hsmm", "-k", "2", "--max-duration", "0"], "--max-duration"),
    (["hsmm", "-k", "2", "--algorithm", "best"], "--algorithm"),
    (["hsmm", "-k", "2", "--missing", "drop"], "--missing"),
    (["hsmm", "-k", "2", "--emission", "poisson", "--missing", "marginalize"], "--missing"),
    (["hsmm", "-k", "2", "--covariance", "round"], "--covariance"),
    (["hsmm", "-k", "2", "--max-duration", "100000000"], "give at most"),
    (["hsmm", "-k", "2", "--tol", "nan"], "tol"),
    (["hsmm", "-k", "2", "--device", "tpu"], "--device"),
    (["hsmm", "-k", "2", "--emission", "categorical"], "one column of symbols"),
    (["hsmm", "-k", "2", "--json", "--csv"], "--json and --csv"),
    (["arhmm", "-k", "2", "--order", "0"], "--order"),
    (["arhmm", "-k", "2", "--ridge", "-1"], "--ridge"),
    (["arhmm", "-k", "2", "--ridge", "nan"], "--ridge"),
    (["arhmm", "-k", "2", "--order", "200"], "order"),
    (["arhmm", "-k", "0"], "-k"),
    (["arhmm", "-k", "2", "--n-init", "0"], "--n-init"),
    (["arhmm", "-k", "2", "--columns", "zz"], "zz"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_option_value_is_an_error_naming_it(argv, needle, files, tmp_path):
    states = tmp_path / "s.csv"
    res = runner.invoke(app, ["fit", argv[0], str(files["real"]), *argv[1:], "--quiet",
                              "--states", str(states), "--n-iter", "2"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and needle in res.output, res.output
    assert not states.exists()


def test_the_states_of_a_short_sequence_are_refused_by_name(files, tmp_path):
    """An AR-HMM needs more rows than its order in every sequence; the lengths file says
    which one is too short."""
    lengths = tmp_path / "short.txt"
    lengths.write_text(f"1\n{T - 1}\n")
    res = runner.invoke(app, ["fit", "arhmm", str(files["real"]), "-k", "2", "--lengths",
                              str(lengths), "--states", str(tmp_path / "s.csv")])  # fmt: skip
    assert res.exit_code == 2 and "sequence 0 has 1 row(s)" in res.output, res.output


def test_the_default_longest_duration_is_the_longest_sequence_when_shorter(tmp_path):
    data, lengths = tmp_path / "short.csv", tmp_path / "len.txt"
    np.savetxt(data, SERIES[:24], delimiter=",", fmt="%.17g")
    lengths.write_text("12\n12\n")
    args = ["fit", "hsmm", data, "-k", "2", "--lengths", lengths, "--n-iter", "3", "--json"]
    got = json.loads(_run(args, tmp_path)[0].stdout)
    model = latentfit.GaussianHSMM(2, max_duration=12, n_iter=3, random_state=0)
    _quiet(lambda: model.fit(SERIES[:24], [12, 12]))
    assert got["max_duration"] == 12
    assert got["log_likelihood"] == pytest.approx(model.score(SERIES[:24], [12, 12]), rel=1e-10)
    res = runner.invoke(app, [*map(str, args[:-1]), "--max-duration", "13"])
    assert res.exit_code == 2 and "--max-duration 13 is longer than the longest" in res.output


@pytest.mark.parametrize("censored", [True, False])
def test_hsmm_row_scores_are_differences_of_prefix_likelihoods(censored):
    """log p(x_t | x_1..x_{t-1}) of a saved HSMM's rows: with right-censoring the likelihood of
    every prefix is the model's score of that prefix alone, so the rows up to t sum to it;
    without, the rows of each sequence still sum to its score."""
    from latentfit.cli.models import hmm_row_scores

    model = latentfit.GaussianHSMM(2, max_duration=9, right_censoring=censored, random_state=0)
    _quiet(lambda: model.fit(SERIES, LENGTHS))
    rows, seqs = hmm_row_scores(model, SERIES, LENGTHS)
    starts = np.cumsum([0, *LENGTHS])
    for i, (a, b) in enumerate(pairwise(starts)):
        assert seqs[i] == pytest.approx(model.score(SERIES[a:b]), rel=1e-10)
        assert rows[a:b].sum() == pytest.approx(seqs[i], rel=1e-10)
        if censored:
            for t in (1, 2, 7, b - a - 1):
                want = model.score(SERIES[a : a + t])
                assert rows[a : a + t].sum() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("name", ["GaussianHMM", "GaussianHSMM", "LinearGaussianSSM"])
def test_a_saved_model_that_reads_missing_values_scores_and_predicts_rows_with_nan(name, tmp_path):
    """A state-space model, and a Gaussian HMM or HSMM fitted with missing="marginalize",
    score and label rows with NaN cells from a file as they do in memory."""
    X = SERIES.copy()
    X[3, 0] = np.nan
    X[40] = np.nan
    model = {
        "GaussianHMM": lambda: latentfit.GaussianHMM(2, missing="marginalize", random_state=0),
        "GaussianHSMM": lambda: latentfit.GaussianHSMM(
            2, max_duration=9, missing="marginalize", random_state=0
        ),
        "LinearGaussianSSM": lambda: latentfit.LinearGaussianSSM(1, random_state=0),
    }[name]()
    _quiet(lambda: model.fit(X, LENGTHS))
    path, data, lengths = tmp_path / "m.lf", tmp_path / "x.csv", tmp_path / "len.txt"
    model.save(path)
    np.savetxt(data, X, delimiter=",", fmt="%.17g")
    lengths.write_text(" ".join(map(str, LENGTHS)))
    res = runner.invoke(app, ["score", str(path), str(data), "--lengths", str(lengths), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["total"] == pytest.approx(model.score(X, LENGTHS), rel=1e-10)
    res = runner.invoke(app, ["predict", str(path), str(data), "--lengths", str(lengths), "--json"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(json.loads(res.stdout)["values"], model.predict(X, LENGTHS))


def test_fit_hmm_plot_draws_at_most_twelve_columns(tmp_path, monkeypatch):
    # found by a helper's hunt: 300 columns drew a 944 x 66,186 pixel image in 53 s
    monkeypatch.chdir(tmp_path)  # the default --states file is written beside the command
    data = tmp_path / "w.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(40, 20)), delimiter=",")
    plot = tmp_path / "w.png"
    res = runner.invoke(
        app, ["fit", "hmm", str(data), "-k", "2", "--n-iter", "2", "--plot", str(plot), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert "--plot draws the first 12 of the 20 columns" in res.output and plot.exists()


def test_a_symbol_far_beyond_the_rows_is_named_as_a_symbol_count(tmp_path):
    # the error said "inferring the 1000000001 column(s) of cat.csv": the command line's
    # words for n_features, which here counts symbols, not columns
    data = tmp_path / "cat.csv"
    data.write_text("0\n1\n1000000000\n")
    res = runner.invoke(app, ["fit", "hmm", str(data), "--emission", "categorical", "-k", "2"])
    assert res.exit_code == 2
    assert "inferring 1,000,000,001 symbols" in res.output and "column(s)" not in res.output


@pytest.mark.parametrize("name", ["CategoricalHMM", "CategoricalHSMM", "GaussianHMM"])
def test_score_of_a_row_no_state_can_emit(name, tmp_path, monkeypatch):
    """A symbol every state gives probability 0 scores -inf (null in JSON), as the model's
    score gives it, where the HSMM's refused it; a Gaussian row whose density underflowed
    scored -inf, where the model's score refuses it by name."""
    monkeypatch.chdir(tmp_path)
    if name == "GaussianHMM":
        model = _quiet(lambda: latentfit.GaussianHMM(2, n_iter=3, random_state=0).fit(SERIES))
        X = SERIES[:6].copy()
        X[4] = 1e200
    else:
        fit_on = np.array([[0], [1], [1], [0]] * 5)
        model = getattr(latentfit, name)(2, n_features=3, n_iter=3, random_state=0)
        _quiet(lambda: model.fit(fit_on))
        model.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])  # symbol 2: never
        X = np.array([[0], [1], [1], [0], [2], [1]])
    model.save("m.lf")
    np.savetxt("x.csv", X, delimiter=",")
    Path("lengths.txt").write_text("3\n3\n")
    result = runner.invoke(app, ["score", "m.lf", "x.csv", "--lengths", "lengths.txt", "--json"])
    if name == "GaussianHMM":
        with pytest.raises(DataError, match="underflows"):
            model.score(X, [3, 3])
        assert result.exit_code == 2
        assert "error: row 4 of x.csv (step 1 of sequence 1)" in result.output
        assert "underflows" in result.output
        return
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert model.score(X, [3, 3]) == -np.inf
    assert out["total"] is None and out["sequence_log_likelihoods"][1] is None
    assert out["sequence_log_likelihoods"][0] == pytest.approx(model.score(X[:3]), rel=1e-10)
    assert out["per_row"][4] is None
