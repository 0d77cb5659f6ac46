"""Gibbs sampling against exact enumeration on tiny models, and its conjugate pieces against
latentfit.estimate's closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from latentfit.errors import DataError
from latentfit.estimate.conjugate_normal import (
    normal_inverse_wishart_log_evidence,
    normal_inverse_wishart_update,
)
from latentfit.mcmc.gibbs import ffbs, gibbs_gmm, niw_update_stats, sample_inverse_wishart
from latentfit.mcmc.gibbs_hmm import gibbs_hmm

F64 = torch.float64


def test_niw_update_from_statistics_equals_the_estimate_update():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 2, generator=g, dtype=F64)
    loc, kappa, df, scale = (
        torch.tensor([0.5, -1.0], dtype=F64),
        torch.tensor(0.3, dtype=F64),
        torch.tensor(4.0, dtype=F64),
        torch.eye(2, dtype=F64) * 2,
    )
    want = normal_inverse_wishart_update(loc, kappa, df, scale, x)
    r = x - x.mean(0)
    got = niw_update_stats(loc, kappa, df, scale, torch.tensor(9.0, dtype=F64), x.mean(0), r.T @ r)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inverse_wishart_draws_have_the_right_mean():
    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    df = torch.full((20000,), 7.0, dtype=F64)
    draws = sample_inverse_wishart(df, scale.expand(20000, 2, 2), g)
    # E[Sigma] = scale / (df - d - 1); the Monte-Carlo sd of the mean of 20000 draws is < 1%
    torch.testing.assert_close(draws.mean(0), scale / 4, rtol=0.04, atol=0.01)


def _log_evidence_1d(xs, loc, kappa, df, scale):
    if len(xs) == 0:
        return 0.0
    return float(
        normal_inverse_wishart_log_evidence(
            loc, kappa, df, scale, torch.tensor(xs, dtype=F64)[:, None]
        )
    )


def test_gibbs_mixture_co_assignment_matches_exact_enumeration():
    """Five points, two components: p(z | x) by enumerating all 32 labellings (Dirichlet-
    categorical prior times the NIW marginal likelihood of each component's points)."""
    x = torch.tensor([-2.1, -1.7, 0.2, 1.9, 2.4], dtype=F64)
    n, k, alpha = 5, 2, 1.0
    loc, kappa, df = (
        torch.tensor([0.0], dtype=F64),
        torch.tensor(0.1, dtype=F64),
        torch.tensor(3.0, dtype=F64),
    )
    scale = torch.tensor([[1.0]], dtype=F64)
    logp, labs = [], []
    for z in itertools.product(range(k), repeat=n):
        counts = [z.count(j) for j in range(k)]
        lp = math.lgamma(k * alpha) - math.lgamma(k * alpha + n)
        lp += sum(math.lgamma(alpha + c) - math.lgamma(alpha) for c in counts)
        lp += sum(
            _log_evidence_1d([float(x[i]) for i in range(n) if z[i] == j], loc, kappa, df, scale)
            for j in range(k)
        )
        logp.append(lp)
        labs.append(z)
    p = torch.softmax(torch.tensor(logp, dtype=F64), 0)
    Z = torch.tensor(labs)
    exact = sum(p[m] * (Z[m][:, None] == Z[m][None, :]).to(F64) for m in range(len(labs)))
    res = gibbs_gmm(
        x,
        2,
        num_chains=16,
        num_warmup=100,
        num_draws=600,
        alpha=alpha,
        prior_loc=[0.0],
        prior_kappa=0.1,
        prior_df=3.0,
        prior_scale=[[1.0]],
        generator=0,
    )
    # 9600 draws, autocorrelated: each co-assignment frequency has a Monte-Carlo sd < 0.01
    torch.testing.assert_close(res.co_assignment, exact, atol=0.03, rtol=0)
    assert exact[0, 4] < 0.5 < exact[0, 1]  # the case separates some points and joins others


def test_ffbs_path_frequencies_match_exact_enumeration():
    g = torch.Generator().manual_seed(3)
    k, t, c = 2, 4, 20000
    start = torch.tensor([0.6, 0.4], dtype=F64).log()
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=F64).log()
    obs = torch.randn(t, k, generator=g, dtype=F64)  # arbitrary log-likelihoods
    paths = ffbs(start.expand(c, k), trans.expand(c, k, k), obs.expand(c, t, k), g)
    exact = {}
    for z in itertools.product(range(k), repeat=t):
        lp = (
            start[z[0]]
            + obs[0, z[0]]
            + sum(trans[z[s - 1], z[s]] + obs[s, z[s]] for s in range(1, t))
        )
        exact[z] = float(lp)
    norm = torch.logsumexp(torch.tensor(list(exact.values())), 0)
    for z, lp in exact.items():
        freq = float((paths == torch.tensor(z)).all(1).double().mean())
        # binomial sd of a frequency from 20000 independent paths is <= 0.0036
        assert abs(freq - math.exp(lp - norm)) < 0.015, (z, freq, math.exp(lp - norm))


