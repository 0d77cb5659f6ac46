"""Every public entry point leaves the process's global state as it found it, when it returns and
when it raises: torch's, numpy's and Python's random generators, torch's default dtype, device,
thread count, grad/inference/anomaly modes and matmul precision, torch.distributions' argument
checks, both print options, numpy's floating-point error handling, the warnings filters and
display hooks, the environment, the working directory, logging, signal handlers and matplotlib's
settings. latentfit runs inside notebooks and pipelines: a fit that reseeded the global
generator or left validation off would change the user's other code silently.

Each call below runs between two snapshots of all of it (``_unchanged``), on tiny data."""

from __future__ import annotations

import importlib
import logging
import os
import random
import signal
import sys
import warnings
from contextlib import contextmanager

import matplotlib
import numpy as np
import pytest
import torch
from torch.distributions import Distribution, Gamma, Normal
from typer.testing import CliRunner

import latentfit as lf
from latentfit import plot
from latentfit.errors import DataError, LatentfitError, NotFittedError, ParameterError
from latentfit.mcmc import gibbs_gmm, gibbs_hmm, sample
from latentfit.mcmc.svgd import svgd

# Imports with side effects of their own, done before any snapshot: torch._dynamo's first import
# sets TORCHINDUCTOR_CACHE_DIR (whoever imports it: torch.optim does), rich.style's draws from
# Python's random module (an id counter; typer shows errors through rich).
for _module in ("torch._dynamo", "rich.style"):
    importlib.import_module(_module)

matplotlib.use("Agg")  # as tests/plot/conftest.py: the tests choose it, the library never does
import matplotlib.pyplot as plt  # noqa: E402

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
RNG = np.random.default_rng(0)
GAUSS = np.concatenate([RNG.normal(-2, 1, (30, 2)), RNG.normal(2, 1, (30, 2))])
COUNTS = RNG.poisson(np.r_[np.full(30, 2.0), np.full(30, 9.0)])[:, None]
SYMBOLS = RNG.integers(0, 3, (60, 1))
BINARY = (RNG.random((60, 4)) < np.r_[np.full(30, 0.2), np.full(30, 0.8)][:, None]).astype(float)
TRIALS = RNG.multinomial(6, [0.5, 0.3, 0.2], 60)
LENGTHS = [35, 25]


def _logger_state(logger) -> tuple:
    return (logger.level, list(logger.handlers), list(logger.filters), logger.disabled)


def snapshot() -> dict:
    """Everything a library call could change for the rest of the process, as comparable values."""
    from torch._tensor_str import PRINT_OPTS

    state = {
        "torch rng": torch.random.get_rng_state(),
        "numpy rng": np.random.get_state(),  # noqa: NPY002  (numpy's global generator itself)
        "python rng": random.getstate(),
        "default dtype": torch.get_default_dtype(),
        "threads": torch.get_num_threads(),
        "interop threads": torch.get_num_interop_threads(),
        "grad enabled": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "matmul precision": torch.get_float32_matmul_precision(),
        "autocast cpu": torch.is_autocast_enabled("cpu"),
        "tracing": torch._C._get_tracing_state() is not None,
        "dispatch modes": len(torch.utils._python_dispatch._get_current_dispatch_mode_stack()),
        "validate args": Distribution._validate_args,
        "torch printoptions": dict(vars(PRINT_OPTS)),
        "numpy printoptions": np.get_printoptions(),
        "numpy errors": np.geterr(),
        "warnings filters": list(warnings.filters),
        "showwarning": warnings.showwarning,
        "formatwarning": warnings.formatwarning,
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "root logger": _logger_state(logging.getLogger()),
        "loggers": {
            name: _logger_state(lg)
            for name, lg in logging.Logger.manager.loggerDict.items()
            if isinstance(lg, logging.Logger)
        },
        "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
        "recursion limit": sys.getrecursionlimit(),
        "rcParams": dict(matplotlib.rcParams),
        "backend": matplotlib.get_backend(),
        "excepthook": sys.excepthook,
    }
    if hasattr(torch, "get_default_device"):
        state["default device"] = torch.get_default_device()
    if torch.cuda.is_available():
        state["cuda rng"] = torch.cuda.get_rng_state_all()
    return state


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # a value with no plain equality (an rcParam array): by identity
        return a is b


