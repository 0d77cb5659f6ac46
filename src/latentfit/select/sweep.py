"""The selection loop and its result: :func:`select_model` fits every candidate of
:mod:`latentfit.select.candidates`, scores it by BIC, AIC, ICL and the held-out
log-likelihood, and returns a :class:`SelectionResult` (see :mod:`latentfit.select`)."""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import clone

from latentfit._interrupt import keeping_fit_on_ctrl_c, stop_requested, stoppable, stopped_by
from latentfit._validation import as_float_tensor, draw_seed
from latentfit.em.hmm.sequences import check_lengths
from latentfit.em.mixture.discrete import dense_codes
from latentfit.errors import ArgumentError, DataError, ParameterError, ResourceLimitError
from latentfit.select.candidates import (
    CRITERIA,
    CRITERION_ALIASES,
    Fold,
    _row_folds,
    _takes,
    is_sequence_model,
    make_candidates,
    n_free_parameters,
    sequence_folds,
)

__all__ = ["COLUMNS", "SelectionResult", "select_model"]

#: The columns of :meth:`SelectionResult.to_frame` and of each row of ``to_dict()["rows"]``.
COLUMNS = (
    "label",
    "n_components",
    "variant",
    "loglik",
    "n_parameters",
    "bic",
    "aic",
    "icl",
    "cv_loglik",
    "converged",
    "error",
    "degenerate",
    "warnings",
    "best",
)


def _canonical(criterion: str) -> str:
    return CRITERION_ALIASES.get(criterion, criterion)


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


#: The characters of a failed fit's error that its row of a table shows: the message in full
#: (its remedy last) follows the table, numbered (:func:`_failures`).
ROW_ERROR_CHARS = 80


def _failures(rows: list[dict]) -> list[tuple[int, str, str]]:
    """The failed fits and held-out scores of ``rows``, numbered from 1 in the order of the
    rows: ``(row index, "failed" or "held-out failed", the error in full)``."""
    return [
        (i, what, r[key])
        for i, r in enumerate(rows)
        for key, what in (("error", "failed"), ("cv_error", "held-out failed"))
        if r.get(key)
    ]


def _row_error(text: str, number: int) -> str:
    """A failed fit's error as its row of a table shows it: the start of ``text``, and the
    ``number`` of the note below the table that says it in full."""
    if len(text) > ROW_ERROR_CHARS:
        text = text[:ROW_ERROR_CHARS].rstrip() + "..."
    return f"[{number}] {text}"


def _failure_notes(rows: list[dict]) -> list[str]:
    """The full errors of the failed fits of ``rows``, numbered as their rows say."""
    return [
        f"[{n}] {rows[i]['label']} {what}: {text}"
        for n, (i, what, text) in enumerate(_failures(rows), 1)
    ]


