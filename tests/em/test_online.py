"""Stepwise (online) EM, Cappé & Moulines 2009: checked against an independent numpy/scipy
implementation of the same recursion on raw moments, against scikit-learn for a single full
batch, and against closed forms for a model without latent variables."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from latentfit import GaussianMixture, MixtureModel, PoissonMixture
from latentfit.em.gaussian import moment_stats
from latentfit.em.online import OnlineEMState, StepSize, online_em_step, translate_moment_stats
from latentfit.em.sources.chunks import ArraySource
from latentfit.errors import DataError
from tests.em.test_missing import _far_rows


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(200, 2)) * 0.7 + [3, 1]])
    rng.shuffle(X)
    return X, rng.uniform(0.5, 2.0, size=len(X))


INIT = dict(
    weights_init=[0.5, 0.5],
    means_init=[[0.5, 0.0], [2.0, 2.0]],
    precisions_init=[[[1.0, 0.2], [0.2, 1.5]], [[2.0, 0.0], [0.0, 1.0]]],
)


def reference_stepwise_em(batches, decay, offset, reg=1e-6):
    """Stepwise EM for a full-covariance mixture on raw (unshifted) moments, with scipy densities."""
    weights = np.array(INIT["weights_init"])
    means = np.array(INIT["means_init"])
    covs = np.linalg.inv(np.array(INIT["precisions_init"]))
    s, seen = None, 0.0
    for t, (X, w) in enumerate(batches, start=1):
        logp = np.column_stack(
            [
                np.log(weights[k]) + multivariate_normal(means[k], covs[k]).logpdf(X)
                for k in range(2)
            ]
        )
        r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True)) * w[:, None]
        bw = w.sum()
        new = {
            "S0": r.sum(0) / bw,
            "S1": r.T @ X / bw,
            "S2": np.einsum("nk,ni,nj->kij", r, X, X) / bw,
        }
        rho = 1.0 if t == 1 else (t + offset) ** -decay
        s = new if s is None else {k: (1 - rho) * s[k] + rho * new[k] for k in new}
        seen += bw
        nk = s["S0"] * seen
        weights = nk / nk.sum()
        means = s["S1"] * seen / nk[:, None]
        covs = s["S2"] * seen / nk[:, None, None] - np.einsum("ki,kj->kij", means, means)
        covs += reg * np.eye(2)
    return weights, means, covs


def test_partial_fit_matches_an_independent_stepwise_em(data):
    X, w = data
    cuts = [0, 90, 250, 310, 500]
    batches = [(X[a:b], w[a:b]) for a, b in itertools.pairwise(cuts)]
    gm = GaussianMixture(2, learning_decay=0.7, learning_offset=2.0, **INIT)
    for Xb, wb in batches:
        gm.partial_fit(Xb, sample_weight=wb)
    weights, means, covs = reference_stepwise_em(batches, 0.7, 2.0)
    assert gm.n_steps_ == 4
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-8)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-8)
    np.testing.assert_allclose(gm.covariances_, covs, rtol=1e-8)


def test_one_full_batch_is_one_em_iteration_of_scikit_learn(data):
    X, _ = data
    sk = SkGaussianMixture(2, max_iter=1, **INIT)
    with pytest.warns(ConvergenceWarning):
        sk.fit(X)
    gm = GaussianMixture(2, **INIT).partial_fit(X)
    for key in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(gm, key), getattr(sk, key), rtol=1e-8)
    assert gm.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-10)


def test_partial_fit_after_fit_continues_from_the_fitted_model(data):
    X, _ = data
    gm = GaussianMixture(2, random_state=0, max_iter=3, tol=0)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    ref = GaussianMixture(2, random_state=0, max_iter=4, tol=0)
    with pytest.warns(ConvergenceWarning):
        ref.fit(X)
    gm.partial_fit(X)  # ρ_1 = 1 on the whole data: exactly one more EM iteration
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-10)
    assert gm.n_steps_ == 1


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_translated_moments_equal_moments_taken_at_the_new_point(data, ct):
    X, w = data
    Xt = torch.from_numpy(X)
    wt = torch.from_numpy(w)
    resp = torch.softmax(
        torch.randn(len(X), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1
    )
    resp = resp * wt.unsqueeze(1)
    c_old, c_new = (
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        torch.tensor([0.3, 0.5], dtype=torch.float64),
    )
    at_old = moment_stats(Xt - c_old, wt, resp, ct)
    at_new = moment_stats(Xt - c_new, wt, resp, ct)
    moved = translate_moment_stats(at_old, c_old - c_new, ct)
    for key in ("S0", "S1", "S2"):
        torch.testing.assert_close(moved[key], at_new[key], rtol=1e-10, atol=1e-9)


class _MeanWithPrior:
    """A Gaussian mean with a conjugate normal prior (no latent variable): the MAP estimate is
    (Σ w x + κ m0) / (Σ w + κ). Its statistics do not depend on the parameters."""

    kappa, m0 = 5.0, 10.0

    def estep(self, params, batch):
        X, w = batch
        return {"S1": (w * X).sum(), "weight": w.sum()}

    def mstep(self, params, stats):
        return {"mean": (stats["S1"] + self.kappa * self.m0) / (stats["weight"] + self.kappa)}


def test_decay_one_averages_batches_and_keeps_the_prior_weight():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=600))
    w = torch.ones(600, dtype=torch.float64)
    state = OnlineEMState({"mean": torch.tensor(0.0)}, None, None, 0, 0.0)
    step = StepSize(decay=1.0, offset=0.0)  # ρ_t = 1/t: the average of equal batches
    for i in range(0, 600, 100):
        state = online_em_step(_MeanWithPrior(), state, (x[i : i + 100], w[i : i + 100]), step)
    # The running statistics times the weight seen are the full-data sums, so the MAP estimate
    # sees the prior against all 600 samples, as batch MAP does.
    expected = (x.sum() + 5.0 * 10.0) / (600 + 5.0)
    torch.testing.assert_close(state.params["mean"], expected, rtol=1e-12, atol=0)
    assert state.n_steps == 6 and state.weight_seen == 600


def test_step_sizes():
    s = StepSize(decay=0.6, offset=3.0)
    assert s(1) == 1.0
    assert s(2) == pytest.approx(5**-0.6) and s(10) == pytest.approx(13**-0.6)
    with pytest.raises(ValueError, match=r"learning_decay must lie in \(0.5, 1\]"):
        StepSize(decay=0.5)
    with pytest.raises(ValueError, match="learning_offset must be non-negative"):
        StepSize(offset=-1)
    # an infinite offset makes every step after the first zero: nothing would be learnt
    for bad in (math.inf, math.nan, "3", None):
        with pytest.raises(ValueError, match="learning_offset must be non-negative and finite"):
            StepSize(offset=bad)
    for bad in (math.nan, "0.7", None):
        with pytest.raises(ValueError, match="learning_decay must lie"):
            StepSize(decay=bad)


def test_a_failed_partial_fit_leaves_the_model_as_it_was(data):
    X, _ = data
    gm = GaussianMixture(2, random_state=0).partial_fit(X)
    before = {k: v for k, v in vars(gm).items()}
    with pytest.raises(ValueError):
        gm.partial_fit(X * 1e160)
    assert vars(gm).keys() == before.keys()
    assert all(vars(gm)[k] is v for k, v in before.items())


def test_stepwise_em_recovers_a_mixture_from_a_stream():
    rng = np.random.default_rng(2)
    true_means = np.array([[-3.0, 0.0], [3.0, 1.0]])
    gm = GaussianMixture(2, random_state=0)
    for _ in range(60):
        z = rng.integers(0, 2, size=200)
        gm.partial_fit(true_means[z] + rng.normal(size=(200, 2)))
    means = gm.means_[np.argsort(gm.means_[:, 0])]
    # About the last 1/ρ_60 ≈ 12 batches (2400 samples) weigh in: sd ≈ 0.03, so 0.15 is 5 sd.
    np.testing.assert_allclose(means, true_means, atol=0.15)
    np.testing.assert_allclose(gm.weights_, [0.5, 0.5], atol=0.1)  # sd ≈ 0.01 per component


def test_partial_fit_on_a_source_steps_once_per_chunk(data, device):
    X, w = data
    a = GaussianMixture(2, device=device, **INIT).partial_fit(
        ArraySource(X, sample_weight=w, chunk_rows=128)
    )
    b = GaussianMixture(2, **INIT)
    for i in range(0, len(X), 128):
        b.partial_fit(X[i : i + 128], sample_weight=w[i : i + 128])
    assert a.n_steps_ == b.n_steps_ == 4
    # Same recursion; on another device only the GEMM rounding differs.
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9)


def test_partial_fit_errors(data):
    X, _ = data
    with pytest.raises(ValueError, match="learning_decay"):
        GaussianMixture(2, learning_decay=2.0).partial_fit(X)
    with pytest.raises(ValueError, match="needs at least n_components = 3"):
        GaussianMixture(3).partial_fit(X[:2])
    gm = GaussianMixture(2, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match="X has 3 features"):
        gm.partial_fit(np.ones((5, 3)))
    with pytest.raises(ValueError, match="carries its own sample weights"):
        gm.partial_fit(ArraySource(X), sample_weight=np.ones(len(X)))


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_moments_moved_to_one_point_per_component_equal_moments_taken_there(data, ct):
    X, w = data
    Xt, wt = torch.from_numpy(X), torch.from_numpy(w)
    resp = torch.softmax(
        torch.randn(len(X), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1
    )
    resp = resp * wt.unsqueeze(1)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    points = torch.tensor([[0.3, 0.5], [2.0, 1.0], [-1.0, 4.0]], dtype=torch.float64)
    moved = translate_moment_stats(moment_stats(Xt - c, wt, resp, ct), c - points, ct)
    for k in range(3):
        at_k = moment_stats(Xt - points[k], wt, resp, ct)
        torch.testing.assert_close(moved["S1"][k], at_k["S1"][k], rtol=1e-10, atol=1e-9)
        if ct != "tied":
            torch.testing.assert_close(moved["S2"][k], at_k["S2"][k], rtol=1e-10, atol=1e-9)
    if ct == "tied":  # pooled: each component's scatter about its own point
        pooled = sum(((Xt - points[k]) * resp[:, k : k + 1]).T @ (Xt - points[k]) for k in range(3))
        torch.testing.assert_close(moved["S2"], pooled, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_partial_fit_keeps_the_variance_of_a_tight_group_far_from_the_centre(ct):
    # stepwise EM kept every moment about the data's centre: three rows near the origin and
    # three within 1e-3 of 1e8 scored -7.1e8 a row after 30 partial_fit calls where the batch
    # fit scores 3.57 (diag), every variance 0, without a word; with a value missing, a
    # partial_fit after a converged fit threw that fit away the same way
    X = _far_rows(missing=False)
    batch = GaussianMixture(2, covariance_type=ct, random_state=0, reg_covar=1e-9).fit(X)
    online = GaussianMixture(2, covariance_type=ct, random_state=0, reg_covar=1e-9)
    for _ in range(20):
        online.partial_fit(X)
    assert online.score(X) == pytest.approx(batch.score(X), rel=1e-9)
    np.testing.assert_allclose(online.covariances_, batch.covariances_, rtol=1e-6)

    Xm = _far_rows(missing=True)
    m = GaussianMixture(
        2, covariance_type=ct, random_state=0, reg_covar=1e-9, missing="marginalize", tol=1e-12
    )
    m.set_params(max_iter=2000).fit(Xm)
    before, score = np.array(m.covariances_), m.score(Xm)
    for _ in range(5):
        m.partial_fit(Xm)
    # (the full fit's near group holds the row with a value missing: it converges slowly)
    assert m.score(Xm) == pytest.approx(score, rel=1e-7)
    np.testing.assert_allclose(m.covariances_, before, rtol=1e-5)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_partial_fit_keeps_the_digits_of_a_mean_far_from_the_data_centre(ct):
    # 59 rows near 2.4 and one at 1e17: the means were kept about the data's centre (1.7e15),
    # spaced by 0.25, and moved between batches by the difference of two such values, so
    # the near group's mean stayed at 2.5 (2.4898 is right)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(2.4, 1, (59, 1)), [[1e17]]]
    m = GaussianMixture(2, covariance_type=ct, random_state=0)
    for _ in range(30):
        m.partial_fit(X[rng.permutation(60)])
    near = int(np.argmin(m.means_[:, 0]))
    np.testing.assert_allclose(m.means_[near], X[:59].mean(0), rtol=1e-9)
    np.testing.assert_array_equal(m.means_[1 - near], X[59])


@pytest.mark.parametrize(
    "model",
    [
        MixtureModel("gamma", 2, random_state=0),
        PoissonMixture(2, random_state=0),
    ],
    ids=["gamma", "poisson"],
)
def test_a_first_batch_whose_start_overflows_is_refused_in_latentfit_words(model):
    # Σ w = 6e307 fits float64, but Σ w x (x up to ~9) does not: the start's M-step gave NaN.
    # Before, torch.distributions refused the NaN parameters with its own ValueError (gamma)
    # or the NaN was reported as a bad value of the parameter rates_ (poisson); the weights
    # are now named before the start is computed.
    X = np.abs(np.random.default_rng(0).normal(4.0, 2.0, size=(60, 2))).round() + 1
    with pytest.raises(
        DataError, match=r"the sample weights \(Σ w = 6e\+307.*Rescale sample_weight"
    ):
        model.partial_fit(X, sample_weight=np.full(len(X), 1e306))
    assert not hasattr(model, "_params")  # left unfitted
    model.partial_fit(X, sample_weight=np.full(len(X), 1.0))  # and fits from a sane batch