def test_marginalised_mixture_density_equals_the_sum_over_labellings():
    from latentfit.mcmc.gibbs import gmm_log_density

    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, generator=g, dtype=F64)
    logp, _, _ = gmm_log_density(x, 3)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    loc0, rest = (
        torch.tensor([-1.0, 0.0, 1.0], dtype=F64),
        torch.randn(3, 1, generator=g, dtype=F64),
    )
    scales = torch.rand(3, 2, generator=g, dtype=F64) + 0.5
    means = torch.cat([loc0[:, None], rest], -1)
    comp = torch.distributions.Normal(means, scales).log_prob(x[:, None]).sum(-1)  # (n, k)
    total = torch.logsumexp(
        torch.stack(
            [
                sum(comp[i, z[i]] + w[z[i]].log() for i in range(4))
                for z in itertools.product(range(3), repeat=4)
            ]
        ),
        0,
    )
    m, s = x.mean(0), x.std(0)
    D = torch.distributions
    prior = D.Normal(m, 3 * s).log_prob(means).sum() + D.HalfNormal(2 * s).log_prob(scales).sum()
    got = logp(w[None], loc0[None], rest[None], scales[None])  # one chain
    torch.testing.assert_close(got[0], total + prior, rtol=1e-12, atol=1e-12)


def test_forward_algorithm_density_equals_the_sum_over_paths():
    from latentfit.mcmc.gibbs import hmm_log_density

    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)
    logp, _, _ = hmm_log_density(x, 2)
    start = torch.tensor([0.3, 0.7], dtype=F64)
    trans = torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=F64)
    means, scales = torch.tensor([-1.0, 1.0], dtype=F64), torch.tensor([0.8, 1.5], dtype=F64)
    obs = torch.distributions.Normal(means, scales).log_prob(x[:, None])
    paths = [
        start[z[0]].log()
        + obs[0, z[0]]
        + sum(trans[z[s - 1], z[s]].log() + obs[s, z[s]] for s in range(1, 4))
        for z in itertools.product(range(2), repeat=4)
    ]
    D = torch.distributions
    prior = (
        D.Normal(x.mean(), 3 * x.std()).log_prob(means).sum()
        + D.HalfNormal(2 * x.std()).log_prob(scales).sum()
    )
    torch.testing.assert_close(
        logp(start, trans, means, scales),
        torch.logsumexp(torch.stack(paths), 0) + prior,
        rtol=1e-12,
        atol=1e-12,
    )


def test_the_forward_algorithm_target_starts_in_the_data_units():
    # init put the means at -1, 1 and the scales at 1 whatever the data: on two regimes near
    # 1000 and 1010, chains started there (init_strategy="init") ended their warm-up with a
    # state's mean at 170. The posterior means sit at the regimes' sample means (12 rows of
    # sd 1 each: standard errors 0.29, so within 1.5 is 5 of them)
    from latentfit.mcmc import sample
    from latentfit.mcmc.gibbs import hmm_log_density

    g = torch.Generator().manual_seed(0)
    x = torch.cat([1000 + torch.randn(12, generator=g), 1010 + torch.randn(12, generator=g)])
    logp, init, cons = hmm_log_density(x.to(F64), 2)
    assert float(x.min()) < float(init["means"][0]) < float(init["means"][1]) < float(x.max())
    res = sample(logp, init, constraints=cons, init_strategy="init", num_chains=2, max_depth=6,
                 num_warmup=60, num_draws=20, generator=0, progress_bar=False)  # fmt: skip
    got = res["means"].mean((0, 1))
    want = torch.stack([x[:12].mean(), x[12:].mean()]).to(F64)
    assert bool(((got - want).abs() < 1.5).all()), (got, want)


@pytest.mark.parametrize("gibbs", [gibbs_gmm, gibbs_hmm])
def test_one_row_samples_the_closed_form_posterior_under_a_given_prior_scale(gibbs):
    """One row: gibbs_gmm refused it ("at least 2 are needed") and gibbs_hmm sampled it under
    a default prior_scale of the identity, whatever the data's units (the data covariance,
    as documented, does not exist for one row). The conjugate update needs no second row: with
    a given prior_scale both sample the Normal-inverse-Wishart posterior of the row (one
    component or state: iid draws), and both refuse the default prior_scale by name."""
    x = np.array([[3.0]])
    kw = dict(prior_loc=[0.0], prior_kappa=0.5, prior_df=6.0, prior_scale=[[2.0]])
    res = gibbs(x, 1, num_chains=4, num_warmup=0, num_draws=2000, generator=0, **kw)
    # posterior: kappa 1.5, loc 3 / 1.5 = 2, df 7, scale 2 + (0.5 / 1.5) 3^2 = 5; the variance
    # is InvGamma(7 / 2, 5 / 2), the mean's marginal a Student t of variance E[var] / 1.5
    var = stats.invgamma(3.5, scale=2.5)
    cov, mean = res.covariances.reshape(-1), res.means.reshape(-1)
    se = math.sqrt(var.var() / cov.numel())  # 8000 iid draws: within 5 standard errors
    assert abs(float(cov.mean()) - var.mean()) < 5 * se
    se_mean = math.sqrt(var.mean() / 1.5 / mean.numel())
    assert abs(float(mean.mean()) - 2.0) < 5 * se_mean
    with pytest.raises(DataError, match=r"x has 1 row: the default prior_scale .* pass"):
        gibbs(x, 1, num_chains=1, num_warmup=0, num_draws=5, generator=0)
