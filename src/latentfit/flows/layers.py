"""The one flow-layer library of latentfit: invertible layers with tractable log-determinants.

Every layer is an ``nn.Module`` with

* ``forward(x, context=None) -> (y, log_det)``: its one-pass direction, with
  log_det = log|det ∂y/∂x| of shape ``x.shape[:-1]``;
* ``inverse(y, context=None) -> x``: the other direction (one pass for couplings, d passes for
  autoregressive layers; planar steps have no closed-form inverse).

``x`` may carry any leading batch dimensions, e.g. (s, n, d) samples of z in a VAE; ``context``
(n, c) is broadcast against them. Three users share these layers:

* density models (:mod:`latentfit.flows.density`) map data to noise with ``forward``:
  log p(x) = log N(f(x); 0, I) + Σ_k log_det_k (MAF, Real NVP, neural-spline coupling);
* VAE posteriors (:mod:`latentfit.vae.flows`) push z₀ ~ q₀(z | x) through ``forward``:
  log q_K(z_K | x) = log q₀(z₀ | x) - Σ_k log_det_k (planar, IAF);
* VI guides (:class:`latentfit.vi.guides.FlowGuide`) wrap layers as
  ``torch.distributions.Transform`` objects with :class:`LayerTransform`.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from latentfit._validation import is_finite_above
from latentfit.errors import ParameterError

__all__ = [
    "AffineCoupling",
    "IAFStep",
    "LayerTransform",
    "MaskedAffine",
    "MaskedLinear",
    "PlanarStep",
    "SplineCoupling",
    "flow_forward",
    "flow_inverse",
    "make_density_layers",
    "make_flow",
    "rational_quadratic_spline",
]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "linear": nn.Identity}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ParameterError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def check_tail_bound(value, dtype: torch.dtype = torch.float64) -> None:
    """A spline's interval [-B, B]: B a finite number > 0 (NaN or B <= 0 leaves no interval
    for the bins, and every value would fall in the identity tails unnoticed) whose width 2B
    the model's ``dtype`` holds (1e300 overflowed torch's conversion to float32 in the fit)."""
    if not is_finite_above(value, 0.0) or not 2 * float(value) < torch.finfo(dtype).max:
        raise ParameterError(
            f"tail_bound must be a finite number > 0 (the splines act on [-tail_bound, "
            f"tail_bound]) whose double {torch.finfo(dtype).dtype} holds, got {value!r}; 5.0 "
            "suits standardised data"
        )


def flow_forward(layers, x: torch.Tensor, context: torch.Tensor | None = None):
    """Apply ``layers`` in order: (f_K ∘ … ∘ f_1)(x) and Σ_k log|det J_k|, shape x.shape[:-1]."""
    log_det = x.new_zeros(x.shape[:-1])
    for layer in layers:
        x, ld = layer(x, context)
        log_det = log_det + ld
    return x, log_det


def flow_inverse(layers, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """(f_1⁻¹ ∘ … ∘ f_K⁻¹)(y)."""
    for layer in reversed(layers):
        y = layer.inverse(y, context)
    return y


# ---- planar -----------------------------------------------------------------------------------


class PlanarStep(nn.Module):
    """f(z) = z + û tanh(wᵀz + b) (Rezende & Mohamed 2015, eqs. 10–12).

    û = u + (m(wᵀu) - wᵀu) w / ‖w‖² with m(a) = -1 + softplus(a) keeps wᵀû ≥ -1, which makes
    the step invertible (their Appendix A.1). The inverse has no closed form.
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
        a = z @ self.w + self.b  # (...,)
        t = torch.tanh(a)
        z_new = z + t.unsqueeze(-1) * u  # (..., d)
        psi_u = (1.0 - t**2) * (self.w @ u)  # (...,): ψ(z)ᵀû
        return z_new, torch.log((1.0 + psi_u).abs() + 1e-12)

    def inverse(self, y, context=None):
        raise ParameterError(
            "a planar flow step has no closed-form inverse; use an 'iaf', 'maf' or coupling "
            "layer where the inverse is needed"
        )


