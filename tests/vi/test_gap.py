"""log p(x) = ELBO(q) + KL(q ‖ p(z|x)), checked against brute-force enumeration, scipy and
torch.distributions KLs; EM's E-step closes the gap, mean-field q leaves a positive one."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Categorical, MultivariateNormal, kl_divergence

from latentfit.datasets import load_faithful
from latentfit.vi import BayesianGaussianMixture
from latentfit.vi.gap import (
    bgmm_gap_trace,
    bgmm_log_evidence,
    em_gap_trace,
    hmm_mean_field,
    hmm_mean_field_elbo,
    linear_gaussian_elbo,
    linear_gaussian_gap_trace,
    mixture_elbo,
)

F64 = torch.float64


def test_mixture_gap_is_the_kl_to_the_posterior():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 2, generator=g, dtype=F64)
    means = np.array([[0.0, 0.0], [1.0, -1.0], [-1.0, 0.5]])
    covs = [np.eye(2), np.diag([0.5, 2.0]), np.array([[1.0, 0.3], [0.3, 0.8]])]
    weights = np.array([0.5, 0.3, 0.2])
    log_joint = torch.tensor(
        np.stack(
            [
                np.log(w) + stats.multivariate_normal(m, c).logpdf(X.numpy())
                for w, m, c in zip(weights, means, covs, strict=True)
            ],
            1,
        )
    )  # (n, k) from scipy
    post = torch.softmax(log_joint, 1)
    exact = mixture_elbo(log_joint, post)
    assert abs(float(exact.gap)) < 1e-10 and torch.isclose(exact.elbo, exact.log_px, rtol=1e-12)
    q = torch.softmax(torch.randn(30, 3, generator=g, dtype=F64), 1)
    res = mixture_elbo(log_joint, q)
    kl = kl_divergence(Categorical(probs=q), Categorical(probs=post)).sum()
    assert torch.isclose(res.gap, kl, rtol=1e-10) and float(res.gap) > 0
    assert torch.isclose(res.log_px - res.elbo, res.gap, rtol=1e-10)


def test_em_estep_closes_the_gap_and_the_mstep_opens_it():
    X = load_faithful().data
    tr = em_gap_trace(X, 3, n_iter=15, random_state=0)
    assert np.all(np.abs(tr.gap_after_estep) < 1e-8)
    assert np.all(tr.gap >= -1e-9) and tr.gap[0] > 1e-3
    # ELBO(q_t, θ_{t+1}) ≥ ELBO(q_t, θ_t) = log p(x | θ_t): the M-step lifts the bound above
    # the previous log-likelihood, and the log-likelihood follows (Neal & Hinton 1998).
    assert np.all(tr.elbo[1:] >= tr.log_px[:-1] - 1e-9)
    assert np.all(np.diff(tr.log_px) >= -1e-9)
    np.testing.assert_allclose(tr.log_px - tr.elbo, tr.gap, rtol=1e-9, atol=1e-9)


def _hmm():
    startprob = torch.tensor([0.6, 0.4], dtype=F64)
    transmat = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=F64)
    x = torch.tensor([0.1, 0.3, 1.4, 1.1, 0.2, 1.6], dtype=F64)
    log_b = torch.distributions.Normal(torch.tensor([0.0, 1.5], dtype=F64), 0.6).log_prob(
        x.unsqueeze(1)
    )  # (t, k)
    return log_b, startprob, transmat


def _path_log_joint(log_b, startprob, transmat, path):
    lp = startprob[path[0]].log() + log_b[0, path[0]]
    for t in range(1, len(path)):
        lp = lp + transmat[path[t - 1], path[t]].log() + log_b[t, path[t]]
    return lp


def test_hmm_mean_field_elbo_matches_enumeration_over_paths():
    log_b, pi, A = _hmm()
    T, k = log_b.shape
    q = torch.softmax(torch.randn(T, k, generator=torch.Generator().manual_seed(1), dtype=F64), 1)
    paths = list(itertools.product(range(k), repeat=T))
    lj = torch.stack([_path_log_joint(log_b, pi, A, p) for p in paths])
    lq = torch.stack([sum(q[t, s].log() for t, s in enumerate(p)) for p in paths])
    res = hmm_mean_field_elbo(log_b, pi, A, q)
    assert torch.isclose(res.log_px, torch.logsumexp(lj, 0), rtol=1e-12)
    assert torch.isclose(res.elbo, (lq.exp() * (lj - lq)).sum(), rtol=1e-12)


def test_hmm_mean_field_leaves_a_positive_gap():
    log_b, pi, A = _hmm()
    _, trace = hmm_mean_field(log_b, pi, A, n_sweeps=15)
    elbos = torch.stack([t.elbo for t in trace])
    assert bool((elbos.diff() >= -1e-12).all())  # coordinate ascent never lowers it
    assert float(trace[-1].gap) > 1e-3  # the factorised q cannot hold the chain's coupling


def test_linear_gaussian_gap_zero_at_the_posterior_positive_for_mean_field():
    g = torch.Generator().manual_seed(0)
    n, d, qd = 25, 4, 2
    W = torch.randn(d, qd, generator=g, dtype=F64)
    mu = torch.randn(d, generator=g, dtype=F64)
    psi = torch.rand(d, generator=g, dtype=F64) + 0.2
    X = torch.randn(n, d, generator=g, dtype=F64) * 2
    prec = torch.eye(qd, dtype=F64) + W.T @ (W / psi.unsqueeze(1))  # posterior precision
    cov = torch.linalg.inv(prec)
    mean = (X - mu) @ (W / psi.unsqueeze(1)) @ cov  # (n, q)
    exact = linear_gaussian_elbo(X, W, mu, psi, mean, cov)
    marg = stats.multivariate_normal(mu.numpy(), (W @ W.T + torch.diag(psi)).numpy())
    assert math.isclose(float(exact.log_px), marg.logpdf(X.numpy()).sum(), rel_tol=1e-12)
    assert abs(float(exact.gap)) < 1e-9
    mf_cov = torch.diag(1 / prec.diagonal())  # the mean-field optimum for a Gaussian
    mf = linear_gaussian_elbo(X, W, mu, psi, mean, mf_cov)
    kl = kl_divergence(MultivariateNormal(mean, mf_cov), MultivariateNormal(mean, cov)).sum()
    assert torch.isclose(mf.gap, kl, rtol=1e-10) and float(mf.gap) > 0


def _evidence_by_student_t(X, model) -> float:
    """One cluster: log p(X) by the chain rule of Student-t predictives (Murphy 2007 §8)."""
    prior = model._make_prior(torch.as_tensor(X), torch.ones(len(X), dtype=F64))
    beta, m, nu = prior.mean_precision, prior.mean.numpy(), prior.dof
    C = prior.covariance.numpy()  # W⁻¹
    d = X.shape[1]
    total = 0.0
    for x in X:
        df = nu - d + 1
        total += stats.multivariate_t(m, C * (beta + 1) / (beta * df), df=df).logpdf(x)
        diff = x - m
        C = C + beta / (beta + 1) * np.outer(diff, diff)
        m = (beta * m + x) / (beta + 1)
        beta, nu = beta + 1, nu + 1
    return total


def _tiny_data():
    return np.array(
        [
            [0.1, 0.2],
            [-0.4, 0.3],
            [0.2, -0.1],
            [3.1, 2.8],
            [2.7, 3.3],
            [3.4, 3.0],
            [0.0, -0.3],
            [2.9, 3.1],
        ]
    )


def test_bgmm_evidence_matches_the_student_t_chain_rule():
    X = _tiny_data()
    one = BayesianGaussianMixture(
        n_components=1, weight_concentration_prior_type="dirichlet_distribution"
    )
    assert math.isclose(bgmm_log_evidence(X, one), _evidence_by_student_t(X, one), rel_tol=1e-10)


def test_cavi_leaves_a_positive_gap_to_the_exact_evidence():
    X = _tiny_data()
    model = BayesianGaussianMixture(
        n_components=2,
        weight_concentration_prior_type=("dirichlet_distribution"),
        max_iter=50,
        tol=1e-10,
        init_params="random",
        reg_covar=0.0,
        random_state=0,
    )
    tr = bgmm_gap_trace(X, model)
    assert np.all(tr.gap > 0)
    assert np.all(np.diff(tr.elbo) >= -1e-9)
    # The two clusters are well separated, so the posterior has two symmetric modes that a
    # single mean-field q covers one of: the gap cannot fall below about log 2! = 0.69.
    assert tr.gap[-1] > 0.5 * math.log(2)
    with pytest.raises(ValueError, match="too many"):
        bgmm_log_evidence(np.zeros((40, 2)), model)


def test_ppca_em_closes_the_gap_mean_field_leaves_it_open():
    g = np.random.default_rng(0)
    Z = g.normal(size=(200, 2))
    X = Z @ np.array([[2.0, 1.0, 0.5, 0.0], [1.5, -1.0, 0.0, 1.0]]) + 0.3 * g.normal(size=(200, 4))
    exact = linear_gaussian_gap_trace(X, 2, n_iter=25)
    mf = linear_gaussian_gap_trace(X, 2, n_iter=25, mean_field=True)
    assert np.all(np.abs(exact.gap_after_estep) < 1e-8)
    assert np.all(exact.gap >= -1e-9) and np.all(np.diff(exact.log_px) >= -1e-8)
    assert np.all(exact.elbo[1:] >= exact.log_px[:-1] - 1e-8)
    # Variational EM: its ELBO never decreases (the ELBO after the E-step is the log
    # likelihood minus the gap) and the gap after the mean-field E-step stays positive.
    elbo_after = mf.log_px - mf.gap_after_estep
    assert np.all(np.diff(elbo_after) >= -1e-8)
    assert np.all(mf.gap_after_estep > 1e-6)
    # The mean-field bound on log p(x) is looser than EM's log-likelihood.
    assert elbo_after[-1] < exact.log_px[-1]
