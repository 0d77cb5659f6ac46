"""Directions the data do not vary in, which a Gaussian model's variance floor fills in: a
column of one value, and, under a full or tied covariance, a column that is a linear function
of others. Along them the fitted variance is the floor's (reg_covar, min_covar, a prior), not
the data's, so every row's log-density gains a constant that grows without bound as the floor
shrinks; scikit-learn and hmmlearn fit such data without a word. The fits say so once
(:class:`~latentfit.errors.ConstantColumnWarning`), naming the columns."""

from __future__ import annotations

import warnings

import torch

from latentfit.em.gaussian import weighted_mean
from latentfit.errors import ConstantColumnWarning, user_stacklevel

__all__ = [
    "DEPENDENT_RTOL",
    "constant_columns",
    "dependent_columns",
    "warn_constant_columns",
    "warn_dependent_columns",
]


def constant_columns(X: torch.Tensor, w: torch.Tensor | None = None) -> tuple[list, list]:
    """The columns of ``X`` (n, d) that hold one value in at least two rows of positive weight
    ``w`` (n,) and no other (missing values, NaN, left out), and those values: by equality with
    each column's first counted value, in boolean (n, d) masks (no float64 copy of X)."""
    seen = ~torch.isnan(X)  # (n, d)
    if w is not None:
        seen &= (w > 0).unsqueeze(1)
    first = seen.to(torch.uint8).argmax(0)  # (d,) the first counted row of each column
    value = X.gather(0, first.unsqueeze(0))  # (1, d)
    same = ((X == value) | ~seen).all(0) & (seen.sum(0) >= 2)  # (d,)
    cols = same.nonzero().flatten().tolist()
    return cols, value[0, cols].tolist()


def warn_constant_columns(
    X: torch.Tensor, w: torch.Tensor | None, model: str, parts: str, name: str = "X"
) -> None:
    """Warn (:class:`ConstantColumnWarning`, once) of columns of ``X`` (n, d) that hold one
    value in every row (of positive weight ``w`` (n,), missing values left out), at the start
    of a Gaussian model's fit: the variance fitted there is the model's floor (or prior), not
    the data's, so every row's log-density gains a constant that grows without bound as the
    floor shrinks (two components on faithful's waiting times: log-likelihood -1034.0; with a
    column of ones beside them +594.9, 5.99 a row from that column at reg_covar=1e-6), and a
    row with another value there scores as all but impossible. scikit-learn and hmmlearn fit
    such a column silently; the floors keep the fit finite, which :func:`check_variance_floor`
    leaves to them."""
    if X.dim() != 2 or X.shape[0] < 2 or not X.shape[1]:
        return
    cols, values = constant_columns(X, w)
    if not cols:
        return
    if len(cols) == 1:
        where = f"column {cols[0]} of {name} holds one value ({values[0]:g}) in every row"
    else:
        shown = ", ".join(str(j) for j in cols[:10]) + (", ..." if len(cols) > 10 else "")
        held = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if len(cols) > 10 else "")
        where = f"columns {shown} of {name} each hold one value ({held}) in every row"
    warnings.warn(
        f"{model}: {where}, so the variance fitted there is set by the model's variance floor "
        "(or prior), not by the data: every row's log-density gains a constant from it that "
        "grows without bound as the floor shrinks (the log-likelihood, score, BIC and AIC with "
        "it), and a row with another value there scores as all but impossible. Drop the "
        f"column{'s' if len(cols) > 1 else ''}: {'it tells' if len(cols) == 1 else 'they tell'}"
        f" the {parts} nothing",
        ConstantColumnWarning,
        stacklevel=user_stacklevel(),
    )


#: A direction of the standardised columns (their correlation matrix, eigenvalues summing to
#: d) whose variance is at most this, relative, is one the data do not vary in: rounding's
#: level for float64 (~1e-16 of a variance) and float32 (~1e-14) data, far below any real
#: correlation (|r| = 1 - 5e-11).
DEPENDENT_RTOL = 1e-10


