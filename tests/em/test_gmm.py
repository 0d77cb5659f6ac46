"""GaussianMixture against scikit-learn, brute force and its own invariants."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import latentfit
from latentfit import GaussianMixture
from latentfit.datasets import load_faithful
from latentfit.em.driver import EMMonotonicityWarning
from latentfit.em.gaussian import DegenerateComponentError
from latentfit.errors import DegenerateComponentWarning

TYPES = ["full", "tied", "diag", "spherical"]


def blobs(n=600, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    X = np.vstack(
        [
            rng.normal(size=(n // 2, 3)) + [5, 0, 0],
            rng.normal(size=(n // 3, 3)) * 0.5 - [0, 3, 1],
            rng.normal(size=(n - n // 2 - n // 3, 3)) * 2,
        ]
    )
    return X + offset


def start_from(X, ct, k=3, seed=1):
    """Starting parameters both libraries accept: a short scikit-learn fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        s = SKGaussianMixture(k, covariance_type=ct, random_state=seed, max_iter=2).fit(X)
    return dict(weights_init=s.weights_, means_init=s.means_, precisions_init=s.precisions_)


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_every_iteration_matches_sklearn(ct, offset):
    X = blobs(offset=offset)
    init = start_from(X, ct)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = SKGaussianMixture(3, covariance_type=ct, max_iter=25, tol=0, **init).fit(X)
        ours = GaussianMixture(3, covariance_type=ct, max_iter=25, tol=0, **init).fit(X)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.precisions_, ref.precisions_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    assert ours.n_iter_ == ref.n_iter_ == 25
    assert ours.bic(X) == pytest.approx(ref.bic(X), rel=1e-10)
    assert ours.aic(X) == pytest.approx(ref.aic(X), rel=1e-10)


@pytest.mark.parametrize("ct", ["full", "tied"])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_every_iteration_matches_sklearn_in_40_dimensions(ct, offset):
    """From d = 12 + 4k the E-step reads x − μ_k itself (direct_is_faster), not the d(d+1)/2
    features a row: the same fit as scikit-learn's, and as the features' (below the rule)."""
    from latentfit.em.gaussian import direct_is_faster

    assert direct_is_faster(40, 3, ct) and not direct_is_faster(3, 3, ct)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(40, 40)) * 0.3
    X = np.vstack([rng.normal(size=(300, 40)) @ mix + 3 * rng.normal(size=40) for _ in range(3)])
    X += offset
    init = start_from(X, ct)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = SKGaussianMixture(3, covariance_type=ct, max_iter=10, tol=0, **init).fit(X)
        ours = GaussianMixture(3, covariance_type=ct, max_iter=10, tol=0, **init).fit(X)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)


def test_moment_stats_in_blocks_and_from_the_rows_agree_with_one_pass():
    """moment_stats built every row's features at once (2.3 GB for 200,000 rows of 50
    columns); in blocks of rows, or from the rows themselves, the same sums."""
    from latentfit.em.gaussian import feature_stats, gaussian_features, moment_stats

    rng = np.random.default_rng(0)
    # 50,000 rows of 6: blocks of 19,418 (full, tied) and 43,690 rows (diag, spherical); 30
    # columns at 2 components: full and tied from the rows themselves (direct_is_faster)
    for n, d, k in ((50_000, 6, 3), (700, 30, 2)):
        X = torch.as_tensor(rng.normal(size=(n, d)))
        w = torch.as_tensor(rng.uniform(0.5, 2, n))
        resp = torch.as_tensor(rng.dirichlet(np.ones(k), n)) * w.unsqueeze(1)
        for ct in TYPES:
            want = feature_stats(gaussian_features(X, ct), w, resp.T, ct, d)
            got = moment_stats(X, w, resp, ct)
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("ct", TYPES)
def test_convergence_and_labels_match_sklearn_on_faithful(ct):
    X = load_faithful().data.numpy()
    init = start_from(X, ct, k=2)
    ref = SKGaussianMixture(2, covariance_type=ct, **init).fit(X)
    ours = GaussianMixture(2, covariance_type=ct, **init).fit(X)
    assert ours.converged_ and ref.converged_
    assert ours.n_iter_ == ref.n_iter_
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-9)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_log_density_equals_scipy():
    from scipy.stats import multivariate_normal

    X = blobs(90)
    gm = GaussianMixture(3, random_state=0).fit(X)
    dens = sum(
        w * multivariate_normal(m, c).pdf(X)
        for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_, strict=True)
    )
    np.testing.assert_allclose(gm.score_samples(X), np.log(dens), rtol=1e-10)


