"""Stepwise EM (``partial_fit``, Cappé & Moulines 2009) for the discrete mixtures, MixtureModel
and the factor models.

With one batch holding all the data, ρ_1 = 1 and the update is one EM iteration: it is checked
against the driver's single iteration for every family and against EM steps written out in
numpy (Bernoulli MAP-EM; factor analysis by regression on [z, 1]). Many small batches must
recover the parameters of a known model.
"""

import numpy as np
import pytest
from scipy.special import logsumexp

from latentfit import (
    PPCA,
    BernoulliMixture,
    CategoricalMixture,
    FactorAnalysis,
    MixtureModel,
    MultinomialMixture,
    PoissonMixture,
)
from latentfit.em.sources.chunks import ArraySource, IterableSource, NpySource
from tests.em.test_streaming_models import DATA, MODELS, WEIGHTS, _fitted

# The reference fits are capped at one iteration on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _assert_params_close(a, b, rtol):
    for key, va in _fitted(a).items():
        if key in ("weights_", "means_", "rates_", "probs_", "components_", "noise_variance_"):
            vb = getattr(b, key)
            if isinstance(va, list):
                for ca, cb in zip(va, vb, strict=True):
                    for n in ca:
                        np.testing.assert_allclose(ca[n], cb[n], rtol=rtol, atol=1e-13)
            else:
                np.testing.assert_allclose(va, vb, rtol=rtol, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("family", list(MODELS))
def test_one_batch_of_all_the_data_is_one_em_iteration(family):
    X = DATA[family]
    kw = dict(random_state=0, chunk_rows=128)
    one = MODELS[family](max_iter=1, tol=0, **kw).fit(X, sample_weight=WEIGHTS)
    online = MODELS[family](**kw).partial_fit(X, sample_weight=WEIGHTS)
    assert online.n_steps_ == 1
    # The statistics are divided by the batch weight and multiplied back: rounding only.
    _assert_params_close(one, online, rtol=1e-10)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_factor_models_one_batch_is_one_em_iteration(cls):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 5)) + rng.normal(size=(300, 5))
    one = cls(2, max_iter=1, tol=0).fit(X, sample_weight=WEIGHTS[:300])
    online = cls(2).partial_fit(X, sample_weight=WEIGHTS[:300])
    np.testing.assert_allclose(online.components_, one.components_, rtol=1e-10)
    np.testing.assert_allclose(online.mean_, one.mean_, rtol=1e-10)
    np.testing.assert_allclose(online.noise_variance_, one.noise_variance_, rtol=1e-10)
    np.testing.assert_allclose(online.lower_bound_, one.lower_bounds_[0], rtol=1e-12)


def test_bernoulli_step_against_numpy_map_em():
    X, w = DATA["bernoulli"], WEIGHTS
    a, b = 2.0, 3.0
    start = BernoulliMixture(2, mean_prior=(a, b), random_state=0, max_iter=0)
    start.fit(X, sample_weight=w)  # max_iter=0: the starting point partial_fit also takes
    mu, pi = start.means_, start.weights_
    logp = np.log(pi) + X @ np.log(mu).T + (1 - X) @ np.log1p(-mu).T  # (n, k)
    r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True)) * w[:, None]
    S0 = r.sum(0)
    expected = (r.T @ X + a - 1) / (S0[:, None] + a + b - 2)  # Beta MAP (Bishop 2006 ex. 9.19)
    step = BernoulliMixture(2, mean_prior=(a, b), random_state=0).partial_fit(X, sample_weight=w)
    np.testing.assert_allclose(step.means_, expected, rtol=1e-10)
    np.testing.assert_allclose(step.weights_, S0 / S0.sum(), rtol=1e-10)


