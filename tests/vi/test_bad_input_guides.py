"""Bad arguments to the VI guides and the SVI loop are refused by name before anything is
allocated: no raw torch error, no silent NaN scale."""

from __future__ import annotations

import math

import pytest
import torch

from latentfit.errors import ParameterError, ResourceLimitError
from latentfit.vi import svi
from latentfit.vi.guides import (
    FlowGuide,
    FullRankGaussian,
    LocalMeanFieldGaussian,
    MeanFieldGaussian,
)

GUIDES = [MeanFieldGaussian, FullRankGaussian]


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("dim", [-1, 0, 2.5, "3", True, None])
def test_a_bad_dim_is_named(guide, dim):
    with pytest.raises(ParameterError, match="dim must be an integer >= 1"):
        guide(dim)


@pytest.mark.parametrize(("guide", "dim"), [(MeanFieldGaussian, 10**12), (FullRankGaussian, 10**6)])
def test_a_guide_too_large_for_memory_is_refused_before_allocating(guide, dim):
    with pytest.raises(ResourceLimitError, match="would need"):
        guide(dim)


def test_a_local_guide_too_large_is_refused():
    with pytest.raises(ResourceLimitError, match="would need"):
        LocalMeanFieldGaussian(10**7, 10**6)
    with pytest.raises(ParameterError, match="n must be an integer"):
        LocalMeanFieldGaussian(0, 2)


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("scale", [-1.0, 0.0, math.nan, math.inf, "a", None])
def test_a_bad_scale_is_named(guide, scale):
    with pytest.raises(ParameterError, match="scale must be a finite number > 0"):
        guide(2, scale=scale)


def test_a_scale_that_rounds_to_zero_is_named():
    with pytest.raises(ParameterError, match=r"too small for torch\.float32"):
        MeanFieldGaussian(2, scale=1e-50, dtype=torch.float32)


@pytest.mark.parametrize("guide", [*GUIDES, FlowGuide])
@pytest.mark.parametrize(
    ("loc", "needle"),
    [
        ([0.0, 1.0, 2.0], r"length dim=2, got shape \(3,\)"),
        (torch.zeros(2, 2), r"length dim=2, got shape \(2, 2\)"),
        ([0.0, math.nan], "NaN"),
        ([1.0, "b"], "non-numeric"),
    ],
)
def test_a_bad_loc_is_named(guide, loc, needle):
    with pytest.raises(ParameterError, match=needle):
        guide(2, loc=loc)


