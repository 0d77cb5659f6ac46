"""Pure tensor functions for the variational Bayesian Gaussian mixture (CAVI).

The model (Bishop 2006, §10.2; Blei & Jordan 2006 for the Dirichlet process):

    π ~ Dirichlet(γ₀) or stick-breaking v_k ~ Beta(1, γ₀),   z_n | π ~ Categorical(π),
    Λ_k ~ Wishart(W₀, ν₀),   μ_k | Λ_k ~ N(m₀, (β₀ Λ_k)⁻¹),   x_n | z_n = k ~ N(μ_k, Λ_k⁻¹),

with the mean-field family q(z) q(π) Π_k q(μ_k, Λ_k). The updates and the lower bound follow
scikit-learn's ``sklearn/mixture/_bayesian_mixture.py`` term by term (same parameterisation:
``covariances = W⁻¹ / ν``, the *normalised* covariance), so that both produce the same
numbers from the same responsibilities. :func:`elbo_constant` restores the constants that
scikit-learn drops, turning its bound into the ELBO in nats, comparable with log p(X).

Shapes: n samples, k components, d features. ``weight_concentration`` is (k,) for the
Dirichlet distribution and (2, k) — the Beta parameters (a, b) of each stick — for the
Dirichlet process. ``dof`` is (k,), or a 0-d tensor for the tied covariance.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit.em.gaussian import log_det_cholesky, log_gaussian_prob, precision_cholesky

__all__ = [
    "BGMMPrior",
    "NormalWishart",
    "elbo_constant",
    "expected_log_gaussian",
    "expected_log_gaussian_offset",
    "expected_log_weights",
    "log_dirichlet_norm",
    "log_wishart_norm",
    "lower_bound",
    "normal_wishart_update",
    "weight_concentration_update",
    "weights_from_concentration",
]

WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


class BGMMPrior(NamedTuple):
    """The prior hyper-parameters (scikit-learn's trailing-underscore ``*_prior_`` values)."""

    weight_type: str  # "dirichlet_process" or "dirichlet_distribution"
    weight_concentration: float  # γ₀
    mean_precision: float  # β₀
    mean: torch.Tensor  # m₀ (d,)
    dof: float  # ν₀ > d − 1
    covariance: torch.Tensor  # W₀⁻¹: (d, d) full/tied, (d,) diag, 0-d spherical


class NormalWishart(NamedTuple):
    """q(μ_k, Λ_k) for every component (``covariances`` normalised: W_k⁻¹ / ν_k)."""

    mean_precision: torch.Tensor  # β (k,)
    means: torch.Tensor  # m (k, d)
    dof: torch.Tensor  # ν (k,), 0-d for tied
    covariances: torch.Tensor  # by covariance type
    prec_chol: torch.Tensor  # Cholesky factor of ν W, by covariance type


def weight_concentration_update(nk: torch.Tensor, prior: BGMMPrior) -> torch.Tensor:
    """q(π) given the soft counts nk (k,) (Bishop 10.58; Blei & Jordan 2006, eq. 18–19).

    Dirichlet distribution: α = γ₀ + nk (k,). Dirichlet process: a_k = 1 + nk_k,
    b_k = γ₀ + Σ_{j>k} nk_j, stacked as (2, k).
    """
    if prior.weight_type == "dirichlet_distribution":
        return prior.weight_concentration + nk
    tail = nk.flip(0).cumsum(0).flip(0)  # (k,) Σ_{j≥k} nk_j, summed from the end like sklearn
    after = torch.cat([tail[1:], tail.new_zeros(1)])  # (k,) Σ_{j>k} nk_j
    return torch.stack([1.0 + nk, prior.weight_concentration + after])


def expected_log_weights(wc: torch.Tensor, weight_type: str) -> torch.Tensor:
    """E_q[log π_k] (k,): ψ(α_k) − ψ(Σα) (Bishop 10.66), or for the stick-breaking prior
    E[log v_k] + Σ_{j<k} E[log(1 − v_j)] (Blei & Jordan 2006, eq. 22)."""
    if weight_type == "dirichlet_distribution":
        return torch.special.digamma(wc) - torch.special.digamma(wc.sum())
    a, b = wc
    dsum = torch.special.digamma(a + b)
    dlog1m = (torch.special.digamma(b) - dsum).cumsum(0)  # (k,)
    return torch.special.digamma(a) - dsum + torch.cat([dlog1m.new_zeros(1), dlog1m[:-1]])


def weights_from_concentration(wc: torch.Tensor, weight_type: str) -> torch.Tensor:
    """Posterior-mean weights (k,), normalised to sum to one (scikit-learn's ``weights_``)."""
    if weight_type == "dirichlet_distribution":
        return wc / wc.sum()
    a, b = wc
    rest = b / (a + b)  # (k,) E[1 − v_k]
    w = a / (a + b) * torch.cat([rest.new_ones(1), rest[:-1].cumprod(0)])
    return w / w.sum()


def normal_wishart_update(
    nk: torch.Tensor, xk: torch.Tensor, sk: torch.Tensor, prior: BGMMPrior, covariance_type: str
) -> NormalWishart:
    """q(μ_k, Λ_k) from soft counts nk (k,), means xk (k, d) and covariances sk (by type)
    (Bishop 10.60–10.63, with ν_k = ν₀ + N_k; scikit-learn's choices for tied/diag/spherical)."""
    k = xk.shape[0]
    beta = prior.mean_precision + nk  # (k,)
    means = (prior.mean_precision * prior.mean + nk.unsqueeze(1) * xk) / beta.unsqueeze(1)
    diff = xk - prior.mean  # (k, d)
    shrink = prior.mean_precision / beta  # (k,)
    if covariance_type == "full":
        dof = prior.dof + nk  # (k,)
        outer = diff.unsqueeze(2) * diff.unsqueeze(1)  # (k, d, d)
        cov = prior.covariance + nk[:, None, None] * (sk + shrink[:, None, None] * outer)
        cov = cov / dof[:, None, None]
    elif covariance_type == "tied":
        dof = prior.dof + nk.sum() / k  # 0-d
        spread = ((nk / beta).unsqueeze(1) * diff).T @ diff  # (d, d)
        cov = prior.covariance + sk * nk.sum() / k + prior.mean_precision / k * spread
        cov = cov / dof
    elif covariance_type == "diag":
        dof = prior.dof + nk
        cov = prior.covariance + nk.unsqueeze(1) * (sk + shrink.unsqueeze(1) * diff.square())
        cov = cov / dof.unsqueeze(1)
    else:
        dof = prior.dof + nk
        cov = prior.covariance + nk * (sk + shrink * diff.square().mean(1))
        cov = cov / dof
    return NormalWishart(beta, means, dof, cov, precision_cholesky(cov, covariance_type))


def _sum_digamma_half(dof: torch.Tensor, d: int) -> torch.Tensor:
    """Σ_{j=0}^{d−1} ψ((ν − j)/2), elementwise in ν."""
    j = torch.arange(d, dtype=dof.dtype, device=dof.device)
    return torch.special.digamma(0.5 * (dof.unsqueeze(-1) - j)).sum(-1)


def expected_log_gaussian(X: torch.Tensor, q: NormalWishart, covariance_type: str) -> torch.Tensor:
    """E_q[log N(x_n | μ_k, Λ_k⁻¹)] for every sample and component (n, d) → (n, k)
    (Bishop 10.64–10.65), in scikit-learn's normalised-precision form: log N(x | m_k, (ν_k
    W_k)⁻¹) plus :func:`expected_log_gaussian_offset`."""
    log_gauss = log_gaussian_prob(X, q.means, q.prec_chol, covariance_type)  # (n, k)
    return log_gauss + expected_log_gaussian_offset(q, X.shape[1])


def expected_log_gaussian_offset(q: NormalWishart, d: int) -> torch.Tensor:
    """E_q[log N(x | μ_k, Λ_k⁻¹)] − log N(x | m_k, (ν_k W_k)⁻¹), the same for every x (k,) or
    0-d (tied): ½ (E[log |Λ_k|] − d log ν_k − log |W_k| − d / β_k) (Bishop 10.64–10.65)."""
    log_lambda = d * math.log(2.0) + _sum_digamma_half(q.dof, d)  # (k,) or 0-d
    return 0.5 * (log_lambda - d / q.mean_precision - d * q.dof.log())


def log_wishart_norm(dof: torch.Tensor, log_det_chol: torch.Tensor, d: int) -> torch.Tensor:
    """−log Z of a Wishart(W, ν) without its ``d(d−1)/4 · log π`` term, given
    ``log_det_chol = ½ log det W`` (Bishop B.79)."""
    j = torch.arange(d, dtype=dof.dtype, device=dof.device)
    lgam = torch.lgamma(0.5 * (dof.unsqueeze(-1) - j)).sum(-1)
    return -(dof * log_det_chol + dof * d * 0.5 * math.log(2.0) + lgam)


def log_dirichlet_norm(alpha: torch.Tensor) -> torch.Tensor:
    """log C(α) = log Γ(Σα) − Σ log Γ(α_k) (Bishop B.23)."""
    return torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum()


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def lower_bound(
    neg_entropy: torch.Tensor,
    wc: torch.Tensor,
    q: NormalWishart,
    weight_type: str,
    covariance_type: str,
) -> torch.Tensor:
    """scikit-learn's variational lower bound: the ELBO of (q(z), q(θ)) after the update of
    q(θ), with the constants dropped (Bishop 10.70–10.77 simplified at the optimum of q(θ)).

    ``neg_entropy`` is Σ_n w_n Σ_k r_nk log r_nk.
    """
    k, d = q.means.shape
    log_det = log_det_cholesky(q.prec_chol, covariance_type, d) - 0.5 * d * q.dof.log()
    lwn = log_wishart_norm(q.dof, log_det, d)
    log_wishart = k * lwn if covariance_type == "tied" else lwn.sum()
    if weight_type == "dirichlet_process":
        log_norm_weight = -_log_beta(wc[0], wc[1]).sum()
    else:
        log_norm_weight = log_dirichlet_norm(wc)
    return -neg_entropy - log_wishart - log_norm_weight - 0.5 * d * q.mean_precision.log().sum()


def _log_det_covariance(cov: torch.Tensor, covariance_type: str, d: int) -> torch.Tensor:
    if covariance_type in ("full", "tied"):
        return torch.linalg.slogdet(cov)[1]
    if covariance_type == "diag":
        return cov.log().sum()
    return d * cov.log()


def elbo_constant(
    prior: BGMMPrior, n_components: int, total_weight: float, d: int, covariance_type: str
) -> torch.Tensor:
    """What :func:`lower_bound` leaves out: adding it gives the ELBO in nats.

    With q(θ) the conjugate update given the responsibilities, the ELBO is
    ``−Σ r log r + log Z_q − log Z_p − (N d / 2) log 2π`` (the data term's normaliser, the
    posterior and prior normalisers). The bound keeps ``log Z_q`` up to
    ``k (d/2) log 2π + k d(d−1)/4 · log π``; this returns those, minus ``log Z_p`` and the
    data term. For ``covariance_type='full'`` (and ``reg_covar=0``) the sum is exactly the
    ELBO of the model above; for the restricted types scikit-learn's updates are not exact
    conjugate updates, and the same constants are added for comparability.
    """
    k = n_components
    dt, dev = prior.mean.dtype, prior.mean.device
    nu0 = torch.tensor(prior.dof, dtype=dt, device=dev)
    g0 = torch.tensor(prior.weight_concentration, dtype=dt, device=dev)
    if prior.weight_type == "dirichlet_distribution":
        log_z_weights = -log_dirichlet_norm(g0.expand(k))
    else:
        log_z_weights = k * _log_beta(torch.ones_like(g0), g0)
    log_det_w0 = -_log_det_covariance(prior.covariance, covariance_type, d)
    log_z_wishart = (
        0.5 * nu0 * d * math.log(2.0)
        + 0.5 * nu0 * log_det_w0
        + torch.special.multigammaln(0.5 * nu0, d)
    )
    log_z_prior = (
        log_z_weights
        + k * 0.5 * d * math.log(2 * math.pi / prior.mean_precision)
        + k * log_z_wishart
    )
    kept = k * (0.5 * d * math.log(2 * math.pi) + 0.25 * d * (d - 1) * math.log(math.pi))
    return kept - log_z_prior - 0.5 * total_weight * d * math.log(2 * math.pi)
