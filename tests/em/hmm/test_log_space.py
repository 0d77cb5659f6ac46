"""Sequences the scaled forward-backward kernels lose to underflow are redone in log space
(em/hmm/inference/log_space.py): against brute-force enumeration of the state paths, and
against hmmlearn on the case the property tests found; and, found by the same search, a float32
tied covariance that rounding had left indefinite."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

import latentfit
from latentfit.em.hmm.inference import posterior as P
from latentfit.em.hmm.inference.log_space import underflow_possible

F64 = torch.float64


def _brute_force(logB, startprob, transmat):
    """log p(x), posteriors and summed transition counts of one sequence, by every path."""
    T, k = logB.shape
    paths = list(itertools.product(range(k), repeat=T))
    with np.errstate(divide="ignore"):
        lpi, la = np.log(startprob), np.log(transmat)
    lp = np.array(
        [
            lpi[z[0]] + logB[0, z[0]] + sum(la[z[i - 1], z[i]] + logB[i, z[i]] for i in range(1, T))
            for z in paths
        ]
    )
    total = np.logaddexp.reduce(lp)
    w = np.exp(lp - total)
    gamma, xi = np.zeros((T, k)), np.zeros((k, k))
    for weight, z in zip(w, paths, strict=True):
        for i in range(T):
            gamma[i, z[i]] += weight
        for i in range(1, T):
            xi[z[i - 1], z[i]] += weight
    return total, gamma, xi


START = np.array([1.0, 0.0, 2e-235])
TRANS = np.array([[0.98, 0.01, 0.01], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
# the state the chain cannot start in fits each step ~3,000 nats better than the others
LOST = np.array([[-11906.4, -8581.9, -13939.8], [-5000.0, -2000.0, -5003.0], [-7.0, -3000.0, -9.0]])
FINE = np.array([[-1.0, -2.0, -3.0], [-2.0, -1.0, -0.5]])


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_lost_sequence_is_redone_beside_a_kept_one(compiled, overwrite):
    logB = np.vstack([FINE, LOST])
    assert underflow_possible(torch.tensor(logB))
    post = P.posterior(
        torch.tensor(logB), torch.tensor(START), torch.tensor(TRANS), [2, 3],
        compiled=compiled, overwrite=overwrite,
    )  # fmt: skip
    fine, lost = _brute_force(FINE, START, TRANS), _brute_force(LOST, START, TRANS)
    np.testing.assert_allclose(post.sequence_log_likelihoods, [fine[0], lost[0]], rtol=1e-12)
    np.testing.assert_allclose(post.posteriors, np.vstack([fine[1], lost[1]]), atol=1e-12)
    np.testing.assert_allclose(post.transition_counts, fine[2] + lost[2], atol=1e-12)
    np.testing.assert_allclose(post.start_counts, fine[1][0] + lost[1][0], atol=1e-12)
    filt = P.log_likelihood(
        torch.tensor(logB), torch.tensor(START), torch.tensor(TRANS), [2, 3], compiled=compiled
    )
    np.testing.assert_allclose(filt.sequence_log_likelihoods, [fine[0], lost[0]], rtol=1e-12)
    np.testing.assert_allclose(filt.log_normalizers.sum(), fine[0] + lost[0], rtol=1e-12)


def test_an_impossible_sequence_stays_impossible():
    # a known state that rules out every path: -inf in exact arithmetic too
    logB = torch.tensor([[-1.0, -np.inf, -np.inf], [-np.inf, -np.inf, -2.0]], dtype=F64)
    trans = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    post = P.posterior(logB, torch.tensor(START), trans)
    assert post.log_likelihood == -np.inf


def test_score_and_predict_proba_far_from_every_state_are_hmmlearns():
    # found by the property tests: a point ~12,000 nats from every state of a 3-row fit
    # scored -inf with posteriors of 0; hmmlearn: -11906.4 and [1, 0, 0]
    hmm = pytest.importorskip("hmmlearn.hmm")
    X = np.array(
        [[8.18460948, -13.01025753], [9.33938253, -9.45532564], [10.43038222, -13.13095595]]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = latentfit.GaussianHMM(n_components=3, n_iter=5, random_state=0).fit(X)
    ref = hmm.GaussianHMM(3, init_params="")
    ref.startprob_, ref.transmat_, ref.means_ = ours.startprob_, ours.transmat_, ours.means_
    ref.covars_ = np.array([np.diag(c) for c in ours.covars_])
    far = np.vstack([[[0.99024616, 0.64347573]], X])
    for lengths in (None, [1, 3]):
        np.testing.assert_allclose(ours.score(far, lengths), ref.score(far, lengths), rtol=1e-12)
        np.testing.assert_allclose(
            ours.predict_proba(far, lengths), ref.predict_proba(far, lengths), atol=1e-12
        )


def test_a_float32_tied_covariance_stays_positive_definite_and_the_model_reloads(tmp_path):
    # found by the property tests: the near-singular float64 update rounded to float32 had an
    # eigenvalue of -3.4e-7; the fitted model could neither score nor be loaded from its file
    X = np.array([[2.17862049, 1.00248306], [0.83705424, 3.07513629], [-4.98656613, 10.72274143]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = latentfit.GaussianHMM(
            3, covariance_type="tied", dtype="float32", n_iter=5, random_state=0
        ).fit(X)
    assert np.linalg.eigvalsh(np.asarray(model._covars_, dtype=np.float64)).min() > 0
    path = latentfit.save(model, tmp_path / "m.lf")
    np.testing.assert_allclose(latentfit.load(path).score(X), model.score(X), rtol=1e-6)


def test_a_float32_full_covariance_singular_in_float32_is_lifted():
    # found by the property tests: eigenvalues of 5e-9 and -1.6e-15 beside 0.02 passed
    # float32's Cholesky factor; predict_proba then gave inf and load refused the file
    X = np.array([[1.93265115, 0.28655665], [2.49837802, -0.74092089], [2.57883879, 0.56582657]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = latentfit.GaussianHMM(
            3, covariance_type="full", dtype="float32", n_iter=5, random_state=0
        ).fit(X)
    for cov in np.asarray(model._covars_, dtype=np.float64):
        lam = np.linalg.eigvalsh(cov)
        assert lam[0] > np.finfo(np.float32).eps * 2 * lam[-1]
    Y = np.array([[-0.60908705, -8.31087003], [6.7293568, 6.83920646], [6.84052294, 6.69187731]])
    np.testing.assert_allclose(model.predict_proba(Y).sum(1), 1.0, rtol=1e-5)


def test_posteriors_the_backward_pass_loses_are_redone_and_are_hmmlearns():
    # found by the property tests' fourth run: a finite log-likelihood (~1e18 nats) whose
    # first steps' posteriors summed to 1.6e-28; each step is now normalised by itself
    hmm = pytest.importorskip("hmmlearn.hmm")
    X = np.array([[1.93265115, 0.28655665], [2.49837802, -0.74092089], [2.57883879, 0.56582657]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = latentfit.GaussianHMM(3, covariance_type="full", n_iter=5, random_state=0).fit(X)
    ref = hmm.GaussianHMM(3, covariance_type="full", init_params="")
    ref.startprob_, ref.transmat_ = ours.startprob_, ours.transmat_
    ref.means_, ref.covars_ = ours.means_, ours.covars_
    Y = np.random.default_rng(0).normal(size=(6, 2)) * 5
    np.testing.assert_allclose(ours.predict_proba(Y).sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(Y), ref.predict_proba(Y), atol=1e-12)
