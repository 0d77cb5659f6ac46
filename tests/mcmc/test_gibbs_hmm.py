"""Gibbs sampling of a Gaussian HMM against exact enumeration of its pieces, and against NUTS on
the same posterior with the states summed out (two independent samplers of one posterior)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from latentfit.errors import DataError, ParameterError
from latentfit.mcmc.gibbs_hmm import (
    gibbs_hmm,
    hmm_forward_log_likelihood,
    sample_hmm_chain_params,
    transition_counts,
)
from tests.mcmc.test_gibbs import _log_evidence_1d

F64 = torch.float64


def _series(t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = [0]
    for _ in range(t - 1):
        z.append(z[-1] if float(torch.rand(1, generator=g)) < 0.85 else 1 - z[-1])
    z = torch.tensor(z)
    return torch.where(z == 0, -1.0, 1.5).to(F64) + 0.6 * torch.randn(t, generator=g, dtype=F64)


def test_transition_counts_are_counted_within_each_sequence():
    paths = [torch.tensor([[0, 0, 1, 2]]), torch.tensor([[2, 0]])]
    first, trans = transition_counts(paths, 3)
    assert first.tolist() == [[1.0, 0.0, 1.0]]
    want = torch.zeros(3, 3, dtype=F64)
    for a, b in [(0, 0), (0, 1), (1, 2), (2, 0)]:  # no 2 -> 2 across the sequence boundary
        want[a, b] += 1
    torch.testing.assert_close(trans[0], want)


def test_chain_parameter_step_is_the_dirichlet_posterior():
    g = torch.Generator().manual_seed(0)
    c = 40000
    paths = [torch.tensor([0, 1, 1, 1, 0, 1]).expand(c, 6)]
    start, trans = sample_hmm_chain_params(paths, 2, 1.0, 0.5, g)
    # counts: first state 0; transitions 0->1 twice, 1->1 twice, 1->0 once
    torch.testing.assert_close(
        start.mean(0), torch.tensor([2 / 3, 1 / 3], dtype=F64), atol=6e-3, rtol=0
    )
    want = torch.tensor([[0.5 / 3.0, 2.5 / 3.0], [1.5 / 4.0, 2.5 / 4.0]], dtype=F64)
    torch.testing.assert_close(trans.mean(0), want, atol=6e-3, rtol=0)


def test_forward_algorithm_equals_the_sum_over_paths_for_every_chain():
    g = torch.Generator().manual_seed(4)
    c, k, t = 3, 3, 5
    log_start = torch.log_softmax(torch.randn(c, k, generator=g, dtype=F64), -1)
    log_trans = torch.log_softmax(torch.randn(c, k, k, generator=g, dtype=F64), -1)
    log_obs = torch.randn(c, t, k, generator=g, dtype=F64)
    got = hmm_forward_log_likelihood(log_start, log_trans, log_obs)
    for ch in range(c):
        terms = []
        for z in itertools.product(range(k), repeat=t):
            lp = log_start[ch, z[0]] + log_obs[ch, 0, z[0]]
            for s in range(1, t):
                lp = lp + log_trans[ch, z[s - 1], z[s]] + log_obs[ch, s, z[s]]
            terms.append(lp)
        torch.testing.assert_close(
            got[ch], torch.logsumexp(torch.stack(terms), 0), rtol=1e-12, atol=1e-12
        )


def test_bad_input_is_named():
    x = _series(10, 0)
    with pytest.raises(DataError, match="lengths"):
        gibbs_hmm(x, 2, lengths=[4, 4], num_draws=2, num_warmup=0)
    with pytest.raises(ParameterError, match="n_states"):
        gibbs_hmm(x, 0, num_draws=2, num_warmup=0)
    with pytest.raises(ParameterError, match="alpha_trans"):
        gibbs_hmm(x, 2, alpha_trans=0.0, num_draws=2, num_warmup=0)
    with pytest.raises(DataError, match="finite"):
        gibbs_hmm(torch.tensor([0.0, float("nan")]), 2)


def test_several_sequences_give_one_state_path_each_and_ordered_means():
    x = _series(30, 1)
    res = gibbs_hmm(x, 2, lengths=[10, 20], num_chains=2, num_warmup=20, num_draws=30, generator=3)
    assert [p.shape for p in res.states] == [(2, 10), (2, 20)]
    assert res.means.shape == (2, 30, 2, 1) and res.transmat.shape == (2, 30, 2, 2)
    assert bool((res.means[..., 0, 0] <= res.means[..., 1, 0]).all())
    torch.testing.assert_close(res.transmat.sum(-1), torch.ones(2, 30, 2, dtype=F64))
    again = gibbs_hmm(
        x, 2, lengths=[10, 20], num_chains=2, num_warmup=20, num_draws=30, generator=3
    )
    assert torch.equal(again.means, res.means)  # the seed fixes every draw


def _log_dirichlet_categorical(counts, alpha):
    k = len(counts)
    out = math.lgamma(k * alpha) - math.lgamma(k * alpha + sum(counts))
    return out + sum(math.lgamma(alpha + c) - math.lgamma(alpha) for c in counts)


def test_gibbs_state_co_assignment_matches_exact_enumeration():
    """Two sequences (3 + 4 steps), two states: p(z | x) by enumerating all 128 state paths —
    Dirichlet-categorical start and transition rows times the Normal-inverse-Wishart marginal
    likelihood of each state's observations (Murphy 2007) — against the Gibbs frequencies."""
    x = torch.tensor([-2.0, -1.6, 1.8, 2.2, 1.9, -1.8, 0.1], dtype=F64)
    lengths, k, a_start, a_trans = [3, 4], 2, 1.0, 0.7
    loc, kappa, df = (
        torch.tensor([0.0], dtype=F64),
        torch.tensor(0.1, dtype=F64),
        torch.tensor(3.0, dtype=F64),
    )
    scale = torch.tensor([[1.0]], dtype=F64)
    logp, paths = [], []
    for z in itertools.product(range(k), repeat=len(x)):
        seqs = [z[:3], z[3:]]
        first = [sum(s[0] == j for s in seqs) for j in range(k)]
        lp = _log_dirichlet_categorical(first, a_start)
        for i in range(k):
            row = [
                sum(s[t] == i and s[t + 1] == j for s in seqs for t in range(len(s) - 1))
                for j in range(k)
            ]
            lp += _log_dirichlet_categorical(row, a_trans)
        lp += sum(
            _log_evidence_1d(
                [float(x[m]) for m in range(len(x)) if z[m] == j], loc, kappa, df, scale
            )
            for j in range(k)
        )
        logp.append(lp)
        paths.append(z)
    p = torch.softmax(torch.tensor(logp, dtype=F64), 0)
    Z = torch.tensor(paths)
    exact = torch.einsum("m,mij->ij", p, (Z[:, :, None] == Z[:, None, :]).to(F64))
    res = gibbs_hmm(
        x,
        k,
        lengths=lengths,
        num_chains=16,
        num_warmup=100,
        num_draws=600,
        alpha_start=a_start,
        alpha_trans=a_trans,
        prior_loc=[0.0],
        prior_kappa=0.1,
        prior_df=3.0,
        prior_scale=[[1.0]],
        generator=0,
    )
    # 9600 autocorrelated draws: each frequency has a Monte-Carlo sd below 0.01
    torch.testing.assert_close(res.co_assignment, exact, atol=0.03, rtol=0)
    assert exact[0, 6] < 0.6 < exact[0, 1]  # the case joins some steps and is unsure of others


