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

Durations past the data. A sequence of t steps reads the pmf at d ≤ t and its tail P(d ≥ e)
for e ≤ t only, so the recursions need the pmf over 1..min(D, t) and the mass beyond. When
``width`` (the longest sequence) is given, :func:`duration_log_pmf` returns the pmf over
1..W columns with W ≤ D, where W covers the durations up to ``width`` and every duration
beyond it whose probability a double holds relative to the tail it belongs to (a Poisson's
mass ends some 11 sqrt(λ) past its mean; a nonparametric pmf at its last non-zero
probability). Every duration past W has probability 0 to double precision, so inference and
the M-steps over W columns are the computation over D. The cost then depends on the data and
the parameters, not on D. The negative binomial's M-step fits the pmf truncated at D and
needs all D columns.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Poisson

__all__ = [
    "DURATION_FAMILIES",
    "duration_log_pmf",
    "duration_support",
    "negative_binomial_log_pmf",
    "negative_binomial_mstep",
    "nonparametric_mstep",
    "poisson_log_pmf",
    "poisson_mstep",
    "poisson_support",
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


#: how far (in log-probability) past its largest term a tail is summed: the terms left out
#: are below e^-60 ≈ 1e-26 of it, and shrink geometrically from there (see poisson_support)
_TAIL_DROP = 60.0


def poisson_support(lambdas: torch.Tensor, width: int, max_duration: int) -> int:
    """The columns W ≤ D (durations 1..W) that hold the shifted Poisson's pmf truncated at D to
    double precision, for sequences of at most ``width`` steps: W covers 1..``width`` and the
    tail from x0 = max(``width`` − 1, the mode) until its terms fall ``_TAIL_DROP`` below
    f(x0) (x = d − 1, log f(x) = x log λ − λ − lgamma(x + 1), decreasing past the mode). The
    terms left out then shrink at least geometrically, with ratio λ/(x + 1) < 1 − 10/sqrt(λ)
    for large λ, so their sum is below 1e-26 × (1 + sqrt(λ)/10) of f(x0), itself at most the
    smallest tail the sequences read (P(d ≥ width)) and the normaliser. Found by doubling,
    then bisection, on log f: a few scalar lgammas, whatever D."""
    big_d = int(max_duration)
    if int(width) >= big_d:
        return big_d
    lam = float(lambdas.detach().double().max())
    x0 = max(int(width) - 1, math.floor(lam))  # the largest term of the tail at or past x0

    def drop(x: int) -> float:  # log f(x0) − log f(x) (>= 0 for x >= x0 >= the mode)
        return (x0 - x) * math.log(lam) + math.lgamma(x + 1) - math.lgamma(x0 + 1)

    hi = 1
    while x0 + hi < big_d and drop(x0 + hi) < _TAIL_DROP:
        hi *= 2
    lo, hi = 0, min(hi, big_d - x0)
    while hi - lo > 1:  # drop(x0 + lo) < _TAIL_DROP <= drop(x0 + hi), or x0 + hi = D
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if drop(x0 + mid) < _TAIL_DROP else (lo, mid)
    return min(big_d, x0 + hi + 1)  # columns: d − 1 = 0..x0 + hi


def duration_support(family: str, params: dict, max_duration: int, width: int) -> int:
    """The columns W ≤ D over which the family's pmf is computed for sequences of at most
    ``width`` steps: every duration past W has probability 0 to double precision (see the
    module docstring). The negative binomial's is D."""
    big_d = int(max_duration)
    if family == "poisson":
        return poisson_support(params["duration_lambdas"], width, big_d)
    if family == "nonparametric":
        used = (params["duration_probs"] > 0).any(0).nonzero()  # (n_used, 1)
        last = int(used[-1]) + 1 if len(used) else 1
        return min(big_d, max(int(width), last))
    return big_d


def duration_log_pmf(
    family: str, params: dict, max_duration: int, width: int | None = None
) -> torch.Tensor:
    """log p_k(d) of the family's parameters (``params`` as the models keep them): (k, D), or
    with ``width`` (the longest sequence), (k, W) over the durations 1..W of
    :func:`duration_support`, the rest 0 to double precision."""
    big_d = int(max_duration)
    w = big_d if width is None else duration_support(family, params, big_d, width)
    if family == "poisson":
        return poisson_log_pmf(params["duration_lambdas"], w)  # normalised over 1..W = over D
    if family == "negative_binomial":
        return negative_binomial_log_pmf(params["duration_r"], params["duration_p"], big_d)
    probs = params["duration_probs"][:, :w]
    return torch.where(probs > 0, probs, 1.0).log().masked_fill(probs <= 0, -math.inf)


def _empty(total: torch.Tensor) -> torch.Tensor:
    return total <= 10 * torch.finfo(total.dtype).eps


def nonparametric_mstep(counts: torch.Tensor, old: torch.Tensor):
    """p_k(d) ∝ c_k(d) (k, D), from counts (k, W) over the first W ≤ D durations (0 beyond);
    a state with no segment keeps ``old`` (k, D) and is reported."""
    total = counts.sum(1, keepdim=True)
    empty = _empty(total.squeeze(1))
    new = torch.zeros_like(old)
    new[:, : counts.shape[1]] = counts / torch.where(empty, 1.0, total.squeeze(1)).unsqueeze(1)
    new[empty] = old[empty]
    return new, empty.nonzero().flatten().tolist()


def poisson_mstep(
    counts: torch.Tensor, old: torch.Tensor, n_bisect: int = 80, max_duration: int | None = None
):
    """λ_k maximising Σ_d c_k(d) log p_k(d) for the shifted Poisson truncated at D
    (``max_duration``; default the counts' W columns, 0 beyond): the λ whose truncated mean of
    d − 1 equals the observed one (bisection on log λ; the truncated mean increases with λ).
    When the Poisson of the observed mean has no mass a double holds at D or beyond, that
    mean is the answer (the truncated mean is the mean): then the work does not grow with D."""
    big_d = counts.shape[1] if max_duration is None else int(max_duration)
    total = counts.sum(1)
    empty = _empty(total)
    x = _durations(counts.shape[1], counts)
    target = (counts * x).sum(1) / torch.where(empty, 1.0, total)  # (k,) mean of d − 1
    top = float(target.max())
    if big_d > 1 and top + 40 * math.sqrt(top) + 50 < big_d - 1:
        new = torch.where(empty, old, target.clamp(_MIN_RATE, _MAX_RATE))
        return new, empty.nonzero().flatten().tolist()
    x = _durations(big_d, counts)  # here D is within the mass of the largest target's Poisson
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
    log_pmf = log_pmf[:, : counts.shape[1]]  # normalised over 1..D; the counts end at W
    return (counts * torch.where(counts > 0, log_pmf, 0.0)).sum(1)  # (k,)


def negative_binomial_mstep(
    counts: torch.Tensor, old_r: torch.Tensor, old_p: torch.Tensor, max_duration: int | None = None
):
    """(r_k, p_k) improving Σ_d c_k(d) log p_k(d) for the shifted negative binomial truncated at
    D (``max_duration``; default the counts' W columns, 0 beyond): L-BFGS on (log r, logit p)
    from the previous values, kept per state only where it gains. Every evaluation computes
    the pmf over all D durations (time and memory grow with k × D)."""
    total = counts.sum(1)
    empty = _empty(total)
    big_d = counts.shape[1] if max_duration is None else int(max_duration)
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
