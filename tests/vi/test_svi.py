"""Stochastic VI on conjugate models: the fitted guide is the exact posterior (or, for a
mean-field guide, the known mean-field optimum) within a stated Monte-Carlo tolerance."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Beta, Gamma, Independent, Normal, OneHotCategorical, Poisson

from latentfit.em.driver import NonFiniteLowerBoundError
from latentfit.vi.estimators import GumbelSoftmax, ScoreFunction
from latentfit.vi.guides import (
    DistributionGuide,
    FlowGuide,
    FullRankGaussian,
    Guide,
    LocalMeanFieldGaussian,
    MeanFieldGaussian,
)
from latentfit.vi.objectives import ELBO
from latentfit.vi.svi import MiniBatches, svi

F64 = torch.float64


def _fit(objective, params, steps, lr=0.05, batches=None):
    """Adam with a Robbins–Monro decay (step ∝ t^-0.7) so the iterates settle."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (1 + t / 200) ** -0.7)
    return svi(objective, opt, steps, batches=batches, scheduler=sched)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _normal_normal(n=30, seed=0):
    g = _gen(seed)
    x = 1.5 + 2.0 * torch.randn(n, generator=g, dtype=F64)
    s0, sig = 3.0, 2.0
    prec = 1 / s0**2 + n / sig**2
    return x, s0, sig, float(x.sum() / sig**2 / prec), prec**-0.5


@pytest.mark.parametrize("guide_cls", [MeanFieldGaussian, FullRankGaussian])
def test_normal_normal_recovers_exact_posterior(guide_cls):
    x, s0, sig, mean, sd = _normal_normal()
    guide = guide_cls(1, scale=1.0, dtype=F64)
    prior = Independent(Normal(torch.zeros(1, dtype=F64), torch.full((1,), s0, dtype=F64)), 1)

    def loglik(z, batch):  # z (s, 1) → (s, n)
        return Normal(z, sig).log_prob(x)

    _fit(ELBO(loglik, guide, prior, num_samples=8, generator=_gen(1)), guide.parameters(), 1500)
    q = guide()
    # Stationary SGD noise at the final step size moves the optimum by a few percent of the
    # posterior sd (seen over seeds: < 0.05 sd); 0.15 sd and 10 % leave a 3x margin.
    assert abs(float(q.mean.detach()) - mean) < 0.15 * sd
    assert abs(float(q.stddev.detach()) / sd - 1) < 0.1


def test_beta_bernoulli_recovers_exact_posterior():
    g = _gen(0)
    y = (torch.rand(40, generator=g, dtype=F64) < 0.3).to(F64)
    heads, a0, b0 = float(y.sum()), 2.0, 2.0
    guide = DistributionGuide(Beta, concentration1=a0, concentration0=b0, dtype=F64)

    def loglik(p, batch):  # Bernoulli likelihood through its sufficient statistics: (s,)
        return heads * p.log() + (len(y) - heads) * torch.log1p(-p)

    prior = Beta(torch.tensor(a0, dtype=F64), torch.tensor(b0, dtype=F64))
    _fit(
        ELBO(loglik, guide, prior, num_samples=8, generator=_gen(1)),
        guide.parameters(),
        1500,
        lr=0.1,
    )
    with torch.no_grad():
        q = guide()
    exact = Beta(a0 + heads, b0 + len(y) - heads)
    # Same tolerance argument as above: SGD noise ≈ 0.05 posterior sd, 3x margin.
    assert abs(float(q.mean - exact.mean)) < 0.15 * float(exact.stddev)
    assert abs(float(q.stddev / exact.stddev) - 1) < 0.1


class _GammaByMoments(Guide):
    """A Gamma guide parameterised by log mean and log sd (well conditioned for Adam)."""

    def __init__(self, mean, sd):
        super().__init__()
        self.log_mean = nn.Parameter(torch.tensor(math.log(mean), dtype=F64))
        self.log_sd = nn.Parameter(torch.tensor(math.log(sd), dtype=F64))

    def forward(self):
        m, v = self.log_mean.exp(), (2 * self.log_sd).exp()
        return Gamma(m * m / v, m / v)


