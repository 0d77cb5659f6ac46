"""The inference kernels against brute-force enumeration, closed forms, and each other."""

import importlib.util
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentfit.em.hmm.inference import posterior as K
from tests.device_tags import paused

F64 = torch.float64


def random_model(k, t, seed, dtype=F64, sticky=0.0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    pi = torch.rand(k, generator=g, dtype=dtype) + 0.1
    A = torch.rand(k, k, generator=g, dtype=dtype) + sticky * torch.eye(k, dtype=dtype)
    ll = torch.randn(t, k, generator=g, dtype=dtype) * scale
    return ll, pi / pi.sum(), A / A.sum(1, keepdim=True)


def compiled_posterior(ll, pi, A, lengths=None, **kwargs):
    """The compiled E-step, or None where numba is not installed."""
    if importlib.util.find_spec("numba") is None:
        return None
    return K.posterior(ll, pi, A, lengths, compiled=True, **kwargs)


def assert_same_posterior(p, ref, rtol=1e-9):
    assert float(p.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-12)
    np.testing.assert_allclose(p.sequence_log_likelihoods, ref.sequence_log_likelihoods, rtol=1e-12)
    np.testing.assert_allclose(p.posteriors, ref.posteriors, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(p.transition_counts, ref.transition_counts, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(p.start_counts, ref.start_counts, rtol=rtol, atol=1e-12)


def brute_force(ll, pi, A, lengths):
    """Enumerate every state path of every sequence: log p(x), γ, Σξ, start counts, best paths."""
    k = ll.shape[1]
    out_ll, gammas, xi, start, best_lp, best_paths = 0.0, [], np.zeros((k, k)), np.zeros(k), 0.0, []
    offset = 0
    for n in lengths:
        seg = ll[offset : offset + n].numpy()
        paths = list(itertools.product(range(k), repeat=n))
        lp = np.array(
            [
                math.log(pi[p[0]])
                + seg[0, p[0]]
                + sum(math.log(A[p[i - 1], p[i]]) + seg[i, p[i]] for i in range(1, n))
                for p in paths
            ]
        )
        logz = np.logaddexp.reduce(lp)
        w = np.exp(lp - logz)
        g = np.zeros((n, k))
        for wi, p in zip(w, paths, strict=True):
            g[np.arange(n), p] += wi
            start[p[0]] += wi
            for i in range(1, n):
                xi[p[i - 1], p[i]] += wi
        out_ll += logz
        gammas.append(g)
        best_lp += lp.max()
        best_paths.append(paths[int(lp.argmax())])
        offset += n
    return out_ll, np.concatenate(gammas), xi, start, best_lp, np.concatenate(best_paths)


# the three E-steps: sequential torch recursions, torch chunks, compiled (numba, CPU)
METHODS = {
    "sequential": dict(parallel=False),
    "chunked": dict(compiled=False),
    "compiled": dict(compiled=True),
}
needs_numba = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed"
)


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=needs_numba) if m == "compiled" else m for m in METHODS]
)
@pytest.mark.parametrize("lengths", [[6], [2, 1, 3]])
def test_posterior_equals_brute_force(method, lengths):
    ll, pi, A = random_model(3, sum(lengths), seed=1)
    ref_ll, ref_g, ref_xi, ref_start, _, _ = brute_force(ll, pi, A, lengths)
    post = K.posterior(ll, pi, A, lengths, chunk=2, **METHODS[method])
    assert float(post.log_likelihood) == pytest.approx(ref_ll, rel=1e-12)
    np.testing.assert_allclose(post.posteriors.numpy(), ref_g, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.transition_counts.numpy(), ref_xi, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.start_counts.numpy(), ref_start, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=needs_numba) if m == "compiled" else m for m in METHODS]
)
@pytest.mark.parametrize("lengths", [[6], [2, 1, 3]])
def test_impossible_emissions_equal_brute_force_without_nan(method, lengths):
    # an emission of probability 0 (a category a state never emits) is -inf in ll
    ll, pi, A = random_model(3, sum(lengths), seed=1)
    ll[0, 0] = ll[2, 1] = ll[2, 2] = -math.inf
    ll[4, :2] = -math.inf
    ref_ll, ref_g, ref_xi, ref_start, best_lp, best_path = brute_force(ll, pi, A, lengths)
    post = K.posterior(ll.clone(), pi, A, lengths, chunk=2, **METHODS[method])
    assert not bool(torch.isnan(post.posteriors).any())
    assert float(post.log_likelihood) == pytest.approx(ref_ll, rel=1e-12)
    np.testing.assert_allclose(post.posteriors.numpy(), ref_g, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.transition_counts.numpy(), ref_xi, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.start_counts.numpy(), ref_start, rtol=1e-10, atol=1e-13)
    assert post.posteriors[0, 0] == 0 and (post.posteriors[2, 1:] == 0).all()
    for kernel in (K.viterbi, lambda *a: K.parallel_viterbi(*a, chunk=2)):
        v = kernel(ll, pi, A, lengths)
        assert float(v.log_prob) == pytest.approx(best_lp, rel=1e-12)
        np.testing.assert_array_equal(v.path.numpy(), best_path)


