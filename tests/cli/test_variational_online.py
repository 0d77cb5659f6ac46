"""latentfit fit hmm --variational and --online (issue 16): what the command prints, writes and
saves equals the variational HMM fitted in memory, or the HMM fed by partial_fit in the same
chunks, with the same settings and seed; select hmm --model vhmm is select_model's sweep of
the variational HMMs with each fit's lower bound beside it."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app
from latentfit.cli.hmm import online_chunks
from latentfit.select import COLUMNS, select_model

from .test_sequences import _quiet, _run  # fit a model quietly; run a fit command, states kept

runner = CliRunner()
rng = np.random.default_rng(7)
_z = np.repeat(rng.integers(0, 2, 25), 8)  # (200,) sticky states
SERIES = rng.normal(0, 1, (len(_z), 2)) + 4.0 * _z[:, None]  # (t, 2)
SYMBOLS = np.where(_z == 1, rng.integers(2, 4, len(_z)), rng.integers(0, 3, len(_z)))
LENGTHS = [70, 90, 40]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vb")
    out = {"real": folder / "real.csv", "symbols": folder / "symbols.csv"}
    np.savetxt(out["real"], SERIES, delimiter=",", fmt="%.17g", header="a,b", comments="")
    np.savetxt(out["symbols"], SYMBOLS, fmt="%d", header="s", comments="")
    out["lengths"] = folder / "lengths.txt"
    out["lengths"].write_text("\n".join(map(str, LENGTHS)))
    return out


# ---------------------------------------------------------------------- --variational
VB_CASES = {
    "gaussian-full": ("gaussian", "full"),
    "gaussian-diag": ("gaussian", "diag"),
    "gaussian-tied": ("gaussian", "tied"),
    "gaussian-spherical": ("gaussian", "spherical"),
    "categorical": ("categorical", None),
}


def _vb_model(emission, covariance, seed=3, n_iter=40):
    if emission == "gaussian":
        model = latentfit.VariationalGaussianHMM(
            2, covariance_type=covariance, n_iter=n_iter, tol=1e-2, random_state=seed
        )
        rows = SERIES
    else:
        model = latentfit.VariationalCategoricalHMM(2, n_iter=n_iter, tol=1e-2, random_state=seed)
        rows = SYMBOLS[:, None].astype(np.int64)
    _quiet(lambda: model.fit(rows, LENGTHS))
    return model, rows


def _vb_args(files, emission, covariance, *extra):
    data = files["real" if emission == "gaussian" else "symbols"]
    args = ["fit", "hmm", data, "-k", "2", "--variational", "--emission", emission, "--lengths",
            files["lengths"], "--n-iter", "40", "--seed", "3", *extra]  # fmt: skip
    return args + (["--covariance", covariance] if covariance else [])


@pytest.mark.parametrize("case", VB_CASES)
def test_fit_hmm_variational_equals_the_estimator_in_memory(case, files, tmp_path):
    emission, covariance = VB_CASES[case]
    model, rows = _vb_model(emission, covariance)
    out = tmp_path / "vb.lf"
    res, states = _run([*_vb_args(files, emission, covariance, "--out", out), "--json"], tmp_path)
    got = json.loads(res.stdout)
    assert got["model"] == type(model).__name__ and got["fit"] == "variational"
    assert got["lower_bound"] == pytest.approx(model.lower_bound_, rel=1e-10)
    assert got["lower_bound"] < got["log_likelihood"]  # a bound on log p(X) below its plug-in
    assert got["n_iter"] == model.n_iter_ and got["converged"] == model.converged_
    assert got["log_likelihood"] == pytest.approx(model.score(rows, LENGTHS), rel=1e-10)
    assert got["bic"] == pytest.approx(model.bic(rows, LENGTHS), rel=1e-10)
    np.testing.assert_allclose(got["transmat"], model.transmat_, rtol=1e-10)
    for name, value in got["posterior"].items():
        want = getattr(model, f"{name}_posterior_")
        np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12, err_msg=name)
        prior = getattr(model, f"{name}_prior_")
        np.testing.assert_allclose(got["prior"][name], prior, rtol=1e-12, err_msg=name)
    names = {"gaussian": {"startprob", "transmat", "means", "beta", "dof", "scale"},
             "categorical": {"startprob", "transmat", "emissionprob"}}[emission]  # fmt: skip
    assert set(got["posterior"]) == names
    # the point estimates are the posterior means of the Dirichlet counts
    sp = np.asarray(got["posterior"]["startprob"])
    np.testing.assert_allclose(got["startprob"], sp / sp.sum(), rtol=1e-12)
    path = model.decode(rows, LENGTHS)[1]
    np.testing.assert_array_equal(np.loadtxt(states, skiprows=1), path)
    saved = latentfit.load(out)
    assert type(saved) is type(model)
    assert saved.lower_bound_ == got["lower_bound"]
    assert saved.score(rows, LENGTHS) == pytest.approx(got["log_likelihood"], rel=1e-12)
    np.testing.assert_array_equal(saved.transmat_posterior_, model.transmat_posterior_)


@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
def test_fit_hmm_variational_csv_and_text_carry_the_same_numbers(emission, files, tmp_path):
    covariance = "tied" if emission == "gaussian" else None  # one dof for every state
    args = _vb_args(files, emission, covariance)
    got = json.loads(_run([*args, "--json"], tmp_path, "--force")[0].stdout)
    res, _ = _run([*args, "--csv"], tmp_path, "--force")
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == 2
    post = got["posterior"]
    for i, row in enumerate(table):
        assert float(row["startprob_posterior"]) == post["startprob"][i]
        for j in range(2):
            assert float(row[f"transmat_posterior_{j}"]) == post["transmat"][i][j]
        if emission == "gaussian":
            assert float(row["beta_posterior"]) == post["beta"][i]
            assert float(row["dof_posterior"]) == post["dof"]  # tied: one ν
            assert float(row["mean_a"]) == got["means"][i][0]
        else:
            for s in range(4):
                assert float(row[f"emissionprob_posterior_{s}"]) == post["emissionprob"][i][s]
    text = _run(args, tmp_path, "--force")[0].output
    assert f"lower bound (ELBO): {got['lower_bound']:.6f} nats" in text
    assert f"VB-EM iterations: {got['n_iter']}" in text
    assert "posterior hyperparameters" in text
    assert f"{post['transmat'][1][1]:.6g}" in text


# ---------------------------------------------------------------------- --online
def test_online_chunks_cut_at_chunk_and_sequence_boundaries():
    got = list(online_chunks(200, LENGTHS, 40))
    assert got == [
        (0, 40, [40], True),
        (40, 80, [30, 10], False),  # the end of sequence 0, the start of sequence 1
        (80, 120, [40], False),
        (120, 160, [40], False),
        (160, 200, [40], True),  # sequence 2 starts with the chunk
    ]
    # every row once, the pieces in order add up to the sequences
    pieces = [p for _, _, ps, _ in got for p in ps]
    assert np.cumsum(pieces)[-1] == 200 and set(np.cumsum(LENGTHS)) <= set(np.cumsum(pieces))
    assert list(online_chunks(10, None, 100)) == [(0, 10, [10], True)]


@pytest.mark.parametrize("emission", ["gaussian", "gmm", "categorical", "poisson"])
def test_fit_hmm_online_equals_partial_fit_in_memory(emission, files, tmp_path):
    """The command's chunks of 40 rows against the estimator fed the same first chunk (which
    initialises it) and then the rest in one call: online EM's blocks add up whichever way the
    rows are cut, so the two agree to rounding."""
    cls = {"gaussian": latentfit.GaussianHMM, "gmm": latentfit.GMMHMM,
           "categorical": latentfit.CategoricalHMM, "poisson": latentfit.PoissonHMM}[emission]  # fmt: skip
    kw = {"covariance_type": "diag"} if emission in ("gaussian", "gmm") else {}
    if emission == "gmm":
        kw["n_mix"] = 2
    rows = SERIES if emission in ("gaussian", "gmm") else SYMBOLS[:, None].astype(np.int64)
    data = files["real" if emission in ("gaussian", "gmm") else "symbols"]
    model = cls(2, random_state=5, **kw)
    _quiet(lambda: model.partial_fit(rows[:40], [40]))
    _quiet(lambda: model.partial_fit(rows[40:], [30, 90, 40], new_sequence=False))
    assert model.n_updates_ > 0  # the schedule made M-steps: the test compares fits
    out = tmp_path / "on.lf"
    args = ["fit", "hmm", data, "-k", "2", "--online", "--chunk-rows", "40", "--emission",
            emission, "--lengths", files["lengths"], "--seed", "5", "--out", out]  # fmt: skip
    args += ["--covariance", "diag"] if "covariance_type" in kw else []
    res, states = _run(args, tmp_path, "--json")
    got = json.loads(res.stdout)
    assert got["fit"] == "online" and got["n_chunks"] == 5 and got["chunk_rows"] == 40
    assert got["n_steps"] == 200 and got["n_updates"] == model.n_updates_
    assert got["online_log_likelihood"] == pytest.approx(model.online_log_likelihood_, rel=1e-9)
    np.testing.assert_allclose(got["transmat"], model.transmat_, rtol=1e-8, atol=1e-12)
    key = {"gaussian": "means", "gmm": "means", "categorical": "emissionprob",
           "poisson": "lambdas"}[emission]  # fmt: skip
    np.testing.assert_allclose(got[key], getattr(model, key + "_"), rtol=1e-8, atol=1e-12)
    assert got["log_likelihood"] == pytest.approx(model.score(rows, LENGTHS), rel=1e-8)
    np.testing.assert_array_equal(np.loadtxt(states, skiprows=1), model.predict(rows, LENGTHS))
    saved = latentfit.load(out)
    np.testing.assert_array_equal(saved.transmat_, np.asarray(got["transmat"]))
    text = _run(args, tmp_path, "--force")[0].output
    assert "online EM: 200 steps read once in 5 chunk(s) of at most 40 rows" in text


def test_fit_hmm_online_in_one_chunk_is_one_partial_fit(files, tmp_path):
    model = latentfit.GaussianHMM(2, random_state=0)
    _quiet(lambda: model.partial_fit(SERIES))
    args = ["fit", "hmm", files["real"], "-k", "2", "--online", "--json"]  # default chunk
    got = json.loads(_run(args, tmp_path)[0].stdout)
    assert got["n_chunks"] == 1 and got["n_updates"] == model.n_updates_
    assert (got["burn_in"], got["mstep_every"], got["learning_decay"]) == (100, 50, 0.9)
    np.testing.assert_allclose(got["means"], model.means_, rtol=1e-12)


def test_fit_hmm_online_passes_its_step_settings_to_partial_fit(files, tmp_path):
    settings = {"burn_in": 20, "mstep_every": 7, "learning_decay": 0.75}
    model = latentfit.GaussianHMM(2, random_state=1)
    _quiet(lambda: model.partial_fit(SERIES[:64], **settings))
    _quiet(lambda: model.partial_fit(SERIES[64:], new_sequence=False, **settings))
    assert model.n_updates_ == 1 + (200 - 20) // 7  # M-steps at 20, 27, ..., 195
    args = ["fit", "hmm", files["real"], "-k", "2", "--online", "--chunk-rows", "64", "--seed",
            "1", "--burn-in", "20", "--mstep-every", "7", "--learning-decay", "0.75", "--json"]  # fmt: skip
    got = json.loads(_run(args, tmp_path)[0].stdout)
    assert got["n_updates"] == model.n_updates_ and got["learning_decay"] == 0.75
    np.testing.assert_allclose(got["means"], model.means_, rtol=1e-8)
    np.testing.assert_allclose(got["transmat"], model.transmat_, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------- select hmm --model vhmm
@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
def test_select_vhmm_is_select_model_with_the_lower_bound_beside(emission, files):
    cls = {"gaussian": latentfit.VariationalGaussianHMM,
           "categorical": latentfit.VariationalCategoricalHMM}[emission]  # fmt: skip
    X = SERIES if emission == "gaussian" else SYMBOLS[:, None].astype(float)
    kw = {"covariance_types": ["diag", "full"]} if emission == "gaussian" else {}
    if emission == "categorical":
        kw["n_features"] = 4
    want = select_model(
        X, LENGTHS, family=cls, n_components=[1, 2, 3], n_iter=30, tol=1e-2, n_init=1, **kw
    )
    args = ["select", "hmm", files["real" if emission == "gaussian" else "symbols"], "-k", "1-3",
            "--model", "vhmm", "--emission", emission, "--lengths", files["lengths"],
            "--n-iter", "30"]  # fmt: skip
    args += ["--covariance", "diag,full"] if emission == "gaussian" else []
    res = runner.invoke(app, [*map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [r["label"] for r in doc["rows"]] == [r["label"] for r in want.rows]
    for got, row, model in zip(doc["rows"], want.rows, want.models, strict=True):
        assert got["bic"] == pytest.approx(row["bic"], rel=1e-10)
        assert got["lower_bound"] == pytest.approx(model.lower_bound_, rel=1e-10)
        assert got["lower_bound"] < got["loglik"]
    assert doc["best"] == want.best_row_["label"]
    res = runner.invoke(app, [*map(str, args), "--csv"])
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(table[0]) == [*COLUMNS, "lower_bound"]
    assert [float(r["lower_bound"]) for r in table] == [r["lower_bound"] for r in doc["rows"]]
    text = runner.invoke(app, list(map(str, args))).stdout
    assert "variational lower bound (ELBO, nats" in text
    assert f"{doc['rows'][1]['lower_bound']:.2f}" in text


def test_select_hmm_of_other_models_has_no_lower_bound_column(files):
    args = ["select", "hmm", str(files["real"]), "-k", "1-2", "--covariance", "diag"]
    res = runner.invoke(app, [*args, "--csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].split(",") == list(COLUMNS)
    assert "lower_bound" not in json.loads(runner.invoke(app, [*args, "--json"]).stdout)["rows"][0]
    assert "ELBO" not in runner.invoke(app, args).stdout


def test_fit_hmm_online_stopped_by_ctrl_c_keeps_the_chunks_read(files, tmp_path, monkeypatch):
    """Ctrl-C during the second chunk (latentfit._interrupt): the command stops after it and
    reports the model of the 80 rows read, that of partial_fit fed those two chunks."""
    import signal

    from latentfit import _interrupt as interrupt

    model = latentfit.GaussianHMM(2, random_state=5, covariance_type="diag")
    _quiet(lambda: model.partial_fit(SERIES[:40], [40]))
    _quiet(lambda: model.partial_fit(SERIES[40:80], [30, 10], new_sequence=False))
    original, calls = latentfit.GaussianHMM.partial_fit, []

    def pressed(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(latentfit.GaussianHMM, "partial_fit", pressed)
    args = ["fit", "hmm", files["real"], "-k", "2", "--online", "--chunk-rows", "40", "--seed",
            "5", "--lengths", files["lengths"], "--covariance", "diag"]  # fmt: skip
    args = [str(a) for a in [*args, "--states", tmp_path / "states.csv", "--quiet", "--force"]]
    runs = []
    for extra in (["--json"], []):  # each a command of its own, as from a shell
        calls.clear()
        with interrupt.interrupt_handling():
            runs.append(runner.invoke(app, [*args, *extra]))
        assert runs[-1].exit_code == 0, runs[-1].output
        assert len(calls) == 2  # no chunk read after the one during which Ctrl-C came
    res, text = runs
    got = json.loads(res.stdout[res.stdout.index("{") :])
    assert got["n_chunks"] == 2 and got["stopped_after"] == 80 and got["stopped_by"] == "Ctrl-C"
    np.testing.assert_allclose(got["means"], model.means_, rtol=1e-12)
    assert "stopped by Ctrl-C after 80 of 200 steps: the model of those steps" in text.output