@pytest.mark.parametrize("ct", TYPES)
def test_integer_sample_weights_equal_repeated_rows(ct):
    X = blobs(120, seed=3)
    w = np.random.default_rng(0).integers(0, 4, size=len(X))
    init = start_from(X, ct)
    a = GaussianMixture(3, covariance_type=ct, max_iter=10, tol=0, **init).fit(X, sample_weight=w)
    b = GaussianMixture(3, covariance_type=ct, max_iter=10, tol=0, **init).fit(np.repeat(X, w, 0))
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
    ct=st.sampled_from(TYPES),
    n=st.integers(8, 60),
)
def test_em_never_lowers_the_log_likelihood(seed, k, ct, n):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)) * rng.uniform(0.1, 5, size=2) + rng.normal(size=2) * 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", EMMonotonicityWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(k, covariance_type=ct, max_iter=30, tol=0, random_state=seed).fit(X)
    assert np.all(np.isfinite(gm.means_)) and np.all(np.isfinite(gm.covariances_))
    # The driver's check (warnings raised as errors above) allows only rounding plus the
    # documented reg_covar slack; the recorded history shows the same.
    bounds = np.array(gm.lower_bounds_)
    slack = 1e-9 * np.maximum(1, np.abs(bounds[1:])) + 1e-6 * 50  # reg_covar · Σ π tr(Λ) bound
    assert np.all(np.diff(bounds) >= -slack)


@pytest.mark.parametrize("ct", TYPES)
def test_exact_em_is_monotone_to_rounding(ct):
    """Without reg_covar the M-step is the exact maximiser: no decrease beyond rounding."""
    X = blobs(300, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            3,
            covariance_type=ct,
            reg_covar=0,
            init_params="random",
            max_iter=60,
            tol=0,
            random_state=0,
        ).fit(X)
    bounds = np.array(gm.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))
    assert bounds[-1] > bounds[0]  # and it did climb


def test_n_init_keeps_the_best_run():
    X = blobs(300, seed=4)
    gm = GaussianMixture(3, n_init=4, init_params="random", random_state=0, max_iter=200).fit(X)
    finals = [b[-1] for b in gm.all_lower_bounds_]
    assert len(finals) == 4
    assert gm.lower_bound_ == max(finals)
    assert gm.lower_bounds_ == gm.all_lower_bounds_[gm.best_init_]


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_finds_the_three_blobs(init):
    X = blobs(600, seed=5)
    gm = GaussianMixture(3, init_params=init, n_init=3, random_state=0).fit(X)
    centers = sorted(gm.means_.round(0)[:, 0].tolist())
    assert centers == pytest.approx([0, 0, 5], abs=1.0)


def test_same_random_state_gives_the_same_fit_and_warm_start_continues():
    X = blobs(300, seed=6)
    a = GaussianMixture(3, random_state=7).fit(X)
    b = GaussianMixture(3, random_state=7).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = GaussianMixture(3, random_state=7, max_iter=3, warm_start=True, tol=0).fit(X)
        first = list(c.lower_bounds_)
        c.fit(X)
    assert c.lower_bounds_[0] >= first[-1] - 1e-12  # continues where it stopped


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_a_warm_start_driven_one_iteration_at_a_time_converges_as_sklearn(ct):
    """scikit-learn measures a warm start's first change from the previous fit's
    lower_bound_: fit(max_iter=1) in a loop stops once converged_. The change used to be
    measured from -inf, so converged_ stayed False and every call warned."""
    X = blobs(300, seed=6)
    init = start_from(X, ct)
    kw = dict(covariance_type=ct, max_iter=1, warm_start=True, tol=1e-4, **init)
    ref, ours = SKGaussianMixture(3, **kw), GaussianMixture(3, **kw)
    seen = {"ref": [], "ours": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(200):
            for name, m in (("ref", ref), ("ours", ours)):
                m.fit(X)
                seen[name].append((m.converged_, m.n_iter_, m.lower_bound_))
            if ref.converged_:
                break
    assert ref.converged_ and ours.converged_ and len(seen["ref"]) > 3
    assert [s[:2] for s in seen["ours"]] == [s[:2] for s in seen["ref"]]
    ref_bounds, our_bounds = ([s[2] for s in seen[n]] for n in ("ref", "ours"))
    np.testing.assert_allclose(our_bounds, ref_bounds, rtol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8, atol=1e-8)


def test_bad_input_gets_clear_errors():
    X = blobs(30)
    bad = X.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 4, column 2"):
        GaussianMixture(2).fit(bad)
    bad[4, 2] = np.inf
    with pytest.raises(ValueError, match=r"inf at row 4, column 2"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        GaussianMixture(2).fit(X[:, 0])
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(40).fit(X)
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        GaussianMixture(0).fit(X)
    w = np.ones(len(X))
    w[7] = -1
    with pytest.raises(ValueError, match="sample 7 has weight -1"):
        GaussianMixture(2).fit(X, sample_weight=w)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="banana").fit(X)
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(X[:, :2])


def test_a_number_as_sample_weight_weights_every_sample_as_scikit_learn_does():
    # scikit-learn's _check_sample_weight: a number is that weight for every sample, which
    # for a mixture is the unweighted fit; NaN in weights is not missing data
    X = np.random.default_rng(0).normal(size=(60, 2))
    want = GaussianMixture(2, random_state=0).fit(X)
    for w in (2.0, np.float32(0.5), 3):
        got = GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
        np.testing.assert_allclose(got.means_, want.means_, rtol=1e-10)
    for w, match in ((0.0, "sums to zero"), (-1.0, "non-negative"), (True, r"shape \(60,\)")):
        with pytest.raises(ValueError, match=match):
            GaussianMixture(2).fit(X, sample_weight=w)
    with pytest.raises(ValueError, match=r"NaN at entry 0: every value must be finite$"):
        GaussianMixture(2).fit(X, sample_weight=np.full(60, np.nan))
    with pytest.raises(ValueError, match=r"means_init contains NaN .* must be finite$"):
        GaussianMixture(2, means_init=[[0.0, np.nan], [1.0, 1.0]]).fit(X)


def test_collapsed_component_is_named_and_never_nan():
    X = np.vstack([np.random.default_rng(0).normal(size=(40, 2)), np.ones((5, 2)) * 10])
    means = np.array([[0.0, 0.0], [10.0, 10.0]])
    start = dict(
        means_init=means, weights_init=[0.5, 0.5], precisions_init=np.stack([np.eye(2)] * 2)
    )
    gm = GaussianMixture(2, reg_covar=0, **start)
    with pytest.raises(DegenerateComponentError, match=r"component\(s\) \[1\].*reg_covar"):
        gm.fit(X)
    assert not hasattr(gm, "means_")  # nothing half-fitted is left behind
    # the default reg_covar keeps it positive definite, and the fit says it is degenerate
    with pytest.warns(DegenerateComponentWarning, match=r"component 1 \(on 5 row\(s\): 40, 41"):
        ok = GaussianMixture(2, **start).fit(X)
    assert np.all(np.isfinite(ok.covariances_))
    assert ok.covariances_[1].diagonal() == pytest.approx([1e-6, 1e-6], rel=1e-3)
    assert ok.degenerate_components_ == [1]


@pytest.mark.parametrize("ct", TYPES)
def test_float32_variances_stay_positive_far_from_the_origin(ct):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(1e4, 1e-2, 500), np.full(500, 3e3)]).astype(np.float32)
    gm = GaussianMixture(2, covariance_type=ct, dtype="float32", random_state=0).fit(X)
    cov = np.asarray(gm.covariances_)
    diag = cov.diagonal(axis1=-2, axis2=-1) if ct in ("full", "tied") else cov
    assert np.all(diag > 0) and np.all(np.isfinite(gm.means_))
    assert gm.means_.dtype == np.float32
    assert abs(gm.means_[:, 0].mean() - 1e4) < 1


