"""Numerical robustness of the Gaussian-emission models: float32 far from the origin, degenerate
components, overflow, and inputs at the edges (constant data, zero weights)."""

import warnings

import numpy as np
import pytest
import torch

from latentfit.em.factor import PPCA, FactorAnalysis
from latentfit.em.gaussian import degenerate_components, weighted_mean
from latentfit.em.hmm.gaussian import GaussianHMM
from latentfit.em.hmm.gmmhmm import GMMHMM
from latentfit.em.initialize import kmeans
from latentfit.em.mixture.families import MixtureModel
from latentfit.em.mixture.gmm import GaussianMixture
from latentfit.errors import DataError, DegenerateComponentWarning
from latentfit.vi.bgmm import BayesianGaussianMixture


def _two_clusters(n=1000, d=1, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n, d)), rng.normal(3, 0.5, (n, d))])


MODELS = {
    "gmm-full": lambda dt: GaussianMixture(2, dtype=dt, random_state=0),
    "gmm-diag": lambda dt: GaussianMixture(2, covariance_type="diag", dtype=dt, random_state=0),
    "hmm-diag": lambda dt: GaussianHMM(2, dtype=dt, random_state=0, n_iter=100, tol=1e-4),
    "hmm-full": lambda dt: GaussianHMM(
        2, covariance_type="full", dtype=dt, random_state=0, n_iter=100, tol=1e-4
    ),
    "mixture-normal": lambda dt: MixtureModel("normal", 2, dtype=dt, random_state=0),
    "mixture-mvn": lambda dt: MixtureModel("mvn", 2, dtype=dt, random_state=0),
    "bgmm-full": lambda dt: BayesianGaussianMixture(n_components=2, dtype=dt, random_state=0),
    "bgmm-diag": lambda dt: BayesianGaussianMixture(
        n_components=2, covariance_type="diag", dtype=dt, random_state=0
    ),
}


def _means(model):
    if hasattr(model, "components_"):  # MixtureModel
        return np.stack([np.asarray(c["loc"], dtype=np.float64) for c in model.components_])
    return np.asarray(model.means_, dtype=np.float64)


def _covariances(model):
    if hasattr(model, "components_"):
        return np.stack(
            [
                c["scale"] ** 2 if "scale" in c else c["scale_tril"] @ c["scale_tril"].T
                for c in model.components_
            ]
        )
    return np.asarray(model.covars_ if hasattr(model, "covars_") else model.covariances_)


@pytest.mark.parametrize("offset", [1e6, 1e7])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_float32_fit_far_from_the_origin_matches_float64(name, offset):
    """The same float32-rounded values fitted in float32 and float64 give the same model.

    Means: float32 stores a fitted mean near ``offset`` rounded to its spacing there (0.0625 at
    1e6, 1.0 at 1e7), so they may differ by that spacing — half of it for rounding the
    attribute, half for the float32 shift the statistics are centred on — and by 0.01 for
    float32 arithmetic in the E-steps. Covariances, which are differences about the shift,
    keep float32's relative precision: 1% covers the sums of 2000 float32 terms and a
    different stopping iteration. Before the fix: GaussianHMM means −27 and 1.5 at 1e6,
    GaussianMixture a component collapsed onto the value 3 (variance 1e-6) at 1e7,
    MixtureModel variances 7% off at 1e6 (raw moments about 0).
    """
    _compare(MODELS[name], offset)


def _compare(make, offset):
    X = (_two_clusters() + offset).astype(np.float32)
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of either run are beside the point
        for dt in ("float64", "float32"):
            fits[dt] = make(dt).fit(X.astype(dt))
    order = {dt: np.argsort(_means(m)[:, 0]) for dt, m in fits.items()}
    m64 = _means(fits["float64"])[order["float64"]] - offset
    m32 = _means(fits["float32"])[order["float32"]] - offset
    spacing = float(np.spacing(np.float32(offset)))
    np.testing.assert_allclose(m32, m64, atol=spacing + 1e-2, rtol=0)
    assert abs(m64[0, 0]) < 0.2 and abs(m64[1, 0] - 3) < 0.2  # both found the two clusters
    c64 = _covariances(fits["float64"])[order["float64"]]
    c32 = _covariances(fits["float32"])[order["float32"]]
    np.testing.assert_allclose(c32, c64, rtol=1e-2, atol=1e-6)


