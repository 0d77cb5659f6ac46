"""Pure tensor functions for Gaussian mixture components (four covariance types).

Conventions follow scikit-learn's ``sklearn/mixture/_gaussian_mixture.py`` so that parameters
move freely between the two: ``precisions_cholesky`` is a matrix ``P`` with precision
``Λ = P Pᵀ`` (full, tied), or the vector/scalar ``1/σ`` (diag, spherical).

Shapes: n samples, k components, d features. The E-step statistics are taken relative to a
shift ``c`` (any point; the models use the weighted mean of the component means): data far
from the origin then loses no precision when second moments are differenced, which keeps
float32 variances non-negative.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from latentfit._validation import weight_overflow_message
from latentfit.errors import (
    BatchRowError,
    DataError,
    LatentfitError,
    ParameterError,
    VarianceFloorWarning,
    user_stacklevel,
)

__all__ = [
    "COVARIANCE_TYPES",
    "DegenerateComponentError",
    "PassOverflowCheck",
    "check_overflow",
    "check_variance_floor",
    "component_mass",
    "covariances_from_precisions",
    "direct_is_faster",
    "feature_stats",
    "gaussian_estep_stats",
    "gaussian_features",
    "gaussian_mstep",
    "log_det_cholesky",
    "log_gaussian_prob",
    "moment_stats",
    "n_covariance_parameters",
    "natural_parameters",
    "normalize_log_prob_",
    "precision_cholesky",
    "precision_cholesky_from_precisions",
    "precisions_from_cholesky",
    "weighted_mean",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class DegenerateComponentError(LatentfitError):
    """A component's covariance is not positive definite (it collapsed onto too few points)."""


_REMEDY = (
    "Try increasing reg_covar (it is added to every variance), fewer components, "
    "scaling the data (e.g. StandardScaler), or removing constant/duplicated columns."
)


def check_overflow(X: torch.Tensor, w: torch.Tensor | None = None, name: str = "X") -> None:
    """Raise DataError when the Gaussian statistics of ``X`` (n, d) under weights ``w`` (n,)
    would overflow X's dtype: Σ w, or Σ w (x − c)² ≤ Σ w · (max x − min x)² per column. Said as
    overflow (with what to rescale, and the row whose value is farthest out), not left to
    surface later as a collapsed component. A :class:`~latentfit.errors.BatchRowError`, so
    that rows given as part of larger data are named as rows of that data."""
    dt = X.dtype
    big = torch.finfo(dt).max
    total = float(w.double().sum()) if w is not None else float(X.shape[0])
    if w is not None and not total <= big:
        raise DataError(weight_overflow_message(total, dt))
    if X.numel() == 0:
        return
    finite = torch.nan_to_num(X.double(), nan=0.0)  # NaN is missing data, judged elsewhere
    span = finite.amax(0) - finite.amin(0)  # (d,)
    j = int(span.argmax())
    worst = float(span[j])
    if not worst * worst * max(total, 1.0) <= big:
        col = finite[:, j]
        i = int((col - col.mean()).abs().argmax())  # the value farthest out
        said = _overflow_message(j, worst, float(col[i]), dt, name, total, X.shape[0])
        raise BatchRowError(i, said)


def _overflow_message(
    j: int, worst: float, value: float, dtype: torch.dtype, name: str, mass: float, rows: int
) -> str:
    """check_overflow's words about column ``j`` of span ``worst``, whose value farthest out,
    ``value``, is in row ``{row}`` (a BatchRowError's message), over ``rows`` rows of total
    weight ``mass``: the weights are named as the cause where the same rows of weight 1
    would not overflow."""
    big = torch.finfo(dtype).max
    label = str(dtype).removeprefix("torch.")
    if mass > rows and worst * worst * max(rows, 1) <= big:
        return (
            f"column {j} of {name} spans {worst:.3g} (row {{row}} holds {value:.3g}): its "
            f"squared deviations, summed over the rows with their sample weights (Σ w = "
            f"{mass:.3g}), overflow {label}, whose largest number is {big:.3g}. The weights "
            "overflow: rescale sample_weight (e.g. divide it by its maximum; the fitted "
            "parameters depend only on the ratios of the weights)"
            + (", or use float64." if dtype != torch.float64 else ".")
        )
    exponent = math.floor(math.log10(worst if math.isfinite(worst) else big))
    return (
        f"column {j} of {name} spans {worst:.3g} (row {{row}} holds {value:.3g}): its squared "
        f"deviations (summed over the weighted rows) overflow {label}, whose largest number "
        f"is {big:.3g}. The values overflow {label}: rescale {name} (e.g. divide it by "
        f"1e{exponent} or standardise the columns)"
        + (", or use float64." if dtype != torch.float64 else ".")
    )