def test_float32_agrees_with_float64():
    X = blobs(400, seed=8)
    init = start_from(X, "full")
    a = GaussianMixture(3, max_iter=20, tol=0, **init).fit(X)
    b = GaussianMixture(3, max_iter=20, tol=0, dtype="float32", **init).fit(X)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-5)  # float32 rounding


def test_unused_component_keeps_its_parameters():
    X = blobs(200, seed=9)
    means = np.array([[5.0, 0, 0], [0, -3, -1], [1e3, 1e3, 1e3]])  # the third is far from all data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type="diag", means_init=means, max_iter=5).fit(X)
    assert np.all(np.isfinite(gm.means_)) and np.all(np.isfinite(gm.covariances_))
    assert gm.weights_[2] < 1e-10
    np.testing.assert_allclose(gm.means_[2], means[2])


def test_save_and_load_round_trip(tmp_path):
    X = blobs(200, seed=10)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    path = gm.save(tmp_path / "model.lf")
    back = latentfit.load(path)
    assert type(back) is GaussianMixture and back.get_params() == gm.get_params()
    np.testing.assert_array_equal(back.score_samples(X), gm.score_samples(X))
    assert back.lower_bounds_ == gm.lower_bounds_ and back.n_iter_ == gm.n_iter_
    assert [p.name for p in tmp_path.iterdir()] == ["model.lf"]  # no temporary left over


def test_load_refuses_foreign_and_future_files(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a latentfit model"):
        latentfit.load(other)
    gm = GaussianMixture(2, random_state=0).fit(blobs(60))
    path = gm.save(tmp_path / "m.lf")
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["latentfit"])
    header["format_version"] = 99
    save_file(load_file(str(path)), str(path), metadata={"latentfit": json.dumps(header)})
    with pytest.raises(ValueError, match="format version 99"):
        latentfit.load(path)
    (tmp_path / "junk.lf").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a latentfit model file"):
        latentfit.load(tmp_path / "junk.lf")


def test_sample_reproduces_the_fitted_moments():
    X = blobs(600, seed=11)
    gm = GaussianMixture(3, random_state=0).fit(X)
    S, y = gm.sample(20_000)
    assert S.shape == (20_000, 3) and np.all(np.diff(y) >= 0)
    mix_mean = gm.weights_ @ gm.means_
    # standard error of a mean of 20,000 draws with variance < 10 is < 0.03; allow 5 of them
    np.testing.assert_allclose(S.mean(0), mix_mean, atol=0.15)
    np.testing.assert_allclose(np.bincount(y) / 20_000, gm.weights_, atol=0.02)


def test_fits_on_every_device(device):
    X = blobs(200, seed=12)
    init = start_from(X, "full")
    cpu = GaussianMixture(3, max_iter=10, tol=0, **init).fit(X)
    dev = GaussianMixture(3, max_iter=10, tol=0, device=device, **init).fit(X)
    np.testing.assert_allclose(dev.lower_bounds_, cpu.lower_bounds_, rtol=1e-9)


