"""The importance-weighted bound and the ELBO against exact log p(x) on Normal–Normal models."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Independent, MultivariateNormal, Normal

from latentfit.errors import ParameterError
from latentfit.vi.objectives import ELBO, ImportanceWeightedBound
from tests.gradient_copies import COPIES

F64 = torch.float64
X = torch.tensor([0.3, 1.9, 1.2, 2.4, 0.8], dtype=F64)
SIG, S0 = 1.0, 2.0
PRIOR = Independent(Normal(torch.zeros(1, dtype=F64), torch.full((1,), S0, dtype=F64)), 1)
Q = Independent(Normal(torch.tensor([0.0], dtype=F64), torch.tensor([1.0], dtype=F64)), 1)


def _loglik(z, batch):
    return Normal(z, SIG).log_prob(X)  # (s, n)


def _log_px() -> float:
    """x ~ N(0, σ² I + s0² 11ᵀ): the exact marginal likelihood."""
    n = len(X)
    cov = SIG**2 * torch.eye(n, dtype=F64) + S0**2 * torch.ones(n, n, dtype=F64)
    return float(MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(X))


def _mean_bound(K, repeats=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    iw = ImportanceWeightedBound(_loglik, Q, PRIOR, num_samples=K, generator=gen)
    vals = torch.stack([iw() for _ in range(repeats)])
    return float(vals.mean()), float(vals.std() / math.sqrt(repeats))


def test_importance_weighted_bound_grows_with_k_and_stays_below_log_px():
    log_px = _log_px()
    means = [_mean_bound(K, seed=K) for K in (1, 4, 16, 64)]
    for (m_a, s_a), (m_b, s_b) in itertools.pairwise(means):
        # E[bound_K] is non-decreasing in K (Burda et al. 2016, Thm 1); estimates may only
        # fall by Monte-Carlo noise: 4 standard errors of the difference.
        assert m_b > m_a - 4 * math.hypot(s_a, s_b)
    for m, s in means:
        assert m < log_px + 4 * s
    # q is a poor proposal (gap ≈ 2.5 nats at K = 1); 64 samples recover most of it.
    assert means[0][0] < log_px - 1.0
    assert log_px - means[-1][0] < 0.35 * (log_px - means[0][0])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_importance_weighted_bound_with_one_sample_is_the_elbo(seed):
    iw = ImportanceWeightedBound(
        _loglik, Q, PRIOR, num_samples=1, generator=torch.Generator().manual_seed(seed)
    )
    elbo = ELBO(
        _loglik, Q, PRIOR, num_samples=1, kl="mc", generator=torch.Generator().manual_seed(seed)
    )
    assert torch.allclose(iw(), elbo(), rtol=1e-12)


def test_elbo_estimate_is_unbiased_and_analytic_kl_matches_monte_carlo():
    """E[ELBO_mc] = ELBO_closed-form = log p(x) − KL(q ‖ p(z|x))."""
    n = len(X)
    m, s = 0.0, 1.0
    ell = -0.5 * n * math.log(2 * math.pi * SIG**2) - (float(((X - m) ** 2).sum()) + n * s**2) / (
        2 * SIG**2
    )
    kl = math.log(S0 / s) + (s**2 + m**2) / (2 * S0**2) - 0.5
    exact = ell - kl
    analytic = ELBO(
        _loglik, Q, PRIOR, num_samples=20000, generator=torch.Generator().manual_seed(0)
    )
    mc = ELBO(
        _loglik, Q, PRIOR, num_samples=20000, kl="mc", generator=torch.Generator().manual_seed(0)
    )
    # 20000 draws: standard error ≈ 0.02 nats for these spreads.
    assert abs(float(analytic()) - exact) < 0.1
    assert abs(float(mc()) - exact) < 0.1
    assert exact < _log_px()


def test_local_bounds_scale_minibatches_to_the_full_data():
    """Per-point latents z_i ~ N(0, 1), x_i ~ N(z_i, 1): log p(x_i) = log N(x_i; 0, 2).
    The mini-batch bound times N/b averages to the full-data bound."""
    x = torch.linspace(-2, 2, 8, dtype=F64)
    exact = float(Normal(0.0, math.sqrt(2.0)).log_prob(x).sum())

    def guide(batch):
        return Normal(0.3 * batch, torch.ones_like(batch))

    def loglik(_z, zl, batch):
        return Normal(zl, 1.0).log_prob(batch)  # (K, b)

    prior = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    gen = torch.Generator().manual_seed(0)
    iw_full = ImportanceWeightedBound(
        loglik, local_guide=guide, local_prior=prior, num_samples=32, generator=gen
    )
    iw_half = ImportanceWeightedBound(
        loglik, local_guide=guide, local_prior=prior, n_data=8, num_samples=32, generator=gen
    )
    full = torch.stack([iw_full(x) for _ in range(200)])
    halves = torch.stack([iw_half(x[:4]) + iw_half(x[4:]) for _ in range(200)]) / 2
    assert float(full.mean()) < exact
    se = math.hypot(float(full.std()), float(halves.std())) / math.sqrt(200)
    assert abs(float(full.mean() - halves.mean())) < 4 * se
    elbo = ELBO(
        loglik,
        None,
        None,
        local_guide=guide,
        local_prior=prior,
        n_data=8,
        num_samples=2000,
        generator=gen,
    )
    # ELBO ≤ IWAE(32) ≤ log p(x), all on the same data.
    assert float(elbo(x)) < float(full.mean())


def test_objective_arguments_are_checked():
    with pytest.raises(ValueError, match="either a global guide or a local_guide"):
        ImportanceWeightedBound(_loglik)
    with pytest.raises(ValueError, match="no mini-batch form"):
        ImportanceWeightedBound(_loglik, Q, PRIOR, n_data=100)
    with pytest.raises(ValueError, match="kl must be"):
        ELBO(_loglik, Q, PRIOR, kl="closed")
    with pytest.raises(ValueError, match="both local_guide and local_prior"):
        ELBO(_loglik, Q, PRIOR, local_guide=lambda b: Q)
    with pytest.raises(ValueError, match="no closed-form KL"):
        ELBO(
            _loglik,
            Q,
            Independent(torch.distributions.StudentT(3.0 * torch.ones(1)), 1),
            kl="analytic",
        )()


def test_objectives_run_on_the_device_of_the_guide(device):
    from latentfit.vi.guides import MeanFieldGaussian

    x = X.to(device)
    guide = MeanFieldGaussian(1, dtype=F64, device=device)
    prior = Independent(
        Normal(
            torch.zeros(1, dtype=F64, device=device), torch.full((1,), S0, dtype=F64, device=device)
        ),
        1,
    )
    gen = torch.Generator(device=device).manual_seed(0)

    def loglik(z, batch):
        return Normal(z, SIG).log_prob(x)

    value = ELBO(loglik, guide, prior, num_samples=4, generator=gen)()
    value.backward()
    assert value.device.type == torch.device(device).type
    assert bool(torch.isfinite(guide.loc.grad).all())
    iw = ImportanceWeightedBound(loglik, guide(), prior, num_samples=4, generator=gen)()
    assert iw.device.type == torch.device(device).type and bool(torch.isfinite(iw))


def test_a_float64_guide_gets_its_prior_in_float64():
    # Normal(0.0, 0.1) holds float32 tensors (torch stores a Python float so): evaluated in
    # them, the KL and log p(z) of a float64 model were only float32-accurate (~1e-8 off).
    f64 = torch.float64
    q = torch.distributions.Normal(torch.tensor(0.3, dtype=f64), torch.tensor(0.7, dtype=f64))
    prior = torch.distributions.Normal(0.0, 0.1)
    exact = torch.distributions.Normal(torch.tensor(0.0, dtype=f64), torch.tensor(0.1, dtype=f64))
    assert prior.scale.dtype == torch.float32

    def zero_ll(z, batch):
        return torch.zeros_like(z)

    elbo = ELBO(zero_ll, q, prior, kl="analytic")
    want = -torch.distributions.kl_divergence(q, exact)
    torch.testing.assert_close(elbo(), want, rtol=1e-13, atol=0)

    # the Monte-Carlo path (log p(z) - log q(z)) and the importance-weighted bound equal the
    # same objective with a float64 prior written by hand, from the same draws
    def gen():
        return torch.Generator().manual_seed(1)

    for make in (
        lambda p: ELBO(zero_ll, q, p, kl="mc", num_samples=4, generator=gen()),
        lambda p: ImportanceWeightedBound(zero_ll, q, p, num_samples=4, generator=gen()),
    ):
        got, ref = make(prior)(), make(exact)()
        assert got.dtype == f64
        torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)


@pytest.mark.parametrize("bad", ["a", None, 1.5, 0, -1, True])
def test_num_samples_and_n_data_must_be_positive_integers(bad):
    # "a" or 1.5 used to reach the caller as torch's TypeError from torch.Size, 0 as a math
    # domain error, -1 as torch's "negative dimension"

    q = Normal(torch.tensor(0.0), torch.tensor(1.0))

    def ll(z, batch):
        return torch.zeros_like(z)

    for make in (ELBO, ImportanceWeightedBound):
        with pytest.raises(ParameterError, match="num_samples"):
            make(ll, q, q, num_samples=bad)
    if bad is not None:
        with pytest.raises(ParameterError, match="n_data"):
            ELBO(ll, q, q, n_data=bad)


def test_the_two_elbos_have_distinct_names():
    # vi's Monte-Carlo ELBO of a model and guide, and the VAE's amortised bound, were both
    # called ELBO; vi's keeps the old name as an alias only
    import latentfit.vae
    import latentfit.vi
    from latentfit.vi.objectives import StochasticELBO

    assert latentfit.vi.StochasticELBO is StochasticELBO is ELBO
    assert StochasticELBO.__name__ == "StochasticELBO"
    assert latentfit.vae.ELBO is not StochasticELBO and latentfit.vae.ELBO.__name__ == "ELBO"


@pytest.mark.parametrize("kl", ["auto", "mc"])
def test_per_coordinate_guides_and_priors_give_the_bound_of_their_independent_form(kl):
    # Normal(0., 1.) as the prior of a vector latent, or a Normal(loc, scale) guide over a
    # vector, hold one log-density per coordinate. The local ones broadcast against the
    # (s, b) log-likelihood into torch's "size of tensor a (4) must match ... b (3)", and a
    # per-coordinate global guide made the ELBO a (d,) vector (auto) or the same shape error
    # (mc): they must give the bound of the Independent(..., 1) form, from the same draws.
    from latentfit.vi.estimators import ScoreFunction

    b, d = 4, 3
    data = torch.linspace(-1, 2, b * d, dtype=F64).reshape(b, d)
    loc = torch.linspace(-0.5, 0.5, b * d, dtype=F64).reshape(b, d)
    scale = torch.full((b, d), 0.8, dtype=F64)
    one = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))  # per coordinate

    def local_ll(_z, zl, batch):
        return Normal(zl, 1.0).log_prob(batch).sum(-1)  # (s, b)

    def global_ll(z, batch):
        return Normal(z.unsqueeze(-2), 1.0).log_prob(batch).sum(-1)  # (s, b)

    def bounds(independent_guide, prior, kl):
        def gen():
            return torch.Generator().manual_seed(3)

        def q(lo, sc):
            return Independent(Normal(lo, sc), 1) if independent_guide else Normal(lo, sc)

        local = dict(local_guide=lambda _b: q(loc, scale), num_samples=5, generator=gen())
        return {
            "elbo": ELBO(local_ll, None, local_prior=prior(b), kl=kl, **local)(data),
            "iw": ImportanceWeightedBound(local_ll, local_prior=prior(b), **local)(data),
            "global": ELBO(
                global_ll, q(loc[0], scale[0]), prior(None), num_samples=5, kl=kl,
                generator=gen(),
            )(data),
            "score": ELBO(
                global_ll, q(loc[0], scale[0]), prior(None), num_samples=5, kl=kl,
                estimator=ScoreFunction(), generator=gen(),
            )(data),
            "global_iw": ImportanceWeightedBound(
                global_ll, q(loc[0], scale[0]), prior(None), num_samples=5, generator=gen()
            )(data),
        }  # fmt: skip

    def independent(n):
        shape = (d,) if n is None else (n, d)
        return Independent(Normal(torch.zeros(shape, dtype=F64), torch.ones(shape, dtype=F64)), 1)

    ref = bounds(True, independent, kl)
    # a Normal guide over the vector: closed-form KL per coordinate, as the Independent's
    got = bounds(False, lambda _n: one, kl)
    # an Independent guide with the per-coordinate prior: torch has no closed form for the
    # pair, so the bound falls back to Monte Carlo even under kl="auto"
    mixed, mc_ref = bounds(True, lambda _n: one, kl), bounds(True, independent, "mc")
    for name in ref:
        assert got[name].shape == mixed[name].shape == ()
        torch.testing.assert_close(got[name], ref[name], rtol=1e-12, atol=0, msg=name)
        torch.testing.assert_close(mixed[name], mc_ref[name], rtol=1e-12, atol=0, msg=name)


@pytest.mark.parametrize("kl", ["auto", "mc"])
def test_several_categorical_latents_give_one_bound(kl):
    # d Categoricals of k classes (batch shape (d,)), the usual Gumbel-softmax latent: the
    # closed-form KL is one per latent and the one-hot draws (s, d, k) have one log q per
    # latent. The ELBO came back as a (d,) vector (kl="auto"), refused the prior's (s, d)
    # log-density (kl="mc"), or, with ScoreFunction, raised torch's shape error.
    from torch.distributions import Categorical, kl_divergence

    from latentfit.vi.estimators import GumbelSoftmax, ScoreFunction

    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], dtype=F64)
    prior = Categorical(logits=torch.zeros(2, 3, dtype=F64))
    kl_total = float(kl_divergence(Categorical(logits=logits), prior).sum())

    def zero_ll(z, batch):
        return torch.zeros(z.shape[0], dtype=F64)

    for est in (GumbelSoftmax(0.5, hard=True), GumbelSoftmax(0.5), ScoreFunction()):
        if kl == "mc" and est.needs_analytic_kl:
            continue
        value = ELBO(
            zero_ll, Categorical(logits=logits), prior, num_samples=20_000, kl=kl,
            estimator=est, generator=torch.Generator().manual_seed(0),
        )()  # fmt: skip
        assert value.shape == ()
        if kl == "auto":
            assert float(value) == pytest.approx(-kl_total, rel=1e-12)
        else:  # mean of log p(z) - log q(z) over 20,000 exact draws: SE ≈ 0.005 nats
            assert float(value) == pytest.approx(-kl_total, abs=0.03)


def test_a_prior_of_another_shape_than_the_guide_is_named():
    from latentfit.errors import ParameterError

    q = Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    prior = Normal(torch.zeros(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64))

    def ll(z, batch):
        return torch.zeros(z.shape[0], dtype=F64)

    with pytest.raises(ParameterError, match="another shape"):
        ELBO(ll, q, prior)()


_COPIES = COPIES  # of the latent draws


def _guide():
    from latentfit.vi import MeanFieldGaussian

    return MeanFieldGaussian(1, dtype=F64)


@pytest.mark.parametrize("how", sorted(_COPIES))
@pytest.mark.parametrize("bound", ["elbo", "iwae"])
def test_a_model_that_copies_the_latent_is_refused(how, bound):
    """A log-likelihood (or callable prior) computing from a copy of z was left out of the
    guide's gradient: svi fitted q to the prior alone (on 50 points of N(z, 1) under a
    N(0, 10) prior: q loc 0.134, scale 9.69, where the exact posterior is 1.985, 0.141) and
    said nothing. Its value follows z while its gradient does not: refused at the first
    call, naming log_likelihood (the prior) and z."""
    import warnings

    cut = _COPIES[how]
    make = ELBO if bound == "elbo" else ImportanceWeightedBound

    def copied(z, batch):
        return Normal(cut(z), SIG).log_prob(X)  # (s, n)

    def copied_prior(z):
        return PRIOR.log_prob(cut(z))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's copy-construct advice
        with pytest.raises(ParameterError, match=r"log_likelihood depends on 'z' outside"):
            make(copied, _guide(), PRIOR)()
        with pytest.raises(ParameterError, match=r"the prior depends on 'z' outside"):
            make(_loglik, _guide(), copied_prior)()


@pytest.mark.parametrize("how", sorted(_COPIES))
def test_a_model_that_copies_a_local_latent_is_refused(how):
    import warnings

    from latentfit.vi import LocalMeanFieldGaussian

    cut = _COPIES[how]

    def copied(z, zl, batch):
        return Normal(cut(zl)[..., 0], SIG).log_prob(X)  # (s, n)

    local = Independent(Normal(torch.zeros(5, 1, dtype=F64), torch.ones(5, 1, dtype=F64)), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for make in (ELBO, ImportanceWeightedBound):
            bound = make(
                copied, None, local_guide=LocalMeanFieldGaussian(5, 1, dtype=F64), local_prior=local
            )
            with pytest.raises(ParameterError, match=r"log_likelihood depends on 'z_local'"):
                bound(torch.arange(5))


def test_a_model_in_torch_and_the_score_function_estimator_are_not_refused():
    """A model in torch gives the bound; so does a copied one under the score-function
    estimator, whose gradient does not pass through z (its draws carry none)."""
    from latentfit.vi import ScoreFunction

    torch.manual_seed(0)
    assert math.isfinite(float(ELBO(_loglik, _guide(), PRIOR, num_samples=4)().detach()))

    def copied(z, batch):
        return Normal(z.detach(), SIG).log_prob(X)

    bound = ELBO(copied, _guide(), PRIOR, num_samples=4, estimator=ScoreFunction())
    assert math.isfinite(float(bound().detach()))
