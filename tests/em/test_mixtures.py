"""Bernoulli, Poisson, multinomial and categorical mixtures: densities against
torch.distributions, EM steps against a plain numpy EM, recovery, labels, bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst
from sklearn.base import clone
from torch.distributions import Bernoulli, Categorical, Independent, Multinomial, Poisson

import latentfit
from latentfit.em.mixture.base import _MixtureHooks
from latentfit.em.mixture.discrete import (
    BernoulliMixture,
    CategoricalMixture,
    MultinomialMixture,
    PoissonMixture,
    bernoulli_log_prob,
    categorical_log_prob,
    multinomial_log_prob,
    one_hot_features,
    poisson_log_prob,
)
from latentfit.errors import DataError, ParameterError

RTOL = 1e-10  # exact formulas in float64


def _binary(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0.9, 0.9, 0.1, 0.1, 0.8, 0.2], [0.1, 0.2, 0.9, 0.8, 0.3, 0.7]])
    z = (rng.uniform(size=n) < 0.35).astype(int)
    return (rng.uniform(size=(n, 6)) < means[z]).astype(float), z, means


def _counts(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([[1.0, 6.0, 0.5], [8.0, 1.5, 3.0]])
    z = (rng.uniform(size=n) < 0.6).astype(int)
    return rng.poisson(rates[z]).astype(float), z, rates


# ------------------------------------------------------------ densities
def test_log_probs_equal_torch_distributions():
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(20, 5, generator=g, dtype=torch.float64) < 0.5).double()
    mu = torch.rand(3, 5, generator=g, dtype=torch.float64)
    ref = Independent(Bernoulli(probs=mu), 1).log_prob(X.unsqueeze(1))
    torch.testing.assert_close(bernoulli_log_prob(X, mu), ref, rtol=RTOL, atol=1e-12)

    C = torch.poisson(torch.full((20, 5), 3.0, dtype=torch.float64), generator=g)
    lam = torch.rand(3, 5, generator=g, dtype=torch.float64) * 5
    ref = Independent(Poisson(lam), 1).log_prob(C.unsqueeze(1))
    torch.testing.assert_close(poisson_log_prob(C, lam), ref, rtol=RTOL, atol=1e-12)

    p = torch.softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), 1)
    ref = torch.stack(
        [Multinomial(int(c.sum()), probs=p).log_prob(c) for c in C]
    )  # torch's Multinomial needs one total count per call
    torch.testing.assert_close(multinomial_log_prob(C, p), ref, rtol=RTOL, atol=1e-12)

    codes = torch.randint(0, 4, (20, 5), generator=g).double()
    probs = torch.softmax(torch.randn(3, 5, 4, generator=g, dtype=torch.float64), -1)
    ref = Categorical(probs=probs).log_prob(codes.long().unsqueeze(1)).sum(-1)  # (n, k)
    got = categorical_log_prob(one_hot_features(codes, 4), probs)
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=1e-12)


# ------------------------------------------------------------ EM step against numpy
def _numpy_em_step(X, w, log_comp, S1_to_params):
    logp = log_comp + np.log(w)
    r = np.exp(logp - logp.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    nk = r.sum(0)
    return nk / nk.sum(), S1_to_params(r.T @ X, nk)


@pytest.mark.parametrize("cls", [BernoulliMixture, PoissonMixture, MultinomialMixture])
def test_one_em_step_equals_numpy(cls):
    X = _binary()[0] if cls is BernoulliMixture else _counts()[0]
    rng = np.random.default_rng(1)
    model = cls(2).set_params(random_state=0)
    model._check_parameters()
    model._prepare_component_data(torch.as_tensor(X))
    name = model._param_names[0]
    if cls is BernoulliMixture:
        theta = rng.uniform(0.2, 0.8, (2, X.shape[1]))
        log_comp = X @ np.log(theta).T + (1 - X) @ np.log(1 - theta).T
        update = lambda S1, nk: S1 / nk[:, None]
    elif cls is PoissonMixture:
        theta = rng.uniform(1, 5, (2, X.shape[1]))
        log_comp = X @ np.log(theta).T - theta.sum(1)  # the x! term cancels in r
        update = lambda S1, nk: S1 / nk[:, None]
    else:
        theta = rng.dirichlet(np.ones(X.shape[1]), 2)
        log_comp = X @ np.log(theta).T
        update = lambda S1, nk: S1 / S1.sum(1, keepdims=True)
    w = np.array([0.3, 0.7])
    params = {"weights": torch.as_tensor(w), name: torch.as_tensor(theta)}
    hooks = _MixtureHooks(model)
    Xt = torch.as_tensor(X)
    stats = hooks.estep(params, (Xt, torch.ones(len(X), dtype=torch.float64), None))
    new = hooks.mstep(params, stats)
    w_ref, theta_ref = _numpy_em_step(X, w, log_comp, update)
    np.testing.assert_allclose(new["weights"].numpy(), w_ref, rtol=1e-8)
    np.testing.assert_allclose(new[name].numpy(), theta_ref, rtol=1e-8)


# ------------------------------------------------------------ fits
def test_bernoulli_recovers_parameters_and_em_is_monotone():
    X, z, means = _binary()
    m = BernoulliMixture(2, n_init=2, random_state=0, tol=1e-8, max_iter=500).fit(X)
    order = np.argsort(m.means_[:, 0])[::-1]
    # 1500 samples: a Bernoulli mean has s.e. ≤ 0.5/sqrt(500) ≈ 0.022; 0.08 is > 3.5 s.e.
    np.testing.assert_allclose(m.means_[order], means, atol=0.08)
    np.testing.assert_allclose(m.weights_[order], [0.65, 0.35], atol=0.05)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-12)
    assert m.converged_
    assert (m.predict(X) == np.where(order[0] == 0, z, 1 - z)).mean() > 0.9


def test_poisson_recovers_rates():
    X, _, rates = _counts()
    m = PoissonMixture(2, random_state=0, tol=1e-8, max_iter=500).fit(X)
    order = np.argsort(m.rates_[:, 0])
    # ≥ 600 samples per component: s.e. of a rate ≤ sqrt(8/600) ≈ 0.12; 0.4 is > 3 s.e.
    np.testing.assert_allclose(m.rates_[order], rates, atol=0.4)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-12)
    S, labels = m.sample(50)
    assert S.shape == (50, 3) and np.all(S == np.round(S)) and np.all(S >= 0)
    assert np.all(np.diff(labels) >= 0) and set(labels) <= {0, 1}


def test_categorical_and_multinomial_fit_and_sample():
    rng = np.random.default_rng(0)
    # A latent class model needs three or more variables to be identifiable (Goodman 1974).
    probs = np.array(
        [
            [[0.8, 0.1, 0.1], [0.7, 0.3, 0.0], [0.6, 0.2, 0.2], [0.2, 0.8, 0.0]],
            [[0.1, 0.1, 0.8], [0.1, 0.9, 0.0], [0.2, 0.2, 0.6], [0.9, 0.1, 0.0]],
        ]
    )
    z = rng.integers(0, 2, 1200)
    u = rng.uniform(size=(1200, 4, 1))
    X = (u > np.cumsum(probs[z], -1)).sum(-1).astype(float)  # inverse-CDF draws (n, 4)
    m = CategoricalMixture(2, random_state=0, n_init=3, tol=1e-8, max_iter=300).fit(X)
    assert list(m.n_categories_) == [3, 2, 3, 2]
    order = np.argsort(m.probs_[:, 0, 0])[::-1]
    # ≈ 600 samples per class: s.e. of a probability ≤ 0.02; 0.07 is > 3 s.e.
    np.testing.assert_allclose(m.probs_[order], probs, atol=0.07)
    assert np.all(m.probs_[:, 1, 2] == 0)  # beyond column 1's two codes
    # The probabilities of all 3·2·3·2 possible rows sum to one.
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in (3, 2, 3, 2)]), -1).reshape(-1, 4)
    np.testing.assert_allclose(np.exp(m.score_samples(grid.astype(float))).sum(), 1, rtol=1e-12)
    S, _ = m.sample(30)
    assert S.shape == (30, 4) and S[:, 1].max() <= 1
    with pytest.raises(ValueError, match=r"row 0, column 1 holds category 2"):
        m.predict(np.array([[0.0, 2.0, 0.0, 0.0]]))

    C = rng.poisson(4, (300, 8)).astype(float)
    mm = MultinomialMixture(3, random_state=0, prob_concentration=2.0).fit(C)
    np.testing.assert_allclose(mm.probs_.sum(1), 1, rtol=1e-12)
    assert np.all(np.diff(mm.lower_bounds_) >= -1e-12)  # MAP-EM: the log posterior increases
    S, _ = mm.sample(4)
    np.testing.assert_allclose(S.sum(1), round(C.sum(1).mean()))


def test_fully_labelled_fit_is_the_class_wise_mle():
    X, z, _ = _binary()
    m = BernoulliMixture(2, random_state=0, max_iter=5).fit(X, y=z)
    for k in range(2):
        np.testing.assert_allclose(m.means_[k], X[z == k].mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.weights_, np.bincount(z) / len(z), rtol=1e-12)
    # The objective is log p(X, z): the complete-data log-likelihood per sample.
    full = m._log_joint(torch.as_tensor(X)).numpy()[np.arange(len(z)), z].mean()
    np.testing.assert_allclose(m.lower_bound_, full, rtol=1e-12)


def test_partial_labels_fix_the_labelled_responsibilities():
    X, z, _ = _binary()
    y = np.full(len(z), -1)
    y[:100] = 1 - z[:100]  # deliberately swapped labels: the labels decide which is which
    m = BernoulliMixture(2, random_state=0, tol=1e-8, max_iter=300).fit(X, y=y)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-12)
    assert (m.predict(X[100:]) == 1 - z[100:]).mean() > 0.9
    with pytest.raises(ValueError, match=r"y\[3\] = 5 is not a component index"):
        BernoulliMixture(2).fit(X, y=np.r_[[-1, -1, -1, 5], np.full(len(z) - 4, -1)])


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.nan, r"\[3\] is NaN: mark a sample whose component is unknown with -1"),
        (0.5, r"\[3\] = 0.5 is not a component index"),
        (np.inf, r"\[3\] = inf is not a component index"),
    ],
)
def test_a_label_that_is_no_component_index_is_named_by_its_entry(labels, match):
    """Float labels with a NaN (unknown) or a fraction were refused without saying where, and
    GaussianMixture's ``labels`` were called ``y``."""
    X, z, _ = _binary()
    y = np.full(len(z), -1.0)
    y[3] = labels
    with pytest.raises(DataError, match=r"^y" + match):
        BernoulliMixture(2).fit(X, y=y)
    with pytest.raises(DataError, match=r"^labels" + match):
        latentfit.GaussianMixture(2).fit(X, labels=y)


