"""MAP: closed-form posterior modes, and regression MAP reproducing least squares, ridge and
lasso from scikit-learn on the same data."""

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from scipy.optimize import curve_fit
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from torch.distributions import Beta, Gamma, Laplace, Normal

from latentfit.errors import DataError, ParameterError
from latentfit.estimate import (
    NormalKnownVariance,
    fit_map,
    fit_map_regression,
    fit_mle,
    lasso_prior_scale,
    ridge_prior_scale,
)
from tests.gradient_copies import SCALAR_COPIES


def _t(v):
    return torch.tensor(v, dtype=torch.float64)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    n, d = 120, 8
    X = rng.normal(size=(n, d)) @ np.diag(np.linspace(0.5, 2.0, d))
    w = np.array([2.0, -1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0])
    y = X @ w + 0.3 + rng.normal(size=n)
    return X, y


def _linear(X, w, b):
    return X @ w + b


def _init(d):
    return {"w": torch.zeros(d, dtype=torch.float64), "b": 0.0}


def test_no_prior_is_least_squares(regression, device):
    X, y = regression
    fit = fit_map_regression(_linear, X, y, _init(X.shape[1]), noise_scale=0.7, device=device)
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(fit.params["w"].cpu(), ref.coef_, rtol=1e-10, atol=1e-12)
    assert float(fit.params["b"]) == pytest.approx(ref.intercept_, rel=1e-10)
    assert fit.method == "MLE"
    # with σ known the covariance of least squares is σ² (AᵀA)⁻¹, A = [X, 1]
    A = np.column_stack([X, np.ones(len(y))])
    cov = 0.7**2 * np.linalg.inv(A.T @ A)
    np.testing.assert_allclose(fit.cov.cpu(), cov, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("alpha", [0.1, 5.0, 100.0])
def test_normal_prior_is_ridge(regression, alpha):
    X, y = regression
    sigma = 1.3
    prior = {"w": Normal(_t(0.0), _t(ridge_prior_scale(alpha, sigma)))}
    fit = fit_map_regression(_linear, X, y, _init(X.shape[1]), prior=prior, noise_scale=sigma)
    ref = Ridge(alpha=alpha, solver="cholesky").fit(X, y)
    np.testing.assert_allclose(fit.params["w"], ref.coef_, rtol=1e-9, atol=1e-12)
    assert float(fit.params["b"]) == pytest.approx(ref.intercept_, rel=1e-9)
    assert fit.method == "MAP" and torch.isfinite(fit.bse).all()


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.8])
def test_laplace_prior_is_lasso(regression, alpha):
    X, y = regression
    n = len(y)
    prior = {"w": Laplace(_t(0.0), _t(lasso_prior_scale(alpha, n)))}
    fit = fit_map_regression(_linear, X, y, _init(X.shape[1]), prior=prior)
    # coordinate descent run to a duality gap of 1e-15 is the exact lasso solution
    ref = Lasso(alpha=alpha, tol=1e-15, max_iter=1_000_000).fit(X, y)
    assert (ref.coef_ == 0).any()  # the test must exercise the kink
    np.testing.assert_allclose(fit.params["w"], ref.coef_, rtol=1e-8, atol=1e-10)
    assert float(fit.params["b"]) == pytest.approx(ref.intercept_, rel=1e-8)
    # exact zeros where the lasso has them
    assert ((fit.params["w"] == 0).numpy() == (ref.coef_ == 0)).all()
    assert fit.converged
    assert torch.isnan(fit.bse).all()  # no Laplace approximation at a kink


def test_nonlinear_least_squares_matches_curve_fit():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 4, 60)
    y = 2.5 * np.exp(-1.3 * t) + 0.1 * rng.normal(size=t.size)
    popt, _ = curve_fit(
        lambda t, a, k: a * np.exp(-k * t), t, y, p0=[1, 1], xtol=1e-14, ftol=1e-14, gtol=1e-14
    )
    fit = fit_map_regression(
        lambda X, a, k: a * torch.exp(-k * X), t, y, {"a": 1.0, "k": 1.0}, noise_scale=0.1
    )
    np.testing.assert_allclose(fit.estimates, popt, rtol=1e-9)
    # curve_fit's absolute_sigma=False rescales by the residual variance; with σ fixed at 0.1
    # the Gauss-Newton covariance σ² (JᵀJ)⁻¹ differs from the observed-information one only by
    # the residual-curvature term, which is O(residual): compare loosely
    a, k = popt
    jac = np.column_stack([np.exp(-k * t), -a * t * np.exp(-k * t)])
    np.testing.assert_allclose(fit.cov, 0.01 * np.linalg.inv(jac.T @ jac), rtol=0.05)