class PassOverflowCheck:
    """:func:`check_overflow` of data read in blocks (a source's ``check``): each column's
    extremes, the count of rows and the sum of the sample weights add up over the blocks of
    one pass, so that the check is the one of the data in memory. Block by block, 3e18 among
    small values passed in blocks of 10 rows (10 · 9e36 is below float32's 3.4e38) and the
    fit overflowed. The source calls :meth:`start_pass` as it starts reading the data again,
    and passes every block's sample weights (``weighted``). ``then(X)``: another check of
    every block, run after this one (a model's own rule)."""

    #: a source passes every block's sample weights: ``check(X, w)``
    weighted = True

    def __init__(self, name: str = "X", then: Callable[[torch.Tensor], None] | None = None):
        self.name, self.then = name, then
        self.start_pass()

    def start_pass(self) -> None:
        self.rows = 0  # rows read in this pass
        self.mass = 0.0  # Σ w over this pass, as check_overflow weighs the rows
        self.lo = self.hi = self.sum = None  # (d,) float64: extremes and sum so far
        self.lo_row = self.hi_row = None  # (d,) the rows of this pass holding the extremes

    def __call__(self, X: torch.Tensor, w: torch.Tensor | None = None) -> None:
        n, before, mass = X.shape[0], self.rows, self.mass
        self.rows += n
        self.mass += float(w.double().sum()) if w is not None else n
        big = torch.finfo(X.dtype).max
        if w is not None and not self.mass <= big:
            # Σ w is what the M-step divides by: with constant columns no span says it
            running = mass + w.double().cumsum(0)  # (n,) Σ w of the pass up to each row
            i = int((running > big).nonzero()[0])
            where = " by row {row}"  # a BatchRowError's row, of the whole data
            raise BatchRowError(i, weight_overflow_message(float(running[i]), X.dtype, where))
        if X.numel() == 0:
            return
        x = torch.nan_to_num(X.double(), nan=0.0)  # NaN is missing data, judged elsewhere
        (lo, lo_row), (hi, hi_row) = x.min(0), x.max(0)  # (d,)
        self._add(lo, lo_row + before, hi, hi_row + before, x.sum(0))
        said = self._overflow(X.dtype)
        if said is not None:
            raise BatchRowError(said[0] - before, said[1])  # row counted from this block
        if self.then is not None:
            self.then(X)

    def _add(self, lo, lo_row, hi, hi_row, total) -> None:
        """Take in the extremes (d,), the rows holding them and the column sums of more rows
        (later rows: an extreme already held keeps its earlier row)."""
        if self.lo is None:
            self.lo, self.hi, self.sum = lo, hi, total
            self.lo_row, self.hi_row = lo_row, hi_row
            return
        lower, higher = lo < self.lo, hi > self.hi
        self.lo, self.lo_row = (
            torch.where(lower, lo, self.lo),
            torch.where(lower, lo_row, self.lo_row),
        )
        self.hi, self.hi_row = (
            torch.where(higher, hi, self.hi),
            torch.where(higher, hi_row, self.hi_row),
        )
        self.sum = self.sum + total

    def _overflow(self, dtype: torch.dtype) -> tuple[int, str] | None:
        """Where the rows so far overflow ``dtype``: the row (of this pass) whose value is
        farthest out in the widest column, and check_overflow's message; else None."""
        if self.lo is None:
            return None
        span = self.hi - self.lo  # (d,)
        j = int(span.argmax())
        worst = float(span[j])
        if worst * worst * max(self.mass, 1.0) <= torch.finfo(dtype).max:
            return None
        mean = float(self.sum[j]) / self.rows
        up = float(self.hi[j]) - mean >= mean - float(self.lo[j])
        value, row = (self.hi[j], self.hi_row[j]) if up else (self.lo[j], self.lo_row[j])
        said = _overflow_message(j, worst, float(value), dtype, self.name, self.mass, self.rows)
        return int(row), said

    def totals(self, offset: int, d: int) -> torch.Tensor:
        """This pass's extremes, their rows (``offset`` + row of the pass), column sums, Σ w
        and row count packed in one float64 tensor (5 d + 2,), for :meth:`check_totals`
        (rows count exactly in float64 up to 2^53). No rows: +inf and -inf as extremes."""
        if self.lo is None:
            inf, zero = torch.full((d,), math.inf, dtype=torch.float64), torch.zeros(d).double()
            parts = [inf, zero, -inf, zero, zero]
        else:
            parts = [self.lo, self.lo_row + offset, self.hi, self.hi_row + offset, self.sum]
            parts = [p.to(device="cpu", dtype=torch.float64) for p in parts]
        return torch.cat([*parts, torch.tensor([self.mass, float(self.rows)], dtype=torch.float64)])

    def check_totals(self, gathered: torch.Tensor, dtype: torch.dtype) -> None:
        """:func:`check_overflow` of the rows of every process of a distributed pass, whose
        sums the M-step takes: ``gathered`` (p, 5 d + 2) holds every process's
        :meth:`totals` in rank order. Raises a BatchRowError naming the row of the whole
        data, the same on every process that gathered the same totals."""
        whole = PassOverflowCheck(self.name)
        d = (gathered.shape[1] - 2) // 5
        for t in gathered.double().cpu():
            lo, lo_row, hi, hi_row, total = t[: 5 * d].view(5, d)
            whole.mass += float(t[5 * d])
            whole.rows += int(t[5 * d + 1])
            if int(t[5 * d + 1]):
                whole._add(lo, lo_row, hi, hi_row, total)
        if not whole.mass <= torch.finfo(dtype).max:
            raise DataError(weight_overflow_message(whole.mass, dtype, " over the processes"))
        said = whole._overflow(dtype)
        if said is not None:
            raise BatchRowError(*said)


#: A floor above this fraction of a column's variance is said to swamp it. A floor adds to
#: (or bounds) every variance fitted in that column; at 1% of the column's whole variance it
#: already moves the widest component's variance by 1%, the sampling error of a variance
#: from 2 · 10⁴ rows, and a tighter component's by more. With the defaults (reg_covar 1e-6,
#: min_covar 1e-3) it fires on columns of standard deviation below 0.01 (mixtures, SSM) or
#: 0.32 (HMMs), not on data in the units people measure in.
FLOOR_FRACTION = 0.01


def column_variances(
    X: torch.Tensor, w: torch.Tensor | None = None, rows: int = 1 << 16
) -> torch.Tensor:
    """Each column's weighted variance (d,) in float64, missing values (NaN) left out, about
    the float64-accumulated mean (data far from the origin keep their digits); exactly 0 for
    a column of one value among its weighted rows. Two passes over blocks of ``rows`` rows:
    the whole of X in float64 with its temporaries took five times X (1,500,000 x 16 floats:
    a 192 MB block each)."""
    n, d = X.shape
    f64 = {"dtype": torch.float64, "device": X.device}
    total, first = torch.zeros(d, **f64), torch.zeros(d, **f64)
    lo, hi = torch.full((d,), math.inf, **f64), torch.full((d,), -math.inf, **f64)

    def block(i):
        x = X[i : i + rows].double()
        seen = ~torch.isnan(x)  # (r, d)
        weight = seen.double() if w is None else seen * w[i : i + rows].double().unsqueeze(1)
        return torch.nan_to_num(x, nan=0.0), weight

    for i in range(0, n, rows):
        x, weight = block(i)
        total += weight.sum(0)
        first += (weight * x).sum(0)
        # 400 rows of 0.1 average to 0.1 + 1 ulp: a variance of 2e-34 that no row has
        counted = weight > 0  # (r, d)
        lo = torch.minimum(lo, torch.where(counted, x, math.inf).amin(0))
        hi = torch.maximum(hi, torch.where(counted, x, -math.inf).amax(0))
    total = total.clamp_min(torch.finfo(torch.float64).tiny)
    mean = first / total  # (d,)
    var = torch.zeros(d, **f64)
    for i in range(0, n, rows):
        x, weight = block(i)
        var += (weight * (x - mean).square()).sum(0)
    var /= total
    if not n:
        return var
    return torch.where(hi > lo, var, 0.0)


