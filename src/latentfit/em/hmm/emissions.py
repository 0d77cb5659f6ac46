"""Emission models of the hidden Markov models: pure functions on tensors.

For every emission family: the per-step log-likelihoods ``log p(x_t | z_t = k)`` (t, k) that
the inference kernels take, the expected sufficient statistics of one batch under the
smoothed marginals ``γ`` (t, k) (a dict that adds up over batches), and the closed-form M-step
with the conjugate priors and conventions of hmmlearn (Rabiner 1989, eqs. 40a-c and 52-54;
MAP forms as in hmmlearn 0.3).

A state whose expected count is (numerically) zero cannot be re-estimated: every M-step here
keeps its previous emission parameters and reports it in ``unvisited`` (the models warn).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit._validation import first_nonfinite
from latentfit.em.gaussian import (
    degenerate_components,
    direct_log_prob,
    far_components,
    log_gaussian_prob,
    mixture_covariance,
    precision_cholesky,
)
from latentfit.em.hmm.inference import posterior as inference
from latentfit.em.hmm.inference.runtime import empty_large
from latentfit.errors import ParameterError

__all__ = [
    "DiagGaussianTerms",
    "categorical_log_likelihood",
    "categorical_mstep",
    "categorical_stats",
    "covariance_rounding",
    "diag_gaussian_terms",
    "dirichlet_log_prior",
    "dirichlet_map",
    "draws_in_dtype",
    "fill_covars",
    "gaussian_emission_mstep",
    "gaussian_log_likelihood",
    "gaussian_log_prior",
    "gaussian_stats",
    "gmm_degenerate",
    "gmm_far",
    "gmm_log_likelihood",
    "gmm_log_prior",
    "gmm_mstep",
    "gmm_scatter",
    "gmm_stats",
    "map_transitions",
    "multinomial_sample",
    "multinomial_stats",
    "poisson_log_likelihood",
    "poisson_log_prior",
    "poisson_mstep",
    "poisson_stats",
    "quadratic_features",
    "with_counts",
]

_ROWS = 1 << 16  # rows per block for (t, k·d) temporaries
_STAT_ROWS = 1 << 13  # rows per block of the statistics products (measured fastest)


def _empty(count: torch.Tensor) -> torch.Tensor:
    return count <= 10 * torch.finfo(count.dtype).eps


def dirichlet_map(counts: torch.Tensor, prior, old: torch.Tensor) -> tuple[torch.Tensor, list]:
    """MAP of (rows of) a categorical distribution under a Dirichlet(``prior``) prior, as
    hmmlearn: ``max(prior − 1 + counts, 0)`` normalised, entries that were 0 stay 0
    (structural zeros, e.g. left-right models). A row with nothing to normalise keeps ``old``
    and is reported (its index) in the returned list."""
    new = torch.as_tensor(prior, dtype=counts.dtype, device=counts.device) - 1 + counts
    new = new.clamp_min(0).masked_fill(old == 0, 0.0)
    total = new.sum(-1, keepdim=True)
    empty = (total <= 0).squeeze(-1)
    new = torch.where(total > 0, new / torch.where(total > 0, total, 1.0), old)
    bad = empty.nonzero().flatten().tolist() if empty.dim() else ([0] if bool(empty) else [])
    return new, bad


def dirichlet_log_prior(probs: torch.Tensor, prior) -> torch.Tensor:
    """Σ (α − 1) log p over (rows of) probabilities ``probs`` under a Dirichlet(``prior``)
    prior, up to its normalising constant: the term whose sum with the expected counts
    :func:`dirichlet_map` maximises. An entry that is 0 (a structural zero, or the MAP at the
    boundary for α < 1) adds nothing. A 0-d tensor."""
    a = torch.as_tensor(prior, dtype=probs.dtype, device=probs.device) - 1
    positive = probs > 0
    return torch.where(positive, a * torch.where(positive, probs, 1.0).log(), 0.0).sum()


def with_counts(stats: dict, post) -> dict:
    """The E-step's emission statistics ``stats`` completed with what every Markov model's
    E-step returns from its posterior ``post``: the expected start and transition counts and
    the log-likelihood (shape (1,), summed over batches by the driver)."""
    stats["start"] = post.start_counts
    stats["trans"] = post.transition_counts
    stats["log_likelihood"] = post.log_likelihood.reshape(1)
    return stats


def map_transitions(model, params: dict, stats: dict) -> tuple[dict, list[int]]:
    """The M-step of the start and transition probabilities whose letters ("s", "t") are in
    ``model.params``: their Dirichlet MAP under ``model.startprob_prior`` /
    ``model.transmat_prior`` (:func:`~latentfit.em.hmm.emissions.dirichlet_map`). Returns a
    copy of ``params`` with them updated, and the transition rows that kept their old values
    (states no transition leaves)."""
    new = dict(params)
    rows: list[int] = []
    if "s" in model.params:
        new["startprob"], _ = dirichlet_map(
            stats["start"], model.startprob_prior, params["startprob"]
        )
    if "t" in model.params:
        new["transmat"], rows = dirichlet_map(
            stats["trans"], model.transmat_prior, params["transmat"]
        )
    return new, rows


def fill_covars(covars: torch.Tensor, covariance_type: str, k: int, d: int) -> torch.Tensor:
    """Full (k, d, d) matrices from the compact storage of each covariance type."""
    if covariance_type == "full":
        return covars
    if covariance_type == "diag":
        return torch.diag_embed(covars)
    if covariance_type == "tied":
        return covars.expand(k, d, d).clone()
    eye = torch.eye(d, dtype=covars.dtype, device=covars.device)
    return covars.reshape(-1, 1, 1) * eye


def gaussian_sample(
    means: torch.Tensor, roots: torch.Tensor, labels: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """x_i = μ_{l_i} + R_{l_i} z_i for ``means`` (k, d), ``roots`` (k, d, d) with R Rᵀ the
    covariances, ``labels`` (n,) and standard normal ``z`` (n, d): component by component, so
    that memory is O(n d), not the (n, d, d) of a root gathered for every row."""
    x = means[labels]  # (n, d)
    for j in torch.unique(labels).tolist():
        rows = labels == j
        x[rows] += z[rows] @ roots[j].T
    return x


def draws_in_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Draws ``x`` (n, d), made in float64 so that a seed draws the same values whatever the
    model's dtype, in ``dtype`` (what the model's other outputs come in); whole-number draws
    (counts, symbols) stay integers. A draw that is not finite, in float64 (an autoregression
    that grows without bound) or once in ``dtype`` (beyond its range), is a ParameterError
    naming its row and column, not an inf or NaN returned as a sample."""
    if not x.is_floating_point():
        return x
    idx = first_nonfinite(x)
    if idx is not None:
        raise ParameterError(
            f"the model drew {float(x[idx])} at row {idx[0]}, column {idx[-1]}: its draws "
            "overflow float64 (an autoregression whose coefficients let the values grow "
            "without bound, or parameters near float64's range); draw fewer rows, or check "
            "the parameters"
        )
    out = x.to(dtype)
    idx = first_nonfinite(out)
    if idx is not None:
        label = str(dtype).removeprefix("torch.")
        raise ParameterError(
            f"the model drew {float(x[idx]):.4g} at row {idx[0]}, column {idx[-1]}, beyond the "
            f"range of {label} (largest {torch.finfo(dtype).max:.3g}), the model's dtype: its "
            "parameters reach past what it can hold; fit the data rescaled, or in float64"
        )
    return out


