"""The HSMM recursions against brute-force enumeration of every segmentation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentfit.em.hsmm import durations as dur
from latentfit.em.hsmm import inference as inf
from tests.em.hsmm.brute import brute_force

CASES = [  # (t, k, D, censored)
    (1, 2, 3, True),
    (1, 2, 3, False),
    (5, 2, 1, True),
    (5, 2, 1, False),
    (6, 2, 3, True),
    (6, 2, 3, False),
    (7, 3, 4, True),
    (7, 3, 4, False),
    (4, 3, 4, True),  # D = T: censored survival over the whole range
    (3, 2, 4, True),  # D > T: the messages keep min(D, T) columns
    (3, 2, 4, False),
]


def _random_model(t, k, big_d, seed, zeros=False):
    rng = np.random.default_rng(seed)
    ll = rng.normal(size=(t, k)) * 2
    start = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k), size=k)
    np.fill_diagonal(trans, 0)
    trans /= trans.sum(1, keepdims=True)
    pmf = rng.dirichlet(np.ones(big_d), size=k)
    if zeros and big_d > 2:  # structural zeros in the durations
        pmf[0, 1] = 0.0
        pmf /= pmf.sum(1, keepdims=True)
    return ll, start, trans, pmf


def _torch(ll, start, trans, pmf):
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)
    log = lambda a: torch.log(t(a))
    return t(ll), log(start), log(trans), inf.duration_terms(log(pmf))


@pytest.mark.parametrize(("t", "k", "big_d", "censored"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("compiled", [False, True], ids=["torch", "compiled"])
def test_posterior_equals_enumeration(t, k, big_d, censored, seed, compiled):
    ll, start, trans, pmf = _random_model(t, k, big_d, seed, zeros=seed == 1)
    ref = brute_force(ll, start, trans, pmf, censored)
    post = inf.hsmm_posterior(*_torch(ll, start, trans, pmf), censored, compiled)
    np.testing.assert_allclose(float(post.log_likelihood), ref["log_likelihood"], rtol=1e-10)
    np.testing.assert_allclose(post.posteriors.numpy(), ref["posteriors"], atol=1e-10)
    np.testing.assert_allclose(post.start_counts.numpy(), ref["start"], atol=1e-10)
    np.testing.assert_allclose(post.transition_counts.numpy(), ref["trans"], atol=1e-10)
    np.testing.assert_allclose(post.duration_counts.numpy(), ref["durations"], atol=1e-10)
    fwd = inf.hsmm_log_likelihood(*_torch(ll, start, trans, pmf), censored, compiled)
    np.testing.assert_allclose(float(fwd), ref["log_likelihood"], rtol=1e-10)


@pytest.mark.parametrize(("t", "k", "big_d", "censored"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("compiled", [False, True], ids=["torch", "compiled"])
def test_viterbi_equals_enumeration(t, k, big_d, censored, seed, compiled):
    ll, start, trans, pmf = _random_model(t, k, big_d, seed, zeros=seed == 1)
    ref = brute_force(ll, start, trans, pmf, censored)
    v = inf.hsmm_viterbi(*_torch(ll, start, trans, pmf), censored, compiled)
    np.testing.assert_allclose(float(v.log_prob), ref["viterbi_log_prob"], rtol=1e-10)
    np.testing.assert_array_equal(v.path.numpy(), ref["viterbi_path"])
    starts = np.flatnonzero(np.r_[True, np.diff(v.path.numpy()) != 0])
    np.testing.assert_array_equal(v.segment_starts.numpy(), starts)


@pytest.mark.parametrize("censored", [True, False])
def test_compiled_kernels_equal_the_torch_twins(censored):
    """A longer sequence than enumeration allows: the compiled recursions and the torch ones
    give the same messages, counts and Viterbi path (float64, 1e-10)."""
    ll, start, trans, pmf = _random_model(300, 4, 12, 5, zeros=True)
    args = _torch(ll, start, trans, pmf)
    a = inf.hsmm_posterior(*args, censored, compiled=False)
    b = inf.hsmm_posterior(*args, censored, compiled=True)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-10, atol=1e-12)
    va = inf.hsmm_viterbi(*args, censored, compiled=False)
    vb = inf.hsmm_viterbi(*args, censored, compiled=True)
    np.testing.assert_allclose(float(va.log_prob), float(vb.log_prob), rtol=1e-12)
    np.testing.assert_array_equal(va.path.numpy(), vb.path.numpy())


def test_several_sequences_are_the_sum_of_separate_ones():
    ll, start, trans, pmf = _random_model(12, 3, 4, 3)
    args = _torch(ll, start, trans, pmf)
    lengths = [5, 1, 6]
    total, per_seq = inf.posterior_sequences(args[0], *args[1:], lengths, True)
    parts = [
        inf.hsmm_posterior(args[0][a:b], *args[1:], True) for a, b in [(0, 5), (5, 6), (6, 12)]
    ]
    np.testing.assert_allclose(per_seq.numpy(), [float(p.log_likelihood) for p in parts])
    np.testing.assert_allclose(
        total.duration_counts.numpy(), sum(p.duration_counts for p in parts).numpy()
    )
    np.testing.assert_allclose(
        total.posteriors.numpy(), torch.cat([p.posteriors for p in parts]).numpy()
    )


@pytest.mark.parametrize("big_d", [1, 6, 40])
def test_poisson_mstep_maximises_the_truncated_likelihood(big_d):
    """The bisection's λ against a dense grid search of Σ c(d) log p(d)."""
    rng = np.random.default_rng(big_d)
    counts = torch.as_tensor(rng.gamma(2.0, size=(2, big_d)))
    old = torch.tensor([1.0, 2.0], dtype=torch.float64)
    lam, bad = dur.poisson_mstep(counts, old)
    assert bad == []
    grid = torch.logspace(-3, 2, 20001, dtype=torch.float64)
    for k in range(2):
        objective = (counts[k] * dur.poisson_log_pmf(grid, big_d)).sum(1)
        best = objective.max()
        ours = (counts[k] * dur.poisson_log_pmf(lam[k : k + 1], big_d)).sum()
        assert float(ours) >= float(best) - 1e-9 * abs(float(best))


