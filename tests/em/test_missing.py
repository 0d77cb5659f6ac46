"""Exact EM with NaN entries: marginal densities against scipy, conditional moments against a
row-by-row numpy computation, the complete-data path unchanged, parameter recovery."""

import warnings

import numpy as np
import pytest
import scipy.stats as st
import torch

from latentfit import GaussianMixture
from latentfit.em import missing
from latentfit.em.gaussian import (
    COVARIANCE_TYPES,
    DegenerateComponentError,
    gaussian_estep_stats,
    precision_cholesky,
)
from latentfit.em.missing import (
    gaussian_missing_estep_stats,
    gaussian_missing_hmm_stats,
    gaussian_missing_moments,
    impute_mean,
    log_gaussian_prob_missing,
)
from latentfit.errors import DegenerateComponentWarning


def _params(ct, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (k, d))
    A = rng.normal(size=(k, d, d))
    full = A @ A.transpose(0, 2, 1) + np.eye(d)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": rng.uniform(0.5, 2.0, (k, d)),
        "spherical": rng.uniform(0.5, 2.0, k),
    }[ct]
    return means, cov


def _dense(cov, ct, k, d):
    return {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([c * np.eye(d) for c in cov]),
    }[ct]()


def _data_with_gaps(n=60, d=4, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 3, (n, d))
    X[rng.uniform(size=(n, d)) < 0.3] = np.nan
    X[0] = np.nan  # nothing observed
    X[1, :] = rng.normal(size=d)  # nothing missing
    return X


@pytest.fixture(params=["by-pattern", "by-row", "mixed"])
def grouping(request):
    """Run a test with rows grouped by missingness pattern, with per-row factorisations, and
    mixed (the 3 commonest patterns that several rows share by pattern, the others row by
    row): the ``max_patterns`` argument to pass."""
    return {"by-pattern": missing.MAX_PATTERNS, "by-row": 0, "mixed": 3}[request.param]


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_marginal_log_density_equals_scipy_on_the_observed_coordinates(ct, grouping):
    means, cov = _params(ct)
    k, d = means.shape
    X = _data_with_gaps()
    got = log_gaussian_prob_missing(
        torch.as_tensor(X), torch.as_tensor(means), torch.as_tensor(cov), ct, max_patterns=grouping
    ).numpy()
    dense = _dense(cov, ct, k, d)
    for i, x in enumerate(X):
        o = ~np.isnan(x)
        for j in range(k):
            ref = (
                st.multivariate_normal(means[j, o], dense[j][np.ix_(o, o)]).logpdf(x[o])
                if o.any()
                else 0.0
            )
            np.testing.assert_allclose(got[i, j], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_moments_equal_row_by_row_conditional_expectations(ct, grouping):
    means, cov = _params(ct)
    k, d = means.shape
    X = _data_with_gaps()
    rng = np.random.default_rng(2)
    resp = rng.dirichlet(np.ones(k), len(X))
    shift = np.array([0.5, -1.0, 2.0, 0.0])
    mom = gaussian_missing_moments(
        torch.as_tensor(X),
        torch.as_tensor(resp),
        torch.as_tensor(means),
        torch.as_tensor(cov),
        ct,
        torch.as_tensor(shift),
        max_patterns=grouping,
    )
    dense = _dense(cov, ct, k, d)
    S1 = np.zeros((k, d))
    S2 = np.zeros((k, d, d))
    for i, x in enumerate(X):
        o, m = ~np.isnan(x), np.isnan(x)
        for j in range(k):
            S = dense[j]
            ex, C = x.copy(), np.zeros((d, d))
            if m.any():
                if o.any():
                    G = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)])
                    ex[m] = means[j, m] + G @ (x[o] - means[j, o])
                    C[np.ix_(m, m)] = S[np.ix_(m, m)] - G @ S[np.ix_(o, m)]
                else:
                    ex, C = means[j].copy(), S.copy()
            e = ex - shift
            S1[j] += resp[i, j] * e
            S2[j] += resp[i, j] * (np.outer(e, e) + C)
    np.testing.assert_allclose(mom.S0.numpy(), resp.sum(0), rtol=1e-12)
    np.testing.assert_allclose(mom.S1.numpy(), S1, rtol=1e-10, atol=1e-10)
    want = S2 if ct in ("full", "tied") else np.diagonal(S2, axis1=1, axis2=2)
    np.testing.assert_allclose(mom.S2.numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_on_complete_data_the_missing_estep_equals_the_ordinary_one(ct):
    means, cov = _params(ct)
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(0, 3, (80, 4)))
    w = torch.as_tensor(rng.uniform(0.5, 2, 80))
    args = (
        w,
        torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)),
        torch.as_tensor(means),
        precision_cholesky(torch.as_tensor(cov), ct),
        ct,
        torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64),
    )
    a = gaussian_estep_stats(X, *args)
    b = gaussian_missing_estep_stats(X, *args)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-10, atol=1e-10)


