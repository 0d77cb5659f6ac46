"""FactorAnalysis and PPCA by EM: the Tipping & Bishop closed form, scikit-learn's
FactorAnalysis likelihood, exact posteriors, missing values."""

import warnings

import numpy as np
import pytest
import scipy.stats as st
import torch
from sklearn.decomposition import PCA as SkPCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis
from sklearn.exceptions import ConvergenceWarning

import latentfit
from latentfit import PPCA, FactorAnalysis
from latentfit.em.driver import EMMonotonicityWarning, NonFiniteLowerBoundError
from latentfit.em.factor import factor_estep_stats, factor_posterior
from latentfit.errors import HeywoodCaseWarning, ParameterError


def _data(n=500, d=6, q=2, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, q)) * 1.5
    noise = rng.uniform(0.3, 1.2, d)
    X = rng.normal(size=(n, q)) @ W.T + rng.normal(size=(n, d)) * np.sqrt(noise) + 5.0
    return X, W, noise


def _ppca_closed_form(X, q):
    """Tipping & Bishop (1999), eqs. 7–8: σ² = mean discarded eigenvalue, C = W Wᵀ + σ² I."""
    S = np.cov(X.T, bias=True)
    lam, U = np.linalg.eigh(S)
    lam, U = lam[::-1], U[:, ::-1]
    s2 = lam[q:].mean()
    C = U[:, :q] @ np.diag(lam[:q] - s2) @ U[:, :q].T + s2 * np.eye(X.shape[1])
    return s2, C


def test_ppca_em_reaches_the_closed_form_mle():
    X, _, _ = _data()
    m = PPCA(2, init="random", tol=1e-13, max_iter=3000, random_state=0).fit(X)
    s2, C = _ppca_closed_form(X, 2)
    ref_ll = st.multivariate_normal(X.mean(0), C).logpdf(X).mean()
    # EM converges linearly; at tol 1e-13 the log-likelihood is within rounding of the maximum
    # and, being quadratic at the maximum, leaves the parameters within ~1e-6.
    np.testing.assert_allclose(m.score(X), ref_ll, rtol=1e-11)
    np.testing.assert_allclose(m.noise_variance_, s2, rtol=1e-6)
    np.testing.assert_allclose(m.get_covariance(), C, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.mean_, X.mean(0), rtol=1e-10)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-12)
    # The default start is that closed form: EM confirms it at once.
    fast = PPCA(2, tol=1e-10).fit(X)
    assert fast.n_iter_ <= 3
    np.testing.assert_allclose(fast.score(X), ref_ll, rtol=1e-12)


def test_factor_analysis_reaches_sklearn_likelihood():
    X, _, _ = _data()
    ours = FactorAnalysis(2, tol=1e-10, max_iter=5000, random_state=0).fit(X)
    ref = SkFactorAnalysis(2, tol=1e-10, max_iter=5000).fit(X)
    # Both maximise the same likelihood; scikit-learn stops on a change in the total
    # log-likelihood below 1e-10, so 1e-8 relative is the comparable precision.
    np.testing.assert_allclose(ours.score(X), ref.score(X), rtol=1e-8)
    # EM converges linearly: a last step below 1e-10 can leave ~100× that to the maximum.
    assert ours.score(X) >= ref.score(X) - 1e-8
    # The likelihood is flat near its maximum: a 1e-10 change in it leaves the parameters (and
    # so the per-sample densities) free at the ~1e-5 level.
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-4)
    np.testing.assert_allclose(ours.get_covariance(), ref.get_covariance(), rtol=1e-3, atol=1e-3)
    assert ours.components_.shape == (2, 6) and ours.noise_variance_.shape == (6,)
    assert np.all(np.diff(ours.lower_bounds_) >= -1e-12)


def test_posterior_and_density_against_the_joint_gaussian():
    X, W, noise = _data(50)
    mu = X.mean(0)
    post = factor_posterior(
        torch.as_tensor(X), torch.as_tensor(W), torch.as_tensor(mu), torch.as_tensor(noise)
    )
    C = W @ W.T + np.diag(noise)
    beta = W.T @ np.linalg.inv(C)  # E[z | x] = Wᵀ C⁻¹ (x − μ)
    np.testing.assert_allclose(post.mean.numpy(), (X - mu) @ beta.T, rtol=1e-10)
    np.testing.assert_allclose(post.cov.numpy(), np.eye(2) - beta @ W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        post.loglik.numpy(), st.multivariate_normal(mu, C).logpdf(X), rtol=1e-10
    )


def test_missing_path_equals_complete_path_on_complete_data_and_brute_force_with_gaps():
    X, W, noise = _data(40)
    args = (torch.as_tensor(W), torch.as_tensor(X.mean(0)), torch.as_tensor(noise))
    w = torch.as_tensor(np.random.default_rng(0).uniform(0.5, 2, 40))
    Xt = torch.as_tensor(X)
    full = factor_estep_stats(Xt, w, *args)
    # Force the per-row (missing-data) path with one NaN in an extra row of zero weight.
    Xn = torch.cat([Xt, torch.full((1, 6), float("nan"), dtype=torch.float64)])
    per_row = factor_estep_stats(Xn, torch.cat([w, torch.zeros(1, dtype=torch.float64)]), *args)
    for key in full:
        torch.testing.assert_close(per_row[key], full[key], rtol=1e-10, atol=1e-10)
    # With gaps: the statistics are expectations under the joint Gaussian of (x, z) given x_o.
    Xg = X.copy()
    Xg[np.random.default_rng(1).uniform(size=X.shape) < 0.3] = np.nan
    got = factor_estep_stats(torch.as_tensor(Xg), w, *args)
    mu = X.mean(0)
    d, q = W.shape
    J = np.block([[W @ W.T + np.diag(noise), W], [W.T, np.eye(q)]])  # Cov of (x, z)
    ref = dict(
        Se=np.zeros(d), See=np.zeros(d), Sez=np.zeros((d, q)), Szz=np.zeros((q, q)), loglik=0.0
    )
    A = np.c_[np.eye(d), -W]  # u = x − μ − W z = A (x − μ, z)
    for i, x in enumerate(Xg):
        o = np.r_[~np.isnan(x), np.zeros(q, bool)]
        u = ~o
        G = J[np.ix_(u, o)] @ np.linalg.inv(J[np.ix_(o, o)])
        r = x[o[:d]] - mu[o[:d]]
        mean = np.zeros(d + q)
        mean[o] = r
        mean[u] = G @ r
        cov = np.zeros((d + q, d + q))
        cov[np.ix_(u, u)] = J[np.ix_(u, u)] - G @ J[np.ix_(o, u)]
        E2 = np.outer(mean, mean) + cov  # E[(x − μ, z)(x − μ, z)ᵀ | x_o]
        wi = float(w[i])
        ref["Se"] += wi * A @ mean
        ref["See"] += wi * np.diag(A @ E2 @ A.T)
        ref["Sez"] += wi * A @ E2[:, d:]
        ref["Szz"] += wi * E2[d:, d:]
        ref["loglik"] += wi * st.multivariate_normal(np.zeros(o.sum()), J[np.ix_(o, o)]).logpdf(r)
    for key, val in ref.items():
        np.testing.assert_allclose(got[key].numpy(), val, rtol=1e-9, atol=1e-9, err_msg=key)


