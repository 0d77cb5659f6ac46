"""Building VAEs from a plain specification, and saving / loading them without pickle.

``build_model(ModelSpec(...))`` assembles encoder, decoder, likelihood and flow from
:mod:`networks`, :mod:`likelihoods` and :mod:`flows`; the spec (plain numbers and strings)
travels with the weights in the safetensors file, so :func:`load_model` rebuilds the same
network and never executes code from the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from latentfit.io import atomic_path
from latentfit.vae.flows import make_flow
from latentfit.vae.likelihoods import make_likelihood
from latentfit.vae.models import VAE, DiscreteVAE, LadderVAE
from latentfit.vae.networks import ConvDecoderBody, ConvEncoderBody, Decoder, GaussianEncoder, mlp

__all__ = ["ModelSpec", "build_model", "init_decoder_bias", "load_model", "save_model"]

FORMAT = "latentfit-vae/1"


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
            raise ValueError("network='conv' needs image_shape=(channels, height, width)")
        shape = tuple(spec.image_shape)
        if len(shape) != 3 or shape[0] * shape[1] * shape[2] != spec.x_dim:
            raise ValueError(f"image_shape {shape} does not hold x_dim={spec.x_dim} values")
        h = spec.hidden[-1]
        return ConvEncoderBody(shape, h), ConvDecoderBody(z_in, shape, n_params)
    if spec.network != "mlp":
        raise ValueError(f"network must be 'mlp' or 'conv', got {spec.network!r}")
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
        raise ValueError(f"flows are available for kind='gaussian' only, not {spec.kind!r}")
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
    raise ValueError(f"kind must be 'gaussian', 'discrete' or 'ladder', got {spec.kind!r}")


def build_model(spec: ModelSpec | None = None, device=None, **overrides) -> nn.Module:
    """Build the VAE described by ``spec`` (fields may be overridden by keyword).

    Initial weights are drawn from ``spec.seed`` inside a forked RNG, so building a model never
    changes torch's global random state and the same spec always gives the same weights.
    """
    spec = ModelSpec(**{**asdict(spec or ModelSpec()), **overrides})
    if spec.x_dim < 1 or spec.z_dim < 1 or not spec.hidden:
        raise ValueError(f"x_dim, z_dim and hidden must be positive, got {spec}")
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
    """
    decoder = getattr(model, "module", model).decoder
    last = decoder.body[-1] if isinstance(decoder.body, nn.Sequential) else None
    if not isinstance(last, nn.Linear):
        return model
    mean = torch.as_tensor(X).to(last.bias).mean(0)  # (d,)
    name = type(decoder.likelihood).__name__
    with torch.no_grad():
        if name == "BernoulliLikelihood":
            p = mean.clamp(1e-3, 1 - 1e-3)
            last.bias.copy_(torch.log(p) - torch.log1p(-p))
        elif name == "GaussianLikelihood":
            last.bias[: mean.shape[0]].copy_(mean)
    return model


def save_model(model: nn.Module, path) -> Path:
    """Write the weights and the spec of a model made by :func:`build_model` (atomically)."""
    from safetensors.torch import save_file

    spec = getattr(model, "spec", None)
    if spec is None:
        raise TypeError("save_model needs a model made by build_model (it carries its spec)")
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "spec": json.dumps(asdict(spec))}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_model(path, device=None) -> nn.Module:
    """Read a model written by :func:`save_model`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no VAE model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise ValueError(f"{path} is not a latentfit VAE file: {err}") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a latentfit VAE file (format {meta.get('format')!r})")
    model = build_model(ModelSpec(**json.loads(meta["spec"])))
    model.load_state_dict(load_file(str(path)))
    return model.to(device) if device is not None else model