# ------------------------------------------------------------ MAP
def test_beta_prior_map_step_is_a_stationary_point_of_the_log_posterior():
    X, _, _ = _binary(200)
    m = BernoulliMixture(2, mean_prior=(2.0, 3.0), weight_concentration=2.0, random_state=0)
    m.fit(X)
    Xt = torch.as_tensor(X)
    resp = torch.as_tensor(m.predict_proba(X))
    # One M-step from these responsibilities must maximise Q(θ) + log p(θ).
    hooks = _MixtureHooks(m)
    stats = m._component_stats(Xt, resp)
    stats["S0"] = resp.sum(0)
    new = hooks.mstep(dict(m._params), stats)
    mu = new["means"].clone().requires_grad_(True)
    q = (resp * bernoulli_log_prob(Xt, mu)).sum() + m._prior().log_prob(mu)
    (grad,) = torch.autograd.grad(q, mu)
    assert grad.abs().max() < 1e-8
    logits = new["weights"].log().clone().requires_grad_(True)
    w = torch.softmax(logits, 0)
    q = (resp.sum(0) * w.log()).sum() + m._weight_prior().log_prob(w)
    (grad,) = torch.autograd.grad(q, logits)
    assert grad.abs().max() < 1e-8
    assert np.all(np.diff(m.lower_bounds_) >= -1e-12)


