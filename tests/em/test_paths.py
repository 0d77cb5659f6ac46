"""The sampled paths of the sequence models: the compiled kernels against their plain loops,
and the draws against the chains' own probabilities."""

import importlib.util

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from latentfit import _compiled
from latentfit.em import paths
from latentfit.em.paths import ar_path, linear_path, markov_chain, segment_chain

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="no numba")


def _cdf(rng, rows, cols):
    p = rng.random((rows, cols)) + 0.05
    return np.cumsum(p / p.sum(1, keepdims=True), 1)


@needs_numba
def test_markov_chain_kernel_matches_the_loop():
    rng = np.random.default_rng(0)
    cdf, u = _cdf(rng, 5, 5), rng.random(3000)
    np.testing.assert_array_equal(
        markov_chain(cdf, u, 2, compiled=True), markov_chain(cdf, u, 2, compiled=False)
    )


def test_markov_chain_follows_the_transitions():
    rng = np.random.default_rng(1)
    A = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.4, 0.0, 0.6]])
    states = markov_chain(np.cumsum(A, 1), rng.random(60000), 0)
    counts = np.zeros((3, 3))
    np.add.at(counts, (states[:-1], states[1:]), 1)
    # ≥ 10**4 visits a state: standard errors below 0.005
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), A, atol=0.02)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=needs_numba), False])
def test_a_state_of_probability_zero_is_never_drawn(compiled):
    # the cumulative sum of ten 0.1s is 1 - 2**-53: the largest uniform reached past it
    row = np.cumsum([0.1] * 10 + [0.0])
    cdf = np.vstack([row] * 11)
    u = np.full(4, np.nextafter(1.0, 0.0))
    assert markov_chain(cdf, u, 0, compiled=compiled).max() == 9
    states = np.empty(30, dtype=np.int64)
    segment_chain(cdf, cdf, u, u, 0, 0, states, compiled=compiled)
    assert states.max() == 9


@needs_numba
def test_segment_chain_kernel_matches_the_loop_in_batches():
    rng = np.random.default_rng(2)
    dur, trans = _cdf(rng, 4, 12), _cdf(rng, 4, 4)
    u_d, u_t = rng.random(500), rng.random(500)
    whole = np.empty(1000, dtype=np.int64)
    assert segment_chain(dur, trans, u_d, u_t, 1, 0, whole, compiled=False)[0] == 1000
    batched = np.empty(1000, dtype=np.int64)
    pos, s = 0, 1
    for lo in range(0, 500, 37):  # the kernel resumes where the last batch of uniforms ended
        pos, s = segment_chain(
            dur, trans, u_d[lo : lo + 37], u_t[lo : lo + 37], s, pos, batched, compiled=True
        )
    assert pos == 1000
    np.testing.assert_array_equal(batched, whole)


def test_segment_chain_follows_the_durations():
    rng = np.random.default_rng(3)
    pmf = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
    trans = np.array([[0.0, 1.0], [1.0, 0.0]])
    states = np.empty(100000, dtype=np.int64)
    segment_chain(np.cumsum(pmf, 1), np.cumsum(trans, 1), rng.random(50000),
                  rng.random(50000), 0, 0, states)  # fmt: skip
    cuts = np.flatnonzero(np.diff(states)) + 1
    lengths, seg = np.diff(np.r_[0, cuts]), states[np.r_[0, cuts]][:-1]
    assert set(lengths[seg == 0]) == {1, 2} and set(lengths[seg == 1]) == {3, 4}
    # ~25000 segments a state: standard errors of the means below 0.005
    assert lengths[seg == 0].mean() == pytest.approx(1.5, abs=0.02)
    assert lengths[seg == 1].mean() == pytest.approx(3.75, abs=0.02)


@needs_numba
def test_linear_path_kernel_matches_the_recursion():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(3, 3)) * 0.4
    w, x0 = rng.normal(size=(400, 3)), rng.normal(size=3)
    x = linear_path(A, x0, w, compiled=True)
    np.testing.assert_allclose(x, linear_path(A, x0, w, compiled=False), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x[1:], x[:-1] @ A.T + w[1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x[0], x0)


@needs_numba
def test_ar_path_kernel_matches_the_regression():
    rng = np.random.default_rng(5)
    k, p, d, n = 3, 2, 2, 300
    W = rng.normal(size=(k, d, p * d + 1)) * 0.3
    states, eps, hist = rng.integers(0, k, n), rng.normal(size=(n, d)), rng.normal(size=(p, d))
    x = ar_path(W, states, eps, hist, compiled=True)
    np.testing.assert_allclose(x, ar_path(W, states, eps, hist, compiled=False), rtol=1e-12)
    full = np.vstack([hist, x])
    for t in (0, 1, 150, n - 1):
        z = np.r_[full[t + 1], full[t], 1.0]  # x_{t-1}, x_{t-2} of full row t + p
        np.testing.assert_allclose(x[t], W[states[t]] @ z + eps[t], rtol=1e-12)


def _two_regimes(name: str):
    """The sequence model ``name`` fitted (3 iterations) to 200 rows in two regimes."""
    import latentfit

    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 2))
    X[100:] += 3
    kw = {"max_duration": 8} if name == "GaussianHSMM" else {}
    m = getattr(latentfit, name)(n_components=2, n_iter=3, random_state=0, **kw)
    with pytest.warns(ConvergenceWarning):
        m.fit(X)
    return m


SEQUENCE_MODELS = ["GaussianHMM", "GaussianHSMM", "AutoregressiveHMM", "LinearGaussianSSM"]


@needs_numba
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sample_draws_the_same_compiled_or_not(name, monkeypatch):
    m = _two_regimes(name)
    monkeypatch.setattr(paths, "COMPILE_FROM", 0)  # compiled from the first step
    fast = m.sample(2000, random_state=1)
    monkeypatch.setattr(_compiled, "available", lambda: False)
    slow = m.sample(2000, random_state=1)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_a_short_path_does_not_wait_on_the_compiled_kernels(name, monkeypatch):
    """Loading numba and the kernels costs ~1 s: sample(100) must not pay it (cold start)."""
    m = _two_regimes(name)

    def refused():
        raise AssertionError("a short path loaded the compiled kernels")

    monkeypatch.setattr(paths, "_kernels", refused)
    m.sample(paths.COMPILE_FROM - 1, random_state=1)
    monkeypatch.setattr(paths, "COMPILE_FROM", 10)
    with pytest.raises(AssertionError, match="short path"):
        m.sample(100, random_state=1)
