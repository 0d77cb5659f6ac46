"""Issue 12, estimation side: priors in the data's dtype, exact supports, bounded memory and
documented errors instead of torch's."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso, Ridge
from torch.distributions import Gamma, Laplace, Normal

import latentfit._validation as V
from latentfit import fit_map, fit_mle
from latentfit.errors import DOCUMENTED_ERRORS, DataError, ParameterError, ResourceLimitError
from latentfit.estimate import fit_map_regression, lasso_prior_scale, ridge_prior_scale
from latentfit.estimate.map import prior_in_dtype

rng = np.random.default_rng(0)
counts = rng.poisson(3.0, size=41)
X = rng.normal(size=(50, 3))
y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=50)


def _linear(X, w):
    return X @ w


@pytest.mark.parametrize(("a", "b"), [(2.0, 1.0), (2.5, 0.1), (1.3, 0.7)])
def test_float_priors_give_the_exact_conjugate_mode(a, b):
    # Gamma(a, b) prior, Poisson likelihood: the posterior mode is (Σx + a − 1) / (n + b).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fit converges: no "did not converge" warning
        fit = fit_map("poisson", counts, prior={"rate": Gamma(a, b)})
    exact = (counts.sum() + a - 1) / (len(counts) + b)
    assert float(fit.params["rate"]) == pytest.approx(exact, rel=1e-12)
    assert fit.converged


def test_prior_in_dtype_recovers_typed_decimals_and_warns_on_computed_ones():
    widened = prior_in_dtype(Normal(0.0, 0.1), torch.float64)
    assert widened.scale.dtype == torch.float64 and float(widened.scale) == 0.1
    with pytest.warns(RuntimeWarning, match="float32"):
        prior_in_dtype(Normal(0.0, 1 / 3), torch.float64)


@pytest.mark.parametrize("alpha", [0.3, 2.0, 17.0])
def test_ridge_equals_scikit_learn_to_1e_9(alpha):
    prior = {"w": Normal(0.0, ridge_prior_scale(alpha))}
    fit = fit_map_regression(_linear, X, y, {"w": torch.zeros(3)}, prior=prior)
    ref = Ridge(alpha, fit_intercept=False, solver="cholesky").fit(X, y).coef_
    np.testing.assert_allclose(fit.params["w"].numpy(), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.5])
def test_lasso_equals_scikit_learn_to_1e_9(alpha):
    prior = {"w": Laplace(0.0, lasso_prior_scale(alpha, len(y)))}
    fit = fit_map_regression(_linear, X, y, {"w": torch.zeros(3)}, prior=prior)
    ref = Lasso(alpha, fit_intercept=False, tol=1e-15, max_iter=1_000_000).fit(X, y).coef_
    np.testing.assert_allclose(fit.params["w"].numpy(), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("rows", "what"),
    [([[1, 2, 2], [2, 2, 1]], "row 0"), ([[1, 2, 3], [0.5, 4, 1.5]], "row 1")],
)
def test_multinomial_rows_must_be_whole_counts_summing_to_total_count(rows, what):
    with pytest.raises(DataError, match=f"summing to 6.*{what}"):
        fit_mle("multinomial", rows, fixed={"total_count": 6})


def test_multinomial_accepts_valid_counts_with_the_closed_form():
    rows = np.array([[1, 2, 3], [0, 4, 2], [6, 0, 0]])
    fit = fit_mle("multinomial", rows, fixed={"total_count": 6})
    np.testing.assert_allclose(fit.params["probs"].numpy(), rows.sum(0) / rows.sum(), rtol=1e-15)


@pytest.mark.parametrize(
    ("family", "data", "fixed", "match"),
    [
        ("multinomial", [[1, 2, 3]], {"total_count": 5.5}, "total_count.*integer"),
        ("binomial", [1, 2, 3], {"total_count": -2}, "total_count.*integer >= 1"),
        ("binomial", [1, 2, 3], {"total_count": 3, "n": 4}, r"\['n'\]: .*no argument 'n'"),
        ("poisson", [1, 2, 3], {"scale": 1.0}, r"\['scale'\]"),
        ("categorical", [0, 1, 2], {"num_categories": 0}, "num_categories"),
        ("categorical", [0, 1, 2], {"num_categories": 2}, r"integers in \[0, 1\]"),
    ],
)
def test_fixed_arguments_are_checked(family, data, fixed, match):
    with pytest.raises((ParameterError, DataError), match=match):
        fit_mle(family, data, fixed=fixed)


@pytest.mark.parametrize(
    ("family", "data", "match"),
    [
        ("poisson", [1, 2, 2.5], "integers >= 0"),
        ("poisson", [1, -2, 2], "integers >= 0"),
        ("bernoulli", [0, 1, 2], "0 or 1"),
        ("geometric", [0.5, 1], "integers >= 0"),
        ("negbin", [1, 2.5], "integers >= 0"),
        ("gamma", [1.0, 0.0], "values > 0"),
        ("lognormal", [1.0, -1.0], "values > 0"),
        ("weibull", [1.0, 0.0], "values > 0"),
        ("exponential", [1.0, -1.0], "values >= 0"),
        ("halfnormal", [1.0, -1.0], "values >= 0"),
        ("beta", [0.5, 1.0], "open interval"),
        ("dirichlet", [[0.5, 0.6]], "open simplex"),
        ("categorical", [0, 1.5], "integers >= 0"),
    ],
)
def test_every_family_refuses_data_outside_its_support(family, data, match):
    with pytest.raises(DataError, match=match):
        fit_mle(family, data)


def test_mvn_with_fewer_rows_than_columns_or_a_constant_column_is_a_data_error():
    with pytest.raises(DataError, match="more observations than dimensions"):
        fit_mle("mvn", rng.normal(size=(3, 4)))
    Z = rng.normal(size=(30, 3))
    Z[:, 1] = 2.0
    with pytest.raises(DataError, match="column 1 of data is constant"):
        fit_mle("mvn", Z)
    Z[:, 1] = Z[:, 0] - 2 * Z[:, 2]
    with pytest.raises(DataError, match="linearly dependent"):
        fit_mle("mvn", Z)


def test_a_stray_categorical_code_is_refused_before_any_allocation():
    with pytest.raises(DataError, match=r"data\[3\] = 30000.*num_categories"):
        fit_mle("categorical", [0, 1, 2, 30000])


def test_a_covariance_too_big_for_memory_is_refused_with_its_size(monkeypatch):
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**9)
    with pytest.raises(ResourceLimitError, match=r"30000 x 30000 .*28,801,920,000 bytes"):
        fit_mle("categorical", [0, 1, 2, 30000], fixed={"num_categories": 30001})


def test_check_allocation():
    assert V.check_allocation(10, "ten bytes") == 10
    with pytest.raises(ResourceLimitError, match="a huge table would need 1,000,000,000,000"):
        V.check_allocation(10**30, "a huge table")
    with pytest.raises(MemoryError):  # ResourceLimitError is also a MemoryError
        V.check_allocation(10**30, "a huge table")


@pytest.mark.parametrize(
    "data", ["data.csv", ["a.csv", "b.csv"], [[1.0, 2.0], [3.0]], None, {"a": 1}, []]
)
@pytest.mark.parametrize("family", ["normal", "mvn", "categorical"])
def test_bad_data_is_a_documented_error(family, data):
    with pytest.raises(DOCUMENTED_ERRORS, match="data"):
        fit_mle(family, data)


@pytest.mark.parametrize(
    ("family", "data"),
    [
        ("normal", [1e300, -1e300, 5e299, 2e300]),  # the variance overflows: scale = inf
        ("exponential", [1e-320, 1e-321, 3e-321]),  # 1 / mean overflows: rate = inf
    ],
)
def test_a_non_finite_estimate_is_a_data_error(family, data):
    x = np.array(data)
    with np.errstate(over="ignore", divide="ignore"):
        # the closed-form estimate itself is not finite in float64 (numpy agrees)
        naive = np.std(x) if family == "normal" else 1 / np.mean(x)
    assert not np.isfinite(naive)
    with pytest.raises(DataError, match=r"overflowed.*rescale"):
        fit_mle(family, x)
    # the same values rescaled fit, with finite estimates
    scaled = x / (1e299 if family == "normal" else 1e-321)
    assert all(bool(torch.isfinite(v).all()) for v in fit_mle(family, scaled).params.values())


def test_a_non_finite_start_from_the_data_is_a_data_error_naming_the_overflow():
    with pytest.raises(DataError, match=r"largest \|value\| 1\.1e\+300.*rescale"):
        fit_mle("gumbel", np.array([1e300, 1.1e300, 0.9e300]))


@pytest.mark.parametrize("total_count", [float("nan"), float("inf"), -3, 2.5])
def test_a_bad_fixed_count_is_a_parameter_error(total_count):
    with pytest.raises(ParameterError, match=r"fixed\['total_count'\]"):
        fit_mle("binomial", np.array([1, 2, 0]), fixed={"total_count": total_count})


@pytest.mark.parametrize("max_iter", [float("nan"), -1, 0, "10"])
def test_max_iter_must_be_a_positive_integer(max_iter):
    with pytest.raises(ParameterError, match="max_iter"):
        fit_mle("gamma", np.array([1.0, 2.0, 3.0]), max_iter=max_iter)


def test_available_memory_knows_an_address_space_limit():
    # found by hand (a helper's hunt): under ulimit -v 4 GB a 7.2 GB sample passed the check
    # (MemAvailable said 22 GB) and ended in torch's allocator error
    import subprocess
    import sys

    code = "from latentfit._memory import available_memory; print(available_memory())"
    out = subprocess.run(
        ["bash", "-c", f"ulimit -v 4000000; {sys.executable} -c '{code}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 0 <= int(out.stdout) < 4_096_000_000
