"""Invariants checked on generated data (hypothesis)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentfit.estimate import GammaPoisson, NormalInverseGamma, fit_mle

positive_samples = st.lists(
    st.floats(0.05, 50.0, allow_nan=False), min_size=5, max_size=40, unique=True
)


@settings(max_examples=25, deadline=None)
@given(positive_samples, st.floats(-0.3, 0.3), st.floats(-0.3, 0.3))
def test_gamma_mle_is_a_maximum(xs, da, db):
    x = np.array(xs)
    fit = fit_mle("gamma", x)
    a, b = fit.params["concentration"], fit.params["rate"]
    nearby = torch.distributions.Gamma(a * np.exp(da), b * np.exp(db)).log_prob(torch.as_tensor(x))
    assert fit.log_likelihood >= float(nearby.sum()) - 1e-9 * abs(fit.log_likelihood)
    assert torch.isfinite(fit.bse).all() and (fit.bse > 0).all()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=2, max_size=30),
    st.integers(1, 29),
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=30),
)
def test_any_split_of_the_data_gives_the_batch_posterior(counts, cut, reals):
    y = np.array(counts, dtype=float)
    cut = min(cut, len(y) - 1)
    a = GammaPoisson(1.5, 0.7).update(y)
    b = GammaPoisson(1.5, 0.7).update(y[:cut]).update(y[cut:])
    torch.testing.assert_close(a.alpha, b.alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.beta, b.beta, rtol=1e-12, atol=0)
    x = np.array(reals)
    k = min(cut, len(x) - 1)
    full = NormalInverseGamma().update(x)
    parts = NormalInverseGamma().update(x[:k]).update(x[k:])
    for name, value in full.hyperparameters().items():
        torch.testing.assert_close(parts.hyperparameters()[name], value, rtol=1e-10, atol=1e-12)