@dataclass(repr=False)
class SelectionResult:
    """The fitted candidates and their criteria.

    ``rows``: one dict per candidate with ``label``, ``n_components``, ``variant`` (the
    covariance type or family), ``loglik`` (total), ``n_parameters``, ``bic``, ``aic``,
    ``icl``, ``cv_loglik`` (mean held-out log-likelihood per sample, when asked), ``converged``,
    ``error`` (None, or why the fit failed; its criteria are then NaN) and ``degenerate`` (the
    model's degenerate components; when any, its criteria are NaN too: NA in the tables).
    ``n_sequences`` is the number of sequences when sequence models were compared (else None);
    ``cv_scheme`` says how the held-out folds were made. ``repr`` is a small table;
    :meth:`to_frame` and :meth:`to_dict` give the same numbers to pandas and to JSON.
    """

    rows: list[dict]
    models: list[Any]
    criterion: str = "bic"
    n_samples: int = 0
    notes: list[str] = field(default_factory=list)
    n_sequences: int | None = None
    cv_scheme: str | None = None
    #: The warnings the fits gave, each once: ``(category, message, labels of the fits)``.
    fit_warnings: list[tuple[type[Warning], str, list[str]]] = field(default_factory=list)

    def best_index(self, criterion: str | None = None) -> int | None:
        """Index of the best row: lowest BIC/AIC/ICL, highest held-out log-likelihood."""
        crit = _canonical(criterion or self.criterion)
        vals = np.array(
            [math.nan if r.get(crit) is None else r[crit] for r in self.rows], dtype=float
        )
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
        crit = _canonical(criterion or self.criterion)
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
        w = max([22] + [len(r["label"]) + 2 for r in self.rows])
        head = f"{'model':<{w}}{'logLik':>12}{'params':>8}{'BIC':>12}{'AIC':>12}{'ICL':>12}"
        has_cv = any(r.get("cv_loglik") is not None for r in self.rows)
        if has_cv:
            head += f"{'heldout':>10}"
        lines = [head]
        numbers = {(i, what): n for n, (i, what, _) in enumerate(_failures(self.rows), 1)}
        for i, r in enumerate(self.rows):
            if r["error"]:
                said = _row_error(r["error"], numbers[i, "failed"])
                lines.append(f"{r['label']:<{w}}  failed {said}")
                continue
            if r.get("degenerate"):
                lines.append(
                    f"{r['label']:<{w}}{r['loglik']:>12.2f}{r['n_parameters']:>8d}  NA: "
                    f"degenerate component(s) {r['degenerate']}"
                )
                continue
            line = f"{r['label']:<{w}}{r['loglik']:>12.2f}{r['n_parameters']:>8d}"
            for c in ("bic", "aic", "icl"):
                v = r[c]
                line += f"{v:>12.2f}" if v is not None and math.isfinite(v) else f"{'NA':>12}"
            if has_cv:
                v = r.get("cv_loglik")
                line += f"{v:>10.4f}" if v is not None and math.isfinite(v) else f"{'NA':>10}"
            if not r["converged"]:
                line += "  (not converged)"
            if r.get("cv_error"):
                said = _row_error(r["cv_error"], numbers[i, "held-out failed"])
                line += f"  (held-out failed {said})"
            lines.append(line)
        for crit in ("bic", "aic", "icl") + (("cv_loglik",) if has_cv else ()):
            i = self.best_index(crit)
            if i is not None:
                lines.append(f"best by {crit.upper()}: {self.rows[i]['label']}")
        return "\n".join(lines + self.notes + _failure_notes(self.rows))

    def __repr__(self) -> str:
        crit = _canonical(self.criterion)
        best = self.best_index()
        where = f"{self.n_samples} rows"
        if self.n_sequences is not None:
            where += f" in {self.n_sequences} sequence(s)"
        chosen = "none (every fit failed)" if best is None else self.rows[best]["label"]
        lines = [
            f"SelectionResult: {len(self.rows)} candidates on {where}; "
            f"best by {crit.upper()}: {chosen}"
        ]
        crits = ["bic", "aic", "icl"] + (
            ["cv_loglik"] if any(r.get("cv_loglik") is not None for r in self.rows) else []
        )
        names = {"bic": "BIC", "aic": "AIC", "icl": "ICL", "cv_loglik": "heldout"}
        width = max([5] + [len(r["label"]) for r in self.rows]) + 2
        lines.append(
            f"{'model':<{width}}{'K':>3}{'logLik':>12}{'params':>8}"
            + "".join(f"{names[c]:>12}" for c in crits)
        )
        numbers = {(i, what): n for n, (i, what, _) in enumerate(_failures(self.rows), 1)}
        for i, r in enumerate(self.rows):
            ll = f"{r['loglik']:>12.2f}" if _finite(r.get("loglik")) else f"{'NA':>12}"
            line = f"{r['label']:<{width}}{r['n_components']:>3}{ll}{r['n_parameters']:>8d}"
            for c in crits:
                v = r.get(c)
                text = f"{v:.2f}" if _finite(v) else "NA"
                line += f"{text + ('*' if i == best and c == crit else ' '):>12}"
            if r.get("error"):
                line += f"  failed {_row_error(r['error'], numbers[i, 'failed'])}"
            if r.get("cv_error"):
                said = _row_error(r["cv_error"], numbers[i, "held-out failed"])
                line += f"  (held-out failed {said})"
            lines.append(line)
        return "\n".join(lines + _failure_notes(self.rows))

    def to_dict(self) -> dict:
        """Plain numbers for JSON: the settings, the best label by each criterion and one
        dict per candidate (the :data:`COLUMNS`); NaN where a criterion is not available."""
        best = self.best_index()
        crits = [c for c in CRITERIA if any(_finite(r.get(c)) for r in self.rows)]
        out_rows = []
        for i, r in enumerate(self.rows):
            row = {}
            for c in COLUMNS[:-1]:
                v = r.get(c)
                if isinstance(v, (np.floating, np.integer, np.bool_)):
                    v = v.item()
                if c in ("degenerate", "warnings"):
                    v = [x.item() if hasattr(x, "item") else x for x in (v or [])]
                row[c] = v
            if r.get("cv_error"):
                row["cv_error"] = r["cv_error"]
            row["best"] = i == best
            out_rows.append(row)
        by = {c: self.rows[j]["label"] for c in crits if (j := self.best_index(c)) is not None}
        return {
            "criterion": _canonical(self.criterion),
            "n_samples": self.n_samples,
            "n_sequences": self.n_sequences,
            "cv": self.cv_scheme,
            "best_index": best,
            "best": None if best is None else self.rows[best]["label"],
            "best_by": by,
            "rows": out_rows,
            "notes": list(self.notes),
        }

    def to_frame(self):
        """A pandas DataFrame, one row per candidate, the columns of :data:`COLUMNS`."""
        import pandas as pd

        return pd.DataFrame(self.to_dict()["rows"], columns=list(COLUMNS))

    def plot(self, criterion: str | None = None, ax=None):
        """Criterion over K, one line per variant (covariance type), the best point circled."""
        import matplotlib.pyplot as plt

        crit = _canonical(criterion or self.criterion)
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
        what = "states" if self.n_sequences is not None else "components"
        ax.set_xlabel(f"number of {what} K")
        ax.set_ylabel(crit.upper() + (" (higher is better)" if crit == "cv_loglik" else ""))
        ax.legend()
        return fig


