"""Objectives against closed forms: a linear-Gaussian VAE whose encoder is the exact posterior,
Monte-Carlo KL, IWAE(k=1) = ELBO, monotonicity in k, DReG against the IWAE gradient."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from latentfit.errors import ParameterError, ResourceLimitError
from latentfit.vae import (
    ELBO,
    IWAE,
    VAE,
    BetaVAE,
    DReG,
    build_model,
    log_mean_exp,
    marginal_log_likelihood,
)
from latentfit.vae.likelihoods import GaussianLikelihood
from latentfit.vae.networks import Decoder, GaussianEncoder


def linear_gaussian_vae(d=4, dz=2, sigma2=0.3, exact_posterior=True, seed=0):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, σ² I) with orthogonal columns of W, so the exact
    posterior is diagonal: Σ = (I + WᵀW/σ²)⁻¹, μ(x) = Σ Wᵀ(x - b)/σ², and p(x) = N(b, WWᵀ + σ²I)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, dz, generator=g, dtype=torch.float64))
    W = q * torch.tensor([1.5, 0.7], dtype=torch.float64)[:dz]
    b = torch.randn(d, generator=g, dtype=torch.float64)
    dec = nn.Linear(dz, d).double()
    dec.weight.data, dec.bias.data = W.clone(), b.clone()
    enc = GaussianEncoder(nn.Identity(), d, dz).double()
    Sigma = torch.diag(1.0 / (1.0 + (W * W).sum(0) / sigma2))  # (dz, dz)
    A = Sigma @ W.T / sigma2
    if exact_posterior:
        enc.head.weight.data = torch.cat([A, torch.zeros(dz, d, dtype=torch.float64)])
        enc.head.bias.data = torch.cat([-A @ b, Sigma.diagonal().log()])
    lik = GaussianLikelihood(d, variance="fixed", fixed_variance=sigma2)
    model = VAE(enc, Decoder(dec, lik))
    cov = (W @ W.T + sigma2 * torch.eye(d, dtype=torch.float64)).numpy()
    return model, W, b, cov


def test_exact_posterior_makes_every_bound_equal_log_px():
    # With q = p(z|x) every importance weight equals p(x): ELBO, IWAE and the k=5000 estimate
    # are all exactly log p(x) (up to float64 rounding), which scipy gives in closed form.
    model, _, b, cov = linear_gaussian_vae()
    X = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    truth = multivariate_normal(b.numpy(), cov).logpdf(X.numpy())
    g = torch.Generator().manual_seed(2)
    # The closed-form-KL ELBO has Monte-Carlo noise only in E_q[log p(x|z)]: with 10,000
    # samples its standard error here is about 0.01 nats.
    np.testing.assert_allclose(ELBO(n_samples=10_000)(model, X, g).bound.numpy(), truth, atol=0.04)
    np.testing.assert_allclose(
        ELBO(analytic_kl=False)(model, X, g).bound.numpy(), truth, rtol=1e-10
    )
    np.testing.assert_allclose(IWAE(7)(model, X, g).bound.numpy(), truth, rtol=1e-10)
    res = marginal_log_likelihood(model, X, k=5000, generator=g, batch_size=3, max_rows=1000)
    np.testing.assert_allclose(res.log_px.numpy(), truth, rtol=1e-10)
    assert res.nll == pytest.approx(-truth.mean(), rel=1e-10)
    assert res.bits_per_dim == pytest.approx(-truth.mean() / (4 * math.log(2)), rel=1e-10)


def test_k5000_estimate_matches_closed_form_with_an_inexact_encoder():
    model, _, b, cov = linear_gaussian_vae()
    with torch.no_grad():
        model.encoder.head.bias[2:] += math.log(2.0)  # q twice as wide as the posterior
    X = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    truth = multivariate_normal(b.numpy(), cov).logpdf(X.numpy())
    res = marginal_log_likelihood(model, X, k=5000, generator=torch.Generator().manual_seed(4))
    elbo = ELBO(n_samples=5000)(model, X, torch.Generator().manual_seed(5)).bound.numpy()
    assert (elbo < truth - 0.2).all()  # the gap is KL(q ‖ posterior) = 2 · ½(1 - log 2) ≈ 0.31
    # With q's variance twice the posterior's, E[w²]/E[w]² = (2/√3)² per dimension, so the mean
    # of 5000 weights has a relative standard error of √(0.33/5000) ≈ 0.8 %: 0.03 nats is ~4 SE.
    np.testing.assert_allclose(res.log_px.numpy(), truth, atol=0.03)


def test_log_mean_exp_is_stable():
    x = torch.tensor([[1000.0, -1000.0], [1000.0, -1001.0]], dtype=torch.float64)
    out = log_mean_exp(x, 0)
    expected = [1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-14)


def test_analytic_kl_equals_monte_carlo_kl():
    model = build_model(x_dim=12, z_dim=3, hidden=[8], seed=1).double()
    x = torch.rand(4, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = model(x, 40_000, torch.Generator().manual_seed(1))
    mc = p.log_qz - p.log_pz  # (s, n)
    err = mc.std(0) / math.sqrt(mc.shape[0])
    # Five standard errors: a correct KL fails this with probability < 1e-6 per point.
    assert ((mc.mean(0) - p.kl.sum(-1)).abs() < 5 * err).all()


@pytest.mark.parametrize("kind", ["gaussian", "ladder", "iaf"])
def test_iwae_k1_equals_the_elbo_exactly(kind):
    spec = dict(x_dim=12, z_dim=3, hidden=[8], seed=2)
    spec.update(
        {
            "gaussian": {},
            "ladder": dict(kind="ladder", z2_dim=2, hidden2=[6]),
            "iaf": dict(flow="iaf"),
        }[kind]
    )
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    outs, grads = [], []
    for obj in (IWAE(1), ELBO(analytic_kl=False)):
        model = build_model(**spec)
        out = obj(model, x, torch.Generator().manual_seed(3))
        out.loss.backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.equal(outs[0].bound, outs[1].bound)
    assert torch.equal(outs[0].loss, outs[1].loss)
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_bound_grows_with_k_and_stays_below_the_k5000_estimate():
    model = build_model(x_dim=20, z_dim=4, hidden=[16], seed=4).double()
    x = (torch.rand(8, 20, generator=torch.Generator().manual_seed(5)) > 0.5).double()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        # 400 independent replicates of each L_k; their mean estimates E[L_k].
        means, sems = {}, {}
        for k in (1, 5, 50):
            reps = IWAE(k)(model, x.repeat(400, 1), g).bound.reshape(400, -1)  # (400, n)
            means[k], sems[k] = reps.mean(0), reps.std(0) / math.sqrt(400)
        ll = marginal_log_likelihood(model, x, k=5000, generator=g).log_px
    # E[L_1] ≤ E[L_5] ≤ E[L_50] ≤ log p(x) (Burda et al. 2016, Theorem 1); the k=5000 value is
    # itself an estimate, so allow 4 standard errors of slack per comparison.
    assert (means[1] <= means[5] + 4 * (sems[1] + sems[5])).all()
    assert (means[5] <= means[50] + 4 * (sems[5] + sems[50])).all()
    assert (means[50] <= ll + 4 * sems[50]).all()
    # and the gaps are real, not a tie: on average L_50 beats the ELBO by many standard errors
    assert float((means[50] - means[1]).mean()) > 5 * float((sems[1] + sems[50]).mean())


def test_beta_vae_reports_the_beta_1_bound():
    model = build_model(x_dim=12, z_dim=3, hidden=[8])
    x = torch.rand(5, 12, generator=torch.Generator().manual_seed(0))
    a = ELBO()(model, x, torch.Generator().manual_seed(1))
    b = BetaVAE(beta=4.0)(model, x, torch.Generator().manual_seed(1))
    assert torch.equal(a.bound, b.bound)
    assert float(b.loss.detach()) == pytest.approx(
        float(-(a.log_px_z - 4.0 * a.kl).mean()), rel=1e-6
    )


def test_warmup_weight_enters_the_loss_only():
    model = build_model(x_dim=12, z_dim=3, hidden=[8])
    x = torch.rand(5, 12, generator=torch.Generator().manual_seed(0))
    for obj in (ELBO(), ELBO(analytic_kl=False), IWAE(3)):
        a = obj(model, x, torch.Generator().manual_seed(1))
        b = obj(model, x, torch.Generator().manual_seed(1), kl_weight=0.0)
        assert torch.equal(a.bound, b.bound)
        assert float(b.loss.detach()) < float(
            a.loss.detach()
        )  # dropping the KL penalty makes the loss smaller


def _grads(model, obj, x, seed):
    model.zero_grad()
    obj(model, x, torch.Generator().manual_seed(seed)).loss.backward()
    enc = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    dec = torch.cat([p.grad.flatten() for p in model.decoder.parameters()])
    return enc, dec


def test_dreg_decoder_gradient_is_the_iwae_gradient():
    model = build_model(x_dim=10, z_dim=2, hidden=[6], seed=3).double()
    x = (torch.rand(4, 10, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    _, dec_iwae = _grads(model, IWAE(5), x, 1)
    _, dec_dreg = _grads(model, DReG(5), x, 1)
    torch.testing.assert_close(dec_dreg, dec_iwae, rtol=1e-12, atol=1e-12)


def test_dreg_encoder_gradient_is_unbiased_for_the_iwae_gradient():
    # Tucker et al. (2018): E[DReG] = E[IWAE gradient]; DReG has lower variance. The loss is a
    # mean over rows, so the gradient on x repeated 50 times is the mean of 50 independent
    # gradients; 40 such groups give a mean and its standard error.
    model = build_model(x_dim=10, z_dim=2, hidden=[6], seed=3).double()
    x = (torch.rand(3, 10, generator=torch.Generator().manual_seed(0)) > 0.5).double().repeat(50, 1)
    iw = torch.stack([_grads(model, IWAE(5), x, s)[0] for s in range(40)])
    dr = torch.stack([_grads(model, DReG(5), x, 10_000 + s)[0] for s in range(40)])
    sem = (iw.var(0) / 40 + dr.var(0) / 40).sqrt()
    # 5 standard errors on each of the encoder's 94 coordinates: a false alarm has probability
    # below 1e-4 for the whole test.
    assert ((iw.mean(0) - dr.mean(0)).abs() <= 5 * sem + 1e-9).all()
    assert float(dr.var(0).sum()) < float(iw.var(0).sum())


def test_dreg_refuses_models_without_stopped_density():
    model = build_model(x_dim=10, z_dim=2, hidden=[6], flow="planar")
    with pytest.raises(ValueError, match="use IWAE"):
        DReG(3)(model, torch.rand(2, 10))


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must"):
        IWAE(0)
    with pytest.raises(ValueError, match="n_samples"):
        ELBO(n_samples=0)
    model = build_model(x_dim=10, z_dim=2, hidden=[6], flow="planar")
    with pytest.raises(ValueError, match="free bits"):
        ELBO(free_bits=0.5)(model, torch.rand(2, 10))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda m, X: marginal_log_likelihood(m, X, k=2.5), "k"),
        (lambda m, X: marginal_log_likelihood(m, X, k="5"), "k"),
        (lambda m, X: marginal_log_likelihood(m, X, k=5, batch_size=0), "batch_size"),
        (lambda m, X: marginal_log_likelihood(m, X, k=5, max_rows=-1), "max_rows"),
        (lambda m, X: IWAE(2.5)(m, X), "k"),
        (lambda m, X: ELBO(n_samples="3")(m, X), "n_samples"),
        (lambda m, X: ELBO(free_bits_groups=0), "free_bits_groups"),
    ],
)
def test_a_bad_sample_count_or_batch_is_named(call, name):
    model = linear_gaussian_vae()[0]
    X = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ParameterError, match=rf"^{name} must be an integer"):
        call(model, X)


@pytest.mark.parametrize("objective", [IWAE(10**9), ELBO(n_samples=10**10)])
def test_a_pass_of_too_many_samples_is_refused_before_it_runs(objective):
    model = linear_gaussian_vae()[0]
    X = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ResourceLimitError, match="samples for each of 7 rows"):
        objective(model, X)


def test_the_progress_bar_counts_samples_of_z_per_decoder_call(monkeypatch):
    # a bar counted in rows moved only when a row's k samples were done: with k = 10**8 it
    # showed 0 rows and no rate for hours; counted in samples it moves every decoder call
    import tqdm.auto

    bars = []

    class Recorder:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.updates = total, 0, 0
            bars.append(self)

        def update(self, n):
            self.n += n
            self.updates += 1

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    model, *_ = linear_gaussian_vae()
    X = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    marginal_log_likelihood(model, X, k=300, batch_size=2, max_rows=200, progress=True)
    (bar,) = bars
    assert bar.total == bar.n == 5 * 300
    assert bar.updates == 3 * 3  # 3 batches of rows, each in 3 chunks of at most 100 samples


@pytest.mark.parametrize("name", ["iwae", "dreg"])
@pytest.mark.parametrize("setting", [{"beta": 4.0}, {"free_bits": 0.5}])
def test_importance_weighted_objectives_refuse_a_beta_or_free_bits(name, setting):
    # make_objective("iwae", beta=4, free_bits=0.5) returned IWAE(k) and dropped both:
    # training ran as a plain IWAE and reported nothing
    from latentfit.vae import make_objective

    key = next(iter(setting))
    with pytest.raises(ParameterError, match=rf"{name} objective .*{key}="):
        make_objective(name, k=3, **setting)
    assert isinstance(make_objective(name, k=3), IWAE)  # the defaults are the bound itself
