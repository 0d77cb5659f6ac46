"""SVGD against the exact MVN moments and against NUTS on the same target."""

from __future__ import annotations

import torch
import torch.distributions as D

from latentfit.mcmc import sample
from latentfit.mcmc.result import import_arviz
from latentfit.mcmc.svgd import rbf_median_kernel, svgd, svgd_direction

F64 = torch.float64
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=F64)
MEAN = torch.tensor([1.0, -2.0], dtype=F64)


def _mvn(x):
    return D.MultivariateNormal(MEAN, COV).log_prob(x)


def test_direction_matches_autograd_of_the_kernel():
    """The closed-form repulsion equals autograd's sum_j grad_{x_j} k(x_j, x_i) at fixed h."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=F64)
    score = torch.randn(7, 3, generator=g, dtype=F64)
    k, h = rbf_median_kernel(x)
    xj = x.clone().requires_grad_(True)
    kk = torch.exp(-torch.cdist(xj, x.detach()).pow(2) / h)  # kk[j, i], h held fixed
    rep = torch.stack(
        [torch.autograd.grad(kk[:, i].sum(), xj, retain_graph=True)[0].sum(0) for i in range(7)]
    )
    want = (k @ score + rep) / 7
    torch.testing.assert_close(svgd_direction(x, score), want, rtol=1e-10, atol=1e-12)


def test_svgd_matches_the_mvn_and_nuts():
    res = svgd(
        _mvn,
        {"x": torch.zeros(2)},
        num_particles=200,
        num_iter=400,
        step_size=0.2,
        generator=0,
        progress_bar=False,
    )
    x = res["x"]  # (s, 2)
    # after 400 AdaGrad steps the particle mean is within 0.1 sd of the exact mean (the
    # particles still drift slowly; a sign or kernel-gradient error would put it off by ~1 sd)
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), COV, atol=0.15, rtol=0.1)
    draws = sample(
        _mvn,
        {"x": torch.zeros(2)},
        num_chains=4,
        num_warmup=200,
        num_draws=300,
        generator=1,
        progress_bar=False,
    )["x"]
    # the NUTS mean carries its own Monte-Carlo error (MCSE ~0.05-0.07 from ~1,000 effective
    # draws): the two agree within SVGD's 0.1 plus 4 MCSE, and NUTS is within 4 MCSE of exact
    az = import_arviz()
    mcse = torch.tensor(
        [float(az.mcse(az.convert_to_dataset({"v": draws[..., j].numpy()}))["v"]) for j in (0, 1)],
        dtype=F64,
    )
    nuts = draws.reshape(-1, 2)
    assert ((nuts.mean(0) - MEAN).abs() < 4 * mcse).all()
    assert ((x.mean(0) - nuts.mean(0)).abs() < 0.1 + 4 * mcse).all()
    torch.testing.assert_close(torch.cov(x.T), torch.cov(nuts.T), atol=0.3, rtol=0.15)


def _std_normal(x):
    return D.Normal(0.0, 1.0).log_prob(x).sum()


def test_a_step_size_that_throws_the_particles_away_is_said():
    # step_size=1e10 returned particles around 6e9 (log-density ~ -1e19) without a word
    import pytest

    from latentfit.errors import DivergedParticlesWarning

    with pytest.warns(DivergedParticlesWarning, match="step_size=1e\\+10") as caught:
        res = svgd(
            _std_normal, {"x": torch.zeros(1)}, num_particles=50, num_iter=50,
            step_size=1e10, generator=0, progress_bar=False,
        )  # fmt: skip
    assert float(res["x"].abs().median()) > 1e6  # the particles did diverge
    assert "smaller step_size" in str(caught[0].message)


def test_ordinary_runs_at_the_default_step_stay_quiet():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for start, scale in ((0.0, 1.0), (50.0, 1.0), (0.0, 0.01)):  # from far: lp rises
            svgd(
                _std_normal, {"x": torch.full((3,), start)}, num_particles=50, num_iter=200,
                init_scale=scale, generator=0, progress_bar=False,
            )  # fmt: skip
        svgd(_mvn, {"x": torch.zeros(2)}, num_particles=50, num_iter=200, generator=0,
             progress_bar=False)  # fmt: skip
    assert [str(w.message) for w in caught] == []


def test_particles_made_non_finite_by_the_last_step_are_refused():
    # the loop checked the particles before each step, never after the last: a last step to
    # inf was returned
    import pytest

    from latentfit.errors import ParameterError

    with pytest.raises(ParameterError, match="smaller step_size"):
        svgd(
            _std_normal, {"x": torch.zeros(1)}, num_particles=10, num_iter=1,
            step_size=1e308, generator=0, progress_bar=False,
        )  # fmt: skip


def test_a_step_size_that_overshoots_mildly_is_said():
    # step_size=10 on a standard normal returned particles of mean +5.0 and sd 3.4 without a
    # word: their log-density did not fall far enough for the divergence check
    import warnings

    import pytest

    from latentfit.errors import DivergedParticlesWarning

    def run(step_size, log_density=_std_normal):
        return svgd(log_density, {"x": torch.zeros(1)}, step_size=step_size, generator=0,
                    progress_bar=False)["x"].reshape(-1)  # fmt: skip

    for step_size in (10.0, 3.0):
        with pytest.warns(
            DivergedParticlesWarning, match=f"did not settle.*step_size={step_size:g}"
        ):
            x = run(step_size)
        # a true alarm: the particles miss N(0, 1) by more than the settled runs below do
        assert abs(float(x.mean())) > 0.2 or abs(float(x.std()) - 1) > 0.2
    # the default step on a density 100 times narrower overshoots its scale the same way
    with pytest.warns(DivergedParticlesWarning, match="did not settle"):
        x = run(0.1, lambda x: D.Normal(0.0, 0.01).log_prob(x).sum())
    assert float(x.std()) > 0.0125  # sd 0.015 where 0.01 is right
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergedParticlesWarning)
        for step_size in (0.01, 0.1, 0.3):
            x = run(step_size)
            # settled: the 100 particles' mean and sd within 0.05 of N(0, 1)'s
            assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_a_density_that_raises_is_named_with_what_it_raised():
    # D.Multinomial's log_prob indexes with a boolean mask, which vmap cannot map: every
    # particle was rejected, and the error said "choose init where the density is finite, or a
    # smaller init_scale", which no init or scale could fix
    import pytest
    from torch.distributions import constraints

    from latentfit.errors import ParameterError

    counts = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    options = dict(num_particles=4, num_iter=5, progress_bar=False, generator=0)
    with pytest.raises(ParameterError, match=r"raised RuntimeError: vmap.*vectorized=True"):
        svgd(
            lambda p: D.Multinomial(6, probs=p).log_prob(counts),
            {"p": torch.ones(3) / 3},
            constraints={"p": constraints.simplex},
            **options,
        )
    # a density that is -inf without raising keeps the advice about init
    with pytest.raises(ParameterError, match=r"choose init where the density is finite"):
        svgd(lambda x: x * -torch.inf, {"x": 1.0}, **options)
