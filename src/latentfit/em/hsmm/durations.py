"""Duration distributions of the hidden semi-Markov models: pure functions on tensors.

Every family is a pmf over d = 1..D (D the maximum duration), truncated at D and renormalised:

* ``"poisson"``: d − 1 ~ Poisson(λ_k) (the shifted Poisson, Yu 2010);
* ``"negative_binomial"``: d − 1 ~ NegativeBinomial(r_k, p_k), torch's parametrisation
  (mean r p / (1 − p)), over-dispersed durations;
* ``"nonparametric"``: a free probability vector per state (Ferguson 1980).

The M-steps maximise Σ_d c_k(d) log p_k(d) over the expected duration counts c (k, D) of the
E-step: in closed form for the nonparametric pmf, by bisection on the mean of the truncated
Poisson (an exponential family in log λ: its likelihood equation matches the truncated mean to
the observed mean), and by L-BFGS for the negative binomial, kept only if it improves on the
previous parameters (a generalised EM step, so the likelihood still never decreases).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Poisson

__all__ = [
    "DURATION_FAMILIES",
    "duration_log_pmf",
    "negative_binomial_log_pmf",
    "negative_binomial_mstep",
    "nonparametric_mstep",
    "poisson_log_pmf",
    "poisson_mstep",
]

DURATION_FAMILIES = ("poisson", "negative_binomial", "nonparametric")
_MIN_RATE, _MAX_RATE = 1e-8, 1e8


def _durations(max_duration: int, like: torch.Tensor) -> torch.Tensor:
    """d − 1 for d = 1..D, (D,)."""
    return torch.arange(max_duration, dtype=like.dtype, device=like.device)


def _normalise(log_p: torch.Tensor) -> torch.Tensor:
    return log_p - torch.logsumexp(log_p, -1, keepdim=True)


def poisson_log_pmf(lambdas: torch.Tensor, max_duration: int) -> torch.Tensor:
    """log p_k(d) (k, D) of d − 1 ~ Poisson(λ_k) truncated at D."""
    x = _durations(max_duration, lambdas)
    return _normalise(Poisson(lambdas.unsqueeze(1)).log_prob(x))


def negative_binomial_log_pmf(r: torch.Tensor, p: torch.Tensor, max_duration: int) -> torch.Tensor:
    """log p_k(d) (k, D) of d − 1 ~ NegativeBinomial(r_k, p_k) truncated at D: log C(x + r − 1,
    x) + r log(1 − p) + x log p with x = d − 1 (torch's parametrisation, written out so that a
    p rounded to 1 in float32 stays a distribution: p is kept one rounding unit below 1)."""
    x = _durations(max_duration, r)
    r, p = r.unsqueeze(1), p.unsqueeze(1).clamp(max=1 - torch.finfo(p.dtype).eps)
    log_pmf = torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1)
    return _normalise(log_pmf + r * torch.log1p(-p) + torch.xlogy(x, p))


def duration_log_pmf(family: str, params: dict, max_duration: int) -> torch.Tensor:
    """log p_k(d) (k, D) of the family's parameters (``params`` as the models keep them)."""
    if family == "poisson":
        return poisson_log_pmf(params["duration_lambdas"], max_duration)
    if family == "negative_binomial":
        return negative_binomial_log_pmf(params["duration_r"], params["duration_p"], max_duration)
    probs = params["duration_probs"]
    return torch.where(probs > 0, probs, 1.0).log().masked_fill(probs <= 0, -math.inf)


def _empty(total: torch.Tensor) -> torch.Tensor:
    return total <= 10 * torch.finfo(total.dtype).eps


def nonparametric_mstep(counts: torch.Tensor, old: torch.Tensor):
    """p_k(d) ∝ c_k(d) (k, D); a state with no segment keeps ``old`` and is reported."""
    total = counts.sum(1, keepdim=True)
    empty = _empty(total.squeeze(1))
    new = torch.where(
        empty.unsqueeze(1), old, counts / torch.where(empty, 1.0, total.squeeze(1)).unsqueeze(1)
    )
    return new, empty.nonzero().flatten().tolist()


