"""Variational Bayesian HMMs: the lower bound of every iteration and the final posteriors
against hmmlearn's ``vhmm`` from the same start (every covariance type and the categorical
model, several sequences); the sub-normalised E-step against brute-force enumeration of the
state paths on every kernel; the bound never decreasing; the point estimates against the
ordinary HMMs; the Wishart terms against torch.distributions; save/load; the errors."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hmmlearn import vhmm
from scipy import special

import latentfit
from latentfit.em.driver import EMMonotonicityWarning
from latentfit.em.hmm.discrete import CategoricalHMM
from latentfit.em.hmm.gaussian import GaussianHMM
from latentfit.em.hmm.inference import posterior as K
from latentfit.em.hmm.variational import (
    VariationalCategoricalHMM,
    VariationalGaussianHMM,
    _VariationalHooks,
)
from latentfit.em.hmm.variational_math import (
    dirichlet_expected_log,
    kl_wishart,
    wishart_expected_log_det,
    wishart_log_normalizer,
)
from latentfit.em.sources.chunks import ArraySource
from latentfit.errors import DataError, ParameterError

# short fits that stop at n_iter on purpose
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
LENGTHS = [40, 25, 35]
GAUSSIAN_NAMES = (
    "startprob_prior_",
    "startprob_posterior_",
    "transmat_prior_",
    "transmat_posterior_",
    "means_prior_",
    "means_posterior_",
    "beta_prior_",
    "beta_posterior_",
    "dof_prior_",
    "dof_posterior_",
    "scale_prior_",
    "scale_posterior_",
)
CATEGORICAL_NAMES = GAUSSIAN_NAMES[:4] + ("emissionprob_prior_", "emissionprob_posterior_")


def gaussian_data(seed=0, n=sum(LENGTHS), d=2):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])[:, :d]
    z = np.repeat(np.arange(3), -(-n // 3))[:n]
    return centres[z] + rng.normal(size=(n, d))


def symbols(seed=0, n=sum(LENGTHS)):
    rng = np.random.default_rng(seed)
    z = np.repeat([0, 1], [n // 2, n - n // 2])
    probs = np.array([[0.6, 0.2, 0.1, 0.05, 0.05], [0.05, 0.05, 0.2, 0.3, 0.4]])
    return np.array([[rng.choice(5, p=probs[s])] for s in z])


def from_start(ref, names, model):
    """``model`` set to start from hmmlearn's initialised ``ref``: its priors as constructor
    arguments, its posteriors as attributes, init_params=""."""
    start = {a: np.copy(getattr(ref, a)) for a in names}
    priors = {a[:-1]: start[a] for a in names if a.endswith("_prior_")}
    model.set_params(init_params="", **priors)
    for a in names:
        if a.endswith("_posterior_"):
            setattr(model, a, start[a])
    return model


def assert_same_fit(ref, ours, names, constant):
    """The bound of every iteration (hmmlearn's plus the constant it leaves out) and every
    posterior and point estimate, to 1e-8 relative."""
    np.testing.assert_allclose(
        np.asarray(ours.lower_bounds_), np.asarray(ref.monitor_.history) - constant, rtol=1e-8
    )
    for a in [*names, "startprob_", "transmat_"]:
        np.testing.assert_allclose(getattr(ours, a), getattr(ref, a), rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------ against hmmlearn


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gaussian_equals_hmmlearn_from_the_same_start(covariance_type):
    X = gaussian_data()
    # run to convergence (tol 1e-6 on the bound's gain, both): ~27 iterations
    ref = vhmm.VariationalGaussianHMM(
        3, covariance_type=covariance_type, n_iter=200, random_state=1
    )
    ref._init(X, LENGTHS)  # hmmlearn's own start, then both run from it
    ours = from_start(ref, GAUSSIAN_NAMES, VariationalGaussianHMM(3, covariance_type, n_iter=200))
    ref.init_params = ""
    ref.fit(X, LENGTHS)
    ours.fit(X, LENGTHS)
    assert ours.converged_ and len(ours.lower_bounds_) == len(ref.monitor_.history) > 10
    # hmmlearn's expected log-densities leave out −d/2 log 2π at every step
    constant = X.size / 2 * math.log(2 * math.pi)
    assert_same_fit(ref, ours, GAUSSIAN_NAMES, constant)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covars_, ref.covars_, rtol=1e-8, atol=1e-12)
    # score and the posteriors are the ordinary HMM's under the point estimates, as hmmlearn's
    np.testing.assert_allclose(ours.score(X, LENGTHS), ref.score(X, LENGTHS), rtol=1e-10)
    np.testing.assert_allclose(
        ours.predict_proba(X, LENGTHS), ref.predict_proba(X, LENGTHS), atol=1e-9
    )
    np.testing.assert_array_equal(ours.predict(X, LENGTHS), ref.predict(X, LENGTHS))
    assert ours.lower_bound_ == ours.lower_bounds_[-1]
    assert list(ours.monitor_.history) == ours.lower_bounds_


def test_categorical_equals_hmmlearn_from_the_same_start():
    X = symbols()
    ref = vhmm.VariationalCategoricalHMM(3, n_iter=12, tol=-np.inf, random_state=1)
    ref._init(X, LENGTHS)
    ours = from_start(ref, CATEGORICAL_NAMES, VariationalCategoricalHMM(3, n_iter=12))
    ref.init_params = ""
    ref.fit(X, LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        ours.fit(X, LENGTHS)
    assert_same_fit(ref, ours, CATEGORICAL_NAMES, 0.0)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=1e-8)
    np.testing.assert_allclose(ours.score(X, LENGTHS), ref.score(X, LENGTHS), rtol=1e-10)


def test_fixed_covariances_equal_hmmlearn():
    """``params`` without "c": the means alone are updated, as hmmlearn's."""
    X = gaussian_data(1)
    ref = vhmm.VariationalGaussianHMM(
        3, "full", n_iter=6, tol=-np.inf, params="stm", random_state=2
    )
    ref._init(X, LENGTHS)
    ours = from_start(
        ref, GAUSSIAN_NAMES, VariationalGaussianHMM(3, "full", n_iter=6, params="stm")
    )
    ref.init_params = ""
    ref.fit(X, LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        ours.fit(X, LENGTHS)
    assert_same_fit(ref, ours, GAUSSIAN_NAMES, X.size / 2 * math.log(2 * math.pi))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fixed_means_keep_the_bound_rising(covariance_type):
    """``params`` without "m": the scale is the optimal q(Λ) given the kept means, so the
    bound never decreases and the scale stays positive definite (hmmlearn's update, written
    for new means, gives NaN bounds from this start for full and diag, a falling bound for
    spherical)."""
    X = gaussian_data(1)
    ref = vhmm.VariationalGaussianHMM(
        3, covariance_type, n_iter=6, tol=-np.inf, params="stc", random_state=2
    )
    ref._init(X, LENGTHS)
    model = VariationalGaussianHMM(3, covariance_type, n_iter=15, tol=-np.inf, params="stc")
    model = from_start(ref, GAUSSIAN_NAMES, model)
    start = np.copy(model.means_posterior_), np.copy(model.beta_posterior_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        model.fit(X, LENGTHS)
    np.testing.assert_array_equal(model.means_posterior_, start[0])
    np.testing.assert_array_equal(model.beta_posterior_, start[1])
    b = np.asarray(model.lower_bounds_)
    assert np.all(np.isfinite(b)) and np.all(np.diff(b) >= -1e-9 * np.abs(b[1:]))
    full = latentfit.em.hmm.emissions.fill_covars(
        torch.as_tensor(model.scale_posterior_), covariance_type, 3, 2
    )
    assert bool((torch.linalg.eigvalsh(full) > 0).all())


# ------------------------------------------------------------------ the E-step by enumeration


def enumerate_paths(log_e, log_pi, log_A, lengths, y=None):
    """Σ over the state paths of every sequence (through the known states ``y``) of
    π̃_{z_1} Π Ã_{z_{t−1} z_t} Π ẽ_t(z_t), with the sub-normalised parameters: log of the
    total, the marginals (t, k), the start counts and Σ ξ."""
    t, k = log_e.shape
    y = np.full(t, -1) if y is None else y
    total, gamma, start, xi = 0.0, np.zeros((t, k)), np.zeros(k), np.zeros((k, k))
    offset = 0
    for n in lengths:
        weights, paths = [], []
        for z in itertools.product(range(k), repeat=n):
            lab = y[offset : offset + n]
            if any(j >= 0 and j != s for j, s in zip(lab, z, strict=True)):
                continue
            w = log_pi[z[0]] + sum(log_e[offset + i, s] for i, s in enumerate(z))
            w += sum(log_A[a, b] for a, b in itertools.pairwise(z))
            weights.append(w)
            paths.append(z)
        weights = np.asarray(weights)
        log_z = special.logsumexp(weights)
        p = np.exp(weights - log_z)
        total += log_z
        for w, z in zip(p, paths, strict=True):
            start[z[0]] += w
            for i, s in enumerate(z):
                gamma[offset + i, s] += w
            for a, b in itertools.pairwise(z):
                xi[a, b] += w
        offset += n
    return total, gamma, start, xi


def tiny_model(kind):
    """A fitted tiny model (k = 2) and its data: T = 5 steps in sequences of 3 and 2."""
    lengths = [3, 2]
    if kind == "categorical":
        X = np.array([[0], [2], [1], [2], [0]])
        model = VariationalCategoricalHMM(2, n_iter=2, random_state=0, tol=-np.inf)
    else:
        X = gaussian_data(3, n=5)
        model = VariationalGaussianHMM(2, kind, n_iter=2, random_state=0, tol=-np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        model.fit(X, lengths)
    return model, X, lengths


@pytest.mark.parametrize("kind", [*COVARIANCE_TYPES, "categorical"])
def test_estep_is_the_sum_over_paths(kind):
    model, X, lengths = tiny_model(kind)
    Xt = model._checked_X(X, fitting=False)
    hooks = _VariationalHooks(model, Xt, lengths, None)
    params = {key: torch.as_tensor(np.asarray(getattr(model, key + "_"))) for key in model._vb_keys}
    if kind != "categorical":  # the fit keeps both means about its centre
        params["shift"] = Xt.mean(0)
        params["means_posterior"] = params["means_posterior"] - params["shift"]
        params["means_prior"] = params["means_prior"] - params["shift"]
    log_e = model._expected_emission_log_likelihood(params, Xt).numpy()
    log_pi = dirichlet_expected_log(params["startprob_posterior"]).numpy()
    log_A = dirichlet_expected_log(params["transmat_posterior"]).numpy()
    assert np.exp(log_pi).sum() < 1 and (np.exp(log_A).sum(1) < 1).all()  # sub-normalised
    if kind != "categorical":  # the expected log-density by its definition, state by state
        d = X.shape[1]
        S = latentfit.em.hmm.emissions.fill_covars(
            params["scale_posterior"], kind, 2, d
        ).numpy()  # (k, d, d)
        nu = np.broadcast_to(params["dof_posterior"].numpy(), (2,))
        beta, m = params["beta_posterior"].numpy(), model.means_posterior_
        for j in range(2):
            W = np.linalg.inv(S[j])
            e_logdet = special.digamma((nu[j] - np.arange(d)) / 2).sum() + d * np.log(2)
            e_logdet += np.linalg.slogdet(W)[1]
            diff = X - m[j]
            want = 0.5 * e_logdet - d / 2 * np.log(2 * np.pi) - 0.5 * d / beta[j]
            want = want - 0.5 * nu[j] * np.einsum("ti,ij,tj->t", diff, W, diff)
            np.testing.assert_allclose(log_e[:, j], want, rtol=1e-12)
    total, gamma, start, xi = enumerate_paths(log_e, log_pi, log_A, lengths)
    stats = hooks.estep(params, (Xt, lengths))
    np.testing.assert_allclose(float(stats["log_likelihood"].sum()), total, rtol=1e-12)
    np.testing.assert_allclose(stats["start"].numpy(), start, atol=1e-12)
    np.testing.assert_allclose(stats["trans"].numpy(), xi, atol=1e-12)
    # every kernel the dispatcher can choose takes the sub-normalised parameters
    pi, A = np.exp(log_pi), np.exp(log_A)
    for options in ({"compiled": True}, {"compiled": False}, {"parallel": False}):
        post = K.posterior(
            torch.as_tensor(log_e), torch.as_tensor(pi), torch.as_tensor(A), lengths, **options
        )
        np.testing.assert_allclose(float(post.log_likelihood), total, rtol=1e-12)
        np.testing.assert_allclose(post.posteriors.numpy(), gamma, atol=1e-12)
        np.testing.assert_allclose(post.transition_counts.numpy(), xi, atol=1e-12)
    # with known states, the sum over the paths through them
    y = np.array([-1, 1, -1, 0, -1])
    total_y, gamma_y, _, xi_y = enumerate_paths(log_e, log_pi, log_A, lengths, y)
    post = K.posterior(
        torch.as_tensor(log_e), torch.as_tensor(pi), torch.as_tensor(A), lengths, states=y
    )
    np.testing.assert_allclose(float(post.log_likelihood), total_y, rtol=1e-12)
    np.testing.assert_allclose(post.posteriors.numpy(), gamma_y, atol=1e-12)
    np.testing.assert_allclose(post.transition_counts.numpy(), xi_y, atol=1e-12)


# ------------------------------------------------------------------ the bound and the fit


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bound_never_decreases(covariance_type):
    # four states for three clusters: a state no data needs falls back to its prior
    X = gaussian_data(4, n=240)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        model = VariationalGaussianHMM(
            4, covariance_type, n_iter=60, tol=-np.inf, random_state=0, n_init=2
        ).fit(X, [120, 80, 40])
    for bounds in model.all_lower_bounds_:
        assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))
    assert model.lower_bound_ == max(b[-1] for b in model.all_lower_bounds_)
    assert np.isfinite(model.covars_).all()


def test_categorical_bound_never_decreases():
    X = symbols(5, n=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        model = VariationalCategoricalHMM(3, n_iter=50, tol=-np.inf, random_state=0).fit(
            X, [100, 200]
        )
    b = np.asarray(model.lower_bounds_)
    assert np.all(np.diff(b) >= -1e-9 * np.abs(b[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_point_estimates_are_the_ordinary_hmms(covariance_type):
    """score, decode and sample are GaussianHMM's with the posterior means."""
    X = gaussian_data(6)
    model = VariationalGaussianHMM(3, covariance_type, random_state=0, n_iter=30).fit(X, LENGTHS)
    post_mean = model.transmat_posterior_ / model.transmat_posterior_.sum(1, keepdims=True)
    np.testing.assert_allclose(model.transmat_, post_mean, rtol=1e-14)
    dof = np.asarray(model.dof_posterior_)
    dof = dof.reshape(-1, *[1] * (model.scale_posterior_.ndim - 1)) if dof.ndim else dof
    np.testing.assert_allclose(model._covars_, model.scale_posterior_ / dof, rtol=1e-14)
    hmm = GaussianHMM(3, covariance_type, init_params="")
    hmm.startprob_, hmm.transmat_, hmm.means_ = model.startprob_, model.transmat_, model.means_
    hmm.covars_ = model._covars_
    assert model.score(X, LENGTHS) == pytest.approx(hmm.score(X, LENGTHS), rel=1e-12)
    assert model.decode(X, LENGTHS)[0] == pytest.approx(hmm.decode(X, LENGTHS)[0], rel=1e-12)
    np.testing.assert_array_equal(
        model.sample(20, random_state=3)[1], hmm.sample(20, random_state=3)[1]
    )


def test_categorical_point_estimates_are_the_ordinary_hmms():
    X = symbols(7)
    model = VariationalCategoricalHMM(2, random_state=0, n_iter=30).fit(X, LENGTHS)
    hmm = CategoricalHMM(2, init_params="")
    hmm.startprob_, hmm.transmat_, hmm.emissionprob_ = (
        model.startprob_,
        model.transmat_,
        model.emissionprob_,
    )
    assert model.score(X, LENGTHS) == pytest.approx(hmm.score(X, LENGTHS), rel=1e-12)
    np.testing.assert_array_equal(model.predict(X, LENGTHS), hmm.predict(X, LENGTHS))


def test_known_states_give_the_conjugate_posterior():
    """With every state known (y), q(z) is the labelling itself, and one VB-EM iteration
    gives the conjugate posteriors: prior + counted starts, transitions and emissions."""
    X = gaussian_data(11)
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        model = VariationalGaussianHMM(3, "diag", n_iter=1, random_state=0).fit(X, LENGTHS, y=y)
    starts = np.cumsum([0, *LENGTHS[:-1]])
    ends = np.cumsum(LENGTHS)
    trans = np.zeros((3, 3))
    for a, b in zip(starts, ends, strict=True):
        np.add.at(trans, (y[a : b - 1], y[a + 1 : b]), 1.0)
    np.testing.assert_allclose(model.transmat_posterior_, 1 / 3 + trans, rtol=1e-12)
    np.testing.assert_allclose(
        model.startprob_posterior_, 1 / 3 + np.bincount(y[starts], minlength=3), rtol=1e-12
    )
    counts = np.bincount(y, minlength=3)
    np.testing.assert_allclose(model.beta_posterior_, 1 + counts, rtol=1e-12)
    sums = np.stack([X[y == j].sum(0) for j in range(3)])
    np.testing.assert_allclose(
        model.means_posterior_, (X.mean(0) + sums) / (1 + counts)[:, None], rtol=1e-10
    )
    cat = VariationalCategoricalHMM(3, n_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        cat.fit(symbols(11), LENGTHS, y=y)
    table = np.zeros((3, 5))
    np.add.at(table, (y, symbols(11)[:, 0]), 1.0)
    np.testing.assert_allclose(cat.emissionprob_posterior_, 1 / 5 + table, rtol=1e-12)


def test_float32_follows_float64():
    X = gaussian_data(8)
    kw = dict(n_components=3, covariance_type="full", random_state=0, n_iter=8, tol=-np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        m64 = VariationalGaussianHMM(**kw).fit(X, LENGTHS)
        m32 = VariationalGaussianHMM(**kw, dtype="float32").fit(X, LENGTHS)
    assert m32.means_.dtype == np.float32
    # float32 rounding of the statistics (~1e-7 relative) carried over 8 iterations
    np.testing.assert_allclose(m32.lower_bounds_, m64.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(m32.means_, m64.means_, rtol=1e-4, atol=1e-4)


def test_data_far_from_the_origin_keep_their_digits():
    """The bound is invariant under a translation of the data (the default prior mean moves
    with it); kept about the fit's centre, the statistics and means lose no digits to it."""
    X = gaussian_data(10)
    kw = dict(n_components=3, covariance_type="full", random_state=0, n_iter=10, tol=-np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        near = VariationalGaussianHMM(**kw).fit(X, LENGTHS)
        far = VariationalGaussianHMM(**kw).fit(X + 1e7, LENGTHS)
    # the same start up to the rounding of X + 1e7 (~2e-9 per entry); uncentred moments
    # (Σ x xᵀ ~ 1e16) would leave errors of order 1 in the scales
    np.testing.assert_allclose(far.lower_bounds_, near.lower_bounds_, rtol=1e-9)
    np.testing.assert_allclose(far.means_ - 1e7, near.means_, atol=1e-7)


# ------------------------------------------------------------------ the Wishart terms


def test_wishart_terms_against_torch_distributions():
    g = torch.Generator().manual_seed(0)
    d, nu = 3, torch.tensor(5.5, dtype=torch.float64)
    B = torch.randn(d, d, generator=g, dtype=torch.float64)
    S = B @ B.T + d * torch.eye(d, dtype=torch.float64)  # the inverse scale
    wishart = torch.distributions.Wishart(df=nu, covariance_matrix=torch.linalg.inv(S))
    C = torch.randn(d, d, generator=g, dtype=torch.float64)
    lam = C @ C.T + torch.eye(d, dtype=torch.float64)  # any positive-definite point
    # log p(Λ) = (ν − d − 1)/2 log|Λ| − tr(S Λ)/2 − log Z
    log_p = (nu - d - 1) / 2 * torch.logdet(lam) - 0.5 * torch.trace(S @ lam)
    log_p = log_p - wishart_log_normalizer(nu, S)
    np.testing.assert_allclose(float(log_p), float(wishart.log_prob(lam)), rtol=1e-12)
    # E[log|Λ|] by the derivative of the log-normaliser: d/dν log Z = ½ E[log|Λ|]
    nu_ = nu.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(wishart_log_normalizer(nu_, S), nu_)
    np.testing.assert_allclose(2 * float(grad), float(wishart_expected_log_det(nu, S)), rtol=1e-12)
    assert float(kl_wishart(nu, S, nu, S)) == pytest.approx(0.0, abs=1e-12)
    assert float(kl_wishart(nu + 2, S * 1.5, nu, S)) > 0


# ------------------------------------------------------------------ persistence and errors


@pytest.mark.parametrize("covariance_type", ["full", "tied", "spherical"])
def test_save_load_round_trip(tmp_path, covariance_type):
    X = gaussian_data(9)
    model = VariationalGaussianHMM(
        3, covariance_type, random_state=0, n_iter=20, means_prior=np.zeros(2)
    ).fit(X, LENGTHS)
    model.save(tmp_path / "m.lf")
    back = latentfit.load(tmp_path / "m.lf")
    assert type(back) is VariationalGaussianHMM
    for a in GAUSSIAN_NAMES:
        np.testing.assert_array_equal(np.asarray(getattr(back, a)), np.asarray(getattr(model, a)))
    assert back.score(X, LENGTHS) == model.score(X, LENGTHS)
    assert back.lower_bounds_ == model.lower_bounds_
    assert back.lower_bound_ == model.lower_bound_
    cat = VariationalCategoricalHMM(2, random_state=0, n_iter=5).fit(symbols(), LENGTHS)
    cat.save(tmp_path / "c.lf")
    back = latentfit.load(tmp_path / "c.lf")
    np.testing.assert_array_equal(back.emissionprob_posterior_, cat.emissionprob_posterior_)
    assert back.score(symbols(), LENGTHS) == cat.score(symbols(), LENGTHS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta_prior": -1.0}, "beta_prior must hold finite, positive"),
        ({"dof_prior": 0.5}, r"dof_prior must exceed n_features - 1 = 1"),
        ({"scale_prior": -np.eye(2)}, "scale_prior must be symmetric positive definite"),
        ({"means_prior": np.zeros(3)}, r"means_prior must be .* broadcasts to shape \(3, 2\)"),
        ({"transmat_prior": np.ones((2, 2))}, r"transmat_prior .* shape \(3, 3\)"),
        ({"startprob_prior": np.nan}, "startprob_prior must hold finite, positive"),
        ({"covariance_type": "banded"}, "covariance_type must be one of"),
        ({"n_init": 0}, "n_init must be a positive integer"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        VariationalGaussianHMM(3, **kwargs).fit(gaussian_data(), LENGTHS)


def test_bad_posteriors_and_data_name_the_problem():
    X = gaussian_data()
    model = VariationalGaussianHMM(3, init_params="stc")
    model.means_posterior_ = np.zeros((2, 2))
    model.beta_posterior_ = np.ones(3)
    with pytest.raises(ParameterError, match=r"means_posterior_ must have shape \(3, 2\)"):
        model.fit(X, LENGTHS)
    model = VariationalGaussianHMM(3, "tied", init_params="stm")
    model.dof_posterior_, model.scale_posterior_ = 4.0, np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ParameterError, match="scale_posterior_ must be symmetric positive"):
        model.fit(X, LENGTHS)
    with pytest.raises(DataError, match="lengths sum to 99"):
        VariationalGaussianHMM(3).fit(X, [40, 25, 34])
    with pytest.raises(DataError, match="fewer than n_components"):
        VariationalGaussianHMM(3).fit(X[:2])
    with pytest.raises(ParameterError, match="in-memory arrays only"):
        VariationalGaussianHMM(3).fit(ArraySource(X))
    with pytest.raises(DataError, match="symbols must be non-negative; row 1"):
        VariationalCategoricalHMM(2).fit(np.array([[0], [-1], [1]]))
    with pytest.raises(ParameterError, match=r"emissionprob_prior .* shape \(2, 3\)"):
        VariationalCategoricalHMM(2, emissionprob_prior=np.ones(4)).fit(np.array([[0], [2], [1]]))
    fitted = VariationalGaussianHMM(3, random_state=0, n_iter=3).fit(X, LENGTHS)
    with pytest.raises(DataError, match="X has 3 features but the model was fitted with 2"):
        fitted.score(np.zeros((4, 3)))


def test_a_posterior_set_by_hand_that_is_not_numeric_names_itself():
    """A posterior attribute that is not an array of numbers is a ParameterError naming it
    (was numpy's raw 'could not convert string to float')."""
    model = VariationalGaussianHMM(3, init_params="stc")
    model.means_posterior_ = "abc"
    model.beta_posterior_ = np.ones(3)
    with pytest.raises(
        ParameterError, match=r"means_posterior_ must have shape \(3, 2\), got 'abc'"
    ):
        model.fit(gaussian_data(), LENGTHS)


@pytest.mark.parametrize("cls", [VariationalGaussianHMM, VariationalCategoricalHMM])
def test_partial_fit_is_refused_by_name(cls):
    """Inherited from the HMMs, online EM would run on point estimates and failed with a raw
    AttributeError / TypeError; it is refused, naming what to use instead."""
    X = np.random.default_rng(0).integers(0, 2, size=(50, 1))
    with pytest.raises(ParameterError, match=r"has no partial_fit.*fit\(\)"):
        cls(n_components=2).partial_fit(X)


def _direct_score(model, X) -> float:
    """log p(X) of one sequence under the point estimates, in float64 from x − μ_k (scipy's
    densities, the forward recursion in log space): the reference for the far-state rule."""
    from scipy.stats import multivariate_normal

    X = np.asarray(X, dtype=np.float64)
    means, covars = model.means_.astype(np.float64), model.covars_.astype(np.float64)
    ll = np.stack(
        [multivariate_normal(means[k], covars[k]).logpdf(X).reshape(-1) for k in range(len(means))],
        1,
    )
    with np.errstate(divide="ignore"):
        log_a = np.log(model.transmat_.astype(np.float64))
        alpha = np.log(model.startprob_.astype(np.float64)) + ll[0]
    for row in ll[1:]:
        alpha = special.logsumexp(alpha[:, None] + log_a, 0) + row
    return float(special.logsumexp(alpha))


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
def test_a_state_far_from_the_centre_is_computed_about_its_own_mean(ct):
    # found by hand: rows 3, 5, 7 and two rows of 1e8 (x4), with a prior too weak to pull
    # the means (beta_prior=1e-30): float64 stopped with "state 1 has a non-positive variance
    # (-0.444)", the update about the data's centre rounding by ~0.4 there. The state is now
    # computed from x - m_k, its moments about m_k, and fitted as the update says:
    # (S0 + sum (x - 5)^2) / (nu0 + 12) = (1e-3 + 32) / 13, and 1e-3 / 9 on the rows of 1e8
    far = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        m = VariationalGaussianHMM(
            2, covariance_type=ct, beta_prior=1e-30, random_state=0, n_iter=50
        ).fit(far)
    order = np.argsort(m.means_[:, 0])
    np.testing.assert_allclose(m.means_[order, 0], [5.0, 1e8], rtol=1e-12)
    np.testing.assert_allclose(m.covars_[order, 0, 0], [32.001 / 13, 1e-3 / 9], rtol=1e-9)
    assert m.score(far) == pytest.approx(_direct_score(m, far), abs=1e-9)


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
def test_float32_fits_a_tight_state_far_from_the_others_as_float64_does(ct):
    # a cluster of sd 0.01 at 0 and one of sd 1 at 100 (beta_prior=1e-6: the default 1 pulls
    # both means towards the data mean, hmmlearn's model): float32 stopped with "state 1 has a
    # non-positive variance (-0.000447)" (diag, full), or gave the tight state a variance of
    # 1.7e-5 (1.15e-4 is right), a score of 109.5 (698.2) and a bound of 1125 (600.1)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(100, 1, (200, 2))]
    kw = dict(n_components=2, covariance_type=ct, beta_prior=1e-6, random_state=0, n_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        ref = VariationalGaussianHMM(**kw).fit(X)
        m = VariationalGaussianHMM(**kw, dtype="float32").fit(X)
    order, ref_order = np.argsort(m.means_[:, 0]), np.argsort(ref.means_[:, 0])
    var, ref_var = m.covars_[order, 0, 0], ref.covars_[ref_order, 0, 0]
    # the tight state to float32's rounding; the wide one stays in the fast form, whose
    # float32 statistics about the centre (50 away) round its variance by ~1e-3
    np.testing.assert_allclose(var[0], ref_var[0], rtol=1e-5)
    np.testing.assert_allclose(var[1], ref_var[1], rtol=2e-3)
    assert ref.score(X) == pytest.approx(_direct_score(ref, X), abs=1e-8)
    # float32 densities: far_components leaves a state in the fast form up to 1e-3 nats of
    # rounding per log-density (the wide one: ~1e-4 here), 400 rows
    assert m.score(X) == pytest.approx(_direct_score(m, X), abs=400 * 1e-3)
    assert m.score(X) == pytest.approx(ref.score(X), rel=1e-4)
    assert m.lower_bound_ == pytest.approx(ref.lower_bound_, rel=2e-4)


@pytest.mark.parametrize("ct", ["full", "tied"])
def test_a_collapsed_covariance_names_scale_prior_which_the_model_has(ct):
    # two identical columns and a scale prior of 1e-30: the states' covariances are singular.
    # The advice was "a larger min_covar ... or covars_prior", arguments this class lacks
    # (a TypeError when tried); its floor is the Wishart's scale_prior
    x = np.random.default_rng(0).normal(size=60)
    X = np.c_[x, x]
    kw = dict(covariance_type=ct, random_state=0, n_iter=20)
    model = VariationalGaussianHMM(2, scale_prior=np.eye(2) * 1e-30, **kw)
    with pytest.raises(latentfit.errors.LatentfitError, match="not positive definite") as err:
        model.fit(X)
    assert "larger scale_prior" in str(err.value) and "min_covar" not in str(err.value)
    assert "covariance of the tied" not in str(err.value)
    with pytest.raises(TypeError):
        VariationalGaussianHMM(2, min_covar=1e-3)
    assert np.isfinite(
        VariationalGaussianHMM(2, scale_prior=np.eye(2) * 1e-3, **kw).fit(X).score(X)
    )


def test_a_scale_singular_to_working_precision_is_named_not_torch_s_linalg_error():
    # x and x + 1e8: Cholesky passed the state's scale (rounding made it barely positive
    # definite) and the bound's solve raised torch's "_LinAlgError: ... singular" unnamed
    x = np.random.default_rng(0).normal(size=60)
    X = np.c_[x, x + 1e8]
    kw = dict(covariance_type="full", random_state=0, n_iter=20)
    model = VariationalGaussianHMM(2, scale_prior=np.eye(2) * 1e-30, **kw)
    # the start (the data covariance plus that prior's 1e-30) is as barely positive definite
    # and the first E-step names the state; before the start's floor followed scale_prior, it
    # was + 1e-3 and the bound named it. Which state rounding leaves the less definite one
    # depends on the machine's summation order (state 0 on one machine, 1 on another)
    match = (
        r"state\(s\) \[[01]\]('s Wishart scale posterior is singular| is not positive definite)"
        r".*larger scale_prior"
    )
    with pytest.raises(latentfit.errors.LatentfitError, match=match):
        model.fit(X)
    assert np.isfinite(VariationalGaussianHMM(2, **kw).fit(X).score(X))


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
def test_a_state_far_from_the_data_centre_keeps_the_digits_of_its_mean(ct):
    # rows near 2.4 and one at 1e17 under a weak prior on the means: the means were kept as
    # c + (m_k - c) through the fit, c the data's mean (1.7e15, spaced by 0.25), and the
    # group's came out 2.5 (the rows' mean is 2.4957)
    rng = np.random.default_rng(0)
    X = rng.normal(2.4, 1, (60, 1))
    X[30] = 1e17
    ref = vhmm.VariationalGaussianHMM(
        2, covariance_type=ct, n_iter=50, random_state=1, beta_prior=np.full(2, 1e-30)
    )
    ref._init(X, [60])
    ours = from_start(ref, GAUSSIAN_NAMES, VariationalGaussianHMM(2, ct, n_iter=50))
    ours.fit(X)
    near = int(np.argmin(ours.means_[:, 0]))
    # beta_prior 1e-30 moves the mean by 1e-30 of the prior's distance: the rows' mean
    np.testing.assert_allclose(ours.means_[near], np.delete(X, 30, 0).mean(0), rtol=1e-9)
    np.testing.assert_array_equal(ours.means_[1 - near], X[30])
    if ct == "spherical":  # hmmlearn's own diag and full updates fail on these rows
        ref.init_params = ""
        ref.fit(X, [60])
        np.testing.assert_allclose(ours.means_[near], ref.means_[near], rtol=1e-9)
        np.testing.assert_allclose(ours.covars_[near], ref.covars_[near], rtol=1e-9)


def _vb_labelled(X, z, scale_prior, tied=False):
    """The VB fixed point when every posterior is 0 or 1 (regimes 1e8 noise sd apart), with
    the default priors (m₀ the data mean, β₀ = 1, ν₀ = d): each state's posterior mean and
    point covariance S_k / ν_k from its own rows (Bishop 2006, eqs. 10.60-10.63; tied: S₀
    plus the states' terms, over ν₀ + N), and the variance along (1, -1)/√2 taken from the
    rows along it (exact where S_k's entries of ~4e15 round by ~1)."""
    m0, v = X.mean(0), np.array([1.0, -1.0]) / np.sqrt(2)
    means, terms, across = [], [], []  # terms: S_k − S₀; across: v (S_k − S₀) v
    for k in (0, 1):
        R = X[z == k]
        n, xb = len(R), R.mean(0)
        pull = n / (1 + n)  # β₀ N / (β₀ + N)
        means.append((m0 + n * xb) / (1 + n))
        terms.append((R - xb).T @ (R - xb) + pull * np.outer(xb - m0, xb - m0))
        across.append(((R - xb) @ v) @ ((R - xb) @ v) + pull * ((xb - m0) @ v) ** 2)
    terms, across, dof = np.array(terms), np.array(across), 2 + np.bincount(z)
    if tied:
        terms, across, dof = terms.sum(0, keepdims=True), across.sum(keepdims=True), 2 + len(z)
    covs = (scale_prior * np.eye(2) + terms) / np.reshape(dof, (-1, 1, 1))
    along = (scale_prior + across) / dof
    return np.array(means), np.broadcast_to(covs, (2, 2, 2)), np.broadcast_to(along, 2)


@pytest.mark.parametrize("ct", ["full", "tied"])
def test_states_1e8_apart_fit_from_the_default_start(ct):
    """Two regimes at 0 and (1e8, 1e8) with unit noise: the default start, the data
    covariance + 1e-3 (entries 2.5e15), loses its smallest eigenvalue (~1, along (1, -1))
    in its rounding, and the fit was refused at once ("scale_posterior_ must be symmetric
    positive definite", an attribute never set); its first updates, of rows of both regimes,
    lose it as well ("collapsed onto too few distinct points"), and a tied scale, pooled
    about the data's centre, never resolved it. hmmlearn stops at iteration 2 on a decrease,
    its means 1.9e7 and 8.3e7 (tied: NaN). Lifted as GaussianHMM's, the fit reaches the
    labelled rows' posteriors, and the data centred and in units of 1e7 (the scale prior
    scaled) give the same fit."""
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, 1000)
    X = z[:, None] * np.array([1e8, 1e8]) + rng.normal(size=(1000, 2))
    means, covs, along = _vb_labelled(X, z, 1e-3, tied=ct == "tied")
    v = np.array([1.0, -1.0]) / np.sqrt(2)
    fits = []
    for scale, shift, prior in ((1.0, 0.0, 1e-3), (1e-7, 5e7, 1e-3 * 1e-14)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", EMMonotonicityWarning)
            model = VariationalGaussianHMM(
                2, ct, n_iter=50, random_state=0, scale_prior=np.eye(2) * prior
            ).fit((X - shift) * scale)
        assert model.converged_
        order = np.argsort(model.means_[:, 0])
        fits.append(model.means_[order] / scale + shift)
        fits.append(np.asarray(model.covars_)[order] / scale**2)
    for got_means, got_covs in (fits[:2], fits[2:]):
        np.testing.assert_allclose(got_means, means, rtol=1e-12)
        np.testing.assert_allclose(got_covs, covs, rtol=1e-10)
        # the covariance's entries (~6e12) round by ~eps × 6e12 = 1e-3 along (1, -1)
        np.testing.assert_allclose(v @ got_covs @ v, along, atol=1e-2)
