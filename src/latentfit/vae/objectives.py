"""Training objectives for VAEs: ELBO, β-VAE, IWAE(k) and DReG.

An objective is called as ``objective(model, x, generator=None, kl_weight=1.0)`` and returns an
:class:`ObjectiveOutput`: ``loss``, a differentiable scalar to minimise (it may be a surrogate:
KL warm-up, β, free bits), and ``bound`` (n,), the true lower bound on log p(x) for reporting,
never a surrogate that overstates it. Objectives know nothing of optimisers.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from latentfit._validation import check_allocation, check_positive_int, is_finite_above
from latentfit.errors import DataError, DataTypeError, ParameterError
from latentfit.vae.likelihoods import check_model_columns, integer_levels
from latentfit.vae.models import LatentPass
from latentfit.vae.schedules import check_free_bits, free_bits_kl

__all__ = [
    "ELBO",
    "IWAE",
    "BetaVAE",
    "DReG",
    "ObjectiveOutput",
    "iwae_bound",
    "log_mean_exp",
    "log_weights",
    "make_objective",
]


class ObjectiveOutput(NamedTuple):
    """``loss`` scalar (differentiable); ``bound``, ``log_px_z``, ``kl`` (n,) detached;
    ``kl_per_dim`` (n, d_z) detached or None (no closed form)."""

    loss: torch.Tensor
    bound: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor | None


def _check_values_along(x, dim, name: str, what: str) -> None:
    """``x`` a tensor with at least one value along ``dim`` (an integer in range): the mean
    of no values has no log (math.log(0) was a math domain error)."""
    if not isinstance(x, torch.Tensor):
        raise DataTypeError(
            f"{name} must be a torch.Tensor of {what}, got {type(x).__name__}; wrap it with "
            "torch.as_tensor"
        )
    if x.dim() == 0:
        raise DataError(
            f"{name} is a 0-D tensor (one number): it needs a dimension of {what} to average "
            "over, e.g. shape (k, n) for k samples of each of n data points"
        )
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ParameterError(f"dim must be an integer, got {dim!r}")
    if not -x.dim() <= dim < x.dim():
        raise ParameterError(
            f"dim={dim} is out of range for {name} of shape {tuple(x.shape)} ({x.dim()}-D); "
            f"use a dimension from {-x.dim()} to {x.dim() - 1}"
        )
    if x.shape[dim] == 0:
        raise DataError(
            f"{name} of shape {tuple(x.shape)} holds no {what} along dim={dim}, and their "
            "mean is undefined; pass at least one sample (k >= 1)"
        )


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k Σ_i exp x_i) along ``dim``, computed stably as logsumexp - log k."""
    _check_values_along(x, dim, "x", "values")
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is a half type (autocast), else unchanged (float64 stays)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def log_weights(p: LatentPass, kl_weight: float = 1.0, stopped: bool = False) -> torch.Tensor:
    """log w = log p(x|z) + w_KL (log p(z) - log q(z|x)), (s, n), in at least float32.

    With ``kl_weight`` = 1 these are the importance weights of Burda et al. (2016), eq. 8.
    ``stopped`` uses log q with the encoder's parameters detached (DReG).
    """
    log_q = p.log_qz_stopped if stopped else p.log_qz
    return _wide(p.log_px_z) + kl_weight * (_wide(p.log_pz) - _wide(log_q))


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_k = log (1/k Σ_i w_i) over the sample dimension 0: (k, n) → (n,) (Burda et al. 2016)."""
    _check_values_along(log_w, 0, "log_w", "log-weights")
    return log_mean_exp(log_w, 0)


def _exact_pass(model, x, p: LatentPass, n_samples: int, generator) -> LatentPass:
    """The pass itself when it is exact; else a no-grad pass at exact (unrelaxed) samples."""
    if p.exact:
        return p
    with torch.no_grad():
        return model(x, n_samples, generator, relaxed=False)


class ELBO:
    """The evidence lower bound E_q[log p(x|z)] - KL(q(z|x) ‖ p(z)) (Kingma & Welling 2014, eq. 10)
    of a VAE, with the encoder's amortised q(z | x); the ELBO of a user's model and guide for
    stochastic VI is :class:`latentfit.vi.StochasticELBO`.

    ``analytic_kl``: use the model's closed-form KL where it has one (lower variance), else the
    Monte-Carlo estimate log q - log p over ``n_samples`` samples. ``beta`` multiplies the KL in
    the loss (Higgins et al. 2017); ``free_bits`` λ > 0 replaces the KL of each dimension (or each
    group of ``free_bits_groups`` consecutive dimensions) by max(λ, its minibatch mean)
    (Kingma et al. 2016, Sec. C.8). ``bound`` is always the β = 1 ELBO without floors.
    """

    def __init__(
        self,
        n_samples: int = 1,
        analytic_kl: bool = True,
        beta: float = 1.0,
        free_bits: float = 0.0,
        free_bits_groups: int = 1,
    ):
        n_samples = check_positive_int(n_samples, "n_samples")
        free_bits_groups = check_positive_int(free_bits_groups, "free_bits_groups")
        if not is_finite_above(beta, 0.0, inclusive=True):
            raise ParameterError(
                f"beta must be a finite number >= 0, got {beta!r}; 1 is the ELBO, 4 a usual "
                "beta-VAE"
            )
        check_free_bits(free_bits)
        self.n_samples, self.analytic_kl, self.beta = n_samples, analytic_kl, beta
        self.free_bits, self.free_bits_groups = free_bits, free_bits_groups

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_samples={self.n_samples}, analytic_kl={self.analytic_kl}, "
            f"beta={self.beta}, free_bits={self.free_bits})"
        )

    def __call__(self, model, x, generator=None, kl_weight: float = 1.0) -> ObjectiveOutput:
        x = integer_levels(model, x, "x")  # a dtype test unless x holds level codes
        check_model_columns(model, x, "x")  # a shape compare: cheap enough for every step
        check_pass_memory(model, x, self.n_samples, "n_samples")
        p = model(x, self.n_samples, generator, weights=not self.analytic_kl)
        weight = self.beta * kl_weight
        recon = _wide(p.log_px_z).mean(0)  # (n,)
        kl_dims = None if p.kl is None else _wide(p.kl)  # (n, d_z)
        if self.analytic_kl and kl_dims is not None:
            kl = kl_dims.sum(-1)
            bound = recon - kl
        else:
            bound = log_weights(p).mean(0)  # the same expression as IWAE with k = 1, bit for bit
            kl = recon - bound
        if self.free_bits > 0:
            if kl_dims is None:
                raise ParameterError(
                    "free bits need a per-dimension KL in closed form; this model has none "
                    "(a flow posterior); use free_bits=0 or a model without a flow"
                )
            loss = -(
                recon.mean() - weight * free_bits_kl(kl_dims, self.free_bits, self.free_bits_groups)
            )
        elif weight == 1.0:
            loss = -bound.mean()
        else:
            loss = -(recon - weight * kl).mean()
        if not p.exact:
            q = _exact_pass(model, x, p, self.n_samples, generator)
            recon = _wide(q.log_px_z).mean(0)
            kl = (
                _wide(q.kl).sum(-1)
                if self.analytic_kl and q.kl is not None
                else (recon - log_weights(q).mean(0))
            )
            bound = recon - kl
        return ObjectiveOutput(
            loss,
            bound.detach(),
            recon.detach(),
            kl.detach(),
            None if kl_dims is None else kl_dims.detach(),
        )


#: below this many bytes a pass is not checked against the memory available (the check reads
#: /proc/meminfo, ~50 µs, which a training step of a small model should not pay)
_CHECKED_FROM = 1 << 28


def hidden_width(model) -> int | None:
    """Numbers a row holds between the data and the output: the latents and every hidden
    layer, from the model's spec; None for a model without one."""
    spec = getattr(getattr(model, "module", model), "spec", None)
    if spec is None:
        return None
    hidden = getattr(spec, "hidden", None) or []
    return int(getattr(spec, "z_dim", 0) or 0) + sum(int(h) for h in hidden)


