"""One law for randomness, as scikit-learn users expect it, for every estimator and function that
draws: an int seed (0 to 2**32 - 1) gives the same result bit for bit on every call and in every
process, whatever the global RNGs hold; None gives fresh randomness; a numpy RandomState or
Generator or a torch.Generator is advanced (two calls with one instance differ, a fresh instance
seeded alike repeats the first); any other value is a ParameterError naming the argument and
what it takes (never a raw numpy or torch error, never a seed silently cut to fewer bits)."""

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import latentfit as lf
from latentfit.errors import ParameterError

_rng = np.random.default_rng(0)
X = _rng.normal(0, 1, (80, 2))  # no structure: every start of the fit ends somewhere else
COUNTS = _rng.poisson(3, (80, 2))
BINARY = (_rng.random((80, 3)) < 0.5).astype(float)
CODES = _rng.integers(0, 3, (80, 1))
TRIALS = _rng.multinomial(5, [0.2, 0.3, 0.5], 80)
LEVELS = _rng.integers(0, 256, (80, 2))

#: every estimator of latentfit.__all__ that takes random_state: a one-step fit (so that where it
#: starts shows in what it returns) and its data
ESTIMATORS = {
    "GaussianMixture": (
        lambda rs: lf.GaussianMixture(3, max_iter=1, init_params="random", random_state=rs),
        X,
    ),
    "MixtureModel": (
        lambda rs: lf.MixtureModel("normal", 3, max_iter=1, init_params="random", random_state=rs),
        X,
    ),
    "BernoulliMixture": (
        lambda rs: lf.BernoulliMixture(3, max_iter=1, init_params="random", random_state=rs),
        BINARY,
    ),
    "CategoricalMixture": (
        lambda rs: lf.CategoricalMixture(3, max_iter=1, init_params="random", random_state=rs),
        CODES,
    ),
    "MultinomialMixture": (
        lambda rs: lf.MultinomialMixture(3, max_iter=1, init_params="random", random_state=rs),
        TRIALS,
    ),
    "PoissonMixture": (
        lambda rs: lf.PoissonMixture(3, max_iter=1, init_params="random", random_state=rs),
        COUNTS,
    ),
    "BayesianGaussianMixture": (
        lambda rs: lf.BayesianGaussianMixture(
            n_components=3, max_iter=1, init_params="random", random_state=rs
        ),
        X,
    ),
    "FactorAnalysis": (
        lambda rs: lf.FactorAnalysis(1, init="random", max_iter=1, random_state=rs),
        X,
    ),
    "PPCA": (lambda rs: lf.PPCA(1, init="random", max_iter=1, random_state=rs), X),
    "GaussianHMM": (lambda rs: lf.GaussianHMM(2, n_iter=1, random_state=rs), X),
    "GMMHMM": (lambda rs: lf.GMMHMM(2, n_mix=2, n_iter=1, random_state=rs), X),
    "AutoregressiveHMM": (lambda rs: lf.AutoregressiveHMM(2, n_iter=1, random_state=rs), X),
    "CategoricalHMM": (lambda rs: lf.CategoricalHMM(2, n_iter=1, random_state=rs), CODES),
    "MultinomialHMM": (lambda rs: lf.MultinomialHMM(2, n_iter=1, random_state=rs), TRIALS),
    "PoissonHMM": (lambda rs: lf.PoissonHMM(2, n_iter=1, random_state=rs), COUNTS),
    "VariationalGaussianHMM": (
        lambda rs: lf.VariationalGaussianHMM(2, n_iter=1, random_state=rs),
        X,
    ),
    "VariationalCategoricalHMM": (
        lambda rs: lf.VariationalCategoricalHMM(2, n_iter=1, random_state=rs),
        CODES,
    ),
    "GaussianHSMM": (lambda rs: lf.GaussianHSMM(3, max_duration=4, n_iter=1, random_state=rs), X),
    "CategoricalHSMM": (
        lambda rs: lf.CategoricalHSMM(2, max_duration=4, n_iter=1, random_state=rs),
        CODES,
    ),
    "PoissonHSMM": (
        lambda rs: lf.PoissonHSMM(2, max_duration=4, n_iter=1, random_state=rs),
        COUNTS,
    ),
    "LinearGaussianSSM": (lambda rs: lf.LinearGaussianSSM(1, n_iter=1, random_state=rs), X),
    "MAF": (lambda rs: lf.MAF(n_layers=1, hidden=4, epochs=1, random_state=rs), X),
    "RealNVP": (lambda rs: lf.RealNVP(n_layers=1, hidden=4, epochs=1, random_state=rs), X),
    "NeuralSplineFlow": (
        lambda rs: lf.NeuralSplineFlow(n_layers=1, hidden=4, epochs=1, random_state=rs),
        X,
    ),
    "DDPM": (lambda rs: lf.DDPM(10, hidden=8, epochs=1, random_state=rs), LEVELS),
}

