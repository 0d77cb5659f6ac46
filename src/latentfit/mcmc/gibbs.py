"""Gibbs sampling with data augmentation, and latent-variable log-densities for NUTS.

``gibbs_gmm``: a Gaussian mixture with conjugate priors (weights ~ Dirichlet(alpha); each
component's mean and covariance ~ Normal-inverse-Wishart), sampled by alternating

    labels | params:   z_i ~ Categorical(w_k N(x_i | mu_k, Sigma_k))
    params | labels:   w ~ Dirichlet(alpha + counts),  (mu_k, Sigma_k) ~ NIW posterior of the
                       points labelled k (Murphy 2007, eqs. 252-255: the update of
                       latentfit.estimate.NormalInverseWishart, written on sufficient statistics)

(Diebolt & Robert 1994). Every chain advances at once: labels (c, n), means (c, k, d),
covariances (c, k, d, d). Randomness comes only from the generator (Bartlett's decomposition for
the inverse-Wishart draws, the Gumbel-max trick for the labels).

``gibbs_hmm_states``: forward filtering, backward sampling (Frühwirth-Schnatter 1994; Scott 2002)
of a hidden state path given an HMM's parameters, batched over chains.

``gmm_log_density`` and ``hmm_log_density`` give NUTS targets with the labels or states summed
out (log-sum-exp over components; the forward algorithm). Label switching is handled by
ordering: the components' means (their first coordinate) are constrained increasing with
``ordered_vector``, which picks one of the k! symmetric modes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.distributions import constraints

from latentfit._memory import MAX_WORK
from latentfit._moments import column_moments
from latentfit._validation import (
    as_float_tensor,
    check_allocation,
    check_positive,
    check_positive_int,
    device_generator,
)
from latentfit.em.gaussian import check_overflow
from latentfit.errors import DataError, ParameterError, ResourceLimitError
from latentfit.mcmc.budget import check_counts, check_iterations, check_run, gibbs_parts
from latentfit.mcmc.result import arviz_call, arviz_from_dict, arviz_mcse, draw_or_item
from latentfit.mcmc.target import ordered_vector

__all__ = [
    "CO_ASSIGNMENT_ROWS",
    "GibbsGMMResult",
    "check_co_assignment",
    "check_hmm_density",
    "draws_to_arviz",
    "ffbs",
    "gibbs_gmm",
    "gmm_log_density",
    "hmm_log_density",
    "niw_prior",
    "niw_update_stats",
    "observations",
    "sample_inverse_wishart",
    "sample_niw",
    "state_statistics",
]


class NIWBatch(NamedTuple):
    loc: torch.Tensor  # (..., d)
    kappa: torch.Tensor  # (...)
    df: torch.Tensor  # (...)
    scale: torch.Tensor  # (..., d, d)


def niw_update_stats(loc, kappa, df, scale, n, xbar, scatter) -> NIWBatch:
    """The Normal-inverse-Wishart posterior from sufficient statistics, batched: counts n (...),
    means xbar (..., d), scatter matrices about xbar (..., d, d). Murphy (2007) eqs. 252-255,
    as ``latentfit.estimate.conjugate_normal.normal_inverse_wishart_update`` (an empty component,
    n = 0, keeps the prior)."""
    kn = kappa + n
    dm = xbar - loc  # (..., d)
    outer = dm[..., :, None] * dm[..., None, :]
    return NIWBatch(
        (kappa * loc + n[..., None] * xbar) / kn[..., None],
        kn,
        df + n,
        scale + scatter + (kappa * n / kn)[..., None, None] * outer,
    )


def observations(x, min_rows: int = 1) -> torch.Tensor:
    """``x`` (n, d) or (n,) as a float64 (n, d) tensor of finite numbers with at least
    ``min_rows`` rows, whose Gaussian statistics do not overflow; bad input is named by row
    and column (``latentfit._validation.as_float_tensor``)."""
    device = x.device if isinstance(x, torch.Tensor) else None  # a tensor stays where it is
    # the rows are counted here, after the shape, against what the caller needs (not 1)
    x = as_float_tensor(x, name="x", ndim=None, device=device, min_samples=0)
    given = tuple(x.shape)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[1] == 0:
        raise DataError(
            f"x must be an (n, d) array (or (n,) for one column) with n >= {min_rows}; got "
            f"shape {given}"
        )
    if x.shape[0] < min_rows:
        raise DataError(
            f"x has {x.shape[0]} sample(s) (shape {given}); at least {min_rows} are needed"
        )
    check_overflow(x, name="x")
    return x


def _constant_columns(x: torch.Tensor) -> list[int]:
    return [j for j in range(x.shape[1]) if bool((x[:, j] == x[0, j]).all())]


def check_spread(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The column means and standard deviations (d,) of ``x`` (n, d), refusing a column
    without spread: the summed-out targets scale their priors by each column's sd, and an
    sd of 0 gave every start a NaN density ("no finite log-density in 100 random starts")."""
    m, s = column_moments(x)  # (d,) each; finite for data near 1e300
    constant = [j for j in range(x.shape[1]) if not float(s[j]) > 0]
    if constant:
        raise DataError(
            f"x column {constant[0]} has no spread (every value "
            f"{float(x[0, constant[0]]):.6g}): the priors are scaled by each column's standard "
            "deviation, which is 0 here; drop the column or pass more varied data"
        )
    return m, s


