"""The compiled CPU E-step against the sequential torch recursions, across threads, state
counts and impossible data (brute force and the shared cases are in test_hmm_kernels.py)."""

import numpy as np
import pytest
import torch

from latentfit.em.hmm.inference import posterior as K

from .test_hmm_kernels import assert_same_posterior, random_model

pytest.importorskip("numba")  # a dependency; the torch versions cover platforms without it
from latentfit.em.hmm.inference.compiled import forward_filter_cpu, posterior_cpu


@pytest.mark.parametrize("k", [1, 3, 8, 20])  # run-time state counts and compiled-in ones
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_equals_sequential_on_many_sequences(k, workers):
    rng = np.random.default_rng(k)
    lengths = rng.integers(1, 120, size=40).tolist()
    ll, pi, A = random_model(k, sum(lengths), seed=k, sticky=2.0)
    ref = K.posterior(ll, pi, A, lengths, parallel=False)
    got = posterior_cpu(ll, pi, A, lengths, workers=workers)
    assert_same_posterior(got, ref)


def test_keeps_or_overwrites_its_input():
    ll, pi, A = random_model(4, 500, seed=3)
    before = ll.clone()
    posterior_cpu(ll, pi, A)
    assert torch.equal(ll, before)
    posterior_cpu(ll, pi, A, overwrite=True)
    assert not torch.equal(ll, before)  # the buffer now holds the scaled emissions


def test_impossible_sequence_is_minus_infinity_without_nan():
    """A step no state can emit makes its sequence impossible: log p = -inf, zero marginals
    there, and the other sequences untouched."""
    ll, pi, A = random_model(3, 300, seed=4)
    ll[150] = -torch.inf
    got = posterior_cpu(ll, pi, A, [100, 100, 100], workers=2)
    ref = K.posterior(ll[:100], pi, A, parallel=False)
    assert float(got.sequence_log_likelihoods[1]) == -np.inf
    assert float(got.sequence_log_likelihoods[0]) == pytest.approx(
        float(ref.log_likelihood), rel=1e-12
    )
    assert bool(torch.isfinite(got.posteriors).all())
    assert float(got.posteriors[100:200].abs().sum()) == 0.0
    np.testing.assert_allclose(got.posteriors[:100], ref.posteriors, rtol=1e-9, atol=1e-12)


def test_compiled_workers_is_the_argument_else_torchs_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert K.compiled_workers() == 2
        assert K.compiled_workers(3) == 3
    finally:
        torch.set_num_threads(before)


