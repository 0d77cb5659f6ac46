"""Normalizing-flow posteriors for VAEs: planar flows and inverse autoregressive flows (IAF).

A flow maps a base sample z₀ ~ q₀(z | x) through invertible steps z_k = f_k(z_{k-1}) and
returns log|det ∂f_k/∂z_{k-1}|, so that log q_K(z_K | x) = log q₀(z₀ | x) - Σ_k log|det J_k|
(Rezende & Mohamed 2015, eq. 6). Every step has the signature ``(z, h) -> (z, log_det)``
with z (s, n, d_z), h (n, h_dim) the encoder's context, log_det (s, n).

The steps live in latentfit's one flow-layer library, :mod:`latentfit.flows.layers`, shared
with the density models and the VI guides; this module names the ones VAEs use.
"""

from __future__ import annotations

from latentfit.flows.layers import IAFStep, MaskedLinear, PlanarStep, make_flow

__all__ = ["IAFStep", "MaskedLinear", "PlanarStep", "make_flow"]
