"""Saving and loading fitted models without executing code on load.

A model file is a safetensors file: the fitted tensors plus a JSON header (in the safetensors
metadata, key ``latentfit``) holding the format version, the class name, the model's kind
(``mixture``, ``hmm``, ``factor``, ``density`` or ``vae``), the latentfit version that wrote
it, the names of the columns it was fitted on, the data split where there is one, the
constructor arguments (``params``) and the fitted settings (``extra``). Every model kind, the
VAEs included, uses this one format and is read back by :func:`load`. Loading never unpickles
anything. Files are written to a temporary name and renamed, so an interrupted save never
leaves a half-written model. The SHA-256 of the header and the tensors' bytes is stored next
to the header (metadata key ``sha256``) and checked on reading, so that a file damaged after
it was written (a bad disk or copy, a flipped byte) is refused rather than read as other
numbers; files written before it was stored are read without it.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import math
import stat
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from latentfit._files import _kind, atomic_path, check_writable_target, file_status
from latentfit._validation import is_finite_above
from latentfit.errors import ModelFileError, ParameterError
from latentfit.model_tensors import (
    CONSTRAINTS,
    Stored,
    check_network_tensors,
    check_stored,
    check_stored_tensors,
)

__all__ = [
    "CONSTRAINTS",
    "FORMAT_VERSION",
    "MODEL_MODULES",
    "Stored",
    "atomic_path",
    "check_fields",
    "check_network_tensors",
    "check_stored",
    "check_stored_tensors",
    "declared_fields",
    "file_status",
    "load",
    "model_class",
    "model_kind",
    "read_header",
    "save",
    "serializable",
    "stored_history",
]

FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}

#: The module that defines every model class a file may hold, so that :func:`load` imports
#: that module alone (never the whole package) to find the class. A new model class is
#: decorated with :func:`serializable` and listed here.
MODEL_MODULES: dict[str, str] = {
    "AutoregressiveHMM": "latentfit.em.hmm.autoregressive",
    "BayesianGaussianMixture": "latentfit.vi.bgmm",
    "BernoulliMixture": "latentfit.em.mixture.discrete",
    "CategoricalHMM": "latentfit.em.hmm.discrete",
    "CategoricalHSMM": "latentfit.em.hsmm.models",
    "CategoricalMixture": "latentfit.em.mixture.discrete",
    "DDPM": "latentfit.diffusion.model",
    "FactorAnalysis": "latentfit.em.factor",
    "FlowDensity": "latentfit.flows.density",
    "GMMHMM": "latentfit.em.hmm.gmmhmm",
    "GaussianHMM": "latentfit.em.hmm.gaussian",
    "GaussianHSMM": "latentfit.em.hsmm.models",
    "GaussianMixture": "latentfit.em.mixture.gmm",
    "LinearGaussianSSM": "latentfit.em.ssm.model",
    "MAF": "latentfit.flows.density",
    "MixtureModel": "latentfit.em.mixture.families",
    "MultinomialHMM": "latentfit.em.hmm.multinomial",
    "MultinomialMixture": "latentfit.em.mixture.discrete",
    "NeuralSplineFlow": "latentfit.flows.density",
    "PPCA": "latentfit.em.factor",
    "PoissonHMM": "latentfit.em.hmm.discrete",
    "PoissonHSMM": "latentfit.em.hsmm.models",
    "PoissonMixture": "latentfit.em.mixture.discrete",
    "RealNVP": "latentfit.flows.density",
    "VariationalCategoricalHMM": "latentfit.em.hmm.variational",
    "VariationalGaussianHMM": "latentfit.em.hmm.variational",
}


def serializable(cls):
    """Class decorator: register a model class for :func:`load` (list its module in
    :data:`MODEL_MODULES` too).

    The class provides ``_get_state() -> (tensors: dict[str, Tensor], extra: dict)`` and
    ``_set_state(tensors, extra)``; its constructor arguments come from ``get_params()``.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


