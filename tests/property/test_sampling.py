"""The public samplers over generated models, counts and seeds: NUTS's draws lie in every
parameter's support with the shapes documented, the same seed gives the same draws, and
``resume`` continues the run as one longer run would (``MCMCResult.resume``'s promise); a
Gibbs mixture's draws are weights on the simplex and symmetric positive-definite covariances;
a short run's summary is a table, never an exception. The models are those of
test_sampler_replay (every constraint the samplers take, scalar or vector, vmapped or
vectorized)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from latentfit.mcmc import SamplerConfig, gibbs_gmm, sample_target

from .oracle import budget
from .test_sampler_replay import _target, models

EAGER = SamplerConfig(compile=False)


def _run(target, c, warmup, draws, seed):
    return sample_target(
        target,
        num_chains=c,
        num_warmup=warmup,
        num_draws=draws,
        config=EAGER,
        generator=seed,
        progress_bar=False,
    )


@budget(10)
@given(
    models(),
    st.booleans(),
    st.integers(1, 3),
    st.integers(0, 8),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),  # a seed: torch keeps 32 bits, latentfit refuses more
)
def test_nuts_draws_lie_in_the_support_repeat_with_the_seed_and_resume(
    model, vectorized, c, warmup, n1, n2, seed
):
    target = _target(*model, vectorized)
    longer = _run(target, c, warmup, n1 + n2, seed)
    res = _run(target, c, warmup, n1, seed).resume(n2, progress_bar=False)
    assert res.num_chains == c and res.num_draws == n1 + n2
    for slot in target.slots:
        got = res[slot.name]
        assert got.shape == (c, n1 + n2, *slot.shape)
        assert bool(slot.constraint.check(got).all()), slot  # inside the support
        # one run of n1 + n2 draws and one of n1 resumed for n2: the same chains, bit for bit
        torch.testing.assert_close(got, longer[slot.name], rtol=0, atol=0)
    assert bool(torch.isfinite(res.sample_stats["lp"]).all())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = res.summary()  # however short the run: a table, in latentfit's words only
    assert [str(w.message) for w in caught] == []
    assert list(table.index) == target.flat_names()


@budget(10)
@given(
    st.integers(0, 2**32 - 1),  # a seed: torch keeps 32 bits, latentfit refuses more
    st.integers(6, 25),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 3),
    st.integers(1, 3),
)
def test_gibbs_mixture_draws_are_weights_and_covariances(seed, n, d, k, c, warmup, draws):
    x = np.random.default_rng(seed).normal(size=(n, d)) * np.arange(1, d + 1)
    res = gibbs_gmm(x, k, num_chains=c, num_warmup=warmup, num_draws=draws, generator=seed)
    assert res.weights.shape == (c, draws, k)
    assert res.means.shape == (c, draws, k, d)
    assert res.covariances.shape == (c, draws, k, d, d)
    assert bool((res.weights >= 0).all())
    torch.testing.assert_close(res.weights.sum(-1), torch.ones(c, draws, dtype=torch.float64))
    cov = res.covariances
    torch.testing.assert_close(cov, cov.transpose(-1, -2), rtol=1e-12, atol=0.0)
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())
    assert bool(torch.isfinite(res.means).all())
    # relabelled by the first mean coordinate after each sweep
    assert bool((res.means[..., 1:, 0] >= res.means[..., :-1, 0]).all())
    assert res.labels.shape == (c, n) and int(res.labels.max()) < k
    assert len(res.summary()) == k + k * d + k * d * d