def test_beta_bernoulli_mode():
    x = np.random.default_rng(2).binomial(1, 0.3, 40).astype(float)
    a, b = 3.0, 5.0
    fit = fit_map("bernoulli", x, {"probs": Beta(_t(a), _t(b))})
    mode = (x.sum() + a - 1) / (len(x) + a + b - 2)
    assert float(fit.params["probs"]) == pytest.approx(mode, rel=1e-10)


def test_gamma_poisson_mode_and_laplace_variance():
    x = np.random.default_rng(3).poisson(4.0, 30).astype(float)
    a, b = 2.0, 0.5
    fit = fit_map("poisson", x, {"rate": Gamma(_t(a), _t(b))})
    shape = x.sum() + a - 1
    mode = shape / (len(x) + b)
    assert float(fit.params["rate"]) == pytest.approx(mode, rel=1e-10)
    # Laplace approximation: −d²/dλ² log posterior = (Σx + a − 1)/λ² at the mode
    assert float(fit.bse[0]) == pytest.approx(mode / np.sqrt(shape), rel=1e-8)
    assert fit.log_prior == pytest.approx(float(Gamma(_t(a), _t(b)).log_prob(_t(mode))), rel=1e-10)
    assert "MAP results: Poisson" in fit.summary() and "Log-prior" in fit.summary()


def test_laplace_prior_on_a_mean_soft_thresholds():
    x = np.random.default_rng(4).normal(0.3, 2.0, 50)
    sigma, b = 2.0, 0.05

    def loglik(x, mu, sigma):
        return Normal(mu, sigma).log_prob(x)

    fit = fit_map(
        loglik, x, {"mu": Laplace(_t(0.0), _t(b))}, init={"mu": 1.0}, fixed={"sigma": sigma}
    )
    # argmin Σ(x − μ)²/(2σ²) + |μ|/b = soft(x̄, σ²/(n b))
    thr = sigma**2 / (len(x) * b)
    expected = np.sign(x.mean()) * max(abs(x.mean()) - thr, 0.0)
    assert float(fit.params["mu"]) == pytest.approx(expected, abs=1e-12)


def test_map_errors():
    x = [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"'scale'.*parameters: \('rate',\)"):
        fit_map("poisson", x, {"scale": Gamma(_t(1.0), _t(1.0))})
    with pytest.raises(ParameterError, match="torch distribution"):
        fit_map("poisson", x, {"rate": 3.0})
    with pytest.raises(ValueError, match="real-valued"):
        fit_map("poisson", x, {"rate": Laplace(_t(0.0), _t(1.0))})
    with pytest.raises(ValueError, match="one value per row of X"):
        fit_map_regression(_linear, np.ones((3, 2)), [1.0, 2.0], _init(2))


