"""Posterior draws: the trace of every parameter per chain, and parameters against each other."""

from __future__ import annotations

import itertools
import re

import numpy as np

from latentfit.errors import ParameterError
from latentfit.plot._axes import as_numpy

__all__ = ["plot_pair", "plot_trace", "posterior_draws"]

_GIBBS_STATE = ("labels", "co_assignment")  # a Gibbs result's last state, not draws


def posterior_draws(result) -> dict[str, np.ndarray]:
    """Draws as ``{name: (chains, draws, *shape)}`` from an MCMCResult (``draws``), a Gibbs
    result (its fields but the last sweep's labels), an SVGD result (the particles, as one
    chain) or a dict of such arrays."""
    if hasattr(result, "particles"):
        return {k: as_numpy(v)[None] for k, v in result.particles.items()}
    if hasattr(result, "draws") and isinstance(result.draws, dict):
        source = result.draws
    elif hasattr(result, "_asdict"):
        source = {k: v for k, v in result._asdict().items() if k not in _GIBBS_STATE}
    elif isinstance(result, dict):
        source = result
    else:
        raise ParameterError(
            f"expected an MCMCResult, a Gibbs or SVGD result or a dict of draws (chains, draws, "
            f"...); got {type(result).__name__}"
        )
    out = {}
    for k, v in source.items():
        a = as_numpy(v).astype(float)
        if a.ndim < 2:
            raise ParameterError(
                f"draws of {k!r} must have shape (chains, draws, ...); got {tuple(a.shape)}"
            )
        out[k] = a
    return out


def _scalars(draws: dict, var_names) -> list[tuple[str, np.ndarray]]:
    """(label, (chains, draws)) for every scalar coordinate of the named parameters; a name
    may carry an index, ``"means[1,0]"``, or its first numbers, ``"means[1]"``."""
    names = list(draws) if var_names is None else list(np.atleast_1d(var_names))
    out = []
    for name in names:
        m = re.fullmatch(r"\s*([^\[\]]+?)\s*(?:\[([\d,\s]+)\])?\s*", str(name))
        base = m.group(1) if m else str(name)
        if base not in draws:
            raise ParameterError(f"no parameter {base!r} in the draws; they hold {list(draws)}")
        a = draws[base]
        shape = a.shape[2:]
        idx = tuple(int(i) for i in m.group(2).split(",")) if m and m.group(2) else ()
        if len(idx) > len(shape) or any(not 0 <= i < s for i, s in zip(idx, shape, strict=False)):
            raise ParameterError(
                f"{str(name)!r}: {base} has shape {tuple(shape)} per draw; index it with at "
                f"most {len(shape)} numbers within it"
            )
        for rest in itertools.product(*(range(s) for s in shape[len(idx) :])):
            full = idx + rest
            label = f"{base}[{','.join(map(str, full))}]" if full else base
            out.append((label, a[(slice(None), slice(None), *full)]))
    return out


def plot_trace(result, var_names=None, *, axes=None, max_panels: int = 40):
    """For every scalar parameter, a row of two panels: the density of its draws (one
    histogram per chain) and its trace (one line per chain). Returns the (m, 2) array of Axes.

    ``var_names``: parameters to draw, by name (every coordinate) or with an index
    (``"means[1,0]"``); default all, at most ``max_panels`` rows.
    """
    scalars = _scalars(posterior_draws(result), var_names)
    if len(scalars) > max_panels:
        raise ParameterError(
            f"{len(scalars)} scalar parameters to draw, more than max_panels={max_panels}: "
            "choose some with var_names (e.g. ['means[0,1]']) or raise max_panels"
        )
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(
            len(scalars),
            2,
            figsize=(10, 1.9 * len(scalars) + 0.4),
            squeeze=False,
            gridspec_kw={"width_ratios": [1, 2.2]},
        )
    axes = np.asarray(axes, dtype=object).reshape(len(scalars), 2)
    for (label, a), (left, right) in zip(scalars, axes, strict=True):
        for c in range(a.shape[0]):
            color = f"C{c % 10}"
            left.hist(a[c], bins=30, density=True, histtype="step", color=color)
            right.plot(np.arange(a.shape[1]), a[c], lw=0.6, color=color, label=f"chain {c}")
        left.set_ylabel(label)
        right.set_xlabel("draw")
    return axes


def plot_pair(result, var_names=None, *, ax=None, **scatter_kws):
    """Draws of the named scalar parameters against each other, chains pooled.

    Two scalars: one scatter (first on x) in ``ax``; more: a lower-triangular grid of scatters
    with each parameter's histogram on the diagonal. Returns the Axes (an (m, m) array for a
    grid).
    """
    scalars = _scalars(posterior_draws(result), var_names)
    if len(scalars) < 2:
        raise ParameterError(
            f"plot_pair needs at least two scalar parameters; var_names gives {len(scalars)}"
        )
    kw = {"s": 3, "alpha": 0.4, **scatter_kws}
    if len(scalars) == 2:
        from latentfit.plot._axes import new_axes

        ax = new_axes(ax, figsize=(5, 4.5))
        (xl, x), (yl, y) = scalars
        ax.scatter(x.ravel(), y.ravel(), **kw)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        return ax
    m = len(scalars)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(m, m, figsize=(2.2 * m, 2.2 * m), squeeze=False)
    grid = np.asarray(ax, dtype=object).reshape(m, m)
    for i, j in itertools.product(range(m), range(m)):
        a = grid[i, j]
        if i == j:
            a.hist(scalars[i][1].ravel(), bins=30, density=True, color="0.6")
        elif i > j:
            a.scatter(scalars[j][1].ravel(), scalars[i][1].ravel(), **kw)
        else:
            a.set_axis_off()
        if i == m - 1:
            a.set_xlabel(scalars[j][0])
        if j == 0 and i > 0:
            a.set_ylabel(scalars[i][0])
    return grid
