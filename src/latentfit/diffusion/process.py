"""A DDPM written as the latent-variable model it is (Ho et al. 2020; Sohl-Dickstein et al. 2015).

Latents x_1..x_T; a fixed Gaussian forward process q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I),
so q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I); a learned reverse process
p(x_{t-1} | x_t) = N(μ_θ(x_t, t), σ_t² I) with μ_θ = (x_t - β_t/√(1-ᾱ_t) ε_θ(x_t, t)) / √α_t
and σ_t² fixed or learned per dimension (Nichol & Dhariwal 2021); p(x_T) = N(0, I). The variational bound (Ho et al. 2020, eq. 5)

    -log p(x_0) ≤ L_T + Σ_{t=2}^T L_{t-1} + L_0,
    L_T = KL(q(x_T | x_0) ‖ p(x_T)),
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)),
    L_0 = -E_q log p(x_0 | x_1),

with the discretised Gaussian decoder of their eq. 13 for 8-bit data (so the bound is on the
discrete -log P(x_0), in nats) or a Gaussian density for real data. Time t runs 1..T; the
schedule tensors are indexed by t - 1. Every function takes and returns tensors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from latentfit.errors import ParameterError

__all__ = [
    "BoundTerms",
    "CoarseStep",
    "DiffusionModule",
    "Prediction",
    "Schedule",
    "TimeMLP",
    "coarse_steps",
    "discretized_gaussian_log_likelihood",
    "fit_gaussian",
    "gaussian_eps",
    "gaussian_kl",
    "gaussian_log_density",
    "make_schedule",
    "model_mean",
    "posterior_mean_var",
    "prior_kl",
    "reverse_term",
]

_LOG_2PI = math.log(2 * math.pi)


class Schedule(NamedTuple):
    """β_t, α_t = 1 - β_t, ᾱ_t = Π_{s≤t} α_s, ᾱ_{t-1} (ᾱ_0 = 1), all (T,) float64."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor


def make_schedule(kind: str, n_steps: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Schedule:
    """``"linear"``: β from ``beta_1`` to ``beta_T`` at T = 1000 (Ho et al. 2020, Sec. 4); for
    other T each step is 1000 / T steps of that chain at the same β, α_t = (1 - β_t)^(1000/T),
    so ᾱ_T stays near its T = 1000 value (≈ 4e-5) for every T; or ``"cosine"`` (Nichol &
    Dhariwal 2021, eq. 17), β clipped at 0.999 as in their code."""
    if n_steps < 1:
        raise ParameterError(f"n_steps must be at least 1, got {n_steps}")
    if kind == "linear":
        if not 0 < beta_1 <= beta_T < 1:
            raise ParameterError(f"need 0 < beta_1 <= beta_T < 1, got {beta_1} and {beta_T}")
        # Nichol & Dhariwal's code multiplies β by 1000 / T instead, which matches this for
        # large T but passes 1 below T = 20 and was clipped at 0.999: ᾱ_T then fell to 1e-17 at
        # T = 10 and sampling, which divides by √α_t at every step, overflowed. Compounding keeps
        # every β_t in (0, 1) and equals Ho et al.'s schedule exactly at T = 1000.
        rates = torch.linspace(beta_1, beta_T, n_steps, dtype=torch.float64)
        betas = -torch.expm1((1000.0 / n_steps) * torch.log1p(-rates))
    elif kind == "cosine":
        s = 0.008
        t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ParameterError(f"schedule must be 'linear' or 'cosine', got {kind!r}")
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return Schedule(betas, alphas, alpha_bar, prev)


class CoarseStep(NamedTuple):
    """What :func:`coarse_steps` finds: ``t`` the coarsest step (1..T), with ᾱ before and
    after it (``alpha_bar_prev``, ``alpha_bar``), where it replaces more than a quarter of the
    variance by noise (else None each); ``alpha_bar_T`` where x_T keeps more than a tenth of
    the data's scale (else None)."""

    t: int | None
    alpha_bar_prev: float | None
    alpha_bar: float | None
    alpha_bar_T: float | None


def coarse_steps(sched: Schedule) -> CoarseStep:
    """Where a schedule is too coarse for Gaussian reverse steps.

    The reverse step p(x_{t-1} | x_t) is Gaussian, which q(x_{t-1} | x_t) is only in the limit
    of small steps (Sohl-Dickstein et al. 2015, Sec. 2.2). Step t replaces ᾱ_{t-1} - ᾱ_t of
    the variance of x_t, the data's share, by noise; where one step replaces more than a
    quarter, one Gaussian must turn much noise back into data at once: that step is returned.
    (On Old Faithful every schedule measured with a step past a quarter drew samples whose
    covariance was 33-175% off, against 7-24% for the others.) So is ᾱ_T when √ᾱ_T > 0.1:
    x_T then keeps more than a tenth of the data's scale, and sampling, which starts from
    N(0, I), starts from the wrong place."""
    drop = sched.alpha_bar_prev - sched.alpha_bar  # (T,) the data's share each step removes
    i = int(drop.argmax())
    coarse = bool(drop[i] > 0.25)
    last = float(sched.alpha_bar[-1])
    return CoarseStep(
        i + 1 if coarse else None,
        float(sched.alpha_bar_prev[i]) if coarse else None,
        float(sched.alpha_bar[i]) if coarse else None,
        last if last > 0.01 else None,
    )


def gaussian_kl(mu_q, var_q, mu_p, var_p) -> torch.Tensor:
    """KL(N(μ_q, var_q) ‖ N(μ_p, var_p)) elementwise."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1)


def prior_kl(x0: torch.Tensor, alpha_bar_T) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) = ½ Σ_i (ᾱ_T x_0i² - ᾱ_T - log(1 - ᾱ_T)), the KL of
    N(√ᾱ_T x_0, (1-ᾱ_T) I) from N(0, I) summed over dimensions: (n, d) → (n,). ``alpha_bar_T``
    a number or a one-element tensor."""
    a = float(alpha_bar_T)
    const = -0.5 * x0.shape[-1] * (a + math.log1p(-a)) if a < 1 else math.inf
    return (0.5 * a) * x0.square().sum(-1) + const


def posterior_mean_var(x0, xt, sched: Schedule, t: torch.Tensor):
    """q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. 2020, eqs. 6–7); t (n,) in 2..T."""
    i = t - 1
    b, a, ab, abp = (v[i].to(x0.dtype).unsqueeze(-1) for v in sched)  # (n, 1) each
    mean = (abp.sqrt() * b / (1 - ab)) * x0 + (a.sqrt() * (1 - abp) / (1 - ab)) * xt
    return mean, (1 - abp) / (1 - ab) * b


def model_mean(xt, eps_hat, sched: Schedule, t: torch.Tensor) -> torch.Tensor:
    """μ_θ(x_t, t) = (x_t - β_t / √(1-ᾱ_t) ε_θ) / √α_t (Ho et al. 2020, eq. 11)."""
    i = t - 1
    b, a, ab = (v[i].to(xt.dtype).unsqueeze(-1) for v in sched[:3])
    return (xt - b / (1 - ab).sqrt() * eps_hat) / a.sqrt()


def gaussian_eps(xt, alpha_bar_t, mean, basis, var) -> torch.Tensor:
    """E[ε | x_t] when x_0 ~ N(m, U diag(var) Uᵀ): √(1-ᾱ) (ᾱΣ + (1-ᾱ)I)⁻¹ (x_t - √ᾱ m), the
    posterior mean of the noise under a Gaussian fitted to the data (the Wiener filter; for
    Σ = s² I it is the skip path of Karras et al. 2022). ``alpha_bar_t`` (n, 1); (n, d) → (n, d)."""
    z = (xt - alpha_bar_t.sqrt() * mean) @ basis  # (n, d) in the eigenbasis
    z = z * ((1 - alpha_bar_t).sqrt() / (alpha_bar_t * var + 1 - alpha_bar_t))
    return z @ basis.T


def fit_gaussian(x: torch.Tensor, floor: float):
    """(mean (d,), eigenvectors U (d, d), eigenvalues + ``floor`` (d,)) of the rows of x, float64."""
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(x.shape[0] - 1, 1)
    lam, basis = torch.linalg.eigh(cov)
    return mean, basis, lam.clamp_min(0) + floor


def gaussian_log_density(x, mean, basis, var) -> torch.Tensor:
    """log N(x; m, U diag(var) Uᵀ) per row, (n, d) → (n,)."""
    z = (x.double() - mean) @ basis
    return -0.5 * (z.square() / var + torch.log(2 * math.pi * var)).sum(-1)


def _log_normal_mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Φ(hi) - Φ(lo)) for lo < hi (either may be ±∞), accurate in both tails.

    The interval is reflected to the left of 0, where Φ has no cancellation, and the mass is
    taken from ``ndtr`` (fast); where it underflows, from ``log_ndtr`` (exact, 15x slower on a
    CPU), on those entries only.
    """
    flip = (lo + hi) > 0  # right of centre: Φ(hi) - Φ(lo) = Φ(-lo) - Φ(-hi)
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    mass = torch.special.ndtr(b) - torch.special.ndtr(a)
    tiny = mass < 1e-30
    out = torch.log(mass.clamp_min(1e-30))
    if bool(tiny.any()):
        la, lb = torch.special.log_ndtr(a[tiny]), torch.special.log_ndtr(b[tiny])
        out = out.index_put((tiny,), lb + torch.log(-torch.expm1((la - lb).clamp(max=-1e-30))))
    return out


def discretized_gaussian_log_likelihood(x, mean, log_scale, n_levels: int = 256) -> torch.Tensor:
    """log P(x) of x on the grid {-1, …, 1} of ``n_levels`` points under N(mean, e^{2 log_scale})
    integrated over each point's bin; the end bins reach ±∞ (Ho et al. 2020, eq. 13), so the
    probabilities of the levels sum to one. (n, d) → (n,)."""
    half = 1.0 / (n_levels - 1)  # half a bin
    inv = torch.exp(-log_scale)
    lo, hi = inv * (x - mean - half), inv * (x - mean + half)
    edge = 1 - half  # the end levels sit at ±1
    lo = torch.where(x < -edge, -math.inf, lo)
    hi = torch.where(x > edge, math.inf, hi)
    return _log_normal_mass(lo, hi).sum(-1)


class Prediction(NamedTuple):
    """The reverse step's parameters from the network: ``eps`` ε_θ(x_t, t) (n, d) and
    ``log_var`` log σ_t² of p(x_{t-1} | x_t), (n, d) when learned, (n, 1) when fixed."""

    eps: torch.Tensor
    log_var: torch.Tensor


def reverse_term(x0, xt, t, mu, log_var, sched: Schedule, n_levels: int | None) -> torch.Tensor:
    """The bound's term at time t given x_t, (n,): L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖
    N(μ, e^{log_var})) for t ≥ 2 (Ho et al. 2020, eq. 5), L_0 = -log p(x_0 | x_1) for t = 1 with
    the discretised decoder over ``n_levels`` levels (eq. 13) or a Gaussian density (None)."""
    n_steps = sched.betas.shape[0]
    first = t == 1
    # L_{t-1}: the KL between two Gaussians; at t = 1 a placeholder t = 2 keeps it finite.
    t2 = torch.where(first, torch.full_like(t, min(2, n_steps)), t)
    mu_q, var_q = posterior_mean_var(x0, xt, sched, t2)
    if n_steps == 1:
        var_q = torch.ones_like(var_q)  # no KL term at all; any positive value
    kl = 0.5 * (log_var - var_q.log() + (var_q + (mu_q - mu) ** 2) * torch.exp(-log_var) - 1)
    out = kl.sum(-1)
    if bool(first.any()):  # the decoder, on the rows at t = 1 only
        x, m = x0[first], mu[first]
        log_scale = (0.5 * log_var[first]).expand_as(m)
        if n_levels is None:
            ll = (-0.5 * ((x - m) ** 2 * torch.exp(-2 * log_scale) + 2 * log_scale + _LOG_2PI)).sum(
                -1
            )
        else:
            ll = discretized_gaussian_log_likelihood(x, m, log_scale, n_levels)
        out = out.index_put((first,), -ll.to(out.dtype))
    return out


class BoundTerms(NamedTuple):
    """The terms of the bound in nats, each (n,): ``prior`` L_T, ``diffusion`` Σ_{t≥2} L_{t-1}
    (every t or an unbiased estimate over t, each from one draw of x_t), ``decoder`` L_0;
    ``total`` their sum (≥ -log p(x) in expectation)."""

    prior: torch.Tensor
    diffusion: torch.Tensor
    decoder: torch.Tensor
    total: torch.Tensor


def _time_embedding(t: torch.Tensor, n_steps: int, dim: int) -> torch.Tensor:
    """Sinusoidal features of t / T (Vaswani et al. 2017; Ho et al. 2020, Sec. 4): (n,) → (n, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
    ang = (t.to(freqs.dtype) / n_steps * 1000.0).unsqueeze(-1) * freqs
    return torch.cat([ang.sin(), ang.cos()], -1)


class TimeMLP(nn.Module):
    """ε_θ(x_t, t): an MLP with the time embedding added to every hidden layer (SiLU), sized
    for the CPU. The output layer starts at zero."""

    def __init__(
        self,
        dim: int,
        n_steps: int,
        hidden: int = 512,
        n_hidden: int = 3,
        time_dim: int = 64,
        out_dim: int | None = None,
    ):
        super().__init__()
        self.n_steps, self.time_dim = n_steps, time_dim
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_hidden - 1))
        self.out = nn.Linear(hidden, dim if out_dim is None else out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time(_time_embedding(t, self.n_steps, self.time_dim).to(x.dtype))  # (n, h)
        h = nn.functional.silu(self.inp(x) + emb)
        for layer in self.hidden:
            h = nn.functional.silu(layer(h) + emb)
        return self.out(h)


class DiffusionModule(nn.Module):
    """The DDPM network: a denoiser and the fixed schedule, in the model's space (8-bit levels
    mapped to [-1, 1], real data as given).

    ``variance``: σ_t² = β̃_t (``"small"``, with σ_1² = β̃_2 so the decoder has a width) or β_t
    (``"large"``) (Ho et al. 2020, Sec. 3.2), or ``"learned"``: the denoiser returns 2d
    outputs, ε_θ and v, and σ_t² = exp(v log β_t + (1 - v) log β̃_t) per dimension with
    v = (output + 1) / 2 (Nichol & Dhariwal 2021, eq. 15), trained by L_hybrid = L_simple +
    ``vlb_weight`` · L_vlb with the gradient of L_vlb stopped at μ_θ (their eq. 16).
    ``n_levels``: the decoder is the discretised Gaussian over that many levels; None: a
    Gaussian density (real data). ``gaussian_skip``: ε_θ = E[ε | x_t] under a Gaussian fitted to
    the data (buffers ``skip_mean``, ``skip_basis``, ``skip_var``, set by :meth:`set_gaussian`)
    plus the network's output, so the network learns what the Gaussian misses (with
    ``prediction="eps"`` only). ``clip_denoised`` (8-bit data): x̂_0 = (x_t - √(1-ᾱ_t) ε_θ)/√ᾱ_t
    is clipped to [-1, 1], the data's range, and ε_θ recomputed from it, in training, in the
    bound and in sampling alike (the ``clip_denoised`` option of Ho et al. 2020's and Nichol &
    Dhariwal 2021's code).
    ``decoder_fraction`` q: training draws t = 1 with probability q + (1-q)/T (otherwise t
    uniform on 2..T), weighting the bound's terms by 1/p(t), so that the decoder's learned
    variance sees more than one row in T; with a learned variance and 8-bit data the decoder's
    σ_1 may then go down to a quarter of half a bin.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule,
        dim: int,
        variance: str = "small",
        n_levels: int | None = 256,
        prediction: str = "eps",
        vlb_weight: float = 0.001,
        gaussian_skip: bool = False,
        clip_denoised: bool = False,
        decoder_fraction: float = 0.0,
    ):
        super().__init__()
        self.clip_denoised, self.decoder_fraction = clip_denoised, decoder_fraction
        if prediction not in ("eps", "x0"):
            raise ParameterError(f"prediction must be 'eps' or 'x0', got {prediction!r}")
        if gaussian_skip and prediction != "eps":
            raise ParameterError(
                "gaussian_skip adds E[ε | x_t] to the network's ε; it needs prediction='eps'"
            )
        self.gaussian_skip = gaussian_skip
        if gaussian_skip:  # persistent: saved with the model; N(0, I) until set_gaussian
            self.register_buffer("skip_mean", torch.zeros(dim, dtype=torch.float64))
            self.register_buffer("skip_basis", torch.eye(dim, dtype=torch.float64))
            self.register_buffer("skip_var", torch.ones(dim, dtype=torch.float64))
        self.dim, self.prediction = dim, prediction
        if variance not in ("small", "large", "learned"):
            raise ParameterError(
                f"variance must be 'small', 'large' or 'learned', got {variance!r}"
            )
        self.denoiser, self.variance, self.n_levels = denoiser, variance, n_levels
        self.vlb_weight = vlb_weight
        self.n_steps = schedule.betas.shape[0]
        for name, value in schedule._asdict().items():
            self.register_buffer(name, value, persistent=False)
        b, ab, abp = schedule.betas, schedule.alpha_bar, schedule.alpha_bar_prev
        small = (1 - abp) / (1 - ab) * b
        small[0] = small[1] if self.n_steps > 1 else b[0]  # β̃_1 = 0: the decoder needs a width
        var = b.clone() if variance == "large" else small
        self.register_buffer("sigma2", var, persistent=False)  # fixed σ_t² (unused when learned)
        self.register_buffer("log_sigma2", var.log(), persistent=False)
        # the two ends between which a learned log σ_t² interpolates
        self.register_buffer("log_beta", b.log(), persistent=False)
        low = small.log()
        if n_levels is not None and decoder_fraction > 0:
            # the decoder may learn a width far below a bin, where x̂_0 is sure of its level
            low[0] = min(float(low[0]), 2 * math.log(0.25 / (n_levels - 1)))
        self.register_buffer("log_beta_tilde", low, persistent=False)
        # L_{t-1} = const_t + weight_t ‖ε - ε_θ‖² for t ≥ 2 with a fixed σ_t², since
        # μ̃ - μ_θ = c_t (ε_θ - ε) with c_t = β_t / (√α_t √(1-ᾱ_t)) (Ho et al. 2020, eqs. 10-12):
        # the trainer's estimate of the bound then costs a lookup.
        var_q = (1 - abp) / (1 - ab) * b
        var_q[0] = var[0]  # t = 1 has no KL term; any positive value keeps this finite
        const = 0.5 * dim * (torch.log(var / var_q) + var_q / var - 1)
        weight = b**2 / (schedule.alphas * (1 - ab)) / (2 * var)
        self.register_buffer("kl_const", const, persistent=False)
        self.register_buffer("kl_weight", weight, persistent=False)
        # The training pass's bound estimate L_T + term_t / p(t) for t ≥ 2 as one lookup by t
        # (index 0 unused): est_const[t] + est_weight[t] · ‖ε - ε_θ‖²/d + (ᾱ_T / 2) ‖x_0‖², with
        # 1/p(t), L_T's constant and the factor d folded in (t = 1 rows take the decoder).
        self.alpha_bar_T = float(ab[-1])  # a number: no device read per step
        inv_p = float(self.n_steps)
        if decoder_fraction > 0 and self.n_steps > 1:
            inv_p = self.n_steps / (1 - decoder_fraction)
        prior_const = float(prior_kl(torch.zeros(1, dim, dtype=torch.float64), self.alpha_bar_T))
        pad = torch.zeros(1, dtype=torch.float64)
        self.register_buffer(
            "est_const", torch.cat([pad, inv_p * const + prior_const]), persistent=False
        )
        self.register_buffer("est_weight", torch.cat([pad, inv_p * dim * weight]), persistent=False)

    @torch.no_grad()
    def set_gaussian(self, mean, basis, var) -> None:
        """The Gaussian N(mean, basis diag(var) basisᵀ) of the skip path (see fit_gaussian)."""
        for name, value in (("skip_mean", mean), ("skip_basis", basis), ("skip_var", var)):
            buf = getattr(self, name)
            buf.copy_(value.to(buf.device, buf.dtype))

    def predict(self, xt: torch.Tensor, t: torch.Tensor, with_var: bool = True) -> Prediction:
        """ε_θ(x_t, t) and log σ_t². With ``prediction="x0"`` the network predicts x_0 (through
        tanh for 8-bit data, whose space is [-1, 1]) and ε_θ = (x_t - √ᾱ_t x̂_0) / √(1-ᾱ_t):
        at small t the exact slope 1/√(1-ᾱ_t) is then analytic, not learned. ``with_var=False``
        leaves a fixed log σ_t² out (``log_var`` None): the training pass needs it on t = 1 only."""
        out = self.denoiser(xt, t)
        i = t - 1
        if self.variance != "learned" and not with_var:
            log_var = None
        elif self.variance == "learned":
            out, v = out[..., : self.dim], out[..., self.dim :]  # (n, d) each
            frac = (v.to(xt.dtype) + 1) / 2
            hi = self.log_beta[i].to(xt.dtype).unsqueeze(-1)
            lo = self.log_beta_tilde[i].to(xt.dtype).unsqueeze(-1)
            log_var = frac * hi + (1 - frac) * lo
        else:
            log_var = self.log_sigma2[i].to(xt.dtype).unsqueeze(-1)  # (n, 1)
        if self.prediction == "eps":
            eps = out.to(xt.dtype)
            if self.gaussian_skip:
                ab = self.alpha_bar[i].to(xt.dtype).unsqueeze(-1)
                eps = eps + gaussian_eps(
                    xt,
                    ab,
                    *(b.to(xt.dtype) for b in (self.skip_mean, self.skip_basis, self.skip_var)),
                )
            if self.clip_denoised and self.n_levels is not None:
                ab = self.alpha_bar[i].to(xt.dtype).unsqueeze(-1)
                x0_hat = ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
                eps = (xt - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
            return Prediction(eps, log_var)
        x0_hat = torch.tanh(out) if self.n_levels is not None else out
        ab = self.alpha_bar[i].to(xt.dtype).unsqueeze(-1)
        return Prediction((xt - ab.sqrt() * x0_hat.to(xt.dtype)) / (1 - ab).sqrt(), log_var)

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.betas, self.alphas, self.alpha_bar, self.alpha_bar_prev)

    def q_sample(self, x0, t, eps):
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
        ab = self.alpha_bar[t - 1].to(x0.dtype).unsqueeze(-1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def term(self, x0, t, eps, pred: Prediction | None = None) -> torch.Tensor:
        """The bound's term at time t (n,), for x_t built from ε: L_{t-1} (t ≥ 2, closed-form
        KL given x_t) or L_0 = -log p(x_0 | x_1) (t = 1)."""
        xt = self.q_sample(x0, t, eps)
        if pred is None:
            pred = self.predict(xt, t)
        mu = model_mean(xt, pred.eps.to(x0.dtype), self.schedule, t)
        return reverse_term(x0, xt, t, mu, pred.log_var.to(x0.dtype), self.schedule, self.n_levels)

    def forward(self, x0: torch.Tensor, generator=None):
        """One draw of (t, ε) per row: the training loss (n,), the simplified ‖ε - ε_θ‖² / d
        (Ho et al. 2020, eq. 14), plus ``vlb_weight`` · T · term_t / d with the gradient stopped
        at μ_θ when the variance is learned (Nichol & Dhariwal 2021, eq. 16); and an unbiased
        estimate of the bound, L_T + term_t / p(t) (n,), p(t) = 1/T unless ``decoder_fraction``."""
        n, d = x0.shape
        T, q = self.n_steps, self.decoder_fraction
        t = torch.randint(1, T + 1, (n,), generator=generator, device=x0.device)
        p1 = 1 / T  # p(t = 1)
        weight = float(T)  # 1 / p(t)
        if q > 0 and T > 1:
            pick = torch.rand(n, generator=generator, device=x0.device) < q
            t = torch.where(pick, torch.ones_like(t), t)
            p1, pt = q + (1 - q) / T, (1 - q) / T
            weight = torch.where(t == 1, 1 / p1, 1 / pt).to(x0.dtype)
        # drawn in float64 and rounded, as in bound: a seed trains on the same noise whatever
        # the model's dtype
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        eps = eps.to(x0.dtype)
        xt = self.q_sample(x0, t, eps)
        learned = self.variance == "learned"
        pred = self.predict(xt, t, with_var=learned)
        # ‖ε - ε_θ‖² = SNR_t ‖x_0 - x̂_0‖²: with either output, the ε-loss weights each t as
        # the bound does (up to a factor in t); an unweighted x_0-loss leaves small t inexact.
        loss = (eps - pred.eps).square().mean(-1)  # (n,) ‖ε - ε_θ‖² / d
        if learned:
            mu = model_mean(xt, pred.eps.detach(), self.schedule, t)
            vlb = reverse_term(x0, xt, t, mu, pred.log_var, self.schedule, self.n_levels)
            loss = loss + (self.vlb_weight / d) * weight * vlb
            with torch.no_grad():
                bound = prior_kl(x0, self.alpha_bar_T) + weight * vlb
            return loss, bound
        with torch.no_grad():  # a lookup by t (the training pass's only extra cost)
            bound = torch.addcmul(
                self.est_const[t].to(x0.dtype), self.est_weight[t].to(x0.dtype), loss
            )
            bound = bound.add(torch.linalg.vecdot(x0, x0), alpha=0.5 * self.alpha_bar_T)
            first = t == 1
            if bool(first.any()):  # the decoder L_0, on the rows at t = 1 only
                t1 = t[first]
                log_var = self.log_sigma2[t1 - 1].to(x0.dtype).unsqueeze(-1)  # (n_1, 1)
                dec = self.term(x0[first], t1, eps[first], Prediction(pred.eps[first], log_var))
                dec = dec / p1
                bound = bound.index_put((first,), prior_kl(x0[first], self.alpha_bar_T) + dec)
        return loss, bound

    @torch.no_grad()
    def bound(self, x0: torch.Tensor, generator=None, n_timesteps: int | None = None) -> BoundTerms:
        """L_T + Σ_{t=2}^T L_{t-1} + L_0 per row: every t when ``n_timesteps`` is None, else an
        unbiased stratified estimate of the sum over t ≥ 2 with that many draws of t per row."""
        n, T = x0.shape[0], self.n_steps
        dev = x0.device

        def draw(t):
            # drawn in float64 and rounded: a seed scores a row with the same noise whatever
            # the model's dtype (torch draws other numbers from one seed in float32)
            eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float64)
            return self.term(x0, t, eps.to(x0.dtype))

        prior = prior_kl(x0, self.alpha_bar_T)
        decoder = draw(torch.ones(n, dtype=torch.long, device=dev))
        diffusion = torch.zeros(n, dtype=x0.dtype, device=dev)
        if T > 1 and (n_timesteps is None or n_timesteps >= T - 1):
            for t in range(2, T + 1):
                diffusion += draw(torch.full((n,), t, dtype=torch.long, device=dev))
        elif T > 1:
            k, m = n_timesteps, T - 1  # k strata of the m times 2..T
            for j in range(k):
                lo, hi = j * m // k, (j + 1) * m // k  # stratum: times 2 + lo .. 2 + hi - 1
                u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64)
                t = 2 + lo + torch.floor(u * (hi - lo)).long().clamp(max=hi - lo - 1)
                # a uniform draw times the stratum's size: an unbiased estimate of its sum
                diffusion += draw(t) * (hi - lo)
        return BoundTerms(prior, diffusion, decoder, prior + diffusion + decoder)

    @torch.no_grad()
    def sample(
        self, n: int, generator=None, chunk_rows: int | None = None, real: bool = False
    ) -> torch.Tensor:
        """Ancestral sampling from the learned reverse process; x_0 is the decoder's mean (then
        rounded to a level for 8-bit data, unless ``real``: :meth:`levels` rounds it).
        ``chunk_rows`` bounds the rows of one network call (its activations are rows x hidden
        each); the draws do not depend on it."""
        p = self.betas
        dtype = next(self.denoiser.parameters()).dtype
        x = torch.randn((n, self.dim), generator=generator, device=p.device, dtype=dtype)
        rows = n if chunk_rows is None else max(1, int(chunk_rows))
        for t in range(self.n_steps, 0, -1):
            tt = torch.full((n,), t, dtype=torch.long, device=p.device)
            if rows >= n:
                pred = self.predict(x, tt)
            else:  # row by row the same network: the pieces are the whole call's rows
                parts = [self.predict(x[i : i + rows], tt[i : i + rows]) for i in range(0, n, rows)]
                pred = type(parts[0])(
                    *(None if f[0] is None else torch.cat(f) for f in zip(*parts, strict=True))
                )
            mu = model_mean(x, pred.eps, self.schedule, tt)
            if t > 1:
                z = torch.randn(x.shape, generator=generator, device=p.device, dtype=dtype)
                x = mu + torch.exp(0.5 * pred.log_var) * z
            else:
                x = mu
        if self.n_levels is None or real:
            return x
        return self.levels(x)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """Levels 0..L-1 (as floats) of decoder means x (n, d) in [-1, 1]'s scale: a mean a
        little beyond the range is clipped to the end level."""
        return torch.round((x.clamp(-1, 1) + 1) / 2 * (self.n_levels - 1))