def test_bgmm_float32_keeps_the_prior_mean_of_data_far_from_the_origin():
    """The default prior mean is the data mean, which float32 cannot hold at 1e7 (1e7 + 1.468
    rounds to 1e7 + 1): kept in float64, the float32 fit converges to the float64 one. Rounded,
    it moved every component's covariance by up to 1% through beta0 (x_k - m0)(x_k - m0)' and
    the float32 fit did not converge at tol=1e-6 in 2000 iterations."""
    X = (_two_clusters() + 1e7).astype(np.float32)
    fits = {
        dt: BayesianGaussianMixture(
            n_components=2, dtype=dt, random_state=0, tol=1e-6, max_iter=500
        ).fit(X.astype(dt))
        for dt in ("float64", "float32")
    }
    assert fits["float32"].converged_
    np.testing.assert_allclose(
        fits["float32"].mean_prior_, X.astype(np.float64).mean(0), rtol=1e-12
    )
    c64, c32 = (np.sort(np.ravel(f.covariances_)) for f in fits.values())
    np.testing.assert_allclose(c32, c64, rtol=2e-3)  # float32 sums of 2000 terms
    # a mean_prior given by the user is kept as given too
    given = [1e7 + 1.468]
    m = BayesianGaussianMixture(n_components=2, dtype="float32", random_state=0, mean_prior=given)
    assert m.fit(X).mean_prior_.tolist() == given


def test_weighted_mean_keeps_float32_precision_far_from_the_origin():
    """A float32 dot product of 2000 values near 1e7 drifts by ~190; the float64-accumulated
    mean is within float32's spacing (1.0 at 1e7) of numpy's float64 mean of the same values."""
    X = (_two_clusters() + 1e7).astype(np.float32)
    w = np.random.default_rng(1).uniform(0.5, 2, len(X))
    expected = (w @ X.astype(np.float64)) / w.sum()
    got = weighted_mean(torch.as_tensor(X), torch.as_tensor(w, dtype=torch.float32))
    assert got.dtype == torch.float32
    assert abs(float(got[0]) - expected[0]) <= 1.0
    # a constant column's mean is its value exactly (20 · 1e300 / 20 rounds otherwise)
    const = torch.full((20, 2), 1e300, dtype=torch.float64)
    assert torch.equal(weighted_mean(const), const[0])


def test_kmeans_float32_far_from_the_origin_finds_the_float64_centres():
    X = _two_clusters() + 1e6
    out = {}
    for dt in (torch.float64, torch.float32):
        Xt = torch.as_tensor(X.astype(np.float32), dtype=dt)
        gen = torch.Generator().manual_seed(0)
        C, _ = kmeans(Xt, 2, torch.ones(len(X), dtype=dt), gen)
        out[dt] = np.sort(C.double().numpy()[:, 0]) - 1e6
    # float32 centres round to the spacing at 1e6 (0.0625); before: both at the data mean
    np.testing.assert_allclose(out[torch.float32], out[torch.float64], atol=0.0625 + 1e-3)


