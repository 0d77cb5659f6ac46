"""MixtureModel over torch.distributions families: the same fit as GaussianMixture from the
same start, weighted MLEs against scipy, mixed families, the NIW prior."""

import numpy as np
import pytest
import scipy.stats as st
import torch
from sklearn.exceptions import ConvergenceWarning

import latentfit
from latentfit import GaussianMixture, MixtureModel
from latentfit.em.gaussian import DegenerateComponentError
from latentfit.em.mixture.families import FAMILIES, gamma_mle
from latentfit.em.mixture.priors import NormalInverseWishartPrior


def _two_blobs(seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 1, (300, 2)) @ np.array([[1.0, 0.5], [0.0, 0.7]])
    B = rng.normal(0, 1, (200, 2)) * [2.0, 0.5] + [5, 3]
    return np.concatenate([A, B])


@pytest.mark.parametrize("family, cov", [("mvn", "full"), ("normal", "diag")])
def test_gaussian_families_follow_gaussian_mixture_from_the_same_start(family, cov):
    X = _two_blobs()
    kw = dict(random_state=3, tol=1e-10, max_iter=500)
    ours = MixtureModel(family, 2, **kw).fit(X)
    ref = GaussianMixture(2, covariance_type=cov, **kw).fit(X)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=1e-8)
    loc = np.stack([c["loc"] for c in ours.components_])
    np.testing.assert_allclose(loc, ref.means_, rtol=1e-8)
    if family == "mvn":
        cov_ours = np.stack([c["scale_tril"] @ c["scale_tril"].T for c in ours.components_])
    else:
        cov_ours = np.stack([c["scale"] ** 2 for c in ours.components_])
    np.testing.assert_allclose(cov_ours, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)
    assert ours._n_parameters() == ref._n_parameters()
    np.testing.assert_allclose(ours.bic(X), ref.bic(X), rtol=1e-10)


def test_weighted_mles_match_scipy_with_integer_weights():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.5, 1.7, 400)
    counts = rng.integers(1, 4, 400)  # weight 3 = the same sample three times
    rep = np.repeat(x, counts)
    r = torch.as_tensor(counts, dtype=torch.float64)
    xt = torch.as_tensor(x)
    a, b = gamma_mle(r.sum(), r @ xt, r @ xt.log())
    shape, _, scale = st.gamma.fit(rep, floc=0, method="MLE")
    np.testing.assert_allclose(
        [float(a), 1 / float(b)], [shape, scale], rtol=1e-5
    )  # scipy's optimizer tolerance

    class _M:  # the few estimator settings a family's MLE reads
        reg_covar = 0.0
        _niw = None

    p = FAMILIES["lognormal"].mle(FAMILIES["lognormal"].stats(xt[:, None], r), _M())
    s, _, scale = st.lognorm.fit(rep, floc=0)
    np.testing.assert_allclose(
        [float(p["scale"][0]), float(p["loc"][0].exp())], [s, scale], rtol=1e-6
    )
    p = FAMILIES["exponential"].mle(FAMILIES["exponential"].stats(xt[:, None], r), _M())
    np.testing.assert_allclose(1 / float(p["rate"][0]), rep.mean(), rtol=1e-12)


def test_family_log_probs_match_scipy():
    x = np.array([[0.5], [1.0], [3.0]])
    comps = {
        "gamma": ({"concentration": [2.0], "rate": [1.5]}, st.gamma(2.0, scale=1 / 1.5)),
        "lognormal": ({"loc": [0.3], "scale": [0.8]}, st.lognorm(0.8, scale=np.exp(0.3))),
        "exponential": ({"rate": [0.7]}, st.expon(scale=1 / 0.7)),
        "normal": ({"loc": [1.0], "scale": [2.0]}, st.norm(1.0, 2.0)),
    }
    for name, (params, ref) in comps.items():
        p = {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}
        got = FAMILIES[name].dist(p).log_prob(torch.as_tensor(x)).numpy()
        np.testing.assert_allclose(got, ref.logpdf(x[:, 0]), rtol=1e-12, err_msg=name)


