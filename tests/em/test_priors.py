"""The conjugate priors' log densities against scipy.stats (em/mixture/priors.py)."""

import numpy as np
import pytest
import torch
from scipy import stats

from latentfit.em.mixture.priors import BetaPrior, GammaPrior


@pytest.mark.parametrize("a, b", [(2.0, 3.0), (1.0, 4.5), (5.0, 1.0)])
def test_beta_prior_log_prob_is_scipys_sum(a, b):
    means = torch.tensor([[0.1, 0.5], [0.9, 0.3]], dtype=torch.float64)
    want = stats.beta(a, b).logpdf(means.numpy()).sum()
    np.testing.assert_allclose(float(BetaPrior(a, b).log_prob(means)), want, rtol=1e-12)


@pytest.mark.parametrize("a, b", [(2.0, 0.5), (1.0, 3.0), (3.5, 2.0)])
def test_gamma_prior_log_prob_is_scipys_sum(a, b):
    rates = torch.tensor([[0.2, 1.5], [4.0, 0.7]], dtype=torch.float64)
    want = stats.gamma(a, scale=1 / b).logpdf(rates.numpy()).sum()
    np.testing.assert_allclose(float(GammaPrior(a, b).log_prob(rates)), want, rtol=1e-12)


def test_flat_priors_add_nothing_and_keep_the_dtype():
    x = torch.tensor([0.25, 0.5], dtype=torch.float32)
    for prior in (BetaPrior(1.0, 1.0), GammaPrior(1.0, 0.0)):
        lp = prior.log_prob(x)
        assert lp.dtype == torch.float32 and float(lp) == 0.0


def test_gamma_prior_with_zero_rate_uses_the_smallest_rate():
    # b = 0 with a > 1: Gamma(a, rate 1e-300), whose log density scipy gives directly
    rates = torch.tensor([0.5, 2.0], dtype=torch.float64)
    want = stats.gamma(3.0, scale=1e300).logpdf(rates.numpy()).sum()
    np.testing.assert_allclose(float(GammaPrior(3.0, 0.0).log_prob(rates)), want, rtol=1e-12)