def test_monotonicity_check_warns_on_a_decreasing_bound():
    from latentfit.em.driver import run_em

    class Broken:
        """An 'EM' whose bound goes down: the driver must say so, with the iteration."""

        def initialize(self, data, generator):
            return {"t": torch.tensor(0.0, dtype=torch.float64)}

        def estep(self, params, batch):
            return {"x": params["t"].clone()}

        def mstep(self, params, stats):
            return {"t": params["t"] + 1}

        def lower_bound(self, params, stats):
            return -float(stats["x"])

    with pytest.warns(EMMonotonicityWarning, match="decreased at iteration 2"):
        with pytest.warns(ConvergenceWarning):
            run_em(Broken(), [None], max_iter=3, tol=0)


def test_a_bound_cycling_at_the_rounding_of_float32_is_converged_not_run_to_max_iter():
    # a float32 CAVI fit of 2000 rows near 1e7 (tests/em/test_numerics.py) cycled with
    # period 5 at ~700 ulps of its bound for all of its 500 iterations on one CPU, and
    # reported converged_=False with a warning to raise max_iter, which could not help
    from latentfit.em.driver import run_em

    cycle = [-1736.3921, -1736.4749, -1736.3865, -1736.3965, -1736.3958]

    class Cycling:
        def initialize(self, data, generator):
            return {"t": torch.tensor(0, dtype=torch.float32)}

        def estep(self, params, batch):
            return {"t": params["t"].clone()}

        def mstep(self, params, stats):
            return {"t": params["t"] + 1}

        def lower_bound(self, params, stats):
            t = int(stats["t"])
            return -1800.0 + 10 * t if t < 6 else cycle[t % 5]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning
        result = run_em(Cycling(), [None], max_iter=500, tol=1e-6)
    assert result.converged and result.n_iter == 12  # the first repeat, five after t = 6

    class Climbing(Cycling):  # repeats a value but still moving by more than rounding
        def lower_bound(self, params, stats):
            t = int(stats["t"])
            return [-100.0, -50.0][t % 2] if t < 40 else 0.0

    with pytest.warns(ConvergenceWarning):
        assert not run_em(Climbing(), [None], max_iter=30, tol=1e-6).converged
    with pytest.warns(ConvergenceWarning):  # tol=0 asks for every iteration
        assert run_em(Cycling(), [None], max_iter=30, tol=0).n_iter == 30


