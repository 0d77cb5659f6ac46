"""BayesianGaussianMixture against scikit-learn (per iteration, float64), the ELBO's constants
against a Monte-Carlo ELBO written with torch.distributions, and the CAVI guarantees."""

import copy
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBGMM

import latentfit
from latentfit.datasets import load_faithful
from latentfit.em.driver import EMMonotonicityWarning
from latentfit.errors import ParameterError
from latentfit.vi import BayesianGaussianMixture

from ._bgmm_mc import mc_elbo

COV_TYPES = ["full", "tied", "diag", "spherical"]
WEIGHT_TYPES = ["dirichlet_process", "dirichlet_distribution"]


@pytest.fixture(scope="module")
def faithful():
    return load_faithful().data.numpy()


def _start(X, k, seed=0):
    rng = np.random.RandomState(seed)
    resp = rng.uniform(size=(len(X), k))
    return resp / resp.sum(1, keepdims=True)


def _pair(resp0):
    """scikit-learn's and latentfit's estimators, both started from responsibilities resp0."""

    class Sk(SkBGMM):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, resp0)

    class Lf(BayesianGaussianMixture):
        def _initial_resp(self, X, w, gen):
            return torch.as_tensor(resp0, dtype=X.dtype, device=X.device)

    return Sk, Lf


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
@pytest.mark.parametrize("cov", COV_TYPES)
def test_lower_bound_equals_sklearn_every_iteration(faithful, cov, weight_type):
    X, k = faithful, 4
    Sk, Lf = _pair(_start(X, k))
    kw = dict(
        n_components=k,
        covariance_type=cov,
        weight_concentration_prior_type=weight_type,
        max_iter=40,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = Sk(**kw).fit(X)
        ours = Lf(**kw).fit(X)
    want = np.asarray(ref.lower_bounds_, dtype=float).ravel()
    assert len(want) == 40
    np.testing.assert_allclose(ours.lower_bounds_, want, rtol=1e-10)
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
        "mean_precision_",
        "degrees_of_freedom_",
        "covariance_prior_",
        "mean_prior_",
    ):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(ours.weight_concentration_, ref.weight_concentration_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_


def test_a_warm_start_driven_one_iteration_at_a_time_converges_as_sklearn(faithful):
    """fit(max_iter=1) with warm_start in a loop, scikit-learn's way of watching a fit: the
    first change of every call is measured from the previous call's lower_bound_, so the loop
    ends with converged_ on the call scikit-learn's does (it never converged before)."""
    X, k = faithful, 3
    Sk, Lf = _pair(_start(X, k, seed=2))
    kw = dict(n_components=k, max_iter=1, warm_start=True, tol=1e-3)
    ref, ours = Sk(**kw), Lf(**kw)
    seen = {"ref": [], "ours": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(300):
            for name, m in (("ref", ref), ("ours", ours)):
                m.fit(X)
                seen[name].append((m.converged_, float(m.lower_bound_)))
            if ref.converged_:
                break
    assert ref.converged_ and ours.converged_ and len(seen["ref"]) > 5
    assert [s[0] for s in seen["ours"]] == [s[0] for s in seen["ref"]]
    np.testing.assert_allclose(
        [s[1] for s in seen["ours"]], [s[1] for s in seen["ref"]], rtol=1e-10
    )


def test_convergence_and_priors_match_sklearn(faithful):
    """Explicit priors and the stopping rule |Δ| < tol give the same run length."""
    X = faithful
    Sk, Lf = _pair(_start(X, 3, seed=1))
    kw = dict(
        n_components=3,
        covariance_type="full",
        tol=1e-6,
        max_iter=500,
        weight_concentration_prior=0.5,
        mean_precision_prior=0.1,
        mean_prior=[3.0, 70.0],
        degrees_of_freedom_prior=4.0,
        covariance_prior=[[1.0, 0.2], [0.2, 30.0]],
    )
    ref, ours = Sk(**kw).fit(X), Lf(**kw).fit(X)
    assert ours.converged_ and ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-10)


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
def test_elbo_matches_monte_carlo_elbo(faithful, weight_type):
    """elbo_ = lower bound + constants; checked against E_q[log p − log q] sampled from q(θ)
    with torch.distributions (reg_covar=0 so q(θ) is the exact conjugate update)."""
    X = faithful
    kw = dict(
        n_components=3,
        reg_covar=0.0,
        random_state=0,
        init_params="random",
        weight_concentration_prior_type=weight_type,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # the ELBO after one iteration is that of q(z) from the starting q(θ) ...
        resp = BayesianGaussianMixture(max_iter=0, **kw).fit(X).predict_proba(X)
        one = BayesianGaussianMixture(max_iter=1, **kw).fit(X)
    est, se = mc_elbo(X, resp, one, n_draws=2000)
    # 6 standard errors of the Monte-Carlo mean plus float64 rounding of ~1e3-sized sums.
    assert abs(one.elbo_ - est) < 6 * se + 1e-9 * abs(est)
    assert one.elbos_ == [one.elbo_]


def test_dirichlet_process_switches_off_unneeded_components(faithful):
    bg = BayesianGaussianMixture(
        n_components=10, weight_concentration_prior=1e-3, max_iter=500, random_state=0
    ).fit(faithful)
    assert bg.converged_
    active = int((bg.weights_ > 0.02).sum())
    assert 2 <= active <= 4, bg.weights_
    assert abs(bg.weights_.sum() - 1) < 1e-12
    # The ELBO in nats is below the best log-likelihood a 10-component GMM reaches.
    gm = latentfit.GaussianMixture(10, random_state=0, max_iter=500).fit(faithful)
    assert bg.elbo_ < gm.score(faithful) * len(faithful)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cov=st.sampled_from(COV_TYPES),
    weight_type=st.sampled_from(WEIGHT_TYPES),
)
def test_cavi_never_lowers_the_bound(seed, cov, weight_type):
    g = np.random.default_rng(seed)
    X = np.concatenate([g.normal(size=(40, 3)), g.normal(3.0, 0.5, size=(30, 3))])
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        bg = BayesianGaussianMixture(
            n_components=4,
            covariance_type=cov,
            max_iter=60,
            weight_concentration_prior_type=weight_type,
            init_params="random",
            random_state=seed,
        ).fit(X)
    b = np.asarray(bg.lower_bounds_)
    assert np.all(np.diff(b) >= -1e-9 * np.abs(b[1:]))


def test_float32_and_device_agree_with_float64(faithful, device):
    # A finite Dirichlet prior on the weights: with the stick-breaking (DP) default, the third
    # component's weight creeps for 50-130 iterations and where a float32 run stops depends on
    # its summation order: on the CPU, float32 fits of the same rows in six orders ended 1e-7
    # to 4.7e-3 (relative) from the float64 ELBO, and CUDA's order 1.4e-3. With this prior
    # the six agree with float64 within 6e-7.
    kw = dict(
        n_components=3, max_iter=300, random_state=0, tol=1e-6,
        weight_concentration_prior_type="dirichlet_distribution",
    )  # fmt: skip
    ref = BayesianGaussianMixture(**kw).fit(faithful)
    bg = BayesianGaussianMixture(dtype="float32", device=device, **kw).fit(faithful)
    assert bg.means_.dtype == np.float32
    order_a, order_b = np.argsort(ref.means_[:, 0]), np.argsort(bg.means_[:, 0])
    # float32 carries ~7 digits; after a few hundred iterations the means agree to ~1e-4.
    np.testing.assert_allclose(bg.means_[order_b], ref.means_[order_a], rtol=1e-3)
    assert abs(bg.elbo_ - ref.elbo_) < 1e-5 * abs(ref.elbo_)


@pytest.mark.parametrize(
    ("sep", "prior", "rtol"),
    [
        # 10 apart: every component resolved, float32 agrees to ~1e-5 (before: 5e-3)
        (10.0, None, 1e-4),
        # 100 apart, sd 0.01 with a small Wishart scale (before: 0.27, 7.7e-3 without it).
        # The sd-1 cluster stays in the fast form about the centre (its log-densities round by
        # eps * 50**2 / 1 = 3e-4 nats, below far_components' 1e-3), and its posterior
        # Wishart, of nu = 202, turns that rounding into ~0.1 nats of the bound.
        (100.0, 1e-4, 1e-3),
        (100.0, None, 1e-3),
    ],
)
def test_float32_resolves_a_tight_cluster_far_from_the_others(sep, prior, rtol):
    """Moments and log-densities about the data mean round by eps ||m_k - c||^2 / sigma_k^2:
    a cluster of sd 0.01 at 50 from the mean lost its spread in float32 (as GaussianMixture's
    did); such components are computed from x - m_k (em.gaussian.far_components)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(sep, 1, (200, 2))]
    kw = dict(n_components=2, random_state=0, max_iter=200)
    if prior is not None:
        kw["covariance_prior"] = prior * np.eye(2)
    ref = BayesianGaussianMixture(**kw).fit(X)
    sk = SkBGMM(**kw).fit(X)
    # the same iterations from the same start in float64 (before: 3e-9 apart with the prior)
    assert ref.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(ref.lower_bound_, sk.lower_bound_, rtol=1e-10)
    bg = BayesianGaussianMixture(dtype="float32", **kw).fit(X)
    np.testing.assert_allclose(bg.lower_bound_, ref.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(bg.means_, ref.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bg.score_samples(X), ref.score_samples(X), rtol=rtol, atol=1e-3)


def test_sample_weight_equals_repeated_rows(faithful):
    X = faithful[:60]
    w = np.arange(60) % 3 + 1
    kw = dict(n_components=2, init_params="random", max_iter=20, tol=0.0)
    resp = _start(X, 2)
    _, Lf = _pair(resp)
    _, Lr = _pair(np.repeat(resp, w, axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = Lf(**kw).fit(X, sample_weight=w)
        b = Lr(**kw).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(a.elbo_, b.elbo_, rtol=1e-10)


def test_save_load_and_sample(tmp_path, faithful):
    bg = BayesianGaussianMixture(n_components=3, random_state=0, max_iter=300).fit(faithful)
    path = bg.save(tmp_path / "bgmm.lf")
    back = latentfit.load(path)
    np.testing.assert_array_equal(back.predict_proba(faithful), bg.predict_proba(faithful))
    assert back.elbo_ == bg.elbo_ and back.weight_concentration_prior_ == 1 / 3
    Xs, labels = bg.sample(500)
    assert Xs.shape == (500, 2) and labels.shape == (500,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(weight_concentration_prior_type="dirichlet"), "weight_concentration_prior_type"),
        (dict(degrees_of_freedom_prior=0.5), "degrees_of_freedom_prior"),
        (dict(covariance_prior=[[1.0, 2.0], [2.0, 1.0]]), "positive-definite"),
        (dict(covariance_prior=[1.0, 1.0]), "covariance_prior must have shape"),
        (dict(mean_prior=[0.0]), "mean_prior must have shape"),
        (dict(weight_concentration_prior=-1.0), "weight_concentration_prior"),
        (dict(n_components=300), "n_samples >= n_components"),
    ],
)
def test_bad_arguments_are_named(faithful, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BayesianGaussianMixture(**kwargs).fit(faithful)


def test_constant_column_is_named():
    X = np.random.default_rng(0).normal(size=(30, 3))
    X[:, 1] = 2.0
    with pytest.raises(ValueError, match="column 1 of X is constant"):
        BayesianGaussianMixture(n_components=2).fit(X)
    bg = BayesianGaussianMixture(n_components=2, covariance_prior=np.eye(3)).fit(X)
    assert np.isfinite(bg.elbo_)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_chunked_statistics_equal_one_pass(faithful, cov):
    """The E-step statistics add over row chunks: chunked CAVI is the same computation."""
    kw = dict(n_components=3, covariance_type=cov, max_iter=15, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = BayesianGaussianMixture(**kw).fit(faithful)
        chunked = BayesianGaussianMixture(chunk_rows=50, **kw).fit(faithful)
    np.testing.assert_allclose(chunked.lower_bounds_, whole.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(chunked.means_, whole.means_, rtol=1e-9)


def test_edits_to_fitted_attributes_or_settings_are_refused_not_ignored(faithful):
    """scikit-learn users set ``means_`` and predict. The variational posterior has no single
    value to replace, so the edit is refused by name rather than silently ignored (before,
    predictions stayed those of the fit); so is a setting changed since the fit."""
    bg = BayesianGaussianMixture(n_components=2, random_state=0).fit(faithful)
    want = bg.predict(faithful)
    for name, value in (
        ("means_", bg.means_[::-1].copy()),
        ("weights_", np.array([0.5, 0.5])),
        ("covariances_", bg.covariances_ * 2),
    ):
        edited = copy.deepcopy(bg)
        setattr(edited, name, value)
        with pytest.raises(ParameterError, match=f"{name} changed after the fit"):
            edited.predict(faithful)
    edited = copy.deepcopy(bg)
    edited.means_[0, 0] += 1.0  # in place
    with pytest.raises(ParameterError, match="means_ changed"):
        edited.score(faithful)
    edited = copy.deepcopy(bg)
    edited.covariance_type = "diag"
    with pytest.raises(ParameterError, match="covariance_type was set to 'diag' after the fit"):
        edited.sample(3)
    np.testing.assert_array_equal(copy.deepcopy(bg).predict(faithful), want)  # untouched: as fit


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
@pytest.mark.parametrize("d", [1, 2])
def test_a_group_far_from_the_data_centre_keeps_the_digits_of_its_mean(
    ct, d, tmp_path, monkeypatch
):
    # 59 rows near 2.4 and one at 1e17 under a weak prior on the means: q(mu)'s means were
    # kept as c + (m_k - c), c the data's mean (1.7e15, spaced by 0.25), and the group's
    # came out 2.5 (scikit-learn: 2.4898212741, the rows' mean)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(2.4, 1, (59, d)), np.full((1, d), 1e17)]
    cov0 = {"full": np.eye(d), "diag": np.ones(d), "spherical": 1.0}[ct]
    kw = dict(n_components=2, covariance_type=ct, random_state=0, max_iter=500)
    kw.update(mean_precision_prior=1e-30, covariance_prior=cov0)
    m = BayesianGaussianMixture(**kw).fit(X)
    ref = SkBGMM(**kw).fit(X)
    near = int(np.argmin(m.means_[:, 0]))
    assert near == int(np.argmin(ref.means_[:, 0]))
    np.testing.assert_allclose(m.means_[near], ref.means_[near], rtol=1e-9)
    np.testing.assert_allclose(m.means_[near], X[:59].mean(0), rtol=1e-9)
    np.testing.assert_allclose(m.covariances_[near], ref.covariances_[near], rtol=1e-9)
    np.testing.assert_allclose(m.weights_, ref.weights_, rtol=1e-9)
    # scikit-learn's far mean is the row / (1 + 10 eps), 222 below it: that one is the row
    np.testing.assert_array_equal(m.means_[1 - near], X[59])
    np.testing.assert_allclose(m.score_samples(X[:59]), ref.score_samples(X[:59]), rtol=1e-9)
    loaded = latentfit.load(m.save("m.lf"))
    np.testing.assert_array_equal(loaded.means_, m.means_)
    np.testing.assert_allclose(loaded.score_samples(X), m.score_samples(X), rtol=1e-12)
