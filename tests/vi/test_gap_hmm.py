"""The exact-posterior ELBO of a hidden Markov model: with q(z) = p(z | x, θ) (a Markov chain
given by its pair marginals) the ELBO equals log p(x); checked against brute-force
enumeration of every state path, and against the mean-field q, which leaves a gap."""

import itertools
import math

import numpy as np
import pytest
import torch

from latentfit.em.hmm.inference.posterior import posterior
from latentfit.vi.gap import (
    hmm_chain_elbo,
    hmm_chain_entropy,
    hmm_exact_posterior,
    hmm_gap_trace,
    hmm_mean_field,
    hmm_mean_field_elbo,
)

F64 = torch.float64


def _hmm(device):
    startprob = torch.tensor([0.5, 0.3, 0.2], dtype=F64, device=device)
    transmat = torch.tensor(
        [[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.25, 0.25, 0.5]], dtype=F64, device=device
    )
    x = torch.tensor([0.1, 0.3, 1.4, 1.1, 2.6, 1.6], dtype=F64, device=device)
    means = torch.tensor([0.0, 1.2, 2.5], dtype=F64, device=device)
    log_b = torch.distributions.Normal(means, 0.7).log_prob(x.unsqueeze(1))  # (t, k)
    return log_b, startprob, transmat


def _enumerate(log_b, startprob, transmat):
    """All k^T paths (P, t) and their log p(x, z) (P,)."""
    T, k = log_b.shape
    paths = torch.tensor(list(itertools.product(range(k), repeat=T)), device=log_b.device)
    steps = torch.arange(T, device=log_b.device)
    lj = startprob.log()[paths[:, 0]] + log_b[steps, paths].sum(1)
    lj = lj + transmat.log()[paths[:, :-1], paths[:, 1:]].sum(1)
    return paths, lj


def _marginals_of(paths, p, k):
    """One- and two-slice marginals of a distribution ``p`` (P,) over the paths (P, t)."""
    onehot = torch.nn.functional.one_hot(paths, k).to(p.dtype)  # (P, t, k)
    gamma = torch.einsum("p,ptk->tk", p, onehot)
    xi = torch.einsum("p,pti,ptj->tij", p, onehot[:, :-1], onehot[:, 1:])
    return gamma, xi


def test_exact_posterior_elbo_equals_log_px_by_enumeration(device):
    log_b, pi, A = _hmm(device)
    k = log_b.shape[1]
    paths, lj = _enumerate(log_b, pi, A)
    log_px = torch.logsumexp(lj, 0)
    post = torch.softmax(lj, 0)  # (P,) p(z | x)
    gamma, xi = _marginals_of(paths, post, k)
    res = hmm_exact_posterior(log_b, pi, A)
    assert torch.isclose(res.log_px, log_px, rtol=1e-12)
    torch.testing.assert_close(res.gamma, gamma, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.xi, xi, rtol=0, atol=1e-12)
    # The summed pairs are the Baum-Welch transition counts of the (sequential) E-step.
    counts = posterior(log_b, pi, A, parallel=False).transition_counts
    torch.testing.assert_close(res.xi.sum(0), counts, rtol=1e-12, atol=1e-13)
    # H[q] of the chain is the entropy of the enumerated posterior over whole paths.
    h_paths = -(post * post.log()).sum()
    assert torch.isclose(hmm_chain_entropy(res.gamma, res.xi), h_paths, rtol=1e-10)
    out = hmm_chain_elbo(log_b, pi, A, res.gamma, res.xi)
    assert abs(float(out.elbo - log_px)) < 1e-10
    assert abs(float(out.gap)) < 1e-10
    assert torch.isclose(out.log_px, log_px, rtol=1e-12)


def test_chain_elbo_of_any_markov_q_matches_enumeration(device):
    """A random Markov chain q (its own start and per-step transitions): ELBO, entropy and
    the gap KL(q ‖ p(z | x)) all match the sums over the k^T paths."""
    log_b, pi, A = _hmm(device)
    T, k = log_b.shape
    g = torch.Generator().manual_seed(3)
    q0 = torch.softmax(torch.randn(k, generator=g, dtype=F64), 0).to(device)
    qa = torch.softmax(torch.randn(T - 1, k, k, generator=g, dtype=F64), 2).to(device)
    paths, lj = _enumerate(log_b, pi, A)
    steps = torch.arange(T - 1, device=device)
    lq = q0.log()[paths[:, 0]] + qa.log()[steps, paths[:, :-1], paths[:, 1:]].sum(1)  # (P,)
    q = lq.exp()
    assert math.isclose(float(q.sum()), 1.0, rel_tol=1e-12)
    gamma, xi = _marginals_of(paths, q, k)
    out = hmm_chain_elbo(log_b, pi, A, gamma, xi)
    assert torch.isclose(hmm_chain_entropy(gamma, xi), -(q * lq).sum(), rtol=1e-10)
    assert torch.isclose(out.elbo, (q * (lj - lq)).sum(), rtol=1e-10)
    kl = (q * (lq - torch.log_softmax(lj, 0))).sum()
    assert torch.isclose(out.gap, kl, rtol=1e-9) and float(out.gap) > 0