def changes(before: dict, after: dict) -> list[str]:
    """The names of what differs between two snapshots, each with its values when short."""
    out = []
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if key == "loggers":  # a logger made on import (getLogger) is no setting of anyone's;
            # torch's trace log drops its lazy handler at its first record (torch/_logging)
            kept = (a.keys() & b.keys()) - {"torch.__trace"}
            a, b = ({k: v for k, v in d.items() if k in kept} for d in (a, b))
        if not _same(a, b):
            if isinstance(a, dict) and isinstance(b, dict):
                diff = sorted(str(k) for k in a.keys() | b.keys() if not _same(a.get(k), b.get(k)))
                out.append(f"{key}: {diff[:8]}")
            elif key in ("warnings filters",):
                out.append(f"{key}: {len(a)} -> {len(b)}; first now {b[:2]}")
            elif isinstance(a, (torch.Tensor, tuple)):
                out.append(key)
            else:
                out.append(f"{key}: {a!r} -> {b!r}")
    return sorted(out)


@contextmanager
def _unchanged():
    before = snapshot()
    try:
        yield
    finally:
        plt.close("all")  # the figures a plot made are the user's; they hold no setting
        after = snapshot()
        assert not changes(before, after), changes(before, after)


def _quiet(fn):
    """``fn`` with every warning recorded, not shown (recording is inside the snapshots, and
    catch_warnings restores the filters it changed)."""

    def run(*args, **kwargs):
        with warnings.catch_warnings(record=True):
            return fn(*args, **kwargs)

    return run


def test_the_snapshot_sees_each_kind_of_change():
    """The check itself: a change of each kind is noticed (else every test here passes blind)."""
    undo = {
        "torch rng": lambda: torch.manual_seed(123),
        "default dtype": lambda: torch.set_default_dtype(F64),
        "threads": lambda: torch.set_num_threads(torch.get_num_threads() + 1),
        "grad enabled": lambda: torch.set_grad_enabled(False),
        "validate args": lambda: Distribution.set_default_validate_args(
            not Distribution._validate_args
        ),
        "warnings filters": lambda: warnings.simplefilter("ignore", FutureWarning),
        "environ": lambda: os.environ.__setitem__("LATENTFIT_SNAPSHOT_TEST", "1"),
        "numpy errors": lambda: np.seterr(all="ignore"),
        "rcParams": lambda: matplotlib.rcParams.__setitem__("lines.linewidth", 7.5),
        "loggers": lambda: logging.getLogger("latentfit.snapshot").addFilter(lambda r: True),
    }
    logging.getLogger("latentfit.snapshot")  # made before: a new logger is not a change
    for key, change in undo.items():
        before = snapshot()
        with warnings.catch_warnings():
            state = matplotlib.rcParams.copy()
            try:
                change()
                assert any(c.startswith(key) for c in changes(before, snapshot())), key
            finally:
                torch.random.set_rng_state(before["torch rng"])
                torch.set_default_dtype(before["default dtype"])
                torch.set_num_threads(before["threads"])
                torch.set_grad_enabled(before["grad enabled"])
                Distribution.set_default_validate_args(before["validate args"])
                os.environ.pop("LATENTFIT_SNAPSHOT_TEST", None)
                np.seterr(**before["numpy errors"])
                matplotlib.rcParams.update(state)
                logging.getLogger("latentfit.snapshot").filters.clear()
        assert not changes(before, snapshot()), key


# ---------------------------------------------------------------------------------------------
# estimators: fit, every public method, save and load; and a fit refused on a NaN in X