def test_beta_prior_keeps_means_inside_the_unit_interval():
    X = np.zeros((50, 4))
    X[:25, 0] = 1
    mle = BernoulliMixture(2, random_state=0).fit(X)
    assert np.any(mle.means_ == 0)
    m = BernoulliMixture(2, mean_prior=(2, 2), random_state=0).fit(X)
    assert np.all((m.means_ > 0) & (m.means_ < 1))
    with pytest.raises(ValueError, match=">= 1"):
        BernoulliMixture(2, mean_prior=(0.5, 1)).fit(X)


# ------------------------------------------------------------ bad input and conventions
@pytest.mark.parametrize(
    "cls, X, msg",
    [
        (BernoulliMixture, [[0, 1], [1, 0.5]], r"binary .* row 1, column 1 \(value 0.5\)"),
        (BernoulliMixture, [[0, 2], [1, 0]], r"row 0, column 1 \(value 2\)"),
        (PoissonMixture, [[0, 1], [-3, 2]], r"non-negative .* row 1, column 0 \(value -3\)"),
        (MultinomialMixture, [[0, 1.5], [2, 2]], r"integer .* row 0, column 1 \(value 1.5\)"),
        (CategoricalMixture, [[0, 1], [1, -1]], r"row 1, column 1 \(value -1\)"),
    ],
)
def test_bad_values_name_the_first_offending_entry(cls, X, msg):
    with pytest.raises(ValueError, match=msg):
        cls(1).fit(np.asarray(X, dtype=float))


