"""The DDPM's variational bound against closed forms and direct Monte Carlo, its exact
marginal on Gaussian data, persistence, and sampling from a model trained on two moons."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.datasets import make_moons

import latentfit
from latentfit.diffusion import (
    DDPM,
    DiffusionModule,
    TimeMLP,
    discretized_gaussian_log_likelihood,
    make_schedule,
)
from latentfit.errors import DataError, ParameterError
from tests.two_sample import mmd_permutation_pvalue

F64 = torch.float64


class GaussianDenoiser(torch.nn.Module):
    """ε̂(x_t, t) = E[ε | x_t] for data N(0, s² I): linear in x_t, so the whole reverse process
    is linear-Gaussian and its marginal p(x_0) and every term of the bound have closed forms."""

    def __init__(self, s: float, alpha_bar: torch.Tensor):
        super().__init__()
        self.s, self.alpha_bar = s, alpha_bar
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))  # carries the dtype

    def gain(self, t):
        ab = self.alpha_bar[t - 1]
        return (1 - ab).sqrt() / (ab * self.s**2 + 1 - ab)

    def forward(self, x, t):
        return self.gain(t).unsqueeze(-1) * x


def _gaussian_model(s=1.5, T=40, variance="small", d=2):
    sched = make_schedule("linear", T)
    den = GaussianDenoiser(s, sched.alpha_bar)
    return DiffusionModule(den, sched, d, variance, n_levels=None), den, sched


def _analytic(x0: torch.Tensor, s, module, den, sched):
    """(the bound, -log p_θ(x_0)) per row in closed form, written from the model's definition."""
    d, T = x0.shape[1], module.n_steps
    b, a, ab, abp = sched
    sig2 = module.sigma2
    sq = x0.square().sum(-1)
    prior = 0.5 * (ab[-1] * sq + d * (1 - ab[-1]) - d - d * torch.log(1 - ab[-1]))
    total = prior.clone()
    for t in range(1, T + 1):
        i = t - 1
        k = den.gain(torch.tensor(t))
        g = (1 - b[i] * k / (1 - ab[i]).sqrt()) / a[i].sqrt()  # μ_θ(x_t) = g x_t
        if t == 1:
            # E (x0 - g x1)² per coordinate, x1 = √ᾱ₁ x0 + √(1-ᾱ₁) ε
            e2 = (1 - g * ab[0].sqrt()) ** 2 * sq + d * g**2 * (1 - ab[0])
            total += 0.5 * (d * torch.log(2 * math.pi * sig2[0]) + e2 / sig2[0])
            continue
        var_q = (1 - abp[i]) / (1 - ab[i]) * b[i]
        c = b[i] / (a[i].sqrt() * (1 - ab[i]).sqrt())  # μ̃ - μ_θ = c (ε̂ - ε)
        e_eps = k**2 * ab[i] * sq + d * (k * (1 - ab[i]).sqrt() - 1) ** 2
        total += 0.5 * d * (torch.log(sig2[i] / var_q) + var_q / sig2[i] - 1)
        total += c**2 * e_eps / (2 * sig2[i])
    v = torch.tensor(1.0, dtype=F64)  # p(x_T) = N(0, I); x_{t-1} = g_t x_t + σ_t z
    for t in range(T, 0, -1):
        k = den.gain(torch.tensor(t))
        g = (1 - b[t - 1] * k / (1 - ab[t - 1]).sqrt()) / a[t - 1].sqrt()
        v = g**2 * v + sig2[t - 1]
    nll = 0.5 * (sq / v + d * torch.log(2 * math.pi * v))
    return total, nll


@pytest.mark.parametrize("variance", ["small", "large"])
def test_gaussian_bound_matches_closed_form_and_never_undercuts_the_nll(variance):
    s = 1.5
    module, den, sched = _gaussian_model(s, variance=variance)
    x0 = torch.tensor([[0.0, 0.0], [1.0, -2.0], [4.0, 5.0], [-6.0, 0.5]], dtype=F64)
    bound, nll = _analytic(x0, s, module, den, sched)
    assert bool((bound >= nll).all())  # the ELBO at every point, not only on average
    reps = 3000
    terms = module.bound(x0.repeat(reps, 1), torch.Generator().manual_seed(0))
    mc = terms.total.reshape(reps, 4)
    se = mc.std(0) / math.sqrt(reps)
    assert bool(((mc.mean(0) - bound).abs() < 4 * se).all()), (mc.mean(0), bound, se)
    # On average over the data, the bound also covers the entropy of N(0, s² I).
    data = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1), dtype=F64) * s
    entropy = math.log(2 * math.pi * math.e * s**2)  # d = 2
    avg_bound = float(_analytic(data, s, module, den, sched)[0].mean())
    assert avg_bound >= float(_analytic(data, s, module, den, sched)[1].mean())
    assert avg_bound > entropy - 4 * 0.02  # sd of the mean of -log N over 4000 draws ≈ 0.016