def model_class(name: str) -> type | None:
    """The registered model class called ``name``, importing its module from
    :data:`MODEL_MODULES` if it is not loaded yet; None for a name latentfit does not know."""
    cls = _REGISTRY.get(name)
    if cls is None and name in MODEL_MODULES:
        importlib.import_module(MODEL_MODULES[name])
        cls = _REGISTRY.get(name)
    return cls


def _jsonable(value):
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _from_json(value, name: str = "value", path=None):
    """A constructor argument as :func:`save` wrote it (``{"__dtype__": "float64"}`` for a
    torch dtype); a dtype name that is not one of torch's raises :class:`ModelFileError`."""
    if isinstance(value, dict) and "__dtype__" in value:
        dtype = value["__dtype__"]
        found = getattr(torch, dtype, None) if isinstance(dtype, str) else None
        if not isinstance(found, torch.dtype):
            where = "" if path is None else f"{path}: "
            raise ModelFileError(
                f"{where}the model file's header field 'params.{name}' names the dtype "
                f"{dtype!r:.80}, which is not a torch dtype; expected e.g. "
                '{"__dtype__": "float64"} or "float32". The file was altered or is damaged'
            )
        return found
    return value


#: The kinds of model a file may hold (the header field ``kind``).
KINDS = ("mixture", "hmm", "factor", "density", "vae")
#: The classes of VAE (networks built by :func:`latentfit.vae.build_model`).
_VAE_CLASSES = ("VAE", "DiscreteVAE", "LadderVAE")
#: The format of VAE files written before VAEs joined this format; still read.
_LEGACY_VAE_FORMAT = "latentfit-vae/1"


def model_kind(model) -> str:
    """What a model is, for the command line and the file header: ``"vae"`` (a network made
    by :func:`latentfit.vae.build_model`), ``"hmm"``, ``"mixture"`` (labels and
    responsibilities), ``"factor"`` (FA/PPCA: latent factors) or ``"density"`` (flows, DDPM:
    log-density and draws only)."""
    import torch.nn

    if isinstance(model, torch.nn.Module) and hasattr(model, "spec"):
        return "vae"
    if hasattr(model, "transmat_") or hasattr(model, "get_stationary_distribution"):
        return "hmm"
    if hasattr(model, "predict_proba"):
        return "mixture"
    if hasattr(model, "transform"):
        return "factor"
    return "density"


def _version() -> str:
    import latentfit

    return str(getattr(latentfit, "__version__", "unknown"))


def file_header(
    cls_name: str, kind: str, params: dict, extra: dict, feature_names=None, split=None
):
    """The JSON header every model file carries (see the module docstring)."""
    header = {
        "format": "latentfit",
        "format_version": FORMAT_VERSION,
        "class": cls_name,
        "kind": kind,
        "latentfit_version": _version(),
        "feature_names": None if feature_names is None else [str(c) for c in feature_names],
        "params": params,
        "extra": extra,
    }
    if split is not None:
        header["split"] = split
    return header


#: The entries of a training history's rows that time the run rather than describe the fit.
_TIMINGS = ("seconds",)


def stored_history(history) -> list:
    """A training history (``history_``: one dict per epoch) as a model file holds it: without
    the wall-clock seconds each epoch took, which differ from run to run, so that two fits of
    one int seed give files of the same bytes."""
    return [{k: v for k, v in row.items() if k not in _TIMINGS} for row in history]


def _unwritable(params) -> str:
    """The first constructor argument of ``params`` that JSON cannot hold, with what to pass."""
    for name, value in (params or {}).items():
        try:
            json.dumps(value)
        except TypeError:
            if name == "random_state":  # a RandomState or Generator instance
                return (
                    f"random_state={value!r} (a random generator cannot be written: fit with "
                    "an int seed, or set random_state to one or None before saving)"
                )
            return f"the constructor argument {name}={value!r:.80}"
    return "a constructor argument or setting"


