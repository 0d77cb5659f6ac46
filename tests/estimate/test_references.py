"""fit_mle against statsmodels and scipy.stats on the same data."""

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from scipy import optimize, stats
from statsmodels.base.model import GenericLikelihoodModel

from latentfit.estimate import fit_mle


class _GammaModel(GenericLikelihoodModel):
    """Gamma(concentration a, rate b) written directly in statsmodels, params [a, b]."""

    def loglike(self, params):
        a, b = params
        return stats.gamma.logpdf(self.endog, a, scale=1 / b).sum()

    def loglikeobs(self, params):
        a, b = params
        return stats.gamma.logpdf(self.endog, a, scale=1 / b)


def test_gamma_against_generic_likelihood_model():
    x = np.random.default_rng(0).gamma(2.5, 1 / 1.5, 300)
    fit = fit_mle("gamma", x)
    model = _GammaModel(x, np.ones_like(x))
    ref = model.fit(
        start_params=[1.0, 1.0], method="nm", maxiter=20000, xtol=1e-12, ftol=1e-14, disp=0
    )
    # Nelder-Mead stops at xtol ~1e-8 on the parameters
    np.testing.assert_allclose(fit.estimates, ref.params, rtol=1e-6)
    assert fit.log_likelihood == pytest.approx(ref.llf, rel=1e-10)
    # statsmodels' standard errors come from a finite-difference Hessian (relative error ~1e-5);
    # evaluated at our optimum they isolate the Hessian from the optimiser
    hess = model.hessian(fit.estimates.numpy())
    np.testing.assert_allclose(fit.bse, np.sqrt(np.diag(np.linalg.inv(-hess))), rtol=1e-4)
    assert model.loglike(fit.estimates.numpy()) == pytest.approx(fit.log_likelihood, rel=1e-12)
    # the sandwich: statsmodels' HC0 uses finite-difference scores and Hessian
    robust = model.fit(
        start_params=fit.estimates.numpy(), method="nm", maxiter=0, disp=0, cov_type="HC0"
    )
    np.testing.assert_allclose(fit.std_errors("sandwich"), robust.bse, rtol=1e-3)


def test_poisson_log_rate_against_statsmodels_poisson():
    # statsmodels' Poisson regression on a constant has an analytic Hessian: its coefficient is
    # log λ, which fit.transform must reproduce with the delta method
    y = np.random.default_rng(1).poisson(3.2, 250).astype(float)
    ref = sm.Poisson(y, np.ones_like(y)).fit(method="newton", tol=1e-14, disp=0)
    fit = fit_mle("poisson", y)
    log_rate = fit.transform(lambda rate: rate.log(), "log_rate")
    np.testing.assert_allclose(log_rate.estimates, ref.params, rtol=1e-10)
    np.testing.assert_allclose(log_rate.std_errors, ref.bse, rtol=1e-8)
    assert fit.log_likelihood == pytest.approx(ref.llf, rel=1e-12)


def test_negative_binomial_against_statsmodels_nb2():
    # NB2: mean μ = exp(const), variance μ + α μ². In torch's (total_count r, probs p):
    # μ = r p / (1 - p) and α = 1 / r. statsmodels' NB2 Hessian is analytic.
    y = np.random.default_rng(2).negative_binomial(3, 0.4, 400).astype(float)
    ref = sm.NegativeBinomial(y, np.ones_like(y)).fit(
        method="newton", tol=1e-14, maxiter=100, disp=0
    )
    fit = fit_mle("negativebinomial", y)
    nb2 = fit.transform(
        lambda total_count, probs: {
            "const": (total_count * probs / (1 - probs)).log(),
            "alpha": 1 / total_count,
        }
    )
    np.testing.assert_allclose(nb2.estimates, ref.params, rtol=1e-7)
    np.testing.assert_allclose(nb2.std_errors, ref.bse, rtol=1e-6)
    assert fit.log_likelihood == pytest.approx(ref.llf, rel=1e-12)