#: the instances a random_state may be, each made afresh with one seed
INSTANCES = {
    "RandomState": lambda: np.random.RandomState(3),
    "numpy Generator": lambda: np.random.default_rng(3),
    "torch Generator": lambda: torch.Generator().manual_seed(3),
}

#: values that are no seed: negative (torch maps -1 to 2**64 - 1), past 32 bits (torch's CPU
#: generator keeps only the low 32: 2**32 gave the fit of 0), not an integer, a bool
BAD_SEEDS = [-1, 2**32, 2**64, 2**64 + 1, 1.5, True, "0", np.float64(2.0)]


def _fitted(model) -> bytes:
    """Every fitted array and network weight of ``model``, as bytes (equal bytes: equal bits)."""
    parts = []
    for name in sorted(vars(model)):
        value = getattr(model, name)
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, torch.nn.Module):
            value = [v for _, v in sorted(value.state_dict().items())]
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
                parts.append(name.encode() + np.ascontiguousarray(v).tobytes())
    assert parts, f"{type(model).__name__} has no fitted arrays to compare"
    return b"".join(parts)


def _fit(name, random_state) -> bytes:
    make, data = ESTIMATORS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-step fits do not converge: not what is tested here
        return _fitted(make(random_state).fit(data))


def _stir_global_rngs(seed):
    """Put torch's and numpy's global RNGs in a state of ``seed``'s (which no fit may read)."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global state is what is stirred)
    torch.rand(seed + 1)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_an_int_seed_gives_the_same_fit_whatever_the_global_rngs_hold(name):
    _stir_global_rngs(1)
    first = _fit(name, 7)
    _stir_global_rngs(2)
    assert _fit(name, 7) == first
    assert _fit(name, np.int64(7)) == first  # a numpy integer is the same seed
    assert _fit(name, 8) != first  # the seed is used at all


@pytest.mark.parametrize("name", ESTIMATORS)
def test_none_draws_fresh_randomness(name):
    _stir_global_rngs(0)
    first = _fit(name, None)
    _stir_global_rngs(0)  # fresh entropy, not the global RNGs
    assert _fit(name, None) != first


@pytest.mark.parametrize("name", ESTIMATORS)
def test_an_instance_is_advanced_and_a_like_one_repeats(name):
    kind = list(INSTANCES)[list(ESTIMATORS).index(name) % len(INSTANCES)]  # each kind below
    instance = INSTANCES[kind]()
    first = _fit(name, instance)
    assert _fit(name, instance) != first, kind
    assert _fit(name, INSTANCES[kind]()) == first, kind


@pytest.mark.parametrize("kind", INSTANCES)
def test_every_kind_of_instance_is_taken(kind):
    instance = INSTANCES[kind]()
    first = _fit("GaussianHMM", instance)
    assert _fit("GaussianHMM", instance) != first
    assert _fit("GaussianHMM", INSTANCES[kind]()) == first


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_a_value_that_is_no_seed_is_named(name, seed):
    with pytest.raises(ParameterError, match=r"random_state.*(2\*\*32 - 1|int seed)"):
        _fit(name, seed)


@pytest.mark.parametrize("name", ["GaussianMixture", "GaussianHMM", "MAF"])
def test_the_largest_seed_is_taken_and_differs_from_the_smallest(name):
    assert _fit(name, 2**32 - 1) != _fit(name, 0)


# In fresh processes, each with its own PYTHONHASHSEED and global RNGs stirred to its own
# state: tests/test_io_reproducible.py, whose two processes write every estimator's file and
# every function's and sampler's result here named.


def _saved(path):
    """A model file's bytes: its tensors and its header (tests/test_io_reproducible.py)."""
    return Path(path).read_bytes()


# ---------------------------------------------------------------------- generator arguments
def _draws(result) -> bytes:
    """The draws or values a sampling function returned, as bytes."""
    if isinstance(result, dict):
        return b"".join(_draws(v) for _, v in sorted(result.items()))
    if isinstance(result, (list, tuple)):
        return b"".join(_draws(v) for v in result)
    if isinstance(result, torch.Tensor):
        return result.detach().cpu().numpy().tobytes()
    if isinstance(result, (int, float)):
        return np.float64(result).tobytes()
    return _draws(getattr(result, "draws", None) or vars(result))