def test_missing_values_fit_transform_and_score():
    X, _, _ = _data(1000, seed=2)
    Xm = X.copy()
    Xm[np.random.default_rng(3).uniform(size=X.shape) < 0.2] = np.nan
    complete = FactorAnalysis(2, random_state=0, tol=1e-6, max_iter=500).fit(X)
    gaps = FactorAnalysis(2, random_state=0, tol=1e-6, max_iter=500, missing="marginalize").fit(Xm)
    # A fifth of the entries missing at random: the covariance estimate moves by a few
    # standard errors (s.e. of a covariance entry ≈ 0.05–0.15 here), never by more than 0.5.
    np.testing.assert_allclose(gaps.get_covariance(), complete.get_covariance(), atol=0.5)
    np.testing.assert_allclose(gaps.mean_, complete.mean_, atol=0.15)
    assert np.all(np.diff(gaps.lower_bounds_) >= -1e-10)
    Z = gaps.transform(Xm[:20])
    assert Z.shape == (20, 2) and np.all(np.isfinite(Z))
    ll = gaps.score_samples(Xm[:20])
    i = int(np.flatnonzero(np.isnan(Xm[:20]).any(1))[0])
    o = ~np.isnan(Xm[i])
    C = gaps.get_covariance()
    np.testing.assert_allclose(
        ll[i], st.multivariate_normal(gaps.mean_[o], C[np.ix_(o, o)]).logpdf(Xm[i, o]), rtol=1e-10
    )
    same = FactorAnalysis(2, random_state=0, missing="marginalize").fit(X)
    ref = FactorAnalysis(2, random_state=0).fit(X)
    np.testing.assert_array_equal(same.components_, ref.components_)
    with pytest.raises(ValueError, match="missing='marginalize'"):
        FactorAnalysis(2).fit(Xm)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=5
@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_a_column_observed_in_one_row_is_refused_by_name(cls):
    # FactorAnalysis fitted column 3, observed in row 0 only, a noise variance of 1.9e-12 (the
    # floor) and scored -4.72 nats a row against -4.95 with it observed in 2 rows, silently
    X, _, _ = _data(50, d=4, q=1)
    X[1:, 3] = np.nan
    with pytest.raises(latentfit.errors.DataError, match=r"column 3 is observed in 1 \(row 0\)"):
        cls(1, missing="marginalize").fit(X)
    w = np.ones(50)
    X[1, 3] = 7.0
    w[0] = 0.0  # a row of weight 0 observes nothing
    with pytest.raises(latentfit.errors.DataError, match=r"column 3 is observed in 1 \(row 1\)"):
        cls(1, missing="marginalize").fit(X, sample_weight=w)
    fitted = cls(1, missing="marginalize", max_iter=5).fit(X)  # two values: a fit
    assert np.all(np.isfinite(fitted.noise_variance_))


def test_sample_save_load_and_bad_input(tmp_path, device):
    X, _, _ = _data(400)
    m = PPCA(2, random_state=0, device=device, tol=1e-8).fit(X)
    S = m.sample(20000)
    # 20000 draws: the sample covariance's entries have s.e. ≈ |C| · sqrt(2/20000) ≈ 1%.
    np.testing.assert_allclose(
        np.cov(S.T), m.get_covariance(), atol=0.06 * np.abs(m.get_covariance()).max()
    )
    m2 = latentfit.load(m.save(tmp_path / "ppca.lf"))
    np.testing.assert_array_equal(m2.transform(X), m.transform(X))
    assert isinstance(m2.noise_variance_, float)
    n = len(X)
    assert np.isclose(m.bic(X), -2 * m.score(X) * n + (6 * 2 - 1 + 6 + 1) * np.log(n))
    with pytest.raises(ValueError, match="at most n_features"):
        FactorAnalysis(7).fit(X)
    with pytest.raises(ValueError, match="expecting 6 features"):
        m.transform(X[:, :2])


@pytest.mark.parametrize("isotropic", [False, True])
def test_moment_em_is_one_em_iteration_of_the_rows(isotropic):
    """One EM iteration from the rows' covariance equals the E-step statistics of the rows
    regressed on [z, 1] when μ is their (weighted) mean: the moments are sufficient."""
    from latentfit.em.factor import factor_moment_em, factor_mstep

    X, _, _ = _data(n=300, d=5)
    rng = np.random.default_rng(1)
    Xt, w = torch.as_tensor(X), torch.as_tensor(rng.uniform(0.5, 2.0, len(X)))
    mu = (w @ Xt) / w.sum()
    W = torch.as_tensor(rng.normal(size=(5, 2)))
    psi = torch.as_tensor(rng.uniform(0.5, 1.5, 5))
    stats = factor_estep_stats(Xt, w, W, mu, psi)
    W_ref, mu_ref, psi_ref = factor_mstep(stats, W, mu, isotropic, 0.0)
    R = Xt - mu
    C = (R.T * w) @ R / w.sum()
    W_new, psi_new = factor_moment_em(C, W, psi, isotropic, 0.0)
    np.testing.assert_allclose(W_new, W_ref, rtol=1e-10)
    np.testing.assert_allclose(psi_new, psi_ref, rtol=1e-10)
    np.testing.assert_allclose(mu_ref, mu, rtol=1e-12)


def _iris_epochs(model, epochs=40, batch=15, gaps=False):
    from sklearn.datasets import load_iris

    X = load_iris().data.copy()
    if gaps:  # about 10% of the entries missing, no row empty
        hole = np.random.default_rng(1).uniform(size=X.shape) < 0.1
        hole[hole.all(1)] = False
        X[hole] = np.nan
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for i in range(0, len(X), batch):
            model.partial_fit(X[order[i : i + batch]])
    return X, model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0 on purpose
