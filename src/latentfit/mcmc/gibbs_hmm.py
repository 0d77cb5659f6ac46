"""Gibbs sampling of a Gaussian hidden Markov model by data augmentation, and the same model's
posterior with the states summed out, for NUTS.

``gibbs_hmm`` alternates (Robert, Celeux & Diebolt 1993; Scott 2002)

    states | params:   z_{1:t} ~ p(z | x, params) per sequence by forward filtering, backward
                       sampling (``latentfit.mcmc.gibbs.ffbs``)
    params | states:   start ~ Dirichlet(alpha_start + first-state counts)
                       trans[i] ~ Dirichlet(alpha_trans + counts of transitions i -> j)
                       (mu_k, Sigma_k) ~ Normal-inverse-Wishart posterior of the observations in
                       state k (Murphy 2007, eqs. 252-255; ``niw_update_stats``)

with every chain advancing at once. Label switching is removed as in ``gibbs_gmm``: each kept
draw is relabelled so that the states' means (first coordinate) increase, which under the
exchangeable priors used here is a draw from the posterior restricted to ordered means, the
region ``hmm_conjugate_log_density`` samples with ``ordered_vector``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.distributions import constraints

from latentfit._memory import MAX_WORK
from latentfit._validation import (
    _is_real,
    check_positive,
    check_positive_int,
    device_generator,
)
from latentfit.em.hmm.sequences import check_lengths
from latentfit.errors import DataError, ParameterError
from latentfit.mcmc.budget import (
    ITERATION_WORK,
    check_counts,
    check_iterations,
    check_run,
    gibbs_parts,
)
from latentfit.mcmc.gibbs import (
    _gamma,
    _mvn_log_prob,
    check_co_assignment,
    check_hmm_density,
    draws_to_arviz,
    ffbs,
    niw_prior,
    niw_update_stats,
    observations,
    sample_niw,
    state_statistics,
)
from latentfit.mcmc.result import arviz_call, arviz_mcse, draw_or_item
from latentfit.mcmc.target import ordered_vector

__all__ = [
    "GibbsHMMResult",
    "gibbs_hmm",
    "hmm_conjugate_log_density",
    "hmm_forward_log_likelihood",
    "sample_hmm_chain_params",
    "transition_counts",
]


class GibbsHMMResult(NamedTuple):
    """Draws (chains, draws, ...): ``start`` (k,), ``transmat`` (k, k; row: from), ``means``
    (k, d), ``covariances`` (k, d, d), relabelled so the means' first coordinate increases; and
    ``states``, each sequence's state path of the last sweep (chains, t_i), in the sampler's own
    labelling; ``co_assignment`` (n, n), the fraction of draws with z_i == z_j over the stacked
    rows (label-free, so comparable with exact enumeration), or ``None``."""

    start: torch.Tensor
    transmat: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    states: list
    co_assignment: torch.Tensor | None = None

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        return {
            "start": self.start,
            "transmat": self.transmat,
            "means": self.means,
            "covariances": self.covariances,
        }

    __getitem__ = draw_or_item

    def to_arviz(self):
        """The draws as ArviZ data with a ``posterior`` group (chain, draw, ...)."""
        return draws_to_arviz(self.draws)

    def mcse(self, method: str = "mean") -> dict:
        """Monte-Carlo standard error of each parameter's posterior mean, from ArviZ."""
        ds = arviz_mcse(self.to_arviz(), method)
        return {k: ds[k].values for k in self.draws}

    def summary(self, **kwargs):
        """``arviz.summary`` of the draws (mean, sd, HDI, MCSE, ESS, R-hat)."""
        return arviz_call("summary", self.to_arviz(), **kwargs)


def _sequences(x, lengths) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = observations(x)
    lengths = check_lengths(lengths, x.shape[0])  # as the HMM estimators check them
    return x, list(torch.split(x, lengths))


