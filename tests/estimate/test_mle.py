"""fit_mle: closed forms against the optimiser, covariances against their formulas, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import Gamma, Normal, constraints

from latentfit.errors import ParameterError
from latentfit.estimate import fit_map, fit_mle, get_family, log_density_family
from tests.gradient_copies import SCALAR_COPIES

RTOL = 1e-8  # exact algorithms in float64


def _data(name, rng):
    return {
        "normal": rng.normal(1.0, 2.0, 150),
        "lognormal": rng.lognormal(0.3, 0.7, 150),
        "exponential": rng.exponential(0.5, 150),
        "halfnormal": np.abs(rng.normal(0, 1.5, 150)),
        "poisson": rng.poisson(3.0, 150).astype(float),
        "bernoulli": rng.binomial(1, 0.3, 150).astype(float),
        "binomial": rng.binomial(10, 0.3, 150).astype(float),
        "geometric": rng.geometric(0.3, 150).astype(float) - 1,
        "categorical": rng.integers(0, 4, 150).astype(float),
        "multinomial": rng.multinomial(6, [0.2, 0.3, 0.5], 150).astype(float),
        "mvn": rng.normal(size=(150, 3)) @ np.array([[1, 0, 0], [0.5, 1, 0], [0.2, -0.3, 1.0]]),
    }[name]


FIXED = {"binomial": {"total_count": 10}, "multinomial": {"total_count": 6}}


@pytest.mark.parametrize(
    "name",
    [
        "normal",
        "lognormal",
        "exponential",
        "halfnormal",
        "poisson",
        "bernoulli",
        "binomial",
        "geometric",
        "categorical",
        "multinomial",
        "mvn",
    ],
)
def test_optimiser_reaches_the_closed_form(name, device):
    x = _data(name, np.random.default_rng(1))
    fixed = FIXED.get(name)
    closed = fit_mle(name, x, fixed=fixed, device=device)
    assert closed.solver == "closed form"
    # start the optimiser away from the answer: every parameter at a plain default
    init = {}
    for k, v in closed.params.items():
        con = get_family(name).constraints[k]
        if isinstance(con, type(constraints.simplex)):
            init[k] = torch.full_like(v, 1.0 / v.numel())
        elif v.dim() == 2:
            init[k] = torch.eye(v.shape[0], dtype=v.dtype)
        elif isinstance(con, type(constraints.unit_interval)):
            init[k] = torch.full_like(v, 0.5)
        else:
            init[k] = torch.ones_like(v) if k != "loc" else torch.zeros_like(v)
    opt = fit_mle(name, x, fixed=fixed, init=init, method="optimize", device=device)
    assert opt.solver != "closed form" and opt.converged and opt.n_iter > 0
    torch.testing.assert_close(opt.estimates, closed.estimates, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(opt.bse, closed.bse, rtol=1e-6, atol=1e-12)
    assert opt.log_likelihood == pytest.approx(closed.log_likelihood, rel=1e-12)


def test_closed_form_standard_errors():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, 400)
    fit = fit_mle("normal", x)
    mu, sd, n = x.mean(), x.std(), len(x)
    np.testing.assert_allclose(fit.estimates, [mu, sd], rtol=RTOL)
    # inverse observed information of N(μ, σ) at the MLE: diag(σ²/n, σ²/(2n))
    np.testing.assert_allclose(fit.bse, [sd / math.sqrt(n), sd / math.sqrt(2 * n)], rtol=RTOL)
    y = rng.poisson(4.0, 400)
    fit = fit_mle("poisson", y)
    np.testing.assert_allclose(fit.bse, [math.sqrt(y.mean() / len(y))], rtol=RTOL)


@pytest.mark.parametrize(
    ("name", "x"),
    [
        ("normal", np.random.default_rng(3).normal(0, 1, 200)),
        ("gamma", np.random.default_rng(3).gamma(2.5, 1.0, 200)),
        ("beta", np.random.default_rng(3).beta(2.0, 5.0, 200)),
        ("exponential", np.random.default_rng(3).exponential(2.0, 200)),
        ("poisson", np.random.default_rng(3).poisson(2.0, 200).astype(float)),
        ("geometric", np.random.default_rng(3).geometric(0.4, 200).astype(float) - 1),
        ("vonmises", np.random.default_rng(3).vonmises(0.5, 3.0, 200)),
    ],
)
def test_observed_equals_expected_information_for_exponential_families(name, x):
    # In a full-rank exponential family the observed information at the MLE equals n I(θ̂)
    # exactly, in any parametrisation; the expected one here is each family's closed form.
    fit = fit_mle(name, x)
    # torch's VonMises normaliser is a polynomial approximation of log I₀(κ) (Abramowitz &
    # Stegun 9.8.1-4, relative error ~1e-7), so its Hessian matches the exact I(κ) to ~1e-5 only
    rtol = 1e-4 if name == "vonmises" else 1e-7
    torch.testing.assert_close(
        fit.cov_params("observed"), fit.cov_params("expected"), rtol=rtol, atol=1e-14
    )


def test_sandwich_covariance_formulas():
    rng = np.random.default_rng(4)
    y = rng.poisson(3.0, 300).astype(float)
    fit = fit_mle("poisson", y, cov_type="sandwich")
    # H⁻¹BH⁻¹ for the Poisson rate: Σ(yᵢ - ȳ)² / n²
    assert float(fit.bse[0]) == pytest.approx(
        math.sqrt(((y - y.mean()) ** 2).sum()) / len(y), rel=RTOL
    )
    x = rng.standard_t(5, 300)
    fit = fit_mle("normal", x)
    n, m, s = len(x), x.mean(), x.std()
    r = x - m
    var_mu = (r**2).sum() / n**2
    var_sd = ((r**2 / s**3 - 1 / s) ** 2).sum() * s**4 / (4 * n**2)
    np.testing.assert_allclose(fit.std_errors("sandwich") ** 2, [var_mu, var_sd], rtol=RTOL)


def test_delta_method_transform():
    rng = np.random.default_rng(5)
    x = rng.exponential(0.5, 250)
    fit = fit_mle("exponential", x)
    mean = fit.transform(lambda rate: 1 / rate, "mean")
    # invariance: the MLE of 1/λ is x̄; delta method: se = se(λ̂) / λ̂² = x̄ / √n
    assert mean["mean"] == pytest.approx(x.mean(), rel=RTOL)
    assert float(mean.std_errors[0]) == pytest.approx(x.mean() / math.sqrt(len(x)), rel=RTOL)
    assert mean.conf_int(0.9).shape == (1, 2)
    two = fit_mle("gamma", rng.gamma(2.0, 1.0, 200)).transform(
        lambda concentration, rate: {"mean": concentration / rate, "var": concentration / rate**2}
    )
    assert two.names == ["mean", "var"] and two.cov.shape == (2, 2)
    assert "mean" in two.summary()


def test_mvn_matches_numpy_and_reports_the_lower_triangle():
    x = _data("mvn", np.random.default_rng(6))
    fit = fit_mle("mvn", x)
    np.testing.assert_allclose(fit.params["loc"], x.mean(0), rtol=RTOL)
    np.testing.assert_allclose(fit.params["covariance_matrix"], np.cov(x.T, bias=True), rtol=RTOL)
    assert fit.n_params == 3 + 6 and len(fit.param_names) == 9
    assert "covariance_matrix[2,1]" in fit.param_names
    # the variance of a sample-variance MLE is 2σ⁴/n: check the (0, 0) entry
    s00 = float(fit.params["covariance_matrix"][0, 0])
    se = dict(zip(fit.param_names, fit.bse.tolist(), strict=True))["covariance_matrix[0,0]"]
    assert se == pytest.approx(math.sqrt(2 * s00**2 / len(x)), rel=1e-8)


def test_custom_log_density_matches_the_family():
    x = np.random.default_rng(7).gamma(3.0, 0.5, 200)
    ref = fit_mle("gamma", x)
    fit = fit_mle(
        lambda x, a, b: torch.distributions.Gamma(a, b).log_prob(x),
        x,
        init={"a": 1.0, "b": 1.0},
        constraints={"a": constraints.positive, "b": constraints.positive},
    )
    torch.testing.assert_close(fit.estimates, ref.estimates, rtol=RTOL, atol=0)
    torch.testing.assert_close(fit.bse, ref.bse, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        fit.std_errors("sandwich"), ref.std_errors("sandwich"), rtol=1e-6, atol=0
    )


def test_aic_bic_and_summary():
    x = np.random.default_rng(8).gamma(2.0, 1.5, 120)
    fit = fit_mle("gamma", x)
    from scipy import stats

    a, b = fit.params["concentration"].item(), fit.params["rate"].item()
    ll = stats.gamma.logpdf(x, a, scale=1 / b).sum()
    assert fit.log_likelihood == pytest.approx(ll, rel=1e-12)
    assert fit.aic == pytest.approx(4 - 2 * ll, rel=1e-12)
    assert fit.bic == pytest.approx(math.log(120) * 2 - 2 * ll, rel=1e-12)
    text = fit.summary()
    for piece in ["MLE results: Gamma", "concentration", "rate", "std err", "[0.025", "AIC"]:
        assert piece in text
    assert f"{a:.4f}" in text
    ci = fit.conf_int()
    np.testing.assert_allclose(ci[:, 1] - ci[:, 0], 2 * 1.959963984540054 * fit.bse, rtol=1e-12)


def test_singular_hessian_gives_nan_for_the_unidentified_parameters_only():
    x = np.random.default_rng(9).normal(1.0, 2.0, 100)
    with pytest.warns(RuntimeWarning, match=r"\['a', 'b'\] not identified"):
        fit = fit_mle(
            lambda x, a, b, s: Normal(a + b, s).log_prob(x),
            x,
            init={"a": 0.0, "b": 0.0, "s": 1.0},
            constraints={"s": constraints.positive},
        )
    se = fit.bse
    assert torch.isnan(se[:2]).all()
    # s is identified: its standard error is the Normal one, σ̂/√(2n)
    assert float(se[2]) == pytest.approx(x.std() / math.sqrt(200), rel=1e-7)
    # a + b is identified although a and b are not: its standard error is that of a mean
    total = fit.transform(lambda a, b, s: a + b)
    assert total["g"] == pytest.approx(x.mean(), rel=1e-8)
    assert float(total.std_errors[0]) == pytest.approx(x.std() / math.sqrt(100), rel=1e-7)
    assert torch.isnan(fit.transform(lambda a, b, s: a - b).std_errors).all()
    assert "nan" in fit.summary()


@pytest.mark.parametrize(
    ("name", "data", "fixed", "match"),
    [
        ("gamma", [1.0, 2.0, -0.5, 3.0, -1.0], None, r"data\[2\] = -0.5"),
        ("gamma", [1.0, 0.0], None, r"data\[1\] = 0.0"),
        ("poisson", [1, 2, 2.5, 3], None, r"integers >= 0.*data\[2\] = 2.5"),
        ("binomial", [1, 2, 11], {"total_count": 10}, r"\[0, 10\].*data\[2\] = 11"),
        ("beta", [0.3, 1.0], None, r"data\[1\] = 1.0"),
        ("dirichlet", [[0.2, 0.8], [0.5, 0.6]], None, r"row 1 = \[0.5, 0.6\]"),
        ("binomial", [1, 2], None, r"needs fixed=\{'total_count'"),
        ("normal", [[1.0, 2.0], [3.0, 4.0]], None, "one value per observation"),
        ("mvn", [1.0, 2.0], None, "2-D array"),
        ("normal", [1.0, float("nan")], None, "entry 1"),
        ("zipf", [1.0], None, "unknown family 'zipf'"),
    ],
)
def test_bad_input_is_named(name, data, fixed, match):
    with pytest.raises(ValueError, match=match):
        fit_mle(name, data, fixed=fixed)


def test_boundary_estimate_warns_with_nan_standard_errors():
    with pytest.warns(RuntimeWarning, match="boundary"):
        fit = fit_mle("bernoulli", [1.0, 1.0, 1.0])
    assert float(fit.params["probs"]) == 1.0 and torch.isnan(fit.bse).all()


def test_other_errors():
    with pytest.raises(ValueError, match="init="):
        fit_mle(lambda x, m: Normal(m, 1.0).log_prob(x), [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        fit_mle("gamma", [1.0, 2.0, 3.0], init={"concentration": -1.0})
    with pytest.raises(ValueError, match="expected information"):
        fit_mle("studentt", np.random.default_rng(0).standard_t(3, 50)).cov_params("expected")
    with pytest.raises(ValueError, match="no closed-form"):
        fit_mle("gamma", [1.0, 2.0, 3.0], method="closed_form")
    with pytest.raises(ValueError, match="one value per observation"):
        log_density_family(lambda x, m: Normal(m, 1.0).log_prob(x).sum(), {"m": 0.0}).log_prob(
            {"m": torch.tensor(0.0)}, torch.zeros(3), {}
        )


def test_float32_and_family_aliases():
    x = np.random.default_rng(10).normal(size=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = fit_mle("Gaussian", x, dtype="float32")
    assert a.estimates.dtype == torch.float32
    assert fit_mle(torch.distributions.Normal, x).family is get_family("normal")


@pytest.mark.parametrize("scale", [1e-5, 1e5, 1e8, 1e150, 1e-150])
def test_a_start_far_off_in_large_units_reaches_the_closed_form(scale):
    """From loc = 3 scale, scale = 5 scale (1.5 sd off), data in units of 1e8 give a gradient
    in the location of 1e-9, below the absolute gtol of 1e-8: L-BFGS moved only the scale and
    the fit stopped at loc = 3e8 (the mean is 9.3e7) with converged=True and a "singular
    Hessian" warning. L-BFGS now works in units of unit curvature and convergence is judged
    relative to the objective's size and curvature (optimize.relative_gradient). In units of
    1e±150 the Hessian of the log scale (scale⁻⁴ on the way) came out 0 or NaN and the fit
    warned "did not converge"; it now runs on the data over the start's scale."""
    x = np.random.default_rng(0).normal(1.0, 2.0, 300) * scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle("normal", x, init={"loc": 3 * scale, "scale": 5 * scale})
    assert fit.converged
    assert float(fit.params["loc"]) == pytest.approx(x.mean(), rel=RTOL)
    assert float(fit.params["scale"]) == pytest.approx(x.std(), rel=RTOL)
    # σ/√n and σ/√(2n): the closed-form standard errors of the Normal MLE
    np.testing.assert_allclose(fit.bse, [x.std() / 300**0.5, x.std() / 600**0.5], rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1e60, 1e150])