def niw_prior(x, k: int, prior_loc, prior_kappa, prior_df, prior_scale) -> NIWBatch:
    """The Normal-inverse-Wishart prior shared by every component (or state) of ``gibbs_gmm``
    and ``gibbs_hmm``, checked: ``prior_loc`` (d,) finite (default: the data mean),
    ``prior_kappa`` > 0, ``prior_df`` > d - 1 (default d + 2), ``prior_scale`` a symmetric
    positive-definite (d, d) matrix (default: the data covariance / k^(2/d), scaled so that
    it is the prior mean of the covariance where df > d + 1). A default scale that is singular (a constant
    column, or columns that are exact combinations of others) is refused by name, and so is the default scale of one row (it has no covariance;
    under a given prior_scale the posterior of one row is proper)."""
    n, d = x.shape
    check_positive(prior_kappa, "prior_kappa")
    if prior_df is not None:
        check_positive(prior_df, "prior_df", above=d - 1.0, bound=f"d - 1 = {d - 1}")
    dt, dev = x.dtype, x.device
    df0 = torch.tensor(d + 2.0 if prior_df is None else float(prior_df), dtype=dt, device=dev)
    if prior_loc is None:
        loc0 = x.mean(0)
    else:
        loc0 = as_float_tensor(
            prior_loc, name="prior_loc", ndim=None, missing_hint=False, device=dev
        )
        loc0 = loc0.reshape(-1)
        if loc0.shape[0] != d:
            raise ParameterError(
                f"prior_loc must hold one value per column of x ({d}); got {loc0.shape[0]}"
            )
    if prior_scale is None:
        if n < 2:  # the conjugate update needs no more, but the default prior does
            raise DataError(
                "x has 1 row: the default prior_scale is the data covariance, which one row "
                f"does not have; pass prior_scale, a positive-definite ({d}, {d}) matrix (e.g. "
                "the covariance you expect of a component), to sample the posterior of one "
                "row, or pass more rows"
            )
        cov_x = torch.atleast_2d(torch.cov(x.T))
        # the prior mean of a covariance, scale / (df - d - 1), is the data covariance / k^(2/d)
        # where that mean exists (df > d + 1); below, the scale is the data covariance's
        scale0 = cov_x * (df0 - d - 1 if float(df0) > d + 1 else 1.0) / k ** (2.0 / d)
        if int(torch.linalg.cholesky_ex(scale0).info) != 0:
            const = _constant_columns(x)
            tiny = [j for j in range(d) if j not in const and not float(cov_x[j, j]) > 0]
            fix = "drop those columns"
            if const:
                what = f"column(s) {const} of x are constant"
            elif tiny:  # the spread is there, its square is not: below float64's 1e-308
                what = (
                    f"column(s) {tiny} of x vary so little (column {tiny[0]} spans "
                    f"{float(x[:, tiny[0]].max() - x[:, tiny[0]].min()):.3g}) that their "
                    "variance underflows float64"
                )
                fix = "rescale x (e.g. standardise its columns)"
            elif n <= d:
                what = f"x has {n} rows for {d} columns (the covariance of n <= d rows)"
                fix = "pass more rows than columns"
            else:
                what = "the columns of x are linearly dependent (one is a combination of others)"
            raise DataError(
                f"{what}, so the default prior_scale (the data covariance) is singular; {fix}, "
                "or pass a positive-definite prior_scale (d, d)"
            )
    else:
        scale0 = as_float_tensor(
            prior_scale, name="prior_scale", ndim=None, missing_hint=False, device=dev
        )
        if scale0.numel() == 1 and d == 1:
            scale0 = scale0.reshape(1, 1)
        ok = tuple(scale0.shape) == (d, d)
        ok = ok and bool(torch.allclose(scale0, scale0.T, rtol=1e-10, atol=0.0))
        if not ok or int(torch.linalg.cholesky_ex(scale0).info) != 0:
            raise ParameterError(
                f"prior_scale must be a symmetric positive-definite ({d}, {d}) matrix (the "
                f"inverse-Wishart scale); got shape {tuple(scale0.shape)}"
                + ("" if not ok else " that is not positive definite")
            )
    return NIWBatch(loc0, torch.tensor(float(prior_kappa), dtype=dt, device=dev), df0, scale0)