def _mixture_data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, -3.0]])
    cov = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.3], [0.2, 0.3, 1.0]])
    z = (rng.uniform(size=n) < 0.4).astype(int)
    X = means[z] + rng.multivariate_normal(np.zeros(3), cov, n)
    return X, z, means, cov


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_gmm_marginalize_on_complete_data_is_the_ordinary_fit(ct):
    X, *_ = _mixture_data(400)
    a = GaussianMixture(2, covariance_type=ct, random_state=0).fit(X)
    b = GaussianMixture(2, covariance_type=ct, random_state=0, missing="marginalize").fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    np.testing.assert_array_equal(a.lower_bounds_, b.lower_bounds_)


def test_gmm_recovers_parameters_with_values_missing_at_random():
    X, z, means, cov = _mixture_data()
    rng = np.random.default_rng(5)
    Xm = X.copy()
    Xm[rng.uniform(size=X.shape) < 0.25] = np.nan
    g = GaussianMixture(2, random_state=0, missing="marginalize", tol=1e-6, max_iter=300).fit(Xm)
    order = np.argsort(g.means_[:, 0])
    # ≥ 600 rows per component, a quarter of the entries missing: s.e. of a mean ≈ 0.05, of
    # a covariance entry ≈ 0.07; tolerances are about 4 s.e.
    np.testing.assert_allclose(g.means_[order], means, atol=0.2)
    np.testing.assert_allclose(g.covariances_[order], np.stack([cov, cov]), atol=0.25)
    np.testing.assert_allclose(g.weights_[order], [0.6, 0.4], atol=0.05)
    assert np.all(np.diff(g.lower_bounds_) >= -1e-10)  # EM on the observed-data likelihood
    # predict / score_samples / predict_proba on rows with gaps
    rows = Xm[:50]
    assert np.isnan(rows).any()
    pred = g.predict(rows)
    truth = np.where(order[0] == 0, z[:50], 1 - z[:50])
    assert (pred == truth).mean() > 0.9
    ll = g.score_samples(rows)
    assert np.all(np.isfinite(ll))
    np.testing.assert_allclose(g.predict_proba(rows).sum(1), 1, rtol=1e-12)
    # On a row with a gap the density is the marginal mixture density of the observed part.
    i = int(np.flatnonzero(np.isnan(rows).any(1) & ~np.isnan(rows).all(1))[0])
    o = ~np.isnan(rows[i])
    ref = np.log(
        sum(
            g.weights_[k]
            * st.multivariate_normal(g.means_[k, o], g.covariances_[k][np.ix_(o, o)]).pdf(
                rows[i, o]
            )
            for k in range(2)
        )
    )
    np.testing.assert_allclose(ll[i], ref, rtol=1e-10)