def test_a_location_in_large_units_is_not_stationary_until_it_is(scale):
    """A Cauchy location of your own with the scale fixed, in units of 1e60: after one
    iteration the fit stood at loc = -3.7 units (the MLE is 0.975) and said converged, with
    no warning, where the same fit in units of 1 warns. max |gradient| <= 1e-14 counted as
    stationary whatever the distance, and the gradient of a location in units of 1e60 is
    1e-60 per unit. Run to the end, the fit is the root of the score equation (scipy's brentq
    on the unit-scale data, times the units)."""
    from scipy import optimize
    from torch.distributions import Cauchy

    x = 1 + 2 * np.random.default_rng(0).standard_cauchy(200)
    family = log_density_family(
        lambda x, loc, scale: Cauchy(loc, scale).log_prob(x), {"loc": -30.0}
    )
    kw = {"init": {"loc": -30 * scale}, "fixed": {"scale": 2 * scale}}
    with pytest.warns(RuntimeWarning, match="did not converge after 1 iterations"):
        early = fit_mle(family, x * scale, max_iter=1, **kw)
    assert not early.converged
    assert float(early.params["loc"]) / scale == pytest.approx(-3.676, rel=1e-3)

    def score(loc):  # d/dloc of the Cauchy log-likelihood, scale 2
        r = x - loc
        return (2 * r / (4 + r * r)).sum()

    root = optimize.brentq(score, 0.5, 1.5, xtol=1e-15, rtol=1e-15)
    fit = fit_mle(family, x * scale, **kw)
    assert fit.converged
    assert float(fit.params["loc"]) == pytest.approx(root * scale, rel=RTOL)


