"""A package's public names imported on first use (PEP 562): ``__getattr__`` and ``__dir__``
for ``latentfit`` and ``latentfit.mcmc``, so that importing the package loads neither torch
nor scikit-learn. Imports only the standard library."""

from __future__ import annotations

import importlib
import importlib.util


def exports(space: dict, names: dict[str, str], subpackages: bool = False):
    """``(__getattr__, __dir__)`` for the package whose globals are ``space``: a name of
    ``names`` (name -> defining module) is imported when first read and kept in ``space``;
    with ``subpackages``, a subpackage read as an attribute is imported too."""
    package = space["__name__"]

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            # a subpackage read as an attribute (latentfit.vae.VAE after import latentfit)
            if (
                subpackages
                and not name.startswith("_")
                and importlib.util.find_spec(f"{package}.{name}")
            ):
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        space[name] = value  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(space) | set(names))

    return __getattr__, __dir__
