"""VAE models: Gaussian latent (optionally with a flow posterior), Gumbel-softmax discrete latent,
and a two-stochastic-layer ladder VAE.

Every model's ``forward(x, n_samples, generator)`` draws s samples z ~ q(z | x) per data point
with noise from ``generator`` and returns a :class:`LatentPass` of log-densities, shape (s, n).
Objectives (:mod:`latentfit.vae.objectives`) turn a pass into a bound; they never look inside a
model, so one objective serves every model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from latentfit._validation import device_generator
from latentfit.errors import ParameterError
from latentfit.vae.networks import GaussianEncoder, GaussianParams

__all__ = ["VAE", "DiscreteVAE", "LadderVAE", "LatentPass"]

_LOG_2PI = math.log(2 * math.pi)


class LatentPass(NamedTuple):
    """What one forward pass of a VAE yields, for s samples of z per data point.

    ``log_px_z``, ``log_pz``, ``log_qz`` (s, n): the terms of the importance weight
    log w = log p(x|z) + log p(z) - log q(z|x) (None when the pass was asked for
    ``weights=False`` and the KL has a closed form). ``log_qz_stopped`` (s, n) is log q with the
    encoder's parameters detached (z still carries its reparameterisation gradient), needed by
    DReG; None where a model cannot provide it. ``kl`` (n, d_z): KL(q || p) per latent
    dimension in closed form (a one-sample estimate over upper layers for the ladder VAE), None
    when there is no closed form (flows). ``exact``: False when z is a continuous relaxation
    of a discrete sample, so the terms are a surrogate and not a bound.
    """

    z: torch.Tensor
    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor
    log_qz_stopped: torch.Tensor | None
    kl: torch.Tensor | None
    exact: bool = True


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., d) → (...)."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * _LOG_2PI)


def diag_normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, diag scale²) summed over the last dimension."""
    return Normal(loc, scale, validate_args=False).log_prob(z).sum(-1)


def _std_normal(like: torch.Tensor) -> Normal:
    """N(0, 1) as scalar parameters that broadcast against ``like``."""
    return Normal(like.new_zeros(()), like.new_ones(()), validate_args=False)


def _generator(generator, like: torch.Tensor):
    """None and a torch.Generator as they are; an int seed or a numpy RandomState or Generator
    as a generator on ``like``'s device, made once per call so that its draws share it (a raw
    int reached torch.randn as an invalid argument)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return device_generator(generator, like.device, "the VAE")


def _randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


class VAE(nn.Module):
    """Gaussian-latent VAE (Kingma & Welling 2014) with prior N(0, I) and q(z|x) = N(μ(x), σ²(x)).

    ``flow``: an optional ``nn.ModuleList`` of :mod:`latentfit.vae.flows` steps applied to the
    base sample (Rezende & Mohamed 2015; Kingma et al. 2016). With a flow the KL has no closed
    form and objectives fall back to the Monte-Carlo estimate.
    """

    def __init__(
        self, encoder: GaussianEncoder, decoder: nn.Module, flow: nn.ModuleList | None = None
    ):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.flow = flow if flow is not None and len(flow) else None
        self.z_dim = encoder.z_dim

    def encode(self, x: torch.Tensor) -> GaussianParams:
        return self.encoder(x)

    def forward(
        self, x, n_samples: int = 1, generator=None, relaxed=None, weights=True, stopped=False
    ) -> LatentPass:
        """``weights=False`` skips log p(z) and log q(z|x) where the KL has a closed form (the
        analytic ELBO needs neither); ``stopped=True`` adds log q at detached parameters."""
        q = self.encoder(x)  # loc, scale (n, d_z)
        generator = _generator(generator, x)
        eps = _randn((n_samples, *q.loc.shape), q.loc, generator)  # (s, n, d_z)
        z = q.loc + q.scale * eps
        log_pz = log_qz = log_qz_stopped = kl = None
        if self.flow is None:
            kl = kl_divergence(
                Normal(q.loc, q.scale, validate_args=False), _std_normal(q.loc)
            )  # (n, d_z)
        if weights or self.flow is not None:
            # log N(z; μ, σ²) at z = μ + σ ε is -½ε² - log σ - ½ log 2π: no division needed.
            log_qz = -(0.5 * eps.square() + q.scale.log()).sum(-1) - 0.5 * self.z_dim * _LOG_2PI
            for step in self.flow or ():
                z, log_det = step(z, q.h)
                log_qz = log_qz - log_det
            log_pz = std_normal_log_prob(z)
        if stopped and self.flow is None:
            log_qz_stopped = diag_normal_log_prob(z, q.loc.detach(), q.scale.detach())
        return LatentPass(z, self.decoder.log_prob(z, x), log_pz, log_qz, log_qz_stopped, kl)

    def posterior_mean(self, x: torch.Tensor, generator=None, n_samples: int = 64) -> torch.Tensor:
        """E_q[z | x] (n, d_z): the encoder mean, or a Monte-Carlo mean through the flow."""
        if self.flow is None:
            return self.encoder(x).loc
        return self(x, n_samples, generator).z.mean(0)

    def sample_prior(self, n: int, generator=None, like: torch.Tensor | None = None):
        like = like if like is not None else next(self.parameters())
        return _randn((n, self.z_dim), like, _generator(generator, like))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z), e.g. pixel probabilities for a Bernoulli likelihood."""
        return self.decoder.mean(z)