def test_missing_values_are_refused_by_default_and_inf_always():
    X, *_ = _mixture_data(50)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 3, column 1.*missing='marginalize'"):
        GaussianMixture(2).fit(X)
    X[4, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        GaussianMixture(2, missing="marginalize").fit(X)
    with pytest.raises(ValueError, match="missing must be"):
        GaussianMixture(2, missing="drop").fit(X[:3])


def test_impute_mean_only_touches_nans_and_refuses_empty_columns():
    X = torch.tensor([[1.0, float("nan")], [3.0, 4.0], [float("nan"), 8.0]], dtype=torch.float64)
    out = impute_mean(X)
    torch.testing.assert_close(
        out, torch.tensor([[1.0, 6.0], [3.0, 4.0], [2.0, 8.0]], dtype=torch.float64)
    )
    X[:, 1] = float("nan")
    with pytest.raises(ValueError, match="column 1 has no observed value"):
        impute_mean(X)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_hmm_statistics_on_complete_data_are_the_plain_sums(ct):
    means, cov = _params(ct)
    rng = np.random.default_rng(4)
    X = rng.normal(0, 3, (30, 4))
    gamma = rng.dirichlet(np.ones(3), 30)
    c = np.array([1.0, 0.0, -1.0, 2.0])
    out = gaussian_missing_hmm_stats(*(torch.as_tensor(a) for a in (X, gamma, c, means, cov)), ct)
    Xc = X - c
    np.testing.assert_allclose(out["post"].numpy(), gamma.sum(0), rtol=1e-12)
    np.testing.assert_allclose(out["obs"].numpy(), gamma.T @ Xc, rtol=1e-12)
    if ct in ("diag", "spherical"):
        np.testing.assert_allclose(out["obs2"].numpy(), gamma.T @ Xc**2, rtol=1e-12)
    elif ct == "full":
        ref = np.einsum("tk,td,te->kde", gamma, Xc, Xc)
        np.testing.assert_allclose(out["obsobs"].numpy(), ref, rtol=1e-12)
    else:
        np.testing.assert_allclose(out["obsobs"].numpy(), Xc.T @ Xc, rtol=1e-12)


def test_the_nan_message_names_only_models_that_take_missing_values():
    """The advice given for a NaN is the same for every model, so each model it names must
    really take missing='marginalize' and fit the row it refused without it."""
    import re

    import latentfit
    from latentfit._validation import as_float_tensor
    from latentfit.errors import DataError

    X = np.random.default_rng(0).normal(size=(60, 3))  # q = 2 < d for the factor models
    X[3, 1] = np.nan
    with pytest.raises(DataError, match="row 3, column 1") as err:
        as_float_tensor(X)
    message = str(err.value)
    assert "drop or impute" in message
    named = re.search(r"\(([A-Za-z, ]+)\) and pass missing='marginalize'", message).group(1)
    for name in named.split(", "):
        model = getattr(latentfit, name)(n_components=2, missing="marginalize")
        model.fit(X)  # the refused row is fitted
        assert np.isfinite(model.score(X)), name


def test_a_covariance_held_up_by_reg_covar_stays_positive_definite_with_missing_values():
    # found by the property tests: three rows in three columns of scale 1e6, one value
    # missing. covariances_ was inv(P P^T), which squares the condition number (1e17 here):
    # an eigenvalue of -503 and an asymmetry of 2e3, so score_samples failed in a Cholesky
    # factorisation, and the fit itself lowered its log-likelihood
    X = np.array(
        [
            [np.nan, 6056231.663148392, 11184700.812010072],
            [10565826.565112442, 4996622.35955561, 11589183.610614877],
            [9278589.638512133, 6589385.779490993, 11263716.291690115],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a lowered log-likelihood among them
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # three rows, three columns
        m = GaussianMixture(max_iter=15, missing="marginalize", random_state=0).fit(X)
    cov = m.covariances_[0]
    np.testing.assert_array_equal(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    assert np.isfinite(m.score_samples(X)).all()


def test_a_covariance_singular_in_working_precision_is_named():
    from latentfit.em.missing import log_gaussian_prob_missing

    cov = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)  # rank one
    X = torch.tensor([[0.5, 1.0], [np.nan, 2.0]], dtype=torch.float64)
    with pytest.raises(DegenerateComponentError, match=r"component 0 .* reg_covar"):
        log_gaussian_prob_missing(X, torch.zeros(1, 2, dtype=torch.float64), cov, "full")


def _far_rows(missing: bool) -> np.ndarray:
    """Three rows near the origin and a tight group of three at 1e8: the group's variances
    (1e-6) lie ~1e22 below its squared distance from the data's centre."""
    X = np.array(
        [
            [3.0, 1.0],
            [5.0, 2.0],
            [7.0, 1.5],
            [1e8, 1e8],
            [1e8 + 1e-3, 1e8 - 1e-3],
            [1e8 - 1e-3, 1e8 + 2e-3],
        ]
    )
    if missing:
        X[2, 1] = np.nan
    return X


def _brute_mean_log_likelihood(m, X) -> float:
    """Σ_n log Σ_k π_k N(x_n,o | μ_k,o, Σ_k,oo) / n with scipy, row by row."""
    cov = np.asarray(m.covariances_)
    total = 0.0
    for x in X:
        o = ~np.isnan(x)
        terms = []
        for k in range(m.n_components):
            ct = m.covariance_type
            C = cov if ct == "tied" else cov[k]
            C = np.diag(C) if ct == "diag" else C * np.eye(X.shape[1]) if ct == "spherical" else C
            lp = st.multivariate_normal(m.means_[k][o], C[np.ix_(o, o)]).logpdf(x[o])
            terms.append(np.log(m.weights_[k]) + lp)
        total += np.logaddexp.reduce(terms)
    return total / len(X)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_a_tight_group_far_from_the_centre_keeps_its_variance_with_missing_values(ct):
    # missing="marginalize" took every moment about the data's centre: on complete rows it
    # scored -7.1e8 a row where the ordinary fit scores 4.47 (full), all variances 0, with a
    # warning; with one value missing the same, and spherical fits started on one row
    X = _far_rows(missing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)
        a = GaussianMixture(2, covariance_type=ct, random_state=0, reg_covar=1e-9).fit(X)
        b = GaussianMixture(
            2, covariance_type=ct, random_state=0, reg_covar=1e-9, missing="marginalize"
        ).fit(X)
        Xm = _far_rows(missing=True)
        c = GaussianMixture(
            2,
            covariance_type=ct,
            random_state=0,
            reg_covar=1e-9,
            missing="marginalize",
            max_iter=500,
        ).fit(Xm)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-9, atol=0)
    assert b.score(X) == pytest.approx(a.score(X), rel=1e-12)
    assert c.score(Xm) == pytest.approx(_brute_mean_log_likelihood(c, Xm), rel=1e-8)
    far = int(np.argmax(c.means_[:, 0]))
    group = X[3:]
    if ct in ("diag", "full"):  # the group is complete: its own moments, plus reg_covar
        var = group.var(0) + 1e-9
        got = c.covariances_[far] if ct == "diag" else np.diag(c.covariances_[far])
        np.testing.assert_allclose(got, var, rtol=1e-6)
    if ct == "spherical":
        assert c.covariances_[far] == pytest.approx(group.var(0).mean() + 1e-9, rel=1e-6)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_hmm_states_far_from_the_centre_fit_with_missing_values(ct):
    # GaussianHMM(missing="marginalize") refused such data ("variance below the rounding of
    # its update"); it now fits them, on complete rows exactly as missing="error" does
    from latentfit import GaussianHMM

    rng = np.random.default_rng(0)
    z = np.repeat([0, 1, 0, 1], 10)
    X = np.where(z[:, None] == 0, rng.normal(0, 1, (40, 2)), 1e8 + rng.normal(0, 0.1, (40, 2)))
    Xm = X.copy()
    Xm[3, 1] = Xm[15, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)
        a = GaussianHMM(2, covariance_type=ct, random_state=0).fit(X)
        b = GaussianHMM(2, covariance_type=ct, random_state=0, missing="marginalize").fit(X)
        c = GaussianHMM(
            2, covariance_type=ct, random_state=0, missing="marginalize", n_iter=200
        ).fit(Xm)
    np.testing.assert_allclose(b.covars_, a.covars_, rtol=1e-9)
    assert b.score(X) == pytest.approx(a.score(X), rel=1e-12)
    np.testing.assert_array_equal(c.predict(Xm), z if c.means_[1, 0] > 1 else 1 - z)
    # the far state's variances are those of its rows (hmmlearn's update: covars_prior 1e-2)
    far = int(np.argmax(c.means_[:, 0]))
    rows = X[z == 1]
    if ct == "diag":
        n_obs = (~np.isnan(Xm[z == 1])).sum(0)
        expected = (0.01 + rows.var(0) * 20) / 20
        np.testing.assert_allclose(np.diag(c.covars_[far]), expected, rtol=0.1)
        assert n_obs.tolist() == [19, 20]