def _nuts(generator):
    from torch.distributions import Normal, constraints

    from latentfit.mcmc import sample

    def log_density(mu, sigma):
        return Normal(mu, sigma).log_prob(torch.tensor([0.1, 0.5, -0.3])).sum()

    init = {"mu": 0.0, "sigma": 1.0}
    return sample(
        log_density, init, constraints={"sigma": constraints.positive}, num_chains=1,
        num_warmup=5, num_draws=5, progress_bar=False, compile=False, generator=generator,
    )  # fmt: skip


def _gibbs(which):
    def run(generator):
        import latentfit.mcmc as mcmc

        kw = dict(num_chains=1, num_warmup=2, num_draws=3, generator=generator)
        return getattr(mcmc, which)(X, 2, **kw)

    return run


def _bound(which):
    def run(generator):
        from torch.distributions import Normal

        import latentfit.vi as vi

        y = torch.tensor([0.3, -0.2], dtype=torch.float64)
        guide = vi.MeanFieldGaussian(1, dtype=torch.float64)
        prior = Normal(torch.zeros(1, dtype=torch.float64), 1.0)
        bound = getattr(vi, which)(
            lambda z, batch: Normal(z, 1.0).log_prob(y), guide, prior=prior, num_samples=3,
            generator=generator,
        )  # fmt: skip
        return bound()

    return run


def _batches(generator):
    from latentfit.vi import MiniBatches

    return [b[0] for b in MiniBatches(torch.arange(20.0), batch_size=7, generator=generator)]


_VAE = {}


def _vae_function(which, **kw):
    def run(generator):
        import latentfit.vae as vae

        if not _VAE:
            _VAE["model"] = vae.build_model(x_dim=3, z_dim=2, hidden=[4], seed=0)
        return getattr(vae, which)(
            _VAE["model"], torch.tensor(BINARY[:20]).float(), generator=generator, **kw
        )

    return run


def _vae_model(kind, method):
    def run(generator):
        import latentfit.vae as vae

        key = f"model {kind}"
        if key not in _VAE:
            extra = {"z2_dim": 2} if kind == "ladder" else {}
            _VAE[key] = vae.build_model(x_dim=3, z_dim=2, hidden=[4], kind=kind, seed=0, **extra)
        model = _VAE[key]
        if method == "sample_prior":
            return model.sample_prior(5, generator=generator)
        return model(torch.tensor(BINARY[:5]).float(), 2, generator).z

    return run


def _dequantize(generator):
    from latentfit.flows import dequantize

    return dequantize(torch.tensor(LEVELS[:10]).double(), 256, generator=generator)


#: every public function (and object) that draws from a ``generator`` argument
SAMPLERS = {
    "mcmc.sample": _nuts,
    "mcmc.gibbs_gmm": _gibbs("gibbs_gmm"),
    "mcmc.gibbs_hmm": _gibbs("gibbs_hmm"),
    "vi.StochasticELBO": _bound("StochasticELBO"),
    "vi.ImportanceWeightedBound": _bound("ImportanceWeightedBound"),
    "vi.MiniBatches": _batches,
    "vae.mutual_information": _vae_function("mutual_information"),
    "vae.marginal_log_likelihood": _vae_function("marginal_log_likelihood", k=5),
    "flows.dequantize": _dequantize,
    "VAE.forward": _vae_model("gaussian", "forward"),
    "VAE.sample_prior": _vae_model("gaussian", "sample_prior"),
    "DiscreteVAE.forward": _vae_model("discrete", "forward"),
    "DiscreteVAE.sample_prior": _vae_model("discrete", "sample_prior"),
    "LadderVAE.forward": _vae_model("ladder", "forward"),
    "LadderVAE.sample_prior": _vae_model("ladder", "sample_prior"),
}


def _run(name, generator) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _draws(SAMPLERS[name](generator))


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_generator_argument_follows_the_law(name):
    _stir_global_rngs(1)
    first = _run(name, 7)
    _stir_global_rngs(2)
    assert _run(name, 7) == first  # an int seed: the same draws, whatever the global RNGs hold
    assert _run(name, np.int64(7)) == first
    assert _run(name, 8) != first
    assert _run(name, None) != _run(name, None)  # None: fresh randomness
    for kind, make in INSTANCES.items():  # an instance advances; a like one repeats
        instance = make()
        once = _run(name, instance)
        assert _run(name, instance) != once, kind
        assert _run(name, make()) == once, kind


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_a_generator_that_is_no_seed_is_named(name, seed):
    with pytest.raises(ParameterError, match=r"generator.*(2\*\*32 - 1|int seed)"):
        _run(name, seed)