@pytest.mark.parametrize("offset", [1e7, 1e9])
def test_float64_data_that_float32_cannot_hold_is_warned_of_naming_the_column(offset):
    # before: no word, and a variance 5.6% off about 1e7 (at the floor, 1e-6, about 1e9)
    from latentfit.errors import PrecisionLossWarning

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (200, 3)) + [0.0, offset, 0.0]
    X[:, 2] = offset  # a constant column loses nothing: not named
    top = int(np.argmax(np.abs(X[:, 1])))
    with pytest.warns(PrecisionLossWarning, match=rf"X's column 1 .* \(row {top}\)") as seen:
        GaussianMixture(1, dtype="float32").fit(X)
    assert "dtype=float64" in str(seen[0].message)
    assert len([w for w in seen if w.category is PrecisionLossWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionLossWarning)
        GaussianMixture(1, dtype="float32").fit(X - X.mean(0))  # centred: nothing lost
        GaussianMixture(1, dtype="float32").fit(X.astype(np.float32))  # the user's own float32
        GaussianMixture(1).fit(X)  # float64


def _groups_far_apart(gap=1e10):
    """Two groups ``gap`` apart, each two tight clusters at -1 and +1: rows 0-49, 50-99 near
    0, rows 100-149, 150-199 near ``gap`` (the same offsets)."""
    rng = np.random.default_rng(0)
    near = [rng.normal(m, 0.1, (50, 2)) for m in (-1.0, 1.0)]
    return np.concatenate([*near, *(g + gap for g in near)])


def test_kmeans_tells_clusters_apart_inside_groups_far_apart():
    X = torch.tensor(_groups_far_apart())
    C, labels = kmeans(X, 4, torch.ones(len(X), dtype=X.dtype), torch.Generator().manual_seed(0))
    truth = torch.arange(4).repeat_interleave(50)
    # every true cluster is one k-means cluster (before: counts 78, 48, 52, 22)
    assert all(len(torch.unique(labels[truth == j])) == 1 for j in range(4))
    assert len(torch.unique(labels)) == 4
    want = X.reshape(4, 50, 2).mean(1)[torch.argsort(labels[::50])]  # (4, 2), k-means' order
    torch.testing.assert_close(C, want, rtol=0, atol=1e-4)  # the spacing at 5e9: 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_mixture_from_kmeans_finds_clusters_inside_groups_far_apart(seed):
    X = _groups_far_apart()
    m = GaussianMixture(4, covariance_type="diag", random_state=seed).fit(X)
    # the clusters are far apart against their spread: each mean is its rows' mean; before,
    # seeds 0 and 2 started across the groups and ended with score -3.54 instead of 0.43
    want = X.reshape(4, 50, 2).mean(1)
    got = m.means_[np.argsort(m.means_[:, 0])]
    np.testing.assert_allclose(got, want[np.argsort(want[:, 0])], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- degenerate components


def _tied_data(seed=0):
    """200 Gaussian rows plus 12 rows whose feature 1 is exactly 4.0 (rows 200-211)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (200, 2))
    tied = np.column_stack([rng.normal(0, 1, 12), np.full(12, 4.0)])
    return np.vstack([X, tied])


def _start_on_the_tie():
    return dict(
        means_init=[[0.0, -0.5], [0.0, 0.5], [0.0, 4.0]],
        weights_init=[0.45, 0.45, 0.1],
        precisions_init=[[1.0, 1.0], [1.0, 1.0], [1.0, 100.0]],
    )


def test_gaussian_mixture_flags_a_component_on_tied_values():
    X = _tied_data()
    with pytest.warns(DegenerateComponentWarning) as caught:
        m = GaussianMixture(3, covariance_type="diag", **_start_on_the_tie()).fit(X)
    assert m.covariances_[2, 1] == pytest.approx(m.reg_covar, rel=1e-6)  # the floor
    assert m.degenerate_components_ == [2]
    msg = str(caught[0].message)
    assert "component 2" in msg and "feature 1" in msg and "on 12 row(s)" in msg
    assert "200, 201, 202" in msg  # the tied rows, by construction
    # the same data without the tie: no warning, nothing flagged
    X2 = X.copy()
    X2[200:, 1] += np.random.default_rng(5).normal(0, 0.5, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateComponentWarning)
        m2 = GaussianMixture(3, covariance_type="diag", **_start_on_the_tie()).fit(X2)
    assert m2.degenerate_components_ == []


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_degenerate_components_other_covariance_types(covariance_type):
    """A full covariance flat along a direction (a line of points) and a spherical one on a
    single repeated point are flagged; the scatter of an ordinary component is not."""
    data_cov = torch.eye(2, dtype=torch.float64)
    if covariance_type == "full":
        u = torch.tensor([1.0, 1.0], dtype=torch.float64) / 2**0.5
        scatter = torch.stack([torch.outer(u, u), torch.eye(2, dtype=torch.float64) * 0.3])
        found = degenerate_components(scatter, "full", data_cov, 1e-6)
        assert found == {0: None}  # flat along (1, -1), which is no single feature
    else:
        scatter = torch.tensor([0.0, 0.4], dtype=torch.float64)
        assert degenerate_components(scatter, "spherical", data_cov, 1e-6) == {0: None}
    assert degenerate_components(scatter[1:], covariance_type, data_cov, 1e-6) == {}


# ---------------------------------------------------------------------- overflow


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: GaussianMixture(2, dtype=dt),
        lambda dt: BayesianGaussianMixture(n_components=2, dtype=dt),
        lambda dt: GaussianHMM(2, dtype=dt),
        lambda dt: GMMHMM(2, n_mix=2, dtype=dt),
    ],
)
@pytest.mark.parametrize("dtype,scale", [("float64", 1e300), ("float32", 1e36)])
def test_overflowing_data_is_reported_as_overflow(make, dtype, scale):
    """Before: a DegenerateComponentError ("collapsed") or "zero probability under every state"."""
    X = _two_clusters(50, 2) * scale
    with pytest.raises(DataError, match=rf"overflow {dtype}.*rescale X"):
        make(dtype).fit(X)


@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_overflowing_sample_weight_is_reported_as_overflow(cls):
    X = _two_clusters(50, 2)
    with pytest.raises(DataError, match=r"sample_weight sums to inf.*overflow float64"):
        cls(n_components=2).fit(X, sample_weight=np.full(len(X), 1e308))


# ---------------------------------------------------------------------- edges


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianMixture(2),
        lambda: GaussianMixture(2, covariance_type="diag"),
        lambda: GaussianHMM(2),
    ],
)
@pytest.mark.parametrize("value", [5.0, 1e300])
def test_constant_data_gives_finite_parameters(make, value):
    """Constant data (far from the origin too): every variance is the regularisation, every
    parameter finite. Before: at 1e300 the mean rounded off the value (deviations 1e284, squares
    inf) and GaussianHMM's prior term computed 0 · inf = NaN."""
    X = np.full((20, 2), value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = make().fit(X)
    np.testing.assert_array_equal(m.means_, X[:2])
    cov = _covariances(m)
    assert np.all(np.isfinite(cov)) and np.isfinite(m.score(X))


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_gaussian_hmm_flags_a_state_on_tied_values(covariance_type):
    X = _tied_data()
    with pytest.warns(DegenerateComponentWarning, match=r"state \d \(on 12 row\(s\): 200, 201"):
        m = GaussianHMM(3, covariance_type=covariance_type, random_state=0, n_iter=100).fit(X)
    (k,) = m.degenerate_components_
    assert m.means_[k, 1] == pytest.approx(4.0)
    clean = np.random.default_rng(3).normal(0, 1, (300, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateComponentWarning)
        m2 = GaussianHMM(2, covariance_type=covariance_type, random_state=0).fit(clean)
    assert m2.degenerate_components_ == []


@pytest.mark.parametrize("family", ["normal", "mvn"])
def test_mixture_model_flags_a_component_on_tied_values(family):
    X = _tied_data()
    with pytest.warns(DegenerateComponentWarning, match=r"component \d \(on 12 row\(s\): 200"):
        m = MixtureModel(family, 3, random_state=0, n_init=5).fit(X)
    (k,) = m.degenerate_components_
    assert m.components_[k]["loc"][1] == pytest.approx(4.0)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_gmmhmm_on_identical_values_gives_finite_covariances(covariance_type):
    """hmmlearn's GMMHMM update has no floor: a mixture component on identical values got a
    zero variance and the next E-step raised "collapsed" naming reg_covar, which GMMHMM lacks."""
    for X in (np.full((20, 2), 5.0), np.repeat(_two_clusters(1, 2), 10, axis=0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = GMMHMM(2, n_mix=2, covariance_type=covariance_type, random_state=0).fit(X)
        assert np.all(np.isfinite(m.covars_)) and np.isfinite(m.score(X))


def test_bgmm_singular_default_prior_is_a_clear_error():
    """Two distinct points in two dimensions: the default covariance_prior (cov(X)) is singular.
    Before: float32 raised "component collapsed", float64 returned elbo_ from a singular prior."""
    X = np.repeat(_two_clusters(1, 2), 10, axis=0)
    for dt in ("float64", "float32"):
        with pytest.raises(DataError, match=r"lower-dimensional subspace.*covariance_prior"):
            BayesianGaussianMixture(n_components=3, dtype=dt).fit(X)
    # the same data with a covariance_prior fits
    m = BayesianGaussianMixture(n_components=2, covariance_prior=np.eye(2)).fit(X)
    assert np.isfinite(m.elbo_)


def test_bgmm_columns_on_scales_too_far_apart_are_named_as_such():
    """Found beside the state-space model's case: an int64 column holding -2**63 (a missing
    value as numpy can get it from an integer column) among values of -3 to 3 was refused as
    rows 'in a lower-dimensional subspace (... collinear columns)', which they are not: the
    columns' variances are 2.1e36 and ~4. The error says so and names the value."""
    X = np.random.default_rng(0).integers(-3, 4, size=(40, 3))
    X[0, 2] = -(2**63)
    with pytest.raises(DataError, match=r"scales too far apart") as err:
        BayesianGaussianMixture(n_components=2, random_state=0).fit(X)
    assert "row 0 (-8.99e+18 from its mean)" in str(err.value) and "subspace" not in str(err.value)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize("offset", [1e6, 1e7])
def test_factor_models_float32_far_from_the_origin_match_float64(cls, offset):
    """The starting mean was a float32 dot product (off by 3-16 at 1e7, its square added to
    the start's variances; FactorAnalysis' covariance then 16% off). Now the mean agrees to
    float32's spacing at the offset and the covariance to 1e-3 (float32 sums of 2000 rows)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 2)) @ rng.normal(size=(2, 5)) + rng.normal(0, 0.3, (2000, 5))
    X32 = (X + offset).astype(np.float32)
    fits = {
        dt: cls(n_components=2, dtype=dt, random_state=0, tol=1e-8, max_iter=2000).fit(
            X32.astype(dt)
        )
        for dt in ("float64", "float32")
    }
    spacing = float(np.spacing(np.float32(offset)))
    np.testing.assert_allclose(fits["float32"].mean_, fits["float64"].mean_, atol=spacing, rtol=0)
    c64, c32 = (fits[dt].get_covariance() for dt in ("float64", "float32"))
    assert np.abs(c32 - c64).max() <= 1e-3 * np.abs(c64).max()


def test_gmmhmm_float32_far_from_the_origin_matches_float64():
    """GMMHMM keeps its mixture means about the data mean during a fit (before: float32 means
    re-rounded to 0.0625 every iteration at 1e6, covariances 4% off). Means agree to float32's
    spacing at 1e6, covariances to 1%. (At 1e7 float32 data are integers, and a component
    collapses onto one of them in float64 too: nothing to compare there.)"""
    X = (_two_clusters() + 1e6).astype(np.float32)
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dt in ("float64", "float32"):
            fits[dt] = GMMHMM(2, n_mix=2, dtype=dt, random_state=0, n_iter=50).fit(X.astype(dt))
    m64, m32 = (np.sort(np.asarray(fits[dt].means_, np.float64).ravel()) for dt in fits)
    np.testing.assert_allclose(m32, m64, atol=0.0625 + 1e-2, rtol=0)
    c64, c32 = (np.sort(np.asarray(fits[dt].covars_, np.float64).ravel()) for dt in fits)
    np.testing.assert_allclose(c32, c64, rtol=1e-2)


def test_bgmm_flags_a_collapsed_component_only_without_a_real_prior():
    """The default covariance_prior (the data covariance) keeps every component off the floor;
    a tiny one lets the component on 12 identical rows (300-311) collapse, and it is flagged."""
    rng = np.random.default_rng(0)
    X = np.vstack(
        [
            rng.normal(0, 1, (200, 2)),
            rng.normal(0, 1, (100, 2)) + 10,
            np.full((12, 2), [-10.0, 10.0]),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateComponentWarning)
        m = BayesianGaussianMixture(n_components=3, covariance_type="full", random_state=0).fit(X)
    assert m.degenerate_components_ == []
    with pytest.warns(DegenerateComponentWarning, match=r"on 12 row\(s\): 300, 301"):
        m = BayesianGaussianMixture(
            n_components=3,
            covariance_type="full",
            random_state=0,
            covariance_prior=1e-9 * np.eye(2),
        ).fit(X)
    (k,) = m.degenerate_components_
    assert np.linalg.eigvalsh(m.covariances_[k])[0] <= 2 * m.reg_covar


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: GaussianMixture(2, dtype=dt, random_state=0, missing="marginalize"),
        lambda dt: GaussianHMM(2, dtype=dt, random_state=0, missing="marginalize", n_iter=50),
    ],
)
def test_missing_data_float32_far_from_the_origin_matches_float64(make):
    """The mean imputation that starts a fit with NaNs summed in float32 (means 2 and 2, or 1
    and 56, at 1e7). Means agree to float32's spacing at 1e7 (1.0), covariances to 1%."""
    rng = np.random.default_rng(0)
    X = _two_clusters(1000, 2)
    rng.shuffle(X)
    X = (X + 1e7).astype(np.float32).astype(np.float64)
    X[rng.random(X.shape) < 0.1] = np.nan
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dt in ("float64", "float32"):
            fits[dt] = make(dt).fit(X.astype(dt))
    m64, m32 = (np.sort(_means(fits[dt])[:, 0]) for dt in ("float64", "float32"))
    np.testing.assert_allclose(m32, m64, atol=1.0, rtol=0)
    assert abs(m64[0] - 1e7) < 0.2 and abs(m64[1] - 1e7 - 3) < 0.2
    c64, c32 = (np.sort(_covariances(fits[dt])[:, 0, 0]) for dt in ("float64", "float32"))
    np.testing.assert_allclose(c32, c64, rtol=1e-2)