SEQUENCE_MODELS = {
    "GaussianHMM": (lambda: lf.GaussianHMM(2, n_iter=3, random_state=0), GAUSS),
    "GMMHMM": (lambda: lf.GMMHMM(2, n_mix=2, n_iter=3, random_state=0), GAUSS),
    "PoissonHMM": (lambda: lf.PoissonHMM(2, n_iter=3, random_state=0), COUNTS),
    "CategoricalHMM": (lambda: lf.CategoricalHMM(2, n_iter=3, random_state=0), SYMBOLS),
    "MultinomialHMM": (lambda: lf.MultinomialHMM(2, n_iter=3, random_state=0), TRIALS),
    "AutoregressiveHMM": (lambda: lf.AutoregressiveHMM(2, n_iter=3, random_state=0), GAUSS),
    "VariationalGaussianHMM": (
        lambda: lf.VariationalGaussianHMM(2, n_iter=3, random_state=0),
        GAUSS,
    ),
    "VariationalCategoricalHMM": (
        lambda: lf.VariationalCategoricalHMM(2, n_iter=3, random_state=0),
        SYMBOLS,
    ),
    "GaussianHSMM": (lambda: lf.GaussianHSMM(2, max_duration=5, n_iter=2, random_state=0), GAUSS),
    "PoissonHSMM": (lambda: lf.PoissonHSMM(2, max_duration=5, n_iter=2, random_state=0), COUNTS),
    "CategoricalHSMM": (
        lambda: lf.CategoricalHSMM(2, max_duration=5, n_iter=2, random_state=0),
        SYMBOLS,
    ),
    "LinearGaussianSSM": (lambda: lf.LinearGaussianSSM(1, n_iter=2, random_state=0), GAUSS),
}
MODELS = {
    "GaussianMixture": (lambda: lf.GaussianMixture(2, max_iter=5, random_state=0), GAUSS),
    "BayesianGaussianMixture": (
        lambda: lf.BayesianGaussianMixture(n_components=2, max_iter=5, random_state=0),
        GAUSS,
    ),
    "PoissonMixture": (lambda: lf.PoissonMixture(2, max_iter=5, random_state=0), COUNTS),
    "BernoulliMixture": (lambda: lf.BernoulliMixture(2, max_iter=5, random_state=0), BINARY),
    "CategoricalMixture": (
        lambda: lf.CategoricalMixture(2, max_iter=5, random_state=0),
        SYMBOLS,
    ),
    "MultinomialMixture": (
        lambda: lf.MultinomialMixture(2, max_iter=5, random_state=0),
        TRIALS,
    ),
    "MixtureModel": (
        lambda: lf.MixtureModel(["normal", "exponential"], max_iter=5, random_state=0),
        np.abs(GAUSS[:, :1]) + 0.1,
    ),
    "PPCA": (lambda: lf.PPCA(1, max_iter=5, random_state=0), GAUSS),
    "FactorAnalysis": (lambda: lf.FactorAnalysis(1, max_iter=5, random_state=0), GAUSS),
    "RealNVP": (lambda: lf.RealNVP(n_layers=2, hidden=4, epochs=1, random_state=0), GAUSS),
    "MAF": (lambda: lf.MAF(n_layers=2, hidden=4, epochs=1, random_state=0), GAUSS),
    "NeuralSplineFlow": (
        lambda: lf.NeuralSplineFlow(n_layers=1, hidden=4, epochs=1, random_state=0),
        GAUSS,
    ),
    "FlowDensity": (
        lambda: lf.FlowDensity("realnvp", n_layers=2, hidden=4, epochs=1, random_state=0),
        GAUSS,
    ),
    "DDPM": (
        lambda: lf.DDPM(n_steps=5, hidden=4, discrete=False, epochs=1, random_state=0),
        GAUSS,
    ),
}
METHODS = ("score", "score_samples", "predict", "predict_proba", "transform")


def _use(model, X, lengths, tmp_path):
    args = (X, lengths) if lengths is not None else (X,)
    model.fit(*args)
    for name in METHODS:
        if hasattr(model, name):
            getattr(model, name)(*args)
    if hasattr(model, "sample"):
        try:
            model.sample(3, random_state=1)
        except TypeError:  # a sampler without random_state= draws from the model's own seed
            model.sample(3)
    try:  # one stepwise-EM update more; refused where a model has no online EM
        model.partial_fit(*args)
    except (AttributeError, ParameterError):
        pass
    path = lf.save(model, tmp_path / "m.lf")
    lf.load(path)