# ---------------------------------------------------------------------------- Gaussian


class DiagGaussianTerms(NamedTuple):
    """The affine form of diagonal and spherical Gaussian log-densities in the features
    ``[(x − c)², x − c]``: ``log N(x | μ_k, Σ_k) = const_k + features · W[:, k]``."""

    shift: torch.Tensor  # (d,) the centre c
    W: torch.Tensor  # (2d, k): −½ λ over λ (μ − c), λ the precisions
    const: torch.Tensor  # (k,)


#: What to try when a state's covariance is not positive definite, in the HMMs' own names.
HMM_REMEDY = (
    "Try a larger min_covar (the floor of every variance) or covars_prior, fewer states, "
    "scaling the data (e.g. StandardScaler), float64, or removing constant/duplicated columns."
)


def _state_precision(covars, covariance_type: str, remedy: str = HMM_REMEDY) -> torch.Tensor:
    """:func:`precision_cholesky` of state covariances, its error naming states and what to
    try (``remedy``: min_covar, or the model's own floor)."""
    return precision_cholesky(covars, covariance_type, unit="state", remedy=remedy)


def diag_gaussian_terms(
    means, covars, covariance_type: str, shift=None, delta=None, remedy: str = HMM_REMEDY
) -> DiagGaussianTerms:
    """:class:`DiagGaussianTerms` of diagonal or spherical Gaussians (Bishop 2006, eq. 2.43
    expanded), centred on ``shift`` (by default the mean of the means). ``delta`` (k, d) may
    give μ − c when it is known more precisely than ``means − shift`` (float32 far from 0)."""
    c = means.mean(0) if shift is None else shift
    k, d = means.shape
    prec = _state_precision(covars, covariance_type, remedy).square()  # (k,) or (k, d)
    prec = prec.unsqueeze(1).expand(k, d) if covariance_type == "spherical" else prec
    mu = means - c if delta is None else delta
    W = torch.cat([-0.5 * prec, mu * prec], 1).T.contiguous()  # (2d, k)
    const = -0.5 * ((mu * mu * prec).sum(1) + d * math.log(2 * math.pi)) + 0.5 * prec.log().sum(1)
    return DiagGaussianTerms(c, W, const)


def gaussian_log_likelihood(
    X,
    means,
    covars,
    covariance_type: str,
    *,
    shift=None,
    features=None,
    terms=None,
    delta=None,
    remedy: str = HMM_REMEDY,
) -> torch.Tensor:
    """log N(x_t | μ_k, Σ_k): (t, d) → (t, k); ``covars`` in hmmlearn's compact storage
    (spherical (k,), diag (k, d), full (k, d, d), tied (d, d)). Centred on ``shift`` (by
    default the mean of the means) so that data far from the origin keeps its precision.

    Diagonal and spherical densities are one product ``[(x−c)², x−c, 1] @ W`` (Bishop 2006,
    eq. 2.43 expanded), the cheapest form for long sequences of few features; ``features``
    (t, 2d), the :func:`quadratic_features` of ``X`` about ``shift``, spares computing them,
    and ``terms``, the :func:`diag_gaussian_terms` of the parameters, spares deriving them.
    ``delta`` (k, d): μ − ``shift``, when known more precisely than ``means − shift``.
    ``remedy``: what a covariance that is not positive definite says to try."""
    if covariance_type not in ("diag", "spherical"):
        c = means.mean(0) if shift is None else shift
        return log_gaussian_prob(
            X - c,
            means - c if delta is None else delta,
            _state_precision(covars, covariance_type, remedy),
            covariance_type,
        )
    terms = terms or diag_gaussian_terms(means, covars, covariance_type, shift, delta, remedy)
    c, W, const = terms
    out = empty_large(X.shape[0], W.shape[1], dtype=X.dtype, device=X.device)
    if features is not None:
        return torch.addmm(const, features, W, out=out)
    return inference.diag_gaussian_densities(X, c, W, const, out, rows=_ROWS)


