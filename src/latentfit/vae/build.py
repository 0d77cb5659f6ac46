"""Building VAEs from a plain specification, and saving / loading them without pickle.

``build_model(ModelSpec(...))`` assembles encoder, decoder, likelihood and flow from
:mod:`networks`, :mod:`likelihoods` and :mod:`flows`; the spec (plain numbers and strings)
travels with the weights in the safetensors file, so :func:`load_model` rebuilds the same
network and never executes code from the file.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from latentfit._memory import available_memory, check_module_memory
from latentfit._validation import check_seed
from latentfit.errors import (
    ModelFileError,
    ModelFileWarning,
    ParameterError,
    ResourceLimitError,
    user_stacklevel,
)
from latentfit.model_tensors import check_fixed_buffers, tensor_mismatches
from latentfit.vae.data import SPLITS
from latentfit.vae.diagnostics import model_rows
from latentfit.vae.flows import make_flow
from latentfit.vae.likelihoods import make_likelihood
from latentfit.vae.models import VAE, DiscreteVAE, LadderVAE
from latentfit.vae.networks import (
    ConvDecoderBody,
    ConvEncoderBody,
    Decoder,
    GaussianEncoder,
    mlp,
)

__all__ = ["ModelSpec", "build_model", "init_decoder_bias", "load_model", "save_model"]

FORMAT = "latentfit-vae/1"
_SPLIT_PREFIX = "split/"  # tensors of the stored DataSplit; no module attribute holds a "/"
_MAX_SIZE = 2**31 - 1


@dataclass
class ModelSpec:
    """Everything needed to rebuild a VAE. The defaults are the one-stochastic-layer
    architecture of Burda et al. (2016): 784-200-200-50, tanh, Bernoulli pixels.

    ``kind``: "gaussian", "discrete" (``z_dim`` categorical latents of ``n_categories``) or
    "ladder" (``z_dim`` bottom, ``z2_dim`` top latents, ``hidden2`` upper hidden layers).
    ``network``: "mlp" or "conv" (needs ``image_shape`` (c, h, w)). ``likelihood``:
    "bernoulli", "gaussian" (``gaussian_variance`` fixed / learned / decoder) or "categorical".
    ``flow``: None, "planar" or "iaf" with ``flow_steps`` steps (Gaussian kind only).
    """

    x_dim: int = 784
    z_dim: int = 50
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    kind: str = "gaussian"
    activation: str = "tanh"
    network: str = "mlp"
    image_shape: list[int] | None = None
    likelihood: str = "bernoulli"
    gaussian_variance: str = "decoder"
    n_levels: int = 256
    flow: str | None = None
    flow_steps: int = 4
    n_categories: int = 10
    temperature: float = 1.0
    straight_through: bool = False
    z2_dim: int = 16
    hidden2: list[int] = field(default_factory=lambda: [100, 100])
    seed: int = 0


def _likelihood(spec: ModelSpec) -> nn.Module:
    if spec.likelihood == "gaussian":
        return make_likelihood("gaussian", spec.x_dim, variance=spec.gaussian_variance)
    if spec.likelihood == "categorical":
        return make_likelihood("categorical", spec.x_dim, n_levels=spec.n_levels)
    return make_likelihood(spec.likelihood, spec.x_dim)


def _bodies(spec: ModelSpec, z_in: int, n_params: int):
    """Encoder body (x → h) and decoder body (z → likelihood parameters)."""
    if spec.network == "conv":
        if spec.image_shape is None:
            raise ParameterError("network='conv' needs image_shape=(channels, height, width)")
        shape = tuple(spec.image_shape)
        if len(shape) != 3 or shape[0] * shape[1] * shape[2] != spec.x_dim:
            raise ParameterError(f"image_shape {shape} does not hold x_dim={spec.x_dim} values")
        h = spec.hidden[-1]
        return ConvEncoderBody(shape, h), ConvDecoderBody(z_in, shape, n_params)
    if spec.network != "mlp":
        raise ParameterError(f"network must be 'mlp' or 'conv', got {spec.network!r}")
    enc = mlp([spec.x_dim, *spec.hidden], spec.activation)
    dec = mlp(
        [z_in, *spec.hidden[::-1], spec.x_dim * n_params], spec.activation, final_activation=False
    )
    return enc, dec


def _build(spec: ModelSpec) -> nn.Module:
    lik = _likelihood(spec)
    h = spec.hidden[-1]
    if spec.kind == "gaussian":
        enc, dec = _bodies(spec, spec.z_dim, lik.n_params)
        flow = None
        if spec.flow is not None:
            flow = make_flow(spec.flow, spec.z_dim, spec.flow_steps, context_dim=h)
        return VAE(GaussianEncoder(enc, h, spec.z_dim), Decoder(dec, lik), flow)
    if spec.flow is not None:
        raise ParameterError(f"flows are available for kind='gaussian' only, not {spec.kind!r}")
    if spec.kind == "discrete":
        enc, dec = _bodies(spec, spec.z_dim * spec.n_categories, lik.n_params)
        return DiscreteVAE(
            enc,
            h,
            Decoder(dec, lik),
            spec.z_dim,
            spec.n_categories,
            spec.temperature,
            spec.straight_through,
        )
    if spec.kind == "ladder":
        enc, dec = _bodies(spec, spec.z_dim, lik.n_params)
        h2 = spec.hidden2
        up2 = GaussianEncoder(mlp([h, *h2], spec.activation), h2[-1], spec.z2_dim)
        prior1 = GaussianEncoder(mlp([spec.z2_dim, *h2[::-1]], spec.activation), h2[0], spec.z_dim)
        return LadderVAE(GaussianEncoder(enc, h, spec.z_dim), up2, prior1, Decoder(dec, lik))
    raise ParameterError(f"kind must be 'gaussian', 'discrete' or 'ladder', got {spec.kind!r}")


def _check_spec(spec: ModelSpec, device=None) -> None:
    """Every size of ``spec`` a positive integer, and the network it describes one whose
    weights can be held while it trains (sized on the meta device by
    :func:`latentfit._memory.check_module_memory`), before a weight is allocated: a ``hidden``
    or ``z_dim`` off by digits (10**11) is a typo, not a VAE."""
    sizes = [spec.x_dim, spec.z_dim, spec.z2_dim, spec.n_categories, spec.n_levels, spec.flow_steps]

    def count(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    if not all(count(v) for v in sizes) or not (
        isinstance(spec.hidden, (list, tuple)) and all(count(h) for h in spec.hidden)
    ):
        raise ParameterError(
            f"x_dim, z_dim, z2_dim, n_categories, n_levels, flow_steps and every hidden size "
            f"must be positive integers, got {spec}"
        )
    check_module_memory(
        lambda _, __: _build(spec),
        f"a VAE with hidden={spec.hidden}, x_dim={spec.x_dim}, z_dim={spec.z_dim} (weights, "
        "gradients and Adam's moments)",
        device=device,
        hint="use smaller hidden sizes or z_dim",
    )


def build_model(spec: ModelSpec | None = None, device=None, **overrides) -> nn.Module:
    """Build the VAE described by ``spec`` (fields may be overridden by keyword).

    Initial weights are drawn from ``spec.seed`` inside a forked RNG, so building a model never
    changes torch's global random state and the same spec always gives the same weights.
    """
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(
            f"build_model got unknown setting(s) {unknown}; the spec's fields are {sorted(known)}"
        )
    spec = ModelSpec(**{**asdict(spec or ModelSpec()), **overrides})
    # the rules a saved spec is loaded by: a model that builds can be saved and loaded again
    errs = _spec_errors(asdict(spec))
    if not errs:  # a new model's seed obeys the seed law (a file's may be older)
        try:
            check_seed(spec.seed, "seed")
        except ParameterError as err:
            errs.append(str(err))
    if errs:
        raise ParameterError(f"invalid model spec: {'; '.join(errs)}")
    spec = ModelSpec(**{k: _plain(v) for k, v in asdict(spec).items()})  # numpy ints saved too
    if torch.empty(()).device.type != "meta":  # on meta a caller is sizing it: nothing is held
        _check_spec(spec, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = _build(spec)
    model.spec = spec
    return model.to(device) if device is not None else model


def init_decoder_bias(model: nn.Module, X: torch.Tensor) -> nn.Module:
    """Set the decoder's output bias so that p(x | z) starts at the data's per-pixel mean.

    Bernoulli: logit of the mean intensity (clipped to [10⁻³, 1 - 10⁻³]), as in the IWAE code of
    Burda et al. (2016); Gaussian: the mean. It skips the long first phase in which the decoder
    learns the average image and the posterior collapses meanwhile. Other likelihoods and
    convolutional decoders are left unchanged. Returns the model.

    ``X`` (n, d) is checked as every VAE function checks data
    (:func:`~latentfit.vae.diagnostics.model_rows`): a NaN would become a NaN bias, and a
    wrong number of columns a wrong one, both silently.
    """
    X = model_rows(model, X)
    decoder = getattr(model, "module", model).decoder
    last = decoder.body[-1] if isinstance(decoder.body, nn.Sequential) else None
    if not isinstance(last, nn.Linear):
        return model
    mean = X.to(last.bias).mean(0)  # (d,)
    name = type(decoder.likelihood).__name__
    with torch.no_grad():
        if name == "BernoulliLikelihood":
            p = mean.clamp(1e-3, 1 - 1e-3)
            last.bias.copy_(torch.log(p) - torch.log1p(-p))
        elif name == "GaussianLikelihood":
            last.bias[: mean.shape[0]].copy_(mean)
    return model


def _plain(value):
    """A spec value as JSON holds it: numpy integers as int, a tuple of sizes as a list."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _spec_errors(raw) -> list[str]:
    """What is wrong with a spec read from a file: unknown fields, wrong types, out of range."""
    if not isinstance(raw, dict):
        return [f"the spec is a {type(raw).__name__}, not a JSON object"]
    known = {f.name for f in fields(ModelSpec)}
    errs = [f"unknown field {k!r}" for k in raw if k not in known]

    def is_int(v, lo, hi):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi

    def sizes(v, n):
        return (
            isinstance(v, list | tuple)
            and 1 <= len(v) <= n
            and all(is_int(s, 1, _MAX_SIZE) for s in v)
        )

    rules = {
        "x_dim": (lambda v: is_int(v, 1, _MAX_SIZE), f"an integer in [1, {_MAX_SIZE}]"),
        "z_dim": (lambda v: is_int(v, 1, _MAX_SIZE), f"an integer in [1, {_MAX_SIZE}]"),
        "z2_dim": (lambda v: is_int(v, 1, _MAX_SIZE), f"an integer in [1, {_MAX_SIZE}]"),
        "hidden": (lambda v: sizes(v, 64), "a list of 1 to 64 positive layer sizes"),
        "hidden2": (lambda v: sizes(v, 64), "a list of 1 to 64 positive layer sizes"),
        "kind": (lambda v: v in ("gaussian", "discrete", "ladder"), "gaussian/discrete/ladder"),
        "activation": (lambda v: v in ("tanh", "relu", "elu", "softplus"), "an activation name"),
        "network": (lambda v: v in ("mlp", "conv"), "'mlp' or 'conv'"),
        "image_shape": (lambda v: v is None or (sizes(v, 3) and len(v) == 3), "null or [c, h, w]"),
        "likelihood": (
            lambda v: v in ("bernoulli", "gaussian", "categorical"),
            "bernoulli/gaussian/categorical",
        ),
        "gaussian_variance": (lambda v: v in ("fixed", "learned", "decoder"), "a variance kind"),
        "n_levels": (lambda v: is_int(v, 2, 65536), "an integer in [2, 65536]"),
        "flow": (lambda v: v in (None, "planar", "iaf"), "null, 'planar' or 'iaf'"),
        "flow_steps": (lambda v: is_int(v, 1, 1000), "an integer in [1, 1000]"),
        "n_categories": (lambda v: is_int(v, 2, _MAX_SIZE), f"an integer in [2, {_MAX_SIZE}]"),
        "temperature": (
            lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf,
            "a positive finite number",
        ),
        "straight_through": (lambda v: isinstance(v, bool), "true or false"),
        "seed": (lambda v: is_int(v, -(2**63), 2**64 - 1), "an integer"),
    }
    for name, (ok, what) in rules.items():
        if name in raw and not ok(raw[name]):
            errs.append(f"{name}={raw[name]!r} (must be {what})")
    return errs