# ---- masked autoregressive layers (MADE) --------------------------------------------------------


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    #: Buffers fixed by the constructor's arguments, not fitted: a model file's copy must be
    #: the one the settings build (see :func:`latentfit.model_tensors.check_fixed_buffers`).
    fixed_buffers: ClassVar[tuple[str, ...]] = ("mask",)

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class _Autoregressive(nn.Module):
    """A MADE conditioner (Germain et al. 2015) and an elementwise update y_j = g(x_j; m_j, s_j)
    whose parameters (m_j, s_j) depend on x_{<j} only, so the Jacobian is triangular.

    ``reverse`` flips the order of the variables first, so stacked layers alternate their
    autoregressive order. Subclasses define ``_update``, ``_invert_update`` and the init.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        context_dim: int = 0,
        reverse: bool = False,
        n_hidden: int = 1,
        activation: str = "elu",
    ):
        super().__init__()
        if dim < 2:
            raise ParameterError(
                f"an autoregressive flow layer needs a dimension of at least 2, got {dim}"
            )
        if n_hidden < 1 or hidden < 1:
            raise ParameterError(
                f"hidden and n_hidden must be at least 1, got {hidden} and {n_hidden}"
            )
        deg_in = torch.arange(1, dim + 1)
        deg_h = torch.arange(hidden) % (dim - 1) + 1
        self.l1 = MaskedLinear(dim, hidden, (deg_h[:, None] >= deg_in[None, :]).float())
        self.hidden_layers = nn.ModuleList(
            MaskedLinear(hidden, hidden, (deg_h[:, None] >= deg_h[None, :]).float())
            for _ in range(n_hidden - 1)
        )
        out_mask = (deg_in[:, None] > deg_h[None, :]).float()
        self.l_m = MaskedLinear(hidden, dim, out_mask)
        self.l_s = MaskedLinear(hidden, dim, out_mask.clone())
        self.ctx = nn.Linear(context_dim, hidden, bias=False) if context_dim else None
        self.act = _activation(activation)
        self.reverse = reverse
        self.dim = dim

    def _params(self, x: torch.Tensor, context):
        a = self.l1(x)  # (..., hidden)
        if self.ctx is not None and context is not None:
            a = a + self.ctx(context)
        a = self.act(a)
        for layer in self.hidden_layers:
            a = self.act(layer(a))
        return self.l_m(a), self.l_s(a)  # (..., d) each

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        if self.reverse:
            x = x.flip(-1)
        m, s = self._params(x, context)
        y, log_det = self._update(x, m, s)
        return (y.flip(-1) if self.reverse else y), log_det

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # After pass j the first j + 1 coordinates are exact: x_j needs x_{<j} only.
        if self.reverse:
            y = y.flip(-1)
        x = torch.zeros_like(y)
        for _ in range(self.dim):
            m, s = self._params(x, context)
            x = self._invert_update(y, m, s)
        return x.flip(-1) if self.reverse else x


class IAFStep(_Autoregressive):
    """One inverse autoregressive flow step (Kingma et al. 2016, eqs. 10–15, the LSTM-type update).

    [m, s] = MADE(z, h); σ = sigmoid(s); z' = σ ⊙ z + (1 - σ) ⊙ m; log|det| = Σ log σ.
    """

    def __init__(self, dim: int, hidden: int, context_dim: int = 0, reverse: bool = False):
        super().__init__(dim, hidden, context_dim, reverse, n_hidden=1, activation="elu")
        # A positive bias on s starts σ near 1, so the step starts close to the identity
        # (Kingma et al. 2016, Sec. 4: "forget gate bias").
        nn.init.constant_(self.l_s.bias, 2.0)

    def _update(self, z, m, s):
        sigma = torch.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m, nn.functional.logsigmoid(s).sum(-1)

    def _invert_update(self, y, m, s):
        sigma = torch.sigmoid(s)
        return (y - (1.0 - sigma) * m) / sigma


class MaskedAffine(_Autoregressive):
    """One layer of a masked autoregressive flow (Papamakarios et al. 2017, eqs. 3–5).

    In the density direction (data x → noise u): u_j = (x_j - μ_j(x_{<j})) exp(-α_j(x_{<j})),
    log|det| = -Σ_j α_j, one pass; sampling inverts it in d passes. α is soft-clamped to
    (-``max_log_scale``, ``max_log_scale``) so that one layer can never blow up. The output
    layer starts at zero: every layer starts as the identity.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        context_dim: int = 0,
        reverse: bool = False,
        n_hidden: int = 2,
        activation: str = "relu",
        max_log_scale: float = 5.0,
    ):
        super().__init__(dim, hidden, context_dim, reverse, n_hidden, activation)
        self.max_log_scale = max_log_scale
        for layer in (self.l_m, self.l_s):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _alpha(self, s):
        c = self.max_log_scale
        return c * torch.tanh(s / c)

    def _update(self, x, m, s):
        alpha = self._alpha(s)
        return (x - m) * torch.exp(-alpha), -alpha.sum(-1)

    def _invert_update(self, u, m, s):
        return u * torch.exp(self._alpha(s)) + m


# ---- coupling layers -------------------------------------------------------------------------


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_activation(activation))
    net = nn.Sequential(*layers)
    nn.init.zeros_(net[-1].weight)  # every coupling starts as the identity map
    nn.init.zeros_(net[-1].bias)
    return net