def _quadratic_features(X, c) -> torch.Tensor:
    Xc = X - c  # (r, d)
    return torch.cat([Xc * Xc, Xc], 1)  # (r, 2d)


def quadratic_features(X, shift) -> torch.Tensor:
    """``[(x − c)², x − c]`` (t, 2d) about ``shift`` c: what the diagonal and spherical
    densities and statistics need of the data. With a shift fixed for the whole fit they
    are computed once and shared by every iteration (:func:`gaussian_log_likelihood`,
    :func:`gaussian_stats`)."""
    t, d = X.shape
    out = empty_large(t, 2 * d, dtype=X.dtype, device=X.device)
    for i in range(0, t, _ROWS):
        xc = torch.sub(X[i : i + _ROWS], shift, out=out[i : i + _ROWS, d:])
        torch.mul(xc, xc, out=out[i : i + _ROWS, :d])
    return out


def gaussian_stats(X, gamma, shift, covariance_type: str, features=None) -> dict[str, torch.Tensor]:
    """``post`` (k,) = Σ γ, ``obs`` (k, d) = Σ γ (x − c), and the second moments about ``c``:
    ``obs2`` (k, d) for spherical/diag, ``obsobs`` (k, d, d) for full, (d, d) for tied.
    ``features``: the :func:`quadratic_features` of ``X`` about ``shift``, if at hand."""
    t, d = X.shape
    k = gamma.shape[1]
    if features is not None and covariance_type in ("spherical", "diag"):
        # blocks that stay in cache: faster than one long product, and Σ γ while γ is there
        m = torch.zeros(2 * d, k, dtype=X.dtype, device=X.device)  # Σ featuresᵀ γ
        post = torch.zeros(k, dtype=X.dtype, device=X.device)
        for i in range(0, t, _STAT_ROWS):
            g = gamma[i : i + _STAT_ROWS]  # (r, k)
            m.addmm_(features[i : i + _STAT_ROWS].T, g)
            post += g.sum(0)
        return {"post": post, "obs2": m[:d].T.contiguous(), "obs": m[d:].T.contiguous()}
    out = {"post": gamma.sum(0)}
    if covariance_type in ("spherical", "diag"):
        m = torch.zeros(2 * d, k, dtype=X.dtype, device=X.device)  # Σ featuresᵀ γ
        for i in range(0, t, _ROWS):
            m.addmm_(_quadratic_features(X[i : i + _ROWS], shift).T, gamma[i : i + _ROWS])
        out["obs2"], out["obs"] = m[:d].T.contiguous(), m[d:].T.contiguous()
        return out
    obs = torch.zeros(k, d, dtype=X.dtype, device=X.device)
    second = None
    for i in range(0, t, _ROWS):
        Xc = X[i : i + _ROWS] - shift  # (r, d)
        g = gamma[i : i + _ROWS]  # (r, k)
        obs += g.T @ Xc
        if covariance_type == "full":
            s = ((g.unsqueeze(2) * Xc.unsqueeze(1)).reshape(len(Xc), k * d).T @ Xc).view(k, d, d)
        else:
            s = Xc.T @ Xc  # (d, d): Σ_k γ = 1
        second = s if second is None else second + s
    out["obs"] = obs
    out["obsobs"] = second
    return out


def gaussian_emission_mstep(
    stats,
    shift,
    old_c,
    covars,
    covariance_type: str,
    *,
    means_prior,
    means_weight,
    covars_prior,
    covars_weight,
    update_means: bool,
    update_covars: bool,
):
    """hmmlearn's GaussianHMM M-step (normal / inverse-gamma / inverse-Wishart priors) from
    statistics about ``shift`` ((d,) or (k, d)), with ``old_c`` (k, d) the means before it
    about ``shift``. Returns (means about ``shift``, covars, unvisited states): the means
    about the origin would round to the spacing of the shift (1/64 near 7e13 in float64)."""
    post, obs = stats["post"], stats["obs"]
    k, d = obs.shape
    dt, dev = obs.dtype, obs.device
    mw = torch.as_tensor(means_weight, dtype=dt, device=dev)
    mw = mw.reshape(k, 1) if mw.numel() == k and mw.numel() > 1 else mw
    mu0 = torch.as_tensor(means_prior, dtype=dt, device=dev) - shift  # prior about the shift
    denom = post.unsqueeze(1)  # (k, 1)
    empty = _empty(post)
    if update_means:
        m_den = mw + denom
        new_c = (mw * mu0 + obs) / torch.where(m_den > 0, m_den, 1.0)
        keep = _empty(m_den.expand(k, 1).squeeze(1))
        new_c = torch.where(keep.unsqueeze(1), old_c, new_c)
    else:
        new_c = old_c
    new_covars = covars
    if update_covars:
        cp = torch.as_tensor(covars_prior, dtype=dt, device=dev)
        cw = torch.as_tensor(covars_weight, dtype=dt, device=dev)
        # the prior's pull, written so that no prior (weight 0) adds exactly 0: with data far
        # from the origin (μ − μ₀)² alone may overflow, and 0 · inf would be NaN
        diff = torch.where(mw > 0, new_c - mu0, 0.0)  # (k, d)
        if covariance_type in ("spherical", "diag"):
            c_n = mw * diff**2 + stats["obs2"] - 2 * new_c * obs + new_c**2 * denom
            c_d = (cw - 1).clamp_min(0) + denom
            cov = (cp + c_n) / c_d.clamp_min(1e-5)  # (k, d)
            if covariance_type == "spherical":
                cov = cov.mean(1)
        else:
            outer = new_c.unsqueeze(2) * obs.unsqueeze(1)  # (k, d, d): μ (Σγx)ᵀ
            mwk = mw.reshape(-1, 1, 1) if mw.dim() else mw
            c_n = (
                mwk * diff.unsqueeze(2) * diff.unsqueeze(1)
                - outer
                - outer.mT
                + new_c.unsqueeze(2) * new_c.unsqueeze(1) * post.reshape(k, 1, 1)
            )
            cvw = (cw - d).clamp_min(0)
            if covariance_type == "tied":
                cov = (cp + c_n.sum(0) + stats["obsobs"]) / (cvw + post.sum())
            else:
                cov = (cp + c_n + stats["obsobs"]) / (cvw + post.reshape(k, 1, 1))
        if covariance_type != "tied" and bool(empty.any()):
            cov = torch.where(empty.reshape(-1, *([1] * (cov.dim() - 1))), covars, cov)
        new_covars = cov
    return new_c, new_covars, empty.nonzero().flatten().tolist()