def test_partial_fit_reaches_the_batch_optimum_on_iris():
    """40 epochs of 15-row mini-batches: stepwise EM on the rows' moments ends within 1 nat
    (total log-likelihood of the 150 rows) of the maximum, as the mixtures' partial_fit does.
    (Averaging the complete-data statistics under stale parameters stopped 12.4 nats short for
    PPCA and 22.5 for factor analysis.)"""
    X, ppca = _iris_epochs(PPCA(2))
    n, d = X.shape
    # Tipping & Bishop (1999) eq. 15 at their closed-form maximum.
    lam = np.linalg.eigvalsh(np.cov(X.T, bias=True))[::-1]
    s2 = lam[2:].mean()
    best = -0.5 * n * (d * np.log(2 * np.pi) + np.log(lam[:2]).sum() + (d - 2) * np.log(s2) + d)
    ll = ppca.score(X) * n
    assert best - 1 < ll <= best + 1e-9
    X, fa = _iris_epochs(FactorAnalysis(2))
    # Batch EM crawls here (one noise variance heads for zero): at 2000 iterations it is
    # ~0.07 nat below the supremum, so the bound is 1 nat of that fit.
    batch = FactorAnalysis(2, tol=0, max_iter=2000).fit(X)
    assert fa.score(X) * n > batch.score(X) * n - 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0 on purpose
@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_partial_fit_with_missing_values_reaches_the_batch_optimum(cls):
    """The same with 10% of iris missing (missing="marginalize"): rows with gaps enter with
    their expected moments. Averaging the complete-data statistics stopped 12.0 (PPCA) and
    22.0 (FA) nats below the batch fit."""
    X, online = _iris_epochs(cls(2, missing="marginalize"), gaps=True)
    # Batch EM on the same data: PPCA converges; FA crawls (1000 iterations leave it ~0.1 nat
    # below the value at 3000).
    kw = dict(tol=1e-12, max_iter=5000) if cls is PPCA else dict(tol=0, max_iter=1000)
    batch = cls(2, missing="marginalize", **kw).fit(X)
    n = len(X)
    assert online.score(X) * n > batch.score(X) * n - 1


# ------------------------------------------------------------------ data the arithmetic cannot hold
@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize(
    ("dtype", "scale"), [("float64", 1e160), ("float64", 1e200), ("float32", 1e30)]
)
def test_partial_fit_refuses_data_that_overflows_and_keeps_the_model(cls, dtype, scale, tmp_path):
    X = np.random.default_rng(0).normal(size=(100, 3))
    m = cls(2, dtype=dtype, random_state=0).fit(X)
    before = {k: np.copy(v) for k, v in vars(m).items() if k.endswith("_")}
    with pytest.raises(latentfit.errors.DataError, match=r"overflow.*standardise the columns"):
        m.partial_fit(X * scale)
    for k, v in before.items():  # nothing changed, nothing NaN
        np.testing.assert_array_equal(getattr(m, k), v)
    assert np.isfinite(m.score(X))
    assert np.isfinite(m.sample(2)).all()
    latentfit.load(m.save(tmp_path / "m.lfm"))


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_a_partial_fit_update_that_overflows_is_refused_and_leaves_the_model(cls):
    """A batch of small spread far from the fitted mean passes the batch's own check; its
    update overflows, is refused as the driver refuses such an iteration, and is not kept."""
    X = np.random.default_rng(0).normal(size=(100, 3))
    m = cls(2, random_state=0).fit(X)
    W, score = m.components_.copy(), m.score(X)
    with pytest.raises(NonFiniteLowerBoundError, match="keeps its parameters"):
        m.partial_fit(X + 1e155)
    np.testing.assert_array_equal(m.components_, W)
    assert m.score(X) == score


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_a_failed_first_partial_fit_leaves_the_model_unfitted(cls):
    m = cls(2, random_state=0)
    X = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(latentfit.errors.DataError, match="overflow"):
        m.partial_fit(X * 1e200)
    assert not hasattr(m, "components_") and not hasattr(m, "n_features_in_")


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_fit_refuses_data_too_large_for_the_dtype_naming_the_column(cls):
    from latentfit.em.sources.chunks import ArraySource

    X = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(latentfit.errors.DataError, match=r"column 1 of X spans.*standardise"):
        cls(2).fit(X * 1e200)
    with pytest.raises(latentfit.errors.DataError, match=r"column 0 of X spans.*standardise"):
        cls(2).fit(ArraySource(np.r_[X, [[1e308, 0, 0]]]))
    with pytest.raises(latentfit.errors.DataError, match=r"overflow float32.*or use float64"):
        cls(2, dtype="float32").fit(X * 1e19)
    # just inside what the dtype holds: a finite fit
    m = cls(2, random_state=0).fit(X * 1e150)
    assert np.isfinite(m.components_).all() and np.isfinite(m.lower_bound_)


