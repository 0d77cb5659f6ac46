"""A model's methods agree with each other, for every public estimator and the conjugate
posteriors of latentfit.estimate: ``score`` is the mean (mixtures, factor models, flows) or the
total (sequence models, as hmmlearn's) of ``score_samples``; ``predict`` is the argmax of
``predict_proba`` (an HMM's ``decode(algorithm="map")``; its ``predict`` is Viterbi, its
``algorithm``); ``bic``/``aic`` are their formulas from ``score`` and ``_n_parameters()``, whose
counts match scikit-learn's, hmmlearn's and a count by hand; ``sample`` draws what the model's
parameters say; ``lower_bound_`` is the log-likelihood at the parameters of the last E-step;
``transform`` is the posterior mean. One small fitted model per class, checked against
independent computations (scikit-learn, hmmlearn, closed forms, numerical integration).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import latentfit as lf
from latentfit import estimate

from .test_every_model_on_device import GAUSS, LENGTHS, MIXTURES, SEQUENCE_MODELS
from .test_io_round_trip import NETWORKS

FLOWS = {name: v for name, v in NETWORKS.items() if name != "DDPM"}
MODELS = {**SEQUENCE_MODELS, **MIXTURES, **NETWORKS}
SEQUENCES = list(SEQUENCE_MODELS)  # ordered: every xdist worker collects the same ids
# models with labels (mixtures) or states (HMMs, HSMMs) and a predict_proba
LABELLED = [n for n in MODELS if n not in ("PPCA", "FactorAnalysis", "LinearGaussianSSM")]
LABELLED = [n for n in LABELLED if n not in NETWORKS]
# the conjugate models of latentfit.estimate, with data they update on
CONJUGATES = {
    "BetaBernoulli": (lambda: estimate.BetaBernoulli(2.0, 3.0), [1, 0, 1, 1, 0, 1]),
    "BetaBinomial": (lambda: estimate.BetaBinomial(2.0, 3.0, total_count=5), [3, 1, 5, 2]),
    "GammaPoisson": (lambda: estimate.GammaPoisson(2.0, 0.5), [3, 0, 7, 2, 4]),
    "DirichletCategorical": (lambda: estimate.DirichletCategorical([1.0, 2.0, 0.5]), [0, 2, 1, 1]),
    "DirichletMultinomial": (
        lambda: estimate.DirichletMultinomial([1.0, 2.0, 0.5], total_count=4),
        [[1, 2, 1], [0, 4, 0], [3, 0, 1]],
    ),
    "NormalKnownVariance": (
        lambda: estimate.NormalKnownVariance(0.5, 2.0, 1.5),
        [0.3, -1.2, 2.1, 0.7],
    ),
    "NormalInverseGamma": (
        lambda: estimate.NormalInverseGamma(0.5, 2.0, 3.0, 2.0),
        [0.3, -1.2, 2.1, 0.7],
    ),
    "NormalInverseWishart": (
        lambda: estimate.NormalInverseWishart(torch.zeros(2), 1.5, 5.0, torch.eye(2)),
        [[0.3, -1.2], [2.1, 0.7], [-0.4, 0.1]],
    ),
}


@functools.cache
def fitted(name):
    make, X = MODELS[name]
    model = make("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few iterations: not converged, as meant
        model.fit(X, LENGTHS) if name in SEQUENCES else model.fit(X)
    return model, X


def _args(name, X):
    return (X, LENGTHS) if name in SEQUENCES else (X,)


# ---------------------------------------------------------------- score and score_samples
@pytest.mark.parametrize("name", list(MODELS))
def test_score_is_the_mean_or_total_of_score_samples(name):
    model, X = fitted(name)
    if name in SEQUENCES:
        # the total over the sequences, as hmmlearn's; score_samples gives it first
        total = model.score(X, LENGTHS)
        if name == "LinearGaussianSSM":
            np.testing.assert_allclose(total, model.score_samples(X, LENGTHS).sum(), rtol=1e-10)
        else:
            assert model.score_samples(X, LENGTHS)[0] == pytest.approx(total, rel=1e-10)
        # and the sum of the sequences scored one by one
        one_by_one = model.score(X[:70]) + model.score(X[70:])
        assert total == pytest.approx(one_by_one, rel=1e-10)
        return
    # a DDPM's: the mean of its bound per row
    per_row = model.score_samples(X)
    assert per_row.shape == (len(X),)
    # the mean taken in float64, as score takes it (numpy's float32 mean rounds at 1e-7)
    assert model.score(X) == pytest.approx(np.mean(per_row, dtype=np.float64), rel=1e-10)


@pytest.mark.parametrize("name", [n for n in MODELS if n not in SEQUENCES and n not in NETWORKS])
def test_score_with_sample_weight_is_the_weighted_mean(name):
    model, X = fitted(name)
    w = np.random.default_rng(3).uniform(0.1, 3.0, len(X))
    per_row = model.score_samples(X)
    assert model.score(X, sample_weight=w) == pytest.approx(
        (w * per_row).sum() / w.sum(), rel=1e-10
    )


# ---------------------------------------------------------------- predict and predict_proba
@pytest.mark.parametrize("name", LABELLED)
def test_predict_proba_rows_are_distributions_and_predict_their_argmax(name):
    model, X = fitted(name)
    args = _args(name, X)
    proba = model.predict_proba(*args)
    k = model.n_components if name in SEQUENCES else len(model.weights_)
    assert proba.shape == (len(X), k)
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-10)
    if name in SEQUENCES:
        # "map": the most probable state at every step, the argmax of the posteriors ...
        np.testing.assert_array_equal(model.decode(*args, algorithm="map")[1], proba.argmax(1))
        # ... and predict the model's algorithm, Viterbi by default: the best path
        assert model.algorithm == "viterbi"
        _, path = model.decode(*args, algorithm="viterbi")
        np.testing.assert_array_equal(model.predict(*args), path)
        return
    np.testing.assert_array_equal(model.predict(X), proba.argmax(1))


@pytest.mark.parametrize("name", [n for n in SEQUENCES if n in LABELLED])
def test_viterbi_log_prob_is_the_joint_log_probability_of_its_path(name):
    """decode's log-probability is log p(X, path): the total log-likelihood of X with the path
    as known states (score with ``y``), and at most score(X)."""
    model, X = fitted(name)
    log_prob, path = model.decode(X, LENGTHS, algorithm="viterbi")
    assert log_prob == pytest.approx(model.score(X, LENGTHS, y=path), rel=1e-9)
    assert log_prob <= model.score(X, LENGTHS) + 1e-9


# ---------------------------------------------------------------- bic, aic, _n_parameters
# the models with bic and aic (a Bayesian mixture is no point fit: it has neither)
CRITERIA = [n for n in MODELS if n not in NETWORKS and n != "BayesianGaussianMixture"]


@pytest.mark.parametrize("name", CRITERIA)
def test_bic_and_aic_are_their_formulas_from_score_and_the_parameter_count(name):
    model, X = fitted(name)
    p, n = model._n_parameters(), len(X)
    if name in SEQUENCES:
        log_l = model.score(X, LENGTHS)
        bic, aic = model.bic(X, LENGTHS), model.aic(X, LENGTHS)
    else:
        log_l = model.score(X) * n
        bic, aic = model.bic(X), model.aic(X)
    assert bic == pytest.approx(-2 * log_l + p * math.log(n), rel=1e-10)
    assert aic == pytest.approx(-2 * log_l + 2 * p, rel=1e-10)


@pytest.mark.parametrize("name", [n for n in CRITERIA if n not in SEQUENCES])
def test_weighted_bic_counts_the_weights_as_rows(name):
    """Integer frequency weights give the criteria of the rows repeated."""
    model, X = fitted(name)
    w = np.random.default_rng(4).integers(1, 4, len(X))
    repeated = np.repeat(X, w, axis=0)
    assert model.bic(X, sample_weight=w) == pytest.approx(model.bic(repeated), rel=1e-9)
    assert model.aic(X, sample_weight=w) == pytest.approx(model.aic(repeated), rel=1e-9)


def test_the_bayesian_mixture_offers_no_criteria():
    model, _ = fitted("BayesianGaussianMixture")
    assert not hasattr(model, "bic") and not hasattr(model, "_n_parameters")


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_parameter_count_is_scikit_learns(covariance_type):
    from sklearn.mixture import GaussianMixture

    X = GAUSS[:, :2]
    ours = lf.GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    theirs = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    assert ours._n_parameters() == theirs._n_parameters()


def _hmmlearn_count(theirs, params):
    return sum(n for letter, n in theirs._get_n_fit_scalars_per_param().items() if letter in params)


HMMLEARN_CASES = (
    [
        ("GaussianHMM", ct, params)
        for ct in ("full", "tied", "diag", "spherical")
        for params in ("stmc", "mc", "st")
    ]
    + [
        ("GMMHMM", ct, params)
        for ct in ("full", "tied", "diag", "spherical")
        for params in ("stmc", "c")
    ]
    + [
        ("PoissonHMM", None, "stl"),
        ("PoissonHMM", None, "l"),
        ("CategoricalHMM", None, "ste"),
        ("CategoricalHMM", None, "te"),
        ("MultinomialHMM", None, "ste"),
    ]
)


@pytest.mark.parametrize(("cls", "covariance_type", "params"), HMMLEARN_CASES)
def test_hmm_parameter_count_is_hmmlearns(cls, covariance_type, params):
    """hmmlearn's per-letter counts, of the letters the fit estimates (hmmlearn's GMMHMM counts
    n_mix − 1 mixture weights for all the states together: its "w" is left out here and
    counted by hand below)."""
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    _, X = MODELS[cls]
    kwargs = {} if covariance_type is None else {"covariance_type": covariance_type}
    if cls == "GMMHMM":
        kwargs["n_mix"] = 2
    ours = getattr(lf, cls)(3, params=params, n_iter=2, random_state=0, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X, LENGTHS)
    theirs = getattr(hmmlearn_hmm, cls)(3, **kwargs)
    theirs.n_features = X.shape[1] if cls != "CategoricalHMM" else int(X.max()) + 1
    assert ours._n_parameters() == _hmmlearn_count(theirs, params.replace("w", ""))


def _simplex_rows(a):
    """Free values of probability vectors along the last axis: one less than the entries."""
    a = np.asarray(a)
    return a.size - a.size // a.shape[-1]


def _symmetric(a):
    """Free values of symmetric (…, d, d) matrices."""
    a = np.asarray(a)
    d = a.shape[-1]
    return a.size // (d * d) * d * (d + 1) // 2


def _hand_count(name, m):
    """A count by hand from the fitted arrays: every entry, less one per probability vector
    and the repeated halves of symmetric matrices."""
    if name in SEQUENCES and name != "LinearGaussianSSM":
        k = m.n_components
        hsmm = "HSMM" in name
        count = {"s": k - 1, "t": k * (k - 2) if hsmm else _simplex_rows(m.transmat_)}
        if hsmm:
            count["d"] = np.size(m.duration_lambdas_)
        if "Gaussian" in name:
            count["m"] = np.size(m.means_)
            count["c"] = {"full": _symmetric(m.covars_), "diag": np.size(m.means_)}[
                m.covariance_type
            ]
        if name == "GMMHMM":
            assert m.covariance_type == "diag"  # covars_ (k, n_mix, d)
            count.update(m=np.size(m.means_), c=np.size(m.covars_), w=_simplex_rows(m.weights_))
        if "Poisson" in name:
            count["l"] = np.size(m.lambdas_)
        if "Categorical" in name or name == "MultinomialHMM":
            count["e"] = _simplex_rows(m.emissionprob_)
        if name == "AutoregressiveHMM":
            count.update(a=np.size(m.coefs_) + np.size(m.intercepts_), c=_symmetric(m.covars_))
        return sum(n for letter, n in count.items() if letter in m.params)
    if name == "LinearGaussianSSM":
        count = {
            "a": np.size(m.transition_matrix_),
            "c": np.size(m.observation_matrix_),
            "q": _symmetric(m.transition_covariance_),
            "r": _symmetric(m.observation_covariance_),
            "d": np.size(m.observation_offset_),
            "m": np.size(m.initial_state_mean_),
            "v": _symmetric(m.initial_state_covariance_),
        }
        return sum(count.values())
    if name in ("PPCA", "FactorAnalysis"):
        q, d = m.components_.shape
        # W up to a rotation of the factors: q(q − 1)/2 fewer
        return m.components_.size - q * (q - 1) // 2 + d + np.size(m.noise_variance_)
    weights = _simplex_rows(m.weights_)
    if name.startswith("GaussianMixture"):
        cov = _symmetric(m.covariances_)
        return weights + m.means_.size + cov
    if name == "PoissonMixture":
        return weights + m.rates_.size
    if name == "BernoulliMixture":
        return weights + m.means_.size
    if name in ("CategoricalMixture", "MultinomialMixture"):
        return weights + _simplex_rows(m.probs_)
    if name == "MixtureModel-gamma":
        return weights + 2 * 2  # shape and rate of each component
    if name == "MixtureModel-mixed":
        return weights + 2 + 1  # normal: mean, scale; exponential: rate
    raise AssertionError(name)


@pytest.mark.parametrize("name", CRITERIA)
def test_parameter_count_is_a_count_by_hand(name):
    model, _ = fitted(name)
    assert model._n_parameters() == _hand_count(name, model)


# ---------------------------------------------------------------- sample
N_DRAWS = 20_000


def _close_mean(draws, expected, what):
    """The mean of the draws within 5 standard errors of the model's (a loose check: at a
    fixed seed, a wrong mean shifted by a tenth of a standard deviation is 14 errors off)."""
    draws = np.asarray(draws, dtype=float).reshape(len(draws), -1)
    expected = np.asarray(expected, dtype=float).reshape(-1)
    se = draws.std(0) / math.sqrt(len(draws)) + 1e-12
    z = np.abs(draws.mean(0) - expected) / se
    assert (z < 5).all(), f"{what}: sample mean {draws.mean(0)} vs model {expected} (z = {z})"


def _component_means(name, m):
    """The mean of every component (k, d) from the fitted parameters."""
    if name.startswith(("GaussianMixture", "Bayesian", "Bernoulli")):
        return m.means_
    if name == "PoissonMixture":
        return m.rates_
    if name == "CategoricalMixture":
        return (m.probs_ * np.arange(m.probs_.shape[-1])).sum(-1)  # mean code per column
    if name == "MultinomialMixture":
        return round(m.mean_total_count_) * m.probs_
    if name == "MixtureModel-gamma":
        return np.array([c["concentration"] / c["rate"] for c in m.components_])
    if name == "MixtureModel-mixed":
        return np.array([m.components_[0]["loc"], 1 / m.components_[1]["rate"]])
    raise AssertionError(name)


MIXTURE_NAMES = [n for n in MIXTURES if n not in ("PPCA", "FactorAnalysis")]


@pytest.mark.parametrize("name", MIXTURE_NAMES)
def test_mixture_draws_follow_their_labels_components_and_weights(name):
    model, X = fitted(name)
    draws, labels = model.sample(N_DRAWS)
    assert draws.shape == (N_DRAWS, X.shape[1]) and labels.shape == (N_DRAWS,)
    k = len(model.weights_)
    counts = np.bincount(labels, minlength=k)
    assert len(counts) == k
    # the labels: multinomial counts of the weights
    se = np.sqrt(N_DRAWS * model.weights_ * (1 - model.weights_)) + 1e-12
    assert (np.abs(counts - N_DRAWS * model.weights_) < 5 * se).all(), (counts, model.weights_)
    means = _component_means(name, model).reshape(k, -1)
    for c in range(k):
        if counts[c] > 50:
            _close_mean(draws[labels == c], means[c], f"component {c}")
    _close_mean(draws, model.weights_ @ means, "the mixture")


@pytest.mark.parametrize("name", ["PPCA", "FactorAnalysis"])
def test_factor_model_draws_have_its_mean_and_covariance(name):
    model, X = fitted(name)
    draws = model.sample(N_DRAWS)
    assert draws.shape == (N_DRAWS, X.shape[1])
    _close_mean(draws, model.mean_, "the mean")
    cov = model.get_covariance()
    # the sample covariance: within 5 standard errors (var of a product of centred normals)
    c = draws - model.mean_
    prods = c[:, :, None] * c[:, None, :]
    se = prods.std(0) / math.sqrt(N_DRAWS)
    assert (np.abs(prods.mean(0) - cov) < 5 * se).all()


HMM_EMISSION_MEANS = {
    "GaussianHMM": lambda m: m.means_,
    "VariationalGaussianHMM": lambda m: m.means_,
    "GaussianHSMM": lambda m: m.means_,
    "GMMHMM": lambda m: np.einsum("km,kmd->kd", m.weights_, m.means_),
    "PoissonHMM": lambda m: m.lambdas_,
    "PoissonHSMM": lambda m: m.lambdas_,
    "CategoricalHMM": lambda m: m.emissionprob_ @ np.arange(m.emissionprob_.shape[1]),
    "VariationalCategoricalHMM": lambda m: m.emissionprob_ @ np.arange(m.emissionprob_.shape[1]),
    "CategoricalHSMM": lambda m: m.emissionprob_ @ np.arange(m.emissionprob_.shape[1]),
    "MultinomialHMM": lambda m: m.n_trials_ * m.emissionprob_,
}


@pytest.mark.parametrize("name", [n for n in SEQUENCES if n != "LinearGaussianSSM"])
def test_hmm_draws_are_one_sequence_whose_states_emit_and_move_as_the_model_says(name):
    model, X = fitted(name)
    draws, states = model.sample(N_DRAWS, random_state=5)
    assert draws.shape == (N_DRAWS, X.shape[1]) and states.shape == (N_DRAWS,)
    k = model.n_components
    assert states.min() >= 0 and states.max() < k
    # the moves between states (segments, for an HSMM): from each state, multinomial counts
    # of its row of transmat_
    change = states[1:] != states[:-1]
    frm, to = (
        (states[:-1], states[1:])
        if "HSMM" not in name
        else (states[:-1][change], states[1:][change])
    )
    moves = np.zeros((k, k))
    np.add.at(moves, (frm, to), 1)
    for i in range(k):
        n_i, p = moves[i].sum(), model.transmat_[i]
        se = np.sqrt(n_i * p * (1 - p)) + 1e-12
        assert (np.abs(moves[i] - n_i * p) < 5 * se + 1e-9).all(), (name, i, moves[i], p)
    if name in HMM_EMISSION_MEANS:
        means = np.asarray(HMM_EMISSION_MEANS[name](model)).reshape(k, -1)
        for i in range(k):
            if (states == i).sum() > 50:  # a state the chain hardly leaves for another
                _close_mean(draws[states == i], means[i], f"state {i}")


def test_hsmm_draws_last_as_its_durations_say():
    model, _ = fitted("PoissonHSMM")
    _, states = model.sample(N_DRAWS, random_state=6)
    edges = np.flatnonzero(np.diff(states)) + 1
    runs = np.diff(edges)  # whole segments (the first and the cut last left out)
    run_state = states[edges[:-1]]
    pmf = model._duration_pmf().cpu().numpy()  # (k, W) over 1..W
    for i in range(model.n_components):
        expected = pmf[i] @ np.arange(1, pmf.shape[1] + 1) / pmf[i].sum()
        _close_mean(runs[run_state == i], expected, f"durations of state {i}")


def test_ssm_draws_are_one_sequence_of_observations_and_states():
    model, X = fitted("LinearGaussianSSM")
    y, x = model.sample(N_DRAWS, random_state=7)
    assert y.shape == (N_DRAWS, X.shape[1]) and x.shape == (N_DRAWS, model.n_components)
    # observations given states: y = C x + d + v, v ~ N(0, R)
    resid = y - x @ model.observation_matrix_.T - model.observation_offset_
    _close_mean(resid, np.zeros(X.shape[1]), "the observation noise")
    r = np.cov(resid.T)
    np.testing.assert_allclose(r, model.observation_covariance_, rtol=0.1, atol=0.02)


# ---------------------------------------------------------------- lower_bound_
VARIATIONAL = ("BayesianGaussianMixture", "VariationalGaussianHMM", "VariationalCategoricalHMM")
EM_MODELS = [n for n in MODELS if n not in NETWORKS and n not in VARIATIONAL]


@pytest.mark.parametrize("name", EM_MODELS)
def test_lower_bound_is_the_log_likelihood_at_the_parameters_of_the_last_e_step(name):
    """scikit-learn's convention: the bound of the last iteration is computed at its E-step,
    from the parameters before its M-step, which are those of the same fit stopped one
    iteration earlier. Mean per row for the mixtures and factor models, the total for the
    sequence models (hmmlearn's monitor)."""
    model, X = fitted(name)
    assert model.lower_bound_ == model.lower_bounds_[-1]
    n_iter = model.n_iter_
    assert n_iter >= 2, "the fixture's fit must take two iterations for this law to say anything"
    key = "max_iter" if "max_iter" in model.get_params() else "n_iter"
    earlier = MODELS[name][0]("cpu").set_params(**{key: n_iter - 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        earlier.fit(X, LENGTHS) if name in SEQUENCES else earlier.fit(X)
    assert earlier.lower_bounds_ == pytest.approx(model.lower_bounds_[:-1], rel=1e-12)
    score = earlier.score(X, LENGTHS) if name in SEQUENCES else earlier.score(X)
    assert model.lower_bound_ == pytest.approx(score, rel=1e-9, abs=1e-9)
    # EM's bound is tight: the fitted parameters score at least as well
    final = model.score(X, LENGTHS) if name in SEQUENCES else model.score(X)
    assert final >= model.lower_bound_ - 1e-9 * abs(final)


# ---------------------------------------------------------------- transform, flows' densities
@pytest.mark.parametrize("name", ["PPCA", "FactorAnalysis"])
def test_transform_is_the_posterior_mean_of_the_factors(name):
    """E[z | x] = (I + Wᵀ Ψ⁻¹ W)⁻¹ Wᵀ Ψ⁻¹ (x − μ) (Bishop 2006, eq. 12.68 with Ψ diagonal),
    and score_samples the log-density of N(μ, W Wᵀ + Ψ) (scipy)."""
    model, X = fitted(name)
    W = model.components_.T  # (d, q)
    psi_inv = 1 / np.broadcast_to(model.noise_variance_, (X.shape[1],))
    M = np.eye(W.shape[1]) + W.T @ (psi_inv[:, None] * W)
    expected = np.linalg.solve(M, (W.T * psi_inv) @ (X - model.mean_).T).T
    np.testing.assert_allclose(model.transform(X), expected, rtol=1e-8, atol=1e-10)
    density = stats.multivariate_normal(model.mean_, W @ W.T + np.diag(1 / psi_inv))
    np.testing.assert_allclose(model.score_samples(X), density.logpdf(X), rtol=1e-9)
    np.testing.assert_allclose(model.get_covariance(), W @ W.T + np.diag(1 / psi_inv), rtol=1e-9)


GRID = np.linspace(-12, 12, 241)


@pytest.mark.parametrize("name", list(FLOWS))
def test_a_flows_density_integrates_to_one_and_its_draws_have_its_moments(name):
    """exp(score_samples) on a 2-D grid (the change of variables of every layer) holds all the
    mass, and the draws (the inverse pass) have the mean and second moments of that density:
    a wrong log-determinant breaks the first, an inverse that is not the forward's the
    second."""
    model, _ = fitted(name)
    h = GRID[1] - GRID[0]
    xx, yy = np.meshgrid(GRID, GRID, indexing="ij")
    points = np.c_[xx.ravel(), yy.ravel()]
    p = np.exp(model.score_samples(points)) * h * h
    assert p.sum() == pytest.approx(1.0, abs=1e-3)
    draws = model.sample(N_DRAWS, random_state=3)
    assert draws.shape == (N_DRAWS, 2)
    _close_mean(draws, p @ points, "the draws")
    second = np.c_[points**2, points[:, 0] * points[:, 1]]
    _close_mean(np.c_[draws**2, draws[:, 0] * draws[:, 1]], p @ second, "second moments")


# ---------------------------------------------------------------- conjugate posteriors
def _rows(x):
    return [x[i : i + 1] for i in range(len(x))]


@pytest.mark.parametrize("name", list(CONJUGATES))
def test_log_evidence_is_the_chain_of_posterior_predictives(name):
    """log p(x_1..x_n) = Σ_i log p(x_i | x_<i): the evidence of the prior equals the
    predictive of the posterior after every earlier observation, one at a time."""
    make, x = CONJUGATES[name]
    x = torch.as_tensor(x, dtype=torch.float64)
    model = make()
    total = 0.0
    for row in _rows(x):
        value = row[0].long() if name == "DirichletCategorical" else row[0]
        total += float(model.posterior_predictive().log_prob(value))
        model = model.update(row)
    assert float(make().log_evidence(x)) == pytest.approx(total, rel=1e-10)
    assert model.n_obs_ == len(x)


@pytest.mark.parametrize("name", list(CONJUGATES))
def test_updating_in_two_parts_is_updating_once(name):
    make, x = CONJUGATES[name]
    x = torch.as_tensor(x, dtype=torch.float64)
    once, twice = make().update(x), make().update(x[:2]).update(x[2:])
    assert once.n_obs_ == twice.n_obs_ == len(x)
    for key, value in once.hyperparameters().items():
        torch.testing.assert_close(value, twice.hyperparameters()[key], rtol=1e-12, atol=1e-12)


def _scipy_posteriors(name, m):
    """The posterior marginals of the parameters, as scipy distributions (per interval key)."""
    h = {k: v.numpy() for k, v in m.hyperparameters().items()}
    if name.startswith("Beta"):
        return {None: stats.beta(h["alpha"], h["beta"])}
    if name == "GammaPoisson":
        return {None: stats.gamma(h["alpha"], scale=1 / h["beta"])}
    if name.startswith("Dirichlet"):
        a = h["alpha"]
        return {None: stats.beta(a, a.sum() - a)}
    if name == "NormalKnownVariance":
        return {None: stats.norm(float(m.posterior.loc), float(m.posterior.scale))}
    if name == "NormalInverseGamma":
        scale = np.sqrt(h["beta"] / (h["alpha"] * h["kappa"]))
        return {
            "loc": stats.t(2 * h["alpha"], h["loc"], scale),
            "variance": stats.invgamma(h["alpha"], scale=h["beta"]),
        }
    return None


@pytest.mark.parametrize("name", [n for n in CONJUGATES if n != "NormalInverseWishart"])
def test_credible_interval_is_the_posteriors_equal_tailed_quantiles(name):
    make, x = CONJUGATES[name]
    model = make().update(torch.as_tensor(x, dtype=torch.float64))
    interval = model.credible_interval(0.9)
    for key, dist in _scipy_posteriors(name, model).items():
        got = (interval if key is None else interval[key]).numpy()
        expected = np.stack([dist.ppf(0.05), dist.ppf(0.95)], -1)
        np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=1e-6)


@pytest.mark.parametrize("name", list(CONJUGATES))
def test_the_predictive_mean_is_the_posterior_mean_of_the_observations_mean(name):
    make, x = CONJUGATES[name]
    model = make().update(torch.as_tensor(x, dtype=torch.float64))
    h = model.hyperparameters()
    if name.startswith("Beta"):
        expected = model.total_count * h["alpha"] / (h["alpha"] + h["beta"])
    elif name == "GammaPoisson":
        expected = h["alpha"] / h["beta"]
    elif name == "DirichletMultinomial":
        expected = model.total_count * h["alpha"] / h["alpha"].sum()
    elif name == "DirichletCategorical":
        probs = h["alpha"] / h["alpha"].sum()
        torch.testing.assert_close(model.posterior_predictive().probs, probs)
        return
    else:
        expected = model.posterior.mean
    torch.testing.assert_close(model.posterior_predictive().mean, expected.to(torch.float64))


def test_the_normal_inverse_gammas_joint_posterior_has_its_marginals():
    """∫ p(μ, σ² | x) dσ² is posterior_loc's density and ∫ dμ that of posterior_variance."""
    make, x = CONJUGATES["NormalInverseGamma"]
    model = make().update(torch.as_tensor(x, dtype=torch.float64))

    def joint(mu, var):
        return math.exp(float(model.posterior_log_prob(mu, var)))

    for mu in (-0.5, 0.4, 1.5):
        marginal, _ = integrate.quad(lambda v, mu=mu: joint(mu, v), 0, np.inf)
        assert math.log(marginal) == pytest.approx(
            float(model.posterior_loc.log_prob(torch.tensor(mu, dtype=torch.float64))), rel=1e-6
        )
    for var in (0.5, 2.0):
        marginal, _ = integrate.quad(lambda m, var=var: joint(m, var), -np.inf, np.inf)
        assert math.log(marginal) == pytest.approx(
            float(model.posterior_variance.log_prob(torch.tensor(var, dtype=torch.float64))),
            rel=1e-6,
        )


def test_ssm_score_and_predict_are_those_of_the_joint_gaussian():
    """A linear-Gaussian state-space model is one Gaussian over all the states and
    observations of a sequence: score is log N(Y; E[Y], Cov[Y]) and predict (the smoothed
    means) E[x | Y], both from the stacked covariance built by brute force."""
    model, X = fitted("LinearGaussianSSM")
    A, C = model.transition_matrix_, model.observation_matrix_
    Q, R = model.transition_covariance_, model.observation_covariance_
    Y, T, k = X[:6], 6, A.shape[0]
    mean_x = [model.initial_state_mean_]
    var_x = [model.initial_state_covariance_]
    for _ in range(T - 1):
        mean_x.append(A @ mean_x[-1])
        var_x.append(A @ var_x[-1] @ A.T + Q)
    cov_x = np.zeros((T * k, T * k))
    for s in range(T):
        for t in range(s, T):
            block = np.linalg.matrix_power(A, t - s) @ var_x[s]  # Cov(x_t, x_s)
            cov_x[t * k : (t + 1) * k, s * k : (s + 1) * k] = block
            cov_x[s * k : (s + 1) * k, t * k : (t + 1) * k] = block.T
    big_c = np.kron(np.eye(T), C)
    mean_y = (np.array(mean_x) @ C.T + model.observation_offset_).ravel()
    cov_y = big_c @ cov_x @ big_c.T + np.kron(np.eye(T), R)
    log_l = stats.multivariate_normal(mean_y, cov_y).logpdf(Y.ravel())
    assert model.score(Y) == pytest.approx(log_l, rel=1e-10)
    smoothed = np.ravel(mean_x) + cov_x @ big_c.T @ np.linalg.solve(cov_y, Y.ravel() - mean_y)
    np.testing.assert_allclose(model.predict(Y).ravel(), smoothed, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in EM_MODELS if n not in SEQUENCES])
def test_a_weighted_fits_lower_bound_is_the_weighted_mean_log_likelihood(name):
    """With sample_weight, lower_bound_ is score(X, sample_weight=w) at the parameters of the
    last E-step, and a fit from an ArraySource of the same weights ends at the same bound."""
    make, X = MODELS[name]
    w = np.random.default_rng(3).uniform(0.1, 3.0, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make("cpu").fit(X, sample_weight=w)
        assert model.n_iter_ >= 2, "the weighted fit must take two iterations to be compared"
        earlier = make("cpu").set_params(max_iter=model.n_iter_ - 1).fit(X, sample_weight=w)
        streamed = make("cpu").fit(lf.ArraySource(X, sample_weight=w))
    assert model.lower_bound_ == pytest.approx(earlier.score(X, sample_weight=w), rel=1e-9)
    assert streamed.lower_bound_ == pytest.approx(model.lower_bound_, rel=1e-9)
