"""MAP-EM of the HMMs under their Dirichlet, Gamma, normal and inverse-gamma / inverse-Wishart
priors: EM raises the log posterior (log-likelihood plus log prior), which the fit follows, not
the log-likelihood alone (which a prior may lower: ``lower_bounds_`` stays hmmlearn's history
of it)."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import latentfit as lf
from latentfit.em.driver import EMMonotonicityWarning
from latentfit.em.hmm import UnvisitedStateWarning
from latentfit.em.hmm import emissions as E

from ...test_every_model_on_device import COUNTS, GAUSS, LENGTHS, SYMBOLS, TRIALS
from .test_hmm_models import set_params, start_params


def _dirichlet(probs, alpha):
    """Σ over rows of the Dirichlet log density (scipy), on the entries a row may hold (an
    HSMM's zero diagonal left out)."""
    probs = np.atleast_2d(probs)
    total = 0.0
    for row in probs:
        keep = row > 0
        total += stats.dirichlet.logpdf(row[keep] / row[keep].sum(), np.full(keep.sum(), alpha))
    return total


def _default_covars_prior(m):
    """hmmlearn's default covars_prior 0.01 with weight 1 on diagonal variances: −0.01/(2σ²)
    each (an improper inverse gamma, which scipy has no density for)."""
    return -(0.01 / (2 * m._covars_)).sum()


def _normal_inverse_gamma(m, mu0, w, scale, weight):
    """The diag or spherical GaussianHMM's prior (scipy): each mean N(μ₀, σ²/w) and each
    variance σ² inverse gamma; hmmlearn's update, (Ψ + w (μ − μ₀)² + S) / (max(ν − 1, 0) + N),
    is the mode of σ²^−(max(ν − 1, 0)/2) exp(−(Ψ + w (μ − μ₀)²)/(2σ²)) per feature, so the
    inverse gamma's shape is what the normals' ½ log σ² leave of that power."""
    d = m.means_.shape[1]
    var = m._covars_ if m.covariance_type == "diag" else np.repeat(m._covars_[:, None], d, 1)
    per = 1 if m.covariance_type == "diag" else d  # variances a σ² stands for
    total = stats.norm.logpdf(m.means_, mu0, np.sqrt(var / w)).sum()
    power = per * (max(weight - 1, 0) / 2 - 0.5)  # σ²'s power left to the inverse gamma
    return total + stats.invgamma.logpdf(m._covars_, power - 1, scale=per * scale / 2).sum()


def _normal_inverse_wishart(m, mu0, w, scale, weight):
    """The full or tied GaussianHMM's prior (scipy): each mean N(μ₀, Σ/w), Σ inverse Wishart
    with the degrees of freedom that leave the power max(ν − d, 0)/2 of |Σ|⁻¹ in all."""
    k, d = m.means_.shape
    tied = m.covariance_type == "tied"
    covs = [m._covars_] if tied else list(m._covars_)
    total = sum(
        stats.multivariate_normal.logpdf(m.means_[j], np.full(d, mu0), m.covars_[j] / w)
        for j in range(k)
    )
    normals = k if tied else 1  # normals whose ½ log|Σ| each Σ carries
    df = max(weight - d, 0) - normals - d - 1
    return total + sum(stats.invwishart.logpdf(c, df, scale * np.eye(d)) for c in covs)


def _gaussian_prior(ct, **kw):
    if ct in ("diag", "spherical"):
        return lambda m: _normal_inverse_gamma(m, **kw)
    return lambda m: _normal_inverse_wishart(m, **kw)


# means far from their prior (3, with the data's regimes at -2 and 2) and variances pulled
# up to 20 / 50: before they were counted every one of these fits stopped after 2-4
# iterations at a fall of the log-likelihood, warned of as a degenerate component
GAUSSIAN_PRIOR = dict(means_prior=3.0, means_weight=50.0, covars_weight=50.0)


def _gaussian_case(cls, ct, **extra):
    cp = 20.0 if ct in ("diag", "spherical") else 20.0 * np.eye(2)
    return (
        lambda **kw: cls(2, covariance_type=ct, covars_prior=cp, **GAUSSIAN_PRIOR, **extra, **kw),
        GAUSS,
        _gaussian_prior(ct, mu0=3.0, w=50.0, scale=20.0, weight=50.0),
    )


def _gmm_normal_inverse_gamma_or_wishart(m, mu0, w, scale, weight):
    """GMMHMM's prior (scipy), hmmlearn's: each component's mean N(μ₀, Σ/w); its variance
    InvGamma(shape ``scale``, scale ``weight``) (diag per feature, spherical) or its matrix
    InvWishart(``weight``, ``scale`` I) (full; tied: one per state)."""
    k, n_mix, d = m.means_.shape
    ct = m.covariance_type
    covs = {  # (k, n_mix, d, d)
        "diag": lambda: np.stack([[np.diag(v) for v in row] for row in m.covars_]),
        "spherical": lambda: m.covars_[..., None, None] * np.eye(d),
        "full": lambda: m.covars_,
        "tied": lambda: np.repeat(m.covars_[:, None], n_mix, 1),
    }[ct]()
    total = sum(
        stats.multivariate_normal.logpdf(m.means_[j, c], np.full(d, mu0), covs[j, c] / w)
        for j in range(k)
        for c in range(n_mix)
    )
    if ct in ("diag", "spherical"):
        return total + stats.invgamma.logpdf(m.covars_, scale, scale=weight).sum()
    covs = m.covars_.reshape(-1, d, d)
    return total + sum(stats.invwishart.logpdf(c, weight, scale * np.eye(d)) for c in covs)


def _gmm_case(ct):
    matrix = ct in ("full", "tied")
    kw = dict(
        means_prior=3.0,
        means_weight=50.0,
        covars_prior=20.0 * np.eye(2) if matrix else 20.0,
        covars_weight=50.0 if matrix else 20.0,
    )
    return (
        lambda **more: lf.GMMHMM(2, n_mix=2, covariance_type=ct, **kw, **more),
        GAUSS,
        lambda m: _gmm_normal_inverse_gamma_or_wishart(
            m, 3.0, 50.0, 20.0, 50.0 if matrix else 20.0
        ),
    )


# model, data, its priors, and their log density at the fitted parameters (scipy)
CASES = {
    "GaussianHMM-transmat": (
        lambda **kw: lf.GaussianHMM(2, transmat_prior=50.0, **kw),
        GAUSS,
        lambda m: _dirichlet(m.transmat_, 50.0) + _default_covars_prior(m),
    ),
    **{
        f"GaussianHMM-{ct}-normal": _gaussian_case(lf.GaussianHMM, ct)
        for ct in ("diag", "spherical", "full", "tied")
    },
    "GaussianHSMM-diag-normal": _gaussian_case(lf.GaussianHSMM, "diag", max_duration=5),
    # before these were counted: 2 iterations, log posteriors 25.9 (tied) to 109.5 (full)
    # below the maximum
    **{f"GMMHMM-{ct}-normal": _gmm_case(ct) for ct in ("diag", "spherical", "full", "tied")},
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


@pytest.mark.parametrize("ct", ["diag", "spherical", "full", "tied"])
@pytest.mark.parametrize("prior", ["strong", "default"])
def test_the_gaussian_mstep_maximises_the_expected_log_likelihood_plus_the_log_prior(ct, prior):
    """At the M-step's means and covariances the gradient (autograd, float64) of
    Σ_t γ_tk log N(x_t | μ_k, Σ_k) (torch.distributions) + the log prior is 0, and moving
    them lowers that sum: the log prior is the density whose MAP the update computes."""
    gen = torch.Generator().manual_seed(0)
    t, k, d = 40, 2, 3
    X = torch.randn(t, d, generator=gen, dtype=torch.float64) * 2 + 1
    g = torch.softmax(torch.randn(t, k, generator=gen, dtype=torch.float64), 1)  # (t, k)
    matrix = ct in ("full", "tied")
    kw = dict(means_prior=0, means_weight=0, covars_prior=1e-2, covars_weight=1.0)
    if prior == "strong":  # a prior mean per state and feature, a weight per state
        kw = dict(
            means_prior=torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]], dtype=torch.float64),
            means_weight=torch.tensor([3.0, 7.0], dtype=torch.float64),
            covars_prior=20 * torch.eye(d, dtype=torch.float64) + 3 if matrix else 20.0,
            covars_weight=50.0,
        )
    shift = torch.zeros(d, dtype=torch.float64)
    start = {"diag": torch.ones(k, d), "spherical": torch.ones(k)}.get(ct)
    start = torch.eye(d).expand(k, d, d) if ct == "full" else start
    start = (torch.eye(d) if ct == "tied" else start).double()
    means, covars, _ = E.gaussian_emission_mstep(
        E.gaussian_stats(X, g, shift, ct),
        shift,
        torch.zeros(k, d, dtype=torch.float64),
        start,
        ct,
        update_means=True,
        update_covars=True,
        **kw,
    )

    def objective(mu, cov):
        full = E.fill_covars(cov, ct, k, d)
        ll = torch.distributions.MultivariateNormal(mu, full).log_prob(X.unsqueeze(1))  # (t, k)
        return (g * ll).sum() + E.gaussian_log_prior(mu, cov, ct, **kw)

    _assert_maximum(objective, means, covars, matrix, gen)


