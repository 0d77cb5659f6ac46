"""Gaussian components of a fitted mixture or HMM: ellipses or density contours over the data."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from latentfit.errors import DataError, ParameterError
from latentfit.plot._axes import as_numpy, new_axes, require

__all__ = ["GaussianComponents", "gaussian_components", "plot_mixture"]


class GaussianComponents(NamedTuple):
    """Every Gaussian of a model in full form: ``weights`` (m,) — the share of one observation
    that each accounts for —, ``means`` (m, d), ``covariances`` (m, d, d), and ``groups`` (m,):
    the component (mixture) or hidden state (HMM) each belongs to."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    groups: np.ndarray


def _full(cov: np.ndarray, covariance_type: str, m: int, d: int) -> np.ndarray:
    """scikit-learn's covariance layouts as (m, d, d) matrices."""
    if covariance_type == "full":
        return cov.reshape(m, d, d)
    if covariance_type == "tied":
        return np.broadcast_to(cov.reshape(d, d), (m, d, d)).copy()
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov.reshape(m, d)])
    if covariance_type == "spherical":
        return cov.reshape(m)[:, None, None] * np.eye(d)
    raise ParameterError(f"unknown covariance_type {covariance_type!r}")


def _stationary(transmat: np.ndarray) -> np.ndarray:
    """π with π T = π, Σ π = 1: the share of time a stationary chain spends in each state."""
    k = transmat.shape[0]
    A = np.vstack([transmat.T - np.eye(k), np.ones(k)])
    b = np.concatenate([np.zeros(k), [1.0]])
    pi = np.linalg.lstsq(A, b, rcond=None)[0]
    pi = np.clip(pi, 0, None)
    return pi / pi.sum()


def gaussian_components(model) -> GaussianComponents:
    """The Gaussians of a fitted GaussianMixture, BayesianGaussianMixture (posterior means),
    GaussianHMM (one per state, weighted by the stationary distribution) or GMMHMM (n_mix per
    state)."""
    name = type(model).__name__
    if not hasattr(model, "means_") and hasattr(model, "score_samples"):
        require(model, "n_features_in_", "plot_mixture")
        raise ParameterError(
            f"{name} has no Gaussian components (means_ and covariances_); "
            + (
                "pass kind='contour' to draw its density"
                if _has_continuous_density(model)
                else "plot_mixture cannot draw it"
            )
        )
    means = as_numpy(require(model, "means_", "plot_mixture")).astype(float)
    ctype = getattr(model, "covariance_type", "full")
    if hasattr(model, "transmat_"):  # an HMM
        state_w = _stationary(as_numpy(model.transmat_).astype(float))
        if means.ndim == 3:  # GMMHMM: (k, n_mix, d)
            k, n_mix, d = means.shape
            cov = as_numpy(model.covars_).astype(float)
            if ctype == "tied":  # one matrix per state, shared by its mixture components
                cov = np.repeat(cov[:, None], n_mix, axis=1)
                ctype = "full"
            covs = _full(cov, ctype, k * n_mix, d)
            weights = (state_w[:, None] * as_numpy(model.weights_)).reshape(-1)
            return GaussianComponents(
                weights, means.reshape(-1, d), covs, np.repeat(np.arange(k), n_mix)
            )
        k, d = means.shape
        covs = as_numpy(model.covars_).astype(float).reshape(k, d, d)  # always full
        return GaussianComponents(state_w, means, covs, np.arange(k))
    if not hasattr(model, "covariances_"):
        hint = (
            "pass kind='contour' to draw its density"
            if _has_continuous_density(model)
            else "its components are discrete: plot its means_ with plot_image_grid or a bar chart"
        )
        raise ParameterError(
            f"plot_mixture draws ellipses of Gaussian components; {name} has no covariances_: "
            + hint
        )
    k, d = means.shape
    covs = _full(as_numpy(model.covariances_).astype(float), ctype, k, d)
    return GaussianComponents(as_numpy(model.weights_).astype(float), means, covs, np.arange(k))


def _ellipse_geometry(cov2: np.ndarray, r: float):
    """Width, height (full axes) and angle in degrees of the r-standard-deviation contour of a
    2×2 covariance: the axes lie along its eigenvectors, half-lengths r·√eigenvalue."""
    vals, vecs = np.linalg.eigh(cov2)  # ascending
    vals = np.clip(vals, 0, None)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))  # direction of the largest axis
    return 2 * r * math.sqrt(vals[1]), 2 * r * math.sqrt(vals[0]), angle


def _check_dims(dims, d: int, name: str) -> list[int]:
    dims = [int(j) for j in (dims if np.ndim(dims) else [dims])]
    if not 1 <= len(dims) <= 2 or any(not 0 <= j < d for j in dims) or len(set(dims)) < len(dims):
        raise ParameterError(
            f"dims must name one or two different features among the model's {d} "
            f"(0..{d - 1}); got {list(dims)} for {name}"
        )
    return dims


