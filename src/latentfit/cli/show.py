"""``latentfit show MODEL``: what a model file holds (kind, columns, settings, version and
parameters as tables); registered as ``latentfit show`` by :mod:`latentfit.cli.models`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from latentfit.cli.app import fail
from latentfit.cli.model_data import load_model, model_columns, n_columns
from latentfit.cli.output import json_option, print_json

if TYPE_CHECKING:
    import numpy as np

#: Fitted attributes that describe a run rather than the model: shown under "fit".
_RUN = ("converged_", "n_iter_", "lower_bound_", "best_init_", "elbo_", "n_components_")


def model_parameters(model, kind: str) -> dict:
    """Name → array of a model's fitted parameters (its public attributes ending in ``_``);
    for networks (flows, DDPM, VAEs) name → shape of every stored tensor instead."""
    import numpy as np
    import torch

    if kind == "vae":
        return {k: list(v.shape) for k, v in model.state_dict().items()}
    if kind == "density":
        return {k: list(v.shape) for k, v in model._get_state()[0].items()}
    out = {}
    names = [n for n in vars(model) if n.endswith("_") and not n.startswith("_")]
    if kind == "hmm" and hasattr(model, "_covars_"):
        names.append("covars_")
    for name in names:
        if name in _RUN or name == "feature_names_in_":
            continue
        value = getattr(model, name)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            out[name] = value
        elif isinstance(value, float) and not isinstance(value, bool):
            out[name] = np.float64(value)
    return out


def _fmt_number(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _text_table(rows: list[str], cols: list[str], values: np.ndarray) -> list[str]:

    cells = [[_fmt_number(v) for v in row] for row in values.tolist()]
    width = max([len(c) for c in cols] + [len(c) for r in cells for c in r] + [1])
    label = max([len(r) for r in rows] + [1])
    lines = [" " * label + " " + " ".join(c.rjust(width) for c in cols)]
    lines += [r.ljust(label) + " " + " ".join(c.rjust(width) for c in row) for r, row in
              zip(rows, cells, strict=True)]  # fmt: skip
    return lines


#: Parameters whose last axis runs over components, states or symbols, never over columns.
_NOT_PER_COLUMN = (
    "weights_",
    "startprob_",
    "transmat_",
    "emissionprob_",
    "mean_precision_",
    "degrees_of_freedom_",
)


def parameter_text(
    name: str, value: np.ndarray, columns: list[str] | None, n_groups: int | None = None
) -> list[str]:
    """A parameter as tables: the last axis by column name when it runs over the data's
    columns, the others by component / state index (``n_groups``: their number)."""
    import numpy as np

    value = np.asarray(value)
    lines = [f"{name} {tuple(value.shape)}"]
    if value.ndim == 0:
        return [f"{name} = {_fmt_number(value.item())}"]
    d = value.shape[-1]
    per_column = (
        columns is not None
        and len(columns) == d
        and name not in _NOT_PER_COLUMN
        and (value.ndim > 1 or d != n_groups)
    )
    cols = columns if per_column else [str(j) for j in range(d)]
    if value.ndim == 1:
        return lines + ["  " + s for s in _text_table([""], cols, value[None])]
    if value.ndim == 2:
        square = per_column and value.shape[0] == d and ("covar" in name or "precision" in name)
        rows = cols if square else [str(i) for i in range(value.shape[0])]
        return lines + ["  " + s for s in _text_table(rows, cols, value)]
    lead = value.reshape(-1, *value.shape[-2:])
    rows_named = per_column and value.shape[-2] == d
    rows = cols if rows_named else [str(i) for i in range(value.shape[-2])]
    for i, block in enumerate(lead):
        index = np.unravel_index(i, value.shape[:-2])
        lines.append(f"  [{', '.join(str(int(j)) for j in index)}]")
        lines += ["    " + s for s in _text_table(rows, cols, block)]
    return lines


def _settings(model, kind: str, header: dict) -> dict:
    """The model's constructor arguments as loaded (a VAE: its spec)."""
    if kind == "vae":
        from dataclasses import asdict

        return asdict(model.spec)
    from latentfit.io import _jsonable

    settings = {k: _jsonable(v) for k, v in model.get_params(deep=False).items()}
    if "device" in settings:  # read onto the CPU (show computes nothing): the file's device
        settings["device"] = (header.get("params") or {}).get("device")
    return settings


def level_reading(n_levels: int, scale) -> dict:
    """How files of level data are read and written by a model of ``n_levels`` levels, from
    its ``level_scale_`` (1: integer codes; n_levels - 1 or None, a file written before the
    scale was recorded: intensities)."""
    top = n_levels - 1
    reads = (
        f"integer level codes 0..{top}"
        if scale == 1.0
        else f"intensities in [0, 1], level k as k/{top}"
    )
    return {"n_levels": n_levels, "level_scale": scale, "reads": reads}