def dependent_columns(
    X: torch.Tensor, w: torch.Tensor | None = None, rows: int = 1 << 16
) -> tuple[int, list[int], tuple[float, float] | None] | None:
    """Whether the rows of ``X`` (n, d) (those of positive weight ``w``, without a missing
    value) lie in a subspace across its non-constant columns, more of them than columns: None
    where they do not (or are too few to say which relation), else ``(deficit, columns,
    line)``. ``deficit`` is the number of directions they do not vary in, ``columns`` those
    taking part in the first such direction, and ``line`` the ``(slope, intercept)`` of its
    second column on its first when only two take part (column b = slope * column a +
    intercept).

    The weighted covariance is taken in float64 about the float64 mean, ``rows`` rows at a time
    (no float64 copy of X), and standardised to a correlation matrix, whose eigenvalues at
    most :data:`DEPENDENT_RTOL` mark the directions (constant columns, said of on their own,
    are left out)."""
    keep = ~torch.isnan(X).any(1)  # (n,)
    if w is not None:
        keep &= w > 0
    n_rows = int(keep.sum())
    if n_rows < 2:
        return None
    every = bool(keep.all())  # (no copy of X then)
    kept_X, kept_w = (X, w) if every else (X[keep], None if w is None else w[keep])
    mean = weighted_mean(kept_X, kept_w, rows, torch.float64)  # (d,)
    d = X.shape[1]
    S = torch.zeros(d, d, dtype=torch.float64, device=X.device)
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], rows):
        k = keep[i : i + rows]
        xc = X[i : i + rows][k].double() - mean  # (m, d)
        wi = torch.ones(xc.shape[0], dtype=torch.float64, device=X.device)
        if w is not None:
            wi = w[i : i + rows][k].double()
        S += (xc * wi.unsqueeze(1)).T @ xc
        total += wi.sum()
    S /= total
    sd = S.diagonal().clamp_min(0).sqrt()  # (d,)
    varying = (sd > 0).nonzero().flatten()  # (e,) constant columns left out
    e = int(varying.numel())
    if e < 2:
        return None
    if n_rows <= e:  # n rows span at most n - 1 directions: a subspace, but of no one relation
        return None  # (GaussianMixture says so of its fit: "4 rows for 6 columns")
    sub = sd[varying]
    R = S[varying][:, varying] / (sub.unsqueeze(1) * sub.unsqueeze(0))  # (e, e)
    lam, V = torch.linalg.eigh(R)  # ascending
    null = lam <= DEPENDENT_RTOL * float(lam[-1])
    deficit = int(null.sum())
    if not deficit:
        return None
    v = V[:, 0]  # (e,) the direction of least variance, on standardised columns
    part = (v.abs() > 1e-3 * float(v.abs().max())).nonzero().flatten()
    columns = varying[part].tolist()
    line = None
    if len(columns) == 2:
        a, b = part.tolist()
        ja, jb = columns
        slope = -float(v[a] * sd[jb] / (v[b] * sd[ja]))
        intercept = float(mean[jb]) - slope * float(mean[ja])
        # an intercept at rounding's level of the terms it is the difference of is 0
        scale = abs(float(mean[jb])) + abs(slope * float(mean[ja])) + float(sd[jb])
        line = (slope, 0.0 if abs(intercept) <= 1e-9 * scale else intercept)
    return deficit, columns, line


def warn_dependent_columns(
    X: torch.Tensor,
    w: torch.Tensor | None,
    model: str,
    covariance_type: str,
    name: str = "X",
    diagonal: str = "covariance_type='diag'",
) -> None:
    """Warn (:class:`ConstantColumnWarning`, once) where a 'full' or 'tied' covariance is
    fitted to rows of ``X`` that lie in a subspace (:func:`dependent_columns`): a column that
    is a linear function of others (a copy, a unit conversion, a total beside its parts).
    Along that direction the covariance is the variance floor's, as for a constant column
    (:func:`warn_constant_columns`): two components on faithful's two columns score -1130.3
    (log-likelihood); with a third column, twice the first plus one, +279.8, 5.18 nats a row
    from the floor. Diagonal and spherical covariances ignore the
    relation: nothing to say for them. ``diagonal`` names the model's remedy of independent
    columns."""
    if covariance_type not in ("full", "tied") or X.dim() != 2 or X.shape[1] < 2:
        return
    found = dependent_columns(X, w)
    if found is None:
        return
    deficit, columns, line = found
    shown = ", ".join(str(j) for j in columns[:10]) + (", ..." if len(columns) > 10 else "")
    if line is not None:
        a, b = columns
        slope, intercept = line
        shift = f" {'-' if intercept < 0 else '+'} {abs(intercept):.6g}" if intercept else ""
        relation = f" (column {b} = {slope:.6g} * column {a}{shift} in every row)"
    else:
        relation = " (a weighted sum of them is the same in every row)"
    what = (
        f"columns {shown} of {name} are linearly dependent{relation}, so its rows lie in a "
        "subspace" + (f" ({deficit} directions short of the columns)" if deficit > 1 else "")
    )
    warnings.warn(
        f"{model}: {what}. A {covariance_type} covariance is set by the variance floor (or "
        "prior) across it, not by the data: every row's log-density gains a constant that "
        "grows without bound as the floor shrinks (the log-likelihood, score, BIC and AIC with "
        f"it). Drop a redundant column, or use {diagonal}",
        ConstantColumnWarning,
        stacklevel=user_stacklevel(),
    )
