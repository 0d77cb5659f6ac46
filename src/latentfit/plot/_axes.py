"""What every plot function shares: the Axes to draw on, and a check that a model is fitted."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.exceptions import NotFittedError


def new_axes(ax=None, **subplots_kw):
    """``ax`` when given, else a new figure's Axes from ``pyplot.subplots(**subplots_kw)``."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(**subplots_kw)[1]


def require(model, attribute: str, what: str):
    """``model.attribute``, or NotFittedError saying which function needed it."""
    if not hasattr(model, attribute):
        raise NotFittedError(
            f"{what} needs a fitted model: {type(model).__name__} has no {attribute}; "
            "call fit first"
        )
    return getattr(model, attribute)


def as_numpy(a) -> np.ndarray:
    """Tensors (any device) and array-likes as float numpy arrays."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)