def test_an_m_step_that_gives_non_finite_parameters_stops_the_fit_by_name():
    from latentfit.em.driver import NonFiniteLowerBoundError, run_em

    class Lost:
        """An M-step that loses a component at its third iteration (0/0): no NaN parameter may
        reach the model, even where every bound was finite."""

        def initialize(self, data, generator):
            return {"loc": torch.zeros(2, dtype=torch.float64), "n": torch.tensor(3)}

        def estep(self, params, batch):
            return {"mass": torch.tensor([1.0, 1.0 - float(params["n"] <= 1)], dtype=torch.float64)}

        def mstep(self, params, stats):
            return {"loc": params["loc"] + 1 / stats["mass"] - 1, "n": params["n"] - 1}

        def lower_bound(self, params, stats):
            return float(params["n"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bound made up here goes down
        with pytest.raises(NonFiniteLowerBoundError, match=r"iteration 3 .* non-finite loc"):
            run_em(Lost(), [None], max_iter=10, tol=-1)


def test_a_gmmhmm_whose_mixture_component_loses_its_rows_stores_no_nan():
    # found by the property tests: 3 rows for 3 states of 2 components; the last M-step gave
    # NaN covariances, which the model stored after a fit that raised nothing. The driver now
    # refuses such a step (test above), and the covariance lift (39e0aff) keeps this fit's
    # near-singular covariances factorable, so the fit completes with finite parameters.
    from latentfit import GMMHMM

    X = np.array([[1.19096772, 4.68920882], [2.09249336, 4.40222321], [1.68060762, -5.96907317]])
    model = GMMHMM(n_components=3, n_iter=5, n_mix=2, covariance_type="full", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    assert np.isfinite(model.covars_).all() and np.isfinite(model.means_).all()
    assert np.isfinite(model.score(X))


def test_labels_fix_responsibilities_and_equal_the_supervised_mle():
    X = blobs(300, seed=13)
    truth = GaussianMixture(3, random_state=0).fit_predict(X)
    # Every sample labelled: one M-step gives the per-class MLE, and nothing moves afterwards.
    gm = GaussianMixture(3, random_state=0).fit(X, labels=truth)
    for k in range(3):
        rows = X[truth == k]
        np.testing.assert_allclose(gm.means_[k], rows.mean(0), rtol=1e-10)
        cov = np.cov(rows.T, bias=True) + 1e-6 * np.eye(3)
        np.testing.assert_allclose(gm.covariances_[k], cov, rtol=1e-8, atol=1e-12)
        assert gm.weights_[k] == pytest.approx(np.mean(truth == k), rel=1e-10)
    # The bound is the complete-data log-likelihood of the labelled samples.
    lp = gm._weighted_log_prob(torch.as_tensor(X)).numpy()
    assert gm.lower_bound_ == pytest.approx(lp[np.arange(len(X)), truth].mean(), rel=1e-10)
    # On well-separated clusters a few labels decide which component is which.
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    cls = np.repeat([0, 1, 2], 60)
    Y = centers[cls] + rng.normal(size=(180, 2))
    some = np.full(len(Y), -1)
    for k in range(3):
        some[np.flatnonzero(cls == k)[:3]] = (k + 1) % 3
    for seed in range(3):
        part = GaussianMixture(3, random_state=seed).fit(Y, labels=some)
        np.testing.assert_array_equal(part.predict(Y), (cls + 1) % 3)
    with pytest.raises(ValueError):
        GaussianMixture(3).fit(X, labels=np.full(len(X), 3))


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_no_more_rows_than_columns_warns_that_reg_covar_sets_the_likelihood(covariance_type):
    # 3 rows in 10 columns: the data's own covariance is singular, so no component is flagged
    # degenerate, but the likelihood is made by reg_covar
    X = np.random.default_rng(0).normal(size=(3, 10))
    with pytest.warns(DegenerateComponentWarning, match=r"3 rows for 10 columns.*reg_covar"):
        GaussianMixture(1, covariance_type=covariance_type, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateComponentWarning)
        GaussianMixture(1, covariance_type="diag", random_state=0).fit(X)  # no such warning
        GaussianMixture(1, covariance_type=covariance_type, random_state=0).fit(
            np.random.default_rng(1).normal(size=(11, 10))
        )


# ------------------------------------------------------------------ warm starts and edited attributes
def _two_blobs():
    rng = np.random.default_rng(0)
    return np.r_[rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + 10]


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("n_components", 3, "n_components was set to 3 after the fit.*n_components = 2"),
        ("covariance_type", "diag", "covariance_type was set to 'diag' after the fit"),
    ],
)
def test_a_warm_start_refuses_settings_changed_since_the_fit(setting, value, match, tmp_path):
    from latentfit.errors import ParameterError

    X = _two_blobs()
    m = GaussianMixture(2, warm_start=True, max_iter=5, random_state=0).fit(X)
    means = m.means_.copy()
    m.set_params(**{setting: value})
    with pytest.raises(ParameterError, match=match):
        m.fit(X)
    with pytest.raises(ParameterError, match=match):  # nor used as if it had them
        m.predict(X)
    np.testing.assert_array_equal(m.means_, means)
    m.set_params(warm_start=False).fit(X)  # a fresh fit takes the new setting
    assert getattr(m, setting) == value and m.means_.shape[0] == m.n_components
    back = latentfit.load(m.save(tmp_path / "w.lfm"))
    np.testing.assert_allclose(back.score_samples(X), m.score_samples(X))


def test_a_warm_start_refuses_data_of_another_width_and_keeps_the_model():
    from latentfit.errors import DataError

    X = _two_blobs()
    m = GaussianMixture(2, warm_start=True, max_iter=5, random_state=0).fit(X)
    with pytest.raises(DataError, match=r"X has 3 features, but warm_start=True.*has 2"):
        m.fit(np.c_[X, X[:, :1]])
    assert m.n_features_in_ == 2
    m.predict(X)


@pytest.mark.parametrize("ct", TYPES)
def test_parameters_set_by_hand_are_used_as_in_scikit_learn(ct):
    """Setting a fitted model's public attributes (here: scikit-learn's fitted ones, with or
    without its precisions) changes what it predicts and scores, and the other attributes
    follow."""
    X = blobs()
    sk = SKGaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    for names in (("covariances_",), ("covariances_", "precisions_", "precisions_cholesky_")):
        m = GaussianMixture(3, covariance_type=ct, random_state=5, max_iter=2).fit(X[:100])
        m.weights_, m.means_ = sk.weights_, sk.means_
        for name in names:
            setattr(m, name, getattr(sk, name))
        np.testing.assert_allclose(m.score_samples(X), sk.score_samples(X), rtol=1e-10)
        np.testing.assert_array_equal(m.predict(X), sk.predict(X))
        np.testing.assert_allclose(m.precisions_cholesky_, sk.precisions_cholesky_, atol=1e-10)


def test_swapped_means_swap_the_predictions_and_partial_fit_continues_from_them():
    X = _two_blobs()
    m = GaussianMixture(2, random_state=0).fit(X)
    labels = m.predict(X)
    m.means_ = m.means_[::-1]
    np.testing.assert_array_equal(m.predict(X), 1 - labels)
    means = m.means_.copy()
    m.partial_fit(X)
    np.testing.assert_allclose(m.means_, means, atol=0.5)  # moved from the edited means


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: setattr(m, "weights_", [np.nan, 1.0]), "weights_ contains NaN"),
        (
            lambda m: setattr(m, "weights_", [0.3, 0.3]),
            "weights_ must be non-negative and sum to 1",
        ),
        (lambda m: setattr(m, "covariances_", np.nan), "covariances_ contains NaN"),
        (lambda m: setattr(m, "covariances_", -m.covariances_), "covariances_ must be symmetric"),
        (lambda m: setattr(m, "means_", np.ones((5, 2))), r"means_ must have shape \(2, 2\)"),
        (lambda m: m.means_.__setitem__((0, 0), np.inf), "means_ contains inf"),
        (lambda m: setattr(m, "precisions_", m.precisions_ * -1), "precisions_ must be symmetric"),
        (
            lambda m: setattr(m, "precisions_cholesky_", np.ones((2, 2, 2))),
            "precisions_cholesky_ must be triangular",
        ),
        (
            lambda m: (
                setattr(m, "precisions_", m.precisions_ * 2),
                setattr(m, "covariances_", m.covariances_),
            ),
            "never",  # covariances_ reassigned unchanged: not an edit, precisions_ is taken
        ),
        (
            lambda m: (
                setattr(m, "precisions_", m.precisions_ * 2),
                setattr(m, "covariances_", m.covariances_ * 3),
            ),
            "precisions_ and covariances_ were both changed",
        ),
        (lambda m: delattr(m, "means_"), "means_ was deleted"),
    ],
)
def test_a_bad_edit_of_a_fitted_attribute_is_refused_by_every_use(edit, match, tmp_path):
    from latentfit.errors import ParameterError

    X = _two_blobs()
    m = GaussianMixture(2, random_state=0).fit(X)
    edit(m)
    if match == "never":
        m.predict(X)
        np.testing.assert_allclose(
            m.covariances_, latentfit.load(m.save(tmp_path / "e.lfm")).covariances_
        )
        return
    for use in (
        m.predict,
        m.score_samples,
        lambda X: m.sample(2),
        lambda X: m.save(tmp_path / "e.lfm"),
    ):
        with pytest.raises(ParameterError, match=match):
            use(X)
    assert not (tmp_path / "e.lfm").exists()


