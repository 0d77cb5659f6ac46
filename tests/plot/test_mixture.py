"""plot_mixture: one ellipse per component and radius, on the right Mahalanobis contour."""

import warnings

import numpy as np
import pytest
from matplotlib.patches import Ellipse
from scipy.stats import multivariate_normal
from sklearn.exceptions import NotFittedError

from latentfit import (
    GMMHMM,
    BayesianGaussianMixture,
    BernoulliMixture,
    GaussianHMM,
    GaussianMixture,
)
from latentfit.datasets import load_faithful
from latentfit.errors import DataError, ParameterError
from latentfit.plot import plot_mixture

X = load_faithful().data.numpy()  # (272, 2)
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _fit(model, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(*args)


def _ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def _outline(e: Ellipse) -> np.ndarray:
    """The on-curve points of the drawn ellipse (its path is cubic Bézier arcs: every third
    vertex is an end point, the others are control points off the curve), in data
    coordinates."""
    path = e.get_path()
    ends = path.vertices[: len(path.vertices) - 1 : 3]
    return e.get_patch_transform().transform(ends)


def _check_on_contour(ellipses, means, precisions, radii):
    """Every drawn point x has (x - μ)ᵀ Σ⁻¹ (x - μ) = r², with Σ⁻¹ from the model's own
    precisions (not the covariances the plot read)."""
    it = iter(ellipses)
    for mu, P in zip(means, precisions, strict=True):
        for r in radii:
            pts = _outline(next(it)) - mu
            np.testing.assert_allclose(np.einsum("ni,ij,nj->n", pts, P, pts), r**2, rtol=1e-6)


def _precisions(model, k, d):
    p = model.precisions_
    ct = model.covariance_type
    if ct == "full":
        return p
    if ct == "tied":
        return np.broadcast_to(p, (k, d, d))
    if ct == "diag":
        return np.stack([np.diag(v) for v in p])
    return p[:, None, None] * np.eye(d)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_gaussian_mixture_ellipses_lie_on_the_mahalanobis_contours(ctype):
    gm = _fit(GaussianMixture(3, covariance_type=ctype, random_state=0), X)
    ax = plot_mixture(gm, X, n_std=(1, 2))
    ells = _ellipses(ax)
    assert len(ells) == 3 * 2
    _check_on_contour(ells, gm.means_, _precisions(gm, 3, 2), (1, 2))
    # widths: 2 r √λ of the covariance's eigenvalues, largest first
    cov = np.linalg.inv(_precisions(gm, 3, 2))
    for i in range(3):
        lam = np.linalg.eigvalsh(cov[i])
        for j, r in enumerate((1, 2)):
            e = ells[2 * i + j]
            np.testing.assert_allclose([e.width, e.height], 2 * r * np.sqrt(lam[::-1]), rtol=1e-8)
    # every point is drawn once, coloured by its component
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert offsets.shape == X.shape
    np.testing.assert_array_equal(np.sort(offsets, axis=0), np.sort(X, axis=0))


def test_dims_draw_the_exact_marginal_of_a_higher_dimensional_mixture():
    rng = np.random.default_rng(0)
    Z = np.c_[X, rng.normal(size=len(X)) + X[:, 0]]  # (272, 3), third column correlated
    gm = _fit(GaussianMixture(2, random_state=0), Z)
    ax = plot_mixture(gm, Z, dims=(2, 0), n_std=(1.5,))
    block = np.ix_([2, 0], [2, 0])
    precisions = [np.linalg.inv(c[block]) for c in gm.covariances_]
    _check_on_contour(_ellipses(ax), gm.means_[:, [2, 0]], precisions, (1.5,))


def test_bayesian_mixture_leaves_out_switched_off_components():
    bg = _fit(BayesianGaussianMixture(n_components=6, random_state=0), X)
    kept = int((bg.weights_ > 0.05).sum())
    assert 0 < kept < 6
    ax = plot_mixture(bg, X, n_std=(2,), min_weight=0.05)
    assert len(_ellipses(ax)) == kept
    used = bg.weights_ > 0.05
    _check_on_contour(_ellipses(ax), bg.means_[used], np.linalg.inv(bg.covariances_[used]), (2,))


def test_hmm_states_are_the_components():
    h = _fit(GaussianHMM(3, covariance_type="diag", n_iter=20, random_state=0), X)
    ax = plot_mixture(h, X)
    assert len(_ellipses(ax)) == 3 * 2
    precisions = [np.diag(1 / v) for v in h._covars_]  # the stored diagonal, not covars_
    _check_on_contour(_ellipses(ax), h.means_, precisions, (1, 2))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_gmmhmm_draws_every_mixture_component_of_every_state(ctype):
    g = _fit(GMMHMM(2, n_mix=2, covariance_type=ctype, n_iter=5, random_state=0), X)
    ax = plot_mixture(g, X, n_std=(1,))
    ells = _ellipses(ax)
    assert len(ells) == 2 * 2
    c = np.asarray(g.covars_)
    full = {
        "full": lambda: c,
        "tied": lambda: np.repeat(c[:, None], 2, axis=1),
        "diag": lambda: c[..., None] * np.eye(2),
        "spherical": lambda: c[..., None, None] * np.eye(2),
    }[ctype]().reshape(4, 2, 2)
    _check_on_contour(ells, g.means_.reshape(4, 2), np.linalg.inv(full), (1,))


def test_contours_follow_the_model_density():
    gm = _fit(GaussianMixture(2, covariance_type="full", random_state=0), X)
    ax = plot_mixture(gm, X, kind="contour")
    cs = next(c for c in ax.collections if hasattr(c, "levels"))
    checked = 0
    for level, path in zip(cs.levels, cs.get_paths(), strict=True):
        if len(path.vertices) == 0:
            continue
        dens = np.exp(gm.score_samples(path.vertices))
        # grid interpolation (150² points over the data range): within 2 % of the level
        np.testing.assert_allclose(dens, level, rtol=2e-2)
        checked += 1
    assert checked >= 5


def test_hmm_contours_weight_states_by_the_stationary_distribution():
    h = _fit(GaussianHMM(2, covariance_type="full", n_iter=20, random_state=0), X)
    ax = plot_mixture(h, kind="contour")
    cs = next(c for c in ax.collections if hasattr(c, "levels"))
    # the stationary π solves π T = π (power iteration here)
    pi = np.full(2, 0.5)
    for _ in range(2000):
        pi = pi @ h.transmat_
    level, path = next(
        (lv, p) for lv, p in zip(cs.levels, cs.get_paths(), strict=True) if len(p.vertices)
    )
    dens = sum(
        w * multivariate_normal(m, c).pdf(path.vertices)
        for w, m, c in zip(pi, h.means_, h.covars_, strict=True)
    )
    np.testing.assert_allclose(dens, level, rtol=2e-2)


def test_one_feature_draws_weighted_densities_summing_to_the_mixture():
    x = X[:, :1]
    gm = _fit(GaussianMixture(2, random_state=0), x)
    ax = plot_mixture(gm, x)
    *parts, total = ax.lines
    assert len(parts) == 2
    grid = total.get_xdata()
    np.testing.assert_allclose(
        total.get_ydata(), np.exp(gm.score_samples(grid[:, None])), rtol=1e-9
    )
    np.testing.assert_allclose(sum(p.get_ydata() for p in parts), total.get_ydata(), rtol=1e-12)


def test_draws_into_a_given_axes_and_refuses_what_it_cannot_draw():
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    gm = _fit(GaussianMixture(2, random_state=0), X)
    assert plot_mixture(gm, ax=ax) is ax
    with pytest.raises(NotFittedError, match="call fit first"):
        plot_mixture(GaussianMixture(2))
    bern = _fit(BernoulliMixture(2, random_state=0), (X > X.mean(0)).astype(float))
    with pytest.raises(ParameterError, match="covariances_"):
        plot_mixture(bern)
    with pytest.raises(ParameterError, match="dims"):
        plot_mixture(gm, dims=(0, 5))
    with pytest.raises(ParameterError, match="kind"):
        plot_mixture(gm, kind="violin")
    with pytest.raises(DataError, match="2 feature columns"):
        plot_mixture(gm, X[:, :1])


def test_a_mixture_of_other_continuous_families_is_drawn_by_its_density():
    from latentfit import MixtureModel

    mm = _fit(MixtureModel(["gamma", "lognormal"], random_state=0), X)
    ax = plot_mixture(mm, X)  # no Gaussian components: contours by default
    cs = next(c for c in ax.collections if hasattr(c, "levels"))
    for level, path in zip(cs.levels, cs.get_paths(), strict=True):
        if len(path.vertices):
            np.testing.assert_allclose(np.exp(mm.score_samples(path.vertices)), level, rtol=2e-2)
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if c is not cs])
    assert len(offsets) == len(X)
    one = _fit(MixtureModel("gamma", n_components=2, random_state=0), X[:, :1])
    (curve,) = plot_mixture(one, X[:, :1]).lines
    np.testing.assert_allclose(
        curve.get_ydata(), np.exp(one.score_samples(curve.get_xdata()[:, None])), rtol=1e-12
    )
    with pytest.raises(ParameterError, match="kind='contour'"):
        plot_mixture(mm, X, kind="ellipse")
    with pytest.raises(ParameterError, match="pass X"):
        plot_mixture(mm)
    counts = np.round(X)
    poisson = _fit(MixtureModel("poisson", n_components=2, random_state=0), counts)
    with pytest.raises(ParameterError, match="cannot draw"):
        plot_mixture(poisson, counts)


def test_rows_with_gaps_are_left_out_of_the_picture_only():
    gaps = X.copy()
    gaps[::7, 1] = np.nan
    gm = _fit(GaussianMixture(2, missing="marginalize", random_state=0), gaps)
    ax = plot_mixture(gm, gaps)
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(offsets) == np.isfinite(gaps).all(1).sum()
    assert len(_ellipses(ax)) == 4
    ax = plot_mixture(gm, gaps, dims=[1])  # the histogram of the observed values
    assert sum(p.get_height() for p in ax.patches) > 0