def test_co_assignment_is_kept_only_when_it_fits():
    from latentfit.errors import ResourceLimitError
    from latentfit.mcmc.gibbs import CO_ASSIGNMENT_ROWS

    x = _series(12, 2)
    res = gibbs_hmm(x, 2, num_chains=1, num_warmup=0, num_draws=2, co_assignment=False)
    assert res.co_assignment is None
    big = torch.zeros(16 * CO_ASSIGNMENT_ROWS + 1, dtype=F64)
    with pytest.raises(ResourceLimitError, match="bytes"):
        gibbs_hmm(big, 2, num_draws=1, num_warmup=0, co_assignment=True)


def test_summed_out_density_is_the_sum_over_paths_plus_the_gibbs_priors():
    """hmm_conjugate_log_density (the NUTS target) at one point: the forward sum equals the sum
    over all paths, and the priors are gibbs_hmm's (Normal-inverse-gamma = NIW at d = 1)."""
    from scipy import stats

    from latentfit.mcmc.gibbs_hmm import hmm_conjugate_log_density

    x = torch.tensor([0.3, -1.2, 2.0, 0.7, 0.1], dtype=F64)
    ld, _, _ = hmm_conjugate_log_density(
        x, 2, lengths=[2, 3], alpha_start=1.5, alpha_trans=0.8, prior_kappa=0.5
    )
    start = torch.tensor([[0.3, 0.7]], dtype=F64)
    trans = torch.tensor([[[0.9, 0.1], [0.4, 0.6]]], dtype=F64)
    means, var = torch.tensor([[-1.0, 1.0]], dtype=F64), torch.tensor([[0.6, 2.0]], dtype=F64)
    total = 0.0
    for seq in (x[:2], x[2:]):
        terms = []
        for z in itertools.product(range(2), repeat=len(seq)):
            lp = math.log(start[0, z[0]])
            lp += sum(math.log(trans[0, z[s - 1], z[s]]) for s in range(1, len(seq)))
            lp += sum(
                stats.norm.logpdf(float(seq[s]), float(means[0, z[s]]), math.sqrt(var[0, z[s]]))
                for s in range(len(seq))
            )
            terms.append(lp)
        total += float(torch.logsumexp(torch.tensor(terms), 0))
    total += stats.dirichlet.logpdf([0.3, 0.7], [1.5, 1.5])
    total += stats.dirichlet.logpdf([0.9, 0.1], [0.8, 0.8])
    total += stats.dirichlet.logpdf([0.4, 0.6], [0.8, 0.8])
    for m, v in zip(means[0].tolist(), var[0].tolist(), strict=True):
        total += stats.invgamma.logpdf(v, 1.5, scale=0.5)  # df 3, scale 1: IG(df/2, scale/2)
        total += stats.norm.logpdf(m, 0.0, math.sqrt(v / 0.5))
    assert abs(float(ld(start, trans, means, var)[0]) - total) < 1e-10


