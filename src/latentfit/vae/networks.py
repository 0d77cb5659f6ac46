"""Encoders and decoders built from MLP or convolutional blocks.

An encoder maps x (n, d) to the parameters of a diagonal Gaussian q(z | x) plus a context
vector h (used by inverse autoregressive flows); a decoder maps z (..., n, d_z) to the raw
parameters its likelihood expects, (..., n, n_params * d). Convolutional blocks take flat
images and reshape them with ``image_shape`` (c, h, w), so every model sees flat (n, d) data.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import torch
from torch import nn

from latentfit.errors import ParameterError

__all__ = [
    "ConvDecoderBody",
    "ConvEncoderBody",
    "Decoder",
    "GaussianEncoder",
    "GaussianParams",
    "mlp",
]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ParameterError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def mlp(sizes: list[int], activation: str = "tanh", final_activation: bool = True) -> nn.Sequential:
    """Linear layers ``sizes[0] → sizes[1] → ...`` with ``activation`` between them."""
    if len(sizes) < 2 or min(sizes) < 1:
        raise ParameterError(f"an MLP needs at least two positive layer sizes, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


class ConvEncoderBody(nn.Module):
    """Two stride-2 convolutions (32, 64 channels) and a linear layer: (n, c·h·w) → (n, h_dim)."""

    def __init__(self, image_shape: tuple[int, int, int], h_dim: int, activation: str = "relu"):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ParameterError(
                f"convolutional blocks need image sides divisible by 4, got {h}×{w}"
            )
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1),
            _activation(activation),
            nn.Conv2d(32, 64, 4, 2, 1),
            _activation(activation),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), h_dim),
            _activation(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        out = self.net(x.reshape(-1, *self.image_shape))  # (n, h_dim)
        return out.reshape(*lead, -1)


class ConvDecoderBody(nn.Module):
    """Mirror of :class:`ConvEncoderBody`: (..., d_z) → (..., n_params · c·h·w), parameter-major."""

    def __init__(
        self, z_dim: int, image_shape: tuple[int, int, int], n_params: int, activation: str = "relu"
    ):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ParameterError(
                f"convolutional blocks need image sides divisible by 4, got {h}×{w}"
            )
        self.shape0 = (64, h // 4, w // 4)
        self.net = nn.Sequential(
            nn.Linear(z_dim, 64 * (h // 4) * (w // 4)),
            _activation(activation),
            nn.Unflatten(1, self.shape0),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            _activation(activation),
            nn.ConvTranspose2d(32, c * n_params, 4, 2, 1),
            nn.Flatten(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, -1)


class GaussianParams(NamedTuple):
    """Diagonal Gaussian q(z | x): ``loc`` and ``scale`` (n, d_z); ``h`` (n, h_dim) the context."""

    loc: torch.Tensor
    scale: torch.Tensor
    h: torch.Tensor


class GaussianEncoder(nn.Module):
    """x ↦ (μ(x), σ(x), h(x)) for q(z | x) = N(μ, diag σ²) (Kingma & Welling 2014, App. C.2).

    ``body`` maps (n, d) → (n, h_dim); two linear heads give μ and log σ². The log-variance is
    clamped to [-20, 10] so one wild minibatch cannot produce σ = 0 or ∞.
    """

    def __init__(self, body: nn.Module, h_dim: int, z_dim: int):
        super().__init__()
        self.body, self.h_dim, self.z_dim = body, h_dim, z_dim
        self.head = nn.Linear(h_dim, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> GaussianParams:
        h = self.body(x)  # (n, h_dim)
        loc, logvar = self.head(h).chunk(2, dim=-1)  # (n, d_z) each
        if loc.dtype in (torch.bfloat16, torch.float16):  # autocast: densities in float32
            loc, logvar = loc.float(), logvar.float()
        return GaussianParams(loc, (0.5 * logvar.clamp(-20.0, 10.0)).exp(), h)


class Decoder(nn.Module):
    """z ↦ raw likelihood parameters ``body(z)``, with the :mod:`likelihoods` object attached."""

    def __init__(self, body: nn.Module, likelihood: nn.Module):
        super().__init__()
        self.body, self.likelihood = body, likelihood

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # A 2-d input lets nn.Linear use one fused addmm (forward and backward); on 3-d inputs
        # it falls back to matmul + add, measurably slower for the (1, n, d_z) of one sample.
        out = self.body(z.reshape(-1, z.shape[-1]))
        if out.dtype in (torch.bfloat16, torch.float16):  # autocast: likelihoods in float32
            out = out.float()
        return out.reshape(*z.shape[:-1], out.shape[-1])  # (..., n, n_params * d)

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over dimensions: (s, n) for z (s, n, d_z) and x (n, d)."""
        return self.likelihood.log_prob(self(z), x)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self(z))
