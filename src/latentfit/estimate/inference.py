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
    "DeltaMethod",
    "InformationInverse",
    "delta_method",
    "delta_method_covariance",
    "equilibrated_eigh",
    "invert_information",
    "rescale_inverse",
    "sandwich_covariance",
    "wald_interval",
    "z_test",
]


class InformationInverse(NamedTuple):
    """``covariance`` (p, p) is the inverse of the information on the identified directions
    (the pseudo-inverse); ``null_space`` (p, r) spans the directions the data do not identify
    (r = 0 for a regular fit). A quantity whose gradient has a component along the null space
    has no finite variance: it gets NaN downstream. ``scale`` (p,), where given, is the
    coordinates' units: the covariance of ``u`` is ``diag(scale) covariance diag(scale)``,
    kept apart because that product may leave the dtype's range (the variance of a location
    in units of 1e-200 is 1e-400, 0 in float64) where its standard errors do not."""

    covariance: torch.Tensor
    null_space: torch.Tensor
    scale: torch.Tensor | None = None

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


def rescale_inverse(inverse: InformationInverse, factor: torch.Tensor) -> InformationInverse:
    """The inverse in coordinates ``u = factor · v + shift`` (``factor`` (p,) > 0) of one in
    ``v``: covariance ``diag(factor) Σᵥ diag(factor)``, held as ``Σᵥ`` in units of
    ``factor`` (``scale``), null directions ``factor · n`` (orthonormalised again)."""
    scale = factor if inverse.scale is None else factor * inverse.scale  # (p,)
    null = inverse.null_space
    if null.shape[1]:
        null = torch.linalg.qr(null * factor.unsqueeze(1))[0]  # (p, r) orthonormal
    return InformationInverse(inverse.covariance, null, scale)


def sandwich_covariance(inverse: InformationInverse, scores: torch.Tensor) -> InformationInverse:
    """The robust covariance ``H⁻¹ (Σᵢ sᵢ sᵢᵀ) H⁻¹`` from per-observation scores (n, p)."""
    meat = scores.T @ scores  # (p, p)
    cov = inverse.covariance @ meat @ inverse.covariance
    return InformationInverse(cov, inverse.null_space)


class DeltaMethod(NamedTuple):
    """The delta-method covariance (m, m) of ``g(u)`` and its standard errors (m,)."""

    covariance: torch.Tensor
    std_errors: torch.Tensor


def delta_method(jacobian: torch.Tensor, inverse: InformationInverse) -> DeltaMethod:
    """Covariance ``J Σ Jᵀ`` (m, m) of ``g(u)`` with ``J = ∂g/∂u`` (m, p), and its standard
    errors, computed equilibrated: with ``c`` the standard deviations of ``u`` and ``rₖ`` the
    largest ``|Jₖₗ cₗ|``, ``V = (J c / r) R (J c / r)ᵀ`` (``R`` the correlation of ``u``) has
    entries of order one, the covariance is ``rₖ rₗ Vₖₗ`` and the standard error
    ``rₖ √Vₖₖ``. So a standard error float64 holds comes out right even where its square
    does not: the variance of the estimated variance of a column of scale 1e-150 is 1e-602,
    which is 0 in float64 (a standard error of 0), and of one of scale 1e150 is inf. Such a
    variance, and any entry that overflows, is NaN in the covariance, not 0 or inf.

    Outputs whose gradient has a component along the null space get NaN rows and columns; the
    others (identified combinations such as ``a + b`` when only the sum is identified) keep
    their finite covariance.
    """
    cov_u = inverse.covariance  # in units of inverse.scale
    c = cov_u.diagonal().abs().sqrt()  # (p,)
    c = torch.where((c > 0) & torch.isfinite(c), c, torch.ones_like(c))
    corr = cov_u / c.unsqueeze(1) / c.unsqueeze(0)  # (p, p)
    if inverse.scale is not None:  # u's standard deviations, never squared
        c = c * inverse.scale
    jc = jacobian * c  # (m, p)
    r = jc.abs().amax(dim=1) if jc.shape[1] else jc.new_ones(jc.shape[0])  # (m,)
    r = torch.where((r > 0) & torch.isfinite(r), r, torch.ones_like(r))
    jn = jc / r.unsqueeze(1)  # (m, p), entries at most 1
    v = jn @ corr @ jn.T  # (m, m)
    cov = v * r.unsqueeze(1) * r.unsqueeze(0)
    # out of the dtype's range: an overflow, or a variance that underflows (a covariance that
    # does is within 1e-308 of its value, and stays)
    small = torch.eye(v.shape[0], dtype=torch.bool, device=v.device)
    small &= (cov.abs() < torch.finfo(cov.dtype).tiny) & (v != 0)
    cov = cov.masked_fill(torch.isinf(cov) | small, float("nan"))
    se = r * v.diagonal().sqrt()  # (m,)
    proj = jacobian @ inverse.null_space  # (m, r)
    along_null = proj.abs().amax(dim=1) if proj.shape[1] else proj.new_zeros(proj.shape[0])
    bad = (along_null > _NULL_TOL * jacobian.norm(dim=1)) | ~torch.isfinite(jacobian).all(1)
    return DeltaMethod(
        cov.masked_fill(bad[:, None] | bad[None, :], float("nan")),
        se.masked_fill(bad | ~torch.isfinite(v.diagonal()), float("nan")),
    )


def delta_method_covariance(jacobian: torch.Tensor, inverse: InformationInverse) -> torch.Tensor:
    """The covariance of :func:`delta_method`."""
    return delta_method(jacobian, inverse).covariance


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


def _below_one(value: float) -> str:
    """``value`` (a level, below 1 or rounded to it) in the fewest digits that still read as
    a number below 1, as a level must be: 1 - 1e-09 is 0.999999999, not ``:g``'s 1."""
    value = min(value, math.nextafter(1.0, 0.0))
    for digits in range(6, 18):
        text = f"{value:.{digits}g}"
        if float(text) < 1:
            return text
    return repr(value)


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
            f"alpha={level:g} (or level={_below_one(1 - level)})",
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
