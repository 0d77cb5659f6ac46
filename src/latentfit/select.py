"""Model selection for latent-variable models: BIC, AIC and ICL sweeps, with optional K-fold
held-out log-likelihood.

:func:`select_model` fits every candidate — a sweep over the number of components and the
covariance types of a family, or any list of estimators — and returns a
:class:`SelectionResult` whose :meth:`~SelectionResult.table` reads like mclust's BIC table
(Fraley & Raftery 2002): one row per size, one column per covariance type, the best entry
marked. A candidate whose fit fails is reported with its error and never stops the sweep; one
whose fit has a degenerate component (its variance at the regularisation floor on a handful of
tied points, see :func:`latentfit.em.gaussian.degenerate_components`) is reported as NA, as
mclust does, since its likelihood is not that of a real fit.

Criteria follow scikit-learn's sign (lower is better): BIC = −2 log L + p log n (Schwarz 1978),
AIC = −2 log L + 2p (Akaike 1974), ICL = BIC − 2 Σ_n log p(ẑ_n | x_n) (Biernacki, Celeux &
Govaert 2000), which also penalises overlapping components.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import clone

from latentfit._validation import as_float_tensor
from latentfit.errors import ParameterError

__all__ = ["CRITERIA", "FAMILY_NAMES", "SelectionResult", "make_candidates", "select_model"]

CRITERIA = ("bic", "aic", "icl", "cv_loglik")
FAMILY_NAMES = ("gmm", "bernoulli", "categorical", "multinomial", "poisson", "fa", "ppca")


@dataclass
class SelectionResult:
    """The fitted candidates and their criteria.

    ``rows``: one dict per candidate with ``label``, ``n_components``, ``variant`` (the
    covariance type or family), ``loglik`` (total), ``n_parameters``, ``bic``, ``aic``,
    ``icl``, ``cv_loglik`` (mean held-out log-likelihood per sample, when asked), ``converged``,
    ``error`` (None, or why the fit failed; its criteria are then NaN) and ``degenerate`` (the
    model's degenerate components; when any, its criteria are NaN too: NA in the tables).
    """

    rows: list[dict]
    models: list[Any]
    criterion: str = "bic"
    n_samples: int = 0
    notes: list[str] = field(default_factory=list)

    def best_index(self, criterion: str | None = None) -> int | None:
        """Index of the best row: lowest BIC/AIC/ICL, highest held-out log-likelihood."""
        crit = criterion or self.criterion
        vals = np.array([r.get(crit, math.nan) for r in self.rows], dtype=float)
        if np.all(np.isnan(vals)):
            return None
        return int(np.nanargmax(vals) if crit == "cv_loglik" else np.nanargmin(vals))

    @property
    def best_model_(self):
        i = self.best_index()
        return None if i is None else self.models[i]

    @property
    def best_row_(self) -> dict | None:
        i = self.best_index()
        return None if i is None else self.rows[i]

    def table(self, criterion: str | None = None) -> str:
        """mclust-style table: sizes down, variants across, ``*`` at the best value."""
        crit = criterion or self.criterion
        variants = list(dict.fromkeys(r["variant"] for r in self.rows))
        sizes = sorted({r["n_components"] for r in self.rows})
        best = self.best_index(crit)
        cell = {(r["n_components"], r["variant"]): (i, r) for i, r in enumerate(self.rows)}
        order = "higher" if crit == "cv_loglik" else "lower"
        lines = [
            f"{crit.upper()} ({order} is better; * marks the best, NA a failed or degenerate fit)"
        ]
        width = max(12, *(len(v) + 2 for v in variants))
        lines.append("K".rjust(4) + "".join(v.rjust(width) for v in variants))
        for k in sizes:
            parts = []
            for v in variants:
                i, r = cell.get((k, v), (None, None))
                if r is None:
                    parts.append("".rjust(width))
                    continue
                val = r.get(crit, math.nan)
                text = "NA" if val is None or not math.isfinite(val) else f"{val:.2f}"
                parts.append((text + ("*" if i == best else " ")).rjust(width))
            lines.append(str(k).rjust(4) + "".join(parts))
        return "\n".join(lines)

    def summary(self) -> str:
        """Every candidate with every criterion, and the best model by each criterion."""
        head = f"{'model':<22}{'logLik':>12}{'params':>8}{'BIC':>12}{'AIC':>12}{'ICL':>12}"
        has_cv = any(r.get("cv_loglik") is not None for r in self.rows)
        if has_cv:
            head += f"{'heldout':>10}"
        lines = [head]
        for r in self.rows:
            if r["error"]:
                lines.append(f"{r['label']:<22}  failed: {r['error']}")
                continue
            if r.get("degenerate"):
                lines.append(
                    f"{r['label']:<22}{r['loglik']:>12.2f}{r['n_parameters']:>8d}  NA: "
                    f"degenerate component(s) {r['degenerate']}"
                )
                continue
            line = f"{r['label']:<22}{r['loglik']:>12.2f}{r['n_parameters']:>8d}"
            for c in ("bic", "aic", "icl"):
                v = r[c]
                line += f"{v:>12.2f}" if v is not None and math.isfinite(v) else f"{'NA':>12}"
            if has_cv:
                v = r.get("cv_loglik")
                line += f"{v:>10.4f}" if v is not None and math.isfinite(v) else f"{'NA':>10}"
            if not r["converged"]:
                line += "  (not converged)"
            if r.get("cv_error"):
                line += f"  (held-out failed: {r['cv_error']})"
            lines.append(line)
        for crit in ("bic", "aic", "icl") + (("cv_loglik",) if has_cv else ()):
            i = self.best_index(crit)
            if i is not None:
                lines.append(f"best by {crit.upper()}: {self.rows[i]['label']}")
        return "\n".join(lines + self.notes)

    def plot(self, criterion: str | None = None, ax=None):
        """Criterion over K, one line per variant (covariance type), the best point circled."""
        import matplotlib.pyplot as plt

        crit = criterion or self.criterion
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        for v in dict.fromkeys(r["variant"] for r in self.rows):
            pts = sorted(
                (r["n_components"], r.get(crit, math.nan))
                for r in self.rows
                if r["variant"] == v and r.get(crit) is not None
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
        best = self.best_index(crit)
        if best is not None:
            r = self.rows[best]
            ax.plot(r["n_components"], r[crit], "o", ms=14, mfc="none", mec="k", label="best")
        ax.set_xlabel("number of components K")
        ax.set_ylabel(crit.upper() + (" (higher is better)" if crit == "cv_loglik" else ""))
        ax.legend()
        return fig


def _family_factory(family: str, **kwargs) -> Callable[[int, str], Any]:
    from latentfit.em import factor
    from latentfit.em.mixture import discrete as mixtures
    from latentfit.em.mixture.gmm import GaussianMixture

    classes = {
        "gmm": GaussianMixture,
        "bernoulli": mixtures.BernoulliMixture,
        "categorical": mixtures.CategoricalMixture,
        "multinomial": mixtures.MultinomialMixture,
        "poisson": mixtures.PoissonMixture,
        "fa": factor.FactorAnalysis,
        "ppca": factor.PPCA,
    }
    if family in classes:
        cls = classes[family]

        def make(k, variant):
            extra = {"covariance_type": variant} if family == "gmm" else {}
            return cls(n_components=k, **extra, **kwargs)

        return make
    from latentfit.em.mixture.families import FAMILIES, MixtureModel

    if family in FAMILIES:
        return lambda k, variant: MixtureModel(family, k, **kwargs)
    raise ParameterError(
        f"unknown family {family!r}; choose from {list(FAMILY_NAMES)} or a MixtureModel family "
        f"{list(FAMILIES)}"
    )


def make_candidates(
    family: str = "gmm",
    n_components: Sequence[int] = range(1, 10),
    covariance_types: Sequence[str] = ("full", "tied", "diag", "spherical"),
    **kwargs,
) -> list[tuple[str, Any, int, str]]:
    """(label, unfitted estimator, K, variant) for every size (and covariance type, for
    ``gmm``)."""
    make = _family_factory(family, **kwargs)
    variants = list(covariance_types) if family == "gmm" else [family]
    return [
        (f"{v} K={k}" if family == "gmm" else f"{family} K={k}", make(k, v), k, v)
        for v in variants
        for k in n_components
    ]


def _n_parameters(model) -> int:
    return int(model._n_parameters())


def _criteria(model, X: torch.Tensor) -> dict:
    n = X.shape[0]
    loglik = float(np.sum(model.score_samples(X)))
    p = _n_parameters(model)
    bic = -2 * loglik + p * math.log(n)
    icl = None
    if hasattr(model, "predict_proba"):
        resp = torch.as_tensor(model.predict_proba(X)).clamp_min(1e-300)
        icl = bic - 2 * float(resp.max(1).values.log().sum())
    return {"loglik": loglik, "n_parameters": p, "bic": bic, "aic": -2 * loglik + 2 * p, "icl": icl}


def _cv_loglik(model, X: torch.Tensor, cv: int, random_state) -> float:
    from sklearn.model_selection import KFold

    folds = KFold(cv, shuffle=True, random_state=random_state)
    total, count = 0.0, 0
    for train, test in folds.split(np.arange(X.shape[0])):
        m = clone(model).fit(X[torch.as_tensor(train)])
        total += float(np.sum(m.score_samples(X[torch.as_tensor(test)])))
        count += len(test)
    return total / count


_FIT_ERRORS = (ValueError, FloatingPointError, RuntimeError, torch.linalg.LinAlgError)


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"


def select_model(
    X,
    *,
    family: str = "gmm",
    n_components: Sequence[int] = range(1, 10),
    covariance_types: Sequence[str] = ("full", "tied", "diag", "spherical"),
    candidates: Sequence | None = None,
    criterion: str = "bic",
    cv: int | None = None,
    random_state=0,
    callback: Callable[[int, int, dict], None] | None = None,
    **model_kwargs,
) -> SelectionResult:
    """Fit every candidate and tabulate BIC, AIC, ICL (and K-fold held-out log-likelihood).

    Parameters
    ----------
    X : data (n, d), array-like or tensor.
    family : ``"gmm"`` (sweeps ``covariance_types``), ``"bernoulli"``, ``"categorical"``,
        ``"multinomial"``, ``"poisson"``, ``"fa"``, ``"ppca"`` (the latent dimension is swept),
        or a :class:`~latentfit.em.mixture.families.MixtureModel` family name.
    n_components : the sizes to try.
    candidates : instead of a sweep, any list of unfitted estimators (or ``(label,
        estimator)`` pairs); each needs ``fit``, ``score_samples`` and ``_n_parameters``.
    criterion : which criterion picks ``best_model_`` (``"bic"``, ``"aic"``, ``"icl"`` or,
        with ``cv``, ``"cv_loglik"``).
    cv : number of folds for the held-out log-likelihood (None: not computed).
    model_kwargs : passed to every estimator of the sweep (``n_init``, ``max_iter``, ...).
    callback : called as ``callback(i, n_candidates, row)`` after each fit (progress bars).
    """
    if criterion not in CRITERIA:
        raise ParameterError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "cv_loglik" and not cv:
        raise ParameterError("criterion='cv_loglik' needs cv=K folds (e.g. cv=5)")
    if cv is not None and (not isinstance(cv, int) or cv < 2):
        raise ParameterError(f"cv must be an integer >= 2 (number of folds), got {cv!r}")
    # Checked here (NaN kept: models with missing="marginalize" take it; each model checks
    # the rest), so that strings or ragged rows are a DataError naming the row, not numpy's.
    Xt = X if isinstance(X, torch.Tensor) else as_float_tensor(X, allow_nan=True)
    if candidates is None:
        model_kwargs.setdefault("random_state", random_state)
        if family == "categorical" and "n_categories" not in model_kwargs:
            # Fixed from the whole data set, so a cross-validation fold that misses a rare
            # category can still score it.
            finite = torch.nan_to_num(Xt, nan=0.0)
            model_kwargs["n_categories"] = (finite.max(0).values.long() + 1).clamp_min(1).tolist()
        entries = make_candidates(family, n_components, covariance_types, **model_kwargs)
    else:
        entries = []
        for c in candidates:
            label, est = c if isinstance(c, tuple) else (None, c)
            k = getattr(est, "n_components", None) or 0
            variant = getattr(est, "covariance_type", None) or type(est).__name__
            entries.append((label or f"{type(est).__name__} K={k}", est, k, variant))
    rows, models = [], []
    for i, (label, est, k, variant) in enumerate(entries):
        row = {"label": label, "n_components": k, "variant": variant, "error": None}
        row["degenerate"] = []
        row.update(loglik=math.nan, n_parameters=0, bic=math.nan, aic=math.nan, icl=math.nan)
        row["cv_loglik"] = math.nan if cv else None
        row["converged"] = False
        model = None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = clone(est).fit(Xt)
                row.update(_criteria(model, Xt))
                if cv:
                    try:
                        row["cv_loglik"] = _cv_loglik(est, Xt, cv, random_state)
                    except _FIT_ERRORS as err:  # the full-data fit stands; only CV is missing
                        row["cv_error"] = _describe(err)
            row["converged"] = bool(getattr(model, "converged_", True))
            row["warnings"] = sorted({type(w.message).__name__ for w in caught})
            degenerate = list(getattr(model, "degenerate_components_", None) or [])
            row["degenerate"] = degenerate
            if degenerate:  # not a real fit: NA, as mclust (its loglik is kept for inspection)
                row.update(bic=math.nan, aic=math.nan, icl=math.nan)
                if cv:
                    row["cv_loglik"] = math.nan
        except _FIT_ERRORS as err:
            row["error"] = _describe(err)
            model = None
        rows.append(row)
        models.append(model)
        if callback is not None:
            callback(i, len(entries), row)
    result = SelectionResult(rows, models, criterion, int(Xt.shape[0]))
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        result.notes.append(f"{failed} of {len(rows)} fits failed and are shown as NA")
    degenerate = sum(bool(r.get("degenerate")) for r in rows)
    if degenerate:
        result.notes.append(
            f"{degenerate} of {len(rows)} fits have a degenerate component (variance at the "
            "regularisation floor on tied points) and are shown as NA"
        )
    return result