@pytest.mark.parametrize(("x_scale", "y_scale"), [(1e-5, 1.0), (1.0, 1e-5), (1e-10, 1e-10)])
def test_least_squares_whatever_the_units(regression, x_scale, y_scale):
    """Columns of X in small units beside the intercept, or y far below noise_scale, give a
    Hessian whose curvatures differ by 1e10: flatness is judged on it scaled to unit
    diagonal (inference.equilibrated_eigh). Before, X * 1e-5 gave NaN standard errors (the
    slopes "not identified") and y * 1e-5 with noise_scale=1 stopped at w ~ 1e-10 (least
    squares: 2.0, -1.0, ...) with converged=True."""
    X, y = regression
    X, y = X * x_scale, y * y_scale
    sigma = 1.0 if x_scale == 1 else 0.7 * y_scale
    fit = fit_map_regression(_linear, X, y, _init(X.shape[1]), noise_scale=sigma)
    ref = sm.OLS(y, sm.add_constant(X)).fit()
    np.testing.assert_allclose(fit.params["w"], ref.params[1:], rtol=1e-8)
    assert float(fit.params["b"]) == pytest.approx(ref.params[0], rel=1e-8)
    # σ known: the covariance of least squares is σ² (AᵀA)⁻¹, statsmodels' normalized_cov_params
    order = [*range(1, X.shape[1] + 1), 0]  # statsmodels puts the constant first
    cov = sigma**2 * ref.normalized_cov_params[np.ix_(order, order)]
    np.testing.assert_allclose(fit.cov, cov, rtol=1e-8)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda X, y: fit_map_regression(_linear, X, y, _init(8), noise_scale="1"), "noise_scale"),
        (
            lambda X, y: fit_map_regression(_linear, X, y, _init(8), noise_scale=np.inf),
            "noise_scale",
        ),
        (
            lambda X, y: fit_map_regression(_linear, X, y, _init(8), noise_scale=np.ones(3)),
            "noise_scale",
        ),
        (lambda X, y: ridge_prior_scale(0.0), "alpha must be a finite number > 0"),
        (lambda X, y: ridge_prior_scale(-1.0), "alpha must be a finite number > 0"),
        (lambda X, y: lasso_prior_scale(1.0, 0), "n_samples must be an integer >= 1"),
        (lambda X, y: lasso_prior_scale(0.0, 10), "alpha must be a finite number > 0"),
    ],
)
def test_bad_scales_are_named(regression, call, message):
    """Before: TypeError, ValueError (an array's truth value), ZeroDivisionError, a complex
    number's TypeError, and for noise_scale=inf a DataError blaming the starting values."""
    with pytest.raises(ParameterError, match=message):
        call(*regression)


@pytest.mark.parametrize("y_scale", [1e-5, 1e5, 1e9])
@pytest.mark.parametrize("kind", ["least squares", "ridge", "lasso"])
def test_map_regression_converges_whatever_the_scale_of_y(regression, kind, y_scale):
    """y in units of 1e5 with noise_scale=1 makes the negative log-posterior 1e10 larger, and
    its gradient's rounding floor (1e-9) rose above the absolute gtol: a lasso with X in units
    of 10 warned "did not converge" at the right answer, least squares and ridge did from y in
    units of 1e9. Convergence is now judged on the gradient relative to the objective's size
    and curvature (optimize.relative_gradient). The answers are the closed-form ridge and
    least-squares solutions and scikit-learn's lasso on y / y_scale, scaled back."""
    X, y = regression
    X, y = 10 * X, y_scale * y
    n, d = X.shape
    alpha = {"least squares": 0.0, "ridge": 50.0, "lasso": 2.0 * y_scale}[kind]
    prior = None
    if kind == "ridge":
        prior = {"w": Normal(_t(0.0), ridge_prior_scale(alpha))}
    elif kind == "lasso":
        prior = {"w": Laplace(_t(0.0), lasso_prior_scale(alpha, n))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "did not converge"
        fit = fit_map_regression(_linear, X, y, _init(d), prior=prior)
    assert fit.converged
    if kind == "lasso":  # coordinate descent to a duality gap of 1e-15, on y of unit scale
        ref = Lasso(alpha=alpha / y_scale, tol=1e-15, max_iter=1_000_000).fit(X, y / y_scale)
        assert (ref.coef_ == 0).any()  # the kink is exercised
        w, b = y_scale * ref.coef_, y_scale * ref.intercept_
    else:  # on centred data, the intercept unpenalised: (XcᵀXc + αI) w = Xcᵀyc
        xc, yc = X - X.mean(0), y - y.mean()
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
        b = y.mean() - X.mean(0) @ w
    np.testing.assert_allclose(fit.params["w"], w, rtol=1e-8, atol=1e-10 * y_scale)
    assert float(fit.params["b"]) == pytest.approx(b, rel=1e-8, abs=1e-10 * y_scale)


@pytest.mark.parametrize("y_scale", [1e-9, 1e-5, 1e5, 1e9])
def test_lasso_with_slopes_and_intercept_in_different_units(regression, y_scale):
    """X in units of 100 beside an intercept in units of 1: curvatures 1e4 apart. The
    proximal gradient solver took one step size for every coordinate and stopped on a move
    below 1e-13 (1 + max |u|): with y in units of 1e-9 it stopped at once, far off, and
    reported converged=True 7.5e-3 from scikit-learn's answer; at 1e-5, 1e5 and 1e9 it ran
    to its cap of 20,000 iterations. It now works in units of unit curvature (Jacobi
    preconditioning, as the L-BFGS does) and stops on its gradient mapping there."""
    X, y = regression
    X, y = 100 * X, y_scale * y
    n, d = X.shape
    alpha = 0.05 * 100 * y_scale
    prior = {"w": Laplace(_t(0.0), lasso_prior_scale(alpha, n))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_map_regression(_linear, X, y, _init(d), prior=prior)
    assert fit.converged
    ref = Lasso(alpha=alpha / y_scale, tol=1e-15, max_iter=1_000_000).fit(X, y / y_scale)
    assert (ref.coef_ == 0).any()  # the kink is exercised
    np.testing.assert_allclose(
        fit.params["w"], y_scale * ref.coef_, rtol=1e-8, atol=1e-10 * y_scale
    )
    b = y_scale * ref.intercept_
    assert float(fit.params["b"]) == pytest.approx(b, rel=1e-8, abs=1e-10 * y_scale)
    assert fit.n_iter < 1000  # proximal steps: 20,000 (the cap) in u's own units


@pytest.mark.parametrize("scale", [1e5, 1e30, 1e150, 1e-150])
def test_mvn_map_with_a_column_in_large_units(scale):
    """A N(0, 10) prior on the mean of an MVN whose second column is in units of 1e5: the
    line search stepped to a covariance whose Cholesky factor failed and the fit raised a
    DataError. L-BFGS now works on the objective over its size in units of unit curvature,
    where its first step is a diagonal Newton step; the mode is checked against the fixed
    point of its two conditions: loc = (nΣ⁻¹ + I/100)⁻¹ nΣ⁻¹ x̄, Σ = mean((x - loc)(x - loc)ᵀ)."""
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 2)) @ np.array([[1.0, 0.0], [0.5, 1.0]]) * np.array([1.0, scale])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_map("mvn", x, {"loc": Normal(_t(0.0), _t(10.0))})
    assert fit.converged
    loc = x.mean(0)
    for _ in range(200):
        cov = (x - loc).T @ (x - loc) / n
        prec = np.linalg.inv(cov)
        loc = np.linalg.solve(n * prec + np.eye(2) / 100, n * prec @ x.mean(0))
    # the prior's sd (10) is the scale of loc[1]'s posterior: its mode is 0 to 1e-20 of it
    np.testing.assert_allclose(fit.params["loc"], loc, rtol=1e-8, atol=1e-19)
    np.testing.assert_allclose(fit.params["covariance_matrix"], cov, rtol=1e-8)


