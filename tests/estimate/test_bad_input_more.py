"""Bad input to fit_mle / fit_map / summary and ``latentfit fit dist``: each is refused with a
latentfit error that names the argument, never a raw torch/numpy/Python exception."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.stats
import torch
import torch.distributions as D
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from latentfit.cli import app
from latentfit.errors import ArgumentError, DataError, ParameterError, ResourceLimitError
from latentfit.estimate import fit_map, fit_map_regression, fit_mle
from latentfit.estimate.distributions import InverseWishart

runner = CliRunner()

X = torch.tensor([1.0, 2.0, 3.0, 1.5, 2.5], dtype=torch.float64)
COUNTS = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
MVN = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _t(v):
    return torch.tensor(v, dtype=torch.float64)


# ---------------------------------------------------------------------- fixed counts
@pytest.mark.parametrize("count", [1e300, 10**400, 2**53 + 1])
def test_a_count_beyond_float64_integers_is_refused(count):
    with pytest.raises(ParameterError, match=r"total_count.*too large.*2\*\*53"):
        fit_mle("binomial", COUNTS, fixed={"total_count": count})
    with pytest.raises(ParameterError, match=r"total_count.*too large"):
        fit_mle("multinomial", torch.tensor([[1.0, 2.0], [0.0, 3.0]]), fixed={"total_count": count})


def test_a_numpy_count_is_a_count():
    fit = fit_mle("binomial", COUNTS, fixed={"total_count": np.int64(5)})
    assert float(fit.params["probs"]) == pytest.approx(1.0 / 5)


def test_a_huge_number_of_categories_is_refused_before_allocating():
    with pytest.raises(ResourceLimitError, match="Categorical over 10,000,000,000 categories"):
        fit_mle("categorical", COUNTS, fixed={"num_categories": 10**10})


def test_fixed_must_be_a_dict():
    with pytest.raises(ParameterError, match="fixed must be a dict"):
        fit_mle("gamma", X, fixed=[1])


# ---------------------------------------------------------------------- init
@pytest.mark.parametrize(
    ("init", "needle"),
    [
        (5, "init must be a dict"),
        ({"rate": "a"}, r"init\['rate'\] must be a number"),
        ({"rate": torch.ones(3)}, r"init\['rate'\] has shape \(3,\).*single number"),
        ({"rate": -1.0}, "outside the support of Gamma's rate"),
        ({"rate": float("nan")}, r"init\['rate'\] holds NaN"),
        ({"rate": float("inf")}, r"init\['rate'\]"),
        ({"foo": 1.0}, "init names 'foo'"),
    ],
)
def test_init_is_checked(init, needle):
    with pytest.raises(ParameterError, match=needle):
        fit_mle("gamma", X, init=init)


def test_init_is_checked_for_map_and_a_log_density_of_your_own():
    with pytest.raises(ParameterError, match=r"init\['loc'\] must be a number"):
        fit_map("normal", X, {"loc": D.Laplace(_t(0.0), _t(1.0))}, init={"loc": "a"})
    with pytest.raises(ParameterError, match="init must be a dict"):
        fit_mle(lambda x, rate: D.Exponential(rate).log_prob(x), X, init=5)
    with pytest.raises(ParameterError, match="outside the support"):
        fit_mle(
            lambda x, rate: D.Exponential(rate).log_prob(x),
            X,
            init={"rate": -1.0},
            constraints={"rate": D.constraints.positive},
        )
    with pytest.raises(ParameterError, match="init must be a dict"):
        fit_map_regression(lambda X, w: X @ w, MVN, MVN[:, 0], 5)


def test_a_good_init_still_fits():
    fit = fit_mle("gamma", X, init={"rate": 1.0, "concentration": np.float64(2.0)})
    ref = fit_mle("gamma", X)
    assert float(fit.params["rate"]) == pytest.approx(float(ref.params["rate"]), rel=1e-5)


# ---------------------------------------------------------------------- priors
@pytest.mark.parametrize(
    ("family", "data", "prior", "needle"),
    [
        ("gamma", X, {"rate": D.Uniform(_t(5.0), _t(6.0))}, r"covers values in \[5, 6\]"),
        ("gamma", X, {"rate": D.Poisson(_t(3.0))}, "whole numbers"),
        (
            "gamma",
            X,
            {"rate": D.MultivariateNormal(torch.zeros(2), torch.eye(2))},
            r"shape \(2,\).*single number",
        ),
        ("gamma", X, {"rate": D.Gamma(torch.ones(3), torch.ones(3))}, r"batch_shape \(3,\)"),
        ("mvn", MVN, {"covariance_matrix": D.Gamma(_t(1.0), _t(1.0))}, "any real value"),
        (
            "mvn",
            MVN,
            {"covariance_matrix": InverseWishart(_t(5.0), torch.eye(3, dtype=torch.float64))},
            r"\(3, 3\).*\(2, 2\)",
        ),
        ("mvn", MVN, {"loc": D.Normal(torch.zeros(3), 1.0)}, r"batch_shape \(3,\)"),
    ],
)
def test_a_prior_that_does_not_fit_its_parameter_is_refused(family, data, prior, needle):
    with pytest.raises(ParameterError, match=needle):
        fit_map(family, data, prior)


def test_priors_that_fit_still_fit():
    fit = fit_map(
        "mvn",
        MVN,
        {"covariance_matrix": InverseWishart(_t(5.0), torch.eye(2, dtype=torch.float64))},
    )
    assert bool(torch.isfinite(fit.params["covariance_matrix"]).all())
    fit = fit_map("mvn", MVN, {"loc": D.Normal(torch.zeros(2, dtype=torch.float64), _t(1.0))})
    assert fit.params["loc"].shape == (2,)


def test_a_callable_prior_of_the_wrong_signature_is_named():
    with pytest.raises(ParameterError, match=r"log_prior\(concentration=\.\.\., rate=\.\.\.\)"):
        fit_map("gamma", X, lambda p: 0.0)
    with pytest.raises(ParameterError, match="must return a number"):
        fit_map("gamma", X, lambda **p: "a")
    with pytest.raises(ParameterError, match="one number"):
        fit_map("gamma", X, lambda **p: torch.zeros(3))
    # the right signatures fit; a flat callable prior gives the MLE
    flat = fit_map("gamma", X, lambda **p: 0.0)
    mle = fit_mle("gamma", X, method="optimize")
    assert float(flat.params["rate"]) == pytest.approx(float(mle.params["rate"]), rel=1e-5)
    fit_map("gamma", X, lambda concentration, rate: D.Gamma(_t(2.0), _t(1.0)).log_prob(rate))


# ---------------------------------------------------------------------- level, scalars
@pytest.mark.parametrize("level", ["a", float("nan"), 0, 1, True, None])
def test_a_bad_level_is_named(level):
    fit = fit_mle("normal", X)
    with pytest.raises(ParameterError, match="level must lie strictly between 0 and 1"):
        fit.summary(level=level)
    if level is not None:  # conf_int's None is its default (0.95), as statsmodels' alpha's
        with pytest.raises(ParameterError, match="level"):
            fit.conf_int(level)
        with pytest.raises(ParameterError, match="level"):
            fit.conf_int(alpha=level)


def test_statsmodels_names_and_alpha_give_the_same_numbers():
    fit = fit_mle("gamma", np.abs(X) + 0.1)
    assert fit.llf == fit.log_likelihood and fit.nobs == fit.n_obs and fit.df_model == 2
    z = fit.estimates / fit.std_errors()
    torch.testing.assert_close(fit.tvalues, z)
    # the two-sided normal p-value, against scipy
    want = 2 * scipy.stats.norm.sf(np.abs(z.numpy()))
    np.testing.assert_allclose(fit.pvalues.numpy(), want, rtol=1e-12)
    torch.testing.assert_close(fit.conf_int(alpha=0.1), fit.conf_int(0.9))
    torch.testing.assert_close(fit.conf_int(), fit.conf_int(alpha=0.05))
    with pytest.raises(ParameterError, match="give level= or alpha=, not both"):
        fit.conf_int(0.9, alpha=0.1)
    # statsmodels' conf_int(0.05) means alpha: computed as asked, with a warning that says so
    with pytest.warns(UserWarning, match=r"pass alpha=0.05 \(or level=0.95\)"):
        narrow = fit.conf_int(0.05)
    assert bool((narrow[:, 1] - narrow[:, 0] < fit.conf_int()[:, 1] - fit.conf_int()[:, 0]).all())


def test_a_scalar_is_one_observation_whatever_its_type():
    fits = [fit_mle("poisson", v) for v in (2.0, np.float64(2.0), torch.tensor(2.0))]
    assert all(float(f.params["rate"]) == 2.0 and f.n_obs == 1 for f in fits)


# ---------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def ints_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "ints.csv"
    path.write_text("n\n3\n3\n1\n2\n")
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-f", "binomial", "--fixed", "total_count=1e300"], "too large"),
        (["-f", "binomial", "--fixed", f"total_count={10**400}"], "too large"),
        (["-f", "categorical", "--fixed", "num_categories=10000000000"], "would need"),
        (["-f", "normal", "--sample", "nuts"], "--sample needs a prior.*flat prior"),
    ],
)
def test_fit_dist_refuses(ints_csv, args, needle):
    res = runner.invoke(app, ["fit", "dist", str(ints_csv), *args])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert re.search(needle, " ".join(res.output.split())), res.output


@pytest.mark.parametrize("family", ["halfnormal", "normal", "exponential"])
def test_values_whose_squares_underflow_are_named_not_fitted_to_nan(family):
    # found by the property tests: one value of 3e-300 gave HalfNormal scale = 0 (its square
    # underflowed) and a log-likelihood of nan, returned without an error
    x = (
        np.array([3.35146044e-300, 4e-300, 5e-300])
        if family != "halfnormal"
        else np.array([3.35e-300])
    )
    try:
        fit = fit_mle(family, x)
    except DataError as err:
        assert "too small or too large" in str(err) or "rescale" in str(err)
    else:
        assert np.isfinite(fit.log_likelihood)


def test_a_matrix_parameter_the_optimiser_once_broke_now_reaches_the_mode():
    # found by the property tests: MAP of an MVN on values near 1e7 with a N(0, 10) prior on
    # the mean; a line-search step reached a covariance whose Cholesky factor failed (a
    # DataError said so). The line search now backs off such steps and finds the joint mode:
    # loc = Σx / (n + Σ/100) and Σ = mean((x - loc)²), solved here by fixed point.
    X = np.array([[10733551.22262001], [10092981.73230585]])
    res = fit_map("mvn", X, {"loc": D.Normal(0.0, 10.0)})
    loc, cov = 0.0, float(np.mean(X**2))
    for _ in range(100):
        loc = float(X.sum()) / (2 + cov / 100.0)
        cov = float(np.mean((X - loc) ** 2))
    assert res.converged
    assert float(res.params["loc"][0]) == pytest.approx(loc, rel=1e-6)
    assert float(res.params["covariance_matrix"][0, 0]) == pytest.approx(cov, rel=1e-9)


def test_a_step_the_prior_s_argument_check_refuses_is_backed_off():
    # found by the property tests: L-BFGS's line search stepped to a Weibull concentration
    # whose log-density overflowed; the cubic interpolation on 1e300 gave NaN, and the Normal
    # prior's argument check raised torch's ValueError. The MAP is checked against scipy's
    # optimiser on the same negative log-posterior, from another start.
    from scipy import optimize, stats

    x = np.array([1.0, 2.0, 3.0])
    res = fit_map("weibull", x, {"concentration": D.Normal(100.0, 1.0)})

    def nlp(v):
        scale, c = np.exp(v)
        return -(stats.weibull_min.logpdf(x, c, scale=scale).sum() + stats.norm.logpdf(c, 100, 1))

    ref = optimize.minimize(
        nlp,
        np.log([3.0, 90.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 20000},
    )
    assert res.converged
    assert float(res.params["concentration"]) == pytest.approx(np.exp(ref.x[1]), rel=1e-6)
    assert float(res.params["scale"]) == pytest.approx(np.exp(ref.x[0]), rel=1e-6)


def test_a_student_t_whose_chi2_check_refused_a_nan_df_says_no_map_exists():
    # found by the property tests: ties in the data send the scale to 0 (the likelihood is
    # unbounded); a step gave df NaN and torch's Chi2 check raised ValueError. Later L-BFGS
    # stalled at a scale of 1e-16 and warned "did not converge"; in units of unit curvature
    # it follows the scale to the edge, and the error says that no MAP exists there
    with pytest.raises(DataError, match=r"scale of 0.*grows without bound.*no MAP exists"):
        fit_map("studentt", np.array([1.0, 1.0, 1.0, 5.0]), {"df": D.Normal(0.0, 1.0)})


def test_an_mvn_whose_covariance_overflows_names_the_column():
    # found by the property tests: a value of 1e300 made the covariance inf, its correlation
    # NaN, and torch's eigh raised _LinAlgError at the command line
    data = np.array(
        [[1e300, -3.3, 1.8], [-1.8, -2.9, 0.56], [-0.2, -3.2, 1.49], [0.93, -1.6, 1.67]]
    )
    data = np.vstack([data, [1.89, -3.34, 2.16]])
    with pytest.raises(DataError, match=r"overflows.*column 0.*1e\+300.*rescale"):
        fit_mle("mvn", data)


@pytest.mark.parametrize("family", ["poisson", "geometric", "negative_binomial"])
def test_a_count_beyond_2_to_the_53_is_named(family):
    with pytest.raises(DataError, match=r"data\[1\] = 1e\+300 is a count at or beyond 2\^53"):
        fit_mle(family, np.array([1.0, 1e300, 3.0]))


def test_an_empty_prior_says_the_map_is_the_mle():
    # found by hand (a helper's hunt): {} was refused as "prior must be a dict"
    with pytest.raises(ParameterError, match=r"prior is empty.*use fit_mle"):
        fit_map("normal", X, {})


# ---------------------------------------------------------------------- data with no MLE
@pytest.mark.parametrize(
    "family, data, param",
    [
        ("normal", [1.5] * 4, "scale -> 0"),
        ("lognormal", [1.5] * 4, "scale -> 0"),
        ("gamma", [1.5] * 4, "concentration -> ∞"),
        ("weibull", [1.5] * 4, "concentration -> ∞"),
        ("studentt", [1.5] * 4, "scale -> 0"),
        ("cauchy", [1.5] * 4, "scale -> 0"),
        ("gumbel", [1.5] * 4, "scale -> 0"),
        ("beta", [0.3] * 4, "concentration1 and concentration0 -> ∞"),
        ("halfnormal", [0.0] * 4, "scale -> 0"),
        ("exponential", [0.0] * 4, "rate -> ∞"),
        ("dirichlet", [[0.2, 0.8]] * 3, "concentration -> ∞"),
    ],
)
def test_data_that_do_not_vary_have_no_mle_and_say_so(family, data, param):
    # found by hand: vonmises "converged" to a concentration of 2e16, normal said "rescale the
    # data", gamma and weibull "pass init=", on four copies of 1.5
    with pytest.raises(DataError, match=rf"every row of data is the same.*{re.escape(param)}"):
        fit_mle(family, _t(data))


def test_angles_the_same_on_the_circle_have_no_vonmises_mle():
    with pytest.raises(DataError, match=r"same on the circle.*concentration -> ∞"):
        fit_mle("vonmises", _t([1.5, 1.5 + 2 * np.pi, 1.5 - 2 * np.pi]))
    fit_mle("vonmises", _t([1.5, 1.6, 1.4]))  # they vary: fitted


def test_counts_that_are_not_overdispersed_have_no_negative_binomial_mle():
    with pytest.raises(DataError, match=r"not overdispersed.*Poisson"):
        fit_mle("negbin", _t([2.0, 3.0, 2.0, 3.0]))
    fit = fit_mle("negbin", _t([0.0, 5.0, 1.0, 7.0]))  # overdispersed: fitted
    assert np.isfinite(fit.params["total_count"].item())


def test_a_map_on_constant_data_exists_where_the_prior_stops_the_scale():
    # an inverse-gamma(a, b) prior on the scale of four copies of 1.5: the mode is b/(n+a+1)
    fit = fit_map("normal", _t([1.5] * 4), {"scale": D.InverseGamma(_t(2.0), _t(1.0))})
    assert fit.params["scale"].item() == pytest.approx(1 / 7, rel=1e-6)
    assert fit.params["loc"].item() == pytest.approx(1.5)
    # a half-normal or a gamma(2) does not vanish fast enough at 0: no MAP, said so
    for prior in (D.HalfNormal(_t(1.0)), D.Gamma(_t(2.0), _t(1.0))):
        with pytest.raises(DataError, match=r"MLE does not exist|no MAP exists"):
            fit_map("normal", _t([1.5] * 4), {"scale": prior})


@pytest.mark.parametrize(
    "family, data, prior, mode",
    [
        # Beta(a, b) prior, k ones in n: the posterior's mode is (a - 1 + k) / (a + b - 2 + n)
        ("bernoulli", [0.0] * 10, {"probs": D.Beta(_t(2.0), _t(2.0))}, 1 / 12),
        ("bernoulli", [1.0] * 10, {"probs": D.Beta(_t(2.0), _t(2.0))}, 11 / 12),
        # Gamma(a, b) prior, counts summing to s: the mode is (a - 1 + s) / (b + n)
        ("poisson", [0.0] * 10, {"rate": D.Gamma(_t(2.0), _t(1.0))}, 1 / 11),
    ],
)
def test_a_map_from_data_on_the_edge_of_the_support_finds_the_prior_mode(family, data, prior, mode):
    # the data's estimate, a probability of 0 (a logit of -708, where the gradient vanishes),
    # took one step to +590 and "converged" at probs=1; a rate of 0 was refused as "starting
    # values ... not finite"
    fit = fit_map(family, _t(data), prior)
    assert fit.converged
    assert fit.params[next(iter(prior))].item() == pytest.approx(mode, rel=1e-6)


def test_a_start_outside_a_callable_prior_support_blames_the_prior():
    # the data's mean, 2.25, lies outside Uniform(2.9, 3.6): said "the Poisson starting values
    # {rate: 2.25} computed from the data are not finite", and with init={"rate": 1.0} "give
    # a non-finite Poisson log-likelihood"; both are finite, the prior is 0 there
    x = torch.poisson(
        torch.full((20,), 3.0, dtype=torch.float64), generator=torch.Generator().manual_seed(3)
    )
    prior = lambda rate: D.Uniform(2.9, 3.6, validate_args=False).log_prob(rate)
    for init in (None, {"rate": 1.0}):
        with pytest.raises(ParameterError, match=r"prior's log-density .* is -inf.*support"):
            fit_map("poisson", x, prior, init=init)
    fit = fit_map("poisson", x, prior, init={"rate": 3.0})
    assert 2.9 < fit.params["rate"].item() < 3.6


def test_fit_dist_with_a_prior_on_data_on_the_edge_of_the_support(tmp_path):
    # said "--prior probs=beta:2,2: its log-density at the starting value probs = 0 ... is
    # -inf: its numbers are too extreme for float64 arithmetic"
    path = tmp_path / "b.csv"
    path.write_text("x\n" + "0\n" * 10)
    res = runner.invoke(
        app, ["fit", "dist", str(path), "-f", "bernoulli", "--prior", "probs=beta:2,2"]
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"probs\s+0\.0833", res.output)


def test_fit_dist_takes_init_and_max_iter_and_says_so_in_its_hints(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("x\n1.5\n1.5\n1.5\n1.5\n")
    res = runner.invoke(app, ["fit", "dist", str(path), "--family", "normal"])
    assert (
        res.exit_code != 0 and "add a --prior on it" in res.output and "Traceback" not in res.output
    )
    res = runner.invoke(
        app, ["fit", "dist", str(path), "-f", "normal", "--prior", "scale=inversegamma:2,1"]
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"scale\s+0\.1429", res.output)
    big = tmp_path / "big.csv"
    big.write_text("x\n1e300\n2e300\n3e300\n")
    res = runner.invoke(app, ["fit", "dist", str(big), "--family", "gumbel"])
    assert res.exit_code != 0 and "--init NAME=NUMBER" in res.output and "init=" not in res.output
    faithful = ["fit", "dist", "--dataset", "faithful", "-c", "eruptions"]
    res = runner.invoke(app, [*faithful, "-f", "studentt", "--max-iter", "2"])
    assert "a larger --max-iter" in res.output and "max_iter" not in res.output
    res = runner.invoke(app, [*faithful, "-f", "gamma", "--init", "concentration=3", "--json"])
    assert res.exit_code == 0, res.output
    for args, message in [
        (["--init", "nu=2"], "Gamma has no parameter 'nu'"),
        (["--init", "rate"], "--init takes NAME=NUMBER"),
        (["--init", "rate=x"], "is not a number"),
        (["--init", "rate=inf"], "finite"),
        (["--init", "rate=1", "--init", "rate=2"], "both set rate"),
        (["--init", "rate=-1"], "outside the support"),
    ]:
        res = runner.invoke(app, [*faithful, "-f", "gamma", *args])
        assert res.exit_code != 0 and message in res.output, (args, res.output)


@pytest.mark.parametrize(
    "prior, message",
    [
        (D.HalfNormal(torch.tensor(float("nan")), validate_args=False), r"its scale is not finite"),
        (
            D.HalfNormal(torch.tensor(-1.0), validate_args=False),
            r"its scale \(\[-1.0\]\) lies outside",
        ),
        (
            D.Gamma(torch.tensor(2.0), torch.tensor(-1.0), validate_args=False),
            r"its rate .* outside",
        ),
    ],
)
def test_a_prior_made_without_validation_is_checked_by_its_numbers(prior, message):
    # found by a helper's hunt: the fit blamed "the starting values computed from the data"
    with pytest.raises(ParameterError, match=r"prior\['scale'\] = \w+: " + message):
        fit_map("normal", X, {"scale": prior})


def test_mvn_data_too_small_for_their_squares_are_refused_by_name():
    # found by the property tests: rows 7.3e-301 and 9.3e-302 raised torch's LinAlgError
    X = np.array([[7.33551223e-301, 1.0], [9.29817323e-302, 2.0], [1e-301, 0.5]])
    with pytest.raises(DataError, match=r"column 0 of data spans only 6.41e-301.*multiply"):
        fit_mle("mvn", X)


def test_a_result_looked_up_by_an_unknown_name_lists_the_names_it_holds():
    """fit["nope"] raised Python's own TypeError (not subscriptable) and a transform's
    ["nope"] a bare ValueError from list.index; both now raise UnknownNameError (a KeyError)
    listing their names, as the MCMC results do, and a known name gives its estimate."""
    from latentfit.errors import UnknownNameError

    x = np.random.default_rng(0).normal(3.0, 2.0, size=50)
    fit = fit_mle("normal", x)
    assert float(fit["loc"]) == pytest.approx(x.mean(), rel=1e-8)  # the closed-form MLE
    assert float(fit["scale"]) == pytest.approx(x.std(), rel=1e-6)
    for key in ("nope", 0):
        with pytest.raises(
            UnknownNameError, match=r"no parameter .*its parameters are 'loc', 'scale'"
        ):
            fit[key]
    with pytest.raises(KeyError):
        fit["nope"]
    cv = fit.transform(lambda loc, scale: scale / loc, "cv")
    assert cv["cv"] == pytest.approx(x.std() / x.mean(), rel=1e-6)
    with pytest.raises(UnknownNameError, match=r"no quantity 'nope'; its quantities are 'cv'"):
        cv["nope"]
    binomial = fit_mle("binomial", np.array([3, 4, 5]), fixed={"total_count": 10})
    with pytest.raises(UnknownNameError, match=r"'total_count' is fixed at 10"):
        binomial["total_count"]


# ---------------------------------------------------------------------- argument order
def test_swapped_or_missing_arguments_say_the_order_the_function_takes():
    # fit_mle(data, family="gamma") was Python's "got multiple values for argument 'family'".
    with pytest.raises(ArgumentError, match=r"fit_mle\(\) got family twice: as argument 1 "):
        fit_mle(X, family="gamma")
    with pytest.raises(TypeError, match=r"fit_mle\(family, data, \.\.\.\) in that order"):
        fit_mle(X, family="gamma")  # still a TypeError for code that catches one
    with pytest.raises(ArgumentError, match=r"fit_mle\(\) needs data: .*fit_mle\('gamma', data\)"):
        fit_mle("gamma")
    with pytest.raises(ArgumentError, match=r"fit_map\(\) needs prior: it takes fit_map\(family, "):
        fit_map("gamma", X)
    with pytest.raises(ArgumentError, match=r"fit_map\(\) got family twice"):
        fit_map(X, {"rate": D.Gamma(2.0, 1.0)}, family="gamma")
    with pytest.raises(ArgumentError, match="unexpected keyword argument 'fixd'"):
        fit_mle("binomial", COUNTS, fixd={"total_count": 3})
    with pytest.raises(ArgumentError, match=r"fit_map_regression\(\) needs init"):
        fit_map_regression(lambda X, w: X * w, X, X)


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(["family", "data", "prior"]),
    n_positional=st.integers(0, 3),
    keyword=st.sets(st.sampled_from(["family", "data", "prior"])),
)
def test_any_way_of_passing_the_arguments_binds_or_is_an_argument_error(
    order, n_positional, keyword
):
    """fit_map with its three arguments given in any order, positionally or by keyword, some
    twice or not at all: either the call binds as Python would bind it, or ArgumentError says
    the order; never Python's bare TypeError (oracle: inspect.Signature.bind)."""
    import inspect

    values = {"family": "normal", "data": X, "prior": {"loc": D.Normal(0.0, 10.0)}}
    args = [values[name] for name in order[:n_positional]]
    kwargs = {name: values[name] for name in keyword}
    try:
        inspect.signature(fit_map).bind(*args, **kwargs)
        binds = True
    except TypeError:
        binds = False
    try:
        fit_map(*args, **kwargs)
    except ArgumentError as err:
        assert not binds, err
        assert "it takes fit_map(family, data, prior, ...) in that order" in str(err)
    except (DataError, ParameterError):
        assert binds  # the arguments bound but in the wrong places: said by the checks


def test_transform_of_something_not_a_function_is_refused():
    # fit.transform(3) was Python's "'int' object is not callable" from inside the delta method.
    fit = fit_mle("normal", X)
    with pytest.raises(ParameterError, match=r"g must be a function of the parameters \(loc, sc"):
        fit.transform(3)
    se = fit.transform(lambda loc, scale: loc, "mean").std_errors  # a function still works
    np.testing.assert_allclose(se, fit.std_errors()[:1], rtol=1e-12)