def _parity_mask(dim: int, parity: int) -> torch.Tensor:
    return ((torch.arange(dim) + parity) % 2).float()


class _Coupling(nn.Module):
    """The coordinates where ``mask`` is 1 pass unchanged and condition an elementwise
    bijection of the others (Dinh et al. 2017): both directions take one pass."""

    #: The parity mask is fixed by the dimension and the parity, not fitted (see
    #: :func:`latentfit.model_tensors.check_fixed_buffers`).
    fixed_buffers: ClassVar[tuple[str, ...]] = ("mask",)

    def __init__(self, dim, n_out, hidden, parity, context_dim, n_hidden, activation):
        super().__init__()
        if dim < 2:
            raise ParameterError(f"a coupling layer needs a dimension of at least 2, got {dim}")
        self.register_buffer("mask", _parity_mask(dim, parity))
        self.net = _mlp([dim + context_dim, *[hidden] * n_hidden, n_out * dim], activation)
        self.context_dim = context_dim

    def _net(self, x: torch.Tensor, context):
        inp = x * self.mask
        if self.context_dim:
            inp = torch.cat([inp, context.expand(*inp.shape[:-1], self.context_dim)], -1)
        return self.net(inp)


class AffineCoupling(_Coupling):
    """Real NVP affine coupling (Dinh et al. 2017, eqs. 4–9): with the mask b,
    y = b ⊙ x + (1 - b) ⊙ (x ⊙ exp(s(b ⊙ x)) + t(b ⊙ x)), s = tanh(·), log|det| = Σ (1 - b) ⊙ s."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        parity: int = 0,
        context_dim: int = 0,
        n_hidden: int = 1,
        activation: str = "tanh",
    ):
        super().__init__(dim, 2, hidden, parity, context_dim, n_hidden, activation)

    def _st(self, x, context):
        s, t = self._net(x, context).chunk(2, dim=-1)
        free = 1 - self.mask
        return torch.tanh(s) * free, t * free

    def forward(self, x, context=None):
        s, t = self._st(x, context)
        return x * self.mask + (1 - self.mask) * (x * s.exp() + t), s.sum(-1)

    def inverse(self, y, context=None):
        s, t = self._st(y, context)
        return y * self.mask + (1 - self.mask) * (y - t) * (-s).exp()


def rational_quadratic_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    tail_bound: float,
    inverse: bool = False,
    min_bin: float = 1e-3,
    min_derivative: float = 1e-3,
):
    """Monotonic rational-quadratic spline on [-B, B], identity outside (Durkan et al. 2019,
    eqs. 4–8 and Appendix A for the inverse). ``widths``/``heights`` (..., K) unnormalised,
    ``derivatives`` (..., K - 1) unconstrained inner knot slopes (outer slopes are 1, so the map
    is C¹ at ±B). Returns (y, log|dy/dx|) in the forward direction, (x, -log|dy/dx|) inverse."""
    K = widths.shape[-1]
    B = tail_bound
    inside = (x >= -B) & (x <= B)
    xc = x.clamp(-B, B)
    w = min_bin + (1 - min_bin * K) * torch.softmax(widths, -1)
    h = min_bin + (1 - min_bin * K) * torch.softmax(heights, -1)
    cw = nn.functional.pad(torch.cumsum(w, -1), (1, 0)) * 2 * B - B  # (..., K + 1)
    ch = nn.functional.pad(torch.cumsum(h, -1), (1, 0)) * 2 * B - B
    cw[..., 0], ch[..., 0], cw[..., -1], ch[..., -1] = -B, -B, B, B  # exact ends
    one = torch.ones_like(derivatives[..., :1])
    d = torch.cat(
        [one, min_derivative + nn.functional.softplus(derivatives) * (1 - min_derivative), one], -1
    )
    knots = ch if inverse else cw
    # the bin of each point: how many inner knots lie below it
    idx = torch.searchsorted(knots[..., 1:-1].contiguous(), xc.unsqueeze(-1).contiguous())
    idx = idx.clamp(0, K - 1)  # (..., 1)

    def take(t):
        return t.gather(-1, idx).squeeze(-1)

    x_k, y_k = take(cw), take(ch)
    w_k, h_k = take(cw[..., 1:] - cw[..., :-1]), take(ch[..., 1:] - ch[..., :-1])
    d_k, d_k1 = take(d[..., :-1]), take(d[..., 1:])
    s_k = h_k / w_k
    if not inverse:
        xi = (xc - x_k) / w_k
        num = h_k * (s_k * xi**2 + d_k * xi * (1 - xi))
        den = s_k + (d_k1 + d_k - 2 * s_k) * xi * (1 - xi)
        y = y_k + num / den
        dnum = s_k**2 * (d_k1 * xi**2 + 2 * s_k * xi * (1 - xi) + d_k * (1 - xi) ** 2)
        log_d = torch.log(dnum) - 2 * torch.log(den)
        return torch.where(inside, y, x), torch.where(inside, log_d, torch.zeros_like(x))
    dy = xc - y_k
    a = h_k * (s_k - d_k) + dy * (d_k1 + d_k - 2 * s_k)
    b = h_k * d_k - dy * (d_k1 + d_k - 2 * s_k)
    c = -s_k * dy
    disc = (b**2 - 4 * a * c).clamp_min(0)
    xi = (2 * c) / (-b - torch.sqrt(disc))
    out = xi * w_k + x_k
    den = s_k + (d_k1 + d_k - 2 * s_k) * xi * (1 - xi)
    dnum = s_k**2 * (d_k1 * xi**2 + 2 * s_k * xi * (1 - xi) + d_k * (1 - xi) ** 2)
    log_d = torch.log(dnum) - 2 * torch.log(den)
    return torch.where(inside, out, x), torch.where(inside, -log_d, torch.zeros_like(x))


class SplineCoupling(_Coupling):
    """Rational-quadratic neural-spline coupling (Durkan et al. 2019): the free coordinates go
    through monotonic splines of ``n_bins`` bins on [-``tail_bound``, ``tail_bound``] whose knots
    are functions of the masked ones; identity outside (linear tails)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        parity: int = 0,
        context_dim: int = 0,
        n_hidden: int = 1,
        activation: str = "relu",
        n_bins: int = 8,
        tail_bound: float = 5.0,
    ):
        check_tail_bound(tail_bound)
        super().__init__(dim, 3 * n_bins - 1, hidden, parity, context_dim, n_hidden, activation)
        self.n_bins, self.tail_bound = n_bins, tail_bound

    def _spline(self, x, context, inverse):
        K = self.n_bins
        p = self._net(x, context).unflatten(-1, (x.shape[-1], 3 * K - 1))  # (..., d, 3K-1)
        y, ld = rational_quadratic_spline(
            x, p[..., :K], p[..., K : 2 * K], p[..., 2 * K :], self.tail_bound, inverse
        )
        free = 1 - self.mask
        return x * self.mask + y * free, (ld * free).sum(-1)

    def forward(self, x, context=None):
        return self._spline(x, context, inverse=False)

    def inverse(self, y, context=None):
        return self._spline(y, context, inverse=True)[0]