def test_mean_field_is_a_product_chain_and_leaves_a_positive_gap(device):
    log_b, pi, A = _hmm(device)
    q, trace = hmm_mean_field(log_b, pi, A, n_sweeps=30)
    xi = q[:-1].unsqueeze(2) * q[1:].unsqueeze(1)  # ξ_t = q_{t-1} ⊗ q_t
    chain = hmm_chain_elbo(log_b, pi, A, q, xi)
    mf = hmm_mean_field_elbo(log_b, pi, A, q)
    assert torch.isclose(chain.elbo, mf.elbo, rtol=1e-12)
    exact = hmm_exact_posterior(log_b, pi, A)
    exact_gap = hmm_chain_elbo(log_b, pi, A, exact.gamma, exact.xi).gap
    assert abs(float(exact_gap)) < 1e-10
    # CAVI's best factorised q still misses the coupling of neighbouring states.
    assert float(trace[-1].gap) > 1e-3


def _sample_hmm(T, seed):
    g = np.random.default_rng(seed)
    A = np.array([[0.92, 0.08], [0.12, 0.88]])
    z = [0]
    for _ in range(T - 1):
        z.append(g.choice(2, p=A[z[-1]]))
    return (np.array([-1.0, 1.0])[z] + 0.9 * g.normal(size=T)).reshape(-1, 1)


def test_baum_welch_trace_closes_the_gap_every_iteration(device):
    X = _sample_hmm(150, 0)
    tr = hmm_gap_trace(X, 2, n_iter=12, random_state=0, device=device)
    assert np.all(np.abs(tr.gap_after_estep) < 1e-8)
    assert np.all(tr.gap >= -1e-9) and tr.gap[0] > 1e-3
    # The M-step lifts the bound above the previous log-likelihood; EM never lowers it.
    assert np.all(tr.elbo[1:] >= tr.log_px[:-1] - 1e-9)
    assert np.all(np.diff(tr.log_px) >= -1e-9)
    np.testing.assert_allclose(tr.log_px - tr.elbo, tr.gap, rtol=1e-9, atol=1e-9)
    mf = hmm_gap_trace(X, 2, n_iter=12, mean_field=True, random_state=0, device=device)
    # Variational EM: each step raises its ELBO (the E-step's CAVI starts from the
    # previous q), and the gap after the mean-field E-step never closes.
    elbo_after = mf.log_px - mf.gap_after_estep
    assert np.all(np.diff(elbo_after) >= -1e-9)
    assert np.all(mf.gap_after_estep > 1e-3)
    assert elbo_after[-1] < tr.log_px[-1]


def test_bad_input_is_named():
    log_b, pi, A = _hmm("cpu")
    with pytest.raises(ValueError, match="transmat"):
        hmm_exact_posterior(log_b, pi, A[:2])
    with pytest.raises(ValueError, match="one sequence"):
        hmm_exact_posterior(log_b.unsqueeze(0), pi, A)
    res = hmm_exact_posterior(log_b, pi, A)
    xi = res.xi.clone()
    xi[2] = res.xi[2].T.clone()  # marginals that no Markov chain has
    with pytest.raises(ValueError, match=r"xi\[2\]"):
        hmm_chain_elbo(log_b, pi, A, res.gamma, xi)
    with pytest.raises(ValueError, match=r"gamma must be .* and xi"):
        hmm_chain_elbo(log_b, pi, A, res.gamma, res.xi[1:])
    impossible = log_b.clone()
    impossible[3] = -math.inf  # no state can emit step 3
    with pytest.raises(ValueError, match="probability zero"):
        hmm_exact_posterior(impossible, pi, A)
    with pytest.raises(ValueError, match="n_states"):
        hmm_gap_trace(np.zeros((5, 1)), 0)