def _gamma(shape_param: torch.Tensor, gen) -> torch.Tensor:
    return torch._standard_gamma(shape_param, generator=gen)


def sample_inverse_wishart(df: torch.Tensor, scale: torch.Tensor, gen) -> torch.Tensor:
    """Sigma ~ InverseWishart(df, scale), batched (..., d, d), by Bartlett's decomposition of
    Sigma^{-1} ~ Wishart(df, scale^{-1}): W = L A A' L' with L = chol(scale^{-1}), A lower
    triangular, A_ii^2 ~ chi^2(df - i), A_ij ~ N(0, 1) below the diagonal."""
    d = scale.shape[-1]
    batch = scale.shape[:-2]
    i = torch.arange(d, dtype=scale.dtype, device=scale.device)
    chi2 = 2 * _gamma(((df[..., None] - i) / 2).expand(*batch, d).contiguous(), gen)
    A = torch.randn(*batch, d, d, generator=gen, dtype=scale.dtype, device=scale.device).tril(-1)
    A = A + torch.diag_embed(chi2.sqrt())
    L = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(scale)))
    LA = L @ A
    prec = LA @ LA.transpose(-1, -2)
    return torch.cholesky_inverse(torch.linalg.cholesky(prec))


def sample_niw(post: NIWBatch, gen, sweep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, Sigma) ~ NIW(post), batched: Sigma ~ InvWishart(df, scale), then mu | Sigma ~
    N(loc, Sigma / kappa); means (..., d), covariances (..., d, d). A factorisation that fails
    (a posterior scale no longer positive definite in float64) is said with what to change."""
    try:
        cov = sample_inverse_wishart(post.df, post.scale, gen)
        chol = torch.linalg.cholesky(cov / post.kappa[..., None, None])
    except torch.linalg.LinAlgError as err:
        raise ParameterError(
            f"Gibbs sweep {sweep}: a covariance draw was not positive definite in float64 "
            f"({err}). The prior scale is too small for the data's spread: standardise the "
            "columns of x or pass a larger prior_scale"
        ) from None
    loc = post.loc
    eps = torch.randn(*loc.shape, 1, generator=gen, dtype=loc.dtype, device=loc.device)
    return loc + (chol @ eps)[..., 0], cov


def _gumbel_argmax(logits: torch.Tensor, gen) -> torch.Tensor:
    u = torch.rand(logits.shape, generator=gen, dtype=logits.dtype, device=logits.device)
    return torch.argmax(logits - torch.log(-torch.log(u.clamp(min=1e-300))), -1)


def _mvn_log_prob(x, loc, cov) -> torch.Tensor:
    """log N(x_i | loc_k, cov_k) for x (n, d), loc (c, k, d), cov (c, k, d, d): (c, n, k)."""
    L = torch.linalg.cholesky(cov)  # (c, k, d, d)
    diff = x[None, :, None, :] - loc[:, None]  # (c, n, k, d)
    sol = torch.linalg.solve_triangular(L[:, None], diff[..., None], upper=False)[..., 0]
    d = x.shape[-1]
    half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (c, k)
    return -0.5 * sol.pow(2).sum(-1) - half_logdet[:, None] - 0.5 * d * math.log(2 * math.pi)


#: Most rows for which a co-assignment matrix (rows x rows) is kept by default.
CO_ASSIGNMENT_ROWS = 2000


def check_co_assignment(co_assignment: bool | None, n: int) -> bool:
    """Whether to keep the (n, n) co-assignment matrix: by default only up to
    :data:`CO_ASSIGNMENT_ROWS` rows; asked for explicitly, refused above 16 times that."""
    if co_assignment is None:
        return n <= CO_ASSIGNMENT_ROWS
    if not isinstance(co_assignment, bool | np.bool_):
        raise ParameterError(
            f"co_assignment must be None (keep it up to {CO_ASSIGNMENT_ROWS} rows), True or "
            f"False, got {co_assignment!r}"
        )
    if co_assignment and n > 16 * CO_ASSIGNMENT_ROWS:
        raise ResourceLimitError(
            f"co_assignment=True keeps an {n} x {n} matrix ({8 * n * n:,} bytes); "
            f"ask for it on at most {16 * CO_ASSIGNMENT_ROWS} rows"
        )
    return bool(co_assignment)


def state_statistics(onehot: torch.Tensor, x: torch.Tensor):
    """Counts (c, k), means (c, k, d) and scatter matrices about the means (c, k, d, d) of the
    rows ``x`` (n, d) assigned to each state by ``onehot`` (c, n, k), without a (c, n, k, d)
    tensor: the scatter is sum z x x^T - n xbar xbar^T on rows centred by their mean."""
    xc = x - x.mean(0)
    counts = onehot.sum(1)
    sums = torch.einsum("cnk,nd->ckd", onehot, xc)
    xbar = sums / counts.clamp(min=1)[..., None]
    second = torch.einsum("cnk,ni,nj->ckij", onehot, xc, xc)
    scatter = second - counts[..., None, None] * xbar[..., :, None] * xbar[..., None, :]
    return counts, xbar + x.mean(0), scatter


def draws_to_arviz(draws: dict):
    """Draws (chains, draws, ...) as ArviZ data with a ``posterior`` group: ``InferenceData``
    (ArviZ 0.x) or a ``DataTree`` (ArviZ 1.x)."""
    return arviz_from_dict({"posterior": {k: v.detach().cpu().numpy() for k, v in draws.items()}})


class GibbsGMMResult(NamedTuple):
    """Draws (chains, draws, ...): weights (k,), means (k, d), covariances (k, d, d), and the
    labels of the last sweep (chains, n); components are relabelled by their first mean
    coordinate after each sweep (an ordering of the k! symmetric modes)."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    labels: torch.Tensor
    co_assignment: torch.Tensor | None  # (n, n): fraction of draws with z_i == z_j (all chains)

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

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