def test_gamma_poisson_minibatches_recover_exact_posterior():
    """Mini-batches of 5 out of 20 counts, scaled by N/b = 4: the exact posterior again."""
    counts = torch.tensor([4, 3, 5, 2, 6, 4, 1, 3, 5, 4, 7, 2, 3, 4, 3, 5, 2, 4, 3, 6], dtype=F64)
    a0, r0 = 2.0, 0.5
    guide = _GammaByMoments(a0 / r0, a0**0.5 / r0)

    def loglik(lam, batch):  # lam (s,), batch = (index, counts) → (s, b)
        return Poisson(lam.unsqueeze(-1)).log_prob(batch[1])

    prior = Gamma(torch.tensor(a0, dtype=F64), torch.tensor(r0, dtype=F64))
    elbo = ELBO(loglik, guide, prior, n_data=20, num_samples=8, generator=_gen(1))
    batches = MiniBatches(counts, batch_size=5, generator=_gen(2))
    _fit(elbo, guide.parameters(), 1500, batches=batches)
    with torch.no_grad():
        q = guide()
    exact = Gamma(a0 + counts.sum(), r0 + 20)
    # Mini-batch noise adds to the SGD noise (seen: ≈ 0.05 sd on the mean, 2 % on the sd);
    # an unscaled likelihood would give sd ≈ 2x the exact one, far outside these bounds.
    assert abs(float(q.mean - exact.mean)) < 0.15 * float(exact.stddev)
    assert abs(float(q.stddev / exact.stddev) - 1) < 0.1


def test_local_and_global_latents_reach_the_mean_field_optimum():
    """x_i = z_i + ε, z_i ~ N(μ, 1), μ ~ N(0, 3²), all unit noise. Mean-field q(μ) Π q(z_i)
    has a closed-form optimum: q(μ) mean = exact posterior mean, variance 1 / (n + 1/9)
    (the inverse joint-precision diagonal: smaller than the exact 1 / (n/2 + 1/9))."""
    n = 40
    x = 1.0 + 2**0.5 * torch.randn(n, generator=_gen(0), dtype=F64)
    glob = MeanFieldGaussian(1, scale=0.5, dtype=F64)
    local = LocalMeanFieldGaussian(n, 1, scale=0.5, dtype=F64)
    prior = Independent(Normal(torch.zeros(1, dtype=F64), torch.full((1,), 3.0, dtype=F64)), 1)

    def local_prior(mu, batch):  # p(z_i | μ): batch (b,) per sample of μ → (s, b)
        return Independent(Normal(mu.unsqueeze(1), 1.0), 1)

    def loglik(mu, z, batch):  # z (s, b, 1) → (s, b)
        return Normal(z.squeeze(-1), 1.0).log_prob(batch[1])

    elbo = ELBO(
        loglik,
        glob,
        prior,
        local_guide=lambda b: local(b[0]),
        local_prior=local_prior,
        n_data=n,
        num_samples=4,
        generator=_gen(1),
    )
    params = [*glob.parameters(), *local.parameters()]
    _fit(elbo, params, 3000, batches=MiniBatches(x, batch_size=10, generator=_gen(2)))
    exact_mean = float(x.sum() / 2 / (n / 2 + 1 / 9))
    mf_sd = (n + 1 / 9) ** -0.5
    q = glob()
    q = Independent(Normal(q.mean.detach(), q.stddev.detach()), 1)
    # Tolerance: SGD + mini-batch noise (seen ≈ 0.1 sd); 0.3 sd / 15 % give a 3x margin and
    # stay far from the exact marginal sd, which is √2 larger than the mean-field one.
    assert abs(float(q.mean) - exact_mean) < 0.3 * mf_sd
    assert abs(float(q.stddev) / mf_sd - 1) < 0.15
    zq = local()
    assert torch.allclose(zq.mean.squeeze(-1), (x + exact_mean) / 2, atol=0.15)


