"""A DDPM written as the latent-variable model it is (Ho et al. 2020; Sohl-Dickstein et al. 2015).

Latents x_1..x_T; a fixed Gaussian forward process q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I),
so q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I); a learned reverse process
p(x_{t-1} | x_t) = N(μ_θ(x_t, t), σ_t² I) with μ_θ = (x_t - β_t/√(1-ᾱ_t) ε_θ(x_t, t)) / √α_t;
p(x_T) = N(0, I). The variational bound (Ho et al. 2020, eq. 5)

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
    "DiffusionModule",
    "Schedule",
    "TimeMLP",
    "discretized_gaussian_log_likelihood",
    "gaussian_kl",
    "make_schedule",
    "model_mean",
    "posterior_mean_var",
    "prior_kl",
]

_LOG_2PI = math.log(2 * math.pi)


class Schedule(NamedTuple):
    """β_t, α_t = 1 - β_t, ᾱ_t = Π_{s≤t} α_s, ᾱ_{t-1} (ᾱ_0 = 1), all (T,) float64."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor


def make_schedule(kind: str, n_steps: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Schedule:
    """``"linear"``: β from ``beta_1`` to ``beta_T`` at T = 1000 (Ho et al. 2020, Sec. 4), both
    multiplied by 1000 / T for other T so that ᾱ_T stays near 0 (the rule of Nichol & Dhariwal
    2021's code), β clipped at 0.999; or ``"cosine"`` (Nichol & Dhariwal 2021, eq. 17)."""
    if n_steps < 1:
        raise ParameterError(f"n_steps must be at least 1, got {n_steps}")
    if kind == "linear":
        if not 0 < beta_1 <= beta_T < 1:
            raise ParameterError(f"need 0 < beta_1 <= beta_T < 1, got {beta_1} and {beta_T}")
        scale = 1000.0 / n_steps
        betas = torch.linspace(beta_1 * scale, beta_T * scale, n_steps, dtype=torch.float64)
        betas = betas.clamp(max=0.999)
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


def gaussian_kl(mu_q, var_q, mu_p, var_p) -> torch.Tensor:
    """KL(N(μ_q, var_q) ‖ N(μ_p, var_p)) elementwise."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1)


def prior_kl(x0: torch.Tensor, alpha_bar_T) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)), summed over dimensions: (n, d) → (n,)."""
    a = torch.as_tensor(alpha_bar_T, dtype=x0.dtype, device=x0.device)
    return gaussian_kl(a.sqrt() * x0, 1 - a, torch.zeros_like(x0), torch.ones_like(x0)).sum(-1)


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


class BoundTerms(NamedTuple):
    """The terms of the bound in nats, each (n,): ``prior`` L_T, ``diffusion`` Σ_{t≥2} L_{t-1}
    (exact sum or an unbiased estimate), ``decoder`` L_0; ``total`` their sum (≥ -log p(x))."""

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
        self, dim: int, n_steps: int, hidden: int = 512, n_hidden: int = 3, time_dim: int = 64
    ):
        super().__init__()
        self.n_steps, self.time_dim = n_steps, time_dim
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_hidden - 1))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time(_time_embedding(t, self.n_steps, self.time_dim).to(x.dtype))  # (n, h)
        h = nn.functional.silu(self.inp(x) + emb)
        for layer in self.hidden:
            h = nn.functional.silu(layer(h) + emb)
        return self.out(h)