# ---- builders and adapters -------------------------------------------------------------------


def make_flow(kind: str, dim: int, n_steps: int, hidden: int = 0, context_dim: int = 0):
    """A ``nn.ModuleList`` of ``n_steps`` ``"planar"`` or ``"iaf"`` posterior steps (VAEs; IAF
    alternates its order)."""
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


def make_density_layers(
    kind: str,
    dim: int,
    n_layers: int,
    hidden: int,
    n_hidden: int = 2,
    n_bins: int = 8,
    tail_bound: float = 5.0,
) -> nn.ModuleList:
    """``n_layers`` layers of a density flow: ``"maf"`` (MADE layers, alternating order),
    ``"realnvp"`` (affine couplings, alternating masks) or ``"spline"`` (rational-quadratic
    couplings, alternating masks)."""
    if n_layers < 1:
        raise ParameterError(f"n_layers must be at least 1, got {n_layers}")
    if kind == "maf":
        return nn.ModuleList(
            MaskedAffine(dim, hidden, reverse=bool(i % 2), n_hidden=n_hidden)
            for i in range(n_layers)
        )
    if kind == "realnvp":
        return nn.ModuleList(
            AffineCoupling(dim, hidden, i % 2, n_hidden=n_hidden, activation="relu")
            for i in range(n_layers)
        )
    if kind == "spline":
        return nn.ModuleList(
            SplineCoupling(
                dim, hidden, i % 2, n_hidden=n_hidden, n_bins=n_bins, tail_bound=tail_bound
            )
            for i in range(n_layers)
        )
    raise ParameterError(f"unknown density flow {kind!r}; choose 'maf', 'realnvp' or 'spline'")


class LayerTransform(Transform):
    """A flow layer as a ``torch.distributions.Transform`` (its ``forward`` direction), for
    ``TransformedDistribution``: sampling calls the layer, ``log_prob`` its inverse."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, layer: nn.Module, context: torch.Tensor | None = None):
        super().__init__(cache_size=1)
        self.layer, self.context = layer, context

    def _call(self, x):
        return self.layer(x, self.context)[0]

    def _inverse(self, y):
        return self.layer.inverse(y, self.context)

    def log_abs_det_jacobian(self, x, y):
        return self.layer(x, self.context)[1]