def transition_counts(paths: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First-state counts (c, k) and transition counts (c, k, k) (row: from) of state paths,
    one (c, t_i) tensor per sequence."""
    c, dev = paths[0].shape[0], paths[0].device
    first = torch.zeros(c, k, dtype=torch.float64, device=dev)
    trans = torch.zeros(c, k * k, dtype=torch.float64, device=dev)
    for z in paths:
        first += torch.nn.functional.one_hot(z[:, 0], k).to(torch.float64)
        if z.shape[1] > 1:
            pair = z[:, :-1] * k + z[:, 1:]  # (c, t - 1): index of the transition
            trans.scatter_add_(1, pair, torch.ones_like(pair, dtype=torch.float64))
    return first, trans.reshape(c, k, k)


def _dirichlet(conc: torch.Tensor, gen) -> torch.Tensor:
    g = _gamma(conc, gen)
    return g / g.sum(-1, keepdim=True)


def sample_hmm_chain_params(paths, k: int, alpha_start, alpha_trans, gen):
    """The Markov chain's conjugate step: start ~ Dirichlet(alpha_start + first-state counts),
    each row of the transition matrix ~ Dirichlet(alpha_trans + its transition counts).
    Returns (start (c, k), transmat (c, k, k))."""
    first, trans = transition_counts(paths, k)
    return _dirichlet(alpha_start + first, gen), _dirichlet(alpha_trans + trans, gen)


def gibbs_hmm(
    x,
    n_states: int,
    *,
    lengths=None,
    num_chains: int = 4,
    num_warmup: int = 200,
    num_draws: int = 1000,
    alpha_start: float = 1.0,
    alpha_trans: float = 1.0,
    prior_loc=None,
    prior_kappa: float = 0.01,
    prior_df: float | None = None,
    prior_scale=None,
    co_assignment: bool | None = None,
    init_states=None,
    generator=None,
    max_work: int | float | None = MAX_WORK,
) -> GibbsHMMResult:
    """Gibbs sampling of a Gaussian HMM by data augmentation (module docstring). The chains
    run where ``x`` is (a CUDA tensor: on that GPU; ``generator`` a seed or a generator there).

    ``x`` (n, d) (or (n,)) stacks sequences of ``lengths`` (default: one sequence). Priors,
    the same for every state: start ~ Dirichlet(alpha_start), each transition row ~
    Dirichlet(alpha_trans); mean | cov ~ N(prior_loc = data mean, cov / prior_kappa); cov ~
    InvWishart(prior_df = d + 2, prior_scale = data covariance / k^(2/d) scaled to df), as in
    ``gibbs_gmm``. ``co_assignment`` as in ``gibbs_gmm``. Every chain starts from the state
    path ``init_states`` (n,) (for example an EM fit's Viterbi path: the HMM likelihood has
    several modes, and chains started from random paths can settle in different ones), or from
    random paths when it is None. Randomness comes only from ``generator`` (a
    ``torch.Generator`` or a seed). ``max_work`` as in ``gibbs_gmm``.
    """
    x, seqs = _sequences(x, lengths)
    k = check_positive_int(n_states, "n_states")
    check_positive(alpha_start, "alpha_start")
    check_positive(alpha_trans, "alpha_trans")
    c, num_warmup, num_draws = check_counts(num_chains, num_warmup, num_draws)
    n, d = x.shape
    dt, dev = x.dtype, x.device
    keep_co = check_co_assignment(co_assignment, n)
    check_run(
        f"Gibbs sampling {c:,} chains x {num_draws:,} draws of a {k}-state HMM on {n:,} rows",
        gibbs_parts(c, num_draws, n, k, k + k * k + k * d + k * d * d, 8, co_assignment=keep_co),
        hint="use fewer chains, draws or states",
    )
    # a sweep: forward filtering, backward sampling row by row (a forward and a backward
    # step of some ten tensor operations a row: 0.12 ms, a tenth of ITERATION_WORK), the
    # rows' log-densities under every state, the states' inverse-Wishart draws
    check_iterations(
        f"Gibbs sampling {c:,} chains of a {k}-state HMM on {n:,} rows",
        num_warmup + num_draws,
        n * ITERATION_WORK // 10 + c * k * (n * (k + d * d + d) + d**3),
        option="num_warmup + num_draws",
        max_work=max_work,
    )
    prior = niw_prior(x, k, prior_loc, prior_kappa, prior_df, prior_scale)
    gen = device_generator(generator, dev, "Gibbs sampling")
    if init_states is None:
        paths = [torch.randint(0, k, (c, s.shape[0]), generator=gen, device=dev) for s in seqs]
    else:
        try:
            z0 = np.asarray(init_states).reshape(-1)
        except (TypeError, ValueError):
            z0 = np.zeros(0, dtype=object)  # ragged: refused below with the expected form
        if z0.shape[0] != n or z0.dtype.kind not in "iu" or z0.min() < 0 or z0.max() >= k:
            # the shape alone was named, also where it was right and the values were not
            if z0.shape[0] != n:
                got = f"shape {tuple(z0.shape)}"
            elif z0.dtype.kind not in "iu":
                got = f"{z0.dtype} values (pass them as integers, e.g. .astype(int))"
            else:
                bad = int(np.flatnonzero((z0 < 0) | (z0 >= k))[0])
                got = f"state {int(z0[bad])} at row {bad}"
            raise DataError(
                f"init_states must hold {n} integer states in 0..{k - 1}, one per row of x; "
                f"got {got}"
            )
        paths = [
            p.expand(c, -1).clone()
            for p in torch.split(
                torch.as_tensor(z0, dtype=torch.long, device=dev), [len(s) for s in seqs]
            )
        ]
    keep = {"start": [], "transmat": [], "means": [], "covariances": []}
    co = torch.zeros(n, n, dtype=dt, device=dev) if keep_co else None
    for it in range(num_warmup + num_draws):
        # params | states
        start, trans = sample_hmm_chain_params(paths, k, alpha_start, alpha_trans, gen)
        z = torch.cat(paths, 1)  # (c, n)
        onehot = torch.nn.functional.one_hot(z, k).to(dt)  # (c, n, k)
        counts, xbar, scatter = state_statistics(onehot, x)
        post = niw_update_stats(*prior, counts, xbar, scatter)
        mu, cov = sample_niw(post, gen, it)  # (c, k, d), (c, k, d, d)
        # states | params
        log_start, log_trans = torch.log(start), torch.log(trans)
        paths = [ffbs(log_start, log_trans, _mvn_log_prob(s, mu, cov), gen) for s in seqs]
        if it >= num_warmup:
            order = torch.argsort(mu[..., 0], -1)  # (c, k): relabel by the first coordinate
            rows = torch.gather(trans, 1, order[..., None].expand(c, k, k))
            keep["start"].append(torch.gather(start, 1, order))
            keep["transmat"].append(torch.gather(rows, 2, order[:, None, :].expand(c, k, k)))
            keep["means"].append(torch.gather(mu, 1, order[..., None].expand(c, k, d)))
            keep["covariances"].append(
                torch.gather(cov, 1, order[..., None, None].expand(c, k, d, d))
            )
            if co is not None:
                z = torch.cat(paths, 1)
                co += (z[:, :, None] == z[:, None, :]).to(dt).sum(0)
    out = {name: torch.stack(v, 1) for name, v in keep.items()}
    return GibbsHMMResult(
        out["start"],
        out["transmat"],
        out["means"],
        out["covariances"],
        paths,
        None if co is None else co / (c * num_draws),
    )


def hmm_forward_log_likelihood(log_start, log_trans, log_obs) -> torch.Tensor:
    """log p(x_{1:t}) by the forward algorithm (Rabiner 1989, eq. 19-21, in log space), batched:
    log_start (..., k), log_trans (..., k, k) (row: from), log_obs (..., t, k)."""
    a = log_start + log_obs[..., 0, :]
    for s in range(1, log_obs.shape[-2]):
        a = torch.logsumexp(a[..., :, None] + log_trans, -2) + log_obs[..., s, :]
    return torch.logsumexp(a, -1)


def hmm_conjugate_log_density(
    x,
    n_states: int,
    *,
    lengths=None,
    alpha_start: float = 1.0,
    alpha_trans: float = 1.0,
    prior_loc: float = 0.0,
    prior_kappa: float = 0.01,
    prior_df: float = 3.0,
    prior_scale: float = 1.0,
):
    """A NUTS target for a univariate Gaussian HMM with the states summed out by the forward
    algorithm, under ``gibbs_hmm``'s priors written out (d = 1, where the Normal-inverse-Wishart
    is a Normal-inverse-gamma): start ~ Dirichlet(alpha_start), transmat rows ~
    Dirichlet(alpha_trans), variances ~ InvGamma(prior_df / 2, prior_scale / 2), means | var ~
    N(prior_loc, var / prior_kappa). Parameters ``start`` (simplex), ``transmat`` (rows on the
    simplex), ``means`` (``ordered_vector``: one of the k! symmetric modes), ``variances``
    (positive). The density takes every chain at once: pass ``vectorized=True`` to ``sample``.
    Returns (log_density, init, constraints)."""
    x, seqs = _sequences(x, lengths)
    if x.shape[1] != 1:
        raise DataError(f"hmm_conjugate_log_density is univariate; x has {x.shape[1]} columns")
    k = check_positive_int(n_states, "n_states")
    check_hmm_density(k, x.shape[0], x.device, "hmm_conjugate_log_density")
    for name, value in (
        ("alpha_start", alpha_start),
        ("alpha_trans", alpha_trans),
        ("prior_kappa", prior_kappa),
        ("prior_df", prior_df),
        ("prior_scale", prior_scale),
    ):
        check_positive(value, name)
    if not _is_real(prior_loc) or not math.isfinite(prior_loc):
        raise ParameterError(f"prior_loc must be a finite number, got {prior_loc!r}")
    D = torch.distributions
    on = dict(dtype=x.dtype, device=x.device)
    dir_start = D.Dirichlet(torch.full((k,), float(alpha_start), **on), validate_args=False)
    dir_trans = D.Dirichlet(torch.full((k, k), float(alpha_trans), **on), validate_args=False)
    inv_gamma = D.InverseGamma(
        torch.tensor(prior_df / 2, **on), torch.tensor(prior_scale / 2, **on), validate_args=False
    )

    def log_density(start, transmat, means, variances):  # (c, k), (c, k, k), (c, k), (c, k)
        log_start, log_trans = torch.log(start), torch.log(transmat)
        sd = variances.sqrt()
        loglik = 0.0
        for s in seqs:
            log_obs = D.Normal(means[:, None], sd[:, None], validate_args=False).log_prob(
                s[None]
            )  # (c, t, k)
            loglik = loglik + hmm_forward_log_likelihood(log_start, log_trans, log_obs)
        prior = dir_start.log_prob(start) + dir_trans.log_prob(transmat).sum(-1)
        prior = prior + inv_gamma.log_prob(variances).sum(-1)
        mean_sd = (variances / prior_kappa).sqrt()
        prior = prior + D.Normal(prior_loc, mean_sd, validate_args=False).log_prob(means).sum(-1)
        return loglik + prior

    var = float(x.var()) if x.shape[0] > 1 else 0.0
    var = var if var > 0 else 1.0  # one row, or constant data: init must be positive
    q = torch.quantile(x[:, 0], torch.linspace(0.2, 0.8, k, **on))
    if not bool((q[1:] > q[:-1]).all()):  # tied quantiles: init must be strictly ordered
        m = float(x.mean())
        q = m + max(var**0.5, 1e-6 * (1 + abs(m))) * torch.linspace(-1, 1, k, **on)
    init = {
        "start": torch.full((k,), 1.0 / k, **on),
        "transmat": torch.full((k, k), 1.0 / k, **on),
        "means": q,
        "variances": torch.full((k,), var, **on),
    }
    cons = {
        "start": constraints.simplex,
        "transmat": constraints.independent(constraints.simplex, 1),
        "means": ordered_vector,
        "variances": constraints.positive,
    }
    return log_density, init, cons