def test_mixed_families_recover_a_gamma_and_a_lognormal(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.gamma(2.0, 1.0, 1200), rng.lognormal(2.5, 0.3, 800)])[:, None]
    m = MixtureModel(["gamma", "lognormal"], random_state=0, tol=1e-8, max_iter=500).fit(x)
    assert m.families_ == ["gamma", "lognormal"]
    # 1200/800 samples: s.e. of the weight ≈ 0.011, of the shape ≈ 0.08, of σ ≈ 0.008;
    # tolerances are about 4 s.e.
    np.testing.assert_allclose(m.weights_, [0.6, 0.4], atol=0.045)
    np.testing.assert_allclose(m.components_[0]["concentration"], [2.0], atol=0.35)
    np.testing.assert_allclose(m.components_[1]["loc"], [2.5], atol=0.05)
    np.testing.assert_allclose(m.components_[1]["scale"], [0.3], atol=0.035)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-10)
    assert m._n_parameters() == 2 + 2 + 1
    S, _ = m.sample(100)
    assert S.shape == (100, 1) and np.all(S > 0)
    # Sampling draws from its own seeded stream: the global generator is left alone.
    state = torch.random.get_rng_state()
    m.sample(10)
    assert torch.equal(state, torch.random.get_rng_state())
    m2 = latentfit.load(m.save(tmp_path / "mixed.lf"))
    np.testing.assert_array_equal(m2.score_samples(x), m.score_samples(x))


def test_niw_prior_keeps_a_lone_point_component_alive():
    X = _two_blobs()[:40]
    X = np.concatenate([X, [[30.0, 30.0]]])  # an outlier k-means gives its own cluster
    with pytest.raises(DegenerateComponentError):
        GaussianMixture(3, reg_covar=0.0, random_state=0).fit(X)
    m = MixtureModel("mvn", 3, reg_covar=0.0, niw_shrinkage=0.01, random_state=0, max_iter=30)
    with pytest.warns(ConvergenceWarning):  # a few iterations are enough to check positivity
        m.fit(X)
    covs = np.stack([c["scale_tril"] @ c["scale_tril"].T for c in m.components_])
    assert np.all(np.linalg.eigvalsh(covs) > 0)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-10)  # MAP-EM: the log posterior increases


def test_niw_map_is_the_stationary_point_of_the_log_posterior():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g, dtype=torch.float64) + 2
    r = torch.rand(30, generator=g, dtype=torch.float64)
    prior = NormalInverseWishartPrior.default(X, 2)
    S0, S1, S2 = r.sum()[None], (r @ X)[None], ((X * r[:, None]).T @ X)[None]
    mean, cov = prior.map_gaussian(S0, S1, S2)
    mu = mean[0].clone().requires_grad_(True)
    sig = cov[0].clone().requires_grad_(True)
    dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=sig)
    q = (r * dist.log_prob(X)).sum() + prior.log_prob(mu[None], sig[None])
    g_mu, g_sig = torch.autograd.grad(q, (mu, sig))
    assert g_mu.abs().max() < 1e-9
    assert (0.5 * (g_sig + g_sig.T)).abs().max() < 1e-9


def test_bad_families_and_support():
    with pytest.raises(ValueError, match="unknown family"):
        MixtureModel("cauchy", 2).fit(np.ones((5, 1)))
    with pytest.raises(ValueError, match="n_components=3 but 2 families"):
        MixtureModel(["normal", "gamma"], 3).fit(np.ones((5, 1)))
    with pytest.raises(ValueError, match=r"gamma component needs positive .* row 2, column 0"):
        MixtureModel(["normal", "gamma"]).fit(np.array([[1.0], [2.0], [-1.0]]))


def test_a_start_float32_cannot_resolve_is_named_not_torch_s_error():
    # found by the property tests: one row of a gamma family in float32 gave a NaN start, and
    # torch.distributions' argument check reached the user as a raw ValueError; one row is a
    # point mass, named by the gamma M-step
    model = latentfit.MixtureModel("gamma", 1, dtype="float32", max_iter=15, random_state=0)
    with pytest.raises(DegenerateComponentError, match=r"all equal in column 0"):
        model.fit(np.array([[3.35146044]]))