def vae_levels(model) -> dict | None:
    """The levels of a VAE with a categorical likelihood and the scale its files are read
    and written in (:func:`level_reading`); None for another likelihood."""
    spec = model.spec
    if spec.likelihood != "categorical":
        return None
    return level_reading(spec.n_levels, getattr(model, "level_scale_", None))


def model_levels(model, kind: str) -> tuple[dict, str] | None:
    """The levels of a model of level data and what reads them: a categorical VAE, a flow
    with ``dequantize`` or a DDPM with ``discrete`` (:func:`level_reading`); None for others."""
    if kind == "vae":
        levels = vae_levels(model)
        return None if levels is None else (levels, "categorical likelihood")
    for switch, what in (
        ("dequantize", "uniform dequantisation"),
        ("discrete", "discrete decoder"),
    ):
        if getattr(model, switch, False) is True and hasattr(model, "n_levels"):
            return level_reading(model.n_levels, getattr(model, "level_scale_", None)), what
    return None


def show(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model file (latentfit fit ... --out)."
    ),
    as_json: bool = json_option(),
):
    """Show what a model file holds: kind, columns, settings, version and parameters.

    The parameters are tables with the column names (networks: the shape of every weight);
    the settings are the constructor arguments, the fit record its iterations and bound."""
    import numpy as np

    from latentfit.errors import LatentfitError
    from latentfit.io import read_header

    try:
        header = read_header(model_path)
    except (LatentfitError, FileNotFoundError) as err:
        fail(str(err))
    model, kind = load_model(model_path, "cpu")  # computes nothing: a GPU's file reads anywhere
    columns = model_columns(model, kind)
    extra = dict(header.get("extra") or {})
    found = model_levels(model, kind)
    levels, reader = found if found is not None else (None, None)
    # level_scale_ says how the model's files are read (shown under "levels"), not how it fitted
    hidden = ("feature_names_in_", "level_scale_")
    fit = {k: v for k, v in extra.items() if k not in hidden}
    for name in _RUN:
        if name not in fit and hasattr(model, name) and not callable(getattr(model, name)):
            value = getattr(model, name)
            if isinstance(value, (bool, int, float, np.integer, np.floating)):
                fit[name] = value.item() if hasattr(value, "item") else value
    params = model_parameters(model, kind)
    networks = kind in ("vae", "density")
    result = {
        "model": str(model_path),
        "class": header.get("class"),
        "kind": kind,
        "latentfit_version": header.get("latentfit_version"),
        "format_version": header.get("format_version"),
        "feature_names": columns,
        "n_features": n_columns(model, kind),
        "settings": _settings(model, kind, header),
        "fit": fit,
        "split": header.get("split"),
        ("tensor_shapes" if networks else "parameters"): params,
    }
    if levels is not None:
        result["levels"] = levels
    if networks:
        result["n_parameters"] = int(sum(math.prod(s) for s in params.values()))
    if as_json:
        print_json(result)
        return
    echo = typer.echo
    echo(f"{result['class']} ({kind} model) in {model_path}")
    echo(
        f"written by latentfit {result['latentfit_version']}, model file format "
        f"{result['format_version']}"
    )
    echo(
        f"columns ({result['n_features']}): "
        + (", ".join(columns) if columns else "unnamed (fitted on an array without names)")
    )
    if result["split"]:
        s = result["split"]
        echo(f"data split: {s.get('source')}, {s.get('n_rows')} rows, seed {s.get('seed')}")
    if levels is not None:
        unsaid = "; the file records no scale" if levels["level_scale"] is None else ""
        echo(
            f"levels: {levels['n_levels']} ({reader}); data files are read as "
            f"{levels['reads']}{unsaid}"
        )
    echo("settings:")
    for key, value in (result["settings"] or {}).items():
        echo(f"  {key} = {value}")
    if fit:
        echo("fit:")
        for key, value in fit.items():
            text = value
            if isinstance(value, list) and len(value) > 6:
                text = f"[{', '.join(_fmt_number(v) for v in value[:3])}, ... ({len(value)})]"
            echo(f"  {key} = {text}")
    if networks:
        echo(f"weights ({result['n_parameters']:,} numbers):")
        for key, shape in params.items():
            echo(f"  {key} {tuple(shape)}")
        return
    echo("parameters:")
    for key, value in params.items():
        groups = getattr(model, "n_components", None)
        for line in parameter_text(
            key, value, columns, groups if isinstance(groups, int) else None
        ):
            echo(f"  {line}")