@pytest.mark.parametrize("which", ["StochasticELBO", "ImportanceWeightedBound"])
def test_a_bound_seeded_by_an_int_draws_afresh_at_every_call(which):
    # generator=7 drew the same z at every call (an optimiser saw one frozen sample); it is now
    # the stream of torch.Generator().manual_seed(7), which every call advances
    from torch.distributions import Normal

    import latentfit.vi as vi

    y = torch.tensor([0.3, -0.2], dtype=torch.float64)
    guide = vi.MeanFieldGaussian(1, dtype=torch.float64)
    prior = Normal(torch.zeros(1, dtype=torch.float64), 1.0)

    def values(generator):
        bound = getattr(vi, which)(
            lambda z, batch: Normal(z, 1.0).log_prob(y), guide, prior=prior, num_samples=2,
            generator=generator,
        )  # fmt: skip
        return [float(bound().detach()) for _ in range(3)]

    seeded = values(7)
    assert len(set(seeded)) == 3, seeded
    assert seeded == values(torch.Generator().manual_seed(7))


# ---------------------------------------------------------------------- functions with random_state
def _select(random_state) -> bytes:
    from latentfit.select import select_model

    result = select_model(
        X, n_components=[1, 2], covariance_types=["diag"], cv=2, random_state=random_state,
        max_iter=2, init_params="random",
    )  # fmt: skip
    return np.array([[r["loglik"], r["cv_loglik"]] for r in result.rows]).tobytes()


def _sequence_folds(random_state) -> bytes:
    from latentfit.select import sequence_folds

    folds, _ = sequence_folds([5] * 40, 3, random_state=random_state)
    return b"".join(f.test.tobytes() for f in folds)


FUNCTIONS = {"select_model": _select, "sequence_folds": _sequence_folds}


def _call(name, random_state) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FUNCTIONS[name](random_state)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_taking_random_state_follows_the_law(name):
    _stir_global_rngs(1)
    first = _call(name, 7)
    _stir_global_rngs(2)
    assert _call(name, 7) == first
    assert _call(name, np.int64(7)) == first
    assert _call(name, 8) != first
    _stir_global_rngs(0)
    fresh = _call(name, None)
    _stir_global_rngs(0)  # fresh entropy, not numpy's global state
    assert _call(name, None) != fresh
    for kind, make in INSTANCES.items():
        instance = make()
        once = _call(name, instance)
        assert _call(name, instance) != once, kind
        assert _call(name, make()) == once, kind


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_a_function_names_a_random_state_that_is_no_seed(name, seed):
    with pytest.raises(ParameterError, match=r"random_state.*(2\*\*32 - 1|int seed)"):
        _call(name, seed)


# ---------------------------------------------------------------------- seed arguments (ints only)
def _weights(model) -> bytes:
    return b"".join(p.detach().numpy().tobytes() for p in model.parameters())


def _train(seed) -> bytes:
    from latentfit.train import TrainConfig, train
    from latentfit.vae import ELBO, build_model

    model = build_model(x_dim=3, z_dim=2, hidden=[4], seed=0)
    data = torch.tensor(BINARY[:40]).float()
    config = TrainConfig(epochs=1, batch_size=20, seed=seed, progress=False, diagnostics=False)
    train(model, ELBO(), data, data, config)
    return _weights(model)


def _validation_bound(seed) -> bytes:
    from latentfit.train import validation_bound
    from latentfit.vae import ELBO, build_model

    model = build_model(x_dim=3, z_dim=2, hidden=[4], seed=0)
    return _draws(validation_bound(model, ELBO(), torch.tensor(BINARY[:40]).float(), seed=seed))


def _build_model(seed) -> bytes:
    from latentfit.vae import build_model

    return _weights(build_model(x_dim=3, z_dim=2, hidden=[4], seed=seed))


def _load_vae_data(seed) -> bytes:
    from latentfit.vae.data import load_vae_data

    split = load_vae_data("faithful", seed=seed).split
    return b"".join(getattr(split, part).numpy().tobytes() for part in ("train", "val", "test"))


#: every public function or setting named ``seed``: an int from 0 to 2**32 - 1 and nothing else
SEEDED = {
    "train": _train,
    "validation_bound": _validation_bound,
    "build_model": _build_model,
    "load_vae_data": _load_vae_data,
}