@pytest.mark.parametrize("shift", [1e10, -1e12])
@pytest.mark.parametrize("family", ["normal", "studentt", "cauchy", "gumbel"])
def test_location_scale_data_far_from_zero(family, shift):
    """Data of spread 2 around 1e10 warned "did not converge" (relative gradient 1e-7 to
    3e-7; 1e-4 around 1e13) at the answer: over their spread they are 5e9 + N(0, 1), whose
    deviations keep 6 digits, and the gradient's rounding stayed above gtol. They are now
    centred at the start's location first, and from a start at 0 (not centred, 5e9 spreads
    off: "did not converge" after 78 iterations) standardised again where the first pass
    stopped. Compared with scipy's BFGS on the deviations
    (exact: x + shift - shift is x's rounding to the grid of the shift), the location to the
    rounding of the shift, and the standard errors with the fit of those deviations."""
    from scipy import optimize, stats

    rng = np.random.default_rng(0)
    x = {
        "normal": rng.normal(1.0, 2.0, 200),
        "studentt": 1.0 + 2.0 * rng.standard_t(5, 200),
        "cauchy": 1.0 + 2.0 * rng.standard_cauchy(200),
        "gumbel": rng.gumbel(1.0, 2.0, 200),
    }[family]
    dist = {"normal": stats.norm, "studentt": stats.t, "cauchy": stats.cauchy}
    dist = dist.get(family, stats.gumbel_r)
    xs = x + shift
    dev = xs - shift
    k = int(family == "studentt")  # a shape (df) first

    def nll(v):  # ([log df], loc, log scale) on the deviations
        return -dist.logpdf(dev, *np.exp(v[:k]), v[k], np.exp(v[k + 1])).sum()

    v = optimize.minimize(nll, [np.log(5.0)] * k + [0.0, 0.0], method="BFGS").x
    ref = [*np.exp(v[:k]), v[k] + shift, np.exp(v[k + 1])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle(family, xs, method="optimize")
        unshifted = fit_mle(family, dev, method="optimize")
    assert fit.converged
    est = [float(p) for p in fit.params.values()]
    # scipy's BFGS stops at a gradient of 1e-5 on a sum of 200 terms: about 1e-7 relative
    np.testing.assert_allclose(est[:k] + est[k + 1 :], ref[:k] + ref[k + 1 :], rtol=1e-6)
    grid = abs(np.spacing(shift))  # 1.9e-6 and 1.2e-4: the data's own rounding
    assert est[k] == pytest.approx(ref[k], abs=4 * grid)
    # the observed information at a location a grid step (up to 6e-5 scales) away
    np.testing.assert_allclose(fit.bse, unshifted.bse, rtol=1e-5)
    if shift < 0:
        return  # a Gumbel density at 5e11 spreads below its location overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        far = fit_mle(family, xs, init={"loc": 0.0})  # 5e9 spreads off: centred at 0
    assert far.converged
    np.testing.assert_allclose(far.estimates, fit.estimates, rtol=1e-7, atol=4 * grid)


@pytest.mark.parametrize("shift", [1e10, -1e12])
def test_mvn_data_far_from_zero_reach_the_closed_form(shift):
    """MVN columns around 1e10 and -1e12 with spreads of 1 stopped 'did not converge'
    (relative gradient 1e-5) when optimised; centred first, the fit is the closed form to
    the data's rounding."""
    x = np.random.default_rng(0).normal(size=(200, 2)) @ np.array([[1.0, 0.0], [0.5, 1.0]])
    xs = x + np.array([shift, -shift])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle("mvn", xs, method="optimize")
    assert fit.converged
    grid = abs(np.spacing(shift))  # the data's own rounding; xs.mean(0) holds some too
    np.testing.assert_allclose(fit.params["loc"], xs.mean(0), rtol=0, atol=4 * grid)
    # at the fitted loc, a few grid steps (1e-4) from the mean: Σ = mean((x - loc)(x - loc)ᵀ),
    # which differs from the closed form's by that offset squared (1e-7 relative)
    dev = xs - fit.params["loc"].numpy()
    np.testing.assert_allclose(fit.params["covariance_matrix"], dev.T @ dev / 200, rtol=1e-8)


@pytest.mark.parametrize("scale", [1e-5, 1e5])
def test_student_t_in_small_or_large_units_matches_scipy(scale):
    """From a start 1.5 sd off in units of 1e5, L-BFGS ran the StudentT df to 1.4e16 and
    warned "did not converge". Compared with scipy's BFGS on the data in unit scale, whose
    answer scales with the data (df unchanged)."""
    from scipy import optimize, stats

    x = np.random.default_rng(1).standard_t(5, 300) + 1.0

    def nll(v):  # (log df, loc, log scale) on the unit-scale data
        return -stats.t.logpdf(x, np.exp(v[0]), v[1], np.exp(v[2])).sum()

    ref = optimize.minimize(nll, [np.log(3.0), 0.0, 0.0], method="BFGS", options={"gtol": 1e-9})
    df, loc, s = np.exp(ref.x[0]), ref.x[1], np.exp(ref.x[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle("studentt", x * scale, init={"df": 3.0, "loc": 3 * scale, "scale": 5 * scale})
    assert fit.converged
    # scipy's BFGS stops at a gradient of 1e-9 on a sum of 300 terms: about 1e-7 relative
    assert float(fit.params["df"]) == pytest.approx(df, rel=1e-6)
    assert float(fit.params["loc"]) == pytest.approx(loc * scale, rel=1e-6)
    assert float(fit.params["scale"]) == pytest.approx(s * scale, rel=1e-6)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
@pytest.mark.parametrize("family", ["studentt", "cauchy"])
def test_standard_errors_whose_squares_leave_float64(family, scale):
    """StudentT and Cauchy data in units of 1e-200 got a standard error of 0 for loc and
    scale, and in units of 1e200 NaN, silently: the fit and its information are computed on
    the data over their spread, and carried back as diag(s) Σ diag(s), whose entries (1e-400,
    1e400) leave float64. The covariance now keeps s apart and the delta method takes
    standard deviations, never their squares: the standard errors are the unit-scale fit's
    times s (and df's unchanged)."""
    rng = np.random.default_rng(0)
    x = 1.0 + 2.0 * (rng.standard_t(5, 200) if family == "studentt" else rng.standard_cauchy(200))
    ref = fit_mle(family, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle(family, x * scale)
    units = np.array([1.0, scale, scale] if family == "studentt" else [scale, scale])
    np.testing.assert_allclose(fit.estimates.numpy() / units, ref.estimates, rtol=1e-12)
    np.testing.assert_allclose(fit.bse.numpy() / units, ref.bse, rtol=1e-12)
    # a variance beyond float64's range is NaN in the covariance, not 0 or inf
    assert bool(torch.isnan(fit.cov_params().diagonal()[-1]))


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e160, 1e300])
@pytest.mark.parametrize("family", ["exponential", "gamma", "weibull"])
def test_rate_and_scale_families_in_extreme_units(family, scale):
    """Exponential data in units of 1e160 had NaN standard errors with a warning that the
    rate was "not identified" (1e-250: 7e6 times too large, silently), Weibull data in
    units of 1e-160 "did not converge" (gradient inf), and Gamma data in units of 1e±300
    were refused (their method-of-moments start was NaN): in the data's units autograd's
    Hessian passes through 1 / rate² or 1 / scale², out of float64's range. They are now
    fitted on the data times the rate (over the scale), and the Gamma's start uses moments
    of the data over their mean. Compared with scipy at unit scale (the Exponential's
    closed form 1 / mean), times the units; standard errors with the unit-scale fit's."""
    from scipy import optimize, stats

    rng = np.random.default_rng(0)
    x = {
        "exponential": rng.exponential(0.7, 200),
        "gamma": rng.gamma(2.5, 1 / 1.7, 200),
        "weibull": 1.3 * rng.weibull(1.8, 200),
    }[family]
    if family == "exponential":
        ref, units = [1 / x.mean()], [1 / scale]
    elif family == "gamma":
        a, _, b = stats.gamma.fit(x, floc=0)
        ref, units = [a, 1 / b], [1.0, 1 / scale]
    else:  # the profile score of k, solved by brentq (weibull_min.fit stops 2e-5 off)

        def score(k):
            w = x**k
            return 1 / k + np.log(x).mean() - (w * np.log(x)).sum() / w.sum()

        k = optimize.brentq(score, 0.5, 5.0, xtol=1e-15, rtol=1e-15)
        ref, units = [(x**k).mean() ** (1 / k), k], [scale, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle(family, x * scale)
    assert fit.converged
    # scipy's Gamma fit solves log a - digamma(a) = log mean - mean log to about 1e-8
    np.testing.assert_allclose(fit.estimates.numpy() / units, ref, rtol=1e-7)
    np.testing.assert_allclose(fit.bse.numpy() / units, fit_mle(family, x).bse, rtol=1e-10)


@pytest.mark.parametrize("scale", [1e-150, 1.0, 1e150])
def test_a_standardised_fit_that_does_not_converge_does_not_blame_the_units(scale):
    """A StudentT fitted to Normal data runs df toward infinity and does not converge, in
    any units. In units of 1e150 the warning added "the data's magnitudes are far from 1,
    where the fit's curvatures leave float64: standardise the data", which is not why: the
    StudentT is fitted on the data over their spread already."""
    x = np.random.default_rng(0).normal(1.0, 2.0, 200) * scale
    with pytest.warns(RuntimeWarning, match="did not converge") as record:
        fit_mle("studentt", x)
    assert not any("standardise" in str(w.message) for w in record)


def test_normal_standard_errors_in_units_of_1e_minus_160():
    """Normal data in units of 1e-160 have variances of 1e-320, subnormal in float64 (5
    digits): the standard errors were 5e-3 off σ/√n and σ/√(2n). Now exact."""
    x = np.random.default_rng(0).normal(1.0, 2.0, 200) * 1e-160
    fit = fit_mle("normal", x, method="optimize")
    sd = (x * 1e160).std() * 1e-160  # numpy's x.std() squares subnormals too (2e-5 off)
    np.testing.assert_allclose(fit.bse, [sd / 200**0.5, sd / 400**0.5], rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-150, 1e-5, 1e150])
def test_mvn_standard_errors_whatever_the_units_of_a_column(scale):
    """A column of scale 1e-150 beside one of scale 1: the Hessian's entries span 1e302,
    autograd's intermediate terms overflowed to inf and NaN, and every standard error was
    NaN with a warning that nothing was identified. It is now computed on the columns over
    their standard deviations (Family.standardize) and carried back exactly; the standard
    error of the variance of that column, 1e-301, is right although its square (1e-602) is
    0 in float64, and at scale 1e150 (1e299, whose square overflows) it was NaN silently.
    Compared with the closed forms at the MLE, where the observed information is the
    expected one: Var(μ̂ᵢ) = Σᵢᵢ / n, Var(Σ̂ᵢⱼ) = (ΣᵢᵢΣⱼⱼ + Σᵢⱼ²) / n."""
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 2)) @ np.array([[1.0, 0.0], [0.5, 1.0]]) * np.array([1.0, scale])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle("mvn", x)
    cov = np.cov(x.T, bias=True)
    se = dict(zip(fit.param_names, fit.bse.tolist(), strict=True))
    sd = x.std(0)
    assert [se["loc[0]"], se["loc[1]"]] == pytest.approx(sd / np.sqrt(n), rel=1e-12)
    for i, j in [(0, 0), (1, 0), (1, 1)]:
        # Σᵢᵢ Σⱼⱼ / n as (sdᵢ sdⱼ)² / n: its square root without squaring 1e300
        closed = sd[i] * sd[j] * np.sqrt((1 + (cov[i, j] / (sd[i] * sd[j])) ** 2) / n)
        assert se[f"covariance_matrix[{i},{j}]"] == pytest.approx(closed, rel=1e-10)
    lo, hi = fit.conf_int()[1].tolist()  # loc[1]: x̄ ± 1.96 sd / √n
    assert (hi - lo) / 2 == pytest.approx(1.959963984540054 * sd[1] / np.sqrt(n), rel=1e-10)
    cov_params = fit.cov_params().numpy()
    # the variance of Σ̂₁₁ is out of float64's range at 1e±150: NaN there, not 0 or inf
    assert np.isnan(cov_params[4, 4]) == (scale != 1e-5)
    assert cov_params[1, 1] == pytest.approx(cov[1, 1] / n, rel=1e-12)