def gaussian_log_prior(
    means,
    covars,
    covariance_type: str,
    *,
    means_prior,
    means_weight,
    covars_prior,
    covars_weight,
) -> torch.Tensor:
    """log p(μ, Σ), up to its constant, of the priors whose MAP :func:`gaussian_emission_mstep`
    computes (hmmlearn's update): what it maximises with the expected complete-data
    log-likelihood Σ_t γ_tk log N(x_t | μ_k, Σ_k). With Ψ = ``covars_prior``, w = ``means_weight``,
    μ₀ = ``means_prior`` and ν = ``covars_weight``, per state k:

    * diag, per feature j: −(max(ν − 1, 0)/2) log σ²_kj − (Ψ_kj + w_k (μ_kj − μ₀_kj)²) / (2σ²_kj);
    * spherical: the diag terms summed over j at σ²_kj = σ²_k (the update's mean over j of
      the diag update is their maximiser where ν is the same for every j);
    * full: −(max(ν − d, 0)/2) log|Σ_k| − ½ tr(Σ_k⁻¹ (Ψ_k + w_k (μ_k − μ₀_k)(μ_k − μ₀_k)ᵀ));
    * tied: −(max(ν − d, 0)/2) log|Σ| − ½ tr(Σ⁻¹ (Ψ + Σ_k w_k (μ_k − μ₀_k)(μ_k − μ₀_k)ᵀ)), a
      matrix ν taken as its mean (the update divides entry by entry: a MAP where they are
      equal, as hmmlearn's scalar ν always is).

    The means' normal prior of precision w_k Σ_k⁻¹ enters through its quadratic term alone: the
    update's denominators count no ½ log|Σ_k| for it. ``means`` (k, d), ``covars`` in
    hmmlearn's compact storage, as positive definite as the E-step needs them. A 0-d tensor;
    at hmmlearn's defaults (Ψ = 0.01, ν = 1, w = 0) it is −Σ 0.01/(2σ²) (diag, spherical)."""
    k, d = means.shape
    dt, dev = means.dtype, means.device
    mw = torch.as_tensor(means_weight, dtype=dt, device=dev)
    mw = mw.reshape(k, 1) if mw.numel() == k and mw.numel() > 1 else mw
    diff = torch.where(mw > 0, means - torch.as_tensor(means_prior, dtype=dt, device=dev), 0.0)
    cp = torch.as_tensor(covars_prior, dtype=dt, device=dev)
    cw = torch.as_tensor(covars_weight, dtype=dt, device=dev)
    if covariance_type in ("spherical", "diag"):
        var = covars if covariance_type == "diag" else covars.reshape(k, 1)  # (k, d) or (k, 1)
        a = torch.broadcast_to((cw - 1).clamp_min(0) / 2, (k, d))
        scale = torch.broadcast_to(cp + mw * diff**2, (k, d))
        return (-a * var.log() - scale / (2 * var)).sum()
    mwk = torch.broadcast_to(mw.reshape(-1, 1, 1) if mw.dim() else mw, (k, 1, 1))
    outer = mwk * diff.unsqueeze(2) * diff.unsqueeze(1)  # (k, d, d)
    if covariance_type == "tied":
        a = (cw - d).clamp_min(0).mean() / 2
        psi = (cp + outer.sum(0)).unsqueeze(0)  # (1, d, d)
        cov = covars.unsqueeze(0)
    else:
        a = torch.broadcast_to((cw - d).clamp_min(0), (k, 1, 1)).reshape(k) / 2
        psi = cp + outer  # (k, d, d)
        cov = covars
    L = torch.linalg.cholesky(cov)  # (·, d, d)
    logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    trace = torch.cholesky_solve(torch.broadcast_to(psi, cov.shape), L)
    return (-a * logdet - trace.diagonal(dim1=-2, dim2=-1).sum(-1) / 2).sum()