@pytest.mark.parametrize(
    ("family", "k", "match"),
    [
        ("normal", -1, r"n_components must be an integer >= 1, got -1"),
        ("normal", 2.5, r"n_components must be an integer >= 1, got 2.5"),
        (None, 2, r"family must be a family name or a list of names.*got None"),
        ({"gamma": 1}, None, r"family must be a family name or a list of names"),
    ],
)
def test_family_and_n_components_are_checked_before_they_are_used(family, k, match):
    # n_components=-1 was reported as "got 0" (["normal"] * -1 is empty), 2.5 and None
    # reached the user as Python's "can't multiply sequence..." / "not iterable", and a
    # dict was fitted as the list of its keys
    with pytest.raises(latentfit.errors.ParameterError, match=match):
        MixtureModel(family, k).fit(np.ones((5, 1)))


def test_a_huge_n_components_is_refused_by_the_sample_count_not_a_memory_error():
    # ["normal"] * n_components was built before any check: 1e12 was a MemoryError
    with pytest.raises(latentfit.errors.DataError, match="n_components = 1000000000000"):
        MixtureModel("normal", 10**12).fit(np.ones((5, 1)))


def test_an_exponential_component_on_a_column_of_zeros_is_named_not_given_a_huge_rate():
    # the rate MLE 1 / mean is infinite on a column of zeros: clamping the mean gave a rate of
    # 4.5e307 (score 705 nats a row) with small weights, else "non-finite c0.rate" unnamed
    E = np.random.default_rng(0).exponential(2, (100, 2))
    X = np.c_[E, np.zeros(100)]
    model = MixtureModel("exponential", 1, random_state=0)
    with pytest.raises(DegenerateComponentError, match=r"component 0: .* all 0 in column 2"):
        model.fit(X, sample_weight=np.full(100, 0.01))
    with pytest.raises(DegenerateComponentError, match=r"all 0 in column 2"):
        MixtureModel("exponential", 2, random_state=0).fit(X)


def test_a_gamma_component_on_a_constant_column_is_named_not_given_a_huge_shape():
    # log x̄ − mean(log x) is 0 on equal values and the shape's MLE infinite: the clamped gap
    # gave a shape of 5.0e11 and a score of 8.4 nats a row, silently
    rng = np.random.default_rng(0)
    G = rng.gamma(2.0, 1.0, (100, 2))
    for column in (np.full(100, 3.0), 3.0 * (1 + rng.integers(-3, 4, 100) * 2.2e-16)):
        X = np.c_[G, column]
        for k in (1, 2):
            with pytest.raises(DegenerateComponentError, match=r"component \d: .* in column 2"):
                MixtureModel("gamma", k, random_state=0).fit(X)
    # a tight but resolved shape (CV 0.01%) still fits, to scipy's MLE
    x = rng.gamma(1e8, 1e-8, 200)
    fitted = MixtureModel("gamma", 1).fit(x[:, None]).components_[0]["concentration"][0]
    assert fitted == pytest.approx(st.gamma.fit(x, floc=0)[0], rel=1e-4)


def test_a_lognormal_component_on_tied_values_is_flagged_as_a_normal_one_on_their_logs():
    # 20 rows of 5.0 in column 0: the lognormal fit put a component on them with scale at the
    # sqrt(reg_covar) floor and said nothing, where the normal fit of log x warns
    rng = np.random.default_rng(0)
    spread = rng.lognormal(1, 0.5, (80, 2))
    X = np.r_[spread, np.c_[np.full(20, 5.0), rng.lognormal(1, 0.5, 20)]]
    with pytest.warns(latentfit.errors.DegenerateComponentWarning, match="feature 0") as normal:
        ref = MixtureModel("normal", 2, random_state=0).fit(np.log(X))
    with pytest.warns(latentfit.errors.DegenerateComponentWarning, match="feature 0") as ours:
        model = MixtureModel("lognormal", 2, random_state=0).fit(X)
    assert model.degenerate_components_ == ref.degenerate_components_ == [0]
    assert str(ours[0].message) == str(normal[0].message)
    # with reg_covar=0 the refusal names the family and the column, not "a normal component"
    X = np.c_[X[:, 1], np.full(100, 2.0)]
    with pytest.raises(DegenerateComponentError, match=r"lognormal .* log x in column 1"):
        MixtureModel("lognormal", 1, reg_covar=0).fit(X)


