"""The asymptotics by simulation: spread of the MLE against the Fisher standard error, and the
coverage of 95% Wald intervals.

Closed-form families are simulated as one (R, n) tensor; each test first checks on a few
replications that the vectorised formulas are exactly what ``fit_mle`` reports.
"""

import math

import numpy as np
import pytest
import torch

from latentfit.estimate import fit_mle

R = 4000  # replications: the Monte-Carlo sd of a 95% coverage is √(.95·.05/4000) = 0.34%
N = 200  # observations per data set


def _coverage(est, se, truth):
    lo, hi = est - 1.959963984540054 * se, est + 1.959963984540054 * se
    return float(((lo <= truth) & (truth <= hi)).double().mean())


def test_exponential_rate():
    gen = torch.Generator().manual_seed(11)
    rate = 2.0
    x = torch.empty(R, N, dtype=torch.float64).exponential_(rate, generator=gen)  # (R, n)
    est = 1 / x.mean(1)  # (R,)
    se = est / math.sqrt(N)  # inverse observed information at the MLE
    for r in range(3):
        fit = fit_mle("exponential", x[r])
        assert float(fit.estimates[0]) == pytest.approx(float(est[r]), rel=1e-12)
        assert float(fit.bse[0]) == pytest.approx(float(se[r]), rel=1e-10)
    # ±2% is six Monte-Carlo sds; the O(1/n) skew of the Wald interval costs < 0.5% at n = 200
    assert abs(_coverage(est, se, rate) - 0.95) < 0.02
    # the spread of the MLE against the Fisher SE λ/√n: the sd of a sample sd over R draws is
    # 1/√(2R) = 1.1% and the finite-n inflation (n/(n-1)... ) ~0.8%: 5% allows both
    assert float(est.std()) == pytest.approx(rate / math.sqrt(N), rel=0.05)


def test_normal_mean_and_scale():
    gen = torch.Generator().manual_seed(12)
    mu, sigma = 1.0, 2.0
    x = mu + sigma * torch.randn(R, N, dtype=torch.float64, generator=gen)  # (R, n)
    m = x.mean(1)
    s = ((x - m[:, None]) ** 2).mean(1).sqrt()
    se_m, se_s = s / math.sqrt(N), s / math.sqrt(2 * N)
    for r in range(3):
        fit = fit_mle("normal", x[r])
        torch.testing.assert_close(fit.estimates, torch.stack([m[r], s[r]]), rtol=1e-12, atol=0)
        torch.testing.assert_close(fit.bse, torch.stack([se_m[r], se_s[r]]), rtol=1e-10, atol=0)
    # same Monte-Carlo reasoning as above; σ̂ has an O(1/n) downward bias (~0.5% here)
    assert abs(_coverage(m, se_m, mu) - 0.95) < 0.02
    assert abs(_coverage(s, se_s, sigma) - 0.95) < 0.02
    assert float(m.std()) == pytest.approx(sigma / math.sqrt(N), rel=0.05)
    assert float(s.std()) == pytest.approx(sigma / math.sqrt(2 * N), rel=0.05)


def test_poisson_rate_coverage_with_sandwich_and_expected():
    gen = torch.Generator().manual_seed(13)
    rate = 3.0
    x = torch.poisson(torch.full((R, N), rate, dtype=torch.float64), generator=gen)
    est = x.mean(1)
    se_obs = (est / N).sqrt()  # observed = expected information for the Poisson
    se_sand = (((x - est[:, None]) ** 2).sum(1)).sqrt() / N  # H⁻¹BH⁻¹
    fit = fit_mle("poisson", x[0])
    assert float(fit.std_errors("expected")[0]) == pytest.approx(float(se_obs[0]), rel=1e-10)
    assert float(fit.std_errors("sandwich")[0]) == pytest.approx(float(se_sand[0]), rel=1e-10)
    assert abs(_coverage(est, se_obs, rate) - 0.95) < 0.02
    assert abs(_coverage(est, se_sand, rate) - 0.95) < 0.02


@pytest.mark.slow
def test_gamma_spread_matches_fisher_standard_error_through_the_optimiser():
    # no closed form: 200 full fits (L-BFGS + Newton) of n = 150 observations each
    reps, n, a, b = 200, 150, 2.0, 3.0
    draws = torch.from_numpy(np.random.default_rng(14).gamma(a, 1 / b, (reps, n)))  # (reps, n)
    est, se = [], []
    for r in range(reps):
        fit = fit_mle("gamma", draws[r])
        est.append(fit.estimates)
        se.append(fit.bse)
    est, se = torch.stack(est), torch.stack(se)  # (reps, 2)
    # the true Fisher SE: inverse of n I(a, b) at the truth
    info = n * torch.tensor(
        [[float(torch.special.polygamma(1, torch.tensor(a))), -1 / b], [-1 / b, a / b**2]]
    )
    true_se = torch.linalg.inv(info).diagonal().sqrt()
    # sd of a sample sd over 200 draws is 1/√400 = 5%; the MLE of a Gamma shape is biased
    # upwards by O(1/n) (~2% here): 17% is three Monte-Carlo sds plus that bias
    torch.testing.assert_close(est.std(0), true_se.double(), rtol=0.17, atol=0)
    # the reported SEs average to the truth much more tightly than they scatter
    torch.testing.assert_close(se.mean(0), true_se.double(), rtol=0.05, atol=0)
    # with 200 replications a coverage has Monte-Carlo sd 1.5%: ±5% is a 3.2-sd band
    for j, truth in enumerate([a, b]):
        assert abs(_coverage(est[:, j], se[:, j], truth) - 0.95) < 0.05
