"""Likelihoods against scipy, flows' log-determinants against autograd Jacobians."""

import re

import numpy as np
import pytest
import torch
from scipy import stats

from latentfit.vae.flows import IAFStep, PlanarStep, make_flow
from latentfit.vae.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    level_codes,
    make_likelihood,
    soft_clamp,
)

G = torch.Generator().manual_seed(0)


def test_bernoulli_matches_scipy():
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=G)  # (s, n, d)
    x = (torch.rand(5, 7, dtype=torch.float64, generator=G) > 0.5).double()
    got = BernoulliLikelihood().log_prob(logits, x)
    p = torch.sigmoid(logits).numpy()
    want = stats.bernoulli(p).logpmf(np.broadcast_to(x.numpy(), p.shape)).sum(-1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(
        BernoulliLikelihood().distribution(logits).log_prob(x).numpy(), want, rtol=1e-10
    )


@pytest.mark.parametrize("variance", ["fixed", "learned", "decoder"])
def test_gaussian_matches_scipy_and_keeps_log_variance_in_range(variance):
    d = 6
    lik = GaussianLikelihood(d, variance=variance, fixed_variance=0.5, min_logvar=-3, max_logvar=1)
    lik.double()
    if lik.raw_logvar is not None:
        lik.raw_logvar.data = torch.linspace(-50, 50, d, dtype=torch.float64)  # extreme values
    params = torch.randn(4, lik.n_params * d, dtype=torch.float64, generator=G) * 30
    x = torch.randn(4, d, dtype=torch.float64, generator=G)
    loc, logvar = lik._loc_logvar(params)
    assert (logvar >= -3).all() and (logvar <= 1).all()  # soft clamp holds for wild inputs
    want = stats.norm(loc.detach().numpy(), np.exp(0.5 * logvar.detach().numpy())).logpdf(x.numpy())
    np.testing.assert_allclose(lik.log_prob(params, x).detach().numpy(), want.sum(-1), rtol=1e-10)
    if variance == "fixed":
        np.testing.assert_allclose(logvar.numpy(), np.log(0.5), rtol=1e-12)


def test_categorical_matches_brute_force():
    d, levels = 3, 256
    lik = CategoricalLikelihood(d, levels)
    params = torch.randn(2, levels * d, dtype=torch.float64, generator=G)
    x_int = torch.tensor([[0, 255, 17], [128, 3, 200]])
    logits = params.reshape(2, levels, d)  # level-major layout
    want = torch.stack(
        [
            sum(torch.log_softmax(logits[i, :, j], 0)[x_int[i, j]] for j in range(d))
            for i in range(2)
        ]
    )
    torch.testing.assert_close(lik.log_prob(params, x_int), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(lik.log_prob(params, x_int / 255.0), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(lik.distribution(params).log_prob(x_int), want, rtol=1e-12, atol=0)
    mean = lik.mean(params)
    assert mean.shape == (2, d) and (mean >= 0).all() and (mean <= 1).all()


def test_a_categorical_vae_takes_integer_levels_as_its_docstring_says():
    # integer levels were refused as "floating values" read as intensities (the data were
    # made floats first), and ELBO()(model, levels) stopped on torch's Long-by-Float matmul
    from latentfit.errors import DataError
    from latentfit.train import TrainConfig, train
    from latentfit.vae import ELBO, build_model, marginal_log_likelihood

    model = build_model(x_dim=3, z_dim=2, hidden=[8], likelihood="categorical", n_levels=4)
    levels = torch.tensor([[0, 1, 2], [3, 3, 0]])
    intensities = levels / 3.0  # the documented float form of the same data
    for X in (levels, levels.numpy(), levels.numpy().astype(np.uint8)):
        got = marginal_log_likelihood(model, X, k=50, generator=0).log_px
        want = marginal_log_likelihood(model, intensities, k=50, generator=0).log_px
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    g = torch.Generator().manual_seed(1)
    got = ELBO()(model, levels, torch.Generator().manual_seed(1)).bound
    torch.testing.assert_close(got, ELBO()(model, intensities, g).bound, rtol=0, atol=0)
    cfg = TrainConfig(epochs=1, batch_size=2, diagnostics=False, progress=False)
    assert len(train(model, ELBO(), levels.repeat(3, 1), levels, cfg).history) == 1
    # a code outside 0..3 is named by row and column (-1 and 4 were clamped to 0 and 3)
    for value in (4, -1):
        bad = levels.clone()
        bad[1, 2] = value
        match = rf"level {value} at row 1, column 2.*0\.\.3"
        with pytest.raises(DataError, match=match):
            marginal_log_likelihood(model, bad, k=2)
        with pytest.raises(DataError, match=match):
            train(model, ELBO(), bad, None, cfg)
        with pytest.raises(DataError, match=match):
            model.decoder.likelihood.log_prob(torch.zeros(2, 12), bad)


def test_an_intensity_between_two_levels_is_refused_not_rounded_to_the_nearest():
    # 0.3 was read as the level round(0.3 * 4) = 1, i.e. as 0.25: the data changed unsaid
    from latentfit.errors import DataError
    from latentfit.train import TrainConfig, train
    from latentfit.vae import ELBO, build_model, diagnose, marginal_log_likelihood

    model = build_model(x_dim=3, z_dim=2, hidden=[8], likelihood="categorical", n_levels=5)
    X = torch.tensor([[0.0, 0.25, 1.0], [0.5, 0.3, 0.75]], dtype=torch.float64)
    match = r"X holds 0\.3 at row 1, column 1, between two of the 5 levels.*round\(x \* 4\) / 4"
    with pytest.raises(DataError, match=match):
        marginal_log_likelihood(model, X, k=2)
    with pytest.raises(DataError, match=match):
        diagnose(model, X)
    cfg = TrainConfig(epochs=1, batch_size=2, diagnostics=False, progress=False)
    with pytest.raises(DataError, match=match.replace("X holds", "X_train holds")):
        train(model, ELBO(), X, None, cfg)
    # on the grid k/(L-1), float32 rounding included, the intensities are the codes' levels
    model = build_model(x_dim=4, z_dim=2, hidden=[8], likelihood="categorical", n_levels=256)
    codes = torch.tensor([[0, 1, 128, 255], [3, 77, 154, 254]])
    got = marginal_log_likelihood(model, (codes / 255).float(), k=20, generator=0).log_px
    want = marginal_log_likelihood(model, codes, k=20, generator=0).log_px
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_integer_0s_and_1s_for_a_model_fitted_to_intensities_are_refused_as_ambiguous(
    tmp_path,
):
    # a model whose file says it was fitted to intensities read integer 0/1 pixels as the
    # codes 0 and 1 (intensities 0 and 1/4), where the user meant off and on (0 and 1)
    from latentfit.errors import DataError
    from latentfit.vae import build_model, load_model, marginal_log_likelihood, save_model

    model = build_model(x_dim=3, z_dim=2, hidden=[8], likelihood="categorical", n_levels=5)
    model.level_scale_ = 4.0  # as fit vae records a file of intensities
    model = load_model(save_model(model, tmp_path / "v.safetensors"))
    binary = np.array([[0, 1, 1], [1, 0, 0]])
    for X in (binary, torch.as_tensor(binary), binary.astype(np.uint8)):
        with pytest.raises(DataError, match=r"X holds only the integers 0 and 1.*1 is the level 4"):
            marginal_log_likelihood(model, X, k=2)

    def score(X):
        return marginal_log_likelihood(model, X, k=20, generator=0).log_px

    # either reading said with floats is taken: off/on are the codes 0 and 4, not 0 and 1
    torch.testing.assert_close(score(binary.astype(float)), score(binary * 4), rtol=0, atol=0)
    assert not torch.equal(score(binary.astype(float)), score(binary / 4.0))
    codes = np.array([[0, 1, 4], [3, 0, 2]])
    torch.testing.assert_close(score(codes), score(codes / 4.0), rtol=0, atol=0)
    model.level_scale_ = 1.0  # fitted to codes: 0s and 1s are codes, as for the file
    torch.testing.assert_close(score(binary), score(binary / 4.0), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        (2.5, "recode the column"),
        (-1.0, "recode the column"),
        (float("nan"), "recode the column"),
        (float("inf"), "recode the column"),  # was an OverflowError from round(inf)
        (40.0, "n_levels above the largest level (41 or more)"),
    ],
)
def test_level_codes_are_whole_numbers_in_range_or_the_first_other_value_is_named(value, advice):
    from latentfit.errors import DataError

    x = torch.tensor([[0.0, 16.0], [3.0, value]], dtype=torch.float64)  # (n, d)
    with pytest.raises(
        DataError, match=rf"holds {value:g} at row 1, column 1: .*{re.escape(advice)}"
    ):
        level_codes(x, 17)
    got = level_codes(x[:1], 17)
    assert got.dtype == torch.int64 and got.tolist() == [[0, 16]]


def test_soft_clamp_and_errors():
    assert float(soft_clamp(torch.tensor(-1e9), -2.0, 3.0)) == -2.0
    assert float(soft_clamp(torch.tensor(0.0), -2.0, 3.0)) == 0.5
    with pytest.raises(ValueError, match="variance must be"):
        GaussianLikelihood(3, variance="huge")
    with pytest.raises(ValueError, match="min_logvar"):
        GaussianLikelihood(3, min_logvar=2, max_logvar=1)
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("poisson", 3)


def _jacobian_logdet(step, z, h=None):
    """log|det ∂f/∂z| by brute force: the full autograd Jacobian of one point."""
    jac = torch.autograd.functional.jacobian(lambda v: step(v[None, None], h)[0][0, 0], z)
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("kind", ["planar", "iaf", "iaf-reversed"])
@torch.random.fork_rng()  # seeds the layers' initialisation without touching global state
def test_flow_log_det_equals_autograd_jacobian(kind):
    torch.manual_seed(0)
    d, hdim = 4, 3
    if kind == "planar":
        step = PlanarStep(d).double()
        with torch.no_grad():
            step.u.normal_(), step.w.normal_(), step.b.normal_()
        h = None
    else:
        step = IAFStep(d, 8, context_dim=hdim, reverse=kind.endswith("reversed")).double()
        with torch.no_grad():
            for p in step.parameters():
                p.normal_(0, 0.5)
        h = torch.randn(1, hdim, dtype=torch.float64)
    for _ in range(3):
        z = torch.randn(d, dtype=torch.float64)
        _, log_det = step(z[None, None], h)
        torch.testing.assert_close(
            log_det[0, 0], _jacobian_logdet(step, z, h), rtol=1e-9, atol=1e-10
        )


@torch.random.fork_rng()
def test_iaf_is_autoregressive():
    torch.manual_seed(1)
    step = IAFStep(5, 16).double()
    z = torch.randn(5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: step(v[None, None])[0][0, 0], z)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))  # output j depends on z_{≤j} only