def test_a_default_gaussian_hmm_follows_its_default_covars_prior():
    """hmmlearn's defaults are a prior too (covars_prior 0.01 on every variance): on data of
    variances near 0.01 the log-likelihood fell at the third iteration, an
    EMMonotonicityWarning blamed a degenerate component and the fit stopped there as
    converged (hmmlearn's monitor, which follows the log-likelihood alone, stops there too);
    the log posterior goes on rising to its maximum (one more iteration, +0.0136, where one
    state is left without data)."""
    rng = np.random.default_rng(9)
    k, d, n = 3, 2, 150
    z = (np.arange(n) // 25) % k
    X = (rng.normal(size=(k, d))[z] * 3 + rng.normal(size=(n, d)) * rng.uniform(0.05, 1.5)) * 0.03
    start = start_params(k, d, "diag", 9)

    def fit(**kw):
        return set_params(lf.GaussianHMM(k, init_params="", **kw), start).fit(X)

    def log_posterior(m):
        return m.score(X) + _default_covars_prior(m)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnvisitedStateWarning)
        warnings.simplefilter("error", EMMonotonicityWarning)
        model = fit(n_iter=100)
    assert model.converged_ and model.n_iter_ > 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = [log_posterior(fit(n_iter=i, tol=-np.inf)) for i in range(1, model.n_iter_ + 1)]
    assert np.all(np.diff(path) >= -1e-8 * np.abs(path[1:])), path
    assert log_posterior(model) > path[2] + 1e-2  # above the fit stopped at the third