def covariance_rounding(
    stats, covars: torch.Tensor, covariance_type: str, eps: float
) -> torch.Tensor:
    """How far the total log-likelihood may fall because the full or tied covariance update
    ``covars`` ((k, d, d) or (d, d)) from ``stats`` rounds.

    The update subtracts outer products from the second moments about the statistics'
    centre, so every entry of Σ_k rounds by up to ρ_k ≈ 100·eps·(its largest second moment
    about that centre), as :func:`~latentfit.em.gaussian.unresolved_variances` takes it; a
    perturbation δ of Σ_k with entries of that size moves Σ_t γ_tk log N(x_t | μ_k, Σ_k) by
    ½ N_k tr(Λ_k δ) through the log-determinant and as much through the quadratic terms, at
    most about N_k ρ_k tr(Λ_k) nats. On ordinary data that is ~1e-13 N d; where the states
    lie far apart for their spread it is not: the first iterations from a broad start mix
    rows 1e8 apart, whose covariance of condition ~1e15 keeps no digit of its smallest
    eigenvalue (1.1 computed as 11.9), and the next E-step's log-likelihood falls by ~100
    nats before the states' own moments resolve it. Returns the bound (1,) in float64."""
    tiny = torch.finfo(torch.float64).tiny
    second = stats["obsobs"].double().diagonal(dim1=-2, dim2=-1)  # (k, d) or (d,)
    lam = torch.linalg.eigvalsh(covars.double())  # (k, d) or (d,)
    trace = (1 / lam.clamp_min(tiny)).sum(-1)  # tr Λ
    if covariance_type == "tied":  # Σ_k N_k ρ tr Λ, ρ from the pooled second moments
        slack = 100 * eps * second.amax() * trace
    else:  # N_k ρ_k = 100 eps (Σ_t γ_tk, its largest second moment)
        slack = (100 * eps * second.amax(-1) * trace).sum()
    return slack.nan_to_num(posinf=torch.finfo(torch.float64).max).reshape(1)


# ---------------------------------------------------------------------------- GMM emissions


def _mixture_log_prob(X, weights, means, covars, covariance_type, direct=None):
    """log w_km + log N(x | μ_km, Σ_km): (t, k, m), in the affine form about the mean c of
    the component means, except for the components that form cannot resolve
    (:func:`~latentfit.em.gaussian.far_components`: a component of sd 0.01 a hundred from
    the others in float32, or rows 3, 5, 7 beside two rows of 1e8 in float64 gave
    log-likelihoods 50-360 nats and 0.6 nat off), which are computed from x − μ_km
    (:func:`~latentfit.em.gaussian.direct_log_prob`). ``direct`` = (X, means) uncentred,
    when ``X`` and ``means`` are taken about a centre (during a fit): their differences keep
    the digits that x − c rounds away in float32."""
    k, m, d = means.shape
    c = means.reshape(-1, d).mean(0)
    X_abs, means_abs = (X, means) if direct is None else direct
    parts = []
    for s in range(k):
        cov = covars[s]
        ct = covariance_type
        if ct == "tied":  # one matrix per state, shared by its mixture components
            cov, ct = cov.expand(m, d, d), "full"
        pc = _state_precision(cov, ct)
        lp = log_gaussian_prob(X - c, means[s] - c, pc, ct)  # (t, m)
        far = far_components(means[s] - c, pc, ct)
        if len(far):  # too far from c for that form: from x − μ_km
            lp[:, far] = direct_log_prob(X_abs, means_abs[s][far], pc[far], ct)
        parts.append(lp)
    return torch.stack(parts, 1) + weights.log()  # (t, k, m)


def gmm_far(means, covars, covariance_type) -> torch.Tensor:
    """(k, m) mask of the mixture components :func:`_mixture_log_prob` computes from
    x − μ_km: those the affine form about the mean of the component means cannot resolve
    (:func:`~latentfit.em.gaussian.far_components`, state by state)."""
    k, m, d = means.shape
    c = means.reshape(-1, d).mean(0)
    out = torch.zeros(k, m, dtype=torch.bool, device=means.device)
    for s in range(k):
        cov, ct = covars[s], covariance_type
        if ct == "tied":
            cov, ct = cov.expand(m, d, d), "full"
        out[s, far_components(means[s] - c, _state_precision(cov, ct), ct)] = True
    return out


def gmm_log_likelihood(X, weights, means, covars, covariance_type, direct=None) -> torch.Tensor:
    """log Σ_m w_km N(x_t | μ_km, Σ_km): (t, k). Covars as hmmlearn's GMMHMM: spherical
    (k, m), diag (k, m, d), full (k, m, d, d), tied (k, d, d). ``direct``: (X, means)
    uncentred when ``X`` and ``means`` are centred (see :func:`_mixture_log_prob`)."""
    lp = _mixture_log_prob(X, weights, means, covars, covariance_type, direct)
    return torch.logsumexp(lp, 2)