def check_variance_floor(
    X: torch.Tensor,
    w: torch.Tensor | None,
    floor: float,
    argument: str,
    model: str,
    name: str = "X",
    fraction: float = FLOOR_FRACTION,
    effect: str | None = None,
) -> None:
    """Warn (:class:`VarianceFloorWarning`, once) when the absolute variance ``floor`` that
    ``model``'s ``argument`` sets exceeds :data:`FLOOR_FRACTION` of the variance of a column
    of ``X`` (n, d) under weights ``w`` (n,): X * 1e-80 fitted with reg_covar=1e-6 gets
    variances of 1e-6, the floor's, with nothing said. Columns that do not vary are left out:
    holding them off zero is what the floor is for. ``fraction`` replaces
    :data:`FLOOR_FRACTION` for a floor that enters fewer variances than every M-step's (the
    HMMs' min_covar: the start and the lift of a singular matrix); ``effect`` replaces what
    the message says follows ("the variances fitted there are {argument}'s, not the data's")."""
    if not floor > 0 or X.dim() != 2 or not X.numel():
        return
    var = column_variances(X, w)  # (d,)
    swamped = (var > 0) & (floor > fraction * var)  # (d,)
    if not bool(swamped.any()):
        return
    j = int(torch.where(swamped, var, torch.full_like(var, math.inf)).argmin())
    more = int(swamped.sum()) - 1
    others = f" (and {more} other column{'s' if more > 1 else ''})" if more else ""
    if effect is None:
        effect = f"the variances fitted there are {argument}'s, not the data's"
    warnings.warn(
        f"{model}: {argument}={floor:g} is {floor / float(var[j]):.3g} times the variance of "
        f"column {j} of {name} ({float(var[j]):.3g}){others}, so {effect}. Rescale {name} "
        "(e.g. standardise the columns, or "
        f"multiply by 1e{-math.floor(math.log10(float(var[j])) / 2)}), or pass a smaller "
        f"{argument} (below {fraction * float(var[j]):.3g})",
        VarianceFloorWarning,
        stacklevel=user_stacklevel(),
    )


def check_underflow(X: torch.Tensor, w: torch.Tensor | None = None, name: str = "X") -> None:
    """Raise DataError when a column of ``X`` varies, but so little that its squared
    deviations come within 1e6 of the smallest normal number of X's dtype: they then round
    to 0 or keep few digits, and a model without a variance floor fits such a column as
    constant (FactorAnalysis on X * 1e-200 scored 1766 where 2290 is right, components all 0;
    at 1e-155 it was 9 nats off, at 1e-150 exact)."""
    if X.numel() == 0:
        return
    finite = torch.nan_to_num(X.double(), nan=0.0)  # NaN is missing data, judged elsewhere
    span = finite.amax(0) - finite.amin(0)  # (d,)
    tiny = torch.finfo(X.dtype).tiny
    small = (span > 0) & (span * span < 1e6 * tiny)  # (d,) at 1e-155 the fit was off by 9
    if bool(small.any()):
        j = int(small.nonzero()[0])
        worst = float(span[j])
        label = str(X.dtype).removeprefix("torch.")
        exponent = -math.floor(math.log10(worst))
        raise DataError(
            f"column {j} of {name} spans only {worst:.3g}: its squared deviations come within "
            f"1e6 of {label}'s smallest normal number ({tiny:.3g}) and lose their digits (on "
            "data scaled by 1e-155 the fit was 9 nats off), so its variance would be lost. "
            f"Rescale {name} (e.g. multiply it by 1e{exponent} or standardise the columns)"
        )


def weighted_mean(
    X: torch.Tensor, w: torch.Tensor | None = None, rows: int = 1 << 16, dtype=None
) -> torch.Tensor:
    """Σ w x / Σ w (d,) accumulated in float64, returned in X's dtype (or ``dtype``): the shift
    statistics are centred on. A float32 dot product of n values near 1e7 drifts by hundreds
    (its running sum rounds to the spacing of 1e10-sized totals); in float64 the mean keeps the
    precision of the data. Chunks of ``rows`` bound the float64 copy."""
    n, d = X.shape
    total = torch.zeros(d, dtype=torch.float64, device=X.device)
    mass = torch.zeros((), dtype=torch.float64, device=X.device)
    lo = torch.full((d,), math.inf, dtype=torch.float64, device=X.device)
    hi = -lo
    for i in range(0, n, rows):
        x = X[i : i + rows].double()
        if w is None:
            total += x.sum(0)
            mass += x.shape[0]
        else:
            wi = w[i : i + rows].double()
            total += wi @ x
            mass += wi.sum()
        finite = x.nan_to_num(nan=0.0)
        lo, hi = torch.minimum(lo, finite.amin(0)), torch.maximum(hi, finite.amax(0))
    # within the data's range: a constant column's mean is its value exactly (the rounding of
    # 20 · 1e300 / 20 would leave deviations of 1e284, whose squares overflow)
    return torch.minimum(torch.maximum(total / mass, lo), hi).to(dtype or X.dtype)


def precision_cholesky(
    covariances: torch.Tensor,
    covariance_type: str,
    *,
    unit: str = "component",
    remedy: str = _REMEDY,
) -> torch.Tensor:
    """Cholesky factor of the precision from covariances.

    full: (k, d, d) → (k, d, d); tied: (d, d) → (d, d); diag: (k, d) → (k, d); spherical: (k,) → (k,).
    For full/tied, ``Σ = L Lᵀ`` and ``P = L⁻ᵀ`` so that ``Λ = Σ⁻¹ = P Pᵀ``.
    Raises DegenerateComponentError naming the components that are not positive definite
    (``unit``: what the model calls a component, e.g. "state"; ``remedy``: what to try, in
    the model's own argument names).
    """
    if covariance_type in ("full", "tied"):
        cov = covariances if covariance_type == "full" else covariances.unsqueeze(0)
        L, info = torch.linalg.cholesky_ex(cov)
        bad = (info != 0).nonzero().flatten().tolist()
        if bad:
            what = (
                "the tied covariance"  # not "the covariance of the tied covariance"
                if covariance_type == "tied"
                else f"the covariance of {unit}(s) {bad}"
            )
            raise DegenerateComponentError(
                f"{what} is not positive definite: the {unit} has "
                f"collapsed onto too few distinct points (a singleton, duplicated points or a "
                f"constant column). {remedy}"
            )
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
        P = torch.linalg.solve_triangular(L, eye, upper=False).mT  # (k, d, d)
        return P if covariance_type == "full" else P[0]
    bad = (covariances <= 0).nonzero()
    if len(bad):
        k = int(bad[0][0])
        raise DegenerateComponentError(
            f"{unit} {k} has a non-positive variance ({covariances[tuple(bad[0])].item():.3g}). "
            f"{remedy}"
        )
    return covariances.rsqrt()