def test_planar_is_invertible_direction():
    step = PlanarStep(3)
    with torch.no_grad():
        step.w.copy_(torch.tensor([1.0, 0.0, 0.0]))
        step.u.copy_(torch.tensor([-5.0, 0.0, 0.0]))  # wᵀu = -5 would make f non-invertible
    assert float((step.w @ step.u_hat()).detach()) >= -1.0


def test_make_flow_errors():
    with pytest.raises(ValueError, match="unknown flow"):
        make_flow("radial", 3, 2)
    with pytest.raises(ValueError, match="at least one step"):
        make_flow("iaf", 3, 0)
    assert len(make_flow("iaf", 3, 4)) == 4


def _train_quietly(likelihood: str, X: torch.Tensor, **spec):
    import warnings

    from latentfit.errors import ConstantColumnWarning
    from latentfit.train import TrainConfig, train
    from latentfit.vae import build_model
    from latentfit.vae.objectives import ELBO

    model = build_model(x_dim=X.shape[1], z_dim=1, hidden=[4], likelihood=likelihood, **spec)
    cfg = TrainConfig(epochs=1, batch_size=10, diagnostics=False, progress=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(model, ELBO(), X, None, cfg)
    return [str(w.message) for w in seen if w.category is ConstantColumnWarning]


def test_a_constant_column_under_a_learned_gaussian_variance_is_named():
    """A column of one value: a learned (or emitted) decoder variance falls there to its floor
    and the bound gains up to 0.5 (-min_logvar - log 2 pi) nats a row from it, 2.58 at -7:
    exactly a Gaussian's log-density at its mean at the floor's variance (scipy)."""
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    X[:, 1] = 0.5
    said = _train_quietly("gaussian", X)
    assert len(said) == 1 and said[0].startswith("column 1 (0.5) of X_train holds one value")
    assert "up to 2.58 nats a row" in said[0]
    floor = GaussianLikelihood(1).min_logvar
    at_mean = stats.norm(0.0, np.exp(0.5 * floor)).logpdf(0.0)
    assert f"{at_mean:.3g}" == "2.58"
    assert not _train_quietly("gaussian", X, gaussian_variance="fixed")  # no floor to reach
    assert not _train_quietly("gaussian", torch.randn(40, 3, generator=G))
    binary = (torch.rand(40, 3, generator=G) > 0.5).double()
    binary[:, 0] = 0.0  # a Bernoulli pixel that is always 0: log p -> 0, bounded
    assert not _train_quietly("bernoulli", binary)