def test_the_factor_models_remedy_names_their_own_arguments():
    from latentfit.em.factor import _FactorHooks

    X = np.random.default_rng(0).normal(size=(10, 3))
    for dtype in ("float64", "float32"):
        m = FactorAnalysis(2, dtype=dtype).fit(X)
        remedy = _FactorHooks(m).remedy
        assert "reg_covar" not in remedy and "standardise" in remedy
        assert ("float64" in remedy) == (dtype == "float32")


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize("offset", [np.inf, float("nan"), -1.0, "3"])
def test_partial_fit_refuses_a_learning_offset_that_learns_nothing(cls, offset):
    X = np.random.default_rng(0).normal(size=(100, 3))
    m = cls(2, random_state=0, learning_offset=offset)
    with pytest.raises(latentfit.errors.ParameterError, match="learning_offset must be"):
        m.partial_fit(X)
    assert not hasattr(m, "components_")


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_edits_to_fitted_attributes_are_taken_up_and_checked(cls):
    """As scikit-learn's FactorAnalysis reads them: transform and score use components_,
    mean_ and noise_variance_ as they are now (before, an edit was ignored)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 1)) @ rng.normal(size=(1, 3)) + 0.3 * rng.normal(size=(200, 3))
    m = cls(1, random_state=0).fit(X)
    m.components_ = 2 * m.components_
    m.mean_ = m.mean_ + 1.0
    W, mu = m.components_.T, m.mean_
    psi = np.broadcast_to(m.noise_variance_, (3,))
    # E[z | x] = (I + Wᵀ Ψ⁻¹ W)⁻¹ Wᵀ Ψ⁻¹ (x − μ), from the edited values
    A = W.T / psi
    want = np.linalg.solve(np.eye(1) + A @ W, A @ (X - mu).T).T
    np.testing.assert_allclose(m.transform(X), want, rtol=1e-10, atol=1e-12)
    cov = W @ W.T + np.diag(psi)
    np.testing.assert_allclose(
        m.score(X), st.multivariate_normal(mu, cov).logpdf(X).mean(), rtol=1e-10
    )
    bad = cls(1, random_state=0).fit(X)
    bad.noise_variance_ = -1.0 if cls is PPCA else -np.ones(3)
    with pytest.raises(ParameterError, match="noise_variance_, set after the fit, holds -1"):
        bad.transform(X)
    bad = cls(1, random_state=0).fit(X)
    bad.components_ = np.ones((2, 3))
    with pytest.raises(ParameterError, match=r"components_ must have shape \(1, 3\)"):
        bad.score(X)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_constant_data_fit_at_the_dtypes_noise_floor(cls, dtype):
    # found by the property tests: in float32 the noise floor of constant data (1e-312) was 0,
    # and the Cholesky factor of the posterior failed with torch's own error
    X = np.full((5, 3), 7.0)
    model = cls(dtype=dtype, max_iter=30, random_state=0).fit(X)
    tiny = float(torch.finfo(getattr(torch, dtype)).tiny)
    np.testing.assert_allclose(np.broadcast_to(model.noise_variance_, (3,)), tiny, rtol=1e-6)
    # every row sits at the mean of a Gaussian of variance tiny in each of its 3 coordinates
    want = -0.5 * 3 * (np.log(2 * np.pi) + np.log(tiny))
    np.testing.assert_allclose(model.score(X), want, rtol=1e-5)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_fewer_rows_than_features_in_float32_score_and_transform(cls):
    # found by the property tests: at a noise floor of 1e-12 of the variance, W^T Psi^-1 W was
    # ~1e12 and float32's Cholesky factor failed in score_samples with torch's own error.
    # fit refuses 2 rows for 2 factors (they pass through both); stepwise EM still reaches the
    # floor on them.
    X = np.array([[-5.54116358, 0.84993782, -3.51776491], [-3.03386149, 7.80703725, -3.54775841]])
    model = cls(dtype="float32", n_components=2, random_state=0)
    with pytest.raises(latentfit.errors.DataError, match="span at most 1 dimension"):
        model.fit(X)
    for _ in range(30):
        model.partial_fit(X)
    assert np.isfinite(model.score_samples(X)).all() and np.isfinite(model.transform(X)).all()
    # each column's floor is float32's epsilon of its own variance (PPCA's one σ², of the
    # smallest): W^T Psi^-1 W then stays within d / eps, as at a floor of the mean variance
    floor = np.finfo(np.float32).eps * X.var(0) * 0.99
    assert np.all(model.noise_variance_ >= (floor.min() if cls is PPCA else floor))


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_rows_of_weight_zero_add_nothing_and_one_weighted_row_is_refused(cls):
    # Before: rows of weight 0 far from identical weighted rows had infinite terms at the
    # noise floor, 0 * inf = NaN, and the fit failed with NonFiniteLowerBoundError ("Try
    # scaling the data"); one row of positive weight failed the same way.
    from latentfit.errors import DataError

    X = np.random.default_rng(0).normal(size=(30, 4))
    data = np.r_[np.ones((5, 4)), X]
    w = np.r_[np.ones(5), np.zeros(30)]
    for method in ("fit", "partial_fit"):
        model = getattr(cls(2), method)(data, sample_weight=w)
        alone = getattr(cls(2), method)(data[:5])  # the rows of positive weight only
        np.testing.assert_allclose(model.noise_variance_, alone.noise_variance_)
        np.testing.assert_allclose(model.mean_, 1.0)
    one = np.r_[1.0, np.zeros(29)]
    with pytest.raises(DataError, match="at least 2 samples of positive weight in X, but"):
        cls(2).fit(X, sample_weight=one)
    with pytest.raises(DataError, match="positive weight in the first batch of partial_fit"):
        cls(2).partial_fit(X, sample_weight=one)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_data_too_small_for_their_squares_are_refused_by_name(cls):
    # found by a helper's hunt: X * 1e-200 underflowed every squared deviation to 0, the
    # model fitted the columns as constant (components all 0) and scored 1766 (2290 is right)
    import math

    from latentfit.errors import DataError

    X = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.raises(
        DataError, match=r"column 0 of X spans only 4.13e-200.*multiply it by 1e200"
    ):
        cls(2, random_state=0).fit(X * 1e-200)
    with pytest.raises(DataError, match="spans only"):
        cls(2, random_state=0).partial_fit(X * 1e-200)
    ref = cls(2, random_state=0).fit(X).score(X)  # 1e-150 keeps its digits: fitted exactly
    small = cls(2, random_state=0).fit(X * 1e-150).score(X * 1e-150)
    assert small == pytest.approx(ref - 4 * math.log(1e-150), abs=1e-9)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_transform_names_a_row_whose_posterior_mean_overflows(cls):
    # found by the property tests: float32, a row holding 1e38 gave a posterior mean of NaN
    import warnings

    from latentfit.errors import DataError

    X = np.random.default_rng(0).normal(size=(30, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cls(1, dtype="float32", random_state=0).fit(X)
    # that row's posterior mean, -5.1e37, is within float32: E[z] = β (x − μ) with β taken
    # from Ψ^-½ W's SVD, not (x − μ)ᵀ Ψ⁻¹ W, which overflowed first
    W, mu, psi = (np.float64(a) for a in (m.components_.T, m.mean_, m.noise_variance_))
    psi = np.broadcast_to(psi, (2,))
    beta = np.linalg.solve(np.eye(1) + W.T @ (W / psi[:, None]), (W / psi[:, None]).T)  # (1, 2)
    far = np.array([3e38, -3e38])
    np.testing.assert_allclose(m.transform(far[None])[0], beta @ (far - mu), rtol=1e-5)
    # a row whose posterior mean is beyond float32 is named
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cls(1, dtype="float32", random_state=0).fit(X * 1e-3)
    row = 3e38 * np.sign(m.components_[0])  # along β, whose entries are ~1e3 here
    with pytest.raises(
        DataError, match=r"row 1 of X: its posterior mean .* not finite.* overflows float32"
    ):
        m.transform(np.array([[0.5, 1.0], row]))
    assert np.isfinite(m.transform(X)).all()


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize(("n", "d", "q"), [(3, 5, 2), (4, 6, 3), (5, 5, 4)])
def test_rows_spanning_no_more_than_the_factors_are_refused(cls, n, d, q):
    """3 rows of 5 columns with 2 factors fitted a log-likelihood of +36.5 per row with every
    noise variance at the floor (0): centred, n rows span n - 1 <= q dimensions, which the
    loadings pass through exactly. scikit-learn's FactorAnalysis meets the same collapse."""
    X = np.random.default_rng(0).normal(size=(n, d))
    sk = SkFactorAnalysis(q, random_state=0).fit(X)
    assert sk.noise_variance_.max() < 1e-6 * X.var(0).min()  # the degenerate fit, independently
    with pytest.raises(latentfit.errors.DataError, match=rf"X has {n} row\(s\) of {d} column") as e:
        cls(q, random_state=0).fit(X)
    assert f"span at most {n - 1} dimension(s), no more than the n_components={q}" in str(e.value)
    assert f"give at least {q + 2} rows, or a smaller n_components" in str(e.value)
    # the rows it asks for: fitted
    more = np.random.default_rng(1).normal(size=(q + 2, d))
    assert np.isfinite(cls(q, random_state=0, max_iter=2000).fit(more).score(more))
    # rows of weight 0 do not count
    weights = np.r_[np.ones(q + 1), 0.0]
    with pytest.raises(latentfit.errors.DataError, match="row\\(s\\) of positive weight"):
        cls(q, random_state=0).fit(more, sample_weight=weights)