def test_a_fit_that_stalls_on_data_of_extreme_magnitude_says_to_standardise():
    """A MAP in units of 1e150 (curvatures of 1e-300) of a log-density of your own, which has
    no standardised coordinates to be fitted in, does not converge; the warning says what the
    DataError of the Cholesky failure said: standardise the data."""
    from torch.distributions import constraints

    from latentfit.estimate import log_density_family

    def log_density(x, loc, scale):
        return Normal(loc, scale).log_prob(x)

    family = log_density_family(
        log_density, {"loc": 0.0, "scale": 1e150}, {"scale": constraints.positive}
    )
    x = np.random.default_rng(0).normal(size=200) * 1e150
    with pytest.warns(RuntimeWarning, match=r"did not converge.*e\+150\).*standardise the data"):
        fit = fit_map(family, x, {"loc": Normal(_t(0.0), _t(10.0))})
    assert not fit.converged


@pytest.mark.parametrize("scale", [1e150, 1e-150])
@pytest.mark.parametrize("family", ["studentt", "cauchy", "gumbel"])
def test_location_scale_maps_in_extreme_units(family, scale):
    """A N(0, 10) prior on the location of StudentT data in units of 1e150: "did not
    converge" (gradient 1.41 relative), as the Normal's did. Location-scale families now run
    on the data over their scale too (Family.standardize). At 1e-150 the prior is flat
    against the data: the MAP is the unit-scale MLE times 1e-150. At 1e150 it pins the
    location at 0 (to 1e-147 of a prior sd of 10): the StudentT's df and scale are then
    scipy's with loc = 0 (to its BFGS's 1e-5)."""
    from scipy import optimize, stats

    x = np.random.default_rng(0).standard_t(5, size=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_map(family, x * scale, {"loc": Normal(_t(0.0), _t(10.0))})
    assert fit.converged
    if scale < 1:
        ref = fit_mle(family, x)
        for k, v in ref.params.items():
            unit = 1.0 if k == "df" else scale
            assert float(fit.params[k]) == pytest.approx(float(v) * unit, rel=1e-8)
    else:
        assert abs(float(fit.params["loc"])) < 1e-140
        if family == "studentt":

            def nll(v):  # (log df, log scale) at loc = 0, on the unit-scale data
                return -stats.t.logpdf(x, np.exp(v[0]), 0.0, np.exp(v[1])).sum()

            df, s = np.exp(optimize.minimize(nll, [np.log(5.0), 0.0], method="BFGS").x)
            assert float(fit.params["df"]) == pytest.approx(df, rel=1e-5)
            assert float(fit.params["scale"]) == pytest.approx(s * scale, rel=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e150, 1e-150])