def plot_mixture(
    model,
    X=None,
    *,
    dims=(0, 1),
    kind: str | None = None,
    n_std=(1, 2),
    min_weight: float = 0.0,
    colors=None,
    ax=None,
    scatter_kws: dict | None = None,
):
    """Draw the Gaussian components of a fitted mixture or HMM, over the data when given.

    Parameters
    ----------
    model : a fitted GaussianMixture, BayesianGaussianMixture, GaussianHMM or GMMHMM (Gaussian
        components), or a MixtureModel of continuous families (gamma, log-normal, ...: its
        density by ``score_samples``, on one or two features).
    X : data (n, d) to scatter, coloured by ``model.predict`` (optional).
    dims : the two features to draw (the components' marginal on them is exact: means and
        covariance sub-blocks); with one feature, or a one-feature model, the weighted
        component densities are drawn over a histogram.
    kind : ``"ellipse"`` (the default for Gaussian components) — for every component, the
        contours at ``n_std`` standard deviations (Mahalanobis radius), axes along the
        covariance eigenvectors with half-lengths r·√eigenvalue — or ``"contour"`` (the default
        otherwise): contours of the mixture density on ``dims``.
    min_weight : components whose weight is at most this are left out (a Bayesian mixture's
        switched-off components).
    colors : one matplotlib colour per component (default: the colour cycle).

    Returns the Axes.
    """
    if kind not in (None, "ellipse", "contour"):
        raise ParameterError(f"kind must be 'ellipse' or 'contour'; got {kind!r}")
    try:
        comp = gaussian_components(model)
    except ParameterError:
        if kind == "ellipse" or not _has_continuous_density(model):
            raise
        return _plot_scored(model, X, new_axes(ax, figsize=(6, 4.5)), scatter_kws, colors)
    kind = kind or "ellipse"
    d = comp.means.shape[1]
    dims = _check_dims(dims if d > 1 else [0], d, type(model).__name__)
    Xd = None
    if X is not None:
        Xn = as_numpy(X).astype(float)
        if Xn.ndim != 2 or Xn.shape[1] != d:
            raise DataError(
                f"X must have the model's {d} feature columns; got shape {tuple(Xn.shape)}"
            )
        Xd = Xn[:, dims]
        drawn = np.isfinite(Xd).all(1)  # rows with a gap in the drawn features cannot be placed
    ax = new_axes(ax, figsize=(6, 4.5))
    keep = np.flatnonzero(comp.weights > min_weight)
    n_groups = int(comp.groups.max()) + 1
    if colors is None:
        from matplotlib import rcParams

        cycle = [c["color"] for c in rcParams["axes.prop_cycle"]]
        colors = [cycle[g % len(cycle)] for g in range(n_groups)]
    means = comp.means[:, dims]  # (m, 1|2)
    covs = comp.covariances[np.ix_(np.arange(len(comp.weights)), dims, dims)]  # (m, ., .)
    if len(dims) == 1:
        Xd = None if Xd is None else Xd[drawn]
        return _plot_1d(ax, model, Xd, comp, keep, means[:, 0], covs[:, 0, 0], colors)
    if Xd is not None:
        labels = np.asarray(as_numpy(model.predict(X)))[drawn]
        Xd = Xd[drawn]
        kw = {"s": 8, "alpha": 0.6, **(scatter_kws or {})}
        for g in np.unique(labels):
            ax.scatter(*Xd[labels == g].T, color=colors[int(g) % len(colors)], **kw)
    if kind == "ellipse":
        from matplotlib.patches import Ellipse

        radii = [float(r) for r in np.atleast_1d(n_std)]
        for i in keep:
            for j, r in enumerate(radii):
                w, h, angle = _ellipse_geometry(covs[i], r)
                ax.add_patch(
                    Ellipse(
                        means[i],
                        w,
                        h,
                        angle=angle,
                        fill=False,
                        color=colors[comp.groups[i] % len(colors)],
                        lw=1.6 if j == 0 else 0.8,
                        label=f"component {i}" if j == 0 else None,
                    )
                )
        ax.autoscale_view()
    else:
        lo, hi = _extent(Xd, means, covs)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
        pts = np.stack([gx.ravel(), gy.ravel()], 1)  # (g, 2)
        dens = _density(pts, comp.weights[keep], means[keep], covs[keep])
        ax.contour(gx, gy, dens.reshape(gx.shape), levels=8, cmap="viridis")
    names = getattr(model, "feature_names_in_", None)
    ax.set_xlabel(str(names[dims[0]]) if names is not None else f"feature {dims[0]}")
    ax.set_ylabel(str(names[dims[1]]) if names is not None else f"feature {dims[1]}")
    ax.set_title(f"{type(model).__name__}: {len(keep)} components")
    return ax