def test_noise_variances_at_the_floor_are_named_as_a_heywood_case():
    """Column 3 = column 0 + 2 column 1, and a constant column 5: the fit put the noise
    variances of columns 0, 1, 3 and 5 at the floor (4e-12) without a word, as scikit-learn
    does (at its own floor, 1e-12). The warning names the columns scikit-learn clamps too."""
    X, _, _ = _data(n=300, d=5)
    X[:, 3] = X[:, 0] + 2 * X[:, 1]
    X = np.c_[X, np.full(300, 3.0)]
    ref = SkFactorAnalysis(2).fit(X)
    clamped = np.flatnonzero(ref.noise_variance_ <= 1e-12)
    assert clamped.tolist() == [0, 1, 3, 5]
    with pytest.warns(HeywoodCaseWarning) as record:
        model = FactorAnalysis(2).fit(X)
    (message,) = [str(w.message) for w in record if w.category is HeywoodCaseWarning]
    assert "Heywood case) for columns 0, 1, 3: the factors explain them entirely" in message
    assert "and for column 5, which is constant" in message
    assert "fewer factors (n_components)" in message
    np.testing.assert_array_equal(np.flatnonzero(model.noise_variance_ <= 1e-11), clamped)


def test_ppca_at_the_noise_floor_warns_and_a_healthy_fit_does_not():
    X, W, _ = _data(n=200, d=5)
    rng = np.random.default_rng(1)
    exact = rng.normal(size=(200, 2)) @ W.T  # rows in a plane: sigma^2 goes to the floor
    with pytest.warns(HeywoodCaseWarning, match=r"PPCA: the noise variance ended at its floor"):
        PPCA(2, max_iter=20).fit(exact)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeywoodCaseWarning)
        FactorAnalysis(2).fit(X)
        PPCA(2).fit(X)


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_partial_fit_at_the_noise_floor_warns_as_fit_does(cls):
    """partial_fit ended at the floor without a word: PPCA's σ² at 1.66e-16 on rows in a plane,
    FactorAnalysis's constant column at 2.2e-308. It warns as fit does, at every call that
    ends there, and not for healthy rows."""
    X, W, _ = _data(n=200, d=5)
    rng = np.random.default_rng(1)
    exact = rng.normal(size=(200, 2)) @ W.T  # rows in a plane: PPCA's σ² goes to the floor
    if cls is FactorAnalysis:  # a constant column: its noise variance goes to the floor
        exact = np.c_[X, np.full(200, 3.0)]
    with pytest.warns(HeywoodCaseWarning) as record:
        cls(2).fit(exact)
    (want,) = {str(w.message) for w in record if w.category is HeywoodCaseWarning}
    model = cls(2)
    for _ in range(3):
        with pytest.warns(HeywoodCaseWarning) as record:
            model.partial_fit(exact)
        assert [str(w.message) for w in record if w.category is HeywoodCaseWarning] == [want]
    j = 5 if cls is FactorAnalysis else 0  # the column at the floor
    psi = np.broadcast_to(model.noise_variance_, (exact.shape[1],))
    assert psi[j] <= float(model._floor[j]) * (1 + 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeywoodCaseWarning)
        cls(2).partial_fit(X).partial_fit(X)


def _exact_log_density(x, W, mu, psi):
    """log N(x; μ, W Wᵀ + diag ψ) in 50-digit arithmetic (mpmath)."""
    import mpmath

    mpmath.mp.dps = 50
    C = mpmath.matrix(W.tolist()) * mpmath.matrix(W.T.tolist()) + mpmath.diag(psi.tolist())
    r = mpmath.matrix((x - mu).tolist())
    quad = (r.T * mpmath.lu_solve(C, r))[0]
    return float(-(len(x) * mpmath.log(2 * mpmath.pi) + mpmath.log(mpmath.det(C)) + quad) / 2)


def test_a_heywood_fit_keeps_its_likelihood_exact_and_converges():
    """At the noise floor (ψ_j ~ 1e-12 of the variance) the log-density, by Woodbury as
    ‖x − μ‖²_Ψ⁻¹ − Bᵀ E[z], differenced two terms of ~1e12: ~1e-3 nats of rounding a row, and
    the fit of column 3 = column 0 + 2 column 1 raised 83 EMMonotonicityWarnings on that
    jitter and ran 255 iterations (on a constant column too: 445 and no convergence in
    1000). Written as a sum of non-negative terms it keeps its digits."""
    X, _, _ = _data(n=300, d=6, seed=3)
    X[:, 3] = X[:, 0] + 2 * X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        warnings.simplefilter("ignore", HeywoodCaseWarning)
        model = FactorAnalysis(2).fit(X)
    assert model.converged_ and model.n_iter_ < 150
    assert np.flatnonzero(model.noise_variance_ < 1e-10).tolist() == [0, 1, 3]  # the floor
    W, mu, psi = model.components_.T, model.mean_, model.noise_variance_
    want = [_exact_log_density(x, W, mu, psi) for x in X[:5]]
    np.testing.assert_allclose(model.score_samples(X[:5]), want, rtol=1e-9)
    # the rows with gaps take the same form on their observed coordinates
    gaps = X[:5].copy()
    gaps[:, 5] = np.nan
    want = [_exact_log_density(x[:5], W[:5], mu[:5], psi[:5]) for x in gaps]
    model.missing = "marginalize"
    np.testing.assert_allclose(model.score_samples(gaps), want, rtol=1e-9)


def _far_row(far):
    """60 rows near 2.4 and one row at ``far`` in column 0, and the residual variances of
    columns 1 and 2 regressed on column 0: one factor on 3 columns fits these (S01 S02 / S12
    < 0 leaves no interior solution; the supremum has ψ_0 → 0, the factor column 0 itself)."""
    X = np.r_[np.random.default_rng(0).normal(2.4, 1, (60, 3)), [[far, 2.4, 2.4]]]
    S = np.cov(X.T, bias=True)
    return X, np.diag(S)[1:] - S[0, 1:] ** 2 / S[0, 0]


