"""The compiled CPU Viterbi and diagonal Gaussian densities against brute force, the
sequential torch recursion and scipy."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from latentfit.em.hmm import emissions as E
from latentfit.em.hmm.inference import posterior as K

from .test_hmm_kernels import LENGTH_SETS, brute_force, random_model

pytest.importorskip("numba")  # a dependency; the torch versions cover platforms without it
from latentfit.em.hmm.inference.compiled_viterbi import viterbi_cpu, viterbi_cpu_blocks


def assert_same_viterbi(got, ref, rel=1e-12):
    np.testing.assert_array_equal(got.path.numpy(), ref.path.numpy())
    np.testing.assert_allclose(got.sequence_log_probs, ref.sequence_log_probs, rtol=rel)
    assert float(got.log_prob) == pytest.approx(float(ref.log_prob), rel=rel)


def test_equals_brute_force():
    lengths = [3, 1, 4]
    ll, pi, A = random_model(3, sum(lengths), seed=2)
    _, _, _, _, best_lp, best_path = brute_force(ll, pi, A, lengths)
    v = viterbi_cpu(ll, pi, A, lengths, chunk=2)
    assert float(v.log_prob) == pytest.approx(best_lp, rel=1e-12)
    np.testing.assert_array_equal(v.path.numpy(), best_path)


@pytest.mark.parametrize("lengths", LENGTH_SETS)
@pytest.mark.parametrize("sticky", [0.0, 20.0])
@pytest.mark.parametrize("chunk", [None, 16, 250])
@pytest.mark.parametrize("k", [3, 8])  # a runtime number of states, and one compiled for
def test_equals_sequential(lengths, sticky, chunk, k):
    ll, pi, A = random_model(k, sum(lengths), seed=4, sticky=sticky)
    ref = K.viterbi(ll, pi, A, lengths)
    for workers in (1, 2):
        assert_same_viterbi(viterbi_cpu(ll, pi, A, lengths, chunk=chunk, workers=workers), ref)


def test_wrong_proposals_are_run_again():
    """A chain that never forgets its start (block-diagonal transitions, one block per
    sequence) with structural zeros: warm-up proposals are often wrong and the chunks are
    run again from the exact messages; -inf scores stay -inf, never NaN."""
    ll, pi, A = random_model(4, 2000, seed=5)
    A = A.clone()
    A[:2, 2:] = 0
    A[2:, :2] = 0
    A[0, 1] = 0
    A = A / A.sum(1, keepdim=True)
    lengths = [700, 1300]
    ref = K.viterbi(ll, pi, A, lengths)
    assert_same_viterbi(viterbi_cpu(ll, pi, A, lengths, chunk=16), ref)


@pytest.mark.parametrize("k", [1, 2, 20])
def test_few_and_many_states(k):
    lengths = [250, 1, 349]
    ll, pi, A = random_model(k, sum(lengths), seed=11, sticky=3.0)
    assert_same_viterbi(viterbi_cpu(ll, pi, A, lengths, chunk=37), K.viterbi(ll, pi, A, lengths))


def test_float32():
    ll, pi, A = random_model(4, 3000, seed=7, dtype=torch.float32, sticky=2.0)
    ref = K.viterbi(ll, pi, A)
    got = viterbi_cpu(ll, pi, A, chunk=50)
    assert got.sequence_log_probs.dtype == torch.float32
    # float32 sums of 3000 steps in another order: ~1e-7 relative per addition
    assert_same_viterbi(got, ref, rel=1e-5)


def test_impossible_step_gives_minus_infinity():
    ll, pi, A = random_model(3, 500, seed=12)
    ll[300] = -torch.inf
    v = viterbi_cpu(ll, pi, A, [200, 300], chunk=20)
    assert float(v.sequence_log_probs[0]) == float(
        K.viterbi(ll, pi, A, [200, 300]).sequence_log_probs[0]
    )
    assert float(v.log_prob) == -np.inf


def test_blocks_ask_for_rows_in_range_only():
    """The emission callback is asked for row ranges inside [0, t), each once per group or
    re-run, and the result equals decoding the whole array."""
    ll, pi, A = random_model(5, 5000, seed=13, sticky=1.0)
    asked = []

    def emission(a, b):
        asked.append((a, b))
        assert 0 <= a < b <= 5000
        return ll[a:b]

    got = viterbi_cpu_blocks(emission, 5000, pi, A, [2500, 2500], chunk=40)
    assert_same_viterbi(got, K.viterbi(ll, pi, A, [2500, 2500]))
    covered = np.zeros(5000, bool)
    for a, b in asked:
        covered[a:b] = True
    assert covered.all()


def test_bad_lengths():
    ll, pi, A = random_model(2, 10, seed=0)
    with pytest.raises(ValueError, match="sum to 10"):
        viterbi_cpu(ll, pi, A, [4, 5])


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=6),
    k=st.integers(1, 5),
    chunk=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_property_equals_sequential(lengths, k, chunk, seed):
    ll, pi, A = random_model(k, sum(lengths), seed=seed, sticky=2.0)
    got = viterbi_cpu(ll, pi, A, lengths, chunk=chunk)
    assert_same_viterbi(got, K.viterbi(ll, pi, A, lengths), rel=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_diag_gaussian_density_equals_scipy(covariance_type, dtype):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1000, 3, generator=g, dtype=dtype) * 2 + 5
    means = torch.randn(4, 3, generator=g, dtype=dtype) + 5
    covars = torch.rand(4, 3, generator=g, dtype=dtype) + 0.5
    if covariance_type == "spherical":
        covars = covars[:, 0]
    got = E.gaussian_log_likelihood(X, means, covars, covariance_type)
    var = covars.unsqueeze(1).expand(4, 3) if covariance_type == "spherical" else covars
    ref = np.stack(
        [
            stats.norm(means[j].double(), var[j].double().sqrt()).logpdf(X.double()).sum(1)
            for j in range(4)
        ],
        1,
    )
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=tol)


def test_impossible_sequence_does_not_spoil_the_next():
    """The first sequence cannot start (its only possible start state cannot emit the first
    step): its score is -inf and the following sequences are decoded as if alone."""
    ll, pi, A = random_model(2, 600, seed=21, sticky=1.0)
    pi = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ll[0, 0] = -torch.inf
    lengths = [200, 250, 150]
    ref = K.viterbi(ll, pi, A, lengths)
    assert float(ref.sequence_log_probs[0]) == -np.inf
    for got in (
        viterbi_cpu(ll, pi, A, lengths, chunk=17),
        K.parallel_viterbi(ll, pi, A, lengths, chunk=17),
    ):
        np.testing.assert_array_equal(got.path[200:], ref.path[200:])
        np.testing.assert_allclose(
            got.sequence_log_probs[1:], ref.sequence_log_probs[1:], rtol=1e-12
        )
        assert float(got.sequence_log_probs[0]) == -np.inf