def _extent(Xd, means, covs):
    """A box holding the data (when given) and every component's 3σ range."""
    sd = np.sqrt(np.stack([np.diag(c) for c in covs]))  # (m, 2)
    lo, hi = (means - 3 * sd).min(0), (means + 3 * sd).max(0)
    if Xd is not None and len(Xd):
        lo, hi = np.minimum(lo, Xd.min(0)), np.maximum(hi, Xd.max(0))
    return lo, hi


def _density(pts: np.ndarray, weights, means, covs) -> np.ndarray:
    """Σ_k w_k N(x | μ_k, Σ_k) at each row of pts (g, d)."""
    out = np.zeros(len(pts))
    d = pts.shape[1]
    for w, mu, cov in zip(weights, means, covs, strict=True):
        L = np.linalg.cholesky(cov)
        z = np.linalg.solve(L, (pts - mu).T)  # (d, g)
        logdet = 2 * np.log(np.diag(L)).sum()
        out += w * np.exp(-0.5 * (z**2).sum(0) - 0.5 * (logdet + d * math.log(2 * math.pi)))
    return out


def _plot_1d(ax, model, Xd, comp, keep, means, variances, colors):
    """One feature: a density histogram of the data and each weighted component density."""
    if Xd is not None:
        ax.hist(Xd[:, 0], bins=40, density=True, color="0.85", edgecolor="0.6")
    sd = np.sqrt(variances)
    lo, hi = (means - 4 * sd).min(), (means + 4 * sd).max()
    if Xd is not None and len(Xd):
        lo, hi = min(lo, Xd.min()), max(hi, Xd.max())
    x = np.linspace(lo, hi, 400)
    total = np.zeros_like(x)
    for i in keep:
        y = (
            comp.weights[i]
            * np.exp(-0.5 * ((x - means[i]) / sd[i]) ** 2)
            / (sd[i] * math.sqrt(2 * math.pi))
        )
        total += y
        ax.plot(x, y, color=colors[comp.groups[i] % len(colors)], label=f"component {i}")
    ax.plot(x, total, color="k", lw=1.5, label="mixture")
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.set_title(f"{type(model).__name__}: {len(keep)} components")
    return ax


_DISCRETE_MIXTURES = (
    "BernoulliMixture",
    "CategoricalMixture",
    "MultinomialMixture",
    "PoissonMixture",
)
_DISCRETE_FAMILIES = {"poisson", "bernoulli"}


def _has_continuous_density(model) -> bool:
    """A model whose ``score_samples`` is a density of one row over a continuous space (not an
    HMM's sequence score, not a probability mass)."""
    if hasattr(model, "transmat_") or type(model).__name__ in _DISCRETE_MIXTURES:
        return False
    families = getattr(model, "_families", None)
    if families is not None and _DISCRETE_FAMILIES & set(families()):
        return False
    return hasattr(model, "score_samples")


def _plot_scored(model, X, ax, scatter_kws, colors):
    """Any continuous mixture by its own density, exp(score_samples), on its one or two
    features over the range of the data."""
    name = type(model).__name__
    d = int(require(model, "n_features_in_", "plot_mixture"))
    if d > 2:
        raise ParameterError(
            f"{name} has {d} features; its density is drawn on one or two (the marginal of a "
            "non-Gaussian mixture on a subset is not computed): fit it on those features"
        )
    if X is None:
        raise ParameterError(f"plot_mixture draws {name}'s density over the data: pass X")
    Xn = as_numpy(X).astype(float)
    if Xn.ndim != 2 or Xn.shape[1] != d or not len(Xn):
        raise DataError(f"X must have the model's {d} feature columns; got shape {Xn.shape}")
    drawn = np.isfinite(Xn).all(1)
    if not drawn.any():
        raise DataError("X has no row without missing values to draw")
    lo, hi = Xn[drawn].min(0), Xn[drawn].max(0)
    if d == 1:
        ax.hist(Xn[drawn, 0], bins=40, density=True, color="0.85", edgecolor="0.6")
        x = np.linspace(lo[0], hi[0], 400)
        ax.plot(x, np.exp(as_numpy(model.score_samples(x[:, None]))), color="k", label="mixture")
        ax.set_xlabel("value")
        ax.set_ylabel("density")
    else:
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
        dens = np.exp(as_numpy(model.score_samples(np.c_[gx.ravel(), gy.ravel()])))
        labels = np.asarray(as_numpy(model.predict(Xn[drawn])))
        Xn = Xn[drawn]
        cycle = colors or [f"C{i}" for i in range(10)]
        kw = {"s": 8, "alpha": 0.6, **(scatter_kws or {})}
        for g in np.unique(labels):
            ax.scatter(*Xn[labels == g].T, color=cycle[int(g) % len(cycle)], **kw)
        ax.contour(gx, gy, dens.reshape(gx.shape), levels=8, cmap="viridis")
        ax.set_xlabel("feature 0")
        ax.set_ylabel("feature 1")
    ax.set_title(f"{name}: density")
    return ax