def test_sklearn_conventions_save_load_and_device(tmp_path, device):
    X, _, _ = _binary(300)
    m = BernoulliMixture(2, random_state=0, n_init=2, device=device)
    assert clone(m).get_params() == m.get_params()
    m.fit(X)
    assert m.get_params()["n_init"] == 2  # fit never changes a constructor argument
    assert m.means_.shape == (2, 6) and m.weights_.shape == (2,)
    np.testing.assert_allclose(m.predict_proba(X).sum(1), 1, rtol=1e-12)
    n = len(X)
    assert np.isclose(m.bic(X), -2 * m.score(X) * n + (2 * 6 + 1) * np.log(n))
    assert m.icl(X) >= m.bic(X)
    path = m.save(tmp_path / "bern.lf")
    m2 = latentfit.load(path)
    np.testing.assert_array_equal(m2.score_samples(X), m.score_samples(X))
    assert m2.get_params() == {**m.get_params(), "mean_prior": [1.0, 1.0]}
    with pytest.raises(ValueError, match="expecting 6 features"):
        m.predict(X[:, :3])


@settings(max_examples=12, deadline=None)
@given(
    seed=hst.integers(0, 2**16),
    k=hst.integers(1, 4),
    family=hst.sampled_from(["bernoulli", "poisson", "multinomial"]),
    labelled=hst.booleans(),
)
def test_em_never_lowers_the_objective_and_responsibilities_sum_to_one(seed, k, family, labelled):
    rng = np.random.default_rng(seed)
    if family == "bernoulli":
        X, cls = (rng.uniform(size=(80, 5)) < rng.uniform(size=5)).astype(float), BernoulliMixture
    else:
        X = rng.poisson(rng.uniform(0.5, 6, 5), (80, 5)).astype(float)
        cls = PoissonMixture if family == "poisson" else MultinomialMixture
    y = np.where(rng.uniform(size=80) < 0.2, rng.integers(0, k, 80), -1) if labelled else None
    m = cls(k, random_state=seed, max_iter=15, tol=0.0, init_params="random")
    with pytest.warns(Warning):  # tol=0: never declared converged
        m.fit(X, y=y)
    bounds = np.asarray(m.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-10 * np.abs(bounds[1:]))
    np.testing.assert_allclose(m.predict_proba(X).sum(1), 1, rtol=1e-12)


def test_multinomial_mixture_samples_have_multinomial_moments_whatever_the_total():
    """Rows drawn by conditional binomials: each row sums to the total, and a component's
    counts have the multinomial's mean n p and covariance n (diag(p) - p p'); a total of 1e9
    is drawn in O(d) memory (one draw per unit of the total used to need 24 GB here)."""
    rng = np.random.default_rng(1)
    C = rng.poisson([2.0, 5.0, 1.0, 8.0], (200, 4)).astype(float)
    mm = MultinomialMixture(1, random_state=0).fit(C)
    n, p = round(C.sum(1).mean()), mm.probs_[0]
    S, _ = mm.sample(40000)
    assert np.all(S.sum(1) == n) and np.all(S >= 0) and np.all(S == np.round(S))
    cov = n * (np.diag(p) - np.outer(p, p))
    se_mean = np.sqrt(np.diag(cov) / len(S))
    assert np.all(np.abs(S.mean(0) - n * p) < 4 * se_mean)
    np.testing.assert_allclose(np.cov(S.T), cov, atol=0.05 * np.abs(cov).max())
    mm.mean_total_count_ = 1e9
    S, _ = mm.sample(3)
    assert np.all(S.sum(1) == 1e9)


