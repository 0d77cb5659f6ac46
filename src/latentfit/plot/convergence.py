"""The bound at every iteration: EM and CAVI restarts, or a training run's epochs."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from latentfit.errors import ParameterError
from latentfit.plot._axes import new_axes

__all__ = ["plot_convergence"]


def _training_history(obj):
    """A training run's rows (dicts with ``epoch``, ``train_bound``, ``val_bound``): the
    ``history`` of :func:`latentfit.train.train`'s result or a fitted flow's ``history_``."""
    rows = obj if isinstance(obj, list) else getattr(obj, "history", None)
    if rows is None:
        rows = getattr(obj, "history_", None)
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return rows
    return None


def plot_convergence(model, *, ax=None, logx: bool = False):
    """The lower bound per iteration for each restart, the kept restart in black.

    ``model`` is a fitted EM estimator (``all_lower_bounds_``: one list per restart, or
    ``lower_bounds_`` for a single run: the mean log-likelihood per sample for mixtures and
    factor models, the total log-likelihood for HMMs), a BayesianGaussianMixture (its bound is
    drawn as the ELBO in nats, as ``elbos_``), or a training run — the result of
    :func:`latentfit.train.train`, a fitted flow or DDPM — whose ``train_bound`` and
    ``val_bound`` per epoch are drawn, or a sequence of bound values (the ELBO per step that
    :func:`latentfit.vi.svi.svi` returns). Returns the Axes.
    """
    rows = _training_history(model)
    if rows is not None:  # a training run, or its rows (a list of dicts)
        ax = new_axes(ax, figsize=(6, 3.6))
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
        for key, label in (("train_bound", "training"), ("val_bound", "validation")):
            values = [r.get(key) for r in rows]
            if any(v is not None for v in values):
                y = [np.nan if v is None else float(v) for v in values]
                ax.plot(epochs, y, marker=".", label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("bound per data point (nats)")
        ax.legend(fontsize=8)
        return ax
    if isinstance(model, (list, tuple, np.ndarray)) and np.ndim(model) == 1:
        if not len(model):
            raise ParameterError("plot_convergence got an empty sequence of bound values")
        runs = [np.asarray(model, dtype=float)]  # a bound per step, e.g. from latentfit.vi.svi
    else:
        runs = getattr(model, "all_lower_bounds_", None)
    if runs is None or not len(runs):
        single = getattr(model, "lower_bounds_", None)
        if single is None:
            raise ParameterError(
                f"plot_convergence needs a fitted EM estimator (all_lower_bounds_ or "
                f"lower_bounds_) or a training run (history); {type(model).__name__} has "
                "neither: fit it first"
            )
        runs = [single]
    shift, ylabel = 0.0, "lower bound"
    if hasattr(model, "elbo_") and hasattr(model, "lower_bound_"):
        shift, ylabel = float(model.elbo_) - float(model.lower_bound_), "ELBO (nats)"
    elif hasattr(model, "transmat_"):
        ylabel = "log-likelihood"
    elif type(model).__name__.endswith(("Mixture", "Analysis", "PPCA", "MixtureModel")):
        ylabel = "log-likelihood per sample"
    best = getattr(model, "best_init_", len(runs) - 1 if len(runs) == 1 else None)
    ax = new_axes(ax, figsize=(6, 3.6))
    for i, bounds in enumerate(runs):
        kept = i == best
        ax.plot(
            np.arange(1, len(bounds) + 1),
            np.asarray(bounds, dtype=float) + shift,
            lw=2 if kept else 1,
            color="black" if kept else None,
            label=f"restart {i + 1}" + (" (kept)" if kept else ""),
        )
    if logx:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if not isinstance(model, (list, tuple, np.ndarray)):
        ax.set_title(f"{type(model).__name__}: bound per iteration")
    ax.legend(fontsize=7)
    return ax