def test_factor_analysis_step_against_numpy_regression_em():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 4)) + rng.normal(size=(200, 4)) + 1.0
    w = WEIGHTS[:200]
    start = FactorAnalysis(2, max_iter=0).fit(X, sample_weight=w)
    W, mu, psi = start.components_.T, start.mean_, start.noise_variance_
    # Posterior of z (Bishop 2006 eq. 12.66-12.67 with Ψ for σ²I), then x regressed on [z, 1].
    M = np.eye(2) + W.T @ (W / psi[:, None])
    Ez = np.linalg.solve(M, (W / psi[:, None]).T @ (X - mu).T).T  # (n, 2)
    Ezt = np.column_stack([Ez, np.ones(len(X))])  # E[z̃], z̃ = [z, 1]
    Ezz = np.einsum("n,ni,nj->ij", w, Ezt, Ezt)
    Ezz[:2, :2] += w.sum() * np.linalg.inv(M)
    Sxz = np.einsum("n,ni,nj->ij", w, X, Ezt)  # Σ w x E[z̃]ᵀ (d, 3)
    Lam = np.linalg.solve(Ezz, Sxz.T).T  # [W, μ]
    psi_new = (w @ X**2 - (Lam * Sxz).sum(1)) / w.sum()
    step = FactorAnalysis(2).partial_fit(X, sample_weight=w)
    np.testing.assert_allclose(step.components_.T, Lam[:, :2], rtol=1e-9)
    np.testing.assert_allclose(step.mean_, Lam[:, 2], rtol=1e-9)
    np.testing.assert_allclose(step.noise_variance_, psi_new, rtol=1e-9)


def _true_mixture(family, rng):
    """(sampler of rows given their components z, model, true component parameters, the
    fitted attribute holding them); the true weights are (0.4, 0.6)."""
    if family == "bernoulli":
        theta = np.array([[0.9, 0.8, 0.2, 0.1, 0.7, 0.3], [0.2, 0.3, 0.8, 0.9, 0.4, 0.6]])
        draw = lambda z: (rng.uniform(size=theta[z].shape) < theta[z]).astype(float)
        return draw, BernoulliMixture(2, random_state=0), theta, "means_"
    if family == "poisson":
        theta = np.array([[1.0, 4.0, 2.0], [6.0, 1.0, 8.0]])
        return (
            (lambda z: rng.poisson(theta[z]).astype(float)),
            PoissonMixture(2, random_state=0),
            theta,
            "rates_",
        )
    if family == "categorical":
        theta = np.array(
            [
                [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]],
                [[0.1, 0.2, 0.7], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]],
            ]
        )  # (k, d, c)

        def draw(z):
            u = rng.uniform(size=(len(z), 4, 1))
            return (u > theta[z].cumsum(-1)).sum(-1).astype(float)

        # A little smoothing: a probability that hits exactly zero on one batch stays zero.
        model = CategoricalMixture(2, n_categories=3, prob_concentration=1.1, random_state=0)
        return draw, model, theta, "probs_"
    if family == "multinomial":
        theta = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.3, 0.5]])
        draw = lambda z: np.stack([rng.multinomial(20, theta[k]) for k in z]).astype(float)
        return draw, MultinomialMixture(2, random_state=0), theta, "probs_"
    raise AssertionError(family)


@pytest.mark.parametrize("family", ["bernoulli", "poisson", "categorical", "multinomial"])
def test_many_small_batches_recover_a_known_mixture(family):
    rng = np.random.default_rng(5)
    draw, model, theta, attr = _true_mixture(family, rng)
    pi = np.array([0.4, 0.6])
    for _ in range(100):  # 100 batches of 200 rows
        z = (rng.uniform(size=200) > pi[0]).astype(int)
        model.partial_fit(draw(z))
    assert model.n_steps_ == 100
    est = getattr(model, attr)
    # Match the components to the truth by their distance to the first true component.
    first = int(np.argmin([np.abs(est[k] - theta[0]).sum() for k in range(2)]))
    perm = [first, 1 - first]
    # With ρ_t = t^-0.6 the last steps weigh ~ρ_100 ≈ 0.06 each, so the estimate carries the
    # noise of a few thousand rows (standard error ≲ 0.02 on a probability, ≲ 0.1 on a rate):
    # 0.06 / 0.3 are 3 such errors, while a wrong or unmixed component misses by far more.
    atol = 0.3 if family == "poisson" else 0.06
    np.testing.assert_allclose(est[perm], theta, atol=atol)
    np.testing.assert_allclose(model.weights_[perm], pi, atol=0.05)