def test_flow_guide_beats_the_best_mean_field_guide():
    """Target N(m, Σ) with correlation 0.9 (log p(x) = 0 since it is normalised): the best
    mean-field Gaussian has ELBO = ½ log(1 − ρ²) = −0.830 (Bishop 2006 §10.1.2); the flow,
    which contains shears, gets much closer to 0."""
    rho = 0.9
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=F64)
    target = torch.distributions.MultivariateNormal(torch.tensor([1.0, -1.0], dtype=F64), cov)
    torch.manual_seed(0)  # the coupling networks' initial weights
    guide = FlowGuide(2, n_layers=2, hidden=16, dtype=F64)
    elbo = ELBO(lambda z, b: target.log_prob(z), guide, None, num_samples=16, generator=_gen(0))
    svi(elbo, torch.optim.Adam(guide.parameters(), lr=0.05), 400)
    final = ELBO(lambda z, b: target.log_prob(z), guide, None, num_samples=4000, generator=_gen(1))
    with torch.no_grad():
        value = float(final())
    # The 4000-sample estimate has sd ≈ 0.01; the fitted flow reaches ≈ −0.05.
    assert 0.5 * math.log(1 - rho**2) + 0.5 < value <= 0.05
    q = guide()
    z = q.sample((5,))
    x = q.base_dist.sample((5,))
    y = x
    for t in q.transforms:
        y = t(y)
    for t in reversed(q.transforms):
        y = t.inv(y)
    assert torch.allclose(y, x, atol=1e-10) and bool(torch.isfinite(q.log_prob(z)).all())


def test_guides_map_to_the_support_and_refuse_bad_input():
    q = MeanFieldGaussian(3, support=torch.distributions.constraints.positive)()
    z = q.rsample((100,))
    assert bool((z > 0).all()) and q.log_prob(z).shape == (100,)
    with pytest.raises(ValueError, match="dim >= 2"):
        FlowGuide(1)
    with pytest.raises(ValueError, match="no parameter 'alpha'"):
        DistributionGuide(Beta, alpha=1.0)
    with pytest.raises(ValueError, match="cannot be reparameterised"):
        ELBO(lambda z, b: z.sum(-1), torch.distributions.Poisson(torch.tensor(3.0)))()


def test_svi_refuses_a_nonfinite_objective():
    p = nn.Parameter(torch.zeros(()))
    with pytest.raises(NonFiniteLowerBoundError, match="smaller learning rate"):
        svi(lambda b: p * float("nan"), torch.optim.SGD([p], lr=0.1), 3)


class _LocalCategorical(nn.Module):
    """q(z_i) = OneHotCategorical(logits_i), one per data point."""

    def __init__(self, n, k):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n, k, dtype=F64))

    def forward(self, index):
        return OneHotCategorical(logits=self.logits[index])


@pytest.mark.parametrize(
    "estimator", [ScoreFunction(), GumbelSoftmax(0.5, hard=True)], ids=["score", "gumbel-st"]
)
def test_discrete_local_latents_reach_the_exact_responsibilities(estimator):
    """A two-component mixture with known parameters: the optimal q(z_i) is p(z_i | x_i)."""
    g = _gen(0)
    x = torch.cat(
        [torch.randn(10, generator=g, dtype=F64) - 1, torch.randn(10, generator=g, dtype=F64) + 1]
    )
    mu, pi = torch.tensor([-1.0, 1.0], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64)
    post = torch.softmax(pi.log() + Normal(mu, 1.0).log_prob(x.unsqueeze(1)), 1)  # (n, 2)
    local = _LocalCategorical(20, 2)

    def loglik(_z, zl, batch):  # zl (s, b, 2) one-hot → (s, b)
        return (zl * Normal(mu, 1.0).log_prob(batch[1].unsqueeze(1))).sum(-1)

    elbo = ELBO(
        loglik,
        None,
        None,
        local_guide=lambda b: local(b[0]),
        local_prior=OneHotCategorical(probs=pi),
        n_data=20,
        num_samples=8,
        local_estimator=estimator,
        generator=_gen(1),
    )
    _fit(elbo, local.parameters(), 1200, batches=MiniBatches(x, batch_size=5, generator=_gen(2)))
    q = torch.softmax(local.logits.detach(), 1)
    # Seen: max error ≈ 0.05 for both (SGD noise; the straight-through bias is small here
    # because the likelihood is linear in the one-hot z). 0.12 leaves a 2x margin.
    assert float((q - post).abs().max()) < 0.12


@pytest.mark.parametrize("bad", ["a", None, 1.5, 0])
def test_batch_size_and_num_steps_are_checked(bad):
    from latentfit.errors import ParameterError

    with pytest.raises(ParameterError, match="batch_size"):
        MiniBatches(torch.zeros(5, 2), batch_size=bad)
    if bad != 0:  # zero steps is a valid (empty) run
        with pytest.raises(ParameterError, match="num_steps"):
            svi(lambda batch: torch.zeros(()), torch.optim.SGD([torch.zeros(1)], lr=0.1), bad)
