"""Conjugate models: sequential == batch, evidence == chain rule of predictives, posteriors and
predictives against scipy and brute force."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from latentfit.estimate import (
    BetaBernoulli,
    BetaBinomial,
    DirichletCategorical,
    DirichletMultinomial,
    GammaPoisson,
    NormalInverseGamma,
    NormalInverseWishart,
    NormalKnownVariance,
)

RTOL = 1e-10  # closed forms in float64


def _cases():
    rng = np.random.default_rng(0)
    return {
        "beta_bernoulli": (BetaBernoulli(2.0, 3.0), rng.binomial(1, 0.3, 25).astype(float)),
        "beta_binomial": (BetaBinomial(1.5, 2.5, total_count=7), rng.binomial(7, 0.4, 20)),
        "dirichlet_categorical": (DirichletCategorical([1.0, 2.0, 0.5]), rng.integers(0, 3, 30)),
        "dirichlet_multinomial": (
            DirichletMultinomial([1.0, 2.0, 0.5], total_count=5),
            rng.multinomial(5, [0.2, 0.5, 0.3], 15),
        ),
        "gamma_poisson": (GammaPoisson(2.0, 0.5), rng.poisson(3.0, 25)),
        "normal_known_variance": (
            NormalKnownVariance(1.0, 2.0, noise_scale=1.5),
            rng.normal(0.5, 1.5, 25),
        ),
        "normal_inverse_gamma": (NormalInverseGamma(0.5, 2.0, 3.0, 2.0), rng.normal(1, 2, 25)),
        "normal_inverse_wishart": (
            NormalInverseWishart([0.0, 1.0], 2.0, 5.0, [[2.0, 0.3], [0.3, 1.0]]),
            rng.multivariate_normal([1.0, 0.0], [[1.0, 0.5], [0.5, 2.0]], 20),
        ),
    }


CASES = sorted(_cases())


def _hyper(model):
    return {k: v.clone() for k, v in model.hyperparameters().items()}


@pytest.mark.parametrize("name", CASES)
def test_sequential_update_equals_batch_update(name):
    model, x = _cases()[name]
    batch = model.update(x)
    seq = model
    for i in range(len(x)):
        seq = seq.update(x[i : i + 1])
    assert seq.n_obs_ == batch.n_obs_ == len(x)
    for k, v in _hyper(batch).items():
        torch.testing.assert_close(_hyper(seq)[k], v, rtol=RTOL, atol=1e-12)
    # two halves also compose, and the prior is left untouched
    half = model.update(x[: len(x) // 2]).update(x[len(x) // 2 :])
    for k, v in _hyper(batch).items():
        torch.testing.assert_close(_hyper(half)[k], v, rtol=RTOL, atol=1e-12)
    assert model.n_obs_ == 0


@pytest.mark.parametrize("name", CASES)
def test_log_evidence_is_the_chain_rule_of_posterior_predictives(name):
    # log p(x₁..xₙ) = Σᵢ log p(xᵢ | x₁..xᵢ₋₁): two independent formulas must agree
    model, x = _cases()[name]
    total, current = 0.0, model
    for i in range(len(x)):
        xi = torch.as_tensor(x[i], dtype=torch.float64)
        total += float(current.posterior_predictive().log_prob(xi))
        current = current.update(x[i : i + 1])
    assert float(model.log_evidence(x)) == pytest.approx(total, rel=RTOL)


def test_beta_posterior_interval_and_evidence_by_quadrature():
    model, x = _cases()["beta_bernoulli"]
    post = model.update(x)
    k, n = x.sum(), len(x)
    assert float(post.alpha) == 2 + k and float(post.beta) == 3 + n - k
    np.testing.assert_allclose(
        post.credible_interval(0.9), stats.beta(2 + k, 3 + n - k).ppf([0.05, 0.95]), rtol=RTOL
    )
    integrand = lambda p: p**k * (1 - p) ** (n - k) * stats.beta(2, 3).pdf(p)
    ev, _ = integrate.quad(integrand, 0, 1, epsabs=0, epsrel=1e-13)
    assert float(model.log_evidence(x)) == pytest.approx(np.log(ev), rel=1e-9)


def test_beta_binomial_predictive_against_scipy():
    model, x = _cases()["beta_binomial"]
    post = model.update(x)
    pred = post.posterior_predictive()
    k = torch.arange(8, dtype=torch.float64)
    ref = stats.betabinom(7, float(post.alpha), float(post.beta)).logpmf(k.numpy())
    np.testing.assert_allclose(pred.log_prob(k), ref, rtol=RTOL)
    assert float(pred.log_prob(k).exp().sum()) == pytest.approx(1.0, rel=1e-12)


def test_dirichlet_posterior_and_predictives():
    model, x = _cases()["dirichlet_categorical"]
    post = model.update(x)
    np.testing.assert_allclose(
        post.alpha, np.array([1.0, 2.0, 0.5]) + np.bincount(x, minlength=3), rtol=RTOL
    )
    a = post.alpha.numpy()
    ci = post.credible_interval()
    for j in range(3):
        ref = stats.beta(a[j], a.sum() - a[j]).ppf([0.025, 0.975])
        np.testing.assert_allclose(ci[j], ref, rtol=RTOL)
    multi, counts = _cases()["dirichlet_multinomial"]
    pred = multi.update(counts).posterior_predictive()
    row = torch.tensor([2.0, 1.0, 2.0], dtype=torch.float64)
    ref = stats.dirichlet_multinomial(multi.update(counts).alpha.numpy(), 5).logpmf(row.numpy())
    assert float(pred.log_prob(row)) == pytest.approx(float(ref), rel=RTOL)


def test_gamma_poisson_predictive_against_scipy():
    model, x = _cases()["gamma_poisson"]
    post = model.update(x)
    a, b = float(post.alpha), float(post.beta)
    assert a == pytest.approx(2.0 + x.sum()) and b == pytest.approx(0.5 + len(x))
    k = torch.arange(15, dtype=torch.float64)
    ref = stats.nbinom(a, b / (b + 1)).logpmf(k.numpy())  # scipy's p is the failure weight
    np.testing.assert_allclose(post.posterior_predictive().log_prob(k), ref, rtol=RTOL)
    np.testing.assert_allclose(
        post.credible_interval(), stats.gamma(a, scale=1 / b).ppf([0.025, 0.975]), rtol=RTOL
    )


def test_normal_known_variance_against_brute_force_mvn():
    model, x = _cases()["normal_known_variance"]
    n = len(x)
    cov = 1.5**2 * np.eye(n) + 2.0**2 * np.ones((n, n))
    ref = stats.multivariate_normal(np.full(n, 1.0), cov).logpdf(x)
    assert float(model.log_evidence(x)) == pytest.approx(ref, rel=RTOL)
    post = model.update(x)
    prec = 1 / 4 + n / 1.5**2
    assert float(post.scale) == pytest.approx(prec**-0.5, rel=RTOL)
    assert float(post.loc) == pytest.approx((1 / 4 + x.sum() / 1.5**2) / prec, rel=RTOL)
    np.testing.assert_allclose(
        post.credible_interval(),
        stats.norm(float(post.loc), float(post.scale)).ppf([0.025, 0.975]),
        rtol=RTOL,
    )


def test_normal_inverse_gamma_marginals():
    model, x = _cases()["normal_inverse_gamma"]
    post = model.update(x)
    ci = post.credible_interval(0.9)
    a, b, k, m = (float(post.alpha), float(post.beta), float(post.kappa), float(post.loc))
    np.testing.assert_allclose(
        ci["variance"], stats.invgamma(a, scale=b).ppf([0.05, 0.95]), rtol=RTOL
    )
    np.testing.assert_allclose(
        ci["loc"], stats.t(2 * a, m, np.sqrt(b / (a * k))).ppf([0.05, 0.95]), rtol=RTOL
    )
    # the marginal of μ is the joint integrated over σ²: check one point by quadrature
    joint = lambda v: float(post.posterior_log_prob(0.7, v).exp())
    marg, _ = integrate.quad(joint, 0, np.inf, epsrel=1e-12)
    assert float(post.posterior_loc.log_prob(torch.tensor(0.7, dtype=torch.float64))) == (
        pytest.approx(np.log(marg), rel=1e-8)
    )


def test_normal_inverse_wishart_reduces_to_normal_inverse_gamma_in_one_dimension():
    # IW(ν, Ψ) in d = 1 is IG(ν/2, Ψ/2)
    x = np.random.default_rng(1).normal(1.0, 2.0, 30)
    niw = NormalInverseWishart([0.5], 2.0, 6.0, [[4.0]])
    nig = NormalInverseGamma(0.5, 2.0, 3.0, 2.0)
    assert float(niw.log_evidence(x[:, None])) == pytest.approx(
        float(nig.log_evidence(x)), rel=RTOL
    )
    pw, pg = niw.update(x[:, None]), nig.update(x)
    assert float(pw.posterior_predictive().log_prob(torch.tensor([0.3], dtype=torch.float64))) == (
        pytest.approx(
            float(pg.posterior_predictive().log_prob(torch.tensor(0.3, dtype=torch.float64))),
            rel=RTOL,
        )
    )
    torch.testing.assert_close(
        pw.credible_interval()["variance"][0], pg.credible_interval()["variance"], rtol=RTOL, atol=0
    )
    torch.testing.assert_close(
        pw.credible_interval()["loc"][0], pg.credible_interval()["loc"], rtol=RTOL, atol=0
    )


def test_normal_inverse_wishart_predictive_against_scipy():
    model, x = _cases()["normal_inverse_wishart"]
    post = model.update(x)
    d = 2
    dof = float(post.df) - d + 1
    shape = post.scale.numpy() * (float(post.kappa) + 1) / (float(post.kappa) * dof)
    pt = np.array([0.4, -0.2])
    ref = stats.multivariate_t(post.loc.numpy(), shape, df=dof).logpdf(pt)
    got = post.posterior_predictive().log_prob(torch.tensor(pt, dtype=torch.float64))
    assert float(got) == pytest.approx(ref, rel=RTOL)


def test_posteriors_narrow_as_data_arrive():
    rng = np.random.default_rng(2)
    x = rng.binomial(1, 0.4, 400).astype(float)
    widths = [
        float(np.diff(BetaBernoulli().update(x[:n]).credible_interval())[0]) for n in (10, 100, 400)
    ]
    assert widths[0] > widths[1] > widths[2]
    # width ≈ 2·1.96·√(p(1−p)/n) for large n: within 10% at n = 400 (p̂ from the data)
    p = x.mean()
    assert widths[2] == pytest.approx(2 * 1.959964 * np.sqrt(p * (1 - p) / 400), rel=0.1)


@pytest.mark.parametrize(
    ("make", "data", "match"),
    [
        (lambda: BetaBernoulli(), [0, 1, 2], r"data\[2\] = 2"),
        (lambda: GammaPoisson(), [1, -1], r"data\[1\] = -1"),
        (lambda: BetaBinomial(total_count=3), [1, 4], r"data\[1\] = 4"),
        (lambda: DirichletCategorical([1, 1]), [0, 1, 2], r"data\[2\] = 2"),
        (lambda: BetaBernoulli(alpha=-1.0), None, "alpha must be positive"),
        (lambda: NormalInverseWishart([0.0, 0.0], df=0.5), None, "df must exceed"),
        (lambda: NormalInverseWishart([0.0], scale=[[-1.0]]), None, "positive definite"),
        (lambda: NormalInverseWishart([0.0, 0.0]), [[1.0, 2.0, 3.0]], "2 columns"),
    ],
)
def test_bad_input(make, data, match):
    with pytest.raises(ValueError, match=match):
        model = make()
        model.update(data)


@pytest.mark.parametrize(
    ("make", "data", "match"),
    [
        # before: accepted and truncated to 2, or a torch constraint's ValueError
        (lambda: BetaBinomial(total_count=2.5), None, "total_count must be a whole number"),
        (lambda: DirichletMultinomial([1, 1], total_count=-1), None, "total_count must be"),
        (lambda: BetaBinomial(total_count=3).posterior_predictive(-1), None, "total_count"),
        # before: torch's ValueError, a LinAlgError, or a posterior at inf
        (lambda: NormalKnownVariance(float("nan")), [1.0], "loc must be finite"),
        (lambda: NormalInverseGamma(float("inf")), [1.0], "loc must be finite"),
        (lambda: NormalInverseWishart([np.nan, 0.0]), [[1.0, 2.0]], "loc must be finite"),
        (lambda: NormalInverseWishart([0.0, 0.0], df=np.inf), None, "df must exceed"),
        # before: read as the identity (Cholesky reads the lower triangle only)
        (lambda: NormalInverseWishart([0.0, 0.0], scale=[[1, 0.5], [0, 1]]), None, "symmetric"),
        # before: posteriors with scale inf / loc inf, silently
        (lambda: NormalInverseGamma(0, 1, 2, 2), [1e200, -1e200], "beta overflowed"),
        (lambda: NormalKnownVariance(), [1e308, 1e308], "loc overflowed"),
        (lambda: NormalInverseWishart([0, 0]), [[1e200, 0], [-1e200, 1]], "scale overflowed"),
        # before: LinAlgError from the posterior predictive (singular by rounding in float32)
        (
            lambda: NormalInverseWishart(np.zeros(2), 1.0, 4.0, np.eye(2), dtype="float32"),
            np.full((3, 2), 1e4),
            "not positive definite in torch.float32",
        ),
    ],
)
def test_bad_hyperparameters_and_overflow_are_named(make, data, match):
    with pytest.raises(ValueError, match=match):
        model = make()
        model.update(data).posterior_predictive()


def test_whole_float_total_count_is_accepted():
    assert BetaBinomial(total_count=10.0).total_count == 10


def test_models_stay_on_their_device(device):
    rng = np.random.default_rng(5)
    gp = GammaPoisson(2.0, 1.0, device=device).update(rng.poisson(2.0, 20))
    assert gp.alpha.device.type == device and gp.credible_interval().device.type == device
    assert gp.posterior_predictive().log_prob(torch.tensor(1.0, device=device)).device.type == (
        device
    )
    niw = NormalInverseWishart([0.0, 0.0], device=device).update(rng.normal(size=(10, 2)))
    assert niw.scale.device.type == device
    assert niw.credible_interval()["variance"].device.type == device
    cpu = NormalInverseWishart([0.0, 0.0]).update(rng.normal(size=(10, 2)))
    assert float(cpu.log_evidence(rng.normal(size=(3, 2)))) < 0