def test_normal_map_whatever_the_units(scale):
    """A Normal prior on the mean of Normal data in units of 1e150: the fit stopped where it
    started with "did not converge" (1e-150: likewise). In the data's units autograd's
    Hessian of the log-scale coordinate holds scale⁻⁴ and came out 0 (NaN at 1e-150), so
    L-BFGS and the convergence test saw no curvature there; the fit now runs on the data in
    units of their spread (Family.standardize). The mode is the fixed point of its two
    conditions: loc the conjugate posterior mean of NormalKnownVariance at the fitted scale,
    scale² = mean((x - loc)²)."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=50) * scale
    prior = Normal(_t(0.5 * scale), _t(1.0 * scale))  # as strong as 1 observation of sd 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_map("normal", x, {"loc": prior})
    assert fit.converged
    loc, sd = fit.params["loc"], fit.params["scale"]
    post = NormalKnownVariance(prior.loc, prior.scale, sd).update(x)
    assert float(loc) == pytest.approx(float(post.loc), rel=1e-8)
    assert float(sd) == pytest.approx(float(((x - float(loc)) ** 2).mean() ** 0.5), rel=1e-8)
    assert abs(float(loc) - x.mean()) > 1e-3 * scale  # the prior moved it off the mean


@pytest.mark.parametrize("scale", [1e200, 1e300])
def test_a_prior_whose_curvature_leaves_float64_is_named(scale):
    """A Gamma(2, 1) prior on the rate of Gamma data in units of 1e200: the fit runs on the
    data times the rate, but autograd's Hessian of the prior passes through 1 / rate²
    (1e400). Its infinite diagonal made the rate's relative gradient and Newton step 0, so
    the fit said converged (4.8e-8 short of the mode), and its NaN standard errors came with
    a warning that the parameters were "not identified by the data". Now the fit says it
    did not converge and why the Hessian failed; the estimates are still those at 1e100
    times the units, to the 1e-7 it reached."""
    x = np.array([1.0, 2.0, 3.0])
    prior = {"concentration": Gamma(_t(2.0), _t(1.0)), "rate": Gamma(_t(2.0), _t(1.0))}
    ref = fit_map("gamma", x * 1e100, prior)
    with pytest.warns(RuntimeWarning) as record:
        fit = fit_map("gamma", x * scale, prior)
    messages = " ".join(str(w.message) for w in record)
    assert "did not converge" in messages and "not identified" not in messages
    assert "Hessian at the optimum is not finite" in messages
    assert not fit.converged
    assert float(fit.params["concentration"]) == pytest.approx(
        float(ref.params["concentration"]), rel=1e-7
    )
    assert float(fit.params["rate"]) * scale == pytest.approx(
        float(ref.params["rate"]) * 1e100, rel=1e-7
    )
    assert bool(torch.isnan(fit.bse).all())


def _normal_map_with_a_prior_on_loc(x, mu0, tau):
    """The exact mode of Normal data x under a Normal(mu0, tau) prior on loc (flat on the
    scale): loc given s is the precision-weighted average, and s solves the 1-d equation
    s² = mean((x - loc(s))²), by scipy's brentq on log s."""
    from scipy import optimize

    n = len(x)

    def loc(s):
        w = (n / s**2) / (n / s**2 + 1 / tau**2)  # the data's share of the precision
        return mu0 + w * (x.mean() - mu0)

    def g(log_s):
        s = np.exp(log_s)
        return np.log(np.mean((x - loc(s)) ** 2)) / 2 - log_s

    log_s = optimize.brentq(g, np.log(x.std()) - 5, np.log(np.abs(x).max()) + 5, xtol=1e-15)
    return loc(np.exp(log_s)), np.exp(log_s)


