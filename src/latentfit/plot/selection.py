"""A criterion over K from :func:`latentfit.select.select_model`."""

from __future__ import annotations

import math

from latentfit.errors import ParameterError
from latentfit.plot._axes import new_axes

__all__ = ["plot_selection"]


def plot_selection(result, criterion: str | None = None, *, ax=None):
    """The criterion (default: the one the sweep chose by) against K, one line per variant
    (covariance type or family), the best candidate circled; failed and degenerate fits (NaN)
    leave gaps. Returns the Axes."""
    from latentfit.select import CRITERIA

    crit = criterion or result.criterion
    if crit not in CRITERIA:
        raise ParameterError(f"criterion must be one of {CRITERIA}, got {crit!r}")
    if crit == "cv_loglik" and all(r.get("cv_loglik") is None for r in result.rows):
        raise ParameterError("criterion='cv_loglik' needs a sweep run with cv=K folds")
    ax = new_axes(ax, figsize=(6, 4))
    for v in dict.fromkeys(r["variant"] for r in result.rows):
        pts = sorted(
            (r["n_components"], math.nan if r.get(crit) is None else float(r[crit]))
            for r in result.rows
            if r["variant"] == v
        )
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(v))
    best = result.best_index(crit)
    if best is not None:
        r = result.rows[best]
        ax.plot(r["n_components"], r[crit], "o", ms=14, mfc="none", mec="k", label="best")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(crit.upper() + (" (higher is better)" if crit == "cv_loglik" else ""))
    ax.legend(fontsize=8)
    return ax