def _canonical(data: bytes) -> bytes:
    """A safetensors file's bytes ``data`` with its header (the tensors' entries and the
    metadata) written with its keys sorted, compact and padded with spaces to a multiple of 8
    bytes as safetensors writes it; the tensors' bytes and offsets are unchanged. safetensors
    writes the metadata's keys in the order of a Rust hash map, which differs from one save
    to the next: two saves of one model gave files that differ, so that no checksum or diff
    of them agreed."""
    size = int.from_bytes(data[:8], "little")
    index = json.loads(data[8 : 8 + size])
    text = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def write_model_file(path, tensors: dict, header: dict) -> Path:
    """Write ``tensors`` and ``header`` atomically as a model file (the one writer of both
    :func:`save` and :func:`latentfit.vae.save_model`)."""
    check_writable_target(path)
    try:
        meta = {"latentfit": json.dumps(header)}  # in the order show prints it
    except TypeError as err:
        raise ParameterError(
            f"cannot save {header.get('class')}: {_unwritable(header.get('params'))} is not "
            f"JSON-serialisable ({err}); pass plain numbers, strings or lists"
        ) from err
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # Serialised here and written by Python: a write that fails (a full disk) is then an
    # OSError, which atomic_path words naming the file; safetensors' own writer raises
    # "SafetensorError: Error while serializing: I/O error ...". Serialised twice: the
    # checksum covers the tensors' entries and bytes, which the metadata holding it does
    # not change.
    data = save_bytes(tensors, metadata=meta)
    digest = _contents_digest(io.BytesIO(data), meta["latentfit"])
    data = _canonical(save_bytes(tensors, metadata={**meta, "sha256": digest}))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save(model, path) -> Path:
    """Write a fitted model to ``path`` (safetensors with a JSON header). Returns the path.

    Estimators and the VAEs of :func:`latentfit.vae.build_model` alike; read it back with
    :func:`load`."""
    check_writable_target(path)
    if model_kind(model) == "vae":
        from latentfit.vae.build import save_model

        return save_model(model, path)
    if not hasattr(model, "_get_state"):
        raise ParameterError(f"{type(model).__name__} cannot be saved: it has no _get_state()")
    _check_fitted(model)
    tensors, extra = model._get_state()
    params = {k: _jsonable(v) for k, v in model.get_params(deep=False).items()}
    header = file_header(
        type(model).__name__,
        model_kind(model),
        params,
        extra,
        feature_names=getattr(model, "feature_names_in_", None),
    )
    return write_model_file(path, tensors, header)


def _check_fitted(model) -> None:
    """NotFittedError (scikit-learn's, as ``predict`` before ``fit`` raises) for a model that
    has no fitted state to write: it lacks the attribute its class names in
    ``_fitted_attribute``, or (without one) every fitted attribute (a name ending in ``_``)."""
    from sklearn.utils.validation import check_is_fitted

    attr = getattr(model, "_fitted_attribute", None)
    if attr is None:
        check_is_fitted(model)
    else:
        check_is_fitted(model, attr)


# ---------------------------------------------------------------------- reading a header
#: What a declared field of a model file may hold: the checks of :func:`check_fields`.
_FIELD_CHECKS = {
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "int?": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "positive": lambda v: is_finite_above(v, 0.0),
    "nonnegative": lambda v: is_finite_above(v, 0.0, inclusive=True),
    "positive(s)": lambda v: (
        is_finite_above(v, 0.0)
        or (isinstance(v, list) and len(v) > 0 and all(is_finite_above(x, 0.0) for x in v))
    ),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "floats": lambda v: (
        isinstance(v, list)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    ),
    "ints": lambda v: (
        isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ),
    "float_lists": lambda v: isinstance(v, list) and all(_FIELD_CHECKS["floats"](x) for x in v),
    "int_pairs": lambda v: (
        isinstance(v, list) and all(_FIELD_CHECKS["ints"](x) and len(x) == 2 for x in v)
    ),
    "strs": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}
_FIELD_WORDS = {
    "bool": "true or false",
    "int": "an integer",
    "count": "an integer >= 0",
    "int?": "an integer or null",
    "float": "a number",
    "positive": "a finite number > 0",
    "nonnegative": "a finite number >= 0",
    "positive(s)": "a finite number > 0 or a list of them",
    "str": "a string",
    "list": "a list",
    "floats": "a list of numbers",
    "ints": "a list of integers",
    "float_lists": "a list of lists of numbers",
    "int_pairs": "a list of pairs of integers",
    "strs": "a list of strings",
}