def test_edits_to_fitted_attributes_are_taken_up_and_checked():
    """As GaussianMixture and the HMMs: a user who sets ``rates_`` (``means_``, ``probs_``,
    ``weights_``...) and predicts gets what they set, checked as a model file's tensor is;
    before, predictions stayed those of the fit whatever was set."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.poisson(2, (100, 1)), rng.poisson(9, (100, 1))]
    m = PoissonMixture(2, random_state=0).fit(X)
    low = int(np.argmin(m.rates_[:, 0]))
    assert m.predict(X[[0]])[0] == low
    m.rates_ = m.rates_[::-1].copy()  # the components swapped
    assert m.predict(X[[0]])[0] == 1 - low
    want = PoissonMixture(2).fit(X)
    want._set_params_tensors(
        {"weights": torch.as_tensor(m.weights_), "rates": torch.as_tensor(m.rates_)}
    )
    np.testing.assert_array_equal(m.score_samples(X), want.score_samples(X))
    m.weights_[:] = [0.9, 0.1]  # in place
    np.testing.assert_allclose(m.predict_proba(X[:1]).sum(), 1)
    assert m._params["weights"].tolist() == [0.9, 0.1]
    for name, value, says in (
        ("rates_", -m.rates_, r"rates_, set after the fit, \(2, 1\) holds -"),
        ("weights_", np.array([0.3, 0.3]), "weights_, set after the fit, .* sums to 0.6"),
        ("rates_", np.ones((3, 1)), r"rates_ must have shape \(2, 1\)"),
        ("rates_", np.array([[np.nan], [1.0]]), "rates_"),
        ("rates_", None, "rates_ was deleted"),
    ):
        bad = PoissonMixture(2, random_state=0).fit(X)
        setattr(bad, name, value)
        with pytest.raises(ParameterError, match=says):
            bad.predict(X)
    m.n_components = 3
    with pytest.raises(ParameterError, match="n_components was set to 3 after the fit"):
        m.score(X)
    b = BernoulliMixture(2, random_state=0).fit(_binary(200)[0])
    b.means_ = np.clip(b.means_ + 0.5, 0, 1.5)
    with pytest.raises(ParameterError, match="means_, set after the fit"):
        b.predict(_binary(200)[0])


def test_a_mixture_model_refuses_edits_it_cannot_take_up():
    """MixtureModel's components_ are per-component dicts copied from its parameters: an edit
    is refused by name, not ignored (before, predictions stayed those of the fit)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-3, 1, (100, 1)), rng.normal(3, 1, (100, 1))]
    m = latentfit.MixtureModel("normal", 2, random_state=0).fit(X)
    want = m.predict(X)
    m.components_[0]["loc"] = np.array([0.0])  # in place, inside the list
    with pytest.raises(ParameterError, match="components_ changed after the fit"):
        m.predict(X)
    m = latentfit.MixtureModel("normal", 2, random_state=0).fit(X)
    m.weights_ = np.array([0.5, 0.5])
    with pytest.raises(ParameterError, match="weights_ changed after the fit"):
        m.score(X)
    np.testing.assert_array_equal(
        latentfit.MixtureModel("normal", 2, random_state=0).fit(X).predict(X), want
    )


@pytest.mark.parametrize("make", ["poisson", "model", "bgmm"])
def test_a_refit_after_an_edit_or_a_new_size_starts_afresh_and_a_warm_start_says_why_not(make):
    X = np.r_[np.full((60, 1), 2.0), np.full((60, 1), 9.0)] + np.arange(120)[:, None] % 3

    def fresh(**kw):
        if make == "poisson":
            return PoissonMixture(2, random_state=0, **kw)
        if make == "model":
            return latentfit.MixtureModel("poisson", 2, random_state=0, **kw)
        return latentfit.BayesianGaussianMixture(n_components=2, random_state=0, **kw)

    m = fresh().fit(X)
    m.weights_ = m.weights_[::-1].copy()
    m.n_components = 3
    m.fit(X)  # a cold fit: the edits and the old size are simply replaced
    assert len(m.weights_) == 3
    m = fresh(warm_start=True).fit(X)
    m.n_components = 3
    with pytest.raises(ParameterError, match="warm_start=True continues from the fitted"):
        m.fit(X)


