"""A run of a + b iterations equals a run of a iterations continued for b, wherever a fit can be
continued: EM's warm starts (``warm_start=True``, and the HMMs' ``init_params=""``, as hmmlearn)
in memory and through a model file, the trainers' checkpoints (``checkpoint_dir``, the CLI's
``--checkpoint-dir``), MCMC's ``resume`` and the ``partial_fit`` of stepwise EM and of the
HMMs' online EM. Deterministic EM is compared to rounding, the runs that carry a random stream
bit for bit. Continuing with settings or data the fitted parameters cannot take is refused by
name."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from typer.testing import CliRunner

import latentfit
from latentfit.cli import app
from latentfit.errors import DataError, ModelFileError, ParameterError
from latentfit.mcmc import sample

RNG = np.random.default_rng(0)
GAUSS = np.vstack([RNG.normal(0, 1, (30, 2)), RNG.normal(3, 1, (30, 2))])  # (60, 2)
COUNTS = RNG.poisson(3, (60, 2)).astype(float)
BINARY = (RNG.random((60, 3)) < 0.4).astype(float)
CODES = RNG.integers(0, 3, (60, 2)).astype(float)
TOTALS = RNG.multinomial(5, [0.2, 0.3, 0.5], 60).astype(float)
L = [30, 30]


def _hmm(cls, X, **kw):
    """An HMM-like model: its iteration count is n_iter and it continues with init_params=""."""
    return (cls, X, "n_iter", {"init_params": ""}, {"lengths": L}, kw)


def _mix(cls, X, **kw):
    return (cls, X, "max_iter", {"warm_start": True}, {}, kw)


CONTINUED = {
    "GaussianMixture full": _mix(latentfit.GaussianMixture, GAUSS, n_components=2),
    "GaussianMixture diag": _mix(
        latentfit.GaussianMixture, GAUSS, n_components=2, covariance_type="diag"
    ),
    "PoissonMixture": _mix(latentfit.PoissonMixture, COUNTS, n_components=2),
    "BernoulliMixture": _mix(latentfit.BernoulliMixture, BINARY, n_components=2),
    "CategoricalMixture": _mix(latentfit.CategoricalMixture, CODES, n_components=2),
    "MultinomialMixture": _mix(latentfit.MultinomialMixture, TOTALS, n_components=2),
    "MixtureModel": _mix(latentfit.MixtureModel, GAUSS, family="normal", n_components=2),
    "BayesianGaussianMixture": _mix(latentfit.BayesianGaussianMixture, GAUSS, n_components=2),
    "GaussianHMM": _hmm(latentfit.GaussianHMM, GAUSS, n_components=2),
    "PoissonHMM": _hmm(latentfit.PoissonHMM, COUNTS, n_components=2),
    "CategoricalHMM": _hmm(latentfit.CategoricalHMM, CODES[:, :1].astype(int), n_components=2),
    "GMMHMM": _hmm(latentfit.GMMHMM, GAUSS, n_components=2, n_mix=2),
    "AutoregressiveHMM": _hmm(latentfit.AutoregressiveHMM, GAUSS, n_components=2),
    "VariationalGaussianHMM": _hmm(latentfit.VariationalGaussianHMM, GAUSS, n_components=2),
    "GaussianHSMM": _hmm(latentfit.GaussianHSMM, GAUSS, n_components=2),
    "LinearGaussianSSM": _hmm(latentfit.LinearGaussianSSM, GAUSS, n_components=1),
}


def _fitted(model) -> dict[str, np.ndarray]:
    """The public fitted arrays (``means_``, ``transmat_``...)."""
    return {
        k: np.asarray(v)
        for k, v in vars(model).items()
        if k.endswith("_")
        and not k.startswith("_")
        and isinstance(v, np.ndarray | float)
        and k not in ("lower_bound_",)
    }


@pytest.mark.parametrize("name", CONTINUED)
def test_an_em_fit_continued_equals_the_uninterrupted_fit(name, tmp_path):
    """tol=0: no run converges, so 2 iterations continued for 4, in memory or from the model
    file, are the 6 iterations of one fit: the same parameters, bound and history (the
    halves' histories concatenated). n_iter_ counts the iterations of the last call, as
    scikit-learn's and hmmlearn's do."""
    cls, X, it, cont, fit_kw, kw = CONTINUED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = cls(**{it: 6}, tol=0, random_state=0, **kw).fit(X, **fit_kw)
        half = cls(**{it: 2}, tol=0, random_state=0, **kw).fit(X, **fit_kw)
        first = list(half.lower_bounds_)
        path = half.save(tmp_path / "half.lfm")
        for start in (copy.deepcopy(half), latentfit.load(path)):
            rest = start.set_params(**cont, **{it: 4}).fit(X, **fit_kw)
            assert len(whole.lower_bounds_) == 6 and len(rest.lower_bounds_) == 4
            np.testing.assert_allclose(
                first + list(rest.lower_bounds_), whole.lower_bounds_, rtol=1e-10
            )
            np.testing.assert_allclose(rest.lower_bound_, whole.lower_bound_, rtol=1e-10)
            assert rest.n_iter_ == 4 and whole.n_iter_ == 6
            assert rest.converged_ is whole.converged_ is False
            want, got = _fitted(whole), _fitted(rest)
            assert set(want) == set(got)
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-8, atol=1e-10, err_msg=key)


@pytest.mark.parametrize(
    "name", ["GaussianMixture full", "PoissonMixture", "BayesianGaussianMixture"]
)
def test_a_warm_start_of_a_converged_fit_stops_at_its_first_iteration(name):
    """As scikit-learn's: the first change is measured from the fitted lower_bound_, so a
    converged fit continued converges again at once and says so (converged_, n_iter_ = 1, no
    ConvergenceWarning, the bound moved by less than tol). That one iteration is the next
    one of the uninterrupted run: the model equals the fit of n_iter_ + 1 iterations."""
    cls, X, _, cont, _, kw = CONTINUED[name]
    tol = 1e-4
    done = cls(tol=tol, random_state=0, max_iter=500, **kw).fit(X)
    assert done.converged_ and done.n_iter_ > 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        again = copy.deepcopy(done).set_params(**cont).fit(X)
    assert again.converged_ and again.n_iter_ == 1
    assert abs(again.lower_bound_ - done.lower_bound_) < tol
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one_more = cls(tol=0, random_state=0, max_iter=done.n_iter_ + 1, **kw).fit(X)
    want = _fitted(one_more)
    for key, value in _fitted(again).items():
        np.testing.assert_allclose(value, want[key], rtol=1e-8, atol=1e-10, err_msg=key)


def test_a_warm_start_after_partial_fit_is_a_batch_fit_from_its_parameters():
    """partial_fit's lower_bound_ is a running average over earlier parameters, not the bound
    of the ones it leaves: a warm start measures its first change from no bound then, as a
    fit started from those parameters (weights_init, means_init, precisions_init) does.
    Measured from the average, it stopped after one iteration with converged_ (the average
    -3.3963 and the bound -3.3971 lie within tol=1e-2), a step short of that fit."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(2.5, 1, (300, 2))])
    X = X[rng.permutation(600)]
    online = latentfit.GaussianMixture(2, random_state=0)
    for batch in np.array_split(X, 12):
        online.partial_fit(batch)
    start = dict(weights_init=online.weights_, means_init=online.means_)
    start["precisions_init"] = online.precisions_
    cold = latentfit.GaussianMixture(2, tol=1e-2, **start).fit(X)
    warm = online.set_params(warm_start=True, tol=1e-2).fit(X)
    assert warm.n_iter_ == cold.n_iter_ == 2 and warm.converged_ and cold.converged_
    np.testing.assert_allclose(warm.lower_bounds_, cold.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(warm.means_, cold.means_, rtol=1e-10)
    np.testing.assert_allclose(warm.covariances_, cold.covariances_, rtol=1e-10)


# ---------------------------------------------------------------------- refusals
def _fitted_to_continue(name):
    cls, X, it, cont, fit_kw, kw = CONTINUED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = cls(**{it: 2}, tol=0, random_state=0, **kw).fit(X, **fit_kw)
    return model.set_params(**cont), X, fit_kw


WARM = ["GaussianMixture full", "PoissonMixture", "MixtureModel", "BayesianGaussianMixture"]


@pytest.mark.parametrize("name", WARM)
def test_a_warm_start_after_a_change_of_dtype_continues_in_the_new_dtype(name):
    # before: GaussianMixture went on in float64 under dtype="float32"; the others raised
    # torch's "expected m1 and m2 to have the same dtype, but got: float != double". A fitted
    # model set to another dtype reads its parameters in it (as the HMMs do), and so continues
    model, X, fit_kw = _fitted_to_continue(name)
    twin = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(dtype="float32").fit(X, **fit_kw)
        twin.fit(X, **fit_kw)  # the same continuation in float64
    assert next(iter(model._params.values())).dtype == torch.float32
    got, want = model.score_samples(X), twin.score_samples(X)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("name", ["GaussianMixture full", "PoissonMixture", "PPCA"])
def test_partial_fit_after_a_change_of_dtype_continues_in_the_new_dtype(name):
    if name == "PPCA":
        model, X = latentfit.PPCA(1, random_state=0).fit(GAUSS), GAUSS
    else:
        model, X, _ = _fitted_to_continue(name)
        model.set_params(warm_start=False)
    twin = copy.deepcopy(model)
    model.set_params(dtype="float32").partial_fit(X)
    twin.partial_fit(X)
    assert next(iter(model._params.values())).dtype == torch.float32
    got, want = model.score_samples(X), twin.score_samples(X)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("name", WARM)
def test_a_warm_start_on_data_of_another_width_is_refused_by_name(name):
    # before: BayesianGaussianMixture raised torch's "The size of tensor a (2) must match the
    # size of tensor b (3)"
    model, X, fit_kw = _fitted_to_continue(name)
    wider = np.c_[X, RNG.normal(0, 1, (len(X), 1)) + 5]
    with pytest.raises(DataError, match=r"X has 3 features, but warm_start=True continues from "
                       r"the fitted \w+, which has 2"):  # fmt: skip
        model.fit(wider, **fit_kw)
    assert model.n_features_in_ == 2
    model.predict(X)


@pytest.mark.parametrize("name", ["GaussianHMM", "PoissonHMM", "GaussianHSMM", "LinearGaussianSSM"])
def test_an_hmm_continued_on_data_of_another_width_is_refused_by_name(name):
    # before: LinearGaussianSSM raised torch's "The size of tensor a (2) must match the size of
    # tensor b (3) at non-singleton dimension 0"
    model, X, fit_kw = _fitted_to_continue(name)
    wider = np.c_[X, RNG.poisson(3, (len(X), 1))]
    with pytest.raises(ParameterError, match=r"_ must have shape \(.*3.*\).*got \(.*2.*\)"):
        model.fit(wider, **fit_kw)


@pytest.mark.parametrize(
    ("name", "setting", "value"),
    [
        ("GaussianMixture full", "n_components", 3),
        ("GaussianMixture full", "covariance_type", "diag"),
        ("PoissonMixture", "n_components", 3),
        ("BayesianGaussianMixture", "covariance_type", "diag"),
        ("GaussianHMM", "n_components", 3),
        ("GaussianHMM", "covariance_type", "full"),
        ("LinearGaussianSSM", "n_components", 2),
    ],
)
def test_a_continuation_with_another_shape_setting_is_refused_by_name(name, setting, value):
    model, X, fit_kw = _fitted_to_continue(name)
    words = {"n_components": r"n_components|startprob_|transition_matrix_", "covariance_type":
             r"covariance_type|covars"}[setting]  # fmt: skip
    with pytest.raises(ParameterError, match=words):
        model.set_params(**{setting: value}).fit(X, **fit_kw)


# ---------------------------------------------------------------------- trainers
FLOWS = {
    "MAF": (latentfit.MAF, dict(n_layers=2, hidden=8, n_hidden=1)),
    "RealNVP": (latentfit.RealNVP, dict(n_layers=2, hidden=8, n_hidden=1)),
    "DDPM": (
        latentfit.DDPM,
        dict(n_steps=20, hidden=16, n_hidden=1, time_dim=4, discrete=False, eval_timesteps=5),
    ),
}
SMOOTH = RNG.normal(0, 1, (80, 2))


def _weights(model) -> dict[str, torch.Tensor]:
    return model.module_.state_dict()


def _history(rows: list[dict]) -> list[dict]:
    """The per-epoch record (``history_``) without its wall-clock time."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("name", FLOWS)
def test_a_trainer_resumed_from_its_checkpoint_equals_the_uninterrupted_run(name, tmp_path):
    """epochs=2 then epochs=4 from the same checkpoint_dir: the weights and the history of
    epochs=4 at once, bit for bit (the generator state is in the checkpoint); asked again, a
    finished run changes nothing."""
    cls, kw = FLOWS[name]
    kw = dict(batch_size=16, random_state=0, **kw)
    whole = cls(epochs=4, **kw).fit(SMOOTH)
    cls(epochs=2, checkpoint_dir=str(tmp_path), **kw).fit(SMOOTH)
    rest = cls(epochs=4, checkpoint_dir=str(tmp_path), **kw).fit(SMOOTH)
    assert _history(rest.history_) == _history(whole.history_) and len(rest.history_) == 4
    want = _weights(whole)
    assert all(torch.equal(t, want[k]) for k, t in _weights(rest).items())
    again = cls(epochs=4, checkpoint_dir=str(tmp_path), **kw).fit(SMOOTH)
    assert _history(again.history_) == _history(whole.history_)
    assert all(torch.equal(t, want[k]) for k, t in _weights(again).items())


def test_a_run_that_stopped_early_resumed_for_more_epochs_stays_stopped(tmp_path):
    """Early stopping ended the run (patience=1) at epoch 4 of 30: asked for 40 epochs from its
    checkpoint it stays stopped and says so, as a run of 40 epochs at once stops at 4, with
    the same weights (the best ones, restored) and history."""
    from latentfit.train import TrainConfig, train
    from latentfit.vae import ELBO, build_model

    g = torch.Generator().manual_seed(0)
    proto = (torch.rand(4, 16, generator=g) > 0.5).double() * 0.9 + 0.05
    X, XV = (proto[torch.randint(4, (n,), generator=g)].float() for n in (120, 40))
    spec = dict(x_dim=16, z_dim=3, hidden=[12], seed=5)
    kw = dict(batch_size=32, lr=0.1, binarize=True, progress=False, patience=1)
    kw.update(diagnostics=False)

    def run(epochs, ck):
        model = build_model(**spec)
        cfg = TrainConfig(epochs=epochs, checkpoint_dir=ck, **kw)
        return model, train(model, ELBO(), X, XV, cfg)

    _, first = run(30, str(tmp_path))
    assert first.stopped_early and first.epochs == 4
    resumed, rest = run(40, str(tmp_path))  # before: trained a 5th epoch
    whole, ref = run(40, None)
    assert rest.stopped_early and rest.epochs == ref.epochs == 4 and rest.steps == ref.steps
    assert _history(rest.history) == _history(ref.history)
    want = whole.state_dict()
    assert all(torch.equal(t, want[k]) for k, t in resumed.state_dict().items())


@pytest.mark.parametrize(
    ("other", "error", "named"),
    [
        ("RealNVP", ModelFileError, "model tensors differ"),
        ("DDPM", ModelFileError, "model tensors differ"),
        ("dtype", ParameterError, "model dtype: float32 in the checkpoint, float64 now"),
        ("width", ModelFileError, r"\[2\] in the checkpoint, \[3\] now"),
    ],
)
def test_a_checkpoint_of_another_model_is_refused_by_name(other, error, named, tmp_path):
    cls, kw = FLOWS["MAF"]
    kw = dict(batch_size=16, random_state=0, checkpoint_dir=str(tmp_path))
    cls(epochs=1, **kw, **FLOWS["MAF"][1]).fit(SMOOTH)
    X, make = SMOOTH, None
    if other in FLOWS:
        make = FLOWS[other][0](epochs=2, **kw, **FLOWS[other][1])
    elif other == "dtype":
        make = cls(epochs=2, dtype="float64", **kw, **FLOWS["MAF"][1])
    else:
        make, X = cls(epochs=2, **kw, **FLOWS["MAF"][1]), np.c_[SMOOTH, SMOOTH[:, :1] ** 2]
    with pytest.raises(error, match=named):
        make.fit(X)


def test_the_cli_resumes_a_flow_from_its_checkpoint_dir(tmp_path, monkeypatch):
    """`fit flow --checkpoint-dir` for 1 epoch, then for 2: the model file of 2 epochs at once."""
    monkeypatch.chdir(tmp_path)
    np.savetxt("x.csv", SMOOTH, delimiter=",")
    args = ["fit", "flow", "x.csv", "--flow", "realnvp", "--layers", "2", "--hidden", "8"]
    args += ["--batch-size", "16", "--quiet", "--force"]
    for epochs, extra in (("2", ["--out", "whole.lfm"]), ("1", ["--checkpoint-dir", "ck"])):
        res = CliRunner().invoke(app, [*args, "--epochs", epochs, *extra])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, [*args, "--epochs", "2", "--checkpoint-dir", "ck", "--out", "r.lfm"]
    )
    assert res.exit_code == 0, res.output
    want, got = _weights(latentfit.load("whole.lfm")), _weights(latentfit.load("r.lfm"))
    assert all(torch.equal(t, want[k]) for k, t in got.items())


def test_the_cli_resumes_a_vae_and_its_metrics_file_from_its_checkpoint_dir(tmp_path, monkeypatch):
    """`fit vae --checkpoint-dir --metrics-csv` for 1 epoch of a KL warm-up, then for 3: the
    model and the metrics rows of 3 epochs at once (the warm-up's weights carry on)."""
    import csv

    from latentfit.vae import load_model

    monkeypatch.chdir(tmp_path)
    np.savetxt("b.csv", BINARY.repeat(2, 0), delimiter=",")
    args = ["fit", "vae", "--dataset", "b.csv", "--latent", "2", "--hidden", "8", "--quiet"]
    args += ["--batch-size", "32", "--kl-schedule", "linear", "--warmup-epochs", "2", "--force"]
    runs = (
        ("3", ["--out", "whole.st", "--metrics-csv", "whole.csv"]),
        ("1", ["--out", "half.st", "--checkpoint-dir", "ck", "--metrics-csv", "rest.csv"]),
        ("3", ["--out", "rest.st", "--checkpoint-dir", "ck", "--metrics-csv", "rest.csv"]),
    )
    for epochs, extra in runs:
        res = CliRunner().invoke(app, [*args, "--epochs", epochs, *extra])
        assert res.exit_code == 0, res.output
    want, got = load_model("whole.st").state_dict(), load_model("rest.st").state_dict()
    assert all(torch.equal(t, want[k]) for k, t in got.items())
    rows = [
        _history(list(csv.DictReader(Path(f).read_text().splitlines())))
        for f in ("whole.csv", "rest.csv")
    ]
    assert rows[0] == rows[1] and len(rows[1]) == 3


# ---------------------------------------------------------------------- MCMC
def _banana(x):
    return -0.5 * (x[0] ** 2 + (x[1] - 0.5 * x[0] ** 2) ** 2)


@pytest.mark.parametrize("kernel", ["nuts", "hmc"])
def test_mcmc_resumed_equals_one_longer_run_draw_for_draw(kernel):
    """More draws without a second warm-up: every draw and sample statistic of one run of
    15 + 10 draws, bit for bit."""
    kw = dict(num_chains=2, num_warmup=30, kernel=kernel, generator=3, progress_bar=False)
    longer = sample(_banana, {"x": torch.zeros(2)}, num_draws=25, **kw)
    part = sample(_banana, {"x": torch.zeros(2)}, num_draws=15, **kw)
    resumed = part.resume(10, progress_bar=False)
    assert resumed.num_draws == 25 and part.num_draws == 15
    assert torch.equal(resumed["x"], longer["x"])
    assert set(resumed.sample_stats) == set(longer.sample_stats)
    for key, value in longer.sample_stats.items():
        assert torch.equal(resumed.sample_stats[key], value), key
    assert torch.equal(resumed.step_size, longer.step_size)
    assert torch.equal(resumed.inv_metric, longer.inv_metric)
    with pytest.raises(ParameterError, match="resume takes num_draws"):
        resumed.resume(5, num_warmup=10)


def test_the_posterior_of_a_map_fit_resumed_equals_one_longer_run():
    x = np.random.default_rng(2).normal(2.0, 1.5, 50)
    fit = latentfit.fit_map("normal", x, prior={"loc": torch.distributions.Normal(0.0, 10.0)})
    kw = dict(num_chains=2, num_warmup=30, generator=3, progress_bar=False)
    longer = fit.sample_posterior(num_draws=25, **kw)
    resumed = fit.sample_posterior(num_draws=15, **kw).resume(10, progress_bar=False)
    assert set(resumed.draws) == {"loc", "scale"}
    assert all(torch.equal(resumed[k], longer[k]) for k in longer.draws)


# ---------------------------------------------------------------------- stepwise EM
STEPWISE = {
    "GaussianMixture": (lambda: latentfit.GaussianMixture(2, random_state=0), GAUSS),
    "GaussianMixture tied float32": (
        lambda: latentfit.GaussianMixture(
            2, covariance_type="tied", dtype="float32", random_state=0
        ),
        GAUSS,
    ),
    "PoissonMixture": (lambda: latentfit.PoissonMixture(2, random_state=0), COUNTS),
    "BernoulliMixture": (lambda: latentfit.BernoulliMixture(2, random_state=0), BINARY),
    "CategoricalMixture": (lambda: latentfit.CategoricalMixture(2, random_state=0), CODES),
    "MultinomialMixture": (lambda: latentfit.MultinomialMixture(2, random_state=0), TOTALS),
    "MixtureModel": (lambda: latentfit.MixtureModel("normal", 2, random_state=0), GAUSS),
    "FactorAnalysis": (lambda: latentfit.FactorAnalysis(1, random_state=0), GAUSS),
    "PPCA": (lambda: latentfit.PPCA(1, random_state=0), GAUSS),
}


def _half_run(name):
    """Four mini-batches: the model after all of them, and after the first two."""
    make, X = STEPWISE[name]
    batches = np.array_split(X[np.random.default_rng(1).permutation(len(X))], 4)
    whole, half = make(), make()
    for b in batches:
        whole.partial_fit(b)
    for b in batches[:2]:
        half.partial_fit(b)
    return whole, half, batches[2:]


@pytest.mark.parametrize("name", STEPWISE)
def test_partial_fit_continued_in_memory_or_from_the_model_file_is_one_run(name, tmp_path):
    """Four mini-batches fed to one model, or two and then two more to a copy or to the model
    saved and loaded: the same run (step sizes ρ_3, ρ_4 and the running statistics carry on),
    bit for bit."""
    whole, half, rest = _half_run(name)
    path = half.save(tmp_path / "half.lfm")
    for start in (copy.deepcopy(half), latentfit.load(path)):
        for b in rest:
            start.partial_fit(b)
        assert start.n_steps_ == whole.n_steps_ == 4
        assert start.lower_bound_ == whole.lower_bound_
        want = _fitted(whole)
        assert set(_fitted(start)) == set(want)
        for key, value in _fitted(start).items():
            np.testing.assert_array_equal(value, want[key], err_msg=key)


def _altered(path, dst, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    meta = {"latentfit": meta["latentfit"]}  # without its checksum, as a crafted file
    edit(tensors, meta)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _drop(prefix):
    def edit(tensors, meta):
        for k in [k for k in tensors if k.startswith(prefix)]:
            del tensors[k]

    return edit


def _reshape_s0(tensors, meta):
    tensors["online.stats.S0"] = torch.ones(3, dtype=tensors["online.stats.S0"].dtype)


def _no_steps(tensors, meta):
    import json

    header = json.loads(meta["latentfit"])
    header["extra"]["n_steps_"] = 0
    meta["latentfit"] = json.dumps(header)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_drop("online.at."), "but not the parameters they were taken under"),
        (_drop("online.stats."), "but not the averaged statistics"),
        (_reshape_s0, "'online.stats.*' are not the statistics of this GaussianMixture"),
        (_no_steps, "'extra.n_steps_' is 0"),
    ],
)
def test_a_model_file_with_a_damaged_partial_fit_state_is_refused(edit, named, tmp_path):
    _, half, _ = _half_run("GaussianMixture")
    path = _altered(half.save(tmp_path / "half.lfm"), tmp_path / "altered.lfm", edit)
    with pytest.raises(ModelFileError, match=named):
        latentfit.load(path)


# ---------------------------------------------------------------------- online EM of the HMMs
ONLINE_HMM = {
    "GaussianHMM": (lambda: latentfit.GaussianHMM(2, random_state=0), GAUSS),
    "GaussianHMM full float32": (
        lambda: latentfit.GaussianHMM(2, covariance_type="full", dtype="float32", random_state=0),
        GAUSS,
    ),
    "GMMHMM": (lambda: latentfit.GMMHMM(2, n_mix=2, random_state=0), GAUSS),
    "PoissonHMM": (lambda: latentfit.PoissonHMM(2, random_state=0), COUNTS),
    "CategoricalHMM": (
        lambda: latentfit.CategoricalHMM(2, random_state=0),
        CODES[:, :1].astype(int),
    ),
    "MultinomialHMM": (lambda: latentfit.MultinomialHMM(2, random_state=0), TOTALS),
    "AutoregressiveHMM": (lambda: latentfit.AutoregressiveHMM(2, random_state=0), GAUSS),
}
#: M-steps from step 5 on, every 5 steps: both halves of the series make some
ONLINE_KW = dict(burn_in=5, mstep_every=5)


def _online_half(name):
    """One series in two chunks (25 and 35 rows): the model after both, after the first, and
    the second chunk."""
    make, X = ONLINE_HMM[name]
    whole, half = make(), make()
    whole.partial_fit(X[:25], **ONLINE_KW)
    whole.partial_fit(X[25:], new_sequence=False, **ONLINE_KW)
    half.partial_fit(X[:25], **ONLINE_KW)
    return whole, half, X[25:]


@pytest.mark.parametrize("name", ONLINE_HMM)
def test_hmm_partial_fit_continued_in_memory_or_from_the_model_file_is_one_run(name, tmp_path):
    """A series fed to one model in two chunks, or its first chunk, save, load and the second
    (the same series continued, new_sequence=False): the same run (the filter, Cappé's
    statistics, the step count and the lags of the autoregressive model carry on), bit for
    bit. Before, the loaded model restarted: 35 steps and 7 M-steps in place of 60 and 12,
    and parameters up to 3.3 apart."""
    whole, half, rest = _online_half(name)
    path = half.save(tmp_path / "half.lfm")
    for start in (copy.deepcopy(half), latentfit.load(path)):
        start.partial_fit(rest, new_sequence=False, **ONLINE_KW)
        assert (start.n_steps_, start.n_updates_) == (whole.n_steps_, whole.n_updates_) == (60, 12)
        assert start.online_log_likelihood_ == whole.online_log_likelihood_
        want = _fitted(whole)
        assert set(_fitted(start)) == set(want)
        for key, value in _fitted(start).items():
            np.testing.assert_array_equal(value, want[key], err_msg=key)


def _header(edit_extra):
    def edit(tensors, meta):
        import json

        header = json.loads(meta["latentfit"])
        edit_extra(header["extra"])
        meta["latentfit"] = json.dumps(header)

    return edit


def _set(name, value):
    def edit(tensors, meta):
        tensors[name] = torch.as_tensor(value, dtype=tensors["online.filtered"].dtype)

    return edit


def _shifted_means(tensors, meta):
    tensors["online.params.means"] = tensors["online.params.means"] + 1


def _old_format(tensors, meta):
    """A model file as latentfit wrote it before it kept the running state."""
    _drop("online.")(tensors, meta)
    _header(lambda extra: [extra.pop(k) for k in list(extra) if k in ONLINE_FIELDS])(tensors, meta)


ONLINE_FIELDS = ("n_steps_", "n_updates_", "online_log_likelihood_")


@pytest.mark.parametrize(
    ("name", "edit", "named"),
    [
        ("GaussianHMM", _drop("online.rho_trans"), "but not 'online.rho_trans'"),
        ("GaussianHMM", _drop("online.params."), r"but not the parameters of the run"),
        ("GaussianHMM", _header(lambda e: e.pop("n_updates_")), "but not 'extra.n_updates_'"),
        ("GaussianHMM", _header(lambda e: e.update(n_steps_=0)), "'extra.n_steps_' is 0,"),
        ("GaussianHMM", _set("online.filtered", [2.0, -1.0]), "'online.filtered' must be a"),
        ("GaussianHMM", _set("online.rho_start", np.ones(3)), "'online.rho_start' must be"),
        ("GaussianHMM", _shifted_means, r"'online.params.\*' .* do not give the model's means_"),
        (
            "GaussianHMM",
            _set("online.rho_emission.post", np.ones((3, 2))),
            r"'online.rho_emission.\*' are not the statistics of this GaussianHMM",
        ),
        ("PoissonHMM", _set("online.carry", np.ones((2, 2))), "does not store"),
        ("AutoregressiveHMM", _drop("online.carry"), r"but not the last rows read"),
    ],
)
def test_a_model_file_with_a_damaged_hmm_partial_fit_state_is_refused(name, edit, named, tmp_path):
    _, half, _ = _online_half(name)
    path = _altered(half.save(tmp_path / "half.lfm"), tmp_path / "altered.lfm", edit)
    with pytest.raises(ModelFileError, match=named):
        latentfit.load(path)


@pytest.mark.parametrize("name", ONLINE_HMM)
def test_an_hmm_file_without_the_partial_fit_state_continues_with_fresh_statistics(name, tmp_path):
    """A file written before the running state was kept loads, and partial_fit continues
    from its parameters with fresh statistics, as it did then: as a model given the same
    parameters by hand."""
    _, half, rest = _online_half(name)
    path = _altered(half.save(tmp_path / "half.lfm"), tmp_path / "old.lfm", _old_format)
    old = latentfit.load(path)
    assert not hasattr(old, "n_steps_")
    by_hand = ONLINE_HMM[name][0]()
    for key in old._state_attributes():  # startprob_, transmat_ and the emissions'
        setattr(by_hand, key, getattr(old, key))
    for m in (old, by_hand):
        m.partial_fit(rest, **ONLINE_KW)
    assert old.n_steps_ == by_hand.n_steps_ == len(rest)
    for key, value in _fitted(old).items():
        np.testing.assert_array_equal(value, _fitted(by_hand)[key], err_msg=key)
