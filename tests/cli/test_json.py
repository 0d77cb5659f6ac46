"""``--json`` and ``--csv``: the printed numbers are the Python API's on the same data and seed.

The GMM and HMM fits go through the installed console script (a subprocess, as a user runs
it); the other commands through the typer application in this process, to keep the suite
short. Every JSON document is parsed back and compared with an independent fit.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app
from latentfit.datasets import load_faithful, load_geyser

runner = CliRunner()
SRC = Path(latentfit.__file__).resolve().parents[1]


def _script(*args: str) -> subprocess.CompletedProcess:
    """Run the installed ``latentfit`` console script on this checkout's sources, with as many
    threads as this process, so that its sums round as the in-process reference's do (a
    near-tie in the geyser's decoded path goes one way or the other with the thread count)."""
    script = Path(sys.executable).with_name("latentfit")
    assert script.exists(), f"the console script is not installed beside {sys.executable}"
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": threads}
    return subprocess.run(
        [str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def _json(res) -> dict:
    """The JSON document a run printed (CliRunner result or completed process)."""
    code = getattr(res, "exit_code", getattr(res, "returncode", None))
    text = res.stdout if hasattr(res, "stdout") else res.output
    assert code == 0, text + getattr(res, "stderr", "")
    return json.loads(text)


@pytest.fixture(scope="module")
def faithful(tmp_path_factory):
    path = tmp_path_factory.mktemp("json") / "faithful.csv"
    X = load_faithful().data.numpy()
    np.savetxt(path, X, delimiter=",", header="eruptions,waiting", comments="")
    return path, X


@pytest.fixture(scope="module")
def geyser(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hmm")
    X = np.asarray(load_geyser().data, dtype=np.float64)
    path = folder / "geyser.csv"
    np.savetxt(path, X, delimiter=",", header="waiting,duration", comments="")
    lengths = folder / "lengths.txt"
    lengths.write_text("100\n199\n")
    return path, X, lengths, [100, 199]


def test_fit_gmm_json_through_the_console_script(faithful, tmp_path):
    path, X = faithful
    out = tmp_path / "m.lf"
    got = _json(_script("fit", "gmm", path, "-k", "2", "--quiet", "--json", "--out", out))
    ref = latentfit.GaussianMixture(2, random_state=0).fit(X)
    assert got["features"] == ["eruptions", "waiting"]
    assert got["n_samples"] == 272 and got["n_features"] == 2 and got["converged"] is True
    for key in ("weights", "means", "covariances"):
        np.testing.assert_allclose(got[key], getattr(ref, f"{key}_"), rtol=1e-10)
    np.testing.assert_allclose(got["log_likelihood"], ref.score(X) * len(X), rtol=1e-12)
    np.testing.assert_allclose(got["bic"], ref.bic(X), rtol=1e-12)
    np.testing.assert_allclose(got["aic"], ref.aic(X), rtol=1e-12)
    assert got["model_file"] == str(out) and out.is_file()


def test_fit_gmm_csv_names_the_columns(faithful):
    path, X = faithful
    res = _script("fit", "gmm", path, "-k", "2", "--quiet", "--csv", "--covariance", "diag")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    ref = latentfit.GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    assert list(rows[0]) == [
        "component", "weight", "mean_eruptions", "mean_waiting", "var_eruptions", "var_waiting"
    ]  # fmt: skip
    for i, row in enumerate(rows):
        np.testing.assert_allclose(float(row["weight"]), ref.weights_[i], rtol=1e-10)
        np.testing.assert_allclose(
            [float(row["mean_eruptions"]), float(row["mean_waiting"])], ref.means_[i], rtol=1e-10
        )
        np.testing.assert_allclose(
            [float(row["var_eruptions"]), float(row["var_waiting"])],
            ref.covariances_[i],
            rtol=1e-10,
        )


def test_fit_gmm_text_prints_means_under_the_column_names(faithful):
    path, X = faithful
    res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    means = res.output.split("means:\n", 1)[1].splitlines()
    assert means[0].split() == ["component", "eruptions", "waiting"]
    ref = latentfit.GaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose([float(v) for v in means[1].split()[1:]], ref.means_[0], rtol=1e-5)


def test_fit_gmm_reg_covar_reaches_the_model(faithful):
    path, X = faithful
    got = _json(
        runner.invoke(
            app, ["fit", "gmm", str(path), "-k", "2", "--quiet", "--json", "--reg-covar", "0.5"]
        )
    )
    ref = latentfit.GaussianMixture(2, reg_covar=0.5, random_state=0).fit(X)
    np.testing.assert_allclose(got["covariances"], ref.covariances_, rtol=1e-10)
    plain = latentfit.GaussianMixture(2, random_state=0).fit(X)
    assert not np.allclose(got["covariances"], plain.covariances_, rtol=1e-3)


def test_json_and_csv_together_are_refused(faithful):
    path, _ = faithful
    res = runner.invoke(app, ["fit", "gmm", str(path), "-k", "2", "--json", "--csv"])
    assert res.exit_code == 2 and "--json and --csv" in res.output


def test_fit_hmm_json_through_the_console_script(geyser, tmp_path):
    path, X, lengths, seq = geyser
    states = tmp_path / "s.csv"
    got = _json(
        _script(
            "fit", "hmm", path, "-k", "2", "--lengths", lengths, "--states", states,
            "--quiet", "--json",
        )
    )  # fmt: skip
    ref = latentfit.GaussianHMM(2, n_iter=100, tol=1e-2, random_state=0).fit(X, seq)
    assert got["features"] == ["waiting", "duration"] and got["n_sequences"] == 2
    np.testing.assert_allclose(got["startprob"], ref.startprob_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["transmat"], ref.transmat_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["means"], ref.means_, rtol=1e-8)
    np.testing.assert_allclose(got["covariances"], ref._covars_, rtol=1e-8)
    np.testing.assert_allclose(got["log_likelihood"], ref.score(X, seq), rtol=1e-10)
    np.testing.assert_allclose(got["bic"], ref.bic(X, seq), rtol=1e-10)
    logprob, path_ = ref.decode(X, seq)
    np.testing.assert_allclose(got["decoded_log_probability"], logprob, rtol=1e-10)
    assert got["state_counts"] == np.bincount(path_, minlength=2).tolist()
    np.testing.assert_array_equal(np.loadtxt(states, skiprows=1, dtype=int), path_)


@pytest.mark.parametrize("emission", ["gmm", "poisson", "categorical", "multinomial"])
def test_fit_hmm_csv_for_other_emissions(emission, geyser, tmp_path):
    _, X, _, _ = geyser
    if emission in ("poisson", "multinomial"):
        X = np.round(X)
    elif emission == "categorical":
        X = (X[:, :1] > 70).astype(float)
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",", header=",".join(["a", "b"][: X.shape[1]]), comments="")
    res = runner.invoke(
        app,
        ["fit", "hmm", str(data), "-k", "2", "--emission", emission, "--quiet", "--csv",
         "--states", str(tmp_path / "s.csv")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    kw = dict(n_iter=100, tol=1e-2, random_state=0)
    if emission == "gmm":
        ref = latentfit.GMMHMM(2, n_mix=2, **kw).fit(X)
        assert len(rows) == 4  # one row per state and mixture component
        np.testing.assert_allclose(
            [[float(r["mean_a"]), float(r["mean_b"])] for r in rows],
            ref.means_.reshape(4, 2),
            rtol=1e-8,
        )
    elif emission == "poisson":
        ref = latentfit.PoissonHMM(2, **kw).fit(X)
        np.testing.assert_allclose(
            [[float(r["rate_a"]), float(r["rate_b"])] for r in rows], ref.lambdas_, rtol=1e-8
        )
    elif emission == "multinomial":  # the columns count the categories: their names
        ref = latentfit.MultinomialHMM(2, **kw).fit(X)
        np.testing.assert_allclose(
            [[float(r["prob_a"]), float(r["prob_b"])] for r in rows], ref.emissionprob_, rtol=1e-8
        )
    else:
        ref = latentfit.CategoricalHMM(2, **kw).fit(X.astype(np.int64))
        np.testing.assert_allclose(
            [[float(r["prob_0"]), float(r["prob_1"])] for r in rows], ref.emissionprob_, rtol=1e-8
        )
    np.testing.assert_allclose(
        [[float(r["transmat_0"]), float(r["transmat_1"])] for r in rows][:: len(rows) // 2],
        ref.transmat_,
        rtol=1e-8,
        atol=1e-12,
    )


def test_fit_hmm_missing_values_marginalised_like_the_python_api(geyser, tmp_path):
    _, X, _, _ = geyser
    X = X.copy()
    X[::7, 1] = np.nan
    data = tmp_path / "gaps.csv"
    np.savetxt(data, X, delimiter=",", header="waiting,duration", comments="")
    args = ["fit", "hmm", str(data), "-k", "2", "--quiet", "--states", str(tmp_path / "s.csv")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--missing marginalize" in res.output
    res = runner.invoke(app, [*args, "--missing", "marginalize", "--emission", "poisson"])
    assert res.exit_code == 2 and "--emission gaussian" in res.output
    got = _json(runner.invoke(app, [*args, "--missing", "marginalize", "--json", "--force"]))
    ref = latentfit.GaussianHMM(2, n_iter=100, tol=1e-2, random_state=0, missing="marginalize").fit(
        X
    )
    np.testing.assert_allclose(got["means"], ref.means_, rtol=1e-8)
    np.testing.assert_allclose(got["log_likelihood"], ref.score(X), rtol=1e-10)


def test_fit_hmm_distributed_needs_the_launcher_and_no_states(geyser, tmp_path, monkeypatch):
    path, _, lengths, _ = geyser
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    args = ["fit", "hmm", str(path), "-k", "2", "--lengths", str(lengths), "--distributed"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "torchrun" in res.output
    # the launch it advises is of the command that was run
    assert "-m latentfit fit hmm DATA" in res.output and "fit gmm" not in res.output
    res = runner.invoke(app, [*args, "--states", str(tmp_path / "s.csv")])
    assert res.exit_code == 2 and "--states" in res.output
    res = runner.invoke(app, [*args, "--timeout", "0"])
    assert res.exit_code == 2 and "--timeout" in res.output


def test_fit_bgmm_json_and_csv(faithful):
    path, X = faithful
    got = _json(runner.invoke(app, ["fit", "bgmm", str(path), "-k", "4", "--quiet", "--json"]))
    ref = latentfit.BayesianGaussianMixture(n_components=4, max_iter=500, random_state=0).fit(X)
    np.testing.assert_allclose(got["elbo"], ref.elbo_, rtol=1e-10)
    np.testing.assert_allclose(got["weights"], ref.weights_, rtol=1e-10)
    np.testing.assert_allclose(got["means"], ref.means_, rtol=1e-10)
    assert got["used_components"] == np.flatnonzero(ref.weights_ > 0.01).tolist()
    res = runner.invoke(app, ["fit", "bgmm", str(path), "-k", "4", "--quiet", "--csv"])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    np.testing.assert_allclose([float(r["weight"]) for r in rows], ref.weights_, rtol=1e-10)


def test_fit_dist_json_and_csv(faithful):
    from latentfit.estimate import fit_mle

    path, X = faithful
    argv = ["fit", "dist", str(path), "-f", "gamma", "-c", "waiting"]
    got = _json(runner.invoke(app, [*argv, "--json"]))
    ref = fit_mle("gamma", torch.as_tensor(X[:, 1:]))
    assert [p["parameter"] for p in got["parameters"]] == ref.param_names
    np.testing.assert_allclose([p["estimate"] for p in got["parameters"]], ref.estimates, rtol=1e-8)
    np.testing.assert_allclose(
        [p["std_error"] for p in got["parameters"]], ref.std_errors(), rtol=1e-6
    )
    np.testing.assert_allclose(got["log_likelihood"], ref.log_likelihood, rtol=1e-10)
    res = runner.invoke(app, [*argv, "--csv"])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    ci = ref.conf_int(0.95)
    np.testing.assert_allclose([float(r["ci_lower"]) for r in rows], ci[:, 0], rtol=1e-6)


def test_fit_dist_on_a_device_agrees_with_the_cpu(faithful, device):
    """``fit dist --device``: the MLE, the MAP fit and its posterior computed on ``device``
    agree with the same command on the CPU (the prior's numbers, parsed on the CPU, moved)."""
    path, _ = faithful
    argv = ["fit", "dist", str(path), "-f", "gamma", "-c", "waiting", "--json"]
    for extra, rtol in (
        ([], 1e-8),
        (["--prior", "rate=gamma:2,1", "--sample", "nuts", "--chains", "2", "--draws", "60",
          "--warmup", "60", "--quiet"], 1e-6),
    ):  # fmt: skip
        cpu = _json(runner.invoke(app, [*argv, *extra]))
        got = _json(runner.invoke(app, [*argv, *extra, "--device", device]))
        np.testing.assert_allclose(
            [p["estimate"] for p in got["parameters"]],
            [p["estimate"] for p in cpu["parameters"]],
            rtol=rtol,
        )
        if extra:
            mean = {k: v["mean"] for k, v in got["posterior"]["summary"].items()}
            ref = {k: v["mean"] for k, v in cpu["posterior"]["summary"].items()}
            assert mean.keys() == ref.keys()
            if device == "cpu":  # another device draws other random numbers
                assert mean == ref


def test_flow_and_density_score_json(tmp_path):
    from latentfit.vae.data import load_vae_data

    X = np.random.default_rng(0).normal(size=(200, 3))
    np.save(tmp_path / "x.npy", X)
    model_file = tmp_path / "f.lf"
    got = _json(
        runner.invoke(
            app,
            ["fit", "flow", str(tmp_path / "x.npy"), "--epochs", "1", "--hidden", "8",
             "--layers", "2", "--quiet", "--out", str(model_file), "--json"],
        )
    )  # fmt: skip
    model = latentfit.load(model_file)
    split = load_vae_data(str(tmp_path / "x.npy"), seed=0)
    # the test rows, not the validation rows that chose the epoch (which it once reported)
    np.testing.assert_allclose(got["test_bits_per_dim"], model.bits_per_dim(split.test), rtol=1e-6)
    assert got["n_test"] == split.test.shape[0] and got["n_val"] == split.val.shape[0]
    assert got["n_train"] == split.train.shape[0] and len(got["history"]) == 1
    score = _json(
        runner.invoke(app, ["density", "score", str(model_file), str(tmp_path / "x.npy"), "--json"])
    )
    ll = np.asarray(model.score_samples(torch.as_tensor(X)))
    np.testing.assert_allclose(score["log_likelihood_mean"], ll.mean(), rtol=1e-6)
    assert score["n_rows"] == 200


def test_vae_eval_json_and_the_samples_option(tmp_path):
    from latentfit.vae import load_model, marginal_log_likelihood
    from latentfit.vae.data import load_vae_data

    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(60, 4)))
    out = tmp_path / "v.lf"
    fit = ["fit", "vae", "--dataset", str(tmp_path / "x.npy"), "--epochs", "1", "--hidden", "8",
           "--latent", "2", "--likelihood", "gaussian", "--no-binarize", "--batch-size", "20",
           "--quiet", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, [*fit, "-k", "3"])
    assert res.exit_code == 2 and "--samples" in res.output and not out.exists()
    got = _json(runner.invoke(app, [*fit, "--samples", "2", "--json"]))
    assert got["model_file"] == str(out) and len(got["history"]) == 1
    res = runner.invoke(app, ["eval", str(out), "-k", "7"])
    assert res.exit_code == 2 and "--samples" in res.output
    got = _json(runner.invoke(app, ["eval", str(out), "--samples", "7", "--json"]))
    model = load_model(out)
    test = load_vae_data(model.split.source, seed=0, split=model.split).test
    ref = marginal_log_likelihood(model, test, k=7, generator=torch.Generator().manual_seed(0))
    assert got["n_rows"] == test.shape[0] and got["samples"] == 7
    np.testing.assert_allclose(got["log_likelihood_mean"], ref.mean, rtol=1e-10)
    np.testing.assert_allclose(got["bits_per_dim"], ref.bits_per_dim, rtol=1e-10)


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"latentfit {latentfit.__version__}"


@pytest.mark.slow
def test_fit_hmm_distributed_under_torchrun_equals_one_process(geyser, tmp_path):
    """`torchrun --nproc-per-node 2 -m latentfit fit hmm DATA --lengths L --distributed --json`:
    rank 0 alone prints; parameters, log-likelihood and BIC are the one-process fit's."""
    import socket

    _, X, _, _ = geyser
    seq = [60, 80, 70, 89]
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "lengths.txt").write_text("\n".join(map(str, seq)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(port),
        "-m", "latentfit", "fit", "hmm", str(tmp_path / "x.npy"), "-k", "2", "--distributed",
        "--lengths", str(tmp_path / "lengths.txt"), "--tol", "1e-8", "--quiet", "--json",
        "--out", str(tmp_path / "m.lf"), "--timeout", "120",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout)  # one document: rank 1 prints nothing
    ref = latentfit.GaussianHMM(2, n_iter=100, tol=1e-8, random_state=0).fit(X, seq)
    np.testing.assert_allclose(got["transmat"], ref.transmat_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(got["means"], ref.means_, rtol=1e-7)
    np.testing.assert_allclose(got["log_likelihood"], ref.score(X, seq), rtol=1e-9)
    np.testing.assert_allclose(got["bic"], ref.bic(X, seq), rtol=1e-9)
    assert got["states_file"] is None and got["n_samples"] == len(X)
    np.testing.assert_allclose(latentfit.load(tmp_path / "m.lf").means_, ref.means_, rtol=1e-7)


@pytest.mark.parametrize(
    "family,cls,attr",
    [
        ("bernoulli", "BernoulliMixture", "means"),
        ("poisson", "PoissonMixture", "rates"),
        ("multinomial", "MultinomialMixture", "probs"),
        ("categorical", "CategoricalMixture", "probs"),
    ],
)
def test_fit_mixture_json_and_csv(family, cls, attr, tmp_path):
    rng = np.random.default_rng(0)
    if family == "bernoulli":
        X = (rng.random((120, 3)) < np.r_[[0.2] * 60, [0.8] * 60][:, None]).astype(float)
    elif family == "categorical":
        X = np.c_[rng.integers(0, 3, 120), rng.integers(0, 2, 120)].astype(float)
    else:
        X = rng.poisson(np.r_[[1.0] * 60, [6.0] * 60][:, None], (120, 3)).astype(float)
    names = ["a", "b", "c"][: X.shape[1]]
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",", header=",".join(names), comments="", fmt="%d")
    argv = ["fit", "mixture", str(data), "-k", "2", "-f", family, "--quiet"]
    got = _json(runner.invoke(app, [*argv, "--json"]))
    ref = getattr(latentfit, cls)(2, random_state=0).fit(X)
    assert got["features"] == names
    np.testing.assert_allclose(got["weights"], ref.weights_, rtol=1e-10)
    np.testing.assert_allclose(got[attr], getattr(ref, f"{attr}_"), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(got["log_likelihood"], ref.score(X) * len(X), rtol=1e-10)
    np.testing.assert_allclose(got["bic"], ref.bic(X), rtol=1e-10)
    res = runner.invoke(app, [*argv, "--csv"])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    np.testing.assert_allclose([float(r["weight"]) for r in rows], ref.weights_, rtol=1e-10)
    if family != "categorical":
        np.testing.assert_allclose(
            [[float(r[f"{attr}_{n}"]) for n in names] for r in rows],
            getattr(ref, f"{attr}_"),
            rtol=1e-10,
        )
    res = runner.invoke(app, argv)
    assert res.exit_code == 0 and "BIC:" in res.output


@pytest.mark.parametrize("kind,cls", [("fa", "FactorAnalysis"), ("ppca", "PPCA")])
def test_fit_factor_models_json_and_csv(kind, cls, tmp_path):
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 1))
    X = Z @ np.array([[1.0, 2.0, -1.0]]) + rng.normal(scale=[0.3, 0.5, 0.7], size=(200, 3))
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",", header="a,b,c", comments="")
    argv = ["fit", kind, str(data), "-k", "1", "--quiet"]
    got = _json(runner.invoke(app, [*argv, "--json"]))
    ref = getattr(latentfit, cls)(1, random_state=0).fit(X)
    np.testing.assert_allclose(got["components"], ref.components_, rtol=1e-10)
    np.testing.assert_allclose(got["noise_variance"], ref.noise_variance_, rtol=1e-10)
    np.testing.assert_allclose(got["mean"], ref.mean_, rtol=1e-10)
    np.testing.assert_allclose(got["log_likelihood"], ref.score(X) * len(X), rtol=1e-10)
    np.testing.assert_allclose(got["bic"], ref.bic(X), rtol=1e-10)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, [*argv, "--csv"]).output)))
    assert [r["feature"] for r in rows] == ["a", "b", "c"]
    np.testing.assert_allclose([float(r["loading_0"]) for r in rows], ref.components_[0])


@pytest.mark.parametrize("kind,cls", [("fa", "FactorAnalysis"), ("ppca", "PPCA")])
def test_fit_factor_models_rotate_their_loadings_on_request(kind, cls, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 5)) + rng.normal(size=(300, 5)) * 0.4
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",", header="a,b,c,d,e", comments="")
    argv = ["fit", kind, str(data), "-k", "2", "--quiet", "--rotation", "varimax"]
    got = _json(runner.invoke(app, [*argv, "--json"]))
    ref = getattr(latentfit, cls)(2, random_state=0, rotation="varimax").fit(X)
    plain = getattr(latentfit, cls)(2, random_state=0).fit(X)
    assert got["rotation"] == "varimax"
    np.testing.assert_allclose(got["components"], ref.components_, rtol=1e-10)
    assert not np.allclose(ref.components_, plain.components_)  # the rotation did something
    np.testing.assert_allclose(got["log_likelihood"], plain.score(X) * len(X), rtol=1e-10)
    res = runner.invoke(app, argv)
    assert res.exit_code == 0 and "loadings rotated by varimax" in res.output
    res = runner.invoke(app, [*argv[:-1], "promax"])
    assert res.exit_code == 2 and "--rotation takes none, varimax or quartimax" in res.output