def _gmm_start(ct, k, m, d):
    eye = torch.eye(d, dtype=torch.float64)
    return {
        "diag": torch.ones(k, m, d, dtype=torch.float64),
        "spherical": torch.ones(k, m, dtype=torch.float64),
        "full": eye.expand(k, m, d, d).clone(),
        "tied": eye.expand(k, d, d).clone(),
    }[ct]


@pytest.mark.parametrize("ct", ["diag", "spherical", "full", "tied"])
@pytest.mark.parametrize("prior", ["strong", "default"])
def test_the_gmm_mstep_maximises_the_expected_log_likelihood_plus_the_log_prior(ct, prior):
    """GMMHMM: at the M-step's means and covariances the gradient (autograd, float64) of
    Σ_t γ_tk r_tkm log N(x_t | μ_km, Σ_km) (torch.distributions) + the log prior is 0, and
    moving them lowers that sum."""
    gen = torch.Generator().manual_seed(1)
    t, k, m, d = 60, 2, 3, 2
    X = torch.randn(t, d, generator=gen, dtype=torch.float64) * 2 + 1
    gamma = torch.softmax(torch.randn(t, k, generator=gen, dtype=torch.float64), 1)  # (t, k)
    weights = torch.full((k, m), 1 / m, dtype=torch.float64)
    means = torch.randn(k, m, d, generator=gen, dtype=torch.float64)
    covars = _gmm_start(ct, k, m, d)
    kw = dict(means_prior=0.0, means_weight=0.0, covars_prior=None, covars_weight=None)
    if prior == "strong":
        matrix = ct in ("full", "tied")
        kw = dict(
            means_prior=torch.tensor([0.5, -1.0], dtype=torch.float64),
            means_weight=torch.tensor([[3.0, 7.0, 1.0], [2.0, 5.0, 4.0]], dtype=torch.float64),
            covars_prior=20 * torch.eye(d, dtype=torch.float64) + 3 if matrix else 20.0,
            covars_weight=50.0 if matrix else 30.0,
        )
    priors = E.gmm_priors(ct, k, m, d, 1.0, *kw.values(), torch.float64, X.device)
    stats_ = E.gmm_stats(X, gamma, weights, means, covars, ct)
    _, new_means, new_covars, _ = E.gmm_mstep(stats_, weights, means, covars, ct, priors, "mc")
    # the responsibilities that E-step took (the statistics' weights), fixed
    lp = E._mixture_log_prob(X, weights, means, covars, ct)  # (t, k, m)
    resp = torch.softmax(lp, 2) * gamma.unsqueeze(2)  # (t, k, m)

    def objective(mu, cov):
        full = cov.unsqueeze(1).expand(k, m, d, d) if ct == "tied" else cov
        if ct == "diag":
            full = torch.diag_embed(cov)
        elif ct == "spherical":
            full = cov[..., None, None] * torch.eye(d, dtype=torch.float64)
        ll = torch.distributions.MultivariateNormal(mu, full).log_prob(X[:, None, None])
        return (resp * ll).sum() + E.gmm_log_prior(mu, cov, ct, priors)

    _assert_maximum(objective, new_means, new_covars, ct in ("full", "tied"), gen)


def _assert_maximum(objective, means, covars, matrix: bool, gen) -> None:
    """``(means, covars)`` maximise ``objective``: its gradient there is zero (autograd) and
    ten random moves of 1e-3 (symmetric ones of a ``matrix`` covariance) all lower it."""
    mu, cov = means.clone().requires_grad_(), covars.clone().requires_grad_()
    best = objective(mu, cov)
    best.backward()
    assert float(mu.grad.abs().max()) < 1e-9
    assert float(cov.grad.abs().max()) < 1e-9
    for _ in range(10):
        dc = 1e-3 * torch.randn(cov.shape, generator=gen, dtype=torch.float64)
        dc = (dc + dc.mT) / 2 if matrix else dc
        dm = 1e-3 * torch.randn(mu.shape, generator=gen, dtype=torch.float64)
        assert float(objective(means + dm, covars + dc)) < float(best.detach())