def _model(name, device):
    make, X = {**SEQUENCE_MODELS, **MODELS}[name]
    model = make()
    model.device = device  # a constructor argument, stored as given (validated by fit)
    return model, X


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(SEQUENCE_MODELS) + list(MODELS))
def test_an_estimator_leaves_global_state_alone(name, device, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, X = _model(name, device)
    lengths = LENGTHS if name in SEQUENCE_MODELS else None
    with _unchanged():
        _quiet(_use)(model, X, lengths, tmp_path)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(SEQUENCE_MODELS) + list(MODELS))
def test_an_estimator_refusing_a_nan_leaves_global_state_alone(name, device):
    model, X = _model(name, device)
    X = np.array(X, dtype=float)
    X[7, 0] = np.inf if name == "LinearGaussianSSM" else np.nan  # an SSM's NaN: a missing value
    args = (X, LENGTHS) if name in SEQUENCE_MODELS else (X,)
    with _unchanged(), pytest.raises((DataError, ParameterError)):
        _quiet(model.fit)(*args)


def _sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.save(tmp_path / "x.npy", GAUSS)
    pq.write_table(pa.table({"a": GAUSS[:, 0], "b": GAUSS[:, 1]}), tmp_path / "x.parquet")
    return {
        "ArraySource": lambda: lf.ArraySource(GAUSS, chunk_rows=25),
        "IterableSource": lambda: lf.IterableSource([GAUSS[:30], GAUSS[30:]]),
        "NpySource": lambda: lf.NpySource(tmp_path / "x.npy", chunk_rows=25),
        "ParquetSource": lambda: lf.ParquetSource(tmp_path / "x.parquet"),
    }