def _criteria(model, X: torch.Tensor) -> dict:
    n = X.shape[0]
    loglik = float(np.sum(model.score_samples(X)))
    p = n_free_parameters(model)
    bic = -2 * loglik + p * math.log(n)
    icl = None
    if hasattr(model, "predict_proba"):
        resp = torch.as_tensor(model.predict_proba(X)).clamp_min(1e-300)
        icl = bic - 2 * float(resp.max(1).values.log().sum())
    return {"loglik": loglik, "n_parameters": p, "bic": bic, "aic": -2 * loglik + 2 * p, "icl": icl}


def _sequence_criteria(model, X: torch.Tensor, lengths: list[int]) -> dict:
    """BIC/AIC from ``score(X, lengths)``; ICL from the most probable path when the model can
    ``decode``: log p(ẑ | X) = log p(X, ẑ) − log p(X)."""
    n = X.shape[0]
    loglik = float(model.score(X, lengths))
    p = n_free_parameters(model)
    bic = -2 * loglik + p * math.log(n)
    icl = None
    decode = getattr(model, "decode", None)
    if callable(decode):
        # the most probable path, whatever decoder the model was built with
        viterbi = (
            {"algorithm": "viterbi"} if "algorithm" in inspect.signature(decode).parameters else {}
        )
        path_logprob = float(decode(X, lengths, **viterbi)[0])
        icl = bic - 2 * (path_logprob - loglik)
    return {"loglik": loglik, "n_parameters": p, "bic": bic, "aic": -2 * loglik + 2 * p, "icl": icl}