@pytest.mark.parametrize("far", [1e8, 1e17])
def test_a_column_of_large_variance_sets_no_noise_floor_for_the_others(far):
    # the floor was 1e-12 of the mean column variance (53.7 here, 5.37e19 at 1e17): columns
    # 1 and 2 ended at it, 81 and 8e19 times their noise, and HeywoodCaseWarning called them
    # constant. Each column's floor is now 1e-12 of its own variance.
    X, residual = _far_row(far)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeywoodCaseWarning)  # no column reaches its floor
        model = FactorAnalysis(1).fit(X)
    # EM leaves ψ_0 at ~1e-3 of its variance (the start; the likelihood is flat towards 0),
    # which moves ψ_1, ψ_2 by a few 1e-7 of the supremum's
    np.testing.assert_allclose(model.noise_variance_[1:], residual, rtol=1e-6)
    if far == 1e8:  # at 1e17 scikit-learn's own fit loses these digits (0.66029 for 0.66020)
        ref = SkFactorAnalysis(1, tol=1e-12, max_iter=10000).fit(X)
        np.testing.assert_allclose(model.noise_variance_[1:], ref.noise_variance_[1:], rtol=1e-6)
    floor = model._min_noise.numpy()
    np.testing.assert_allclose(floor, 1e-12 * X.var(0), rtol=1e-10)  # each column's own


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize(("q", "seed"), [(2, 2), (3, 0), (3, 1)])
def test_rank_one_rows_from_a_random_start_in_float32_fit_with_exact_posteriors(cls, q, seed):
    """Rows on a line, 2 or 3 factors, a random start, float32: EM failed with torch's own
    "linalg.cholesky: ... not positive-definite" once the loadings lay along each other and
    M = I + Wᵀ Ψ⁻¹ W (condition ~2e7 here, beyond float32's 1 / eps), rounded by ~eps of its
    largest entry, lost its eigenvalue of 1. From the SVD of Ψ^-½ W it keeps it: the
    posterior means are those of the fitted parameters computed in float64 (3e-7 apart, the
    float32 rounding of the inputs)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 1)) @ rng.normal(size=(1, 4))
    # the M-step's noise at the floor, a difference of the columns' variances, lost the
    # likelihood (EMMonotonicityWarning in 5 of these 6); from the residuals it does not
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        with pytest.warns(HeywoodCaseWarning):  # the noise at its floor
            model = cls(q, dtype="float32", init="random", random_state=seed).fit(X)
    W, mu = model.components_.T.astype(float), model.mean_.astype(float)
    psi = np.broadcast_to(np.float64(model.noise_variance_), (4,))
    PW = W / psi[:, None]
    Ez = np.linalg.solve(np.eye(q) + W.T @ PW, PW.T @ (X - mu).T).T  # M⁻¹ Wᵀ Ψ⁻¹ (x − μ)
    np.testing.assert_allclose(model.transform(X), Ez, atol=1e-5 * np.abs(Ez).max())
    assert np.isfinite(model.score(X))


def _row_by_row_posterior(X, W, mu, psi):
    """E[z | x_o], Cov[z | x_o] and log p(x_o) of every row from its observed coordinates,
    row by row in float64 numpy."""
    q = W.shape[1]
    means, covs, logliks = [], [], []
    for x in X:
        o = ~np.isnan(x)
        r, Wo = x[o] - mu[o], W[o]
        M = np.eye(q) + Wo.T @ (Wo / psi[o][:, None])
        means.append(np.linalg.solve(M, Wo.T @ (r / psi[o])))
        covs.append(np.linalg.inv(M))
        C = Wo @ Wo.T + np.diag(psi[o])  # scipy refuses it: ψ at float32's floor
        quad = r @ np.linalg.solve(C, r)
        logliks.append(-0.5 * (o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(C)[1] + quad))
    return np.array(means), np.array(covs), np.array(logliks)


@pytest.mark.parametrize(
    ("cls", "q", "seed"),
    [(PPCA, 2, 1), (PPCA, 3, 0), (PPCA, 3, 2), (FactorAnalysis, 2, 1), (FactorAnalysis, 3, 1)],
)
def test_rank_one_rows_with_gaps_in_float32_fit_with_exact_posteriors(cls, q, seed):
    """The rows on a line of the test above with 10% of the values missing: the posterior of
    each row took a Cholesky factor of M = I + W_oᵀ Ψ_o⁻¹ W_o (condition 2e7-5e7 here), and
    these fits failed with torch's own "linalg.cholesky: ... not positive-definite" (9 of 24
    fits of q = 2, 3 and seeds 0-5). From the SVD of Ψ_o^-½ W_o of each pattern of gaps they
    fit, and the posterior means, covariances and log-densities are those of the fitted
    parameters row by row in float64 within 1e-6 (4e-7 seen: float32's rounding)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 1)) @ rng.normal(size=(1, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    with warnings.catch_warnings():
        # the noise heads for its floor (HeywoodCaseWarning where it gets there); whether a
        # float32 run reaches it within max_iter, and its float32 log-likelihood's wobble
        # (EMMonotonicityWarning), depend on the order in which the machine's kernels sum
        # (PPCA q=3, seeds 0 and 2: at the floor on one machine; on another, still on the
        # way after 1000 iterations: ConvergenceWarning)
        ignored = (HeywoodCaseWarning, EMMonotonicityWarning, ConvergenceWarning)
        warnings.simplefilter("ignore", ignored)
        model = cls(q, dtype="float32", init="random", random_state=seed, missing="marginalize")
        model.fit(X)
    W, mu = model.components_.T.astype(float), model.mean_.astype(float)
    psi = np.broadcast_to(np.float64(model.noise_variance_), (4,))
    means, covs, logliks = _row_by_row_posterior(X, W, mu, psi)
    p = model._params
    post = factor_posterior(torch.tensor(X, dtype=torch.float32), p["W"], p["mu"], p["psi"])
    np.testing.assert_allclose(model.transform(X), means, atol=1e-6 * np.abs(means).max())
    np.testing.assert_allclose(post.cov.numpy(), covs, atol=1e-6 * np.abs(covs).max())
    np.testing.assert_allclose(model.score_samples(X), logliks, rtol=1e-6)


def test_posterior_of_rows_with_gaps_whose_observed_loadings_lie_along_each_other():
    """Three factors along one direction (1e3 x, plus ~1 apart), rows with every value
    missing, one value observed, two and one gap, in float32: M = I + W_oᵀ Ψ_o⁻¹ W_o of
    entries ~1e7 rounded by ~1 in its Cholesky factor, and the means were 2e-2 of their size
    from float64's (2e-5 now: float32's SVD resolves Ψ_o^-½ W_o's small singular values to
    ~eps times its largest, 3e3); the all-missing row has the prior, N(0, I)."""
    rng = np.random.default_rng(0)
    d, q = 5, 3
    W = np.float32(np.outer(rng.normal(size=d), np.ones(q)) * 1e3 + rng.normal(size=(d, q)))
    psi = np.float32(rng.uniform(0.5, 1.5, d))
    X = np.float32(rng.normal(size=(8, d)) * 1e3)
    X[0, :] = np.nan
    X[1, 1:] = np.nan
    X[2, [0, 2]] = np.nan
    X[3, 4] = np.nan
    post = factor_posterior(torch.tensor(X), torch.tensor(W), torch.zeros(d), torch.tensor(psi))
    means, covs, logliks = _row_by_row_posterior(
        X.astype(float), W.astype(float), np.zeros(d), psi.astype(float)
    )
    np.testing.assert_allclose(post.mean.numpy(), means, atol=1e-4 * np.abs(means).max())
    np.testing.assert_allclose(post.cov.numpy(), covs, atol=1e-4)
    np.testing.assert_allclose(post.loglik.numpy(), logliks, rtol=1e-4)
    np.testing.assert_allclose(post.cov[0].numpy(), np.eye(q), atol=1e-6)


@pytest.mark.parametrize("far", [9e8, 1e9, 1e17])
def test_ppca_at_a_floor_set_by_one_far_column_says_so_and_what_to_do(far):
    """PPCA's one σ² has the floor of the dtype's epsilon of the mean column variance (0.967
    at 9e8, 1.19 at 1e9), EM's rounding on rows in a subspace (see the test below): from
    ~9e8 it lies above the closed form's 0.7549 (fitted at 7e8), which is computable there
    (the singular values of the centred rows keep it to 1e-15). The warning said the rows
    lie in a 1-dimensional subspace; it names the column that sets the floor, the columns it
    swamps, and the remedy, which fits them."""
    X, _ = _far_row(far)
    assert _svd_noise(X, 1) < np.finfo(np.float64).eps * X.var(0).mean()  # below the floor
    with pytest.warns(HeywoodCaseWarning) as record:
        model = PPCA(1).fit(X)
    np.testing.assert_allclose(model.noise_variance_, np.finfo(np.float64).eps * X.var(0).mean())
    (message,) = [str(w.message) for w in record if w.category is HeywoodCaseWarning]
    assert (
        "2.22e-16 (the dtype's epsilon) of the mean column variance (a Heywood case), which "
        "column 0 sets" in message
    )
    assert "columns 1, 2 vary less than a million times that floor" in message
    assert "Standardise the columns" in message and "subspace" not in message
    # one such column "varies"
    one = np.c_[X[:, 0], X[:, 1]]
    with pytest.warns(HeywoodCaseWarning, match="; column 1 varies less than a million times"):
        PPCA(1).fit(one)
    Z = (X - X.mean(0)) / X.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeywoodCaseWarning)
        model = PPCA(1).fit(Z)
    s2, _ = _ppca_closed_form(Z, 1)
    np.testing.assert_allclose(model.noise_variance_, s2, rtol=1e-6)