def gibbs_gmm(
    x,
    n_components: int,
    *,
    num_chains: int = 4,
    num_warmup: int = 200,
    num_draws: int = 1000,
    alpha: float = 1.0,
    prior_loc=None,
    prior_kappa: float = 0.01,
    prior_df: float | None = None,
    prior_scale=None,
    co_assignment: bool | None = None,
    generator=None,
    max_work: int | float | None = MAX_WORK,
) -> GibbsGMMResult:
    """Gibbs sampling of a Gaussian mixture by data augmentation (module docstring). The chains
    run where ``x`` is (a CUDA tensor: on that GPU; ``generator`` a seed or a generator there).

    Priors (defaults follow the data, as scikit-learn's BayesianGaussianMixture does): weights
    ~ Dirichlet(alpha); mean | cov ~ N(prior_loc = data mean, cov / prior_kappa); cov ~
    InvWishart(prior_df = d + 2, prior_scale = data covariance / k^(2/d) scaled to df).
    ``co_assignment`` keeps the (n, n) fraction of draws with z_i == z_j (by default for up to
    :data:`CO_ASSIGNMENT_ROWS` rows; ``None`` in the result otherwise). ``max_work``: the most
    multiply-adds the ``num_warmup + num_draws`` sweeps may take (by default about a day of one
    CPU core); None or ``math.inf``: no limit.
    """
    x = observations(x)  # one row: with a prior_scale (niw_prior)
    k = check_positive_int(n_components, "n_components")
    check_positive(alpha, "alpha")
    c, num_warmup, num_draws = check_counts(num_chains, num_warmup, num_draws)
    n, d = x.shape
    dt, dev = x.dtype, x.device
    keep_co = check_co_assignment(co_assignment, n)
    check_run(
        f"Gibbs sampling {c:,} chains x {num_draws:,} draws of a {k}-component mixture of "
        f"{n:,} rows",
        gibbs_parts(c, num_draws, n, k, k + k * d + k * d * d, 8, co_assignment=keep_co),
        hint="use fewer chains, draws or components",
    )
    # a sweep: each row's Gaussian log-density under every component (a triangular solve,
    # d^2 / 2) and each component's inverse-Wishart draw (factorisations, d^3)
    check_iterations(
        f"Gibbs sampling {c:,} chains of a {k}-component mixture of {n:,} rows",
        num_warmup + num_draws,
        c * k * (n * (d * d + d) + d**3),
        option="num_warmup + num_draws",
        max_work=max_work,
    )
    prior = niw_prior(x, k, prior_loc, prior_kappa, prior_df, prior_scale)
    gen = device_generator(generator, dev, "Gibbs sampling")
    # start: each chain labels the data at random
    z = torch.randint(0, k, (c, n), generator=gen, device=dev)
    keep_w, keep_mu, keep_cov = [], [], []
    co = torch.zeros(n, n, dtype=dt, device=dev) if keep_co else None
    for it in range(num_warmup + num_draws):
        # params | labels
        onehot = torch.nn.functional.one_hot(z, k).to(dt)  # (c, n, k)
        counts, xbar, scatter = state_statistics(onehot, x)
        post = niw_update_stats(*prior, counts, xbar, scatter)
        mu, cov = sample_niw(post, gen, it)  # (c, k, d), (c, k, d, d)
        g = _gamma(alpha + counts, gen)
        w = g / g.sum(-1, keepdim=True)  # (c, k) Dirichlet(alpha + counts)
        # labels | params
        logits = torch.log(w)[:, None] + _mvn_log_prob(x, mu, cov)  # (c, n, k)
        z = _gumbel_argmax(logits, gen)
        if it >= num_warmup:
            order = torch.argsort(mu[..., 0], -1)  # (c, k): relabel by the first coordinate
            keep_w.append(torch.gather(w, 1, order))
            keep_mu.append(torch.gather(mu, 1, order[..., None].expand(c, k, d)))
            keep_cov.append(torch.gather(cov, 1, order[..., None, None].expand(c, k, d, d)))
            if co is not None:
                co += (z[:, :, None] == z[:, None, :]).to(dt).sum(0)
    return GibbsGMMResult(
        torch.stack(keep_w, 1),
        torch.stack(keep_mu, 1),
        torch.stack(keep_cov, 1),
        z,
        None if co is None else co / (c * num_draws),
    )


