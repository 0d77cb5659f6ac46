"""Pure tensor functions of the variational Bayesian HMMs (:mod:`latentfit.em.hmm.variational`).

The model (MacKay 1997; Beal 2003, ch. 3; McGrory & Titterington 2009), in hmmlearn 0.3's
parameterisation:

    π ~ Dirichlet(a₀),   A_i ~ Dirichlet(b₀_i) (every row),   z_1 ~ π,   z_t | z_{t−1} ~ A,
    Λ_k ~ Wishart(ν₀_k, S₀_k⁻¹),   μ_k | Λ_k ~ N(m₀_k, (β₀_k Λ_k)⁻¹),   x_t | z_t = k ~ N(μ_k, Λ_k⁻¹)

with the mean-field family q(z) q(π) Π_i q(A_i) Π_k q(μ_k, Λ_k). ``scale`` S is the *inverse*
scale of the Wishart (hmmlearn's ``scale_prior_``/``scale_posterior_``), so that
E[Λ_k] = ν_k S_k⁻¹ and the point-estimate covariance is S_k / ν_k. A diagonal or spherical
covariance keeps S diagonal (d,) or a multiple of the identity (scalar) and treats it, as
hmmlearn does, as the Wishart with that scale matrix; tied shares one (ν, S) among the states.
A categorical emission has a Dirichlet(e₀_k) prior on every state's symbol probabilities.

The VB E-step is the forward-backward algorithm on the sub-normalised parameters
exp E[log π], exp E[log A] and exp E[log p(x_t | z_t = k)] (Beal 2003, ch. 3): its
log-"likelihood" log Z̃ and the smoothed marginals / expected transition counts give the
lower bound

    F = log Z̃ − KL(q(π) ‖ p(π)) − Σ_i KL(q(A_i) ‖ p(A_i)) − Σ_k KL(q(θ_k) ‖ p(θ_k))

(Beal 2003, ch. 3), computed with the parameters that made the E-step, as hmmlearn does.

Shapes: t steps, k states, d features; ``dof`` is (k,), or 0-d for the tied covariance.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Dirichlet, kl_divergence

from latentfit.em.hmm.emissions import fill_covars

__all__ = [
    "dirichlet_expected_log",
    "expected_gaussian_offset",
    "kl_dirichlet",
    "kl_normal_wishart",
    "kl_wishart",
    "normal_wishart_update",
    "scale_rounding",
    "wishart_expected_log_det",
    "wishart_log_normalizer",
]


def dirichlet_expected_log(alpha: torch.Tensor) -> torch.Tensor:
    """E[log p] under Dirichlet(α) along the last axis: ψ(α) − ψ(Σα) (Bishop 2006, app. B).
    Its exponential is the sub-normalised parameter of the VB E-step."""
    return torch.special.digamma(alpha) - torch.special.digamma(alpha.sum(-1, keepdim=True))


def kl_dirichlet(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Σ over rows of KL(Dirichlet(q) ‖ Dirichlet(p)) (torch.distributions' closed form)."""
    return kl_divergence(Dirichlet(q), Dirichlet(p.expand_as(q))).sum()


def _sum_digamma_half(dof: torch.Tensor, d: int) -> torch.Tensor:
    """Σ_{i<d} ψ((ν − i)/2): (k,) or 0-d."""
    i = torch.arange(d, dtype=dof.dtype, device=dof.device)
    return torch.special.digamma(0.5 * (dof.unsqueeze(-1) - i)).sum(-1)


