"""Asymptotic inference as pure tensor functions: covariance from Fisher information, the
sandwich estimator, the delta method and Wald intervals.

References: Casella & Berger, *Statistical Inference* (2nd ed.), §10.1 (asymptotic normality of
the MLE, the delta method, Wald intervals); White (1982), "Maximum likelihood estimation of
misspecified models", Econometrica 50(1) (the sandwich covariance ``H⁻¹ B H⁻¹``).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from latentfit._validation import is_finite_above
from latentfit.errors import ParameterError

__all__ = [
    "InformationInverse",
    "delta_method_covariance",
    "equilibrated_eigh",
    "invert_information",
    "sandwich_covariance",
    "wald_interval",
    "z_test",
]


class InformationInverse(NamedTuple):
    """``covariance`` (p, p) is the inverse of the information on the identified directions
    (the pseudo-inverse); ``null_space`` (p, r) spans the directions the data do not identify
    (r = 0 for a regular fit). A quantity whose gradient has a component along the null space
    has no finite variance: it gets NaN downstream."""

    covariance: torch.Tensor
    null_space: torch.Tensor

    @property
    def unidentified(self) -> torch.Tensor:
        """(p,) coordinates that move along a null direction."""
        return (self.null_space.abs() > _NULL_TOL).any(dim=1)


_NULL_TOL = 1e-6


def equilibrated_eigh(sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric (p, p) matrix scaled to unit diagonal (Jacobi
    equilibration, Golub & Van Loan §3.5.2): returns ``w`` (p,), ``v`` (p, p) and ``scale``
    (p,) with ``scale · sym · scale = v diag(w) vᵀ``. Its eigenvalues judge which directions
    are flat whatever the units of each coordinate: unscaled, a regression column of scale
    1e-5 beside an intercept has curvature 1e-10 of the intercept's and was taken for an
    unidentified one. A coordinate of no (or negative) curvature keeps the scale 1."""
    d = sym.diagonal()
    scale = torch.where(d > 0, d.clamp_min(torch.finfo(d.dtype).tiny).rsqrt(), torch.ones_like(d))
    w, v = torch.linalg.eigh(sym * scale.unsqueeze(1) * scale.unsqueeze(0))
    return w, v, scale


def invert_information(info: torch.Tensor, rtol: float = 1e-9) -> InformationInverse:
    """Invert a symmetric information matrix (p, p), tolerating a singular one.

    Eigenvalues of the information scaled to unit diagonal (:func:`equilibrated_eigh`) below
    ``rtol · max|λ|`` (and negative ones, which mean the point is not a maximum) are treated
    as zero and their directions form the null space; the inverse on the others is a
    generalised inverse, exact for every identified combination.
    """
    p = info.shape[-1]
    sym = (info + info.T) / 2
    if p == 0 or not bool(torch.isfinite(sym).all()):
        eye = torch.eye(p, dtype=info.dtype, device=info.device)
        return InformationInverse(torch.zeros_like(eye), eye)
    w, v, scale = equilibrated_eigh(sym)  # (p,), (p, p), (p,)
    good = w > rtol * w.abs().max()
    vg = v[:, good] * scale.unsqueeze(1)  # back to the original coordinates
    cov = (vg / w[good]) @ vg.T  # (p, p)
    null = torch.linalg.qr(v[:, ~good] * scale.unsqueeze(1))[0]  # (p, r) orthonormal
    return InformationInverse(cov, null)


def sandwich_covariance(inverse: InformationInverse, scores: torch.Tensor) -> InformationInverse:
    """The robust covariance ``H⁻¹ (Σᵢ sᵢ sᵢᵀ) H⁻¹`` from per-observation scores (n, p)."""
    meat = scores.T @ scores  # (p, p)
    cov = inverse.covariance @ meat @ inverse.covariance
    return InformationInverse(cov, inverse.null_space)


def delta_method_covariance(jacobian: torch.Tensor, inverse: InformationInverse) -> torch.Tensor:
    """Covariance ``J Σ Jᵀ`` (m, m) of ``g(u)`` with ``J = ∂g/∂u`` (m, p).

    Outputs whose gradient has a component along the null space get NaN rows and columns; the
    others (identified combinations such as ``a + b`` when only the sum is identified) keep
    their finite covariance.
    """
    cov = jacobian @ inverse.covariance @ jacobian.T  # (m, m)
    proj = jacobian @ inverse.null_space  # (m, r)
    along_null = proj.abs().amax(dim=1) if proj.shape[1] else proj.new_zeros(proj.shape[0])
    bad = (along_null > _NULL_TOL * jacobian.norm(dim=1)) | ~torch.isfinite(jacobian).all(1)
    return cov.masked_fill(bad[:, None] | bad[None, :], float("nan"))


def _normal_quantile(q: float) -> float:
    return float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))


def check_level(level) -> float:
    """A confidence or credible level: a number (or one-value tensor) strictly between 0 and
    1, as a float; a :class:`ParameterError` otherwise (NaN, strings, bools included)."""
    value = level
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if not is_finite_above(value, 0.0) or not value < 1:
        raise ParameterError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(value)


def interval_level(level, alpha) -> float:
    """The coverage of an interval asked for as ``level`` (latentfit's 0.95) or ``alpha``
    (statsmodels' ``conf_int(alpha=0.05)``), checked. A ``level`` below 0.5 is almost always
    an ``alpha`` given in its place (statsmodels' ``conf_int(0.05)``): it is computed as asked,
    with a warning that says so."""
    if alpha is not None:
        if level is not None:
            raise ParameterError(
                f"give level= or alpha=, not both (level={level!r}, alpha={alpha!r}); "
                "level = 1 - alpha"
            )
        return 1 - check_level(alpha)
    level = check_level(0.95 if level is None else level)
    if level < 0.5:
        warnings.warn(
            f"level={level:g} asks for a {100 * level:g}% interval. statsmodels' conf_int takes "
            f"alpha, the level's complement: for its conf_int({level:g}) pass "
            f"alpha={level:g} (or level={1 - level:g})",
            UserWarning,
            stacklevel=3,
        )
    return level


def wald_interval(
    estimate: torch.Tensor, std_error: torch.Tensor, level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """``θ̂ ± z_{1-α/2} · se``: the Wald interval with asymptotic coverage ``level``."""
    level = check_level(level)
    z = _normal_quantile(1 - (1 - level) / 2)
    return estimate - z * std_error, estimate + z * std_error


def z_test(estimate: torch.Tensor, std_error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Wald statistic ``θ̂ / se`` for H₀: θ = 0 and its two-sided normal p-value."""
    z = estimate / std_error
    return z, torch.special.erfc(z.abs() / math.sqrt(2.0))
