"""Normalizing-flow posteriors: planar flows and inverse autoregressive flows (IAF).

A flow maps a base sample z₀ ~ q₀(z | x) through invertible steps z_k = f_k(z_{k-1}) and
returns log|det ∂f_k/∂z_{k-1}|, so that log q_K(z_K | x) = log q₀(z₀ | x) - Σ_k log|det J_k|
(Rezende & Mohamed 2015, eq. 6). Every step has the signature ``(z, h) -> (z, log_det)``
with z (s, n, d_z), h (n, h_dim) the encoder's context, log_det (s, n).
"""

from __future__ import annotations

import torch
from torch import nn

from latentfit.errors import ParameterError

__all__ = ["IAFStep", "MaskedLinear", "PlanarStep", "make_flow"]


class PlanarStep(nn.Module):
    """f(z) = z + û tanh(wᵀz + b) (Rezende & Mohamed 2015, eqs. 10–12).

    û = u + (m(wᵀu) - wᵀu) w / ‖w‖² with m(a) = -1 + softplus(a) keeps wᵀû ≥ -1, which makes
    the step invertible (their Appendix A.1).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.u = nn.Parameter(torch.randn(dim) * 0.01)
        self.w = nn.Parameter(torch.randn(dim) * 0.01)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        wu = self.w @ self.u
        return self.u + (nn.functional.softplus(wu) - 1.0 - wu) * self.w / (self.w @ self.w + 1e-12)

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None):
        u = self.u_hat()
        a = z @ self.w + self.b  # (s, n)
        t = torch.tanh(a)
        z_new = z + t.unsqueeze(-1) * u  # (s, n, d_z)
        psi_u = (1.0 - t**2) * (self.w @ u)  # (s, n): ψ(z)ᵀû
        return z_new, torch.log((1.0 + psi_u).abs() + 1e-12)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One inverse autoregressive flow step (Kingma et al. 2016, eqs. 10–15, the LSTM-type update).

    [m, s] = MADE(z, h); σ = sigmoid(s); z' = σ ⊙ z + (1 - σ) ⊙ m; log|det| = Σ log σ.
    Output j depends only on z_{<j}, so the Jacobian is triangular. ``reverse`` flips the order
    of the variables first, so stacked steps alternate their autoregressive order.
    """

    def __init__(self, dim: int, hidden: int, context_dim: int = 0, reverse: bool = False):
        super().__init__()
        if dim < 2:
            raise ParameterError(f"an IAF needs a latent dimension of at least 2, got {dim}")
        deg_in = torch.arange(1, dim + 1)
        deg_h = torch.arange(hidden) % (dim - 1) + 1
        self.l1 = MaskedLinear(dim, hidden, (deg_h[:, None] >= deg_in[None, :]).float())
        out_mask = (deg_in[:, None] > deg_h[None, :]).float()
        self.l_m = MaskedLinear(hidden, dim, out_mask)
        self.l_s = MaskedLinear(hidden, dim, out_mask.clone())
        self.ctx = nn.Linear(context_dim, hidden, bias=False) if context_dim else None
        self.reverse = reverse
        # A positive bias on s starts σ near 1, so the step starts close to the identity
        # (Kingma et al. 2016, Sec. 4: "forget gate bias").
        nn.init.constant_(self.l_s.bias, 2.0)

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None):
        if self.reverse:
            z = z.flip(-1)
        a = self.l1(z)  # (s, n, hidden)
        if self.ctx is not None and h is not None:
            a = a + self.ctx(h)
        a = nn.functional.elu(a)
        m, s = self.l_m(a), self.l_s(a)  # (s, n, d_z)
        sigma = torch.sigmoid(s)
        z_new = sigma * z + (1.0 - sigma) * m
        log_det = nn.functional.logsigmoid(s).sum(-1)  # (s, n)
        if self.reverse:
            z_new = z_new.flip(-1)
        return z_new, log_det


def make_flow(kind: str, dim: int, n_steps: int, hidden: int = 0, context_dim: int = 0):
    """A ``nn.ModuleList`` of ``n_steps`` ``"planar"`` or ``"iaf"`` steps (IAF alternates order)."""
    if n_steps < 1:
        raise ParameterError(f"a flow needs at least one step, got n_steps={n_steps}")
    if kind == "planar":
        return nn.ModuleList(PlanarStep(dim) for _ in range(n_steps))
    if kind == "iaf":
        hidden = hidden or 2 * dim
        return nn.ModuleList(
            IAFStep(dim, hidden, context_dim, reverse=bool(i % 2)) for i in range(n_steps)
        )
    raise ParameterError(f"unknown flow {kind!r}; choose 'planar' or 'iaf'")