def wishart_expected_log_det(dof: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E[log |Λ|] for Λ ~ Wishart(ν, S⁻¹): Σ_{i<d} ψ((ν − i)/2) + d log 2 − log |S| (Bishop
    2006, eq. B.81). ``scale`` (..., d, d)."""
    d = scale.shape[-1]
    return _sum_digamma_half(dof, d) + d * math.log(2.0) - torch.linalg.slogdet(scale)[1]


def wishart_log_normalizer(dof: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log Z of Wishart(ν, S⁻¹), with p(Λ) = |Λ|^{(ν−d−1)/2} exp(−tr(S Λ)/2) / Z (Bishop 2006,
    eq. B.79): d(d−1)/4 log π − ν/2 log |S/2| + Σ_{i<d} log Γ((ν − i)/2)."""
    d = scale.shape[-1]
    i = torch.arange(d, dtype=dof.dtype, device=dof.device)
    return (
        d * (d - 1) / 4 * math.log(math.pi)
        - 0.5 * dof * torch.linalg.slogdet(scale / 2)[1]
        + torch.lgamma(0.5 * (dof.unsqueeze(-1) - i)).sum(-1)
    )


def kl_wishart(dof_q, scale_q, dof_p, scale_p) -> torch.Tensor:
    """KL(Wishart(ν_q, S_q⁻¹) ‖ Wishart(ν_p, S_p⁻¹)) (Ji, Krishnapuram & Carin 2006; the form
    of hmmlearn's ``kl_wishart_distribution``): (k,) or 0-d."""
    d = scale_q.shape[-1]
    trace = torch.linalg.solve(scale_q, scale_p).diagonal(dim1=-2, dim2=-1).sum(-1)  # tr(S_q⁻¹ S_p)
    return (
        0.5 * (dof_q - dof_p) * wishart_expected_log_det(dof_q, scale_q)
        - 0.5 * d * dof_q
        + 0.5 * dof_q * trace
        + wishart_log_normalizer(dof_p, scale_p)
        - wishart_log_normalizer(dof_q, scale_q)
    )


def _full_scale(scale, covariance_type: str, k: int, d: int) -> torch.Tensor:
    """The Wishart scale matrices (k, d, d) of any covariance type (tied: one, repeated)."""
    return fill_covars(scale, covariance_type, k, d)


def kl_normal_wishart(
    means, beta, dof, scale, means_prior, beta_prior, dof_prior, scale_prior, covariance_type: str
) -> torch.Tensor:
    """Σ_k KL(q(μ_k, Λ_k) ‖ p(μ_k, Λ_k)) of Normal-Wishart posteriors (tied: the one Wishart
    counted once). The normal part, E_q(Λ)[KL(N(m, (βΛ)⁻¹) ‖ N(m₀, (β₀Λ)⁻¹))], is linear in Λ
    (the log-determinants cancel), hence exact at E[Λ] = ν S⁻¹:
    ½ [d log(β/β₀) + d β₀/β − d + β₀ ν (m − m₀)ᵀ S⁻¹ (m − m₀)]. ``means`` and ``means_prior``
    may be taken about any common centre."""
    k, d = means.shape
    S = _full_scale(scale, covariance_type, k, d)  # (k, d, d)
    nu = dof.expand(k) if covariance_type == "tied" else dof  # (k,)
    diff = means - means_prior  # (k, d)
    quad = (diff * torch.linalg.solve(S, diff.unsqueeze(-1)).squeeze(-1)).sum(-1)  # (k,)
    ratio = beta_prior / beta
    kl_normal = 0.5 * (-d * torch.log(ratio) + d * ratio - d + beta_prior * nu * quad)
    if covariance_type == "tied":
        kl_w = kl_wishart(dof, scale, dof_prior, scale_prior)
    else:
        kl_w = kl_wishart(dof, S, dof_prior, _full_scale(scale_prior, covariance_type, k, d))
    return kl_normal.sum() + kl_w.sum()


def expected_gaussian_offset(dof, beta, d: int) -> torch.Tensor:
    """E_q[log N(x | μ_k, Λ_k⁻¹)] − log N(x | m_k, S_k / ν_k) (k,): what the expected
    emission log-density adds to the Gaussian log-density at the point estimates, whatever x
    (Bishop 2006, eq. 10.64 with eq. 10.65): ½ (Σ_{i<d} ψ((ν_k − i)/2) + d log(2/ν_k)) −
    d / (2 β_k). The log |S_k| of E[log |Λ_k|] and of the density cancel."""
    return 0.5 * (_sum_digamma_half(dof, d) + d * torch.log(2.0 / dof)) - 0.5 * d / beta


def normal_wishart_update(
    stats: dict[str, torch.Tensor],
    means_prior,
    beta_prior,
    dof_prior,
    scale_prior,
    means,
    beta,
    dof,
    scale,
    covariance_type: str,
    *,
    update_means: bool,
    update_covars: bool,
):
    """The VB M-step of the Normal-Wishart posteriors (Bishop 2006, eqs. 10.60-10.63):
    ``β = β₀ + N``, ``m = (β₀ m₀ + Σγx) / β``, ``ν = ν₀ + N`` and

        S = S₀ + Σ_t γ_t (x_t − m)(x_t − m)ᵀ + β₀ (m − m₀)(m − m₀)ᵀ

    (tied: summed over states, ν = ν₀ + Σ N; diag: the diagonal; spherical: its mean over
    features). With the new m this is hmmlearn's ``S₀ + Σγ x xᵀ + β₀ m₀ m₀ᵀ − β m mᵀ`` exactly;
    written as above it is the optimal q(Λ) for whatever (β, m) q(μ | Λ) has, so that with
    ``update_means`` false (``params`` without "m") the bound still cannot decrease and S stays
    positive definite (hmmlearn's form with the old means can lose both). The statistics
    ``stats`` (:func:`~latentfit.em.hmm.emissions.gaussian_stats`) and every mean are taken
    about one centre, which keeps the digits of data far from the origin. Returns (means,
    beta, dof, scale)."""
    post, obs = stats["post"], stats["obs"]  # (k,), (k, d): Σγ, Σγx
    if update_means:
        beta = beta_prior + post
        means = (beta_prior.unsqueeze(1) * means_prior + obs) / beta.unsqueeze(1)
    if not update_covars:
        return means, beta, dof, scale
    diff = means - means_prior  # (k, d)
    dof = dof_prior + (post.sum() if covariance_type == "tied" else post)
    if covariance_type in ("full", "tied"):
        cross = means.unsqueeze(2) * obs.unsqueeze(1)  # (k, d, d): m (Σγx)ᵀ
        outer = means.unsqueeze(2) * means.unsqueeze(1)  # (k, d, d): m mᵀ
        prior = beta_prior.reshape(-1, 1, 1) * diff.unsqueeze(2) * diff.unsqueeze(1)
        # Σγ (x − m)(x − m)ᵀ = Σγ x xᵀ − m (Σγx)ᵀ − (Σγx) mᵀ + N m mᵀ, plus the prior's pull
        spread = -cross - cross.mT + post.reshape(-1, 1, 1) * outer + prior  # (k, d, d)
        if covariance_type == "tied":  # the statistics' obsobs is already summed over states
            spread = spread.sum(0)
        scale = scale_prior + stats["obsobs"] + spread
        return means, beta, dof, 0.5 * (scale + scale.mT)  # symmetric to the last bit
    s = stats["obs2"] - 2 * means * obs + post.unsqueeze(1) * means**2
    s = s + beta_prior.unsqueeze(1) * diff**2  # (k, d)
    return means, beta, dof, scale_prior + (s if covariance_type == "diag" else s.mean(1))


def scale_rounding(dof: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """How far the lower bound may fall because the full or tied scale update ``scale``
    ((k, d, d), or (d, d) tied, with ``dof`` (k,) or 0-d) rounds: as
    :func:`~latentfit.em.hmm.emissions.covariance_rounding` for GaussianHMM, every entry of
    S_k rounds by up to ρ_k = 100·eps·(its largest entry), and a perturbation of that size
    moves the bound through E[log |Λ_k|], E[Λ_k] = ν_k S_k⁻¹ and the KL by about
    ν_k ρ_k tr(S_k⁻¹) nats each. On ordinary data that is ~1e-11 N d; rows of two regimes
    1e8 apart with unit noise give each state a scale of entries ~4e15 (the mean prior's
    pull) beside its noise, whose rounding moved the bound by 1e-4 nats at convergence.
    Returns the bound (1,) in float64."""
    scale = scale.double()
    lam = torch.linalg.eigvalsh(scale)  # (k, d) or (d,)
    trace = (1 / lam.clamp_min(torch.finfo(torch.float64).tiny)).sum(-1)  # tr S⁻¹
    rho = 100 * eps * scale.abs().amax((-2, -1))  # (k,) or ()
    slack = (2 * dof.double() * rho * trace).sum()
    return slack.nan_to_num(posinf=torch.finfo(torch.float64).max).reshape(1)
