"""MAP-EM of the HMMs under their Dirichlet and Gamma priors: EM raises the log posterior
(log-likelihood plus log prior), which the fit follows, not the log-likelihood alone (which a
strong prior may lower: ``lower_bounds_`` stays hmmlearn's history of it)."""

import warnings

import numpy as np
import pytest
from scipy import stats

import latentfit as lf
from latentfit.em.driver import EMMonotonicityWarning

from ...test_every_model_on_device import COUNTS, GAUSS, LENGTHS, SYMBOLS, TRIALS


def _dirichlet(probs, alpha):
    """Σ over rows of the Dirichlet log density (scipy), on the entries a row may hold (an
    HSMM's zero diagonal left out)."""
    probs = np.atleast_2d(probs)
    total = 0.0
    for row in probs:
        keep = row > 0
        total += stats.dirichlet.logpdf(row[keep] / row[keep].sum(), np.full(keep.sum(), alpha))
    return total


# model, data, its priors, and their log density at the fitted parameters (scipy)
CASES = {
    "GaussianHMM-transmat": (
        lambda **kw: lf.GaussianHMM(2, transmat_prior=50.0, **kw),
        GAUSS,
        lambda m: _dirichlet(m.transmat_, 50.0),
    ),
    "CategoricalHMM-emissions": (
        lambda **kw: lf.CategoricalHMM(2, emissionprob_prior=30.0, transmat_prior=30.0, **kw),
        SYMBOLS,
        lambda m: _dirichlet(m.emissionprob_, 30.0) + _dirichlet(m.transmat_, 30.0),
    ),
    "MultinomialHMM-transmat": (
        lambda **kw: lf.MultinomialHMM(2, transmat_prior=40.0, startprob_prior=5.0, **kw),
        TRIALS,
        lambda m: _dirichlet(m.transmat_, 40.0) + _dirichlet(m.startprob_, 5.0),
    ),
    "PoissonHMM-rates": (
        lambda **kw: lf.PoissonHMM(2, lambdas_prior=50.0, lambdas_weight=50.0, **kw),
        COUNTS,
        # (a + Σ γ x) / (b + Σ γ) is the mode under Gamma(a + 1, rate b)
        lambda m: stats.gamma.logpdf(m.lambdas_, 51.0, scale=1 / 50.0).sum(),
    ),
    "PoissonHSMM-rates": (
        lambda **kw: lf.PoissonHSMM(
            2, max_duration=5, lambdas_prior=50.0, lambdas_weight=50.0, **kw
        ),
        COUNTS,
        lambda m: stats.gamma.logpdf(m.lambdas_, 51.0, scale=1 / 50.0).sum(),
    ),
}
# a prior whose log density the fit adds (its mixture weights'), though the log-likelihood
# happens not to fall here
MORE = {
    "GMMHMM-weights": (
        lambda **kw: lf.GMMHMM(2, n_mix=3, weights_prior=30.0, **kw),
        GAUSS,
        lambda m: _dirichlet(m.weights_, 30.0),
    ),
}


def _log_posterior(name, model, X):
    return model.score(X, LENGTHS) + {**CASES, **MORE}[name][2](model)


@pytest.mark.parametrize("name", list(CASES))
def test_map_em_never_lowers_the_log_posterior_and_stops_at_its_maximum(name):
    """Before, the fit followed the log-likelihood alone: with these priors it fell at the
    second iteration or later, an EMMonotonicityWarning blamed a degenerate component, and
    the fit stopped there as converged (PoissonHMM: after 2 of the 16 iterations it needs,
    its log posterior 6.9 nats below the maximum)."""
    make, X, _ = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        model = make(n_iter=200, tol=1e-6, random_state=0).fit(X, LENGTHS)
    assert model.converged_
    # the log posterior of the fits stopped after 1, 2, ... iterations never falls
    path = []
    for n_iter in range(1, min(model.n_iter_, 8) + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stopped early, as meant
            path.append(
                _log_posterior(
                    name, make(n_iter=n_iter, tol=-np.inf, random_state=0).fit(X, LENGTHS), X
                )
            )
    assert np.all(np.diff(path) >= -1e-8 * np.abs(path[1:])), path
    # and the fit ends at the maximum that every one of 150 iterations reaches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        longer = make(n_iter=150, tol=-np.inf, random_state=0).fit(X, LENGTHS)
    assert _log_posterior(name, model, X) == pytest.approx(
        _log_posterior(name, longer, X), abs=1e-2
    )


def test_the_history_stays_the_log_likelihood_under_a_prior():
    """lower_bounds_ is hmmlearn's monitor history, the log-likelihood before every M-step,
    with or without a prior."""
    make, X, _ = CASES["PoissonHMM-rates"]
    model = make(n_iter=200, tol=1e-6, random_state=0).fit(X, LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        earlier = make(n_iter=model.n_iter_ - 1, tol=-np.inf, random_state=0).fit(X, LENGTHS)
    assert model.lower_bound_ == pytest.approx(earlier.score(X, LENGTHS), rel=1e-10)


@pytest.mark.parametrize("name", [*CASES, *MORE])
def test_the_log_prior_the_fit_follows_is_scipys_up_to_a_constant(name):
    """The model's log prior at two parameter sets (the fits after 1 and 6 iterations)
    differs by what scipy's densities differ by."""
    make, X, scipy_log_prior = {**CASES, **MORE}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = (make(n_iter=n, tol=-np.inf, random_state=0).fit(X, LENGTHS) for n in (1, 6))
    ours = a._log_prior(a._given_params()) - b._log_prior(b._given_params())
    assert ours == pytest.approx(scipy_log_prior(a) - scipy_log_prior(b), rel=1e-9, abs=1e-9)
    assert abs(ours) > 1e-3  # the two differ: the check can fail
