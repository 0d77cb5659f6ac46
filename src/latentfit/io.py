"""Saving and loading fitted models without executing code on load.

A model file is a safetensors file: the fitted tensors plus a JSON header (in the safetensors
metadata) holding the format version, the class name and the constructor arguments. Loading
never unpickles anything. Files are written to a temporary name and renamed, so an interrupted
save never leaves a half-written model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = ["FORMAT_VERSION", "atomic_path", "load", "save", "serializable"]

FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}


def serializable(cls):
    """Class decorator: register a model class for :func:`load`.

    The class provides ``_get_state() -> (tensors: dict[str, Tensor], extra: dict)`` and
    ``_set_state(tensors, extra)``; its constructor arguments come from ``get_params()``.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


class atomic_path:
    """Context manager yielding a temporary path in the target's folder, renamed on success."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def _jsonable(value):
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _from_json(value):
    if isinstance(value, dict) and "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    return value


def save(model, path) -> Path:
    """Write a fitted model to ``path`` (safetensors with a JSON header). Returns the path."""
    if not hasattr(model, "_get_state"):
        raise TypeError(f"{type(model).__name__} cannot be saved: it has no _get_state()")
    tensors, extra = model._get_state()
    params = {k: _jsonable(v) for k, v in model.get_params(deep=False).items()}
    header = {
        "format": "latentfit",
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "params": params,
        "extra": extra,
    }
    try:
        meta = {"latentfit": json.dumps(header)}
    except TypeError as err:
        raise TypeError(f"cannot save {type(model).__name__}: {err}") from err
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load(path, *, device=None):
    """Read a model written by :func:`save` (or ``model.save``); no code is executed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise ValueError(f"{path} is not a latentfit model file: {err}") from err
    if "latentfit" not in meta:
        raise ValueError(f"{path} is a safetensors file but not a latentfit model")
    header = json.loads(meta["latentfit"])
    version = header.get("format_version")
    if version is None or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has model format version {version}; this latentfit reads versions up to "
            f"{FORMAT_VERSION}. Upgrade latentfit to read it."
        )
    cls = _REGISTRY.get(header["class"])
    if cls is None:
        import latentfit  # noqa: F401  (registers every public model class)

        cls = _REGISTRY.get(header["class"])
    if cls is None:
        raise ValueError(f"{path} holds a {header['class']}, which this latentfit does not know")
    params = {k: _from_json(v) for k, v in header["params"].items()}
    if device is not None and "device" in params:
        params["device"] = device
    model = cls(**params)
    tensors = load_file(str(path))
    model._set_state(tensors, header.get("extra", {}))
    return model