def _check_not_models(lengths) -> None:
    """ArgumentError when select_model's second argument, ``lengths``, holds what
    ``family=`` or ``candidates=`` take (a family name or class, estimators): a call written
    ``select_model(X, [GaussianMixture(2), ...])`` was refused as lengths "of dtype object"."""
    items = list(lengths) if isinstance(lengths, list | tuple) else [lengths]
    models = [
        c
        for c in items
        if isinstance(c, str | type) or hasattr(c[-1] if isinstance(c, tuple) else c, "fit")
    ]
    if lengths is None or not models:
        return
    what = "a family" if isinstance(models[0], str | type) else "models"
    raise ArgumentError(
        f"select_model() got {what} ({models[0]!r:.60}) as its second argument, lengths (the "
        "rows of each sequence): it takes select_model(X, lengths=None, *, family=..., "
        "candidates=...); pass a family as family=..., e.g. select_model(X, family='gmm'), and "
        "estimators as candidates=[...], e.g. select_model(X, candidates=[GaussianMixture(2)])"
    )


def _unidentified(model, p: int, X: torch.Tensor, lengths: list[int] | None = None) -> str | None:
    """Why the fitted ``model`` of ``p`` parameters is not ranked: a model of Gaussian
    densities (GaussianMixture; the HMMs and HSMM with Gaussian or autoregressive emissions)
    that estimates no fewer parameters than ``X`` holds observed values (None when it is
    ranked). Its components or states can then pass through every point (tied covariances
    are not flagged as degenerate for it): the likelihood is the variance floor's, growing
    without bound as the floor shrinks, and its BIC beats every real fit. LinearGaussianSSM
    refuses such data in fit; a mixture's or an HMM's fit stands (as scikit-learn's and
    hmmlearn's), only its ranking is refused. An autoregressive HMM scores the rows after the
    first ``order`` of each sequence: only their values count."""
    from latentfit.em.hmm.gaussian import _ContinuousHMM
    from latentfit.em.hmm.variational import _VariationalHMM
    from latentfit.em.mixture.gmm import GaussianMixture

    if isinstance(model, GaussianMixture):
        parts, floor = "components", "reg_covar"
    elif isinstance(model, _ContinuousHMM) and not isinstance(model, _VariationalHMM):
        # (a variational HMM's priors keep its variances off zero)
        parts, floor = "states", "min_covar"
    else:
        return None
    n, d = X.shape
    lags = int(getattr(model, "order", 0)) * len(lengths or [n])
    observed = int(torch.isfinite(X).sum()) - min(lags, n) * d
    if observed > p:
        return None
    k = model.n_components
    variant = getattr(model, "covariance_type", None)
    setting = f" (covariance_type={variant!r})" if variant is not None else ""
    counted = f" after the first {int(model.order)} of each sequence" if lags else ""
    return (
        f"X has {n} row(s) of {d} column(s), {observed} observed value(s){counted}, no more "
        f"than the {p} parameters {type(model).__name__} with n_components={k}{setting} "
        f"estimates: its {parts} can pass through every point, so its likelihood is "
        f"{floor}'s, not the data's, and its BIC would beat every real fit; give at least "
        f"{n + (p - observed) // d + 1} rows, or try fewer components"
    )


class _UnseenOutcome(DataError):
    """A held-out outcome that the training folds never show: select_model raises it for the
    whole sweep, as it is the data's and the folds', not one candidate's."""


def _heldout(est, X: torch.Tensor, folds: list[Fold], sequence: bool) -> float:
    """Mean held-out log-likelihood per row: each fold's model fitted on its training rows (and
    sequences) scores the held-out ones; every row is held out once."""
    total = 0.0
    for f, fold in enumerate(folds):
        train, test = X[torch.as_tensor(fold.train)], X[torch.as_tensor(fold.test)]
        if sequence:
            m = clone(est).fit(train, fold.train_lengths)
            _check_seen(m, test, fold, f, len(folds))
            total += float(m.score(test, fold.test_lengths))
        else:
            m = clone(est).fit(train)
            _check_seen(m, test, fold, f, len(folds))
            total += float(np.sum(m.score_samples(test)))
    return total / X.shape[0]