def check_pass_memory(model, x: torch.Tensor, k: int, name: str) -> None:
    """Refuse a pass of ``k`` samples for each of the rows of ``x`` whose activations cannot be
    held: k x n rows of latents, hidden layers and outputs (sizes from the model's spec where it
    has one, else eight times the data's width), float64, kept for the backward pass."""
    n, width = (x.shape[0], math.prod(x.shape[1:])) if x.dim() > 1 else (1, x.numel())
    inner = hidden_width(model)
    per_row = 4 * width + 2 * inner if inner is not None else 8 * width
    n_bytes = 8 * k * n * per_row
    if n_bytes >= _CHECKED_FROM:
        check_allocation(
            n_bytes,
            f"a pass of {name}={k:,} samples for each of {n:,} rows",
            device=x.device,
            hint=f"use a smaller {name} or fewer rows a batch",
        )


class BetaVAE(ELBO):
    """β-VAE (Higgins et al. 2017): the ELBO with the KL multiplied by ``beta`` in the loss."""

    def __init__(self, beta: float = 4.0, **kwargs):
        super().__init__(beta=beta, **kwargs)


class IWAE:
    """The importance-weighted bound L_k = E[log 1/k Σ_i w_i] (Burda et al. 2016, eq. 8).

    L_1 is the ELBO, L_k ≤ L_{k+1} ≤ log p(x). ``kl_weight`` < 1 (warm-up) anneals the
    log p(z) - log q(z|x) part of each log-weight in the loss; ``bound`` is always L_k.
    """

    dreg = False

    def __init__(self, k: int = 5):
        self.k = check_positive_int(k, "k")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"

    def __call__(self, model, x, generator=None, kl_weight: float = 1.0) -> ObjectiveOutput:
        x = integer_levels(model, x, "x")
        check_model_columns(model, x, "x")
        check_pass_memory(model, x, self.k, "k")
        p = model(x, self.k, generator, stopped=self.dreg)
        log_w = log_weights(p)  # (k, n)
        bound = iwae_bound(log_w)
        loss = self._loss(p, log_w, kl_weight)
        if not p.exact:
            bound = iwae_bound(log_weights(_exact_pass(model, x, p, self.k, generator)))
        recon = _wide(p.log_px_z).mean(0)
        kl = (_wide(p.log_qz) - _wide(p.log_pz)).mean(0)
        kl_dims = None if p.kl is None else _wide(p.kl).detach()
        return ObjectiveOutput(loss, bound.detach(), recon.detach(), kl.detach(), kl_dims)

    def _loss(self, p: LatentPass, log_w: torch.Tensor, kl_weight: float) -> torch.Tensor:
        if kl_weight != 1.0:
            log_w = log_weights(p, kl_weight)
        return -iwae_bound(log_w).mean()