def test_many_small_batches_recover_a_mixture_model_and_factor_models():
    rng = np.random.default_rng(6)
    mm = MixtureModel("normal", 2, random_state=0)
    W = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0], [1.0, -1.0], [0.5, 0.5]])
    psi = np.array([0.2, 0.3, 0.1, 0.4, 0.2])
    fa, pp = FactorAnalysis(2), PPCA(2)
    for _ in range(100):
        z = rng.uniform(size=200) < 0.5
        mm.partial_fit(rng.normal(size=(200, 2)) + np.where(z[:, None], 4.0, -1.0))
        Xf = rng.normal(size=(200, 2)) @ W.T + 1.0 + rng.normal(size=(200, 5)) * np.sqrt(psi)
        fa.partial_fit(Xf)
        pp.partial_fit(Xf)
    locs = sorted(float(c["loc"][0]) for c in mm.components_)
    # About 3 standard errors of a mean from ~1500 effective rows per component (see above).
    np.testing.assert_allclose(locs, [-1.0, 4.0], atol=0.1)
    np.testing.assert_allclose(mm.weights_, [0.5, 0.5], atol=0.05)
    # W is identified up to rotation: compare the model covariance W Wᵀ + Ψ, whose entries
    # (≤ 5) carry a sampling error of ~0.15 at a few thousand effective rows; the means
    # (variances ≤ 5) one of ~0.04.
    np.testing.assert_allclose(fa.get_covariance(), W @ W.T + np.diag(psi), atol=0.4)
    np.testing.assert_allclose(fa.mean_, 1.0, atol=0.15)
    # Ψ alone moves slowly under EM (batch EM takes >100 iterations on these data), so the
    # fit is judged by its likelihood: within 0.01 nats per row of the batch MLE on all rows.
    X_all = rng.normal(size=(5000, 2)) @ W.T + 1.0 + rng.normal(size=(5000, 5)) * np.sqrt(psi)
    assert fa.score(X_all) > FactorAnalysis(2).fit(X_all).score(X_all) - 0.01
    # PPCA spans the same principal subspace; its σ² averages the discarded variance.
    lam, U = np.linalg.eigh(W @ W.T + np.diag(psi))
    P = U[:, -2:] @ U[:, -2:].T
    Wp = pp.components_.T
    np.testing.assert_allclose(Wp @ np.linalg.pinv(Wp), P, atol=0.05)
    np.testing.assert_allclose(pp.noise_variance_, lam[:3].mean(), atol=0.05)


def test_partial_fit_on_a_source_steps_once_per_chunk(device):
    X = DATA["poisson"]
    kw = dict(random_state=0, device=device)
    src = PoissonMixture(2, **kw).partial_fit(ArraySource(X, sample_weight=WEIGHTS, chunk_rows=100))
    assert src.n_steps_ == 6
    by_hand = PoissonMixture(2, **kw)
    for i in range(0, len(X), 100):
        by_hand.partial_fit(X[i : i + 100], sample_weight=WEIGHTS[i : i + 100])
    np.testing.assert_allclose(src.rates_, by_hand.rates_, rtol=1e-12)
    fa = FactorAnalysis(2, device=device).partial_fit(ArraySource(DATA["mvn"] @ np.ones((2, 3))))
    assert fa.n_steps_ == 1 and np.isfinite(fa.noise_variance_).all()