def test_an_edited_model_saves_what_it_predicts_with(tmp_path):
    X = _two_blobs()
    m = GaussianMixture(2, random_state=0).fit(X)
    m.means_ = m.means_ + 1.0
    back = latentfit.load(m.save(tmp_path / "e.lfm"))
    np.testing.assert_allclose(back.means_, m.means_)
    np.testing.assert_allclose(back.score_samples(X), m.score_samples(X))


def test_data_whose_moments_overflow_is_named_on_every_path_not_called_a_collapse():
    # fit checks the data's second moments; a streamed source and partial_fit did not, and
    # met the overflow as "the component has collapsed"
    from latentfit.em.sources import ArraySource

    X = np.random.default_rng(0).normal(size=(200, 2)) * 1e160
    match = "column 1 of X spans .* overflow float64"
    with pytest.raises(latentfit.errors.DataError, match=match):
        GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(latentfit.errors.DataError, match="^data: " + match):  # the whole pass
        GaussianMixture(2, random_state=0).fit(ArraySource(X))
    with pytest.raises(latentfit.errors.DataError, match=match):
        GaussianMixture(2, random_state=0).partial_fit(X)
    fitted = GaussianMixture(2, random_state=0).partial_fit(X / 1e160)
    means = fitted.means_.copy()
    with pytest.raises(latentfit.errors.DataError, match=match):
        fitted.partial_fit(X)
    np.testing.assert_array_equal(fitted.means_, means)  # the model as it was