def _check_seen(model, test: torch.Tensor, fold: Fold, f: int, n_folds: int) -> None:
    """_UnseenOutcome (a DataError) when a held-out row of fold ``f`` holds an outcome (a code
    of a column, a count where every rate is 0) to which the model fitted on the other folds
    gives probability 0 in every component: a discrete model's maximum-likelihood estimate
    for an outcome those folds never show. Its held-out log-likelihood would be -inf (or,
    clamped, an arbitrary -708 nats) whichever candidate, so no candidate can be ranked by it."""
    find = getattr(model, "_impossible_outcomes", None)
    never = None if find is None else find(test)  # (n_test, d)
    if never is None or not bool(never.any()):
        return
    i, j = (int(v) for v in never.nonzero()[0])
    hint = getattr(model, "_prior_hint", None)
    prior = (
        f", or give the models a prior that keeps every outcome possible ({hint})" if hint else ""
    )
    raise _UnseenOutcome(
        f"held-out fold {f + 1} of {n_folds}: row {int(fold.test[i])} of X holds "
        f"{test[i, j].item():g} in column {j}, an outcome the other folds never show, so the "
        f"{type(model).__name__} fitted on them gives it probability 0 and the held-out "
        f"log-likelihood is -inf for every candidate. Rank by an in-sample criterion "
        f"(criterion='bic', 'aic' or 'icl'), or merge the rare values of column {j} into a "
        f"common one{prior}"
    )


_FIT_ERRORS = (ValueError, FloatingPointError, RuntimeError, torch.linalg.LinAlgError)
#: Most sizes one sweep may name: each is at least one fit, so more is a typo, not a sweep
#: (the command line's ``-k`` has the same cap).
MAX_SIZES = 1000


def _check_arguments(n_components, covariance_types, candidates, callback) -> Sequence[int]:
    """Refuse, before any fit, what select_model cannot sweep: a string or a single number
    where a list is wanted (a string would be swept one character at a time), sizes that are
    not integers >= 1, more than :data:`MAX_SIZES` sizes, candidates that are not estimators,
    a callback that cannot be called. Returns the sizes as a sequence (a generator read once,
    a range kept as it is: its length is known without listing it)."""
    for name, value in (("n_components", n_components), ("covariance_types", covariance_types)):
        example = "[3] or range(1, 10)" if name == "n_components" else "['full', 'diag']"
        if value is None and name == "covariance_types":
            continue
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ParameterError(
                f"{name} must be a list, got {type(value).__name__} {value!r:.60}; "
                f"e.g. {name}={example}"
            )
    if not isinstance(n_components, Sequence):  # a generator or a set: read once, in order
        n_components = list(itertools.islice(n_components, MAX_SIZES + 1))
    try:
        count = len(n_components)
    except OverflowError:  # a range longer than the platform's size type, range(1, 10**20)
        count = math.inf
    if count > MAX_SIZES:
        raise ParameterError(
            f"n_components names {'over 2**63' if count == math.inf else f'{count:,}'} sizes; "
            f"sweep at most {MAX_SIZES} (each is at least "
            "one fit), e.g. n_components=range(1, 21)"
        )
    for k in n_components:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ParameterError(
                f"n_components must hold integers >= 1, got {k!r:.60}; e.g. "
                "n_components=range(1, 10)"
            )
    for v in covariance_types or ():
        if not isinstance(v, str):
            raise ParameterError(f"covariance_types must hold names such as 'full', got {v!r:.60}")
    if candidates is not None:
        if isinstance(candidates, str | bytes) or not isinstance(candidates, Iterable):
            raise ParameterError(
                f"candidates must be a list of unfitted estimators or (label, estimator) "
                f"pairs, got {type(candidates).__name__} {candidates!r:.60}"
            )
    if callback is not None and not callable(callback):
        raise ParameterError(
            f"callback must be callable as callback(i, n_candidates, row), got "
            f"{type(callback).__name__} {callback!r:.60}"
        )
    return n_components