def test_partial_fit_continues_a_fit_and_a_loaded_model(tmp_path):
    import torch

    import latentfit

    X = DATA["bernoulli"]
    fitted = BernoulliMixture(2, random_state=0, mean_prior=(2, 2)).fit(X)
    before = fitted.means_.copy()
    fitted.partial_fit(X[:50])
    assert fitted.n_steps_ == 1
    # The first update after fit starts the averages afresh (ρ_1 = 1) from the fitted model.
    assert np.abs(fitted.means_ - before).max() > 0
    rng = np.random.default_rng(7)
    Xf = rng.normal(size=(100, 2)) @ rng.normal(size=(2, 4)) + rng.normal(size=(100, 4))
    fa = FactorAnalysis(2).partial_fit(Xf)
    fa.save(tmp_path / "fa.safetensors")
    loaded = latentfit.load(tmp_path / "fa.safetensors")
    assert torch.equal(loaded._min_noise, fa._min_noise)  # the noise floor is saved with it
    loaded.partial_fit(Xf)
    fa.partial_fit(Xf)
    # The file keeps the running averages: the loaded model makes the run's second update
    # (ρ_2 < 1) as the one in memory does, not a first one afresh from the saved parameters.
    assert loaded.n_steps_ == fa.n_steps_ == 2
    np.testing.assert_array_equal(loaded.components_, fa.components_)
    np.testing.assert_array_equal(loaded.noise_variance_, fa.noise_variance_)


def test_partial_fit_errors():
    X = DATA["categorical"]
    with pytest.raises(ValueError, match="one per component"):
        CategoricalMixture(3).partial_fit(X[:2])
    with pytest.raises(ValueError, match="at least 2 samples"):
        FactorAnalysis(1).partial_fit(DATA["mvn"][:1])
    with pytest.raises(ValueError, match="takes no component labels"):
        BernoulliMixture(2).partial_fit(DATA["bernoulli"], np.zeros(len(X), dtype=int))
    model = CategoricalMixture(2, random_state=0).partial_fit(X[:100] % 2)
    with pytest.raises(ValueError, match=r"holds category \d.*pass n_categories"):
        model.partial_fit(X[100:200])
    with pytest.raises(ValueError, match="X has 2 features"):
        model.partial_fit(X[:10, :2])
    with pytest.raises(ValueError, match="learning_decay must lie in"):
        PoissonMixture(2, learning_decay=0.4).partial_fit(DATA["poisson"])
    with pytest.raises(ValueError, match="n_components=3 must be at most n_features=2"):
        PPCA(3).partial_fit(DATA["mvn"])
    assert not hasattr(MixtureModel("normal", 2), "_params")
    with pytest.raises(ValueError, match="one per component"):
        MixtureModel(["normal", "gamma"]).partial_fit(DATA["gamma-lognormal"][:1])


@pytest.mark.parametrize(
    ("family", "value", "needle"),
    [
        ("bernoulli", 0.5, "binary data"),
        ("poisson", -1.0, "non-negative counts"),
        ("categorical", 1.5, "integer counts"),
        ("gamma-lognormal", -2.0, "a gamma component needs"),
    ],
)
def test_partial_fit_on_a_source_names_the_row_of_the_file(tmp_path, family, value, needle):
    # A bad value in the fourth chunk of 100 rows was named by its row in the chunk (33),
    # not in the file (333): the user looked at the wrong row.
    X = DATA[family].copy()
    X[333, 0] = value
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match=f"{needle}.* is row 333, column 0 "):
        MODELS[family](random_state=0).fit(X)  # in memory: the reference wording
    source = NpySource(tmp_path / "x.npy", chunk_rows=100)
    with pytest.raises(ValueError, match=f"^x.npy: .*{needle}.* is row 333, column 0 "):
        MODELS[family](random_state=0).partial_fit(source)
    chunks = IterableSource([X[i : i + 100] for i in range(0, len(X), 100)])
    with pytest.raises(ValueError, match=f"{needle}.* is row 333, column 0 "):
        MODELS[family](random_state=0).partial_fit(chunks)


def test_partial_fit_on_a_source_names_a_row_beyond_the_first_chunks_categories():
    # The categories are counted on the first chunk; a code beyond them three chunks on was
    # named as row 33 of its chunk.
    X = DATA["categorical"].copy()
    X[:300, 1] = X[:300, 1] % 2
    X[300:, 1] = 0
    X[333, 1] = 3
    with pytest.raises(ValueError, match=r"row 333, column 1 holds category 3 but column 1"):
        CategoricalMixture(2, random_state=0).partial_fit(ArraySource(X, chunk_rows=100))