@pytest.mark.parametrize(
    "x",
    [
        [0.0] * 7 + [1.0] + [0.0] * 4 + [5.0, 5.0] + [0.0] * 6,  # most values tied
        [2.0] * 10,  # constant: a variance of 0
    ],
)
def test_the_summed_out_target_starts_inside_its_support_on_tied_data(x):
    # its init's means were the data's 20-80% quantiles, tied here: [0.0, 0.0, 0.0] is not
    # an ordered vector, and sample(..., init_strategy="init") said "init lies outside the
    # support of the constraints: means=[...]; choose init inside the support", of the init
    # latentfit had made; constant data also gave variances of 0
    from latentfit.mcmc import sample
    from latentfit.mcmc.gibbs_hmm import hmm_conjugate_log_density

    ld, init, cons = hmm_conjugate_log_density(torch.tensor(x, dtype=F64), 3)
    assert bool((init["means"][1:] > init["means"][:-1]).all())
    assert bool((init["variances"] > 0).all())
    res = sample(
        ld,
        init,
        constraints=cons,
        vectorized=True,
        init_strategy="init",
        num_chains=2,
        num_warmup=2,
        num_draws=2,
        generator=0,
        progress_bar=False,
    )
    assert bool(torch.isfinite(res.sample_stats["lp"]).all())


def test_chains_start_from_the_given_state_path():
    x = _series(12, 5)
    z0 = (x > 0.25).to(torch.long)
    res = gibbs_hmm(x, 2, num_chains=3, num_warmup=0, num_draws=1, init_states=z0, generator=0)
    assert res.means.shape == (3, 1, 2, 1)
    with pytest.raises(DataError, match="init_states"):
        gibbs_hmm(x, 2, num_draws=1, num_warmup=0, init_states=z0[:5])
    with pytest.raises(DataError, match="init_states"):
        gibbs_hmm(x, 2, num_draws=1, num_warmup=0, init_states=z0 + 2)


@pytest.mark.parametrize(
    "z0, match",
    [
        (lambda z: z.double(), r"got float64 values.*astype\(int\)"),
        (lambda z: z.bool().numpy(), r"got bool values"),
        (lambda z: torch.cat([z[:3], torch.tensor([5]), z[4:]]), r"got state 5 at row 3"),
        (lambda z: z[:5], r"got shape \(5,\)"),
    ],
)
def test_init_states_that_are_refused_say_what_is_wrong_with_them(z0, match):
    # every refusal said "got shape (12,)", also where the shape was right: float or bool
    # states, or a state out of range
    x = _series(12, 5)
    with pytest.raises(DataError, match=match):
        gibbs_hmm(x, 2, num_draws=1, num_warmup=0, init_states=z0((x > 0.25).to(torch.long)))
