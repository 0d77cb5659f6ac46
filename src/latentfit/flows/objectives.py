"""Exact maximum likelihood for flows, and the uniform dequantisation of 8-bit data.

For discrete data k ∈ {0, …, L-1}^d (grey levels), a continuous density p on [0, 1]^d gives
P(k) ≥ exp E_u[log p((k + u) / L)] / L^d with u ~ U[0, 1)^d (Theis et al. 2016, eq. 8;
Ho et al. 2019, Sec. 3.1): so E_u[log p(y)] - d log L is a lower bound on log P(k), the
quantity every continuous model of the likelihood table reports.
"""

from __future__ import annotations

import math

import torch

from latentfit.vae.objectives import ObjectiveOutput

__all__ = ["FlowNLL", "dequantize", "logit_transform"]


def dequantize(levels: torch.Tensor, n_levels: int, generator=None) -> torch.Tensor:
    """y = (k + u) / L with u ~ U[0, 1): a point of [0, 1)^d inside the bin of level k."""
    u = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=levels.dtype)
    return (levels + u) / n_levels


def logit_transform(y: torch.Tensor, alpha: float):
    """w = logit(α + (1 - 2α) y) and log|det ∂w/∂y| (n,) (Dinh et al. 2017, Sec. 4.1):
    moves [0, 1] data to the real line, where a flow's Gaussian base lives."""
    v = alpha + (1 - 2 * alpha) * y
    w = torch.log(v) - torch.log1p(-v)
    log_det = (math.log1p(-2 * alpha) - torch.log(v) - torch.log1p(-v)).sum(-1)
    return w, log_det


class FlowNLL:
    """The exact negative log-likelihood of a flow per dimension (``loss``), with ``bound`` (n,)
    = log p(x) (continuous data, exact) or its dequantisation lower bound on log P(x) (8-bit
    data, one u per row). Called like every trainer objective: ``(model, x, generator)``."""

    def __call__(self, model, x, generator=None, kl_weight: float = 1.0) -> ObjectiveOutput:
        log_px = model(x, generator)  # (n,)
        log_px = log_px.float() if log_px.dtype in (torch.float16, torch.bfloat16) else log_px
        loss = -log_px.mean() / x.shape[-1]
        detached = log_px.detach()
        return ObjectiveOutput(loss, detached, detached, torch.zeros_like(detached), None)