@pytest.mark.parametrize("family", ["normal", "halfnormal"])
@pytest.mark.parametrize("scale", [1e-100, 1e100])
def test_normal_standard_errors_whatever_the_units(family, scale):
    """Data of scale 1e-100 put scale⁴ = 1e-400 in the Normal's second derivatives, which
    autograd's Hessian underflowed: NaN standard errors and a warning that loc and scale were
    not identified. At 1e100 the Normal scale's standard error came out 5.6e106 instead of
    7.1e98, silently. Closed forms: σ/√n, σ/√(2n)."""
    x = np.random.default_rng(2).normal(1.0, 2.0, 400) * scale
    if family == "halfnormal":
        x = np.abs(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mle(family, x)
    n, sd = len(x), float(fit.params["scale"])
    expected = (
        [sd / math.sqrt(2 * n)]
        if family == "halfnormal"
        else [sd / math.sqrt(n), sd / math.sqrt(2 * n)]
    )
    np.testing.assert_allclose(fit.bse, expected, rtol=1e-12)


@pytest.mark.parametrize("family", ["normal", "student_t", "lognormal", "poisson", "weibull"])
def test_float32_optimised_fits_converge_at_the_float64_answer(family):
    # float32 fits stopped at relative gradients of 1e-8 to 3e-5 and warned "did not
    # converge", where the objective resolves no better than sqrt(2 eps) = 4.9e-4; they were
    # at the float64 answer to within 1e-3 standard errors
    x = np.random.default_rng(0).normal(3, 2, 500)
    if family == "poisson":
        x = np.round(np.abs(x))
    elif family in ("lognormal", "weibull"):
        x = np.abs(x)
    r64 = fit_mle(family, x, method="optimize")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r32 = fit_mle(family, x.astype(np.float32), dtype="float32", method="optimize")
    se = r64.std_errors().numpy()
    off = np.abs(r32.estimates.double().numpy() - r64.estimates.numpy()) / se
    # a relative gradient r leaves a coordinate up to about r sqrt(n F) standard errors from
    # the optimum: 4.9e-4 sqrt(500 x 2) = 0.015 in float32, which the StudentT's flat df
    # direction reaches (1.2e-2 here; 3e-4 to 1.2e-2 over seeds 0-11, where 2e-3 held by luck)
    assert r32.converged and off.max() < 2e-2


_COPIES = SCALAR_COPIES


@pytest.mark.parametrize("how", sorted(_COPIES))
def test_a_log_density_that_copies_a_parameter_is_refused(how):
    """A log-density of one's own that copied loc out of torch's graph left loc at its start
    (1.0, the data's mean -0.0148), inflated the scale to 1.4577 and said it converged. Its
    value follows loc while its gradient is zero: refused, naming the log-density and loc. The
    same density in torch gives the closed-form MLE (mean, sd with ddof 0)."""
    x = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cut = _COPIES[how]
    init = {"loc": 1.0, "scale": 1.0}
    cons = {"scale": constraints.positive}

    def copied(x, loc, scale):
        return Normal(cut(loc), scale).log_prob(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's copy-construct advice
        with pytest.raises(ParameterError, match=r"your log-density depends on 'loc'"):
            fit_mle(copied, x, init=init, constraints=cons)
        with pytest.raises(ParameterError, match=r"your log-density depends on 'loc'"):
            fit_map(copied, x, {"scale": Gamma(2.0, 1.0)}, init=init, constraints=cons)

    fit = fit_mle(
        lambda x, loc, scale: Normal(loc, scale).log_prob(x), x, init=init, constraints=cons
    )
    assert float(fit.params["loc"]) == pytest.approx(float(x.mean()), rel=1e-8)
    assert float(fit.params["scale"]) == pytest.approx(float(x.std(correction=0)), rel=1e-8)


@pytest.mark.parametrize("how", sorted(_COPIES))
def test_a_transform_that_copies_a_parameter_is_refused(how):
    """g computing from a copy of a parameter had a Jacobian of zero: the delta method gave
    the mean 1/rate of exponential data a standard error of 0 (x̄ / √n = 0.0316 by the
    closed form). Refused, naming g and rate; the same g in torch gives x̄ / √n."""
    rng = np.random.default_rng(5)
    x = rng.exponential(0.5, 250)
    fit = fit_mle("exponential", x)
    cut = _COPIES[how]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's copy-construct advice
        with pytest.raises(ParameterError, match=r"g depends on 'rate' outside torch's graph"):
            fit.transform(lambda rate: 1 / cut(rate), "mean")
        with pytest.raises(ParameterError, match=r"g depends on 'rate'"):  # one of a dict's
            fit.transform(lambda rate: {"mean": 1 / rate, "var": 1 / cut(rate) ** 2})
    mean = fit.transform(lambda rate: 1 / rate, "mean")
    assert float(mean.std_errors[0]) == pytest.approx(x.mean() / math.sqrt(len(x)), rel=RTOL)