# -- hidden Markov models ------------------------------------------------------------------------
def ffbs(log_start, log_trans, log_obs, gen) -> torch.Tensor:
    """Forward filtering, backward sampling of state paths (c, t) given log initial
    probabilities (c, k), log transition matrices (c, k, k) (row: from) and per-step
    log-likelihoods (c, t, k): a draw from p(z_{1:t} | x_{1:t}, params) for every chain."""
    c, t, k = log_obs.shape
    alphas = []
    a = log_start + log_obs[:, 0]
    alphas.append(a)
    for s in range(1, t):
        a = torch.logsumexp(a[:, :, None] + log_trans, 1) + log_obs[:, s]  # (c, k)
        alphas.append(a)
    path = torch.empty(c, t, dtype=torch.long, device=log_obs.device)
    path[:, -1] = _gumbel_argmax(alphas[-1], gen)
    for s in range(t - 2, -1, -1):
        nxt = path[:, s + 1]
        logits = alphas[s] + torch.gather(log_trans, 2, nxt[:, None, None].expand(c, k, 1))[..., 0]
        path[:, s] = _gumbel_argmax(logits, gen)
    return path


def check_hmm_density(k: int, t: int, device, name: str) -> None:
    """Refuse (ResourceLimitError) an HMM target of ``k`` states on ``t`` rows whose init's
    (k, k) transitions and one chain's forward pass, (t, k) emissions and (k, k) steps, would
    not fit in memory: ``n_states=10**5`` asked for 80 GB (k x k) before any check."""
    check_allocation(
        8 * (3 * k * k + t * k + 4 * k),
        f"{name} with {k:,} states on {t:,} rows",
        device=device,
        hint="use fewer states (n_states)",
    )