def test_good_guides_have_the_scale_they_were_given():
    g = MeanFieldGaussian(3, loc=[1.0, 2.0, 3.0], scale=0.5, dtype=torch.float64)
    assert torch.allclose(g.scale, torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.equal(g.loc.detach(), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    f = FullRankGaussian(2, scale=torch.tensor(2.0), dtype=torch.float64)
    assert torch.allclose(torch.diagonal(f.scale_tril), torch.full((2,), 2.0, dtype=torch.float64))


def test_flow_guide_arguments_are_named():
    with pytest.raises(ParameterError, match="dim must be an integer >= 2"):
        FlowGuide(2.5)
    with pytest.raises(ParameterError, match="hidden must be an integer"):
        FlowGuide(2, hidden=0)
    with pytest.raises(ResourceLimitError, match="would need"):
        FlowGuide(2, hidden=10**10)  # 6e10 weights: ~1.9 TB with gradients and moments
    with pytest.raises(ParameterError, match=r"support must be a torch\.distributions constraint"):
        MeanFieldGaussian(2, support="positive")


def _objective(guide):
    def objective(batch):
        return -(guide.loc**2).sum()

    return objective


@pytest.mark.parametrize("optimizer", [None, 3, "adam", torch.optim.Adam])
def test_svi_names_a_bad_optimizer(optimizer):
    g = MeanFieldGaussian(2, dtype=torch.float64)
    with pytest.raises(ParameterError, match="optimizer must be a torch optimiser"):
        svi(_objective(g), optimizer, 2)


def test_svi_names_a_bad_objective_and_callback():
    g = MeanFieldGaussian(2, dtype=torch.float64)
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    with pytest.raises(ParameterError, match="objective must be a callable"):
        svi(None, opt, 2)
    with pytest.raises(ParameterError, match="differentiable scalar tensor"):
        svi(lambda batch: 1.0, opt, 2)
    with pytest.raises(ParameterError, match="callback must be a callable"):
        svi(_objective(g), opt, 2, callback=3)
    history = svi(_objective(g), opt, 2)  # the good call still runs
    assert len(history) == 2


def _bound_parts():
    from torch.distributions import Normal

    from latentfit.vi import MeanFieldGaussian

    y = torch.tensor([0.3, -0.2], dtype=torch.float64)
    guide = MeanFieldGaussian(1, dtype=torch.float64)
    prior = Normal(torch.zeros(1, dtype=torch.float64), 1.0)
    return (lambda z, batch: Normal(z, 1.0).log_prob(y)), guide, prior  # (s, 2)


@pytest.mark.parametrize("name", ["StochasticELBO", "ImportanceWeightedBound"])
def test_bounds_refuse_draws_memory_cannot_hold_and_take_a_seed(name):
    # found by hand (a helper's hunt): num_samples=10**12 reached torch's allocator; an
    # integer generator raised AttributeError ('int' object has no attribute 'device')
    import latentfit.vi as vi

    cls = getattr(vi, name)
    ll, guide, prior = _bound_parts()
    with pytest.raises(ResourceLimitError, match="1,000,000,000,000 draws"):
        cls(ll, guide, prior=prior, num_samples=10**12)()
    a = cls(ll, guide, prior=prior, num_samples=4, generator=1)()
    b = cls(ll, guide, prior=prior, num_samples=4, generator=1)()
    assert a.shape == () and torch.equal(a, b)
    with pytest.raises(ParameterError, match="generator must be None, an int seed"):
        cls(ll, guide, prior=prior, num_samples=4, generator="a")()


@pytest.mark.parametrize("name", ["StochasticELBO", "ImportanceWeightedBound"])
def test_bounds_refuse_a_density_of_another_shape(name):
    # found by hand: a prior of shape (3,) on a 1-d latent broadcast, and the "bound" came
    # back as a (num_samples,) or (3,) tensor without a word
    from torch.distributions import Normal

    import latentfit.vi as vi

    cls = getattr(vi, name)
    ll, guide, _ = _bound_parts()
    wide = Normal(torch.zeros(3, dtype=torch.float64), 1.0)
    with pytest.raises(ParameterError, match=r"prior's log-density returned shape \(4, 3\)"):
        cls(ll, guide, prior=wide, num_samples=4)()
    with pytest.raises(ParameterError, match="log_likelihood must return a tensor"):
        cls(lambda z, b: 0.5, guide, prior=wide, num_samples=4)()


@pytest.mark.parametrize(
    "guide", [*GUIDES, FlowGuide, lambda *a, **k: LocalMeanFieldGaussian(3, *a, **k)]
)
def test_a_scale_beyond_the_dtype_is_named(guide):
    # found by a bug hunt: MeanFieldGaussian(2, scale=1e300) in float32 raised torch's
    # "RuntimeError: value cannot be converted to type float without overflow"
    with pytest.raises(
        ParameterError, match=r"scale=1e\+300 is beyond the range of torch\.float32"
    ):
        guide(2, scale=1e300, dtype=torch.float32)
    assert guide(2, scale=1e300, dtype=torch.float64) is not None  # float64 holds it


def test_a_local_guide_names_an_index_outside_its_rows():
    g = LocalMeanFieldGaussian(3, 2, dtype=torch.float64)
    for index in (torch.tensor([5]), torch.tensor([0.5]), 2.5):
        with pytest.raises(ParameterError, match=r"n=3 data points.*row numbers 0\.\.2"):
            g(index)
    assert g(torch.tensor([0, 2])).batch_shape == (2,)


def _distribution_guide(**kwargs):
    from torch.distributions import Normal

    from latentfit.vi import DistributionGuide

    family = kwargs.pop("family", Normal)
    return DistributionGuide(family, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"loc": 0.0, "scale": -1.0}, r"scale = -1 is outside the support of Normal's scale"),
        ({"loc": 0.0, "scale": 0.0}, r"scale = 0 is outside the support"),
        ({"loc": 0.0, "scale": [1.0, -2.0]}, r"scale\[1\] = -2 is outside the support"),
        ({"loc": 0.0, "scale": math.nan}, "scale contains NaN"),
        ({"loc": math.inf, "scale": 1.0}, "loc contains inf"),
        ({"loc": "a", "scale": 1.0}, "loc must be a number or a tensor of numbers"),
        (
            {"loc": 0.0, "scale": 1e300, "dtype": torch.float32},
            r"beyond the range of torch\.float32",
        ),
        ({"loc": 0.0}, r"Normal needs a starting value for scale"),
        ({}, r"Normal needs a starting value for loc and scale"),
        ({"loc": 0.0, "scale": 1.0, "rate": 1.0}, r"Normal has no parameter 'rate'"),
        (
            {"loc": [0.0, 1.0], "scale": [1.0, 1.0, 1.0]},
            r"loc of shape \(2,\), scale of shape \(3,\)",
        ),
        ({"loc": [0.0], "scale": [1.0], "event_dims": 2}, r"event_dims=2.*batch shape \(1,\)"),
        ({"loc": 0.0, "scale": 1.0, "event_dims": -1}, "event_dims must be an integer >= 0"),
        ({"loc": 0.0, "scale": 1.0, "dtype": "int64"}, "dtype must be float64 or float32"),
        ({"loc": 0.0, "scale": 1.0, "device": "nowhere"}, "device='nowhere' is not a torch device"),
        ({"family": int, "rate": 1.0}, "family must be a torch.distributions class"),
        ({"family": torch.distributions.Normal(0.0, 1.0), "loc": 1.0}, "not an instance"),
        (
            {"family": torch.distributions.Beta, "concentration1": 0.0, "concentration0": 1.0},
            "concentration1 = 0",
        ),
        (
            {"family": torch.distributions.Categorical, "probs": [0.2, 0.9]},
            r"probs = \[0\.2, 0\.9\].*Simplex",
        ),
        ({"family": torch.distributions.Categorical, "probs": [0.0, 1.0]}, "edge of its support"),
        (
            {"family": torch.distributions.Categorical, "probs": [0.5, 0.5], "logits": [0.0, 0.0]},
            "Categorical cannot be made from probs",
        ),
        (
            {"family": torch.distributions.MultivariateNormal, "loc": [0.0], "scale_tril": [[1.0]]},
            "no bijection from the real line",
        ),
    ],
)
def test_a_distribution_guide_names_a_bad_argument_when_made(kwargs, needle):
    # found by a bug hunt: these reached torch (TypeError, RuntimeError, ValueError,
    # NotImplementedError) or, for a negative or NaN scale, were stored and failed in the fit
    with pytest.raises(ParameterError, match=needle):
        _distribution_guide(**kwargs)


def test_a_good_distribution_guide_starts_where_it_was_told():
    from torch.distributions import Categorical

    g = _distribution_guide(loc=[0.5, -1.0], scale=2.0, dtype="float64", event_dims=1)
    q = g()
    assert q.event_shape == (2,) and q.mean.dtype == torch.float64
    torch.testing.assert_close(q.base_dist.scale, torch.full((2,), 2.0, dtype=torch.float64))
    c = _distribution_guide(family=Categorical, probs=[0.25, 0.75], logits=None)
    torch.testing.assert_close(c().probs.detach(), torch.tensor([0.25, 0.75]))