def _expected_tensors(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name → (shape, dtype) of every tensor of the model ``spec`` describes, found by building
    it on the meta device: nothing is allocated, however large the spec."""
    with torch.device("meta"):
        model = _build(spec)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def save_model(model: nn.Module, path, split=None) -> Path:
    """Write the weights and the spec of a model made by :func:`build_model` (atomically), in
    the model-file format of every latentfit model (:mod:`latentfit.io`): the spec is the
    header's ``params``; read it back with :func:`latentfit.load` or :func:`load_model`.

    ``split``: the :class:`~latentfit.vae.data.DataSplit` of the data the model was fitted to
    (default: ``model.split`` when set), stored so that evaluation uses exactly its test rows.
    ``model.level_scale_`` (a categorical likelihood's): the scale its data came in, 1 for
    integer level codes and n_levels - 1 for intensities in [0, 1] (the default), stored so
    that the command line reads and writes files on that scale.
    """
    from latentfit.io import file_header, write_model_file

    spec = getattr(model, "spec", None)
    if spec is None:
        raise ParameterError("save_model needs a model made by build_model (it carries its spec)")
    split = split if split is not None else getattr(model, "split", None)
    names = getattr(model, "feature_names", None)
    scale = getattr(model, "level_scale_", None)
    if scale is None and spec.likelihood == "categorical":
        scale = spec.n_levels - 1  # intensities: how a file without it is read
    extra = {} if scale is None else {"level_scale_": _level_scale(spec, scale, ParameterError)}
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    split_info = None
    if split is not None:
        split_info = {
            "source": split.source,
            "n_rows": split.n_rows,
            "data_sha256": split.data_sha256,
            "seed": split.seed,
        }
        if split.binarized is not None:
            split_info["binarized"] = bool(split.binarized)
        for part in SPLITS:
            tensors[f"{_SPLIT_PREFIX}{part}"] = getattr(split, part).to("cpu", torch.int64)
    header = file_header(type(model).__name__, "vae", asdict(spec), extra, names, split_info)
    return write_model_file(path, tensors, header)


def _level_scale(spec: ModelSpec, value, error=ModelFileError) -> float:
    """``level_scale_`` of a model of this ``spec``: 1 (integer level codes) or n_levels - 1
    (intensities in [0, 1]) of a categorical likelihood; ``error`` (raised) otherwise."""
    allowed = (1.0, float(spec.n_levels - 1))
    if spec.likelihood != "categorical" or isinstance(value, bool) or value not in allowed:
        what = (
            f"1 (integer level codes) or {spec.n_levels - 1} (n_levels - 1: intensities in [0, 1])"
            if spec.likelihood == "categorical"
            else f"absent: a {spec.likelihood} likelihood has no levels"
        )
        raise error(f"level_scale_ must be {what}, got {value!r:.80}")
    return float(value)


def _unrecorded_scale(path: Path, n_levels: int) -> str:
    """The warning for a categorical VAE's file without ``extra.level_scale_`` (written before
    :func:`save_model` recorded it for every categorical likelihood)."""
    top = n_levels - 1
    return (
        f"{path}: the model file does not record the scale of the data its categorical "
        f"likelihood of {n_levels} levels was fitted to (the header field "
        "'extra.level_scale_', which files written by an earlier latentfit lack): it is read "
        f"as fitted to intensities in [0, 1], level k being k/{top}, as such files always "
        "were. The command line reads data files for it as intensities: integer level codes "
        f"above 1 are refused and a file of 0s and 1s is read as the levels 0 and {top}. If "
        "it was fitted to integer codes (latentfit fit vae on a file of whole numbers), fit it "
        "again; otherwise save it again (latentfit.save) to record the scale"
    )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: The fields of a model file's split record (:func:`save_model`): what each must be, in words.
_SPLIT_FIELDS = {
    "source": (lambda v: isinstance(v, str), "a string (the data's file or name)"),
    "n_rows": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data_sha256": (lambda v: isinstance(v, str), "a string (the data's SHA-256)"),
    "seed": (_is_int, "an integer"),
    "binarized": (lambda v: v is None or isinstance(v, bool), "true, false or absent"),
}


def _read_split(path: Path, info, f):
    """The DataSplit stored in a model file (``info``: the header's split record), or None;
    ModelFileError naming the field or tensor if it is damaged."""
    from latentfit.vae.data import DataSplit

    stored = sorted(k for k in f.keys() if k.startswith(_SPLIT_PREFIX))
    if info is None:
        if stored:  # rows whose data the header does not name: which rows are the test rows?
            raise ModelFileError(
                f"{path}: the model file holds the split's rows {stored} but its header has no "
                "'split' record of the data they index; the file was altered, fit the model again"
            )
        return None
    if not isinstance(info, dict):
        raise ModelFileError(
            f"{path}: the model file's split record must be an object, got {info!r:.80}; the "
            "file was altered or is damaged, fit the model again"
        )
    for name, (ok, what) in _SPLIT_FIELDS.items():
        if name not in info and name != "binarized":
            raise ModelFileError(
                f"{path}: the model file's header field 'split' lacks 'split.{name}' (it must "
                f"be {what}); the file was altered or is damaged, fit the model again"
            )
        if not ok(info.get(name)):
            raise ModelFileError(
                f"{path}: the model file's header field 'split.{name}' must be {what}, got "
                f"{info[name]!r:.80}; the file was altered or is damaged, fit the model again"
            )
    unknown = sorted(set(info) - set(_SPLIT_FIELDS))
    unknown += sorted(set(stored) - {f"{_SPLIT_PREFIX}{s}" for s in SPLITS})
    if unknown:
        raise ModelFileError(
            f"{path}: the model file's split holds {unknown}, which latentfit does not write "
            f"(it writes the fields {list(_SPLIT_FIELDS)} and the tensors "
            f"{[_SPLIT_PREFIX + s for s in SPLITS]}); the file was altered"
        )
    source, n, sha, seed = (info[k] for k in ("source", "n_rows", "data_sha256", "seed"))
    binarized = info.get("binarized")
    parts = {}
    for s in SPLITS:
        if f"{_SPLIT_PREFIX}{s}" not in stored:
            raise ModelFileError(
                f"{path}: the model file's header records a split but the file lacks its "
                f"tensor '{_SPLIT_PREFIX}{s}'; the file was altered or is damaged, fit the "
                "model again"
            )
        parts[s] = f.get_tensor(f"{_SPLIT_PREFIX}{s}")
    for s, idx in parts.items():
        if (
            idx.dtype != torch.int64
            or idx.ndim != 1
            or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n))
        ):
            raise ModelFileError(
                f"{path}: the stored {s} rows of the split are not row numbers in [0, {n}); "
                "the file was altered, fit the model again"
            )
    every = torch.cat(list(parts.values()))
    if every.unique().numel() != every.numel():
        raise ModelFileError(
            f"{path}: the stored training, validation and test rows overlap; the file was "
            "altered, fit the model again"
        )
    return DataSplit(source, n, sha, seed, **parts, binarized=binarized)


def load_model(path, device=None) -> nn.Module:
    """Read a model written by :func:`save_model` (``latentfit.load`` calls it for VAE files);
    ``model.split`` is its stored :class:`~latentfit.vae.data.DataSplit` (None if the file
    holds none). Files of the earlier VAE-only format ``latentfit-vae/1`` are read too.

    Everything read from the file is checked before the weights are allocated: the spec's
    fields (types and ranges), the memory the weights need (:class:`ResourceLimitError` when it
    exceeds the memory available) and each tensor's name, shape and dtype against the spec.
    The model is built in the dtype of the file's weights, float32 or float64 (one for all of
    them), so that a model saved in float64 is loaded unchanged. A file that is not a
    latentfit VAE, is damaged, or holds weights in another dtype or in several raises
    :class:`ModelFileError`.
    """
    from safetensors import safe_open

    path = Path(path)
    if device is not None:
        from latentfit._validation import resolve_device

        try:
            device = resolve_device(device)
        except (RuntimeError, ValueError) as err:
            raise ParameterError(
                f"device={device!r} cannot be used: {str(err).splitlines()[0]}; try 'cpu'"
            ) from err
    if not path.exists():
        raise FileNotFoundError(f"no VAE model file at {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a VAE model file")
    try:
        handle = safe_open(str(path), framework="pt")
        meta = handle.metadata() or {}
    except Exception as err:
        raise ModelFileError(f"{path} is not a latentfit VAE file: {err}") from err
    with handle as f:
        model = _read_model(path, f, meta)
    return model.to(device) if device is not None else model


def _weights_dtype(path: Path, f, expected) -> torch.dtype:
    """The one dtype of the weights the file holds (of the ``expected`` names it has):
    float32 or float64, as :func:`save_model` writes a model built by :func:`build_model` or
    turned to float64 by ``model.double()``. Half precision, integers or a mix are refused
    (ModelFileError naming the tensor): loading them in another dtype would change every
    score the model gives."""
    dtypes = {"F32": torch.float32, "F64": torch.float64}
    first, stored = None, set(f.keys())
    for name in expected:
        if name not in stored:
            continue  # named as missing once the names are checked
        code = f.get_slice(name).get_dtype()
        if code not in dtypes:
            raise ModelFileError(
                f"{path}: tensor {name!r} is {code}; a VAE's weights are float32 (F32) or "
                "float64 (F64): convert the model with model.float() or model.double() "
                "before save_model"
            )
        if first is None:
            first = (name, code)
        elif code != first[1]:
            raise ModelFileError(
                f"{path}: tensor {name!r} is {code} and tensor {first[0]!r} is {first[1]}; "
                "the weights of a VAE share one dtype: convert the model with model.float() "
                "or model.double() before save_model"
            )
    return dtypes[first[1]] if first is not None else torch.float32


def _read_model(path: Path, f, meta: dict) -> nn.Module:
    from latentfit.io import FORMAT_VERSION, parse_header

    columns, cls, scale = None, None, None
    if "latentfit" in meta:  # today's format, shared with every latentfit model
        header = parse_header(meta, path)
        cls = header.get("class")
        if header.get("kind") != "vae" and cls not in ("VAE", "DiscreteVAE", "LadderVAE"):
            raise ModelFileError(
                f"{path} is not a latentfit VAE file: it holds a {cls}, load it with latentfit.load"
            )
        version = header.get("format_version")
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not (1 <= version <= FORMAT_VERSION)
        ):
            raise ModelFileError(
                f"{path} has model format version {version!r}; this latentfit reads versions 1 "
                f"to {FORMAT_VERSION}"
            )
        raw, split_info = header.get("params"), header.get("split")
        columns = header.get("feature_names")
        extra = header.get("extra", {})
        if not isinstance(extra, dict) or set(extra) - {"level_scale_"}:
            raise ModelFileError(
                f"{path}: the model file's header field 'extra' of a VAE must be empty (or "
                "hold 'level_scale_' alone, of a categorical likelihood); the file was altered"
            )
        scale = extra.get("level_scale_")
    elif meta.get("format") == FORMAT:  # the earlier VAE-only format
        try:
            raw = json.loads(meta.get("spec", ""))
        except json.JSONDecodeError as err:
            raise ModelFileError(
                f"{path}: the model spec is not valid JSON ({err}); the file is damaged"
            ) from err
        try:
            split_info = json.loads(meta["split"]) if "split" in meta else None
        except json.JSONDecodeError as err:
            raise ModelFileError(
                f"{path}: the stored train/validation/test split is damaged ({err}); fit the "
                "model again"
            ) from err
    else:
        raise ModelFileError(f"{path} is not a latentfit VAE file (format {meta.get('format')!r})")
    errs = _spec_errors(raw)
    if errs:
        raise ModelFileError(f"{path}: invalid model spec: {'; '.join(errs)}")
    # every field has been written since the first format: one missing would be rebuilt at its
    # default (a relu network as tanh, a Gaussian likelihood as Bernoulli) beside the weights
    # the file holds, and score other numbers than the model that was saved
    where = "header field 'params'" if "latentfit" in meta else "spec"
    missing = [f.name for f in fields(ModelSpec) if f.name not in raw]
    if missing:
        raise ModelFileError(
            f"{path}: the model file's {where} lacks the VAE setting(s) {missing}; a VAE "
            "rebuilt with the defaults in their place need not be the one whose weights the "
            "file holds. The file was altered or is damaged: fit the model again and save it"
        )
    spec = ModelSpec(**raw)
    if scale is None and spec.likelihood == "categorical":
        warnings.warn(
            _unrecorded_scale(path, spec.n_levels), ModelFileWarning, stacklevel=user_stacklevel()
        )
    if scale is not None:
        try:
            scale = _level_scale(spec, scale)
        except ModelFileError as err:
            raise ModelFileError(
                f"{path}: in the model file's header field 'extra', {err}; the file was altered"
            ) from None
    built = {"gaussian": "VAE", "discrete": "DiscreteVAE", "ladder": "LadderVAE"}[spec.kind]
    if cls is not None and cls != built:
        raise ModelFileError(
            f"{path}: the model file's header says class {cls!r} but its spec (kind="
            f"{spec.kind!r}) builds a {built}; the file was altered"
        )
    try:
        expected = _expected_tensors(spec)
    except Exception as err:
        raise ModelFileError(f"{path}: the model spec cannot be built: {err}") from err
    dtype = _weights_dtype(path, f, expected)
    n_bytes = sum(math.prod(s) for s, _ in expected.values()) * dtype.itemsize
    available = available_memory()  # latentfit._memory: meminfo, cgroup, ulimit -v
    # the file's tensors and the model's weights are both in memory while the weights are copied
    if available is not None and 2 * n_bytes > available:
        raise ResourceLimitError(
            f"{path}: the model spec (hidden={spec.hidden}, x_dim={spec.x_dim}, "
            f"z_dim={spec.z_dim}) needs {2 * n_bytes:,} bytes to load "
            f"({n_bytes:,} bytes of weights) and {available:,} bytes are available; "
            "the spec may have been altered, or load it on a machine with more memory"
        )
    stored = {k: f.get_slice(k).get_shape() for k in f.keys() if not k.startswith(_SPLIT_PREFIX)}
    differ = tensor_mismatches({k: shape for k, (shape, _) in expected.items()}, stored)
    if differ:
        raise ModelFileError(
            f"{path}: the tensors do not match the model spec: {differ}; the file is damaged or "
            "was altered"
        )
    state = {name: f.get_tensor(name) for name in expected}
    for name, t in state.items():
        if not bool(torch.isfinite(t).all()):
            raise ModelFileError(f"{path}: tensor {name!r} holds NaN or infinite values")
    split = _read_split(path, split_info, f)
    model = build_model(spec).to(dtype)  # a model saved in float64 is loaded in float64
    try:  # the IAF steps' masks follow from the spec: the stored ones must be those
        check_fixed_buffers(
            model, state, f"the {built} of this spec (z_dim={spec.z_dim}, flow={spec.flow!r})"
        )
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {err}") from None
    model.load_state_dict(state)
    model.split = split
    if scale is not None:
        model.level_scale_ = scale
    if columns is not None:
        if len(columns) != spec.x_dim:
            raise ModelFileError(
                f"{path}: the header names {len(columns)} columns ('feature_names') and the "
                f"model has x_dim={spec.x_dim}; the file was altered"
            )
        model.feature_names = list(columns)
    return model