def test_sampling_a_float32_component_on_as_many_points_as_dimensions():
    # found by the property tests: three points in three dimensions per component, float32;
    # the covariance recomputed from the fitted precision factor had an eigenvalue of -8.5e-7
    # and sample() ended in torch's _LinAlgError. It now samples with that factor itself.
    X = np.array(
        [
            [-0.74092089, -3.30162133, 1.84930125],
            [-1.80053019, -2.89713853, 0.56206433],
            [-0.20776677, -3.22260585, 1.49167512],
            [0.93613112, -1.6358335, 1.67944061],
            [1.89096406, -3.34354154, 2.15948534],
            [1.42797077, -2.58433457, 1.06447603],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(2, dtype="float32", max_iter=15, random_state=0).fit(X)
    S, labels = model.sample(50)
    assert S.shape == (50, 3) and np.isfinite(S).all() and set(labels) <= {0, 1}


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_samples_have_the_fitted_moments(covariance_type):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    Y = rng.multivariate_normal([1.0, 2.0, 3.0], A @ A.T + np.eye(3), size=2000)
    model = GaussianMixture(1, covariance_type=covariance_type, random_state=0).fit(Y)
    S, _ = model.sample(200_000)
    cov = np.asarray(model.covariances_).reshape(3, 3)
    # Monte Carlo error of a covariance entry ~ sqrt(2 / n) x its scale: ~0.003 x 3 here
    assert np.abs(np.cov(S.T) - cov).max() < 0.05
    assert np.abs(S.mean(0) - model.means_[0]).max() < 0.02


def test_a_gmmhmm_state_of_one_component_weighs_exactly_one(tmp_path):
    # found by the property tests: twelve identical rows; a state's posterior mass fell to
    # 1.4e-14, and (n + α) − 1 with α = 1 lost its digits: weight 0.9988, a file load refused
    import latentfit
    from latentfit import GMMHMM

    X = np.tile([[5.31463543, -2.20868196]], (12, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GMMHMM(n_components=3, n_iter=5, random_state=0).fit(X)
    assert np.array_equal(model.weights_, np.ones((3, 1)))
    model.save(tmp_path / "m.lf")
    latentfit.load(tmp_path / "m.lf")


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_a_component_far_from_the_centre_is_computed_about_its_own_mean(ct):
    # found by hand (a helper's hunt): rows 3, 5, 7 and two rows of 1e8 gave the small
    # component variance 1e-6 (2.67 is right) and a log-likelihood of -4.9e6 (2.88), because
    # the E-step's quadratic forms about the data's centre round by ~8e5 nats there. Such
    # components are now computed from x - mu_k, their moments about mu_k.
    X = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the two rows of 1e8
        m = GaussianMixture(2, covariance_type=ct, random_state=0).fit(X)
    var = np.sort(np.ravel(m.covariances_))
    assert var[1] == pytest.approx(8 / 3 + 1e-6, rel=1e-9)
    assert m.score(X) * 5 == pytest.approx(2.8845157, abs=1e-6)


def test_a_tied_covariance_with_a_component_far_from_the_centre_is_pooled_about_each_mean():
    # found by hand: the tied covariance was pooled about the data's centre, which rounds by
    # ~2 there: variance 1e-6 (reg_covar) and a warning; now every component is taken about
    # its own mean once one is too far: (sum over 3, 5, 7 of (x - 5)^2) / 5, exactly
    X = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = GaussianMixture(2, covariance_type="tied", random_state=0).fit(X)
    var = 1.6 + 1e-6
    assert m.covariances_[0, 0] == pytest.approx(var, rel=1e-12)
    order = np.argsort(m.means_[:, 0])
    w = m.weights_[order]
    want = 2 * np.log(w[1] * stats.norm.pdf(0, scale=np.sqrt(var))) + sum(
        np.log(w[0] * stats.norm.pdf(x, 5, np.sqrt(var))) for x in (3, 5, 7)
    )
    assert m.score(X) * 5 == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_tied_covariance_of_tight_clusters_far_apart_matches_the_pooled_scatter(dtype):
    # two clusters of sd 0.01 at 0 and 100: float32 gave the pooled variance reg_covar
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(100, 0.01, (200, 2))]
    a, b = X[:200] - X[:200].mean(0), X[200:] - X[200:].mean(0)
    want = (a.T @ a + b.T @ b) / 400 + 1e-6 * np.eye(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = GaussianMixture(2, covariance_type="tied", dtype=dtype, random_state=0).fit(X)
    tol = 1e-9 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(m.covariances_, want, rtol=tol, atol=tol * want.max())


@pytest.mark.parametrize("sep", [10.0, 100.0, 1e4])
def test_float32_fits_a_tight_cluster_far_from_the_others_as_scikit_learn_does(sep):
    # a cluster of sd 0.01 at 0 and one of sd 1 at sep: float32 gave the tight one the
    # variance reg_covar and a score of -134 (sep 100; 1.14 is right), with a warning
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(sep, 1, (200, 2))]
    ref = SKGaussianMixture(2, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = GaussianMixture(2, dtype="float32", random_state=0).fit(X)
    got = np.sort([c[0, 0] for c in m.covariances_])
    want = np.sort([c[0, 0] for c in ref.covariances_])
    np.testing.assert_allclose(got, want, rtol=2e-3)  # float32 rounds the wide one
    assert m.score(X) == pytest.approx(ref.score(X), abs=1e-4)


def _one_row_far_away(d, far=1e17):
    """59 rows near 2.4 and one row at ``far``: the data's centre is far from both groups."""
    rng = np.random.default_rng(0)
    return np.r_[rng.normal(2.4, 1, (59, d)), np.full((1, d), far)]


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
@pytest.mark.parametrize("d", [1, 2])
def test_a_group_far_from_the_data_centre_keeps_the_digits_of_its_mean(
    ct, d, tmp_path, monkeypatch
):
    # the means were kept as c + (mu_k - c) with c the data's mean (1.7e15), so every mean
    # rounded to the spacing of c, 0.25: the group near 2.4 got the mean 2.5 (2.4898 is
    # right; 4.0 with the far row at 2e18) and a score 0.2 nats a row off
    monkeypatch.chdir(tmp_path)
    X = _one_row_far_away(d)
    prec = {"full": np.tile(np.eye(d), (2, 1, 1)), "diag": np.ones((2, d)), "spherical": [1, 1]}
    init = dict(weights_init=[0.5, 0.5], means_init=[[0] * d, [1e17] * d])
    init["precisions_init"] = np.asarray(prec[ct], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the one far row
        m = GaussianMixture(2, covariance_type=ct, tol=1e-10, **init).fit(X)
    ref = SKGaussianMixture(2, covariance_type=ct, tol=1e-10, **init).fit(X)
    # the near group against scikit-learn; scikit-learn's own far component is off (its
    # mean is the row / (1 + 10 eps), 222 below it), so that one against its closed form:
    # the row itself, with the variance reg_covar
    np.testing.assert_allclose(m.means_[0], ref.means_[0], rtol=1e-9)
    np.testing.assert_allclose(m.means_[0], X[:59].mean(0), rtol=1e-9)
    np.testing.assert_allclose(m.covariances_[0], ref.covariances_[0], rtol=1e-9)
    np.testing.assert_allclose(m.weights_, ref.weights_, rtol=1e-9)
    np.testing.assert_array_equal(m.means_[1], X[59])

    def cov(c):  # (d, d) from any type's storage
        return {"full": c, "diag": np.diag(np.atleast_1d(c)), "spherical": c * np.eye(d)}[ct]

    np.testing.assert_allclose(cov(m.covariances_[1]), 1e-6 * np.eye(d), rtol=1e-9)
    near = stats.multivariate_normal(ref.means_[0], cov(ref.covariances_[0]))
    far = stats.multivariate_normal(X[59], 1e-6 * np.eye(d))
    want = np.logaddexp(
        np.log(ref.weights_[0]) + near.logpdf(X), np.log(ref.weights_[1]) + far.logpdf(X)
    )
    np.testing.assert_allclose(m.score_samples(X), want, rtol=1e-9)
    np.testing.assert_allclose(m.predict_proba(X), np.eye(2)[[0] * 59 + [1]], atol=1e-12)
    S, labels = m.sample(4000)
    assert abs(S[labels == 0].mean() - X[:59].mean()) < 0.1  # the draws of the near group

    loaded = latentfit.load(m.save("m.lf"))  # the saved file keeps the digits
    np.testing.assert_array_equal(loaded.means_, m.means_)
    np.testing.assert_allclose(loaded.score_samples(X), want, rtol=1e-9)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_float32_gives_a_row_far_away_none_of_a_group_near_the_origin(ct):
    # float32 responsibilities below e^-80 were raised to e^-80 (for speed: their exp is
    # subnormal): the row at 1e17 then weighed 1.8e-35 * (1e17 - 2.5)^2 into the group near
    # 2.4 and the group as much into the row's component, whose variance came out 10.6
    # (reg_covar, 1e-6, is right) and the group's 0.8127 (0.8097)
    X = _one_row_far_away(1)
    ref = SKGaussianMixture(2, covariance_type=ct, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the one far row
        m = GaussianMixture(2, covariance_type=ct, dtype="float32", random_state=0).fit(X)
    var = np.ravel(m.covariances_)
    assert var[1] == pytest.approx(1e-6, rel=1e-5)
    assert var[0] == pytest.approx(float(np.ravel(ref.covariances_)[0]), rel=1e-5)
    np.testing.assert_allclose(m.means_[0], ref.means_[0], rtol=1e-6)


@pytest.mark.parametrize("source", [False, True])
@pytest.mark.parametrize("ct", TYPES)
def test_float32_starts_a_group_far_from_the_data_centre_at_its_own_mean(ct, source):
    # 199 rows near 0 and one row at 2e18, all of weight 0.1 (the sums stay below float32's
    # largest number): the start took the group's mean from x - c, c = 1e16, which float32
    # rounds to its spacing there (1e9): the group started at -6.4e9 with the variance
    # reg_covar, and EM gave it no row (a mean of -6.4e9, weight 1e-16). The group is now
    # started, as the E-step computes it, from the rows themselves
    from latentfit.em.sources import ArraySource

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (200, 2))
    X[7, 1] = 2e18
    w = np.full(200, 0.1)
    near = np.delete(X, 7, 0)
    cov = np.cov(near.T, bias=True) + 1e-6 * np.eye(2)  # its closed form
    want = {"full": cov, "diag": np.diag(cov), "spherical": np.diag(cov).mean()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the one far row
        m = GaussianMixture(2, covariance_type=ct, dtype="float32", random_state=0)
        m.fit(ArraySource(X, sample_weight=w)) if source else m.fit(X, sample_weight=w)
    i = int(np.argmin(np.abs(m.means_[:, 1])))
    np.testing.assert_allclose(m.means_[i], near.mean(0), atol=1e-6)  # float32's rounding
    np.testing.assert_array_equal(m.means_[1 - i], X[7].astype(np.float32))
    np.testing.assert_allclose(m.weights_[i], 199 / 200, rtol=1e-6)
    if ct == "tied":  # pooled over both groups, the far row adding nothing
        np.testing.assert_allclose(
            m.covariances_, (cov - 1e-6 * np.eye(2)) * 0.995 + 1e-6 * np.eye(2), rtol=1e-5
        )
    else:
        np.testing.assert_allclose(m.covariances_[i], want[ct], rtol=1e-5)


def test_full_log_densities_in_blocks_of_rows_match_torch_distributions():
    """log_gaussian_prob takes full covariances in blocks of ~4M numbers (here 256 rows of
    64 components x 256 columns): the same values as torch.distributions' MultivariateNormal,
    row by row."""
    from latentfit.em.gaussian import log_gaussian_prob, precision_cholesky

    rng = np.random.default_rng(0)
    k, d, n = 64, 256, 1000  # 4M // (64 * 256) = 256 rows a block: four of them
    X = torch.as_tensor(rng.normal(size=(n, d)))
    means = torch.as_tensor(rng.normal(size=(k, d)))
    A = torch.as_tensor(rng.normal(size=(k, d, d))) / d**0.5
    cov = A @ A.mT + torch.eye(d, dtype=torch.float64)
    got = log_gaussian_prob(X, means, precision_cholesky(cov, "full"), "full")  # (n, k)
    want = torch.distributions.MultivariateNormal(means, cov).log_prob(X.unsqueeze(1))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-8)