class DReG(IWAE):
    """IWAE(k) trained with doubly-reparameterised gradients (Tucker et al. 2018, eq. 5).

    Decoder gradient: Σ_i w̃_i ∇_θ log w_i (the IWAE gradient). Encoder gradient:
    Σ_i w̃_i² ∂log w_i/∂z_i ∂z_i/∂φ with log q evaluated at detached parameters, which removes the
    score-function term whose variance grows with k. Implemented with a gradient hook that
    multiplies the gradient reaching z by w̃ once more. Needs a model that provides
    ``log_qz_stopped`` (the Gaussian :class:`~latentfit.vae.models.VAE` without a flow).
    """

    dreg = True

    def _loss(self, p: LatentPass, log_w: torch.Tensor, kl_weight: float) -> torch.Tensor:
        if p.log_qz_stopped is None:
            raise ParameterError(
                "DReG needs log q(z|x) at detached encoder parameters, which this model does not "
                "provide (flows, ladder and discrete VAEs); use IWAE instead"
            )
        log_w = log_weights(p, kl_weight, stopped=True)  # (k, n)
        w_tilde = torch.softmax(log_w.detach(), 0)  # (k, n) normalised weights
        if p.z.requires_grad:
            p.z.register_hook(lambda g: g * w_tilde.unsqueeze(-1).to(g.dtype))
        return -(w_tilde * log_w).sum(0).mean()


def make_objective(name: str, k: int = 1, beta: float = 1.0, free_bits: float = 0.0):
    """``"elbo"``, ``"beta"`` (β-VAE), ``"iwae"`` or ``"dreg"`` with k samples.

    ``beta`` and ``free_bits`` shape the ELBO's KL term; the importance-weighted bounds have
    no separate KL term to scale or floor, so they refuse a ``beta`` other than 1 and
    ``free_bits`` other than 0 rather than train without them."""
    if name in ("iwae", "dreg") and (beta != 1.0 or free_bits != 0.0):
        given = ", ".join(
            f"{n}={v!r}" for n, v, off in (("beta", beta, 1.0), ("free_bits", free_bits, 0.0))
            if v != off
        )  # fmt: skip
        raise ParameterError(
            f"the {name} objective has no KL term to weight or floor, so {given} would be "
            "ignored; use name='elbo' or 'beta' for a beta or free bits, or a KL warm-up "
            "(kl_weight) with iwae"
        )
    if name == "elbo":
        return ELBO(n_samples=k, free_bits=free_bits, beta=beta)
    if name == "beta":
        return BetaVAE(beta=beta, n_samples=k, free_bits=free_bits)
    if name == "iwae":
        return IWAE(k)
    if name == "dreg":
        return DReG(k)
    raise ParameterError(f"unknown objective {name!r}; choose elbo, beta, iwae or dreg")