def test_hmm_methods_leave_torchs_thread_count_alone():
    """fit, score, predict and decode run with torch's thread count as the caller set it
    (nothing process-wide is changed, not even for the length of a call)."""
    from latentfit import GaussianHMM

    seen = []

    class Spy(GaussianHMM):
        def _emission_log_likelihood(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return super()._emission_log_likelihood(*args, **kwargs)

    X = np.random.default_rng(0).normal(size=(200, 2))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = Spy(2, n_iter=3, random_state=0).fit(X)
        m.score(X)
        m.predict(X)
        m.decode(X, algorithm="map")
        m.predict_proba(X)
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {2}


@pytest.mark.parametrize("workers", [1, 2])
def test_forward_filter_equals_sequential(workers):
    lengths = [300, 1, 57, 642]
    ll, pi, A = random_model(5, sum(lengths), seed=6, sticky=1.0)
    ref = K.forward_filter(ll, pi, A, lengths)
    got = forward_filter_cpu(ll, pi, A, lengths, workers=workers)
    assert float(got.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-12)
    np.testing.assert_allclose(
        got.sequence_log_likelihoods, ref.sequence_log_likelihoods, rtol=1e-12
    )
    np.testing.assert_allclose(got.filtered, ref.filtered, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.log_normalizers, ref.log_normalizers, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ruled_out_state_that_fits_better(dtype):
    """State 1 fits every step better (by 5 nats) but the start and identity transitions rule
    it out: its backward component grows e^5 per step and is capped below the float's largest
    value; the posteriors stay exact (all mass on state 0) and finite, in float32 too."""
    lengths = [145] * 4
    ll = torch.zeros(sum(lengths), 2, dtype=dtype)
    ll[:, 0] = -5.0
    pi = torch.tensor([1.0, 0.0], dtype=dtype)
    A = torch.eye(2, dtype=dtype)
    got = posterior_cpu(ll, pi, A, lengths)
    assert bool(torch.isfinite(got.posteriors).all())
    np.testing.assert_allclose(got.posteriors[:, 0], 1.0)
    np.testing.assert_allclose(got.transition_counts, [[144 * 4, 0], [0, 0]])
    assert float(got.log_likelihood) == pytest.approx(-5.0 * sum(lengths), rel=1e-6)


def logspace_posterior(ll, pi, A):
    """An independent oracle: the forward-backward recursions in log space (scipy)."""
    from scipy.special import logsumexp

    with np.errstate(divide="ignore"):
        l, lpi, lA = ll.numpy(), np.log(pi.numpy()), np.log(A.numpy())
    t, k = l.shape
    la, lb = np.empty((t, k)), np.zeros((t, k))
    la[0] = lpi + l[0]
    for i in range(1, t):
        la[i] = logsumexp(la[i - 1][:, None] + lA, axis=0) + l[i]
    for i in range(t - 2, -1, -1):
        lb[i] = logsumexp(lA + (l[i + 1] + lb[i + 1])[None, :], axis=1)
    lg = la + lb
    return np.exp(lg - logsumexp(lg, axis=1, keepdims=True)), logsumexp(la[-1])


def test_states_ruled_out_for_good_against_log_space():
    """State 1 can never be reached (zero start probability, absorbing) and its emissions are
    often far better (ℓ ~ N(0, 30²)): backward messages normalised to sum 1 lose the
    reachable states to underflow beside it (the sequential and the fused torch E-steps
    returned marginals off by 1 here). The compiled, the sequential and the fused E-steps
    (one chunk, and chunks whose boundary messages keep those states) equal the log-space
    oracle."""
    g = torch.Generator().manual_seed(158)
    ll = torch.randn(60, 4, generator=g, dtype=torch.float64) * 30
    pi = torch.tensor([0.4, 0.0, 0.6, 0.0], dtype=torch.float64)
    A = torch.tensor(
        [[0.2, 0.0, 0.5, 0.3], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    gamma, logp = logspace_posterior(ll, pi, A)
    for post in (
        posterior_cpu(ll, pi, A),
        K.posterior(ll, pi, A, parallel=False),
        K.posterior(ll, pi, A, compiled=False),
        K.posterior(ll, pi, A, compiled=False, chunk=20),
    ):
        assert float(post.log_likelihood) == pytest.approx(logp, rel=1e-12)
        np.testing.assert_allclose(post.posteriors, gamma, atol=1e-12)
        assert bool(torch.isfinite(post.transition_counts).all())


def test_a_short_fit_needs_no_compiler():
    """Below COMPILE_MIN_STEPS steps fit, predict, score and decode run the torch kernels, so a
    small problem on a new install never waits for numba to compile: in a fresh interpreter
    numba is not even imported. The fit equals the same fit on the compiled kernels."""
    import subprocess
    import sys

    code = (
        "import sys, warnings\n"
        "import numpy as np\n"
        "from latentfit import GaussianHMM\n"
        "warnings.simplefilter('ignore')\n"
        "X = np.random.default_rng(0).normal(size=(300, 2))\n"
        "m = GaussianHMM(3, random_state=0).fit(X)\n"
        "m.predict(X); m.score(X); m.decode(X)\n"
        "print('numba' in sys.modules, repr(m.score(X)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, score = out.stdout.split()
    assert imported == "False"
    from latentfit.em.hmm.inference import posterior as dispatch

    assert 300 < dispatch.COMPILE_MIN_STEPS
    X = torch.as_tensor(np.random.default_rng(0).normal(size=(300, 2)))
    ll = X.new_zeros(300, 3) - X[:, :1].square()  # any (t, k) log-likelihoods
    pi, A = torch.full((3,), 1 / 3, dtype=X.dtype), torch.full((3, 3), 1 / 3, dtype=X.dtype)
    torch_post = dispatch.posterior(ll, pi, A)
    compiled = dispatch.posterior(ll, pi, A, compiled=True)
    assert float(torch_post.log_likelihood) == pytest.approx(
        float(compiled.log_likelihood), rel=1e-12
    )
    assert np.isfinite(float(score))