@pytest.mark.parametrize("name", SEEDED)
def test_a_seed_argument_follows_the_law(name):
    _stir_global_rngs(1)
    first = SEEDED[name](7)
    _stir_global_rngs(2)
    assert SEEDED[name](7) == first
    assert SEEDED[name](np.int64(7)) == first
    assert SEEDED[name](8) != first
    assert SEEDED[name](2**32 - 1) != SEEDED[name](0)


@pytest.mark.parametrize("name", SEEDED)
@pytest.mark.parametrize("seed", [*BAD_SEEDS, 2**64 - 1], ids=repr)
def test_a_seed_argument_names_a_value_that_is_no_seed(name, seed):
    # before: train raised "ValueError: Overflow when unpacking long long" for 2**64 - 1,
    # validation_bound gave the bound of 0 for 2**64, build_model the weights of 2**64 - 1 for -1
    with pytest.raises(ParameterError, match=r"seed.*(2\*\*32 - 1|integer)"):
        SEEDED[name](seed)


# ---------------------------------------------------------------------- the command line's --seed
def test_the_command_line_takes_the_seeds_of_the_api():
    from latentfit._validation import SEED_MAX
    from latentfit.cli.app import SEED_MAX as CLI_SEED_MAX

    assert CLI_SEED_MAX == SEED_MAX == 2**32 - 1


@pytest.mark.parametrize("command", [["fit", "gmm", "-k", "3"], ["fit", "hmm", "-k", "2"]])
def test_one_seed_on_the_command_line_saves_the_same_model(tmp_path, monkeypatch, command):
    from typer.testing import CliRunner

    from latentfit.cli.app import app

    monkeypatch.chdir(tmp_path)
    np.savetxt("x.csv", X, delimiter=",", header="a,b", comments="")

    def fit(seed, out):
        args = [*command[:2], "x.csv", *command[2:], "--seed", str(seed), "--out", out, "--force"]
        result = CliRunner().invoke(
            app, [*args, "--max-iter" if "gmm" in command else "--n-iter", "1"]
        )
        assert result.exit_code == 0, result.output
        return _saved(tmp_path / out)

    assert fit(7, "a.lf") == fit(7, "b.lf")
    assert fit(2**32 - 1, "c.lf") != fit(0, "d.lf")
    result = CliRunner().invoke(app, [*command[:2], "x.csv", *command[2:], "--seed", str(2**32)])
    assert result.exit_code == 2
    assert (
        "error: --seed takes a whole number from 0 to 4294967295; got 4294967296" in result.output
    ), result.output


# ---------------------------------------------------------------------- sample
@pytest.mark.parametrize("name", ESTIMATORS)
def test_sample_draws_from_the_estimators_random_state_by_one_rule(name):
    # MAF(random_state=5).sample(4) drew afresh at each call while GaussianMixture's and
    # GaussianHMM's repeated their draws (scikit-learn's and hmmlearn's rule); one rule now
    make, data = ESTIMATORS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeded, fresh = make(5).fit(data), make(None).fit(data)

    def draws(model, **kw):
        out = model.sample(50, **kw)  # enough draws that two fresh ones never coincide
        return b"".join(np.asarray(a).tobytes() for a in (out if isinstance(out, tuple) else [out]))

    assert draws(seeded) == draws(seeded)
    assert draws(fresh) != draws(fresh)
    if "random_state" in inspect.signature(seeded.sample).parameters:
        assert draws(fresh, random_state=3) == draws(fresh, random_state=3)
        with pytest.raises(ParameterError, match="random_state"):
            seeded.sample(4, random_state=2**32)


@pytest.mark.parametrize("kind", INSTANCES)
def test_saving_a_model_fitted_from_an_instance_names_random_state(tmp_path, monkeypatch, kind):
    # said "a constructor argument or setting is not JSON-serialisable (Object of type
    # Generator ...)" without naming which
    monkeypatch.chdir(tmp_path)
    model = lf.GaussianMixture(2, random_state=INSTANCES[kind]()).fit(X)
    with pytest.raises(ParameterError, match=r"random_state=.*an int seed"):
        lf.save(model, "m.lf")
    model.set_params(random_state=None)
    lf.save(model, "m.lf")
    assert lf.load("m.lf").random_state is None


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_a_torch_generator_on_any_device_seeds_a_fit(device):
    # a CUDA torch.Generator drew its seed with torch.randint on the CPU: torch's RuntimeError
    # "Expected a 'cpu' device type for generator but found 'cuda'"
    first = _fit("GaussianMixture", torch.Generator(device=device).manual_seed(3))
    assert _fit("GaussianMixture", torch.Generator(device=device).manual_seed(3)) == first
    assert _fit("GaussianMixture", torch.Generator(device=device).manual_seed(4)) != first