@pytest.mark.parametrize(("seed", "tau"), [(0, 1e3), (19, 1e-3), (19, 1e-9), (11, 1e6)])
def test_normal_map_with_a_prior_far_from_the_data(seed, tau):
    """Data near 1e15 (sd 1e13) under a Normal(2.4, tau) prior on loc: the posterior is
    proper, yet the fit from the data's estimate stopped with "no MAP exists" (seed 19, tau
    1e-3), an overflow (seed 11, tau 1e6) or a scale of 1.3e284 (seed 0, tau 1e3) and 2.1e13
    (seed 19, tau 1e-9) that "did not converge". Now it starts again from the prior's mean
    and reaches the exact mode."""
    x = np.random.default_rng(seed).normal(1e15, 1e13, 50)
    loc, scale = _normal_map_with_a_prior_on_loc(x, 2.4, tau)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_map("normal", x, {"loc": Normal(_t(2.4), _t(tau))})
    assert fit.converged
    assert float(fit.params["loc"]) == pytest.approx(loc, rel=1e-12)
    assert float(fit.params["scale"]) == pytest.approx(scale, rel=1e-12)


@pytest.mark.parametrize(("seed", "tau"), [(19, 1e-3), (11, 1e6)])
def test_a_map_fit_that_steps_out_of_range_does_not_say_no_map_exists(seed, tau):
    """The same proper posterior through a callable prior (no prior mean to start from): the
    fit's steps ran to a scale of inf, where the log-posterior is -inf, and the error said it
    "heads for the edge of the parameter space ... so no MAP exists there" (seed 19, tau
    1e-3) or, where the gradient stayed finite, "overflowed ... the data are too large"
    (seed 11, tau 1e6). It now says the steps left float64's range, and init= at the
    prior's mode, as it advises, reaches the exact mode."""
    x = np.random.default_rng(seed).normal(1e15, 1e13, 50)
    prior = Normal(_t(2.4), _t(tau))

    def log_prior(loc, scale):
        return prior.log_prob(loc)

    with pytest.raises(DataError, match=r"scale: inf.*out of torch.float64's range") as err:
        fit_map("normal", x, log_prior)
    assert "does not say that no MAP exists" in str(err.value)
    assert "grows without bound" not in str(err.value)
    assert "too large" not in str(err.value)
    fit = fit_map("normal", x, log_prior, init={"loc": 2.4})
    loc, scale = _normal_map_with_a_prior_on_loc(x, 2.4, tau)
    assert fit.converged
    assert float(fit.params["loc"]) == pytest.approx(loc, rel=1e-12)
    assert float(fit.params["scale"]) == pytest.approx(scale, rel=1e-12)


_LEAVE_TORCH = {
    "numpy": lambda loc: torch.tensor(loc.numpy()),
    "item": lambda loc: torch.tensor(loc.item(), dtype=torch.float64),
    "float": lambda loc: float(loc),
    "tolist": lambda loc: torch.tensor(loc.tolist(), dtype=torch.float64),
    "detach": lambda loc: loc.detach(),
}


@pytest.mark.parametrize("how", sorted(_LEAVE_TORCH))
def test_a_callable_prior_that_leaves_torch_is_refused_by_name(how):
    """A callable prior taking a parameter out of torch let torch's raw RuntimeError through
    (numpy: "Can't call numpy() on Tensor that requires grad") or, with .item(), float(),
    .tolist() or .detach(), silently ignored the prior's gradient: the MAP was the MLE
    (loc -0.0148 where the N(0, 0.1) prior's MAP is -0.0046). Now a ParameterError names the
    prior and says to write it with torch operations; the same prior in torch gives the
    closed-form MAP."""
    x = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tau = 0.1
    cut = _LEAVE_TORCH[how]

    def log_prior(loc, scale):
        return -0.5 * cut(loc) ** 2 / tau**2

    with pytest.raises(ParameterError, match=rf"callable prior log_prior calls {how}\(\).*torch"):
        fit_map("normal", x, log_prior)

    def in_torch(loc, scale):
        return -0.5 * loc**2 / tau**2

    fit = fit_map("normal", x, in_torch)
    loc, scale = _normal_map_with_a_prior_on_loc(x.numpy(), 0.0, tau)
    assert float(fit.params["loc"]) == pytest.approx(loc, rel=1e-8)
    assert float(fit.params["scale"]) == pytest.approx(scale, rel=1e-8)


