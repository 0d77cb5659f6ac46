"""The distributions conjugate analysis adds, against scipy.stats and Pyro."""

import numpy as np
import pytest
import torch
from scipy import stats

from latentfit.estimate import (
    BetaBinomialDistribution,
    DirichletMultinomialDistribution,
    InverseWishart,
    MultivariateStudentT,
    quantile,
)

RTOL = 1e-10


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)


def test_multivariate_student_t_against_scipy_and_pyro():
    import pyro.distributions as pdist

    loc = np.array([1.0, -0.5, 0.2])
    a = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])
    x = np.random.default_rng(0).normal(size=(6, 3))
    dist = MultivariateStudentT(4.5, loc, a)
    np.testing.assert_allclose(
        dist.log_prob(_t(x)), stats.multivariate_t(loc, a, df=4.5).logpdf(x), rtol=RTOL
    )
    ref = pdist.MultivariateStudentT(_t(4.5), _t(loc), torch.linalg.cholesky(_t(a)))
    torch.testing.assert_close(dist.log_prob(_t(x)), ref.log_prob(_t(x)), rtol=RTOL, atol=0)
    torch.testing.assert_close(dist.covariance_matrix, _t(a) * 4.5 / 2.5, rtol=RTOL, atol=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = dist.sample((40000,))
    # Monte-Carlo mean of a t with 4.5 dof: sd ≈ √(var/40000) ≈ 0.01; 0.05 is five sds
    torch.testing.assert_close(draws.mean(0), _t(loc), rtol=0, atol=0.05)


def test_inverse_wishart_against_scipy():
    psi = np.array([[2.0, 0.4], [0.4, 1.0]])
    dist = InverseWishart(5.0, psi)
    sig = np.array([[0.8, 0.1], [0.1, 0.4]])
    assert float(dist.log_prob(_t(sig))) == pytest.approx(
        stats.invwishart(df=5.0, scale=psi).logpdf(sig), rel=RTOL
    )
    torch.testing.assert_close(dist.mean, _t(psi) / (5.0 - 3), rtol=RTOL, atol=0)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        draws = dist.sample((20000,))
    # E[Σ] = Ψ/(ν−d−1); Var of the entries is finite for ν > d + 3: 10% is several MC sds
    torch.testing.assert_close(draws.mean(0), dist.mean, rtol=0.1, atol=0.03)


def test_beta_binomial_and_dirichlet_multinomial_moments_and_normalisation():
    dist = BetaBinomialDistribution(2.0, 3.5, 9)
    k = torch.arange(10, dtype=torch.float64)
    p = dist.log_prob(k).exp()
    assert float(p.sum()) == pytest.approx(1.0, rel=1e-12)
    assert float((k * p).sum()) == pytest.approx(float(dist.mean), rel=1e-12)
    assert float(((k - dist.mean) ** 2 * p).sum()) == pytest.approx(float(dist.variance), rel=1e-12)
    dm = DirichletMultinomialDistribution([0.5, 1.0, 2.0], 4)
    rows = torch.tensor(
        [[i, j, 4 - i - j] for i in range(5) for j in range(5 - i)], dtype=torch.float64
    )
    assert float(dm.log_prob(rows).exp().sum()) == pytest.approx(1.0, rel=1e-12)
    ref = stats.dirichlet_multinomial([0.5, 1.0, 2.0], 4).logpmf(rows.numpy())
    np.testing.assert_allclose(dm.log_prob(rows), ref, rtol=RTOL)


def test_quantiles_against_scipy():
    q = [0.01, 0.3, 0.975]
    cases = [
        (torch.distributions.Beta(_t(2.0), _t(5.0)), stats.beta(2, 5)),
        (torch.distributions.Gamma(_t(3.0), _t(2.0)), stats.gamma(3, scale=0.5)),
        (torch.distributions.InverseGamma(_t(3.0), _t(2.0)), stats.invgamma(3, scale=2.0)),
        (torch.distributions.StudentT(_t(5.0), _t(1.0), _t(2.0)), stats.t(5, 1, 2)),
        (torch.distributions.Normal(_t(1.0), _t(2.0)), stats.norm(1, 2)),
    ]
    for dist, ref in cases:
        np.testing.assert_allclose(quantile(dist, q), ref.ppf(q), rtol=RTOL)
    with pytest.raises(NotImplementedError, match="Cauchy"):
        quantile(torch.distributions.Cauchy(0.0, 1.0), q)
