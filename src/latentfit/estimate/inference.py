"""Asymptotic inference as pure tensor functions: covariance from Fisher information, the
sandwich estimator, the delta method and Wald intervals.

References: Casella & Berger, *Statistical Inference* (2nd ed.), §10.1 (asymptotic normality of
the MLE, the delta method, Wald intervals); White (1982), "Maximum likelihood estimation of
misspecified models", Econometrica 50(1) (the sandwich covariance ``H⁻¹ B H⁻¹``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "InformationInverse",
    "delta_method_covariance",
    "invert_information",
    "sandwich_covariance",
    "wald_interval",
    "z_test",
]


class InformationInverse(NamedTuple):
    """``covariance`` (p, p) is the inverse of the information on the identified directions;
    ``unidentified`` (p,) marks the coordinates that move along a null direction of the
    information (their variance does not exist: they get NaN downstream)."""

    covariance: torch.Tensor
    unidentified: torch.Tensor


def invert_information(info: torch.Tensor, rtol: float = 1e-9) -> InformationInverse:
    """Invert a symmetric information matrix (p, p), tolerating a singular one.

    Eigenvalues below ``rtol · max|λ|`` (and negative ones, which mean the point is not a
    maximum) are treated as zero. Coordinates with weight on those eigenvectors are marked
    unidentified; the other coordinates get the pseudo-inverse, which is their exact inverse
    information whenever the null directions do not touch them.
    """
    p = info.shape[-1]
    if p == 0:
        return InformationInverse(info.clone(), torch.zeros(0, dtype=torch.bool))
    sym = (info + info.T) / 2
    if not bool(torch.isfinite(sym).all()):
        nan = torch.full_like(sym, float("nan"))
        return InformationInverse(nan, torch.ones(p, dtype=torch.bool, device=info.device))
    w, v = torch.linalg.eigh(sym)  # (p,), (p, p)
    scale = w.abs().max()
    good = w > rtol * scale
    null_vectors = v[:, ~good]  # (p, r)
    unidentified = (null_vectors.abs() > 1e-6).any(dim=1)  # (p,)
    vg = v[:, good]
    cov = (vg / w[good]) @ vg.T  # (p, p)
    cov = cov.masked_fill(unidentified[:, None] | unidentified[None, :], 0.0)
    return InformationInverse(cov, unidentified)


def sandwich_covariance(inverse: InformationInverse, scores: torch.Tensor) -> InformationInverse:
    """The robust covariance ``H⁻¹ (Σᵢ sᵢ sᵢᵀ) H⁻¹`` from per-observation scores (n, p)."""
    meat = scores.T @ scores  # (p, p)
    cov = inverse.covariance @ meat @ inverse.covariance
    return InformationInverse(cov, inverse.unidentified)


def delta_method_covariance(jacobian: torch.Tensor, inverse: InformationInverse) -> torch.Tensor:
    """Covariance ``J Σ Jᵀ`` (m, m) of ``g(u)`` with ``J = ∂g/∂u`` (m, p).

    Outputs that depend on an unidentified coordinate get NaN rows and columns; the others
    keep their finite covariance.
    """
    cov = jacobian @ inverse.covariance @ jacobian.T  # (m, m)
    bad = (jacobian[:, inverse.unidentified] != 0).any(dim=1)  # (m,)
    return cov.masked_fill(bad[:, None] | bad[None, :], float("nan"))


def _normal_quantile(q: float) -> float:
    return float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))


def wald_interval(
    estimate: torch.Tensor, std_error: torch.Tensor, level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """``θ̂ ± z_{1-α/2} · se``: the Wald interval with asymptotic coverage ``level``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    z = _normal_quantile(1 - (1 - level) / 2)
    return estimate - z * std_error, estimate + z * std_error


def z_test(estimate: torch.Tensor, std_error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Wald statistic ``θ̂ / se`` for H₀: θ = 0 and its two-sided normal p-value."""
    z = estimate / std_error
    return z, torch.special.erfc(z.abs() / math.sqrt(2.0))