def hmm_log_density(x: torch.Tensor, n_states: int):
    """A NUTS target for a univariate Gaussian HMM with the states summed out by the forward
    algorithm: parameters ``start`` (simplex k), ``trans`` (k rows on the simplex, given as
    ``trans_rows`` (k, k)), ``means`` (ordered), ``scales`` (positive). Returns (log_density,
    init, constraints) for ``latentfit.mcmc.sample`` (one chain per call, vmapped)."""
    x = observations(x, min_rows=2)  # its priors are scaled by the data's sd
    if x.shape[1] != 1:
        raise DataError(f"hmm_log_density is univariate; x has {x.shape[1]} columns")
    m, s = check_spread(x)
    x = x[:, 0]
    k = check_positive_int(n_states, "n_states")
    check_hmm_density(k, x.shape[0], x.device, "hmm_log_density")

    def log_density(start, trans, means, scales):
        log_obs = torch.distributions.Normal(means, scales).log_prob(x[:, None])  # (t, k)
        a = torch.log(start) + log_obs[0]
        for s in range(1, x.shape[0]):
            a = torch.logsumexp(a[:, None] + torch.log(trans), 0) + log_obs[s]
        prior = torch.distributions.Normal(x.mean(), 3 * x.std()).log_prob(means).sum()
        prior = prior + torch.distributions.HalfNormal(2 * x.std()).log_prob(scales).sum()
        return torch.logsumexp(a, 0) + prior

    on = dict(dtype=x.dtype, device=x.device)
    # in the data's units, as gmm_log_density's: means at -1..1 and scales of 1 left chains
    # started there on data near 1000 with a state's mean at 170 after the warm-up
    q = torch.quantile(x, torch.linspace(0.2, 0.8, k, **on))
    if not bool((q[1:] > q[:-1]).all()):  # tied quantiles: init must be strictly ordered
        q = m[0] + s[0] * torch.linspace(-1, 1, k, **on)
    init = {
        "start": torch.full((k,), 1.0 / k, **on),
        "trans": torch.full((k, k), 1.0 / k, **on),
        "means": q,
        "scales": s.expand(k).clone(),
    }
    cons = {
        "start": constraints.simplex,
        "trans": constraints.independent(constraints.simplex, 1),
        "means": ordered_vector,
        "scales": constraints.positive,
    }
    return log_density, init, cons