def _svd_noise(X, q):
    """Tipping & Bishop's σ², the mean discarded eigenvalue of the sample covariance, from the
    singular values of the centred rows: they keep the small eigenvalues to their own
    precision beside a large one, which an eigendecomposition of the covariance rounds by
    ~eps of the largest (0.005 off here for the second data of the test below)."""
    s = np.linalg.svd((X - X.mean(0)) / np.sqrt(len(X)), compute_uv=False)
    return (s[q:] ** 2).mean()


def _one_factor_loglik(X, w, mu, s2):
    """Σ log N(x_o; μ_o, w_o w_oᵀ + σ² I) over the rows' observed coordinates, by hand for one
    factor: the part of r = x_o − μ_o across w_o has variance σ², the part along it
    σ² + ‖w_o‖² (no eigendecomposition of a covariance whose eigenvalues are 1e14 apart)."""
    total = 0.0
    for x in X:
        o = ~np.isnan(x)
        r, v = x[o] - mu[o], w[o]
        vv = v @ v
        along = v @ r
        across = r - v * along / vv
        quad = across @ across / s2 + along**2 / (vv * (s2 + vv))
        log_det = (o.sum() - 1) * np.log(s2) + np.log(s2 + vv)
        total += -0.5 * (o.sum() * np.log(2 * np.pi) + log_det + quad)
    return total


@pytest.mark.parametrize(
    ("scale", "q", "seed"), [(1.0, 2, 0), (1.0, 3, 2), (1e3, 2, 1), (1e6, 3, 0), (1e6, 3, 1)]
)
def test_ppca_on_rows_on_a_line_ends_at_the_floor_in_float64(scale, q, seed):
    """Rows on a line (closed-form σ² = 0), column 0 scaled by 1, 1e3, 1e6, from a random
    start: EM's σ² ends at its own rounding, 1e-3 to 0.7 of the floor (float64's epsilon of
    the mean column variance), so the floor meets it with a HeywoodCaseWarning. A floor of
    epsilon of the smallest column variance, low enough for one far row at 1e9, left these
    fits above it without a word (σ² of 3e-19 to 2.5e-6: rounding) or let the bound fall, by
    up to 124,000 nats a row (EMMonotonicityWarning): the bound on PPCA's σ² beside a far
    column."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, 1)) @ rng.normal(size=(1, 4))
    X[:, 0] *= scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        with pytest.warns(HeywoodCaseWarning, match="PPCA: the noise variance ended at its floor"):
            model = PPCA(q, init="random", random_state=seed).fit(X)
    np.testing.assert_allclose(model.noise_variance_, np.finfo(np.float64).eps * X.var(0).mean())


@pytest.mark.parametrize("far", [1e8, 7e8])
@pytest.mark.parametrize("path", ["fit", "chunks", "partial_fit", "statistics"])
def test_ppca_beside_one_far_row_fits_the_closed_form_noise(path, far, monkeypatch):
    """The M-step's σ² was Σ w ‖x − μ‖² less the part the factors explain, two numbers of
    column 0's variance (1.6e14) whose difference rounds by ~0.04; the floor above that
    rounding (1e-12 of the mean column variance) held σ² at 53.7 for the 0.7549 of the closed
    form, with a HeywoodCaseWarning. σ² now comes from the residuals x − μ − W z about the
    current loadings, on every path: one chunk, statistics summed over chunks, partial_fit's
    moments, and partial_fit's stepwise statistics (d above 4096)."""
    import latentfit.em.factor as factor_module

    X, _ = _far_row(far)  # up to ~8e8, where the floor (0.6 at 7e8) reaches σ²
    s2 = _svd_noise(X, 1)
    sk = SkPCA(1, svd_solver="full").fit(X).noise_variance_ * (len(X) - 1) / len(X)
    np.testing.assert_allclose(sk, s2, rtol=1e-12)  # scikit-learn divides by n - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if path in ("fit", "chunks"):
            model = PPCA(1, chunk_rows=16 if path == "chunks" else 65536).fit(X)
        else:
            if path == "statistics":
                monkeypatch.setattr(factor_module, "_ONLINE_MOMENTS_MAX_FEATURES", 0)
            model = PPCA(1)
            for _ in range(5):
                model.partial_fit(X)
    np.testing.assert_allclose(model.noise_variance_, s2, rtol=1e-9)