def test_negative_binomial_mstep_gains_and_matches_moments():
    """Counts drawn from a negative binomial: the M-step's (r, p) improves the objective and
    lands near the generating values (a large sample: 2e5 segments, tolerance 5%)."""
    big_d = 200
    r, p = torch.tensor([3.0, 8.0], dtype=torch.float64), torch.tensor([0.7, 0.5])
    pmf = dur.negative_binomial_log_pmf(r, p.double(), big_d).exp()
    counts = 2e5 * pmf
    old_r, old_p = torch.tensor([1.0, 1.0]).double(), torch.tensor([0.5, 0.5]).double()
    new_r, new_p, bad = dur.negative_binomial_mstep(counts, old_r, old_p)
    assert bad == []
    np.testing.assert_allclose(new_r.numpy(), r.numpy(), rtol=5e-2)
    np.testing.assert_allclose(new_p.numpy(), p.double().numpy(), rtol=5e-2)


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 40),
    k=st.integers(2, 4),
    big_d=st.integers(1, 12),
    censored=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_count_invariants(t, k, big_d, censored, seed):
    """Posteriors are distributions at every step, and a sequence has one more segment than
    segment transitions: Σ duration counts = Σ transition counts + 1 (skipped when the
    durations cannot produce the sequence at all)."""
    ll, start, trans, pmf = _random_model(t, k, big_d, seed)
    post = inf.hsmm_posterior(*_torch(ll, start, trans, pmf), censored)
    if not np.isfinite(float(post.log_likelihood)):
        return
    np.testing.assert_allclose(post.posteriors.sum(1).numpy(), 1.0, atol=1e-10)
    np.testing.assert_allclose(
        float(post.duration_counts.sum()), float(post.transition_counts.sum()) + 1, rtol=1e-10
    )
    np.testing.assert_allclose(float(post.start_counts.sum()), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    ("lam", "width", "big_d"),
    [
        (6.0, 30, 10**12),
        (0.3, 200, 5000),
        (400.0, 30, 5000),
        (4990.0, 30, 5000),
        (1e-8, 1, 10**6),
        (40.0, 80, 81),
    ],
)
def test_poisson_pmf_over_its_support_is_the_pmf_over_d(lam, width, big_d):
    """The pmf over duration_support's W columns: the full one's first W columns (normalised
    over 1..D), the rest 0 to double precision, and the survival P(d ≥ e) the sequences of
    at most ``width`` steps read (e ≤ width) to 1e-13 even where it is tiny."""
    params = {"duration_lambdas": torch.tensor([lam, lam / 3], dtype=torch.float64)}
    part = dur.duration_log_pmf("poisson", params, big_d, width)
    w = part.shape[1]
    assert min(width, big_d) <= w <= big_d
    full_d = min(big_d, w + 20_000)  # a D of 1e12 read as 20,000 durations past W
    full = dur.duration_log_pmf("poisson", params, full_d)
    torch.testing.assert_close(part, full[:, :w], rtol=1e-13, atol=0)
    # what W leaves out, against the smallest tail the sequences read, P(d ≥ min(width, W))
    read = full[:, min(width, w) - 1 :].exp().sum(1)
    assert bool((full[:, w:].exp().sum(1) <= 1e-20 * read).all())
    ours = inf.duration_terms(part).log_survival[:, : min(width, w)]
    ref = inf.duration_terms(full).log_survival[:, : min(width, w)]
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-13)


def test_poisson_mstep_far_from_d_is_the_observed_mean():
    """Counts that end far below D: λ is their mean of d − 1 (the truncated mean is the mean),
    as the bisection over D = 400 finds it, and D = 1e15 costs no more than the counts."""
    counts = torch.as_tensor(np.random.default_rng(0).gamma(2.0, size=(2, 12)))
    old = torch.tensor([1.0, 2.0], dtype=torch.float64)
    far, _ = dur.poisson_mstep(counts, old, max_duration=10**15)
    padded = torch.cat([counts, counts.new_zeros(2, 388)], 1)
    near, _ = dur.poisson_mstep(padded, old)  # the bisection, D = 400
    mean = (counts * torch.arange(12.0, dtype=torch.float64)).sum(1) / counts.sum(1)
    torch.testing.assert_close(far, mean, rtol=1e-15, atol=0)
    torch.testing.assert_close(near, far, rtol=1e-13, atol=0)