def test_stratified_estimate_of_the_diffusion_terms_is_unbiased():
    module = _gaussian_model()[0]
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64).repeat(4000, 1)
    exact = module.bound(x0, torch.Generator().manual_seed(0)).diffusion
    est = module.bound(x0, torch.Generator().manual_seed(1), n_timesteps=3).diffusion
    se = (exact.var() / 4000 + est.var() / 4000).sqrt()
    assert abs(float(exact.mean() - est.mean())) < 4 * float(se)


@pytest.fixture
def random_module():
    torch.manual_seed(0)
    sched = make_schedule("cosine", 20)
    net = TimeMLP(3, 20, hidden=16, n_hidden=2, time_dim=8).double()
    with torch.no_grad():
        net.out.weight.normal_(0, 0.3)  # a denoiser that is neither zero nor right
    return DiffusionModule(net, sched, 3, "small", n_levels=256)


def test_each_term_matches_a_direct_monte_carlo_estimate(random_module):
    m = random_module
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([[-1.0, 0.2, 1.0]], dtype=F64)
    b, a, ab, abp = m.schedule
    N = 20000
    # L_T = KL(q(x_T | x_0) ‖ N(0, I))
    q_T = torch.distributions.Normal(ab[-1].sqrt() * x0, (1 - ab[-1]).sqrt())
    xs = q_T.sample((N,))
    mc = (q_T.log_prob(xs) - torch.distributions.Normal(0.0, 1.0).log_prob(xs)).sum(-1)
    prior = latentfit.diffusion.prior_kl(x0, ab[-1])
    assert abs(float(mc.mean() - prior)) < 4 * float(mc.std()) / math.sqrt(N)
    # L_{t-1} given x_t: the posterior q(x_{t-1} | x_t, x_0) by Bayes' rule, p from ε_θ
    for t in (2, 9, 20):
        i = t - 1
        eps = torch.randn(x0.shape, generator=gen, dtype=F64)
        xt = ab[i].sqrt() * x0 + (1 - ab[i]).sqrt() * eps
        prec = 1 / (1 - abp[i]) + a[i] / b[i]
        mean = (abp[i].sqrt() * x0 / (1 - abp[i]) + a[i].sqrt() * xt / b[i]) / prec
        q = torch.distributions.Normal(mean, prec.rsqrt())
        with torch.no_grad():
            e_hat = m.denoiser(xt, torch.tensor([t]))
            p = torch.distributions.Normal(
                (xt - b[i] / (1 - ab[i]).sqrt() * e_hat) / a[i].sqrt(), m.sigma2[i].sqrt()
            )
            closed = m.term(x0, torch.tensor([t]), eps)
        xs = q.sample((N,))
        mc = (q.log_prob(xs) - p.log_prob(xs)).sum(-1)
        assert abs(float(mc.mean() - closed)) < 4 * float(mc.std()) / math.sqrt(N) + 1e-12
    # L_0 = -log P(x_0 | x_1): the mass of each level's bin under N(μ_θ(x_1), σ_1²), by scipy
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    with torch.no_grad():
        closed = float(m.term(x0, torch.tensor([1]), eps))
        x1 = ab[0].sqrt() * x0 + (1 - ab[0]).sqrt() * eps
        mu = (x1 - b[0] / (1 - ab[0]).sqrt() * m.denoiser(x1, torch.tensor([1]))) / a[0].sqrt()
    sd, h = float(m.sigma2[0].sqrt()), 1 / 255
    lo = np.where(x0.numpy() < -0.999, -np.inf, x0.numpy() - h)
    hi = np.where(x0.numpy() > 0.999, np.inf, x0.numpy() + h)
    mass = norm.cdf(hi, mu.numpy(), sd) - norm.cdf(lo, mu.numpy(), sd)
    assert closed == pytest.approx(-np.log(mass).sum(), rel=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_training_pass_estimates_the_bound_with_the_closed_form_terms(random_module, prediction):
    """The trainer's per-step estimate L_T + T term_t (a lookup for t ≥ 2) equals the terms
    computed from the two Gaussians at the same t and ε; the loss is ‖ε - ε_θ‖² / d, where a
    network that predicts x_0 gives ε_θ = (x_t - √ᾱ x̂_0)/√(1-ᾱ)."""
    m = random_module
    m.prediction = prediction
    x0 = torch.rand(400, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * 2 - 1
    simple, bound = m(x0, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the same draws of t and ε
    t = torch.randint(1, m.n_steps + 1, (400,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    assert bool((t == 1).any()) and bool((t > 1).any())
    with torch.no_grad():
        ref = latentfit.diffusion.prior_kl(x0, m.alpha_bar[-1]) + m.n_steps * m.term(x0, t, eps)
        xt = m.q_sample(x0, t, eps)
        out = m.denoiser(xt, t)
    torch.testing.assert_close(bound, ref, rtol=1e-10, atol=1e-10)
    e_hat = out
    if prediction == "x0":
        ab = m.alpha_bar[t - 1].unsqueeze(-1)
        e_hat = (xt - ab.sqrt() * torch.tanh(out)) / (1 - ab).sqrt()
    torch.testing.assert_close(simple.detach(), (eps - e_hat).square().mean(-1))


@pytest.mark.parametrize("mean,sd", [(0.0, 0.01), (0.3, 0.5), (-0.99, 0.003), (2.5, 0.02)])
def test_discretised_decoder_sums_to_one_over_the_levels(mean, sd):
    levels = torch.linspace(-1, 1, 256, dtype=F64)[:, None]
    logp = discretized_gaussian_log_likelihood(
        levels, torch.full_like(levels, mean), torch.full_like(levels, math.log(sd))
    )
    assert float(torch.logsumexp(logp, 0)) == pytest.approx(0.0, abs=1e-9)
    ref = norm.logcdf(levels.numpy()[:, 0] + 1 / 255, mean, sd)[0]
    assert float(logp[0]) == pytest.approx(ref, rel=1e-9, abs=1e-12)  # the open first bin


@pytest.fixture(scope="module")
def moons_ddpm():
    torch.set_num_threads(1)
    X = make_moons(1500, noise=0.05, random_state=0)[0]
    model = DDPM(
        100,
        hidden=128,
        n_hidden=3,
        discrete=False,
        epochs=40,
        lr=2e-3,
        patience=None,
        random_state=0,
    )
    return model.fit(X), make_moons(500, noise=0.05, random_state=1)[0]


def test_a_sample_count_beyond_the_machine_is_refused_before_drawing(moons_ddpm):
    from latentfit.errors import ParameterError, ResourceLimitError

    model, _ = moons_ddpm
    with pytest.raises(ResourceLimitError, match=r"n_samples=1,000,000,000,000 draws of 2"):
        model.sample(10**12)
    with pytest.raises(ParameterError, match="n_samples"):
        model.sample(0)


def test_samples_of_a_ddpm_trained_on_moons_match_the_data(moons_ddpm):
    model, Xt = moons_ddpm
    draws = model.sample(500, random_state=0)
    assert mmd_permutation_pvalue(draws, Xt) > 0.01
    # the test has power: the moons' Gaussian fit is rejected
    gauss = np.random.default_rng(0).multivariate_normal(Xt.mean(0), np.cov(Xt.T), 500)
    assert mmd_permutation_pvalue(gauss, Xt) < 0.01


def test_ddpm_save_load_and_errors(moons_ddpm, tmp_path):
    model, Xt = moons_ddpm
    back = latentfit.load(model.save(tmp_path / "ddpm.safetensors"))
    assert type(back) is DDPM and back.get_params() == model.get_params()
    a = model.bound_terms(Xt[:50], n_timesteps=5, random_state=1)
    b = back.bound_terms(Xt[:50], n_timesteps=5, random_state=1)
    torch.testing.assert_close(a.total, b.total, rtol=0, atol=0)
    with pytest.raises(DataError, match="row 0, column 0"):
        DDPM(epochs=1).fit(Xt)  # real values, discrete=True
    with pytest.raises(DataError, match="3 features"):
        model.score_samples(np.zeros((2, 3)))


class LearnedGaussianDenoiser(GaussianDenoiser):
    """E[ε | x_t] for data N(0, s² I) and, in the second half of the output, the v that puts
    σ_t² at the true Var[x_{t-1} | x_t]: the reverse process is then the true reverse of the
    forward chain, so the only gap of the bound is KL(q(x_T) ‖ p(x_T))."""

    def __init__(self, s, sched: latentfit.diffusion.Schedule):
        super().__init__(s, sched.alpha_bar)
        b, _, ab, abp = sched
        v_prev, v = abp * s**2 + 1 - abp, ab * s**2 + 1 - ab  # Var x_{t-1}, Var x_t
        self.true_var = v_prev * b / v  # Var[x_{t-1} | x_t], (T,)
        small = (1 - abp) / (1 - ab) * b
        small[0] = small[1]
        frac = (self.true_var.log() - small.log()) / (b.log() - small.log())
        self.v = 2 * frac - 1

    def forward(self, x, t):
        return torch.cat([super().forward(x, t), self.v[t - 1].unsqueeze(-1).expand_as(x)], -1)


@pytest.mark.parametrize("s", [0.6, 1.5])
def test_learned_variance_at_the_true_reverse_variance_makes_the_bound_tight(s):
    """With σ_t² = Var[x_{t-1} | x_t] each L_{t-1} averages to ½ d log(σ_t² / β̃_t), L_0 to
    ½ d log(2πe σ_1²), and the whole bound over the data to the entropy of N(0, s² I) plus
    d · KL(N(0, Var x_T) ‖ N(0, 1)): a closed form the fixed variances cannot reach."""
    d, T = 2, 40
    sched = make_schedule("linear", T)
    den = LearnedGaussianDenoiser(s, sched)
    module = DiffusionModule(den, sched, d, "learned", n_levels=None)
    n = 20000
    x0 = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=F64) * s
    gen = torch.Generator().manual_seed(1)
    b, _, ab, abp = sched
    small = (1 - abp) / (1 - ab) * b
    with torch.no_grad():
        for t in (1, 2, 7, 40):
            eps = torch.randn(x0.shape, generator=gen, dtype=F64)
            term = module.term(x0, torch.full((n,), t), eps)
            v = den.true_var[t - 1]
            if t == 1:
                ref = 0.5 * d * torch.log(2 * math.pi * math.e * v)
            else:
                ref = 0.5 * d * torch.log(v / small[t - 1])
            se = term.std() / math.sqrt(n)
            assert abs(float(term.mean() - ref)) < 4 * float(se) + 1e-12, (t, term.mean(), ref)
        total = module.bound(x0, gen).total
    v_T = ab[-1] * s**2 + 1 - ab[-1]
    ref = d * (0.5 * math.log(2 * math.pi * math.e * s**2) + 0.5 * (v_T - 1 - torch.log(v_T)))
    se = total.std() / math.sqrt(n)
    assert abs(float(total.mean() - ref)) < 4 * float(se), (total.mean(), ref, se)
    # the fixed small variance on the same means is a strictly looser bound
    fixed = DiffusionModule(GaussianDenoiser(s, sched.alpha_bar), sched, d, "small", None)
    assert float(_analytic(x0[:2000], s, fixed, fixed.denoiser, sched)[0].mean()) > ref + 0.01


def test_hybrid_loss_trains_the_variance_by_the_bound_and_the_mean_by_the_simple_loss():
    """L_hybrid = L_simple + λ T L_t / d with L_t's gradient stopped at μ_θ: the ε outputs get
    the gradient of L_simple alone, the v outputs only λ T ∂L_t/∂v (Nichol & Dhariwal 2021)."""
    d, T = 3, 20
    sched = make_schedule("cosine", T)
    x0 = torch.rand(64, d, generator=torch.Generator().manual_seed(3), dtype=F64) * 2 - 1

    def grads(weight):
        torch.manual_seed(0)  # the same network for both weights
        net = TimeMLP(d, T, hidden=16, n_hidden=2, time_dim=8, out_dim=2 * d).double()
        with torch.no_grad():
            net.out.weight.normal_(0, 0.3)
        m = DiffusionModule(net, sched, d, "learned", n_levels=256, vlb_weight=weight)
        loss, bound = m(x0, torch.Generator().manual_seed(5))
        loss.mean().backward()
        return net.out.weight.grad, m, bound

    g0, _, _ = grads(0.0)
    g1, m, bound = grads(0.5)
    torch.testing.assert_close(g1[:d], g0[:d], rtol=1e-12, atol=1e-12)  # ε rows: L_simple only
    assert float(g0[d:].abs().max()) == 0 and float(g1[d:].abs().max()) > 0
    # the bound estimate is L_T + T term_t at the same draws of t and ε
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(1, T + 1, (64,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    with torch.no_grad():
        ref = latentfit.diffusion.prior_kl(x0, m.alpha_bar[-1]) + T * m.term(x0, t, eps)
    torch.testing.assert_close(bound, ref, rtol=1e-10, atol=1e-10)


def test_gaussian_skip_is_the_posterior_mean_of_the_noise():
    """E[ε | x_t] by conditioning the joint Gaussian of (ε, x_t) directly (numpy), for a full
    covariance; and a zero network on the skip reproduces the closed-form bound."""
    rng = np.random.default_rng(0)
    d = 4
    A = rng.normal(size=(d, d))
    cov, mean = A @ A.T + 0.1 * np.eye(d), rng.normal(size=d)
    ab = 0.37
    xt = rng.normal(size=(5, d))
    # Cov(ε, x_t) = √(1-ᾱ) I, Var x_t = ᾱ Σ + (1-ᾱ) I, E x_t = √ᾱ m
    ref = (xt - math.sqrt(ab) * mean) @ np.linalg.solve(
        ab * cov + (1 - ab) * np.eye(d), math.sqrt(1 - ab) * np.eye(d)
    )
    lam, U = np.linalg.eigh(cov)
    got = latentfit.diffusion.gaussian_eps(
        torch.tensor(xt), torch.full((5, 1), ab, dtype=F64), *map(torch.tensor, (mean, U, lam))
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    # a zero network plus the skip of N(0, s² I) is the model of GaussianDenoiser
    s, T = 1.5, 40
    sched = make_schedule("linear", T)
    net = TimeMLP(2, T, hidden=8, n_hidden=1, time_dim=4).double()  # output layer starts at 0
    module = DiffusionModule(net, sched, 2, "small", None, gaussian_skip=True)
    module.set_gaussian(torch.zeros(2), torch.eye(2), torch.full((2,), s**2))
    ref_module, den, _ = _gaussian_model(s, T)
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64).repeat(3000, 1)
    terms = module.bound(x0, torch.Generator().manual_seed(0))
    exact = _analytic(x0[:1], s, ref_module, den, sched)[0]
    se = terms.total.std() / math.sqrt(3000)
    assert abs(float(terms.total.mean() - exact)) < 4 * float(se)


def test_learned_ddpm_with_skip_saves_loads_and_checks_settings(tmp_path):
    X = make_moons(300, noise=0.05, random_state=0)[0]
    model = DDPM(
        20,
        variance="learned",
        gaussian_skip=True,
        hidden=16,
        n_hidden=1,
        discrete=False,
        epochs=2,
        patience=None,
        random_state=0,
    ).fit(X)
    assert model.skip_floor_ in DDPM._FLOORS
    back = latentfit.load(model.save(tmp_path / "ddpm.safetensors"))
    assert back.skip_floor_ == model.skip_floor_
    torch.testing.assert_close(back.module_.skip_basis, model.module_.skip_basis)
    a = model.bound_terms(X[:50], n_timesteps=5, random_state=1)
    b = back.bound_terms(X[:50], n_timesteps=5, random_state=1)
    torch.testing.assert_close(a.total, b.total, rtol=0, atol=0)
    assert model.sample(5, random_state=0).shape == (5, 2)
    for bad, match in (
        ({"variance": "tiny"}, "variance must be"),
        ({"vlb_weight": -1.0}, "vlb_weight"),
        ({"skip_floor": 0.0}, "skip_floor"),
        ({"gaussian_skip": True, "prediction": "x0"}, "prediction='eps'"),
    ):
        with pytest.raises(ParameterError, match=match):
            DDPM(**bad).fit(X)


def test_clip_denoised_keeps_x0_in_range_and_never_raises_the_error(random_module):
    """x̂_0 from the clipped ε_θ lies in [-1, 1] and equals the unclipped x̂_0 clamped there;
    since x_0 itself lies in [-1, 1], each coordinate's |ε - ε_θ| can only shrink."""
    m = random_module
    with torch.no_grad():
        m.denoiser.out.weight.normal_(0, 3.0)  # far enough off that many x̂_0 leave [-1, 1]
    clipped = DiffusionModule(m.denoiser, m.schedule, 3, "small", 256, clip_denoised=True)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (500, 3), generator=gen).double() / 127.5 - 1
    t = torch.randint(1, 21, (500,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    with torch.no_grad():
        xt = m.q_sample(x0, t, eps)
        raw, cut = m.predict(xt, t).eps, clipped.predict(xt, t).eps
    ab = m.alpha_bar[t - 1].unsqueeze(-1)
    x0_raw = (xt - (1 - ab).sqrt() * raw) / ab.sqrt()
    x0_cut = (xt - (1 - ab).sqrt() * cut) / ab.sqrt()
    outside = (x0_raw.abs() > 1).float().mean()
    assert 0.1 < float(outside) < 0.9  # the test exercises both branches
    torch.testing.assert_close(x0_cut, x0_raw.clamp(-1, 1), rtol=1e-9, atol=1e-9)
    assert bool(((eps - cut).abs() <= (eps - raw).abs() + 1e-9).all())


def test_decoder_fraction_keeps_the_training_estimate_of_the_bound_unbiased():
    """With t = 1 drawn in a fraction q of the rows besides its 1/T share, the trainer's
    estimate L_T + term_t / p(t) still averages to the exact bound (here closed-form Gaussian
    terms, learned variance at the true reverse variance), and its rows at t = 1 are ≈ q."""
    d, T, s, q = 2, 40, 1.5, 0.3
    sched = make_schedule("linear", T)
    module = DiffusionModule(
        LearnedGaussianDenoiser(s, sched), sched, d, "learned", None, decoder_fraction=q
    )
    n = 40000
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64).repeat(n, 1)
    with torch.no_grad():
        _, est = module(x0, torch.Generator().manual_seed(0))
        exact = module.bound(x0, torch.Generator().manual_seed(1)).total  # every t
    se = (est.var() / n + exact.var() / n).sqrt()
    assert abs(float(est.mean() - exact.mean())) < 4 * float(se), (est.mean(), exact.mean())
    gen = torch.Generator().manual_seed(0)  # the same draws: the share of t = 1
    t = torch.randint(1, T + 1, (n,), generator=gen)
    t = torch.where(torch.rand(n, generator=gen) < q, 1, t)
    share = float((t == 1).double().mean())
    assert abs(share - (q + (1 - q) / T)) < 4 * math.sqrt(0.33 * 0.67 / n)
    with pytest.raises(ParameterError, match="decoder_fraction"):
        DDPM(decoder_fraction=1.0).fit(np.zeros((4, 2)))


def test_samples_of_a_ddpm_with_learned_variances_match_the_data():
    """Sampling draws x_{t-1} with the learned σ_t² per dimension (Nichol & Dhariwal 2021)."""
    torch.set_num_threads(1)
    X = make_moons(1500, noise=0.05, random_state=0)[0]
    model = DDPM(
        100,
        variance="learned",
        vlb_weight=0.01,
        hidden=128,
        n_hidden=3,
        discrete=False,
        epochs=40,
        lr=2e-3,
        patience=None,
        random_state=0,
    ).fit(X)
    Xt = make_moons(500, noise=0.05, random_state=1)[0]
    assert mmd_permutation_pvalue(model.sample(500, random_state=0), Xt) > 0.01


def test_prior_term_is_the_kl_of_two_normals():
    """L_T in closed form against torch.distributions' KL of N(√ᾱ_T x_0, 1-ᾱ_T) from N(0, 1),
    summed over dimensions, for ᾱ_T from near 0 (a long schedule) to near 1; a tensor and a
    number for ᾱ_T give the same."""
    x0 = torch.rand(50, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    for ab in (4e-5, 0.3, 0.999):
        a = torch.tensor(ab, dtype=F64)
        q = torch.distributions.Normal(a.sqrt() * x0, (1 - a).sqrt())
        p = torch.distributions.Normal(torch.zeros_like(x0), torch.ones_like(x0))
        ref = torch.distributions.kl_divergence(q, p).sum(-1)
        torch.testing.assert_close(
            latentfit.diffusion.prior_kl(x0, ab), ref, rtol=1e-12, atol=1e-15
        )
        torch.testing.assert_close(latentfit.diffusion.prior_kl(x0, a), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("q", [0.0, 0.3])
def test_fixed_variance_training_estimate_is_the_bound_term_over_p_t(random_module, q):
    """The training pass's lookup (1/p(t), L_T's constant and d folded into one table by t)
    equals L_T + term_t / p(t) from the two Gaussians at the same draws of t and ε, with and
    without the decoder fraction (p(1) = q + (1-q)/T, p(t) = (1-q)/T for t ≥ 2)."""
    m0 = random_module
    T = m0.n_steps
    m = DiffusionModule(m0.denoiser, m0.schedule, 3, "small", n_levels=256, decoder_fraction=q)
    x0 = torch.rand(300, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * 2 - 1
    loss, bound = m(x0, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the same draws
    t = torch.randint(1, T + 1, (300,), generator=gen)
    if q > 0:
        t = torch.where(torch.rand(300, generator=gen) < q, 1, t)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    assert bool((t == 1).any()) and bool((t > 1).any())
    p = torch.where(t == 1, *torch.tensor([q + (1 - q) / T, (1 - q) / T], dtype=F64))
    with torch.no_grad():
        ref = latentfit.diffusion.prior_kl(x0, m.alpha_bar[-1]) + m.term(x0, t, eps) / p
        e_hat = m.denoiser(m.q_sample(x0, t, eps), t)
    torch.testing.assert_close(bound, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss.detach(), (eps - e_hat).square().mean(-1))


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"hidden": 10**7}, "hidden=10000000"),
        ({"n_hidden": 10**6}, "n_hidden=1000000"),
        ({"time_dim": 10**9}, "time_dim=1000000000"),
        ({"n_steps": 10**10}, "n_steps=10,000,000,000"),
    ],
)
def test_a_denoiser_beyond_the_machine_is_refused_before_it_is_built(kw, words):
    from latentfit.errors import ResourceLimitError

    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ResourceLimitError, match=words):
        DDPM(**{"epochs": 1, "discrete": False, **kw}).fit(X)


def test_a_constant_column_of_real_data_is_warned_of_as_for_flows():
    # before: no word, while the floor of the column's scale (1e-6) added 13.8 nats a row
    X = np.c_[np.random.default_rng(0).normal(size=40), np.full(40, 3.0)]
    with pytest.warns(RuntimeWarning, match=r"column\(s\) 1 \(3\) hold one value.*discrete=True"):
        DDPM(5, hidden=4, n_hidden=1, discrete=False, epochs=1, random_state=0).fit(X)
    import warnings

    with warnings.catch_warnings():  # 8-bit levels may be constant: no warning there
        warnings.simplefilter("error", RuntimeWarning)
        DDPM(5, hidden=4, n_hidden=1, epochs=1, random_state=0).fit(np.c_[X[:, :1] * 0, X[:, 1:]])


def test_the_linear_schedule_keeps_its_end_for_few_steps_and_is_ho_et_al_at_1000():
    """Each of T steps is 1000 / T steps of Ho et al.'s chain: β_t < 1 and ᾱ_T within a few
    per cent of its T = 1000 value for every T (before: β scaled by 1000 / T and clipped at
    0.999 gave ᾱ_T = 1e-17 at T = 10, and sampling overflowed)."""
    ref = make_schedule("linear", 1000)
    np.testing.assert_allclose(ref.betas, torch.linspace(1e-4, 0.02, 1000, dtype=F64), rtol=1e-12)
    for T in (3, 5, 10, 20, 40, 4000):
        sched = make_schedule("linear", T)
        assert bool((sched.betas < 0.999).all()) and bool(
            (sched.betas[1:] > sched.betas[:-1]).all()
        )
        # the ends differ only as Σ log(1 - β) over T points of the line differs from 1000 points
        np.testing.assert_allclose(sched.alpha_bar[-1], ref.alpha_bar[-1], rtol=0.05)


@pytest.mark.parametrize("T", [5, 10, 20])
def test_a_ddpm_with_few_steps_draws_finite_values(T):
    # before: DDPM(10, discrete=False, variance="learned", epochs=1).fit(X).sample(4) drew NaN
    X = np.random.default_rng(0).normal(size=(100, 2))
    model = DDPM(T, discrete=False, variance="learned", hidden=16, epochs=1, random_state=0)
    draws = model.fit(X).sample(200, random_state=0)
    # an untrained denoiser still leaves draws within 1/√ᾱ_T ≈ 160 of the prior's scale
    assert np.isfinite(draws).all() and np.abs(draws).max() < 1e4


def _alpha_bars(T, beta_1=1e-4, beta_T=0.02):
    """ᾱ_t of the linear schedule, t = 0..T, from its definition: each of the T steps is
    1000 / T steps of Ho et al.'s chain at the rate of its point on the line."""
    rates = np.linspace(beta_1, beta_T, T)
    return np.concatenate([[1.0], np.cumprod((1 - rates) ** (1000 / T))])


@pytest.mark.parametrize("T", [1, 2, 3, 5, 10, 20, 100, 1000])
def test_a_schedule_is_coarse_where_one_step_replaces_a_quarter_of_the_data(T):
    # Old Faithful, 300 epochs: T = 3, 5, 10 drew covariances 175%, 57%, 33% off (T = 1000:
    # 13%); the step that does it replaces most of the data's share of the variance at once
    ab = _alpha_bars(T)
    drop = ab[:-1] - ab[1:]
    found = latentfit.diffusion.coarse_steps(make_schedule("linear", T))
    if drop.max() > 0.25:
        assert found.t == int(drop.argmax()) + 1
        assert found.alpha_bar_prev == pytest.approx(ab[found.t - 1], rel=1e-12)
        assert found.alpha_bar == pytest.approx(ab[found.t], rel=1e-12)
    else:
        assert found.t is None
    assert (found.alpha_bar_T is None) == (ab[-1] <= 0.01)
    assert (found.t is not None) == (2 <= T <= 10)  # the figures above: T = 20 is not coarse
    assert (found.alpha_bar_T is not None) == (T == 1)  # ᾱ_1 = 0.9999^1000 = 0.905


def test_a_coarse_schedule_warns_when_fitted_naming_the_step_and_what_to_try():
    from latentfit.errors import CoarseScheduleWarning

    X = np.random.default_rng(0).normal(size=(40, 2))
    fit = dict(hidden=4, n_hidden=1, discrete=False, epochs=1, random_state=0)
    with pytest.warns(CoarseScheduleWarning, match=r"n_steps=5.*step t=2.*n_steps=12 or more"):
        DDPM(5, **fit).fit(X)
    # beta_T = 1e-3: ᾱ_T = Π(1 - β) = 0.577 at every T, so more steps would not help
    ab = _alpha_bars(1000, beta_T=1e-3)[-1]
    with pytest.warns(CoarseScheduleWarning, match=rf"alpha_bar_T = {ab:.3g}.*a larger beta_T"):
        DDPM(1000, beta_T=1e-3, **fit).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseScheduleWarning)
        DDPM(20, **fit).fit(X)
        DDPM(10, schedule="cosine", **fit).fit(X)


def test_a_sample_count_that_would_run_for_days_is_refused_before_drawing(monkeypatch):
    # 10**7 draws of 2 values fit in memory (720 MB) but take 10**7 x 1000 network calls
    from latentfit.diffusion.process import DiffusionModule
    from latentfit.errors import ResourceLimitError

    torch.set_num_threads(1)
    X = np.random.default_rng(0).normal(size=(200, 2))
    model = DDPM(1000, discrete=False, epochs=1, random_state=0).fit(X)
    # TimeMLP(2 -> 512, time 64 -> 512 -> 512, 2 x 512 -> 512, 512 -> 2), counted by hand
    weights = (2 * 512 + 512) + (64 * 512 + 512) + 3 * (512 * 512 + 512) + (512 * 2 + 2)
    per_draw = 1000 * (weights + 2)
    largest = 10**15 // per_draw
    with monkeypatch.context() as m:
        m.setattr(DiffusionModule, "sample", lambda *a, **k: pytest.fail("drew"))
        with pytest.raises(
            ResourceLimitError,
            match=rf"n_samples=10,000,000 draws through 1,000 .* {weights:,} weights"
            rf".* n_samples <= {largest:,}\b",
        ):
            model.sample(10**7)
        with pytest.raises(ResourceLimitError, match=r"n_samples <= 3\b"):
            model.sample(4, max_work=3 * per_draw)
    assert model.sample(3, max_work=3 * per_draw).shape == (3, 2)
    assert model.sample(4, max_work=None).shape == (4, 2)


def test_data_of_0s_and_1s_say_whether_they_are_codes_or_intensities():
    """0s and 1s of 5 levels are the codes 0 and 1 or the levels 0 and 4: refused unless
    level_scale says which, then bounded as those levels (x_0 = 2 k / 4 - 1)."""
    binary = np.random.default_rng(0).integers(0, 2, (60, 3)).astype(float)
    fit = {"n_levels": 5, "hidden": 8, "n_hidden": 1, "epochs": 1, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.errors.CoarseScheduleWarning)
        with pytest.raises(DataError, match=r"only 0s and 1s.*level_scale=4 \(intensities\)"):
            DDPM(5, **fit).fit(binary)
        for scale in (1, 4):
            model = DDPM(5, level_scale=scale, **fit).fit(binary)
            assert model.level_scale_ == scale
            x0 = torch.as_tensor(binary * scale * 2 / 4 - 1, dtype=torch.float32)
            with torch.no_grad():
                bound = model.module_.bound(x0, torch.Generator().manual_seed(0), 3).total
            got = model.bound_terms(binary, 3).total
            np.testing.assert_allclose(got.numpy(), bound.double().numpy(), rtol=1e-6)


def test_intensities_of_many_levels_held_in_float32_read_as_their_levels():
    """k / 4999 cast to float32 is read as level k (x_0 = 2 k / 4999 - 1), not refused as
    off the grid; half a level off is still refused."""
    codes = np.random.default_rng(0).integers(0, 5000, (60, 3))
    fit = {"n_levels": 5000, "hidden": 8, "n_hidden": 1, "epochs": 1, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.errors.CoarseScheduleWarning)
        model = DDPM(5, **fit).fit(codes / 4999)
    # level k as the model maps it, in float32 (2 k / 4999 - 1 rounded once instead differs
    # by an ulp in some entries, which the bound's 1/β̃_t terms amplify past 1e-6)
    x0 = torch.as_tensor(codes, dtype=torch.float32) * (2.0 / 4999) - 1.0
    with torch.no_grad():
        bound = model.module_.bound(x0, torch.Generator().manual_seed(0), 3).total
    got = model.bound_terms(codes / 4999, 3).total
    np.testing.assert_allclose(got.numpy(), bound.double().numpy(), rtol=1e-6)
    with pytest.raises(DataError, match="row 0, column 0"):
        model.bound_terms((codes + 0.5) / 4999, 3)


def test_whole_numbers_of_real_data_are_warned_of_as_for_flows():
    """Codes 0..4 given as real data (discrete=False): a Gaussian decoder narrows onto the five
    values without bound; warned, naming discrete=True, which takes them without a word."""
    codes = np.random.default_rng(0).integers(0, 5, (300, 3)).astype(float)
    fit = {"hidden": 4, "n_hidden": 1, "epochs": 1, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.errors.CoarseScheduleWarning)
        with pytest.warns(RuntimeWarning, match=r"only whole numbers.*pass discrete=True"):
            DDPM(5, discrete=False, **fit).fit(codes)
        warnings.simplefilter("error", RuntimeWarning)
        DDPM(5, n_levels=5, **fit).fit(codes)


def test_ddpm_levels_float32_cannot_tell_apart_are_refused_naming_float64():
    """The codes 2**24 - 2 and 2**24 - 1 of 2**24 levels (the old float32 limit) both became
    x_0 = 1.0 in float32: two levels scored as one. float32 now stops at 2**20 levels, naming
    float64, where the same codes stay apart."""
    n = 2**24
    codes = np.array([[n - 2.0], [n - 1.0], [0.0]])
    fit = {"hidden": 4, "n_hidden": 1, "epochs": 1, "random_state": 0, "level_scale": 1}
    with pytest.raises(ParameterError, match=r"2 to 1,048,576.*got 16777216.*dtype='float64'"):
        DDPM(5, n_levels=n, **fit).fit(codes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentfit.errors.CoarseScheduleWarning)
        model = DDPM(5, n_levels=n, dtype="float64", **fit).fit(codes)
    x0 = model._as_model_space(codes, scoring=True)[:, 0]
    assert x0.tolist() == [1 - 2 / (n - 1), 1.0, -1.0]