def test_mixed_families_that_all_refuse_the_start_say_why():
    # every assignment of clusters to ["gamma", "lognormal"] fails on the constant column 2;
    # the refusal said only "each family refused its cluster's data", not which or why
    G = np.random.default_rng(0).gamma(2.0, 1.0, (100, 2))
    X = np.c_[G, np.full(100, 3.0)]
    match = r"no initial assignment .* last refusal: component \d: a gamma .* column 2"
    with pytest.raises(latentfit.errors.DataError, match=match):
        MixtureModel(["gamma", "lognormal"], random_state=0).fit(X)


@pytest.mark.parametrize("source", [False, True])
def test_a_warm_start_names_the_impossible_row_of_x_not_of_its_chunk(source):
    from latentfit.em.sources.chunks import ArraySource
    from latentfit.errors import DataError

    X = np.random.default_rng(0).normal(0, 0.01, size=(30, 1))
    m = MixtureModel("normal", 2, random_state=0, warm_start=True, chunk_rows=10).fit(X)
    Y = X.copy()
    # (1e153 - μ)² / σ² overflows (σ² ~ 1e-4), so the row's density is 0 under both
    # components; the squared deviations themselves (1e306) do not, so the data pass the
    # overflow check and reach the E-step
    Y[25, 0] = 1e153
    data = ArraySource(Y, chunk_rows=10) if source else Y
    with pytest.raises(DataError, match=r"^row 25 of X has zero density"):
        m.fit(data)


@pytest.mark.parametrize(("family", "d"), [("normal", 1), ("normal", 2), ("mvn", 2)])
@pytest.mark.parametrize("far", [1e12, 1e17])
def test_a_gaussian_group_far_from_the_data_centre_keeps_its_spread(family, d, far, tmp_path):
    # rows near 2.4 and one far row: every moment was taken about the data's centre c (1.7e10
    # or 1.7e15), whose differencing lost the group's variance: scale 0.001 (reg_covar's;
    # 0.9 is right) and a score of -4e5 per row (-1.28) with the row at 1e12, its location
    # 1.75 (2.49) at 1e17, and mvn refused the start as a collapsed component
    import warnings

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(2.4, 1, (59, d)), np.full((1, d), far)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.errors.DegenerateComponentWarning)
        m = MixtureModel(family, n_components=2, random_state=0).fit(X)
    near = int(np.argmin([c["loc"][0] for c in m.components_]))
    rows = X[:59]
    cov = np.cov(rows.T, bias=True).reshape(d, d) + 1e-6 * np.eye(d)  # the closed form
    if family == "normal":
        cov = np.diag(np.diag(cov))
    p = m.components_[near]
    got = np.diag(p["scale"] ** 2) if family == "normal" else p["scale_tril"] @ p["scale_tril"].T
    np.testing.assert_allclose(p["loc"], rows.mean(0), rtol=1e-9)
    np.testing.assert_allclose(got, cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(m.components_[1 - near]["loc"], X[59])
    np.testing.assert_allclose(m.weights_[near], 59 / 60, rtol=1e-9)
    want = np.logaddexp(
        np.log(m.weights_[near]) + st.multivariate_normal(rows.mean(0), cov).logpdf(X),
        np.log(m.weights_[1 - near]) + st.multivariate_normal(X[59], 1e-6 * np.eye(d)).logpdf(X),
    )
    np.testing.assert_allclose(m.score_samples(X), want, rtol=1e-9)
    loaded = latentfit.load(m.save(tmp_path / "m.lf"))
    np.testing.assert_allclose(loaded.score_samples(X), want, rtol=1e-9)