@pytest.mark.parametrize("name", ["ArraySource", "IterableSource", "NpySource", "ParquetSource"])
def test_a_fit_from_a_source_leaves_global_state_alone(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make = _sources(tmp_path)[name]
    with _unchanged():
        _quiet(lf.GaussianMixture(2, max_iter=3, random_state=0).fit)(make())
        _quiet(lf.GaussianHMM(2, n_iter=2, random_state=0).fit)(make(), LENGTHS)


def test_a_source_refused_mid_way_leaves_global_state_alone():
    bad = GAUSS[30:].copy()
    bad[4, 0] = np.nan  # in the second chunk: met after the first was read
    with _unchanged(), pytest.raises(DataError):
        _quiet(lf.GaussianMixture(2, max_iter=3, random_state=0).fit)(
            lf.IterableSource([GAUSS[:30], bad])
        )


# ---------------------------------------------------------------------------------------------
# functions: estimation, samplers, VI, plots; each used as a user would, then refused mid-way

X1 = torch.as_tensor(RNG.normal(1.0, 2.0, 40))


def _normal_density(mu, log_sigma):
    return Normal(mu, log_sigma.exp()).log_prob(X1[:, None] if mu.dim() else X1).sum(0)


class Stop(Exception):
    """A user's own error inside a density (the samplers reject a point whose density raises
    a ValueError or RuntimeError, as Stan does; any other error ends the run)."""


def _raising_density(mu, log_sigma):
    _raising_density.calls += 1
    if _raising_density.calls > 3:  # past the sampler's set-up and first evaluations
        raise Stop("a density raising inside the sampler")
    return _normal_density(mu, log_sigma)


_raising_density.calls = 0
INIT = {"mu": torch.tensor(0.0, dtype=F64), "log_sigma": torch.tensor(0.0, dtype=F64)}
TINY = dict(num_chains=2, num_warmup=3, num_draws=3, generator=0, progress_bar=False)


def _sample(kernel, compile):
    return sample(_normal_density, INIT, kernel=kernel, compile=compile, num_steps=2, **TINY)


def _sample_raising(compile):
    _raising_density.calls = 0
    return sample(_raising_density, INIT, compile=compile, **TINY)


def _map_and_posterior():
    fit = lf.fit_map("poisson", COUNTS[:, 0], {"rate": Gamma(torch.tensor(2.0), torch.tensor(1.0))})
    fit.sample_posterior(**TINY)


def _conjugates():
    from latentfit.estimate import (
        BetaBernoulli,
        DirichletCategorical,
        GammaPoisson,
        NormalInverseGamma,
        NormalInverseWishart,
    )

    for model, x in (
        (BetaBernoulli(), BINARY[:, 0]),
        (GammaPoisson(1.0, 1.0), COUNTS[:, 0]),
        (DirichletCategorical(np.ones(3)), SYMBOLS[:, 0]),
        (NormalInverseGamma(), GAUSS[:, 0]),
        (NormalInverseWishart(np.zeros(2)), GAUSS),
    ):
        post = model.update(x)
        post.credible_interval()
        post.log_evidence(x)
        post.posterior_predictive()


def _svi():
    from latentfit.vi import ELBO, MeanFieldGaussian, svi

    guide = MeanFieldGaussian(2, dtype=F64)
    elbo = ELBO(lambda z, b: Normal(0.0, 1.0).log_prob(z).sum(-1), guide, None, generator=0)
    svi(elbo, torch.optim.Adam(guide.parameters(), lr=0.05), 3)


def _svi_nan():
    from latentfit.vi import svi

    p = torch.zeros(1, requires_grad=True)
    svi(lambda b: p.sum() * float("nan"), torch.optim.SGD([p], lr=0.1), 3)


def _gaps():
    from latentfit.vi.gap import (
        bgmm_gap_trace,
        em_gap_trace,
        hmm_gap_trace,
        linear_gaussian_gap_trace,
    )

    em_gap_trace(GAUSS, 2, n_iter=2, random_state=0)
    hmm_gap_trace(GAUSS, 2, n_iter=2, random_state=0)
    linear_gaussian_gap_trace(GAUSS, 1, n_iter=2, random_state=0)
    bgmm = lf.BayesianGaussianMixture(
        n_components=2,
        weight_concentration_prior_type="dirichlet_distribution",
        max_iter=3,
        random_state=0,
    )
    bgmm_gap_trace(GAUSS[:6], bgmm.fit(GAUSS[:6]))


def _plots():
    gmm = lf.GaussianMixture(2, max_iter=5, random_state=0).fit(GAUSS)
    plot.gaussian_components(gmm)
    plot.plot_mixture(gmm, GAUSS)
    plot.plot_convergence(gmm)
    plot.plot_selection(lf.select_model(GAUSS, n_components=[1, 2], max_iter=5))
    hmm = lf.GaussianHMM(2, n_iter=3, random_state=0).fit(GAUSS, LENGTHS)
    plot.plot_states(hmm, GAUSS, LENGTHS)
    plot.plot_image_grid(RNG.random((4, 16)), (4, 4))
    res = gibbs_gmm(GAUSS, 2, num_chains=2, num_warmup=2, num_draws=3, generator=0)
    plot.plot_trace(res, ["weights"])
    plot.plot_pair(_sample("nuts", False))
    from latentfit.vae import build_model

    vae = build_model(x_dim=16, z_dim=2, hidden=[4])
    plot.plot_samples(vae, 4, generator=0, image_shape=(4, 4))
    plot.plot_reconstructions(
        vae,
        torch.as_tensor(BINARY[:4].repeat(4, 1), dtype=torch.float32),
        n=4,
        generator=0,
        image_shape=(4, 4),
    )


def _vae_train():
    from latentfit.train import train
    from latentfit.vae import ELBO, build_model

    model = build_model(x_dim=8, z_dim=2, hidden=[4])
    cfg = lf.TrainConfig(epochs=1, batch_size=20, progress=False, seed=0)
    train(model, ELBO(), torch.as_tensor(BINARY[:40].repeat(2, 1), dtype=torch.float32), config=cfg)


def _vae_evaluate(tmp_path):
    from latentfit.vae import build_model, diagnose, load_model, marginal_log_likelihood, save_model

    for kind in ("gaussian", "discrete", "ladder"):
        model = build_model(kind=kind, x_dim=4, z_dim=2, hidden=[4])
        X = torch.as_tensor(BINARY, dtype=torch.float32)
        diagnose(model, X, generator=0)
        marginal_log_likelihood(model, X, k=3, generator=0)
        load_model(save_model(model, tmp_path / f"{kind}.lf"))


def _vae_nan():
    from latentfit.vae import build_model, marginal_log_likelihood

    X = torch.as_tensor(BINARY, dtype=torch.float32)
    X[3, 1] = torch.nan
    marginal_log_likelihood(build_model(x_dim=4, z_dim=2, hidden=[4]), X, k=3, generator=0)


FUNCTIONS = {
    "fit_mle": lambda: lf.fit_mle("normal", GAUSS[:, 0]),
    "fit_map+sample_posterior": _map_and_posterior,
    "select_model": lambda: lf.select_model(GAUSS, n_components=[1, 2], max_iter=5),
    "conjugate posteriors": _conjugates,
    "nuts replay": lambda: _sample("nuts", "replay"),
    "nuts eager": lambda: _sample("nuts", False),
    "hmc replay": lambda: _sample("hmc", "replay"),
    "hmc eager": lambda: _sample("hmc", False),
    "result diagnostics": lambda: (
        _sample("nuts", False).summary(),
        _sample("nuts", False).to_arviz(),
        _sample("nuts", False).diagnostics(),
    ),
    "gibbs_gmm": lambda: gibbs_gmm(
        GAUSS, 2, num_chains=2, num_warmup=2, num_draws=3, generator=0
    ).summary(),
    "gibbs_hmm": lambda: gibbs_hmm(
        GAUSS, 2, lengths=LENGTHS, num_chains=2, num_warmup=2, num_draws=3, generator=0
    ).summary(),
    "svgd": lambda: svgd(
        _normal_density, INIT, num_particles=5, num_iter=3, generator=0, progress_bar=False
    ),
    "svi": _svi,
    "gap traces": _gaps,
    "plots": _plots,
    "vae train": _vae_train,
    "vae evaluate": _vae_evaluate,
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_a_function_leaves_global_state_alone(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fn = FUNCTIONS[name]
    with _unchanged():
        _quiet(fn)(*([tmp_path] if fn.__code__.co_argcount else []))


REFUSED = {
    "fit_mle NaN": lambda: lf.fit_mle("normal", np.r_[GAUSS[:, 0], np.nan]),
    "fit_map bad prior": lambda: lf.fit_map("poisson", COUNTS[:, 0], {"rate": 3.0}),
    "sample_posterior bad setting": lambda: lf.fit_map(
        "poisson", COUNTS[:, 0], {"rate": Gamma(torch.tensor(2.0), torch.tensor(1.0))}
    ).sample_posterior(num_chains=2, num_warmup=2, num_draws=2, max_work=1, progress_bar=False),
    "select_model NaN": lambda: lf.select_model(np.r_[GAUSS, [[np.nan, 0]]], n_components=[1]),
    "nuts raising replay": lambda: _sample_raising("replay"),
    "nuts raising eager": lambda: _sample_raising(False),
    "nuts too much work": lambda: sample(_normal_density, INIT, max_work=10, **TINY),
    "gibbs_gmm NaN": lambda: gibbs_gmm(
        np.r_[GAUSS, [[np.nan, 0]]], 2, num_chains=2, num_warmup=2, num_draws=3
    ),
    "svgd raising": lambda: svgd(
        _raising_density, INIT, num_particles=5, num_iter=9, generator=0, progress_bar=False
    ),
    "flow refusing its validation rows after an epoch": lambda: lf.RealNVP(
        n_layers=2, hidden=4, epochs=2, random_state=0
    ).fit(GAUSS, X_val=np.r_[GAUSS[:5], [[1e30, 0.0]]]),
    "ddpm refusing its validation rows after an epoch": lambda: lf.DDPM(
        n_steps=5, hidden=4, discrete=False, epochs=2, random_state=0
    ).fit(GAUSS, X_val=np.r_[GAUSS[:5], [[1e30, 0.0]]]),
    "svi NaN": _svi_nan,
    "vae NaN": _vae_nan,
    "plot unfitted": lambda: plot.plot_mixture(lf.GaussianMixture(2)),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_refused_function_leaves_global_state_alone(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with _unchanged(), pytest.raises((LatentfitError, NotFittedError, Stop)):
        _quiet(REFUSED[name])()


# ---------------------------------------------------------------------------------------------
# commands run in-process (as a notebook or a test runs them): they succeed or exit 2

runner = CliRunner()
COMMANDS = {
    "fit gmm": ["fit", "gmm", "d.csv", "-k", "2", "--quiet", "--out", "g.lf"],
    "fit hmm": ["fit", "hmm", "d.csv", "-k", "2", "--quiet", "--states", "s.csv"],
    "fit bgmm": ["fit", "bgmm", "d.csv", "-k", "2", "--quiet"],
    "select gmm": ["select", "gmm", "d.csv", "-k", "1-2", "--quiet"],
    "fit dist nuts": [
        *["fit", "dist", "c.csv", "--family", "poisson", "--prior", "rate=gamma:2,0.5"],
        *["--sample", "nuts", "--chains", "2", "--draws", "3", "--warmup", "3"],
    ],
    "fit flow": [
        *["fit", "flow", "d.csv", "--flow", "realnvp", "--layers", "2", "--hidden", "4"],
        *["--epochs", "1", "--out", "f.lf", "--quiet"],
    ],
    "fit vae": [
        *["fit", "vae", "--dataset", "d.csv", "--likelihood", "gaussian", "--no-binarize"],
        *["--latent", "1", "--hidden", "4", "--epochs", "1", "--quiet", "--out", "v.lf"],
    ],
    "show, score, predict, sample": None,  # of the gmm file fitted first
}
BAD_COMMANDS = {
    "fit gmm NaN": ["fit", "gmm", "nan.csv", "-k", "2", "--quiet"],
    "fit hmm bad option": ["fit", "hmm", "d.csv", "-k", "0", "--quiet"],
    "fit dist nuts raising": [
        *["fit", "dist", "c.csv", "--family", "poisson", "--prior", "rate=gamma:2,0.5"],
        *["--sample", "nuts", "--chains", "2", "--draws", "3", "--max-work", "10"],
    ],
    "fit vae NaN": ["fit", "vae", "--dataset", "nan.csv", "--epochs", "1", "--quiet"],
    "score a missing file": ["score", "missing.lf", "d.csv"],
}


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savetxt("d.csv", GAUSS, delimiter=",", header="a,b", comments="")
    np.savetxt("c.csv", COUNTS, delimiter=",", header="x", comments="")
    bad = GAUSS.copy()
    bad[5, 1] = np.nan
    np.savetxt("nan.csv", bad, delimiter=",", header="a,b", comments="")


def _invoke(args) -> int:
    from latentfit.cli import app

    return runner.invoke(app, args).exit_code


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_leaves_global_state_alone(name, files):
    with _unchanged():
        if COMMANDS[name] is None:
            codes = [_invoke(COMMANDS["fit gmm"])] + [
                _invoke(args)
                for args in (
                    ["show", "g.lf"],
                    ["score", "g.lf", "d.csv"],
                    ["predict", "g.lf", "d.csv"],
                    ["sample", "g.lf", "-n", "3", "--seed", "1"],
                )
            ]
        else:
            codes = [_invoke(COMMANDS[name])]
        assert codes == [0] * len(codes)


@pytest.mark.parametrize("name", list(BAD_COMMANDS))
def test_a_refused_command_leaves_global_state_alone(name, files):
    with _unchanged():
        assert _invoke(BAD_COMMANDS[name]) == 2


def test_arviz_logs_as_arviz_does_after_latentfit_called_it():
    """latentfit drops ArviZ's "Shape validation failed" line (fewer than 4 draws a chain) from
    its own calls (``MCMCResult.diagnostics`` says it in words); the filter stayed on ArviZ's
    logger after them, hiding that line from the user's own ArviZ calls for the rest of the
    process."""
    from latentfit.mcmc.result import import_arviz

    res = _sample("nuts", False)
    res.summary(), res.to_arviz(), res.rhat(), res.mcse(method="sd")
    log = import_arviz()._log
    assert not [f for f in log.filters if getattr(f, "__module__", "").startswith("latentfit")]
    with pytest.raises(ParameterError):  # ArviZ refusing an argument: taken off as well
        res.summary(hdi_prob=2.0)
    assert not [f for f in log.filters if getattr(f, "__module__", "").startswith("latentfit")]