def precision_cholesky_from_precisions(precisions: torch.Tensor, covariance_type: str):
    """``P`` with ``Λ = P Pᵀ`` from user-given precisions (lower Cholesky), or ``√λ``."""
    if covariance_type in ("full", "tied"):
        L, info = torch.linalg.cholesky_ex(precisions)
        if bool((info != 0).any()):
            raise ParameterError("precisions_init must be symmetric positive-definite matrices")
        return L
    if bool((precisions <= 0).any()):
        raise ParameterError("precisions_init must be positive")
    return precisions.sqrt()


def precisions_from_cholesky(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    if covariance_type in ("full", "tied"):
        return prec_chol @ prec_chol.mT
    return prec_chol.square()


def covariances_from_precisions(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Σ = (P Pᵀ)⁻¹ = P⁻ᵀ P⁻¹ (full, tied) or 1/P² (diag, spherical).

    Formed as the Gram matrix Aᵀ A of A = P⁻¹, which is symmetric positive semi-definite in
    floating point as well: inverting the product P Pᵀ squares its condition number, and a
    covariance of condition 1e17 (three rows in three columns of scale 1e6, held up by
    reg_covar) came back with an eigenvalue of -2e11 and asymmetric by 2e3."""
    if covariance_type in ("full", "tied"):
        A = torch.linalg.inv(prec_chol)  # P is triangular (upper from the M-step, lower from
        # user-given precisions): its inverse is a triangular solve's accuracy either way
        cov = A.mT @ A
        return 0.5 * (cov + cov.mT)
    return prec_chol.square().reciprocal()


def log_det_cholesky(
    prec_chol: torch.Tensor, covariance_type: str, n_features: int
) -> torch.Tensor:
    """log det P, i.e. ½ log det Λ: (k,) for full/diag/spherical, a scalar for tied."""
    if covariance_type == "full":
        return prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if covariance_type == "tied":
        return prec_chol.diagonal().log().sum()
    if covariance_type == "diag":
        return prec_chol.log().sum(-1)
    return n_features * prec_chol.log()


def log_gaussian_prob(
    X: torch.Tensor, means: torch.Tensor, prec_chol: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """log N(x_n | μ_k, Σ_k) for every sample and component: (n, d) → (n, k).

    Written as matrix products so that one chunk of rows costs a few large GEMMs
    (full: one (n, d) @ (d, k·d) product).
    """
    n, d = X.shape
    k = means.shape[0]
    log_det = log_det_cholesky(prec_chol, covariance_type, d)
    if covariance_type == "full":
        Pcat = prec_chol.permute(1, 0, 2).reshape(d, k * d)  # (d, k·d)
        shifted = (means.unsqueeze(1) @ prec_chol).squeeze(1)  # (k, d)
        # (rows, k, d) blocks of ~4M numbers: the whole of X at once held n·k·d (a GaussianHMM
        # of 4 states on 300,000 steps of 50 columns: 480 MB; 1e6 steps at 10 states: 4 GB)
        maha = X.new_empty(n, k)
        rows = max(1, (1 << 22) // max(1, k * d))
        for i in range(0, n, rows):
            Y = (X[i : i + rows] @ Pcat).view(-1, k, d)  # (rows, k, d)
            Y -= shifted
            torch.sum(Y.square_(), -1, out=maha[i : i + rows])
    elif covariance_type == "tied":
        Y = X @ prec_chol  # (n, d)
        M = means @ prec_chol  # (k, d)
        maha = (Y.square().sum(1, keepdim=True) - 2 * (Y @ M.T) + M.square().sum(1)).clamp_min_(0)
    elif covariance_type == "diag":
        prec = prec_chol.square()  # (k, d)
        maha = (
            (X * X) @ prec.T - 2 * (X @ (means * prec).T) + (means.square() * prec).sum(1)
        ).clamp_min_(0)
    elif covariance_type == "spherical":
        prec = prec_chol.square()  # (k,)
        maha = (
            (X * X).sum(1, keepdim=True) - 2 * (X @ means.T) + means.square().sum(1)
        ).clamp_min_(0) * prec
    else:
        raise ParameterError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )
    return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det


def gaussian_features(Xc: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Sufficient statistics T(x) of the Gaussian as an exponential family, one column per
    sample: (n, d) → (m, n).

    full/tied: ``[vech(x xᵀ); x]`` with m = d(d+1)/2 + d (row-major upper triangle);
    diag/spherical: ``[x²; x]`` with m = 2d. Every component's log-density is affine in T(x)
    (see :func:`natural_parameters`), so the E-step and the M-step are each one matrix product.
    Samples run along the long axis because products of a few component rows with many sample
    columns run about twice as fast as the transposed layout.
    """
    n, d = Xc.shape
    XT = Xc.T.contiguous()  # (d, n)
    if covariance_type in ("full", "tied"):
        T = d * (d + 1) // 2
        G = Xc.new_empty(T + d, n)
        off = 0
        for a in range(d):  # row a of the upper triangle: x_a · x_{a..d-1}
            torch.mul(XT[a : a + 1], XT[a:], out=G[off : off + d - a])
            off += d - a
        G[T:] = XT
        return G
    return torch.cat([XT * XT, XT], 0)  # (2d, n)


def _triu(d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    iu = torch.triu_indices(d, d, device=device)
    return iu[0], iu[1]


def _unpack_sym(v: torch.Tensor, d: int) -> torch.Tensor:
    """(..., d(d+1)/2) upper-triangle vectors → (..., d, d) symmetric matrices."""
    i, j = _triu(d, v.device)
    M = v.new_zeros(*v.shape[:-1], d, d)
    M[..., i, j] = v
    M[..., j, i] = v
    return M


def natural_parameters(
    means: torch.Tensor, prec_chol: torch.Tensor, covariance_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (k, m), b (k,)) with log N(x | μ_k, Σ_k) = W[k] · T(x) + b[k].

    From log N = −½ xᵀΛx + xᵀΛμ − ½ μᵀΛμ − (d/2) log 2π + ½ log|Λ|.
    """
    k, d = means.shape
    log_det = log_det_cholesky(prec_chol, covariance_type, d)
    const = -0.5 * d * math.log(2 * math.pi) + log_det
    if covariance_type in ("full", "tied"):
        Lam = prec_chol @ prec_chol.mT  # (k, d, d) or (d, d)
        Lam = Lam.expand(k, d, d)
        i, j = _triu(d, means.device)
        quad = -0.5 * Lam[:, i, j] * torch.where(i == j, 1.0, 2.0).to(Lam.dtype)  # (k, T)
        lin = (Lam @ means.unsqueeze(2)).squeeze(2)  # (k, d)
    else:
        prec = prec_chol.square()  # (k, d) or (k,)
        prec = prec.unsqueeze(1).expand(k, d) if covariance_type == "spherical" else prec
        quad = -0.5 * prec  # (k, d)
        lin = prec * means  # (k, d)
    b = const - 0.5 * (lin * means).sum(1)  # (k,)
    return torch.cat([quad, lin], 1).contiguous(), b


def gaussian_estep_stats(
    X: torch.Tensor,
    w: torch.Tensor,
    log_weights: torch.Tensor,
    means: torch.Tensor,
    prec_chol: torch.Tensor,
    covariance_type: str,
    shift: torch.Tensor,
    features: torch.Tensor | None = None,
    natural: tuple[torch.Tensor, torch.Tensor] | None = None,
    labels: torch.Tensor | None = None,
    direct: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Expected sufficient statistics of one chunk (Bishop 2006, §9.2.2), relative to ``shift``.

    Returns ``S0`` (k,) = Σ r, ``S1`` (k, d) = Σ r (x − c), ``S2`` = Σ r (x − c)(x − c)ᵀ
    ((k, d, d) full, (d, d) tied, (k, d) diag/spherical), ``loglik`` = Σ w log p(x) and
    ``weight`` = Σ w, where r = w · p(z | x). All of them add over chunks.

    ``features`` may pass ``gaussian_features(X − shift)`` computed earlier (they do not change
    between iterations); the E-step is then two matrix products over the chunk. ``natural``
    may pass ``natural_parameters(means − shift, prec_chol)``, which is the same for every chunk.

    ``direct`` = (indices (f,), their means μ_k (f, d)) names components too far from the
    shift for that affine form (:func:`far_components`): their log-densities are computed from
    x − μ_k and their ``S1``, ``S2`` are about μ_k rather than c (see
    :func:`direct_log_prob`); the M-step adds μ_k − c back.
    """
    # every component from x − μ_k (far, or d large: direct_is_faster): no features at all
    every = features is None and direct is not None and len(direct[0]) == means.shape[0]
    k, d = means.shape
    if every:
        logp = X.new_empty(k, X.shape[0])  # (k, n), every row written below
    else:
        G = gaussian_features(X - shift, covariance_type) if features is None else features
        if natural is None:
            natural = natural_parameters(means - shift, prec_chol, covariance_type)
        W, b = natural
        logp = torch.addmm((b + log_weights).unsqueeze(1), W, G)  # (k, n)
    if direct is not None:
        idx, centres = direct
        lp = direct_log_prob(
            X, centres, far_factors(prec_chol, idx, covariance_type), covariance_type
        )  # (n, f)
        logp[idx] = lp.T + log_weights[idx].unsqueeze(1)
    known = None if labels is None else (labels >= 0).nonzero().squeeze(1)  # labelled samples
    if known is not None and len(known):
        joint = logp[labels[known], known]  # log π_y + log N(x | y): complete-data likelihood
    resp, lse = normalize_log_prob_(logp, w)  # (k, n), (n,)
    if known is not None and len(known):
        resp[:, known] = 0
        resp[labels[known], known] = w[known]
        lse[known] = joint
    if every:  # written below (a tied S2 is replaced whole)
        S2 = X.new_empty(k, d, d) if covariance_type == "full" else X.new_empty(k, d)
        stats = {"S0": resp.sum(1), "S1": X.new_empty(k, d), "S2": S2}
    else:
        stats = feature_stats(G, w, resp, covariance_type, d)
    if direct is not None:
        S1, S2 = direct_moments(X, resp[idx], centres, covariance_type)
        put_direct_moments(stats, idx, S1, S2, covariance_type)
    stats["loglik"] = (w * lse).sum()
    stats["weight"] = w.sum()
    return stats


def far_components(
    centred_means: torch.Tensor,
    prec_chol: torch.Tensor,
    covariance_type: str,
    limit: float | None = None,
) -> torch.Tensor:
    """Indices (f,) of the components whose log-densities the affine form about the shift
    (:func:`natural_parameters`) cannot resolve to ``limit`` nats: that form differences
    quadratic terms of size ‖μ_k − c‖² λ_max(Λ_k), so it rounds by eps times that. Rows
    3, 5, 7 and two rows of 1e8 (float64), or a cluster of sd 0.01 a hundred from the others
    in float32, gave such a component the variance reg_covar and log-likelihoods off by
    1e2-1e6 nats. A tied covariance is one matrix pooled over the components, so either all
    of them are taken from x − μ_k or none (two clusters of sd 1 at 0 and 1e8 gave the pooled
    variance reg_covar and a score of -9.6e5 per row). ``limit`` defaults to 1e-9 nats in float64, near the EM driver's
    tolerance for a decrease of the bound, and to 1e-3 otherwise: float32's own rounding of
    a log-density is 1e-5-1e-4 nats on ordinary data (the benchmark's 16 clusters in 16
    dimensions), whose components stay in the fast form."""
    pc = prec_chol.double()
    eps = torch.finfo(centred_means.dtype).eps
    if limit is None:
        limit = 1e-9 if centred_means.dtype == torch.float64 else 1e-3
    dist2 = centred_means.double().square().sum(-1)  # (k,)
    if covariance_type == "tied":
        far = eps * dist2 * torch.linalg.matrix_norm(pc, ord=2).square() > limit  # (k,)
        k = centred_means.shape[0]
        return torch.arange(k if bool(far.any()) else 0, device=centred_means.device)
    if covariance_type == "full":
        lam = pc.square().sum((-2, -1))  # (k,) tr Λ_k, at least its largest eigenvalue
        maybe = eps * dist2 * lam > limit
        if bool(maybe.any()):  # the largest eigenvalue itself, for those only
            lam[maybe] = torch.linalg.matrix_norm(pc[maybe], ord=2).square()
    elif covariance_type == "diag":
        lam = pc.square().amax(-1)
    else:
        lam = pc.square()
    return (eps * dist2 * lam > limit).nonzero().flatten()


def direct_log_prob(
    X: torch.Tensor, means: torch.Tensor, prec_chol: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """log N(x | μ_k, Σ_k) (n, f) from the differences x − μ_k, for the few components of
    :func:`far_components`: ``X`` (n, d), their ``means`` (f, d) and precision factors
    ((f, d, d) full, (d, d) tied, (f, d) diag, (f,) spherical; see :func:`far_factors`).
    The differences are taken from the data themselves, not from x − c: in float32, x − c
    rounds a cluster of sd 0.01 at 50 from c by 3e-4 of its spread."""
    d = X.shape[1]
    log_det = log_det_cholesky(prec_chol, covariance_type, d)  # (f,), 0-d tied
    if covariance_type == "tied":
        log_det = log_det.expand(means.shape[0])
    cols = []
    for j in range(means.shape[0]):
        diff = X - means[j]  # (n, d)
        if covariance_type == "tied":
            maha = (diff @ prec_chol).square().sum(1)
        elif covariance_type == "full":
            maha = (diff @ prec_chol[j]).square().sum(1)
        elif covariance_type == "diag":
            maha = (diff * prec_chol[j]).square().sum(1)
        else:
            maha = diff.square().sum(1) * prec_chol[j].square()
        cols.append(-0.5 * (d * math.log(2 * math.pi) + maha) + log_det[j])
    return torch.stack(cols, 1) if cols else X.new_zeros(X.shape[0], 0)


def direct_moments(
    X: torch.Tensor, resp: torch.Tensor, means: torch.Tensor, covariance_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """S1 (f, d) and S2 ((f, d, d) full, (f, d) diag/spherical, (d, d) tied: pooled over
    the components, all of them) of the components of :func:`far_components` about their
    ``means`` (f, d): ``resp`` (f, n) holds their responsibilities with the sample weights."""
    S1, S2 = [], []
    for j in range(means.shape[0]):
        diff = X - means[j]  # (n, d)
        r = resp[j]  # (n,)
        S1.append(r @ diff)
        if covariance_type in ("full", "tied"):
            S2.append((diff * r.unsqueeze(1)).T @ diff)
        else:
            S2.append(r @ diff.square())
    S2 = torch.stack(S2)
    return torch.stack(S1), S2.sum(0) if covariance_type == "tied" else S2


def far_factors(prec_chol: torch.Tensor, idx: torch.Tensor, covariance_type: str):
    """The precision factors of the components ``idx`` for :func:`direct_log_prob`: the
    one tied matrix (d, d) itself, else ``prec_chol[idx]``."""
    return prec_chol if covariance_type == "tied" else prec_chol[idx]


def put_direct_moments(stats: dict, idx: torch.Tensor, S1, S2, covariance_type: str) -> None:
    """Write the moments of :func:`direct_moments` over ``stats["S1"]``, ``stats["S2"]``
    (in place): rows ``idx``, or the whole pooled S2 of a tied covariance."""
    stats["S1"][idx] = S1
    if covariance_type == "tied":
        stats["S2"] = S2
    else:
        stats["S2"][idx] = S2


def normalize_log_prob_(logp: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Responsibilities ``w · softmax(logp)`` over components and ``logsumexp(logp)``.

    ``logp`` is (k, n), components along the first axis, and is overwritten with the
    responsibilities (one exp over the k·n entries instead of the two of a logsumexp followed by
    an exp). Returns (resp (k, n), lse (n,)).
    """
    m = logp.amax(0, keepdim=True)  # (1, n)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    resp = logp.sub_(m)
    if resp.dtype == torch.float32:
        # exp(x) for x in [-103, -87] is subnormal in float32, which CPUs compute many times
        # slower, and such logits are common; responsibilities below 1e-35 of the largest are
        # set to 0 (the M-step treats a component with only such mass as unused). Clamped at
        # e^-80 and left there, they weighed a row at 1e17 into a group near 2.4 (variance
        # 0.8127 for 0.8097) and the group into the row's component (10.6 for 1e-6).
        resp.clamp_min_(-80.0)
        resp.exp_()
        # e^-80 by the same kernel: exactly 0 where clamped; the others move by 1.8e-35
        resp.sub_(resp.new_full((), -80.0).exp_())
    elif resp.dtype == torch.float64:
        # likewise below e^-708 (2e-308: subnormal, far slower to multiply), which rows
        # far from a component give: a tied fit of 50,000 rows in 64 dimensions spent half its
        # time on them (3.4 s against 1.6 s with such numbers flushed to 0). The others move
        # by 3.3e-308, below half an ulp of any responsibility above ~1e-292.
        resp.clamp_min_(-708.0)
        resp.exp_()
        resp.sub_(resp.new_full((), -708.0).exp_())
    else:
        resp.exp_()
    total = resp.sum(0, keepdim=True)  # (1, n)
    resp.mul_(w.unsqueeze(0) / total)
    return resp, (m + total.log()).squeeze(0)


def feature_stats(
    G: torch.Tensor, w: torch.Tensor, resp: torch.Tensor, covariance_type: str, d: int
) -> dict[str, torch.Tensor]:
    """S0, S1, S2 from features T(x − c) (m, n) and responsibilities ``resp`` (k, n) that
    include the sample weights."""
    S0 = resp.sum(1)  # (k,)
    if covariance_type == "tied":
        S1 = resp @ G[-d:].T  # (k, d)
        S2 = _unpack_sym(G[:-d] @ w, d)  # (d, d)
    else:
        S = resp @ G.T  # (k, m)
        S1 = S[:, -d:]
        S2 = _unpack_sym(S[:, :-d], d) if covariance_type == "full" else S[:, :d]
    return {"S0": S0, "S1": S1.contiguous(), "S2": S2.contiguous()}


#: Numbers a block of Gaussian features (m, rows) holds in :func:`moment_stats` (4 MiB of
#: float64): the whole of X's features at once took 2.3 GB for 200,000 rows of 50 columns
#: (full covariance: 1,325 features a row), 12 GB for 5,000 rows of 784.
FEATURE_BLOCK = 1 << 19


def direct_is_faster(d: int, k: int, covariance_type: str) -> bool:
    """Whether a full or tied covariance's E-step and moments are faster from x − μ_k
    (a (rows, d) x (d, d) product a component: :func:`direct_log_prob`,
    :func:`direct_moments`) than from the d(d+1)/2 + d features of every row
    (:func:`gaussian_features`), whose (m, rows) blocks leave the cache as d grows. Measured
    on one CPU thread, float64, 16,384 rows (benchmarks/README.md): the features win below
    d ≈ 12 at 2 components, ~16 at 4 and ~64 at 16, and the rule d >= 12 + 4k errs towards
    them; from x − μ_k, d = 64 at 4 components is 7x faster (29.5 against 209 ms) and d = 128
    at 16 is 3.3x. Diagonal and spherical covariances keep their 2d features."""
    return covariance_type in ("full", "tied") and d >= 12 + 4 * k


def moment_stats(
    Xc: torch.Tensor, w: torch.Tensor, resp: torch.Tensor, covariance_type: str
) -> dict[str, torch.Tensor]:
    """Weighted moments of (already shifted) data (n, d) under responsibilities ``resp`` (n, k)
    that include the sample weights: S0 (k,), S1 (k, d), S2 by covariance type. From the
    features in blocks of rows (:data:`FEATURE_BLOCK`), or, where that is slower
    (:func:`direct_is_faster`), from products of the rows themselves, about the same point."""
    n, d = Xc.shape
    k = resp.shape[1]
    if n and direct_is_faster(d, k, covariance_type):
        S1, S2 = direct_moments(Xc, resp.T, Xc.new_zeros(k, d), covariance_type)
        return {"S0": resp.sum(0), "S1": S1, "S2": S2}
    m = d * (d + 1) // 2 + d if covariance_type in ("full", "tied") else 2 * d
    rows = max(256, FEATURE_BLOCK // max(1, m))
    total = None
    for i in range(0, max(n, 1), rows):
        G = gaussian_features(Xc[i : i + rows], covariance_type)  # (m, rows)
        part = feature_stats(G, w[i : i + rows], resp[i : i + rows].T, covariance_type, d)
        total = part if total is None else {key: total[key] + part[key] for key in part}
    return total


def component_mass(S0: torch.Tensor) -> torch.Tensor:
    """Σ r of every component (k,) guarded against empty components, as scikit-learn's
    ``nk = Σ r + 10·eps``, in units of the data's total weight when that is below one row:
    sample weights scaled by c must leave the fit unchanged, and an absolute 10·eps moved
    the means of weights summing to 1e-8 by 1e-5 (to 1e-300: by orders of magnitude)."""
    unit = S0.sum().clamp(max=1.0)  # 1 for any fit of unit weights: scikit-learn's guard
    return S0 + 10 * torch.finfo(S0.dtype).eps * unit


def gaussian_mstep(
    stats: dict[str, torch.Tensor], shift: torch.Tensor, reg_covar: float, covariance_type: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form M-step: weights (k,), means (k, d), covariances (by type) from statistics.

    As scikit-learn, ``nk = Σ r + 10·eps`` guards empty components. Variances are differenced
    around the shift; one below the rounding error of that difference is set to exactly zero
    before ``reg_covar`` is added, so variances are never negative (float32) and a collapsed
    component is recognised as such (with ``reg_covar=0`` it raises DegenerateComponentError).
    """
    S0, S1, S2 = stats["S0"], stats["S1"], stats["S2"]
    eps = torch.finfo(S0.dtype).eps
    nk = component_mass(S0)  # (k,)
    weights = nk / nk.sum()
    delta = S1 / nk.unsqueeze(1)  # (k, d): mean − shift
    means = shift + delta
    if covariance_type == "full":
        raw = S2 / nk[:, None, None]  # (k, d, d) second moment about the shift
        cov = _drop_rounding(raw - delta.unsqueeze(2) * delta.unsqueeze(1), raw, eps)
    elif covariance_type == "tied":
        raw = S2 / nk.sum()
        cov = _drop_rounding(raw - (nk.unsqueeze(1) * delta).T @ delta / nk.sum(), raw, eps)
    else:
        raw = S2 / nk.unsqueeze(1)  # (k, d)
        var = raw - delta.square()
        var = torch.where(var > 100 * eps * raw, var, torch.zeros_like(var))
        cov = var + reg_covar if covariance_type == "diag" else var.mean(1) + reg_covar
        return weights, means, cov
    cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    return weights, means, cov


def _drop_rounding(cov: torch.Tensor, raw: torch.Tensor, eps: float) -> torch.Tensor:
    """Symmetrise ``cov`` (…, d, d) and zero the rows and columns whose variance is below the
    rounding error of differencing the raw second moment ``raw``: such a variance is zero
    (a component collapsed onto one value), never small noise or a negative number."""
    cov = 0.5 * (cov + cov.mT)
    var = cov.diagonal(dim1=-2, dim2=-1)  # (…, d)
    keep = (var > 100 * eps * raw.diagonal(dim1=-2, dim2=-1)).to(cov.dtype)
    return cov * keep.unsqueeze(-1) * keep.unsqueeze(-2)


def n_covariance_parameters(covariance_type: str, k: int, d: int) -> int:
    return {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]


def mixture_covariance(
    weights: torch.Tensor, delta: torch.Tensor, covariances: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """Covariance (d, d) of the whole mixture, Σ π_k (Σ_k + (μ_k − μ̄)(μ_k − μ̄)ᵀ): at the
    maximum likelihood, the weighted data covariance (plus the regularisation). ``delta`` are
    the means about any point."""
    k, d = delta.shape
    w = weights / weights.sum()
    full = fill_covariances(covariances, covariance_type, k, d)  # (k, d, d)
    dev = delta - w @ delta  # (k, d)
    return torch.einsum("k,kde->de", w, full) + (w.unsqueeze(1) * dev).T @ dev


def fill_covariances(covariances: torch.Tensor, covariance_type: str, k: int, d: int):
    """(k, d, d) matrices from any covariance type's storage."""
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return covariances.expand(k, d, d)
    if covariance_type == "diag":
        return torch.diag_embed(covariances)
    eye = torch.eye(d, dtype=covariances.dtype, device=covariances.device)
    return covariances.reshape(k, 1, 1) * eye


#: A component is degenerate when, in some direction, what the data give to its variance is at
#: most the regularisation added to it and at most this fraction of the data's own variance in
#: that direction (a standard deviation under 3% of the data's): points that are (nearly) tied.
DEGENERATE_RTOL = 1e-3


def degenerate_components(
    scatter: torch.Tensor,
    covariance_type: str,
    data_cov: torch.Tensor,
    floor: float,
    rtol: float = DEGENERATE_RTOL,
) -> dict[int, int | None]:
    """Components that sit on a handful of (near-)identical points: {component: feature}.

    ``scatter`` is each component's variance as the data give it, before any regularisation
    (diag (k, d), spherical (k,), full (k, d, d)); ``floor`` is what the model adds to it
    (``reg_covar``, a prior). A component is flagged when its smallest variance — per feature
    (diag, spherical) or per eigen-direction (full) — is at most ``floor`` and at most ``rtol``
    times the variance of the data ``data_cov`` (d, d), unregularised, in that direction: its
    likelihood then grows without bound as the floor shrinks, which is not a fit (mclust
    reports such models as NA). Directions in which the data themselves vary by no more than
    the floor (a constant column) are the data's, not a component's, and are not flagged.
    The feature is the one of smallest variance (None for a direction of a full covariance
    that is no single feature). Tied covariances are shared, never one component's: {}.
    """
    if covariance_type == "tied":
        return {}
    scatter = scatter.double()
    data_cov = data_cov.double()
    dvar = data_cov.diagonal()  # (d,)
    out: dict[int, int | None] = {}
    if covariance_type in ("diag", "spherical"):
        var = scatter if covariance_type == "diag" else scatter.unsqueeze(1)  # (k, d) or (k, 1)
        ref = dvar if covariance_type == "diag" else dvar.mean().reshape(1)
        bad = (var <= floor) & (var <= rtol * ref) & (ref > floor)  # (k, d)
        for k in bad.any(1).nonzero().flatten().tolist():
            j = int((var[k] / ref).argmin()) if covariance_type == "diag" else None
            out[k] = j
        return out
    sym = 0.5 * (scatter + scatter.mT)
    lam, vec = torch.linalg.eigh(sym)  # (k, d), (k, d, d) ascending
    v = vec[..., 0]  # (k, d) direction of least variance
    ref = torch.einsum("kd,de,ke->k", v, data_cov, v)  # data variance along it
    bad = (lam[:, 0] <= floor) & (lam[:, 0] <= rtol * ref) & (ref > floor)
    for k in bad.nonzero().flatten().tolist():
        j = int(v[k].abs().argmax())
        out[k] = j if float(v[k, j].abs()) > 1 - 1e-6 else None
    return out


def describe_degenerate(
    model: str,
    found: dict,
    rows: dict[int, list[int]] | None,
    floor_name: str,
    noun: str | tuple[str, ...] = "component",
    fewer: str = "fewer components",
    variance: str = "variance",
    why: str | None = None,
) -> str:
    """The DegenerateComponentWarning message: which component, on which rows, what to try.
    A key of ``found`` may be a tuple (a GMMHMM's (state, mixture component)), named by as
    many nouns; ``fewer`` is the first remedy; ``variance`` names what is at the floor and
    ``why`` replaces the sentence on what that means and what to try."""
    nouns = (noun,) if isinstance(noun, str) else noun
    parts = []
    for k, j in sorted(found.items()):
        where = f" in feature {j}" if j is not None else ""
        text = ", ".join(
            f"{a} {i}" for a, i in zip(nouns, k if isinstance(k, tuple) else (k,), strict=True)
        )
        if rows is not None:
            r = rows.get(k, [])
            shown = ", ".join(str(i) for i in r[:10]) + (", ..." if len(r) > 10 else "")
            text += f" (on {len(r)} row(s): {shown})"
        parts.append(text + f" has its {variance}{where} at the {floor_name} floor")
    if why is None:
        why = (
            "Its points are (nearly) identical there, so its likelihood is not a real fit and "
            "BIC/AIC favour it spuriously (mclust reports such models as NA; select_model does "
            f"too). Try {fewer}, another random_state or more n_init, or jitter/remove the "
            "tied values."
        )
    return (
        f"{model}: "
        + "; ".join(parts)
        + f". {why} The fitted model lists them in degenerate_components_."
    )


def unresolved_variances(
    second: torch.Tensor, delta: torch.Tensor, floor: float, eps: float
) -> torch.Tensor:
    """(k, d) mask of the variances an update about one shift cannot resolve.

    ``second`` (k, d) is each component's second moment about the shift and ``delta`` (k, d)
    its mean minus the shift; the variance is their difference, whose rounding is
    ~100·eps·``second``. Where that rounding exceeds ``floor`` (what the model adds to every
    variance) and the variance is no larger than it, the component lies so far from the shift,
    compared with its spread, that its variance is lost: rows 3, 5, 7 and two rows of 1e8 give
    the far state a variance of −0.5 (0 is right)."""
    noise = 100 * eps * second
    return (second - delta.square() <= noise) & (noise > floor)


def describe_unresolved(
    model: str,
    noun: str,
    k: int,
    j: int,
    distance: float,
    noise: float,
    floor_name: str,
    float32: bool = False,
) -> str:
    """The message for :func:`unresolved_variances`: which one, how far, what to try."""
    return (
        f"{model}: {noun} {k}'s variance in column {j} is below the rounding of its update "
        f"(±{noise:.2g}, at {distance:.3g} from the data's centre), so it cannot be estimated: "
        f"the {noun} sits on (nearly) identical values, or lies too far from the others for its "
        f"spread. Try a {floor_name} above {noise:.2g}, {'float64, ' if float32 else ''}or, for "
        "groups far apart, fit "
        "them separately (split the rows by a threshold) or take logs of a column that spans "
        "many orders of magnitude"
    )