def _candidate(c) -> tuple[str | None, Any]:
    """(label, estimator) of one entry of ``candidates``, refusing what is not an estimator
    (something scikit-learn's ``clone`` can copy and that can be fitted)."""
    label, est = c if isinstance(c, tuple) and len(c) == 2 else (None, c)
    if label is not None and not isinstance(label, str):
        raise ParameterError(f"a candidate's label must be a string, got {label!r:.60}")
    if not (callable(getattr(est, "fit", None)) and callable(getattr(est, "get_params", None))):
        raise ParameterError(
            f"candidates must hold unfitted estimators (objects with fit and get_params, e.g. "
            f"GaussianMixture(3)) or (label, estimator) pairs; got {type(est).__name__} "
            f"{est!r:.60}"
        )
    return label, est


def _every_fit_refused(rows: list[dict], errors: list[Exception]) -> Exception | None:
    """The error to raise when no candidate could be fitted because each fit refused its
    settings or the data (a ParameterError or DataError, e.g. max_iter=-1 or NaN in X), or
    was refused for its size before it started (a ResourceLimitError: an SSM of 10**6
    states): the first one, as the model raises it on its own. ``errors`` holds the errors raised by the
    fits themselves; a sweep in which some fits fail, or fail numerically (a collapsed
    component), stays a result whose failed rows say why."""
    if not rows or len(errors) != len(rows):
        return None
    if all(isinstance(e, ParameterError | DataError | ResourceLimitError) for e in errors):
        return errors[0]
    return None