@pytest.mark.parametrize("cls", ["BernoulliMixture", "PoissonMixture", "MultinomialMixture"])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_rows_fit_with_their_exact_likelihood(cls, value):
    # k-means on identical rows leaves a cluster empty; its start was 0/0 (NaN), and the fit
    # failed at its first iteration. Such a component now starts from all the rows.
    import scipy.stats

    X = np.full((40, 3), value)
    model = getattr(latentfit, cls)(2, random_state=0).fit(X)
    assert np.isfinite(model.weights_).all()
    row = X[0]
    want = {
        "BernoulliMixture": 0.0,  # every mean is the value itself: p(x) = 1
        "PoissonMixture": scipy.stats.poisson.logpmf(row, value).sum(),
        "MultinomialMixture": scipy.stats.multinomial.logpmf(row, row.sum(), [1 / 3] * 3)
        if value
        else 0.0,
    }[cls]
    np.testing.assert_allclose(model.score_samples(X), want, atol=1e-12)


@pytest.mark.parametrize(
    "cls", ["BernoulliMixture", "PoissonMixture", "CategoricalMixture", "model"]
)
def test_a_warm_start_on_data_of_another_width_is_refused_by_name(cls):
    # Before, the warm start multiplied the new rows by the fitted parameters: a raw torch
    # RuntimeError ("mat1 and mat2 shapes cannot be multiplied (30x3 and 4x2)").
    X = (np.arange(120).reshape(30, 4) % 3 == 0).astype(float)
    if cls == "model":
        m = latentfit.MixtureModel("poisson", 2, warm_start=True, max_iter=3)
    else:
        m = getattr(latentfit, cls)(2, warm_start=True, max_iter=3)
    m.fit(X)
    fitted = m.weights_.copy()
    with pytest.raises(DataError, match="X has 3 features, but warm_start=True continues"):
        m.fit(X[:, :3])
    assert m.n_features_in_ == 4  # the fitted model is left as it was
    np.testing.assert_array_equal(m.weights_, fitted)
    m.predict(X)


def test_a_warm_start_keeps_the_settings_its_parameters_were_fitted_with():
    # Before: a MixtureModel whose family changed continued with the old parameters in the new
    # family's density (KeyError 'rate'); a CategoricalMixture warm-started on a code beyond
    # its categories raised torch's "Class values must be smaller than num_classes", and one
    # given new n_categories ignored them.
    X = np.arange(90).reshape(30, 3) % 4 + 1.0
    m = latentfit.MixtureModel("normal", 2, warm_start=True, max_iter=3).fit(X)
    m.family = "poisson"
    with pytest.raises(ParameterError, match=r"family was set to 'poisson' after the fit, whose"):
        m.fit(X)
    m.family = "normal"
    m.fit(X)
    codes = X % 3
    m = CategoricalMixture(2, warm_start=True, max_iter=3).fit(codes)
    with pytest.raises(DataError, match="column 0 holds category 3 but column 0 has 3 categories"):
        m.fit(np.r_[codes, [[3.0, 0.0, 0.0]]])
    m.fit(np.minimum(codes, 1))  # fewer codes: the probabilities stay over the fitted ones
    assert m.probs_.shape == (2, 3, 3)
    m.n_categories = 5
    with pytest.raises(ParameterError, match=r"n_categories was set to 5 after the fit"):
        m.fit(codes)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PoissonMixture(2, random_state=0),
        lambda: CategoricalMixture(2, random_state=0),
        lambda: latentfit.MixtureModel("poisson", 2, random_state=0),
        lambda: latentfit.GaussianMixture(2, random_state=0),
    ],
)
def test_fewer_weighted_rows_than_components_are_refused_as_fewer_rows_are(make):
    # rows of weight 0 add nothing, but only the rows were counted: one weighted row and
    # n_components=2 fitted two copies of that row ([2, 0, 7] twice), silently
    X = np.random.default_rng(0).poisson(3, (50, 3)).astype(float)
    w = np.r_[1.0, np.zeros(49)]
    for method in ("fit", "partial_fit"):
        with pytest.raises(DataError, match=r"only 1 of the 50 samples .* n_components = 2"):
            getattr(make(), method)(X, sample_weight=w)
    two = make().fit(X, sample_weight=np.r_[1.0, 1.0, np.zeros(48)])
    np.testing.assert_allclose(np.sort(two.weights_), 0.5, atol=1e-4)


def _scipy_score(weights, logpmfs):
    """log Σ_k π_k p_k(x) from each component's scipy log-pmf of the row (k,)."""
    return np.logaddexp.reduce(np.log(weights) + np.asarray(logpmfs))