@pytest.mark.parametrize("kernel", [K.viterbi, lambda *a: K.parallel_viterbi(*a, chunk=2)])
def test_viterbi_equals_brute_force(kernel):
    lengths = [3, 1, 4]
    ll, pi, A = random_model(3, sum(lengths), seed=2)
    _, _, _, _, best_lp, best_path = brute_force(ll, pi, A, lengths)
    v = kernel(ll, pi, A, lengths)
    assert float(v.log_prob) == pytest.approx(best_lp, rel=1e-12)
    np.testing.assert_array_equal(v.path.numpy(), best_path)


def test_forward_filter_is_the_filtering_distribution():
    ll, pi, A = random_model(2, 4, seed=3)
    fwd = K.forward_filter(ll, pi, A)
    # p(z_t | x_1..x_t) by brute force on the prefix of length t+1
    for t in range(4):
        _, g, *_ = brute_force(ll[: t + 1], pi, A, [t + 1])
        np.testing.assert_allclose(fwd.filtered[t].numpy(), g[-1], rtol=1e-12)


LENGTH_SETS = [[3000], [1, 1000, 1, 2, 997, 999], [17] * 100]


@pytest.mark.parametrize("lengths", LENGTH_SETS)
@pytest.mark.parametrize("sticky", [0.0, 20.0])
@pytest.mark.parametrize("chunk", [None, 7, 250])
def test_parallel_kernels_equal_sequential(lengths, sticky, chunk):
    ll, pi, A = random_model(4, sum(lengths), seed=4, sticky=sticky)
    f1 = K.forward_filter(ll, pi, A, lengths)
    f2 = K.parallel_forward_filter(ll, pi, A, lengths, chunk=chunk)
    np.testing.assert_allclose(f2.sequence_log_likelihoods, f1.sequence_log_likelihoods, rtol=1e-10)
    np.testing.assert_allclose(f2.filtered, f1.filtered, rtol=1e-9, atol=1e-12)
    p1 = K.posterior(ll, pi, A, lengths, parallel=False)
    p2 = K.posterior(ll, pi, A, lengths, chunk=chunk, compiled=False)
    assert_same_posterior(p2, p1)
    c = compiled_posterior(ll, pi, A, lengths)
    if c is not None:
        assert_same_posterior(c, p1)
    v1 = K.viterbi(ll, pi, A, lengths)
    v2 = K.parallel_viterbi(ll, pi, A, lengths, chunk=chunk, warmup=2)
    np.testing.assert_array_equal(v2.path, v1.path)
    assert float(v2.log_prob) == pytest.approx(float(v1.log_prob), rel=1e-12)