def declared_fields(cls) -> dict[str, str]:
    """The settings a model file may restore on ``cls``: the ``_state_fields`` dicts (name →
    kind, a key of the checks above) of the class and its bases, merged."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        out.update(base.__dict__.get("_state_fields", {}))
    return out


def check_fields(extra, cls, *, required=()) -> dict:
    """The ``extra`` settings of a model file, checked against the fields ``cls`` declares:
    an unknown name, a value of the wrong kind or a missing required field raises
    :class:`ModelFileError` naming the field (a file must not set arbitrary attributes)."""
    if not isinstance(extra, dict):
        raise ModelFileError(
            f"the model file's header field 'extra' must be an object, got {type(extra).__name__}"
        )
    fields = declared_fields(cls)
    for name, value in extra.items():
        kind = fields.get(name)
        if kind is None:
            raise ModelFileError(
                f"the model file's header sets 'extra.{name}', which {cls.__name__} does not "
                f"store (it stores {sorted(fields)}); the file was altered or is not from this "
                "latentfit"
            )
        if not _FIELD_CHECKS[kind](value):
            raise ModelFileError(
                f"the model file's header field 'extra.{name}' must be {_FIELD_WORDS[kind]}, got "
                f"{value!r:.80}"
            )
    missing = [f"'extra.{name}'" for name in required if name not in extra]
    if missing:
        raise ModelFileError(
            f"the model file's header lacks the field{'s' * (len(missing) > 1)} "
            f"{', '.join(missing)} that {cls.__name__} needs; the file was altered, or written "
            "by a latentfit that did not store it: fit the model again and save it"
        )
    return extra


def _header_field(header: dict, name: str, kind: type, path: Path):
    if name not in header:
        raise ModelFileError(f"{path}: the model file's header lacks the field {name!r}")
    value = header[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelFileError(
            f"{path}: the model file's header field {name!r} must be a {kind.__name__}, got "
            f"{value!r:.80}"
        )
    return value


def _model_file(path) -> Path:
    """``path`` of a model file to read: FileNotFoundError when nothing is there,
    ModelFileError for a folder or another thing that is not a file, ParameterError for a
    path that cannot be a file name (see :func:`file_status`)."""
    status = file_status(path)
    path = Path(path)
    if status is None:
        raise FileNotFoundError(f"no model file at {path}")
    if not stat.S_ISREG(status.st_mode):
        raise ModelFileError(
            f"{path} is {_kind(status.st_mode)}, not a file; pass the path of a model file"
        )
    return path


#: The safetensors metadata keys of a model file: its JSON header and the checksum of its
#: contents (:func:`write_model_file`).
_META_KEYS = ("latentfit", "sha256")


def _contents_digest(f, header_json: str) -> str:
    """SHA-256 of a model file's contents, read from ``f`` at its start: the JSON header
    ``header_json``, every tensor's entry of the safetensors header (dtype, shape, offsets)
    and the tensors' bytes, the last read in pieces."""
    size = int.from_bytes(f.read(8), "little")
    index = json.loads(f.read(size))
    index.pop("__metadata__", None)  # where the checksum itself is kept
    digest = hashlib.sha256()
    for part in (header_json, json.dumps(index, sort_keys=True)):
        digest.update(part.encode() + b"\0")
    for piece in iter(lambda: f.read(1 << 20), b""):
        digest.update(piece)
    return digest.hexdigest()