def _poisson_with_a_zero_rate(make):
    # the first cluster never counts anything in column 2: its MLE rate there is 0
    rng = np.random.default_rng(0)
    X = np.r_[np.c_[rng.poisson(300, (100, 2)), np.zeros(100)], rng.poisson(3, (100, 3))]
    return make().fit(X)


@pytest.mark.parametrize(
    "make, rates",
    [
        (lambda: PoissonMixture(2, random_state=0), lambda m: m.rates_),
        (
            lambda: latentfit.MixtureModel("poisson", 2, random_state=0),
            lambda m: np.array([c["rate"] for c in m.components_]),
        ),
    ],
)
def test_a_count_where_a_poisson_rate_is_zero_is_impossible_there(make, rates):
    # log 0 was clamped to about -708 (PoissonMixture) or the rate to the smallest normal
    # number (MixtureModel): [300, 300, 1] scored about -720, put in the component that
    # cannot count 1 in column 2, with probability 1; scipy gives -2188.7, from the other
    from scipy import stats

    m = _poisson_with_a_zero_rate(make)
    lam = rates(m)
    busy = int(np.argmax(lam[:, 2]))
    assert lam[1 - busy, 2] == 0.0
    rows = np.array([[300, 300, 1], [300, 300, 0], [2, 3, 0]])
    want = [_scipy_score(m.weights_, [stats.poisson.logpmf(x, r).sum() for r in lam]) for x in rows]
    assert want[0] < -2000
    np.testing.assert_allclose(m.score_samples(rows), want, rtol=1e-12)
    assert m.predict_proba(rows[:1])[0, busy] == 1.0
    assert m.predict(rows[:1])[0] == busy
    assert m.score(rows) == pytest.approx(np.mean(want), rel=1e-12)


@pytest.mark.parametrize(
    "make, means",
    [
        (lambda: BernoulliMixture(2, random_state=0), lambda m: m.means_),
        (
            lambda: latentfit.MixtureModel("bernoulli", 2, random_state=0),
            lambda m: np.array([c["probs"] for c in m.components_]),
        ),
    ],
)
def test_a_bit_against_a_bernoulli_mean_of_zero_or_one_is_impossible_there(make, means):
    # a cluster whose column 4 is always 1 (mean 1): a 0 there was -708 (BernoulliMixture)
    # or -36 (MixtureModel, whose mean was kept inside [eps, 1 - eps]) unlikely, not impossible
    from scipy import stats

    rng = np.random.default_rng(0)
    X = np.r_[
        np.c_[rng.random((50, 4)) < 0.9, np.ones(50)],
        np.c_[rng.random((50, 4)) < 0.1, rng.random(50) < 0.5],
    ].astype(float)
    m = make().fit(X)
    mu = means(m)
    ones = int(np.argmax(mu[:, 4]))
    assert mu[ones, 4] == 1.0
    rows = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    want = [
        _scipy_score(m.weights_, [stats.bernoulli.logpmf(x, p).sum() for p in mu]) for x in rows
    ]
    np.testing.assert_allclose(m.score_samples(rows), want, rtol=1e-12)
    assert m.predict_proba(rows[:1])[0, 1 - ones] == 1.0
    # a row no component can produce: -inf, and no component to put it in
    one = make().fit(X[:50])  # one component, mean 1 in column 4
    assert one.score_samples(rows[:1])[0] == -np.inf
    with pytest.raises(DataError, match=r"row 0 .*column 4 holds 0, an outcome every component"):
        one.predict_proba(rows[:1])


def test_a_code_a_categorical_component_gives_probability_zero_is_impossible_there():
    # a code of probability 0 was scored with log 0 clamped to about -708: possible in the
    # component that never has it (responsibility e^-706 there), never -inf
    from scipy import stats

    rng = np.random.default_rng(0)
    A = np.c_[rng.integers(0, 2, (80, 2)), np.zeros(80)]  # column 2 always code 0
    B = np.c_[rng.integers(0, 4, (80, 2)), rng.integers(1, 3, 80)]  # column 2 never 0
    X = np.r_[A, B]

    def scipy_score(m, x):
        c = m.probs_.shape[2]
        return _scipy_score(
            m.weights_,
            [
                sum(stats.multinomial.logpmf(np.eye(c)[int(v)], 1, p[j]) for j, v in enumerate(x))
                for p in m.probs_
            ],
        )

    m = CategoricalMixture(2, random_state=0).fit(X)
    a = int(np.argmax(m.probs_[:, 2, 0]))
    assert (m.probs_[a, 2, 1:] == 0).all() and m.probs_[1 - a, 2, 0] == 0
    rows = np.array([[0, 1, 1], [0, 1, 0], [3, 3, 2]])
    np.testing.assert_allclose(m.score_samples(rows), [scipy_score(m, x) for x in rows], rtol=1e-12)
    assert m.predict_proba(rows[:1])[0, a] == 0.0
    # a code that no component gives: -inf, and predict names the column and the code
    m4 = CategoricalMixture(2, n_categories=[4, 4, 4], random_state=0).fit(X)
    assert m4.probs_[:, 2, 3].max() == 0.0
    assert scipy_score(m4, [0, 1, 3]) == m4.score_samples([[0, 1, 3]])[0] == -np.inf
    with pytest.raises(DataError, match=r"column 2 holds 3, an outcome every component gives"):
        m4.predict([[0, 1, 3]])