class DiffusionModule(nn.Module):
    """The DDPM network: a denoiser ε_θ(x_t, t) and the fixed schedule, in the model's space
    (8-bit levels mapped to [-1, 1], real data as given).

    ``variance``: σ_t² = β̃_t (``"small"``, with σ_1² = β̃_2 so the decoder has a width) or β_t
    (``"large"``) (Ho et al. 2020, Sec. 3.2). ``n_levels``: the decoder is the discretised
    Gaussian over that many levels; None: a Gaussian density (real data).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule,
        dim: int,
        variance: str = "small",
        n_levels: int | None = 256,
        prediction: str = "eps",
    ):
        super().__init__()
        if prediction not in ("eps", "x0"):
            raise ParameterError(f"prediction must be 'eps' or 'x0', got {prediction!r}")
        self.dim, self.prediction = dim, prediction
        if variance not in ("small", "large"):
            raise ParameterError(f"variance must be 'small' or 'large', got {variance!r}")
        self.denoiser, self.variance, self.n_levels = denoiser, variance, n_levels
        self.n_steps = schedule.betas.shape[0]
        for name, value in schedule._asdict().items():
            self.register_buffer(name, value, persistent=False)
        b, ab, abp = schedule.betas, schedule.alpha_bar, schedule.alpha_bar_prev
        if variance == "large":
            var = b.clone()
        else:
            var = (1 - abp) / (1 - ab) * b
            var[0] = var[1] if self.n_steps > 1 else b[0]
        self.register_buffer("sigma2", var, persistent=False)
        # L_{t-1} = const_t + weight_t ‖ε - ε_θ‖² for t ≥ 2, since μ̃ - μ_θ = c_t (ε_θ - ε) with
        # c_t = β_t / (√α_t √(1-ᾱ_t)) (Ho et al. 2020, eqs. 10-12): the trainer's estimate
        # of the bound then costs a lookup.
        var_q = (1 - abp) / (1 - ab) * b
        var_q[0] = var[0]  # t = 1 has no KL term; any positive value keeps this finite
        const = 0.5 * dim * (torch.log(var / var_q) + var_q / var - 1)
        weight = b**2 / (schedule.alphas * (1 - ab)) / (2 * var)
        self.register_buffer("kl_const", const, persistent=False)
        self.register_buffer("kl_weight", weight, persistent=False)

    def predict(self, xt: torch.Tensor, t: torch.Tensor):
        """(ε_θ(x_t, t), x̂_0 or None). With ``prediction="x0"`` the network predicts x_0 (through
        tanh for 8-bit data, whose space is [-1, 1]) and ε_θ = (x_t - √ᾱ_t x̂_0) / √(1-ᾱ_t):
        at small t the exact slope 1/√(1-ᾱ_t) is then analytic, not learned."""
        out = self.denoiser(xt, t)
        if self.prediction == "eps":
            return out, None
        x0_hat = torch.tanh(out) if self.n_levels is not None else out
        ab = self.alpha_bar[t - 1].to(xt.dtype).unsqueeze(-1)
        return (xt - ab.sqrt() * x0_hat.to(xt.dtype)) / (1 - ab).sqrt(), x0_hat

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.betas, self.alphas, self.alpha_bar, self.alpha_bar_prev)

    def q_sample(self, x0, t, eps):
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
        ab = self.alpha_bar[t - 1].to(x0.dtype).unsqueeze(-1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def term(self, x0, t, eps, eps_hat=None) -> torch.Tensor:
        """The bound's term at time t (n,), for x_t built from ε: L_{t-1} (t ≥ 2, closed-form
        KL given x_t) or L_0 = -log p(x_0 | x_1) (t = 1)."""
        xt = self.q_sample(x0, t, eps)
        if eps_hat is None:
            eps_hat = self.predict(xt, t)[0]
        mu = model_mean(xt, eps_hat.to(x0.dtype), self.schedule, t)
        var_p = self.sigma2[t - 1].to(x0.dtype).unsqueeze(-1)
        first = t == 1
        # L_{t-1}: the KL between two Gaussians; at t = 1 a placeholder t = 2 keeps it finite.
        t2 = torch.where(first, torch.full_like(t, min(2, self.n_steps)), t)
        mu_q, var_q = posterior_mean_var(x0, xt, self.schedule, t2)
        out = gaussian_kl(mu_q, var_q, mu, var_p).sum(-1)
        if bool(first.any()):  # the decoder, on the rows at t = 1 only
            x, m = x0[first], mu[first]
            log_scale = (0.5 * torch.log(var_p[first])).expand_as(m)
            if self.n_levels is None:
                ll = (
                    -0.5 * ((x - m) ** 2 * torch.exp(-2 * log_scale) + 2 * log_scale + _LOG_2PI)
                ).sum(-1)
            else:
                ll = discretized_gaussian_log_likelihood(x, m, log_scale, self.n_levels)
            out = out.index_put((first,), -ll.to(out.dtype))
        return out

    def forward(self, x0: torch.Tensor, generator=None):
        """One draw of (t, ε) per row: the simplified loss ‖ε - ε_θ‖² / d (Ho et al. 2020,
        eq. 14) and an unbiased estimate of the bound, L_T + T · term_t (n,) each."""
        n = x0.shape[0]
        t = torch.randint(1, self.n_steps + 1, (n,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        eps_hat = self.predict(self.q_sample(x0, t, eps), t)[0]
        sq = (eps - eps_hat.to(x0.dtype)).square().sum(-1)  # (n,)
        # ‖ε - ε_θ‖² = SNR_t ‖x_0 - x̂_0‖²: with either output, the ε-loss weights each t as
        # the bound does (up to a factor in t); an unweighted x_0-loss leaves small t inexact.
        loss = sq
        with torch.no_grad():
            i = t - 1
            term = self.kl_const[i].to(x0.dtype) + self.kl_weight[i].to(x0.dtype) * sq
            first = t == 1
            if bool(first.any()):
                dec = self.term(x0[first], t[first], eps[first], eps_hat[first].detach())
                term = term.index_put((first,), dec.to(term.dtype))
            bound = prior_kl(x0, self.alpha_bar[-1]) + self.n_steps * term
        return loss / x0.shape[-1], bound

    @torch.no_grad()
    def bound(self, x0: torch.Tensor, generator=None, n_timesteps: int | None = None) -> BoundTerms:
        """L_T + Σ_{t=2}^T L_{t-1} + L_0 per row: every t when ``n_timesteps`` is None, else an
        unbiased stratified estimate of the sum over t ≥ 2 with that many draws of t per row."""
        n, T = x0.shape[0], self.n_steps
        dev = x0.device

        def draw(t):
            eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
            return self.term(x0, t, eps)

        prior = prior_kl(x0, self.alpha_bar[-1])
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
    def sample(self, n: int, generator=None) -> torch.Tensor:
        """Ancestral sampling from the learned reverse process; x_0 is the decoder's mean (then
        rounded to a level for 8-bit data)."""
        p = self.betas
        dtype = next(self.denoiser.parameters()).dtype
        x = torch.randn((n, self.dim), generator=generator, device=p.device, dtype=dtype)
        for t in range(self.n_steps, 0, -1):
            tt = torch.full((n,), t, dtype=torch.long, device=p.device)
            mu = model_mean(x, self.predict(x, tt)[0], self.schedule, tt)
            if t > 1:
                z = torch.randn(x.shape, generator=generator, device=p.device, dtype=dtype)
                x = mu + self.sigma2[t - 1].to(dtype).sqrt() * z
            else:
                x = mu
        if self.n_levels is None:
            return x
        return torch.round((x.clamp(-1, 1) + 1) / 2 * (self.n_levels - 1))