def _check_digest(meta: dict, path: Path) -> None:
    """A model file's contents against the checksum written with them (files written before
    latentfit stored one have none and are read as they are)."""
    unknown = sorted(set(meta) - set(_META_KEYS))
    if unknown:
        raise ModelFileError(
            f"{path}: the model file's metadata holds {unknown}, which latentfit does not write "
            f"(it writes {list(_META_KEYS)}); the file was altered or is damaged"
        )
    if "sha256" not in meta:
        return
    with open(path, "rb") as f:
        digest = _contents_digest(f, meta["latentfit"])
    if meta["sha256"] != digest:
        raise ModelFileError(
            f"{path}: the model file's contents do not match the SHA-256 checksum written with "
            "them: its tensors or header changed after it was written (a damaged disk or "
            "copy, or an edit). Copy the file again from where it was saved, or refit the model"
        )


def _read_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for every damage
        raise ModelFileError(
            f"{path} is not a latentfit model file (it cannot be read as safetensors: {err}); "
            "it may be truncated, damaged or another kind of file"
        ) from None


def parse_header(meta: dict, path: Path) -> dict:
    """The JSON header of a model file from its safetensors metadata; its optional
    descriptive fields (kind, version, column names, split) are checked for type."""
    if "latentfit" not in meta:
        raise ModelFileError(f"{path} is a safetensors file but not a latentfit model")
    _check_digest(meta, path)
    try:
        header = json.loads(meta["latentfit"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the model file's header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the model file's header must be a JSON object")
    kind = header.get("kind")
    if kind is not None and kind not in KINDS:
        raise ModelFileError(
            f"{path}: the model file's header field 'kind' must be one of {list(KINDS)}, got "
            f"{kind!r:.80}"
        )
    names = header.get("feature_names")
    if names is not None and not _FIELD_CHECKS["strs"](names):
        raise ModelFileError(
            f"{path}: the model file's header field 'feature_names' must be a list of strings "
            f"or null, got {names!r:.80}"
        )
    for field in ("latentfit_version",):
        if field in header and not isinstance(header[field], str):
            raise ModelFileError(
                f"{path}: the model file's header field {field!r} must be a string, got "
                f"{header[field]!r:.80}"
            )
    if "split" in header and not isinstance(header["split"], dict):
        raise ModelFileError(
            f"{path}: the model file's header field 'split' must be an object, got "
            f"{header['split']!r:.80}"
        )
    return header


def _read_header(path: Path) -> dict:
    return parse_header(_read_meta(path), path)


def _legacy_vae_header(meta: dict) -> dict:
    """A header in today's shape for a VAE file of the earlier format ``latentfit-vae/1``."""
    try:
        spec = json.loads(meta.get("spec", ""))
    except ValueError:
        spec = None
    split = None
    if "split" in meta:
        try:
            split = json.loads(meta["split"])
        except ValueError:
            split = None
    kind = spec.get("kind") if isinstance(spec, dict) else None
    cls = {"discrete": "DiscreteVAE", "ladder": "LadderVAE"}.get(kind, "VAE")
    header = file_header(cls, "vae", spec, {}, None, split)
    header["format_version"] = 0  # the earlier VAE-only format
    header["latentfit_version"] = "unknown (file format latentfit-vae/1)"
    return header


def read_header(path) -> dict:
    """The JSON header of the model file at ``path`` (a VAE file of the earlier format
    ``latentfit-vae/1`` is described in today's shape), without loading its tensors."""
    path = _model_file(path)
    meta = _read_meta(path)
    if "latentfit" not in meta and meta.get("format") == _LEGACY_VAE_FORMAT:
        return _legacy_vae_header(meta)
    return parse_header(meta, path)


def _check_tensors(tensors: dict, path: Path) -> None:
    """Every stored tensor holds finite numbers (a NaN would make every prediction wrong)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise ModelFileError(
                f"{path}: the tensor {name!r} {tuple(t.shape)} holds {t[tuple(bad)].item()} at "
                f"index {tuple(bad)}; a fitted model's parameters are finite. The file is "
                "damaged or was written from a failed fit: refit the model"
            )


def _check_saved_device(saved, path: Path) -> None:
    """A file saved for a device this machine lacks (fitted on a GPU, read where there is
    none): said as that, with the argument that reads it here, not as a damaged file."""
    from latentfit._validation import resolve_device
    from latentfit.errors import ParameterError

    if not isinstance(saved, str):
        return  # a setting of another type: refused by the model's own check, as damage
    try:
        resolve_device(saved)
    except ParameterError as err:
        if not saved.startswith(("cuda", "mps", "xpu")):
            return  # not a device any machine has: the file is damaged, as said later
        raise ModelFileError(
            f"{path} was saved with device={saved!r}, which this machine cannot use ({err}); "
            "read it onto another device: load(path, device='cpu') (on the command line, "
            "--device cpu, the default)"
        ) from None


def _check_settings(model, path: Path) -> None:
    """The constructor arguments read from a file, checked as ``fit`` checks them (the
    model's ``_checked_parameters`` or ``_check_parameters``) before anything is built from
    them; a setting ``fit`` would refuse raises :class:`ModelFileError`."""
    check = getattr(model, "_checked_parameters", None) or getattr(model, "_check_parameters", None)
    try:
        if check is not None:
            check()
        for attr in ("_dtype", "_device", "_dev"):  # the dtype and device the file asks for
            getattr(model, attr, None)
    except (ValueError, TypeError) as err:  # ParameterError, or a comparison of a wrong type
        raise ModelFileError(
            f"{path}: the model file's header field 'params' holds a setting "
            f"{type(model).__name__} refuses: {err}. The file was altered or is damaged"
        ) from None


def _finite_arrays(value):
    """The floating arrays inside a fitted attribute (a tensor, an array, a float, a list)."""
    import numpy as np

    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value.detach()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            yield torch.from_numpy(value)
    elif isinstance(value, float):
        yield torch.tensor(value, dtype=torch.float64)  # 1e300 is finite, not float32's inf
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _finite_arrays(v)


def _check_finite_attributes(model) -> None:
    """Every fitted attribute of a loaded model (a public name ending in ``_``) holds finite
    numbers, as after a fit: stored values each finite and within their constraint can still
    derive one that is not (a precision Cholesky entry of 1e300 squares to an infinite
    precision), and such a model would score NaN."""
    if isinstance(model, torch.nn.Module):
        return  # a network's weights are its tensors, checked as stored
    # a fit of max_iter=0 (initialisation only, as scikit-learn allows) has run no E-step: its
    # bound (lower_bound_, and a variational model's elbo_) is -inf, as scikit-learn's is, and
    # its file must load
    monitor = getattr(model, "monitor_", None)  # the HMMs count their iterations there
    no_step = getattr(model, "n_iter_", getattr(monitor, "iter", None)) == 0
    # and a flow whose training Ctrl-C stopped before its first epoch ended has no best
    # bound yet: -inf, and its file must load too
    no_epoch = getattr(model, "history_", None) == []
    for name in dir(model):
        if name.startswith("_") or not name.endswith("_") or name.endswith("__"):
            continue
        try:
            value = getattr(model, name)
        except Exception:  # a property that needs what the model does not hold
            continue
        for arr in _finite_arrays(value):
            if (no_step and name in ("lower_bound_", "elbo_")) or (
                no_epoch and name == "best_val_log_likelihood_"
            ):
                arr = torch.where(arr == -math.inf, 0.0, arr)
            if not bool(torch.isfinite(arr).all()):
                raise ModelFileError(
                    f"the stored tensors give the {type(model).__name__} a non-finite "
                    f"{name} (values out of the range a fit produces); the file was altered "
                    "or is damaged"
                )


def _check_stored_dtypes(tensors: dict, model) -> None:
    """Every floating tensor of a file in a dtype a save writes: an estimator's ``dtype``, or
    float64 (where it keeps a prior or a sum in float64), and for a flow or DDPM the one its
    network keeps the tensor in. An HMM or an SSM would otherwise keep a float16 copy of its
    float64 parameters and compute in float16, a network cast float16 weights on loading:
    either way the model would score other numbers than the one that was saved."""
    kept, _ = model._get_state()
    dtype = getattr(model, "_dtype", None)
    for name, t in sorted(tensors.items()):
        if name not in kept or not t.is_floating_point():
            continue
        allowed = (dtype, torch.float64) if isinstance(dtype, torch.dtype) else (kept[name].dtype,)
        if t.dtype not in allowed:
            words = [str(d).removeprefix("torch.") for d in (t.dtype, allowed[0])]
            raise ModelFileError(
                f"the tensor {name!r} is stored as {words[0]}, but a {type(model).__name__} "
                f"of the file's settings saves it as {words[1]}; the file was altered or is "
                "not from this latentfit"
            )


def load(path, *, device=None):
    """Read a model written by :func:`save` (or ``model.save``); no code is executed.

    Anything that is not an intact model file of this latentfit (a folder, a truncated or
    foreign file, an altered header, non-finite or mis-shaped tensors) raises
    :class:`~latentfit.errors.ModelFileError` naming the field or tensor at fault; a path that
    does not exist raises ``FileNotFoundError``.
    """
    path = _model_file(path)
    meta = _read_meta(path)
    if "latentfit" not in meta and meta.get("format") == _LEGACY_VAE_FORMAT:
        from latentfit.vae.build import load_model  # a VAE file of the earlier format

        return load_model(path, device=device)
    header = parse_header(meta, path)
    version = _header_field(header, "format_version", int, path)
    if version < 1 or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}; this latentfit reads versions 1 to "
            f"{FORMAT_VERSION}"
            + (". Upgrade latentfit to read it." if version > FORMAT_VERSION else "")
        )
    name = _header_field(header, "class", str, path)
    if header.get("kind") == "vae" or name in _VAE_CLASSES:
        from latentfit.vae.build import load_model  # networks rebuilt from their spec

        return load_model(path, device=device)
    cls = model_class(name)
    if cls is None:
        raise ModelFileError(f"{path} holds a {name!r}, which this latentfit does not know")
    raw = _header_field(header, "params", dict, path)
    params = {k: _from_json(v, k, path) for k, v in raw.items()}
    if device is not None and "device" in params:
        params["device"] = device
    elif params.get("device") is not None:
        _check_saved_device(params["device"], path)
    try:
        model = cls(**params)
    except (TypeError, ValueError) as err:
        raise ModelFileError(
            f"{path}: the model file's header field 'params' does not fit {name} ({err})"
        ) from None
    _check_settings(model, path)
    try:
        # the settings a file of the class always holds (``_required_state_fields``): one
        # missing is named, not met later as the None its check then reads
        required = getattr(cls, "_required_state_fields", ())
        extra = check_fields(header.get("extra", {}), cls, required=required)
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {err}") from None
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors' own error types
        raise ModelFileError(f"{path}: the model's tensors cannot be read ({err})") from None
    _check_tensors(tensors, path)
    try:
        # a network is built before the file's tensors replace its weights: the initial
        # weights it draws leave torch's global generator as the caller had it
        with torch.random.fork_rng(devices=[]):
            model._set_state(tensors, dict(extra))
        if hasattr(model, "_check_loaded"):
            model._check_loaded()
        _check_finite_attributes(model)
        _check_stored_dtypes(tensors, model)
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {err}") from None
    except AttributeError as err:
        if err.name in declared_fields(cls) and err.name not in extra:
            # a setting the file should hold, absent (a file written before latentfit stored
            # it, or an edited header): name it, not the attribute the model then lacked
            raise ModelFileError(
                f"{path}: the model file's header lacks the field 'extra.{err.name}' that "
                f"{name} needs; the file was altered, or written by a latentfit that did not "
                "store it: fit the model again and save it"
            ) from None
        raise ModelFileError(
            f"{path}: the stored {name} is inconsistent: {type(err).__name__}: {err}"
        ) from None
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise ModelFileError(
            f"{path}: the stored {name} is inconsistent: {type(err).__name__}: {err}"
        ) from None
    kind = header.get("kind")
    if kind is not None and kind != model_kind(model):
        raise ModelFileError(
            f"{path}: the model file's header field 'kind' says {kind!r} but a {name} is a "
            f"{model_kind(model)!r} model; the file was altered"
        )
    return model