def test_a_zero_weight_row_impossible_under_every_component_adds_nothing():
    # a row of weight 0 is left out of the fit, even where no component can produce it
    X = np.r_[np.c_[np.arange(20) % 4, np.zeros(20)], [[1, 5]]]
    w = np.r_[np.ones(20), 0.0]
    a = PoissonMixture(1, random_state=0).fit(X, sample_weight=w)
    b = PoissonMixture(1, random_state=0).fit(X[:20])
    np.testing.assert_allclose(a.rates_, b.rates_, rtol=1e-12)
    assert np.isfinite(a.lower_bound_)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PoissonMixture(2, random_state=0, warm_start=True),
        lambda: latentfit.MixtureModel("poisson", 2, random_state=0, warm_start=True),
    ],
)
def test_a_warm_start_and_partial_fit_learn_a_count_no_component_gave_probability(make):
    rng = np.random.default_rng(1)
    X = np.c_[rng.poisson(4, (60, 2)), np.zeros(60)]
    new = np.c_[rng.poisson(4, (60, 2)), rng.poisson(2, 60)]
    m = make().fit(X)
    counted = new[:, 2] > 0
    assert counted.any() and np.isneginf(m.score_samples(new)[counted]).all()
    m.fit(new)  # warm: the rows no component can produce are shared out, and learnt
    assert np.isfinite(m.lower_bound_)
    assert np.isfinite(m.score_samples(new)).all()
    o = make().set_params(warm_start=False)
    o.partial_fit(X)
    o.partial_fit(new)
    assert np.isfinite(o.score_samples(new)).all()


def test_a_count_a_multinomial_component_gives_probability_zero_is_impossible_there():
    from scipy import stats

    rng = np.random.default_rng(0)
    A = np.c_[rng.multinomial(40, [0.5, 0.5], 60), np.zeros(60)]  # never counts column 2
    B = rng.multinomial(40, [0.1, 0.1, 0.8], 60)
    m = MultinomialMixture(2, random_state=0).fit(np.r_[A, B])
    a = int(np.argmax(m.probs_[:, 0]))
    assert m.probs_[a, 2] == 0.0
    rows = np.array([[20, 19, 1], [4, 4, 32]])
    want = [
        _scipy_score(m.weights_, [stats.multinomial.logpmf(x, 40, p) for p in m.probs_])
        for x in rows
    ]
    np.testing.assert_allclose(m.score_samples(rows), want, rtol=1e-12)
    assert m.predict_proba(rows[:1])[0, a] == 0.0


@pytest.mark.parametrize(
    "make, X, impossible",
    [
        (
            lambda: PoissonMixture(1, random_state=0),
            np.c_[np.arange(20) % 4, np.zeros(20)],
            [1, 5],  # a count where the only rate is 0
        ),
        (
            lambda: latentfit.GaussianMixture(1, random_state=0),
            np.random.default_rng(0).normal(size=(20, 2)),
            [1e200, 0.0],  # a density that underflows to 0
        ),
    ],
)
def test_a_row_of_weight_zero_and_score_minus_inf_counts_for_nothing_in_score(make, X, impossible):
    # score(X, sample_weight) was NaN (0 · -inf)
    m = make().fit(X)
    rows = np.array([X[3], impossible])
    assert m.score_samples(rows)[1] == -np.inf
    want = m.score_samples(rows[:1])[0]
    assert m.score(rows, sample_weight=[2.0, 0.0]) == pytest.approx(want, rel=1e-12)
    assert m.score(rows) == -np.inf