def test_least_squares_mean_against_ols():
    # Normal MLE of the mean equals OLS on a constant; the MLE's variance uses n, OLS's n - 1
    x = np.random.default_rng(3).normal(2.0, 1.5, 80)
    fit = fit_mle("normal", x)
    ols = sm.OLS(x, np.ones_like(x)).fit()
    np.testing.assert_allclose(fit.params["loc"], ols.params[0], rtol=1e-12)
    np.testing.assert_allclose(fit.bse[0] ** 2 * len(x) / (len(x) - 1), ols.bse[0] ** 2, rtol=1e-10)


def _weibull_mle(x):
    """Weibull MLE from the profile equation Σxᵏlog x / Σxᵏ − 1/k − mean(log x) = 0."""
    lx = np.log(x)
    k = optimize.brentq(
        lambda k: (x**k * lx).sum() / (x**k).sum() - 1 / k - lx.mean(),
        0.1,
        20,
        xtol=1e-15,
        rtol=1e-15,
    )
    return [np.mean(x**k) ** (1 / k), k]


SCIPY_CASES = {
    # name: (scipy fit giving our parameters, data)
    "gamma": (
        lambda x: (lambda a, _l, s: [a, 1 / s])(*stats.gamma.fit(x, floc=0)),
        lambda r: r.gamma(2.0, 1 / 3.0, 300),
    ),
    # scipy's weibull_min.fit stops ~1e-5 short of the optimum; its own root finder on the
    # profile likelihood equation is exact
    "weibull": (lambda x: _weibull_mle(x), lambda r: 1.5 * r.weibull(1.4, 300)),
    "beta": (
        lambda x: list(stats.beta.fit(x, floc=0, fscale=1)[:2]),
        lambda r: r.beta(2.0, 3.0, 300),
    ),
    "lognormal": (
        lambda x: (lambda s, _l, sc: [np.log(sc), s])(*stats.lognorm.fit(x, floc=0)),
        lambda r: r.lognormal(0.5, 0.8, 300),
    ),
    "vonmises": (
        lambda x: (lambda k, loc, _s: [loc, k])(*stats.vonmises.fit(x, fscale=1)),
        lambda r: r.vonmises(1.0, 2.0, 300),
    ),
}


@pytest.mark.parametrize("name", sorted(SCIPY_CASES))
def test_against_scipy_fit(name):
    ref_fit, draw = SCIPY_CASES[name]
    x = draw(np.random.default_rng(4))
    ref = np.asarray(ref_fit(x), dtype=float)
    fit = fit_mle(name, x)
    # scipy solves these MLE equations by 1-D root finding to ~1e-10 relative; torch's VonMises
    # normaliser is a polynomial approximation accurate to ~1e-7, which moves its optimum ~1e-6
    rtol = 1e-5 if name == "vonmises" else 1e-7
    np.testing.assert_allclose(fit.estimates, ref, rtol=rtol)


@pytest.mark.parametrize("name", ["studentt", "cauchy", "gumbel"])
def test_no_worse_than_scipy_generic_fit(name):
    # scipy fits these with Nelder-Mead (xtol 1e-4): we must reach at least its log-likelihood
    # and agree to its tolerance
    dist = {"studentt": stats.t, "cauchy": stats.cauchy, "gumbel": stats.gumbel_r}[name]
    args = {"studentt": (4.0, 1.0, 2.0), "cauchy": (1.0, 2.0), "gumbel": (1.0, 2.0)}[name]
    x = dist.rvs(*args, size=300, random_state=5)
    ref = dist.fit(x)
    fit = fit_mle(name, x)
    assert fit.log_likelihood >= dist.logpdf(x, *ref).sum() - 1e-9
    np.testing.assert_allclose(fit.estimates, ref, rtol=1e-3)
    ll = dist.logpdf(x, *fit.estimates.numpy()).sum()
    assert fit.log_likelihood == pytest.approx(ll, rel=1e-12)


def test_multinomial_and_categorical_against_counts():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 5, 200)
    fit = fit_mle("categorical", x.astype(float), fixed={"num_categories": 6})
    counts = np.bincount(x, minlength=6)
    np.testing.assert_allclose(fit.params["probs"], counts / 200, rtol=1e-12)
    assert fit.log_likelihood == pytest.approx(
        (counts[:5] * np.log(counts[:5] / 200)).sum(), rel=1e-12
    )
    assert torch.isnan(fit.bse).any()  # category 5 is never seen: p = 0 on the boundary