def poisson_mstep(counts: torch.Tensor, old: torch.Tensor, n_bisect: int = 80):
    """λ_k maximising Σ_d c_k(d) log p_k(d) for the truncated shifted Poisson: the λ whose
    truncated mean of d − 1 equals the observed one (bisection on log λ; the truncated mean
    increases with λ). Without truncation (the counts end well before D) this is the mean."""
    big_d = counts.shape[1]
    total = counts.sum(1)
    empty = _empty(total)
    x = _durations(big_d, counts)
    target = (counts * x).sum(1) / torch.where(empty, 1.0, total)  # (k,) mean of d − 1
    lo = torch.full_like(target, math.log(_MIN_RATE))
    hi = torch.full_like(target, math.log(_MAX_RATE))
    for _ in range(n_bisect):
        mid = (lo + hi) / 2
        # a Poisson of rate at most `top` has no mass a double can hold beyond
        # top + 40 sqrt(top) + 50: the truncated mean needs no more durations than that (a
        # max_duration of 1e6 on 30 rows took 16 s, 80 passes over every duration)
        top = float(hi.exp().max())
        size = min(big_d, int(top + 40 * math.sqrt(top) + 50))
        mean = (poisson_log_pmf(mid.exp(), size).exp() * x[:size]).sum(1)
        low = mean < target
        lo = torch.where(low, mid, lo)
        hi = torch.where(low, hi, mid)
    new = ((lo + hi) / 2).exp()
    if big_d == 1:  # every duration is 1 whatever λ: nothing to estimate
        new = old.clone()
    new = torch.where(empty, old, new)
    return new, empty.nonzero().flatten().tolist()


def _negative_binomial_objective(counts, log_r, logit_p, big_d):
    # the line search may try any value: keep r and p inside their supports (clamped, the
    # gradient vanishes outside and the search comes back)
    r = log_r.clamp(math.log(_MIN_RATE), math.log(_MAX_RATE)).exp()
    log_pmf = negative_binomial_log_pmf(r, torch.sigmoid(logit_p.clamp(-30.0, 30.0)), big_d)
    return (counts * torch.where(counts > 0, log_pmf, 0.0)).sum(1)  # (k,)


def negative_binomial_mstep(counts: torch.Tensor, old_r: torch.Tensor, old_p: torch.Tensor):
    """(r_k, p_k) improving Σ_d c_k(d) log p_k(d) for the truncated shifted negative binomial:
    L-BFGS on (log r, logit p) from the previous values, kept per state only where it gains."""
    total = counts.sum(1)
    empty = _empty(total)
    big_d = counts.shape[1]
    c = counts.detach().double()
    start_r, start_p = old_r.detach().double().log(), torch.logit(old_p.detach().double())
    log_r = start_r.clone().requires_grad_(True)
    logit_p = start_p.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [log_r, logit_p], max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )
    scale = c.sum().clamp_min(1.0)

    def closure():
        opt.zero_grad()
        loss = -_negative_binomial_objective(c, log_r, logit_p, big_d).sum() / scale
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        log_r.clamp_(math.log(_MIN_RATE), math.log(_MAX_RATE))
        logit_p.clamp_(-30.0, 30.0)
        before = _negative_binomial_objective(c, start_r, start_p, big_d)
        after = _negative_binomial_objective(c, log_r, logit_p, big_d)
        keep = empty | ~(after > before) | ~torch.isfinite(after)
        new_r = torch.where(keep, start_r, log_r).exp().to(old_r.dtype)
        new_p = torch.sigmoid(torch.where(keep, start_p, logit_p)).to(old_p.dtype)
        eps = torch.finfo(old_p.dtype).eps  # inside (0, 1) after rounding to the model's dtype
        new_p = new_p.clamp(min=eps, max=1 - eps)
    return new_r, new_p, empty.nonzero().flatten().tolist()