def _describe(err: Exception) -> str:
    """A failed fit's error in full, on one line (its remedy comes last: nothing is cut; the
    tables show its start and the whole below them)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def select_model(
    X,
    lengths=None,
    *,
    family="gmm",
    n_components: Sequence[int] = range(1, 10),
    covariance_types: Sequence[str] | None = None,
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
    lengths : for sequence models, the number of rows of each sequence in X, in order (None:
        one sequence). Held-out folds are then made of whole sequences (see the module doc).
    family : ``"gmm"`` (sweeps ``covariance_types``), ``"bernoulli"``, ``"categorical"``,
        ``"multinomial"``, ``"poisson"``, ``"fa"``, ``"ppca"`` (the latent dimension is swept),
        a :class:`~latentfit.em.mixture.families.MixtureModel` family name; the hidden Markov
        models ``"gaussian_hmm"`` (sweeps ``covariance_types``), ``"gmm_hmm"`` (likewise; pass
        ``n_mix``), ``"poisson_hmm"``, ``"categorical_hmm"``; or any estimator class (or
        factory) called as ``family(n_components=K, **model_kwargs)`` — a new sequence model
        plugs in this way, through its own ``fit``/``score``/parameter count.
    n_components : the sizes (components, states) to try.
    covariance_types : the covariance types to sweep (default: all four, for the families that
        have them; for an estimator class, none unless given).
    candidates : instead of a sweep, any list of unfitted estimators (or ``(label,
        estimator)`` pairs); a mixture needs ``fit``, ``score_samples`` and ``_n_parameters``,
        a sequence model ``fit(X, lengths)``, ``score(X, lengths)`` and a parameter count.
    criterion : which criterion picks ``best_model_`` (``"bic"``, ``"aic"``, ``"icl"`` or,
        with ``cv``, ``"cv_loglik"``, also called ``"heldout"``).
    cv : number of folds for the held-out log-likelihood (None: not computed).
    random_state : the seed of every fit of the sweep and of the folds: an int from 0 to
        2**32 - 1 (the same result on every run), None (fresh randomness), or a numpy
        RandomState or Generator or a torch.Generator (one seed drawn from it: it advances).
    model_kwargs : passed to every estimator of the sweep (``n_init``, ``max_iter``,
        ``n_iter`` for HMMs, ...).
    callback : called as ``callback(i, n_candidates, row)`` after each fit (progress bars).
    """
    n_components = _check_arguments(n_components, covariance_types, candidates, callback)
    if random_state is not None:  # one seed for every fit and the folds: an instance advances
        random_state = draw_seed(random_state)
    criterion = _canonical(criterion)
    if criterion not in CRITERIA:
        raise ParameterError(
            f"criterion must be one of {CRITERIA} (or 'heldout'), got {criterion!r}"
        )
    if criterion == "cv_loglik" and not cv:
        raise ParameterError(f"criterion={criterion!r} needs cv=K folds (e.g. cv=5)")
    if cv is not None:
        if isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2:
            raise ParameterError(f"cv must be an integer >= 2 (number of folds), got {cv!r}")
        cv = int(cv)  # a numpy integer (len(groups) // 2...) is a count too
    # Checked here (NaN kept: models with missing="marginalize" take it; each model checks
    # the rest), so that strings or ragged rows are a DataError naming the row, not numpy's.
    Xt = X if isinstance(X, torch.Tensor) else as_float_tensor(X, allow_nan=True)
    n = int(Xt.shape[0])
    _check_not_models(lengths)
    seq_lengths = None if lengths is None else check_lengths(lengths, n)
    if candidates is None:
        if _takes(family, "random_state"):
            model_kwargs.setdefault("random_state", random_state)
        if family == "categorical" and "n_categories" not in model_kwargs:
            # Fixed from the whole data set, so a cross-validation fold that misses a rare
            # category can still score it.
            top = _dense_codes(Xt, "n_categories")
            model_kwargs["n_categories"] = (top + 1).clamp_min(1).tolist()
        if family == "categorical_hmm" and "n_features" not in model_kwargs:
            # The same for the symbols of a categorical HMM (one column of symbols).
            model_kwargs["n_features"] = int(_dense_codes(Xt, "n_features").max()) + 1
        entries = make_candidates(family, n_components, covariance_types, **model_kwargs)
    else:
        entries = []
        for c in candidates:
            label, est = _candidate(c)
            k = getattr(est, "n_components", None) or 0
            variant = getattr(est, "covariance_type", None) or type(est).__name__
            entries.append((label or f"{type(est).__name__} K={k}", est, k, variant))
    if not entries:
        raise ParameterError(
            "nothing to fit: n_components, covariance_types or candidates is empty; name at "
            "least one size (and covariance type)"
        )
    sequential = [is_sequence_model(est) for _, est, _, _ in entries]
    if criterion == "icl":  # its entropy term needs classes: without, every ICL would be NA
        for (label, est, _, _), seq in zip(entries, sequential, strict=True):
            if not callable(getattr(est, "decode" if seq else "predict_proba", None)):
                raise ParameterError(
                    f"criterion='icl' needs a model of discrete latent classes (the entropy of "
                    f"its {'state paths' if seq else 'assignments'}), but {label} "
                    f"({type(est).__name__}) has none; rank it by 'bic' or 'aic'"
                )
    any_sequence = seq_lengths is not None or any(sequential)
    if any_sequence and seq_lengths is None:
        seq_lengths = [n]
    folds, scheme = None, None
    if cv:
        if any_sequence:
            folds, scheme = sequence_folds(seq_lengths, cv, random_state)
        else:
            folds, scheme = _row_folds(n, cv, random_state), f"{cv} folds of rows (shuffled)"
    rows, models, errors = [], [], []
    said: dict[tuple[type[Warning], str], list[str]] = {}  # each warning: the fits that gave it
    # Ctrl-C at the command line (latentfit._interrupt) stops the running fit at an iteration's
    # end: that candidate is shown stopped, the rest are not fitted, and the table is of those
    # before it
    stopped = None
    # from Python, a first Ctrl-C likewise ends the sweep with the table of the fits before it
    with (
        keeping_fit_on_ctrl_c("select_model", raising=False) as pressed,
        stoppable("EM iteration", "the fits before it (this one shown stopped)"),
    ):
        for i, (label, est, k, variant) in enumerate(entries):
            row = {"label": label, "n_components": k, "variant": variant, "error": None}
            row["degenerate"] = []
            row.update(loglik=math.nan, n_parameters=0, bic=math.nan, aic=math.nan, icl=math.nan)
            row["cv_loglik"] = math.nan if cv else None
            row["converged"] = False
            model = None
            caught = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if sequential[i]:
                        model = clone(est).fit(Xt, seq_lengths)
                        row.update(_sequence_criteria(model, Xt, seq_lengths))
                    else:
                        model = clone(est).fit(Xt)
                        row.update(_criteria(model, Xt))
                    unidentified = _unidentified(
                        model, row["n_parameters"], Xt, seq_lengths if sequential[i] else None
                    )
                    if unidentified:  # refused, as a fit that refuses the data
                        model = None
                        raise DataError(unidentified)
                    if cv:
                        try:
                            row["cv_loglik"] = _heldout(est, Xt, folds, sequential[i])
                        except _UnseenOutcome:
                            raise
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
            except _UnseenOutcome as err:
                raise DataError(str(err)) from None
            except _FIT_ERRORS as err:
                row["error"] = _describe(err)
                if model is None:  # the fit itself refused (not the scoring of a fitted model)
                    errors.append(err)
                    row.update(bic=math.nan, aic=math.nan, icl=math.nan)
                model = None
            if stop_requested():  # Ctrl-C ended this fit (or its folds) early: no candidate
                stopped = (i, len(entries), label)
                row.update(
                    error=f"stopped by {stopped_by()} before this fit ended", converged=False
                )
                row.update(bic=math.nan, aic=math.nan, icl=math.nan)
                row["cv_loglik"] = math.nan if cv else None
                model = None
            for w in caught:
                labels = said.setdefault((w.category, str(w.message)), [])
                if label not in labels:
                    labels.append(label)
            rows.append(row)
            models.append(model)
            if callback is not None:
                callback(i, len(entries), row)
            if stopped is not None:
                break
    refused = _every_fit_refused(rows, errors)
    if refused is not None:
        raise refused
    result = SelectionResult(
        rows,
        models,
        criterion,
        n,
        n_sequences=len(seq_lengths) if any_sequence else None,
        cv_scheme=scheme,
        fit_warnings=[(c, text, labels) for (c, text), labels in said.items()],
    )
    if scheme is not None:
        result.notes.append(f"held-out log-likelihood per row: {scheme}")
    failed = sum(r["error"] is not None for r in rows) - (stopped is not None)
    if stopped is not None:
        i, total, label = stopped
        result.notes.append(
            f"stopped by {stopped_by()} during fit {i + 1} of {total} ({label}), shown as NA; "
            + (f"the {total - i - 1} after it were not fitted" if total > i + 1 else "the last")
        )
        if pressed.stopped:  # from Python: the table is the result, so it is returned
            warnings.warn(
                f"select_model: {result.notes[-1]}; the result holds the fits before it",
                UserWarning,
                stacklevel=2,
            )
    if failed:
        result.notes.append(f"{failed} of {len(rows)} fits failed and are shown as NA")
    degenerate = sum(bool(r.get("degenerate")) for r in rows)
    if degenerate:
        result.notes.append(
            f"{degenerate} of {len(rows)} fits have a degenerate component (variance at the "
            "regularisation floor on tied points) and are shown as NA"
        )
    return result


def _dense_codes(X: torch.Tensor, option: str) -> torch.Tensor:
    """The largest code of every column (d,), where the codes are dense as the models require
    when they infer their categories: the sweep fixes the count from the whole data set, so it
    checks what each model would have checked, before sizing every candidate by a stray value
    (one code of 3,000,000 in 60 rows: 12 GB)."""
    finite = torch.nan_to_num(X, nan=0.0)
    if finite.numel() == 0:
        return torch.zeros(X.shape[1:], dtype=torch.long)
    return dense_codes(finite, sized="every candidate", option=option)