@pytest.mark.parametrize("how", ["numpy", "item"])
def test_a_prior_that_leaves_torch_is_named_by_sample_posterior_too(how):
    """The samplers reject a point where the density raises a RuntimeError; a prior that
    leaves torch raises at every point, and is named rather than rejecting them all."""
    x = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    class Prior:
        cut = staticmethod(lambda loc: loc)

        def __call__(self, loc, scale):
            return -0.5 * self.cut(loc) ** 2

    prior = Prior()
    fit = fit_map("normal", x, prior)
    prior.cut = staticmethod(_LEAVE_TORCH[how])
    with pytest.raises(ParameterError, match=r"torch operations"):
        fit.sample_posterior(
            num_chains=2,
            num_warmup=10,
            num_draws=10,
            progress_bar=False,
            generator=torch.Generator().manual_seed(1),
        )


#: The copies no call on the parameter shows (.detach() and numpy are refused as calls).
_COPIES = {k: SCALAR_COPIES[k] for k in ("torch.tensor", "torch.tensor([t])", "no_grad")}


@pytest.mark.parametrize("how", sorted(_COPIES))
def test_a_callable_prior_that_copies_a_parameter_is_refused(how):
    """A callable prior that copied loc with torch.tensor(loc), torch.tensor([loc]) or under
    torch.no_grad() was ignored: the MAP was the MLE (loc -0.0148 where the N(0, 0.1) prior's
    MAP is -0.0046) and the fit said it converged, with only torch's copy-construct warning.
    Its value follows loc while its gradient is zero: refused, naming the prior and loc."""
    x = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cut = _COPIES[how]
    prior = Normal(_t(0.0), _t(0.1))

    def log_prior(loc, scale):
        return prior.log_prob(cut(loc))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's copy-construct advice
        with pytest.raises(ParameterError, match=r"callable prior log_prior depends on 'loc'"):
            fit_map("normal", x, log_prior)


@pytest.mark.parametrize("init", [None, {"loc": 0.0}])
def test_callable_priors_in_torch_are_not_refused(init):
    """A prior in torch operations, started where its gradient is zero (loc = 0, its mode),
    gives the closed-form MAP; a prior of the scale alone, flat in loc (whose gradient in loc
    is zero everywhere), and a constant prior give the MLE."""
    x = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    prior = Normal(_t(0.0), _t(0.1))
    init = None if init is None else {**init, "scale": 1.0}
    fit = fit_map("normal", x, lambda loc, scale: prior.log_prob(loc), init=init)
    loc, scale = _normal_map_with_a_prior_on_loc(x.numpy(), 0.0, 0.1)
    assert float(fit.params["loc"]) == pytest.approx(loc, rel=1e-8)
    assert float(fit.params["scale"]) == pytest.approx(scale, rel=1e-8)
    for flat_in_loc in (lambda loc, scale: torch.tensor(-1.0), lambda loc, scale: 0.0 * scale):
        fit = fit_map("normal", x, flat_in_loc, init=init)
        assert float(fit.params["loc"]) == pytest.approx(float(x.mean()), rel=1e-8)
        assert float(fit.params["scale"]) == pytest.approx(float(x.std(correction=0)), rel=1e-8)


@pytest.mark.parametrize("how", sorted(_COPIES))
def test_a_regression_function_that_copies_a_parameter_is_refused(how):
    """fit_map_regression's h with b copied out of the graph left b at its start (0) and
    said it converged; refused, naming h and b."""
    X = torch.randn(30, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = 2.0 * X[:, 0] + 1.0
    cut = _COPIES[how]

    def h(X, w, b):
        return X @ w + cut(b)

    init = {"w": torch.zeros(1), "b": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ParameterError, match=r"regression function h depends on 'b'"):
            fit_map_regression(h, X, y, init, prior={"w": Normal(0.0, 10.0)})