class DiscreteVAE(nn.Module):
    """VAE with ``n_latent`` categorical latents of ``n_categories`` classes, uniform prior.

    Trained with the Gumbel-softmax / Concrete relaxation (Jang et al. 2017; Maddison et al.
    2017) at ``temperature``; with ``straight_through`` the decoder sees the hard one-hot sample
    and gradients pass through the relaxation. Outside training (or ``relaxed=False``) the
    decoder always sees exact one-hot samples, so reported bounds are true bounds.
    """

    def __init__(
        self,
        body: nn.Module,
        h_dim: int,
        decoder: nn.Module,
        n_latent: int,
        n_categories: int,
        temperature: float = 1.0,
        straight_through: bool = False,
    ):
        super().__init__()
        if n_categories < 2 or n_latent < 1:
            raise ParameterError("need n_latent >= 1 and n_categories >= 2")
        if not temperature > 0:
            raise ParameterError(f"temperature must be positive, got {temperature}")
        self.body, self.decoder = body, decoder
        self.head = nn.Linear(h_dim, n_latent * n_categories)
        self.n_latent, self.n_categories = n_latent, n_categories
        self.temperature, self.straight_through = temperature, straight_through
        self.z_dim = n_latent * n_categories

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).unflatten(-1, (self.n_latent, self.n_categories))

    def forward(
        self, x, n_samples: int = 1, generator=None, relaxed=None, weights=True, stopped=False
    ) -> LatentPass:
        relaxed = self.training if relaxed is None else relaxed
        log_q = self.logits(x).log_softmax(-1)  # (n, L, C)
        u = torch.rand(
            (n_samples, *log_q.shape),
            generator=_generator(generator, x),
            device=x.device,
            dtype=log_q.dtype,
        )
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
        perturbed = log_q + gumbel  # (s, n, L, C); argmax is an exact sample of q
        index = perturbed.argmax(-1, keepdim=True)
        hard = torch.zeros_like(perturbed).scatter_(-1, index, 1.0)
        if relaxed:
            soft = (perturbed / self.temperature).softmax(-1)
            z = hard - soft.detach() + soft if self.straight_through else soft
        else:
            z = hard
        log_qz = log_q.expand_as(perturbed).gather(-1, index).squeeze(-1).sum(-1)  # (s, n)
        log_pz = torch.full_like(log_qz, -self.n_latent * math.log(self.n_categories))
        kl = (log_q.exp() * (log_q + math.log(self.n_categories))).sum(-1)  # (n, L)
        z = z.flatten(-2)  # (s, n, L·C)
        exact = not relaxed or self.straight_through
        return LatentPass(z, self.decoder.log_prob(z, x), log_pz, log_qz, None, kl, exact)

    def posterior_mean(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return self.logits(x).softmax(-1).flatten(-2)  # E_q[one-hot z]

    def sample_prior(self, n: int, generator=None, like: torch.Tensor | None = None):
        like = like if like is not None else next(self.parameters())
        idx = torch.randint(
            self.n_categories,
            (n, self.n_latent),
            generator=_generator(generator, like),
            device=like.device,
        )
        return nn.functional.one_hot(idx, self.n_categories).to(like.dtype).flatten(-2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mean(z)


class LadderVAE(nn.Module):
    """Two-stochastic-layer ladder VAE (Sønderby et al. 2016, eqs. 17–21).

    Generative model p(z₂) p(z₁ | z₂) p(x | z₁) with p(z₂) = N(0, I); inference combines the
    bottom-up estimates (μ̂ᵢ, σ̂ᵢ²) with the top-down prior by precision weighting:
    q(z₁ | x, z₂) ∝ N(μ̂₁, σ̂₁²) N(μ_p(z₂), σ_p²(z₂)), q(z₂ | x) = N(μ̂₂, σ̂₂²). Latents are
    reported concatenated as z = [z₁, z₂] (d₁ + d₂).
    """

    def __init__(
        self,
        up1: GaussianEncoder,
        up2: GaussianEncoder,
        prior1: GaussianEncoder,
        decoder: nn.Module,
    ):
        super().__init__()
        self.up1, self.up2, self.prior1, self.decoder = up1, up2, prior1, decoder
        self.z1_dim, self.z2_dim = up1.z_dim, up2.z_dim
        self.z_dim = self.z1_dim + self.z2_dim

    def _layers(self, x, n_samples, generator):
        generator = _generator(generator, x)  # one stream for both layers' draws
        b1 = self.up1(x)  # μ̂₁, σ̂₁, h₁ (n, d₁)
        b2 = self.up2(b1.h)  # q(z₂ | x) (n, d₂)
        z2 = b2.loc + b2.scale * _randn((n_samples, *b2.loc.shape), b2.loc, generator)
        p1 = self.prior1(z2)  # p(z₁ | z₂) (s, n, d₁)
        prec_hat, prec_p = b1.scale.pow(-2), p1.scale.pow(-2)
        var_q = 1.0 / (prec_hat + prec_p)
        loc_q = (b1.loc * prec_hat + p1.loc * prec_p) * var_q  # (s, n, d₁)
        z1 = loc_q + var_q.sqrt() * _randn(loc_q.shape, loc_q, generator)
        return b2, z2, p1, loc_q, var_q.sqrt(), z1

    def forward(
        self, x, n_samples: int = 1, generator=None, relaxed=None, weights=True, stopped=False
    ) -> LatentPass:
        b2, z2, p1, loc_q, scale_q, z1 = self._layers(x, n_samples, generator)
        log_pz = log_qz = None
        if weights:
            log_qz = diag_normal_log_prob(z2, b2.loc, b2.scale) + diag_normal_log_prob(
                z1, loc_q, scale_q
            )
            log_pz = std_normal_log_prob(z2) + diag_normal_log_prob(z1, p1.loc, p1.scale)
        kl2 = kl_divergence(
            Normal(b2.loc, b2.scale, validate_args=False), _std_normal(b2.loc)
        )  # (n, d₂)
        kl1 = kl_divergence(
            Normal(loc_q, scale_q, validate_args=False),
            Normal(p1.loc, p1.scale, validate_args=False),
        ).mean(0)  # (n, d₁), averaged over the s samples of z₂
        z = torch.cat([z1, z2], -1)
        return LatentPass(
            z, self.decoder.log_prob(z1, x), log_pz, log_qz, None, torch.cat([kl1, kl2], -1)
        )

    def posterior_mean(self, x: torch.Tensor, generator=None, n_samples: int = 64) -> torch.Tensor:
        """E_q[z | x] (n, d_z1 + d_z2): z2's encoder mean exactly, z1's a Monte-Carlo mean over
        ``n_samples`` draws of z2 (its mean given z2 varies with z2), so it moves with the
        draws, and with the rows beside x where the generator is shared."""
        b2, _, _, loc_q, _, _ = self._layers(x, n_samples, generator)
        return torch.cat([loc_q.mean(0), b2.loc], -1)

    def sample_prior(self, n: int, generator=None, like: torch.Tensor | None = None):
        like = like if like is not None else next(self.parameters())
        generator = _generator(generator, like)  # one stream for both layers' draws
        z2 = _randn((n, self.z2_dim), like, generator)
        p1 = self.prior1(z2)
        z1 = p1.loc + p1.scale * _randn(p1.loc.shape, like, generator)
        return torch.cat([z1, z2], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mean(z[..., : self.z1_dim])