def gmm_stats(
    X, gamma, weights, means, covars, covariance_type, direct=None
) -> dict[str, torch.Tensor]:
    """Statistics of the GMM-HMM about the current component means μ_km: ``n`` (k, m) = Σ γ r,
    ``s1`` (k, m, d) = Σ γ r (x − μ_km), ``s2`` = Σ γ r (x − μ_km)(x − μ_km)ᵀ (per covariance
    type: (k, m, d, d) full/tied, (k, m, d) diag/spherical), ``post`` (k,) = Σ γ.
    ``direct``: (X, means) uncentred when ``X`` and ``means`` are centred (see
    :func:`_mixture_log_prob`); the components of :func:`gmm_far` then take their moments
    from those."""
    k, m, _d = means.shape
    out: dict[str, torch.Tensor] = {}
    far = None if direct is None else gmm_far(means, covars, covariance_type)  # (k, m)
    far = far if far is not None and bool(far.any()) else None
    rows = max(1, _ROWS // max(1, k * m))  # at least a row a block, however many components
    for i in range(0, X.shape[0], rows):
        x = X[i : i + rows]
        part_direct = None if direct is None else (direct[0][i : i + rows], direct[1])
        lp = _mixture_log_prob(x, weights, means, covars, covariance_type, part_direct)
        r = torch.softmax(lp, 2) * gamma[i : i + len(x)].unsqueeze(2)  # (r, k, m)
        cen = x[:, None, None, :] - means  # (r, k, m, d)
        if far is not None:  # as their log-densities: x − c rounds to the spacing of c
            cen[:, far] = part_direct[0][:, None, :] - direct[1][far]  # (r, f, d)
        part = {"n": r.sum(0), "s1": torch.einsum("rkm,rkmd->kmd", r, cen)}
        if covariance_type in ("full", "tied"):
            part["s2"] = torch.einsum("rkm,rkmd,rkme->kmde", r, cen, cen)
        else:
            part["s2"] = torch.einsum("rkm,rkmd->kmd", r, cen * cen)
        out = part if not out else {key: out[key] + part[key] for key in out}
    out["post"] = gamma.sum(0)
    return out


def gmm_priors(
    covariance_type,
    k,
    m,
    d,
    weights_prior,
    means_prior,
    means_weight,
    covars_prior,
    covars_weight,
    dtype,
    device,
):
    """hmmlearn's GMMHMM prior defaults, broadcast to their full shapes (never stored)."""
    if covars_prior is None:
        covars_prior = {"full": 0.0, "tied": 0.0, "diag": -1.5, "spherical": -(m + 2.0) / 2.0}[
            covariance_type
        ]
    if covars_weight is None:
        covars_weight = {
            "full": -(1.0 + d + 1.0),
            "tied": -(m + d + 1.0),
            "diag": 0.0,
            "spherical": 0.0,
        }[covariance_type]

    def full(v, shape):
        return torch.as_tensor(v, dtype=dtype, device=device).expand(shape).clone()

    cp_shape = {"full": (k, m, d, d), "tied": (k, d, d), "diag": (k, m, d), "spherical": (k, m)}[
        covariance_type
    ]
    cw_shape = {"full": (k, m), "tied": (k,), "diag": (k, m, d), "spherical": (k, m)}
    return (
        full(weights_prior, (k, m)),
        full(means_prior, (k, m, d)),
        full(means_weight, (k, m)),
        full(covars_prior, cp_shape),
        full(covars_weight, cw_shape[covariance_type]),
    )


def gmm_log_prior(means, covars, covariance_type: str, priors) -> torch.Tensor:
    """log p(μ, Σ), up to its constant, of the normal-inverse-gamma / normal-inverse-Wishart
    priors whose MAP :func:`gmm_mstep` computes (hmmlearn's GMMHMM update; the mixture
    weights' Dirichlet is :func:`dirichlet_log_prior`). ``priors`` as :func:`gmm_priors`
    gives them, (α, μ₀, λ, Ψ, ν); ``means`` (k, m, d), ``covars`` in hmmlearn's GMMHMM
    storage. Each component's mean is N(μ₀, Σ/λ) and, read off the update's denominators:

    * diag, per feature: σ² ~ InvGamma(Ψ, ν), −(Ψ + 3/2) log σ² − (ν + λ (μ − μ₀)²/2) / σ²
      with the normal's ½ log σ²;
    * spherical: σ² ~ InvGamma(Ψ, ν), −(Ψ + 1 + d/2) log σ² − (ν + λ |μ − μ₀|²/2) / σ²;
    * full: Σ ~ InvWishart(Ψ, ν), −((ν + d + 2)/2) log|Σ| − ½ tr(Σ⁻¹ (Ψᵀ + λ (μ − μ₀)(μ − μ₀)ᵀ));
    * tied (one Σ per state for its m components): −((ν + d + 1 + m)/2) log|Σ| −
      ½ tr(Σ⁻¹ (Ψᵀ + Σ_m λ (μ − μ₀)(μ − μ₀)ᵀ)).

    0 at hmmlearn's defaults except spherical, whose default Ψ = −(m + 2)/2 leaves
    −((d − m)/2) log σ² per component. A 0-d tensor."""
    _alpha, mu0, lam, psi, nu = priors
    _k, m, d = means.shape
    cm = torch.where((lam > 0).unsqueeze(2), means - mu0, 0.0)  # (k, m, d)
    if covariance_type == "diag":
        scale = nu + lam.unsqueeze(2) * cm**2 / 2  # (k, m, d)
        return (-(psi + 1.5) * covars.log() - scale / covars).sum()
    if covariance_type == "spherical":
        scale = nu + lam * (cm**2).sum(2) / 2  # (k, m)
        return (-(psi + 1 + d / 2) * covars.log() - scale / covars).sum()
    outer = lam[..., None, None] * cm.unsqueeze(3) * cm.unsqueeze(2)  # (k, m, d, d)
    if covariance_type == "full":
        a, scale = (nu + d + 2) / 2, psi.mT + outer  # (k, m), (k, m, d, d)
    else:
        a, scale = (nu + d + 1 + m) / 2, psi.mT + outer.sum(1)  # (k,), (k, d, d)
    L = torch.linalg.cholesky(covars)
    logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    trace = torch.cholesky_solve(scale, L).diagonal(dim1=-2, dim2=-1).sum(-1)
    return (-a * logdet - trace / 2).sum()


def gmm_scatter(stats, delta, covariance_type) -> torch.Tensor:
    """Σ γ r (x − μ')(x − μ')ᵀ of every mixture component about its updated mean
    μ' = μ + ``delta`` (k, m, d), from :func:`gmm_stats` about μ: (k, m, d, d) full/tied,
    the diagonal (k, m, d) diag/spherical. What the data give the covariance update of
    :func:`gmm_mstep`, before its priors."""
    n, s1, s2 = stats["n"], stats["s1"], stats["s2"]
    if covariance_type in ("full", "tied"):
        return (
            s2
            - s1.unsqueeze(3) * delta.unsqueeze(2)
            - delta.unsqueeze(3) * s1.unsqueeze(2)
            + n[..., None, None] * delta.unsqueeze(3) * delta.unsqueeze(2)
        )
    return s2 - 2 * s1 * delta + n.unsqueeze(2) * delta**2  # (k, m, d)


def gmm_degenerate(
    scatter, n, means, covariance_type: str, floor: float
) -> dict[tuple[int, int], int | None]:
    """The mixture components that sit on a handful of (near-)identical rows:
    {(state, component): feature}, :func:`~latentfit.em.gaussian.degenerate_components` over
    the k·m components of all the states, against the covariance of the data they hold.

    ``scatter`` as :func:`gmm_scatter` gives it, ``n`` (k, m) the components' masses Σ γ r,
    ``means`` (k, m, d) about any point, ``floor`` what the update adds to a variance
    (``min_covar`` and the prior's scale). Only components holding at least half a row are
    judged: an empty one has no variance to speak of. Tied: a state whose pooled
    within-component scatter is degenerate has all its components on (nearly) one point
    each, and every component of it that holds data is listed."""
    k, m, d = means.shape
    scatter, n, means = scatter.double(), n.double(), means.double()
    matrix = covariance_type in ("full", "tied")
    mass = n.clamp_min(torch.finfo(torch.float64).tiny)
    var = scatter / (mass[..., None, None] if matrix else mass.unsqueeze(2))  # per component
    # the covariance of the data, unregularised: the mixture of all k·m components
    data_cov = mixture_covariance(
        n.flatten(), means.reshape(k * m, d), var.flatten(0, 1), "full" if matrix else "diag"
    )
    held = n >= 0.5  # (k, m)
    if covariance_type == "tied":
        post = n.sum(1).clamp_min(torch.finfo(torch.float64).tiny)
        pooled = scatter.sum(1) / post[:, None, None]  # (k, d, d)
        states = degenerate_components(pooled, "full", data_cov, floor)
        return {(s, c): j for s, j in states.items() for c in range(m) if held[s, c]}
    if covariance_type == "spherical":
        var = var.mean(2)  # (k, m)
    found = degenerate_components(var.flatten(0, 1), covariance_type, data_cov, floor)
    return {divmod(i, m): j for i, j in found.items() if held.flatten()[i]}


def gmm_mstep(stats, weights, means, covars, covariance_type, priors, update: str):
    """hmmlearn's GMMHMM M-step, with the scatter taken about the *new* means (exact EM).
    ``update`` holds the letters w, m, c. Returns (weights, means, covars, unvisited)."""
    alpha, mu0, lam, psi, nu = priors
    n, s1, post = stats["n"], stats["s1"], stats["post"]
    _k, m, d = means.shape
    empty = _empty(post)
    if "w" in update:
        # n + (α − 1), not (n + α) − 1: a component of mass 1e-14 would lose its digits to the
        # 1 (weight 0.9988 where the state's only component must weigh exactly 1)
        num = n + (alpha - 1)
        # normalised by its own sum, post + Σ(α − 1) in exact arithmetic: a float32 E-step's
        # Σ_j n_j differs from post by its rounding (1e-3 on a state of little mass), and
        # weights (0.50048, 0.50048) were saved that the loader refused as no distribution
        den = num.sum(1, keepdim=True)
        new_w = num / torch.where(den > 0, den, 1.0)
        # a state with (rounding) mass but no component mass keeps its weights, never 0/x
        ok = (den > 0).squeeze(1) & (num >= 0).all(1) & (num.sum(1) > 0)
        weights = torch.where(ok.unsqueeze(1), new_w, weights)
    delta = torch.zeros_like(means)
    if "m" in update:
        m_d = n + lam  # (k, m)
        target = lam.unsqueeze(2) * mu0 + n.unsqueeze(2) * means + s1
        new_means = target / torch.where(m_d > 0, m_d, 1.0).unsqueeze(2)
        new_means = torch.where((m_d > 0).unsqueeze(2), new_means, means)
        delta = new_means - means
        means = new_means
    if "c" in update:
        sc = gmm_scatter(stats, delta, covariance_type)
        cm = means - mu0
        if covariance_type in ("full", "tied"):
            dots = lam[..., None, None] * cm.unsqueeze(3) * cm.unsqueeze(2)
            if covariance_type == "full":
                c_n = psi.mT + dots + sc
                c_d = (n + 1 + nu + d + 1)[..., None, None]
            else:
                c_n = psi.mT + dots.sum(1) + sc.sum(1)
                c_d = (post + m + nu + d + 1)[:, None, None]
        else:
            if covariance_type == "diag":
                c_n = lam.unsqueeze(2) * cm**2 + 2 * nu + sc
                c_d = n.unsqueeze(2) + 1 + 2 * (psi + 1)
            else:
                c_n = lam * (cm**2).sum(2) + 2 * nu + sc.sum(2)
                c_d = d * (n + 1) + 2 * (psi + 1)
        # a mixture component with no mass (c_d = 0 under hmmlearn's default priors) keeps
        # its covariance: 0/0 would store NaN although its state has data
        new = torch.where(c_d > 0, c_n / torch.where(c_d > 0, c_d, 1.0), covars)
        keep = empty.reshape(-1, *([1] * (new.dim() - 1)))
        covars = torch.where(keep, covars, new)
    return weights, means, covars, empty.nonzero().flatten().tolist()


# ---------------------------------------------------------------------------- categorical


def categorical_log_likelihood(X, emissionprob) -> torch.Tensor:
    """log B[k, x_t]: symbols (t,) int64 → (t, k)."""
    return emissionprob.log().T[X]


def categorical_stats(X, gamma, n_symbols: int) -> dict[str, torch.Tensor]:
    """``obs`` (k, n_symbols) = Σ_t γ_t 1[x_t = symbol]."""
    out = torch.zeros(n_symbols, gamma.shape[1], dtype=gamma.dtype, device=gamma.device)
    return {"obs": out.index_add_(0, X, gamma).T.contiguous()}


def categorical_mstep(stats, emissionprob, prior):
    new, bad = dirichlet_map(stats["obs"], prior, torch.ones_like(emissionprob))
    if bad:
        new[bad] = emissionprob[bad]
    return new, bad


# ---------------------------------------------------------------------------- multinomial


def multinomial_stats(X, gamma) -> dict[str, torch.Tensor]:
    """``obs`` (k, d) = Σ_t γ_t x_t: every state's expected counts of the d categories (the
    statistics of the categorical model summed over trials; :func:`categorical_mstep` is
    their Dirichlet MAP)."""
    return {"obs": gamma.T @ X}


def multinomial_sample(n_trials: float, probs: torch.Tensor, generator) -> torch.Tensor:
    """One draw of Mult(``n_trials``, p_i) for every row p_i of ``probs`` (n, d): counts
    (n, d) by conditional binomials (the multinomial's chain rule), x_1 ~ Bin(N, p_1) and
    x_j ~ Bin(N − Σ_{i<j} x_i, p_j / Σ_{i≥j} p_i), so that memory and time are O(n · d)
    whatever the number of trials. ``probs`` and ``generator`` on the same device."""
    n, d = probs.shape
    tail = probs.flip(1).cumsum(1).flip(1)  # (n, d): Σ_{i≥j} p_i
    out = torch.empty_like(probs)
    left = torch.full((n,), float(n_trials), dtype=probs.dtype, device=probs.device)
    for j in range(d - 1):
        rest = tail[:, j]
        share = torch.where(rest > 0, probs[:, j] / torch.where(rest > 0, rest, 1.0), 0.0)
        out[:, j] = torch.binomial(left, share.clamp(0.0, 1.0), generator=generator)
        left = left - out[:, j]
    out[:, d - 1] = left
    return out


# ---------------------------------------------------------------------------- Poisson


def poisson_log_likelihood(X, lambdas) -> torch.Tensor:
    """Σ_d log Poisson(x_td | λ_kd): (t, d) → (t, k). A rate of 0 enters its log as the
    smallest normal number, so that 0 · log 0 = 0; a count there is impossible, which the
    model marks -inf (see :class:`~latentfit.em.hmm.discrete.ZeroCountEmissions`)."""
    lgam = torch.lgamma(X + 1).sum(1, keepdim=True)  # (t, 1)
    log_lam = lambdas.clamp_min(torch.finfo(lambdas.dtype).tiny).log()  # (k, d)
    return X @ log_lam.T - lambdas.sum(1) - lgam


def poisson_stats(X, gamma) -> dict[str, torch.Tensor]:
    return {"post": gamma.sum(0), "obs": gamma.T @ X}


def poisson_log_prior(lambdas: torch.Tensor, prior, weight) -> torch.Tensor:
    """Σ (a log λ − b λ) over the rates (k, d), a Gamma(a + 1, b) log density up to its
    constant: the term :func:`poisson_mstep`'s ``(a + Σ γ x) / (b + Σ γ)`` maximises with the
    expected counts. 0 without a prior (a = b = 0). A 0-d tensor."""
    dt, dev = lambdas.dtype, lambdas.device
    a = torch.as_tensor(prior, dtype=dt, device=dev)
    b = torch.as_tensor(weight, dtype=dt, device=dev)
    return (torch.xlogy(a, lambdas) - b * lambdas).sum()


def poisson_mstep(stats, lambdas, prior, weight):
    """Gamma(``prior``, ``weight``)-posterior mean per state, ``(a + Σ γ x) / (b + Σ γ)``.

    hmmlearn 0.3 writes the total count of all states in place of the state's own ``Σ γ``;
    the two agree without a prior. A state without data keeps its rates; a rate is 0 where
    the state's rows never count the feature (the MLE; see :func:`poisson_log_likelihood`)."""
    post, obs = stats["post"], stats["obs"]
    dt, dev = obs.dtype, obs.device
    den = torch.as_tensor(weight, dtype=dt, device=dev) + post  # (k,)
    num = torch.as_tensor(prior, dtype=dt, device=dev) + obs  # (k, d)
    empty = _empty(post)
    new = num / torch.where(den > 0, den, 1.0).unsqueeze(1)
    new = torch.where(empty.unsqueeze(1), lambdas, new)
    return new, empty.nonzero().flatten().tolist()