def test_ppca_with_gaps_beside_one_far_row_maximises_the_likelihood_in_the_noise():
    """With missing values the σ² of the M-step took the same difference (52.9 at the floor,
    for ~0.78): the fitted σ² must maximise the exact log-likelihood of the observed
    coordinates in σ² at the fitted loadings and mean, which the vertex of a parabola through
    three points 1e-4 apart finds (its error ~1e-8, of the order of the step squared)."""
    X, _ = _far_row(1e8)
    X[3, 1] = X[10, 2] = X[60, 1] = np.nan  # row 60 is the far row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = PPCA(1, missing="marginalize", tol=1e-12).fit(X)
    w, mu, s2 = model.components_[0], model.mean_, model.noise_variance_
    h = 1e-4 * s2
    lo, mid, hi = (_one_factor_loglik(X, w, mu, s2 + k * h) for k in (-1, 0, 1))
    vertex = s2 - h * (hi - lo) / (2 * (hi - 2 * mid + lo))
    np.testing.assert_allclose(s2, vertex, rtol=1e-7)
    np.testing.assert_allclose(model.score(X) * len(X), mid, rtol=1e-10)


def _rank_deficient(n=200):
    """Columns [a 1e8, b, a + b]: the covariance's eigenvalues 9.2e15, 2.09 and 0 (to
    rounding), so PPCA(2)'s closed-form σ², the third, is below any floor."""
    a, b = np.random.default_rng(0).normal(size=(2, n))
    return np.c_[a * 1e8, b, a + b]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_fit_stopped_on_a_saddle_says_so(seed):
    """From a random start at the mean column variance (3e15), the noise variance stays far
    above the second eigenvalue (2.09) long enough to shrink the second factor to ~1e-16 of
    the noise's scale; it then grows back about 2-fold an iteration, moving the
    log-likelihood by less than tol, and EM reported convergence at σ² = 1.08 (seed 0) and
    0.99 (seed 1), the 1-factor saddle point ((2.09 + 0) / 2), without a word, 0.37 and 0.45
    nats a row below the closed-form start's fit, which ends at the floor."""
    X = _rank_deficient()
    assert _svd_noise(X, 2) < 1e-20  # the closed form: at the floor
    with pytest.warns(HeywoodCaseWarning):
        best = PPCA(2).fit(X)  # the closed-form start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EMMonotonicityWarning)
        with pytest.warns(ConvergenceWarning) as record:
            model = PPCA(2, init="random", random_state=seed).fit(X)
    (message,) = [str(w.message) for w in record if w.category is ConvergenceWarning]
    assert "PPCA: EM stopped on a plateau of the likelihood (a saddle point)" in message
    assert "one of the 2 factors carries almost no variance" in message
    assert "from 1.05 in column 1 to 9.24e+15 in column 0" in message
    assert "Use init='pca'" in message
    assert not model.converged_
    assert model.score(X) < best.score(X) - 0.3


def test_factor_analysis_stopped_on_a_saddle_says_so():
    """A start whose noise variance (1e6) lies far above the data's shrinks both factors to
    ~1e-4 and ~1e-6 of the noise's scale: EM stopped after 3 iterations at -11.12 nats a
    row, 1.47 below scikit-learn's fit, without a word."""
    X, _, _ = _data(n=300)
    ref = SkFactorAnalysis(2).fit(X).score(X)
    with pytest.warns(ConvergenceWarning, match=r"2 of the 2 factors carry almost no variance"):
        model = FactorAnalysis(2, init="random", random_state=0, noise_variance_init=[1e6] * 6)
        model.fit(X)
    with pytest.warns(ConvergenceWarning, match=r"magnitude, or a large noise_variance_init\."):
        FactorAnalysis(2, init="random", random_state=0, noise_variance_init=[1e6] * 6).fit(X)
    assert not model.converged_ and model.score(X) < ref - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = FactorAnalysis(2, init="random", random_state=0).fit(X)
    assert model.converged_ and model.score(X) > ref - 1e-3


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_a_factor_of_zero_at_the_maximum_is_no_saddle(cls):
    """Four factors on iris's four columns from a random start end with one of ~1e-13 of the
    noise's scale at a maximum (PPCA: the model covariance is the data's along a flat ridge;
    factor analysis: the factor is zero at its maximum). Neither is a plateau (a 1e-3 factor
    grows no more than 1.0x an iteration; the factor of ~1e-15 itself "grew" 1.07 times, by
    rounding): no warning, and the likelihood is that of the sample covariance. A saddle is 0.3 nats a row
    or more below."""
    from sklearn.datasets import load_iris

    X = load_iris().data
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = cls(4, init="random", random_state=0).fit(X)
    p = model._params
    assert float(torch.linalg.svdvals(p["W"] / p["psi"].sqrt()[:, None])[-1]) < 1e-9
    assert model.converged_
    # four factors can take any covariance: the maximum is that of the sample covariance (EM
    # creeps along the ridge and stops 4e-5 nats a row short of it at tol)
    want = st.multivariate_normal(X.mean(0), np.cov(X.T, bias=True)).logpdf(X).mean()
    np.testing.assert_allclose(model.score(X), want, atol=1e-4)


def test_a_fit_that_fails_beside_one_far_value_names_the_column_to_rescale():
    # One value at 1e150 in column 2 of 200 rows of N(0, 1): EM runs ~110 iterations and its
    # psi becomes non-finite. The error advised standardising the columns without saying which
    # column spans what; it now names the least and the most varying columns.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    X[17, 2] = 1e150
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EMMonotonicityWarning)
        with pytest.raises(NonFiniteLowerBoundError) as err:
            FactorAnalysis(n_components=2).fit(X)
    text = str(err.value)
    assert "standardise the columns: their variances run from 0.808 in column 0 to" in text, text
    assert "4.97e+297 in column 2)" in text, text
    # columns of like spread: the advice as before, with nothing to name
    assert FactorAnalysis(n_components=2).fit(X[:, [0, 1, 3, 4]])._variance_spread() == ""