def gmm_log_density(x: torch.Tensor, n_components: int, prior_scale: float = 3.0):
    """A NUTS target for a Gaussian mixture with diagonal covariances and the labels summed
    out by log-sum-exp: ``weights`` (simplex), ``loc0`` (ordered first coordinates of the
    means, which fixes the labelling), ``loc_rest`` (the other coordinates, (k, d - 1); absent
    for one-column data, whose means are ``loc0`` alone), ``scales`` (k, d).
    Priors: weights ~ Dirichlet(1), means ~ N(data mean, (prior_scale * data sd)^2),
    scales ~ HalfNormal(2 * data sd). The density takes every chain at once (a leading chain
    dimension on each parameter): pass ``vectorized=True`` to ``sample``. Returns
    (log_density, init, constraints)."""
    x = observations(x, min_rows=2)  # its priors are scaled by the data's sd
    d = x.shape[1]
    k = check_positive_int(n_components, "n_components")
    check_positive(prior_scale, "prior_scale")
    n = x.shape[0]
    # init's (k, d) values and a chain's (n, k, d) component log-densities, several at once
    check_allocation(
        8 * k * (4 * n * d + 3 * d + 2),
        f"gmm_log_density with {k:,} components of {d} columns on {n:,} rows",
        device=x.device,
        hint="use fewer components (n_components)",
    )
    m, s = check_spread(x)
    D = torch.distributions

    def mixture(weights, means, scales):  # (c, k), (c, k, d), (c, k, d)
        comp = (
            D.Normal(means[:, None], scales[:, None], validate_args=False)
            .log_prob(x[None, :, None])
            .sum(-1)
        )  # (c, n, k)
        loglik = torch.logsumexp(comp + torch.log(weights)[:, None], -1).sum(-1)
        prior = D.Normal(m, prior_scale * s, validate_args=False).log_prob(means).sum((-1, -2))
        prior = prior + D.HalfNormal(2 * s, validate_args=False).log_prob(scales).sum((-1, -2))
        return loglik + prior

    if d == 1:  # no other coordinates: an empty loc_rest would be a parameter of no values

        def log_density(weights, loc0, scales):  # (c, k), (c, k), (c, k, 1)
            return mixture(weights, loc0[..., None], scales)

    else:

        def log_density(weights, loc0, loc_rest, scales):  # (c, k), (c, k), (c, k, d-1), (c, k, d)
            return mixture(weights, torch.cat([loc0[..., None], loc_rest], -1), scales)

    q = torch.quantile(x[:, 0], torch.linspace(0.2, 0.8, k, dtype=x.dtype, device=x.device))
    if not bool((q[1:] > q[:-1]).all()):  # tied quantiles: init must be strictly ordered
        q = m[0] + s[0] * torch.linspace(-1, 1, k, dtype=x.dtype, device=x.device)
    init = {
        "weights": torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device),
        "loc0": q,
        "loc_rest": m[1:].expand(k, d - 1).clone(),
        "scales": s.expand(k, d).clone(),
    }
    if d == 1:
        del init["loc_rest"]
    cons = {"weights": constraints.simplex, "loc0": ordered_vector, "scales": constraints.positive}
    return log_density, init, cons
