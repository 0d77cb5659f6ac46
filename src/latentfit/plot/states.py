"""An HMM's hidden states over a series."""

from __future__ import annotations

import numpy as np

from latentfit.errors import DataError, ParameterError
from latentfit.plot._axes import as_numpy, require

__all__ = ["plot_states"]


def plot_states(
    model,
    X,
    lengths=None,
    *,
    states=None,
    algorithm: str | None = None,
    features=None,
    colors=None,
    state_names=None,
    ax=None,
):
    """Each feature of the series against time, every step coloured by its hidden state.

    ``states`` defaults to ``model.decode(X, lengths, algorithm=algorithm)`` (the Viterbi
    path unless ``algorithm="map"``); ``features`` picks the columns drawn (default: all, one
    panel each; sequence boundaries of ``lengths`` are dotted lines). ``ax`` is one Axes per
    drawn feature (a single Axes for one); ``colors`` and ``state_names`` (the legend) hold one
    entry per state. Returns an array of the Axes, one per feature.
    """
    require(model, "transmat_", "plot_states")
    Xn = as_numpy(X)
    if Xn.ndim == 1:
        Xn = Xn[:, None]
    if Xn.ndim != 2:
        raise DataError(f"X must be a series of shape (t, d); got shape {tuple(Xn.shape)}")
    t, d = Xn.shape
    if states is None:
        states = model.decode(X, lengths, algorithm=algorithm)[1]
    states = np.asarray(as_numpy(states)).astype(int).reshape(-1)
    if len(states) != t:
        raise DataError(f"states has {len(states)} entries for the {t} rows of X")
    cols = list(range(d)) if features is None else [int(j) for j in np.atleast_1d(features)]
    if not cols or any(not 0 <= j < d for j in cols):
        raise ParameterError(f"features must name columns among 0..{d - 1}; got {features!r}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(len(cols), 1, figsize=(10, 2.6 * len(cols) + 0.6), sharex=True)
    else:
        axes = ax
    axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
    if len(axes) != len(cols):
        raise ParameterError(f"ax must hold one Axes per drawn feature ({len(cols)})")
    k = int(model.n_components)
    if states.min(initial=0) < 0 or states.max(initial=0) >= k:
        raise DataError(f"states must lie in 0..{k - 1} (the model's {k} states)")
    if colors is None:
        from matplotlib import colormaps

        colors = colormaps["viridis"](np.linspace(0.1, 0.85, k))
    names = getattr(model, "feature_names_in_", None)
    steps = np.arange(t)
    bounds = np.cumsum(lengths)[:-1] if lengths is not None and len(lengths) > 1 else []
    for a, col in zip(axes, cols, strict=True):
        a.plot(steps, Xn[:, col], color="0.75", lw=0.8, zorder=1)
        for s in range(k):
            sel = states == s
            if sel.any():
                label = f"state {s}" if state_names is None else state_names[s]
                a.scatter(steps[sel], Xn[sel, col], s=12, color=colors[s], zorder=2, label=label)
        for b in bounds:
            a.axvline(b - 0.5, color="0.4", ls=":", lw=0.8)
        a.set_ylabel(str(names[col]) if names is not None else f"feature {col}")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time step")
    return axes