def test_reducible_chain_and_structural_zeros():
    """Block-diagonal transitions never forget their start (no coalescence), and zeros in the
    transition matrix give -inf Viterbi scores: both paths of the parallel kernels."""
    ll, pi, A = random_model(4, 2000, seed=5)
    A = A.clone()
    A[:2, 2:] = 0
    A[2:, :2] = 0
    A[0, 1] = 0
    A = A / A.sum(1, keepdim=True)
    lengths = [700, 1300]
    p1 = K.posterior(ll, pi, A, lengths, parallel=False)
    for p2 in (
        K.posterior(ll, pi, A, lengths, chunk=45, compiled=False),
        compiled_posterior(ll, pi, A, lengths),
    ):
        if p2 is None:
            continue
        assert float(p2.log_likelihood) == pytest.approx(float(p1.log_likelihood), rel=1e-12)
        np.testing.assert_allclose(p2.posteriors, p1.posteriors, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(p2.transition_counts, p1.transition_counts, rtol=1e-9, atol=1e-9)
        assert float(p2.transition_counts[0, 1]) == 0.0
    v1 = K.viterbi(ll, pi, A, lengths)
    v2 = K.parallel_viterbi(ll, pi, A, lengths, chunk=45, warmup=1)
    np.testing.assert_array_equal(v2.path, v1.path)


def test_no_underflow_on_a_million_steps():
    """Every p(x_t | z) is about e^-700; with identical transition rows and startprob equal to
    them the states are i.i.d., so log p(x) = Σ_t logsumexp(ℓ_t + log π) in closed form."""
    t, k = 1_000_000, 3
    g = torch.Generator().manual_seed(6)
    ll = torch.randn(t, k, generator=g, dtype=F64) - 700.0
    pi = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    A = pi.expand(k, k).clone()
    expected = torch.logsumexp(ll + pi.log(), 1).sum()
    for post in (K.posterior(ll, pi, A, compiled=False), compiled_posterior(ll, pi, A)):
        if post is None:
            continue
        assert float(post.log_likelihood) == pytest.approx(float(expected), rel=1e-12)
        assert bool(torch.isfinite(post.posteriors).all())
        np.testing.assert_allclose(post.posteriors.sum(1), 1.0, rtol=1e-12)


def test_float32_matches_float64():
    ll, pi, A = random_model(3, 5000, seed=7)
    p64 = K.posterior(ll, pi, A, parallel=False)
    for compiled in (False, True):
        if compiled and importlib.util.find_spec("numba") is None:
            continue
        p32 = K.posterior(ll.float(), pi.float(), A.float(), compiled=compiled)
        # float32 rounding accumulated over 5000 steps: ~1e-7 relative per step, 1e-5 overall.
        assert float(p32.log_likelihood) == pytest.approx(float(p64.log_likelihood), rel=1e-5)
        np.testing.assert_allclose(p32.posteriors, p64.posteriors.float(), atol=1e-4)


def test_kernels_on_device(device):
    ll, pi, A = random_model(3, 500, seed=8)
    with paused():  # the CPU references
        ref = K.posterior(ll, pi, A, [200, 300])
        ref_path = K.viterbi(ll, pi, A, [200, 300]).path
    got = K.posterior(ll.to(device), pi.to(device), A.to(device), [200, 300])
    assert float(got.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-12)
    vit = K.parallel_viterbi(ll.to(device), pi.to(device), A.to(device), [200, 300])
    np.testing.assert_array_equal(vit.path.cpu(), ref_path)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    k=st.integers(1, 4),
    chunk=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_posterior_invariants(lengths, k, chunk, seed):
    ll, pi, A = random_model(k, sum(lengths), seed=seed)
    p = K.posterior(ll, pi, A, lengths, chunk=chunk, compiled=False)
    ref = K.posterior(ll, pi, A, lengths, parallel=False)
    c = compiled_posterior(ll, pi, A, lengths)
    if c is not None:
        assert_same_posterior(c, ref, rtol=1e-10)
    np.testing.assert_allclose(p.posteriors.sum(1), 1.0, rtol=1e-12)
    # every step but the first of each sequence is one transition
    assert float(p.transition_counts.sum()) == pytest.approx(sum(lengths) - len(lengths), rel=1e-10)
    assert float(p.start_counts.sum()) == pytest.approx(len(lengths), rel=1e-12)
    np.testing.assert_allclose(p.sequence_log_likelihoods, ref.sequence_log_likelihoods, rtol=1e-10)
    np.testing.assert_allclose(p.posteriors, ref.posteriors, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p.transition_counts, ref.transition_counts, rtol=1e-9, atol=1e-12)
    v = K.parallel_viterbi(ll, pi, A, lengths, chunk=chunk)
    np.testing.assert_array_equal(v.path, K.viterbi(ll, pi, A, lengths).path)


@pytest.mark.parametrize("t", [3000, 2999])
def test_posterior_overwriting_its_input_is_the_same_posterior(t):
    """The in-place E-step (the model's path) against the one that keeps its input, with the
    stream an exact multiple of the chunk length (the buffer is reused) and not (padded)."""
    ll, pi, A = random_model(3, t, seed=9, sticky=5.0)
    keep = K.posterior(ll, pi, A, [1000, t - 1000], compiled=False)
    over = K.posterior(
        ll.clone(), pi, A, [1000, t - 1000], overwrite=True, chunk=50, compiled=False
    )
    ref = K.posterior(ll, pi, A, [1000, t - 1000], parallel=False)
    both = [keep, over]
    if importlib.util.find_spec("numba") is not None:
        both.append(K.posterior(ll.clone(), pi, A, [1000, t - 1000], overwrite=True, compiled=True))
    for p in both:
        assert float(p.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-12)
        np.testing.assert_allclose(p.posteriors, ref.posteriors, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(p.transition_counts, ref.transition_counts, rtol=1e-9)


def test_parallel_viterbi_with_many_states():
    """Above 16 states the max-plus step is one (b, k, k) reduction instead of running maxima."""
    lengths = [250, 1, 349]
    ll, pi, A = random_model(20, sum(lengths), seed=11, sticky=3.0)
    v1 = K.viterbi(ll, pi, A, lengths)
    v2 = K.parallel_viterbi(ll, pi, A, lengths, chunk=37, warmup=3)
    np.testing.assert_array_equal(v2.path, v1.path)
    assert float(v2.log_prob) == pytest.approx(float(v1.log_prob), rel=1e-12)


def test_empty_large_is_a_plain_writable_tensor():
    """Large scratch arrays are ordinary contiguous tensors (huge pages are only a hint)."""
    from latentfit.em.hmm.inference.runtime import empty_large

    for shape in [(5, 3), (1_100_001, 4)]:
        x = empty_large(*shape, dtype=F64, device="cpu")
        assert x.shape == shape and x.dtype == F64 and x.is_contiguous()
        x.fill_(2.5)
        assert float(x.sum()) == 2.5 * shape[0] * shape[1]


def test_posterior_when_scaled_backward_messages_overflow():
    """A state the forward filter rules out for good (start 0, identity transitions) but whose
    emissions fit better: Rabiner-scaled backward messages grow by e^5 per step and overflow
    on 145-step sequences (e^(5·144)), and the E-step falls back to per-step normalisation.
    Its normalisers are then subnormal on the first two steps of each sequence, which the
    chunked kernels clamp at the smallest normal number: those steps are compared for
    finiteness only, every other step with the sequential posterior."""
    lengths = [145] * 20
    ll = torch.zeros(sum(lengths), 2, dtype=F64)
    ll[:, 0] = -5.0
    pi = torch.tensor([1.0, 0.0], dtype=F64)
    A = torch.eye(2, dtype=F64)
    ref = K.posterior(ll, pi, A, lengths, parallel=False)
    np.testing.assert_allclose(ref.posteriors[:, 0], 1.0)
    normal = np.arange(sum(lengths)) % 145 >= 2
    runs = [K.posterior(ll, pi, A, lengths, chunk=chunk, compiled=False) for chunk in (None, 1000)]
    if importlib.util.find_spec("numba") is not None:
        runs.append(K.posterior(ll, pi, A, lengths, compiled=True))
    for p in runs:
        assert float(p.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-12)
        assert bool(torch.isfinite(p.posteriors).all())
        assert bool(torch.isfinite(p.transition_counts).all())
        np.testing.assert_allclose(p.posteriors[normal], ref.posteriors[normal], rtol=1e-9)


def test_parallel_viterbi_float32_equals_sequential():
    """Entering messages are checked to a tolerance above float32 rounding (a float64
    tolerance would reject every proposal and run each chunk again)."""
    ll, pi, A = random_model(4, 3000, seed=14, dtype=torch.float32, sticky=2.0)
    v1 = K.viterbi(ll, pi, A)
    v2 = K.parallel_viterbi(ll, pi, A, chunk=50)
    np.testing.assert_array_equal(v2.path, v1.path)
    assert float(v2.log_prob) == pytest.approx(float(v1.log_prob), rel=1e-5)


def test_gmm_statistics_in_blocks_of_one_row_when_components_exceed_the_block(monkeypatch):
    # more (state, component) pairs than rows per block: the rows go one at a time, and the
    # statistics are those computed in one block
    from latentfit.em.hmm import emissions as E

    g = torch.Generator().manual_seed(0)
    k, m, d, t = 2, 3, 2, 7
    X = torch.randn(t, d, generator=g, dtype=torch.float64)
    gamma = torch.softmax(torch.randn(t, k, generator=g, dtype=torch.float64), 1)
    weights = torch.softmax(torch.randn(k, m, generator=g, dtype=torch.float64), 1)
    means = torch.randn(k, m, d, generator=g, dtype=torch.float64)
    covars = torch.rand(k, m, d, generator=g, dtype=torch.float64) + 0.5
    whole = E.gmm_stats(X, gamma, weights, means, covars, "diag")
    monkeypatch.setattr(E, "_ROWS", 4)  # k * m = 6 > 4
    blocked = E.gmm_stats(X, gamma, weights, means, covars, "diag")
    for name, value in whole.items():
        torch.testing.assert_close(blocked[name], value, rtol=1e-12, atol=1e-12)
