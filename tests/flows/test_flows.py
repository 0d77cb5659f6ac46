"""Flow layers and density models: normalisation, inversion, autograd log-determinants, exact
MLE against the Gaussian MLE, dequantisation, persistence and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

import latentfit
from latentfit.errors import DataError, ParameterError, ResourceLimitError
from latentfit.flows import MAF, FlowDensity, RealNVP, logit_transform
from latentfit.flows.density import FlowModule
from latentfit.flows.layers import (
    AffineCoupling,
    IAFStep,
    MaskedAffine,
    SplineCoupling,
    make_density_layers,
)
from latentfit.flows.objectives import dequantize, level_point
from tests.two_sample import mmd_permutation_pvalue

F64 = torch.float64
KINDS = ["maf", "realnvp", "spline"]


def _random_module(kind: str, d: int, seed: int = 0, n_layers: int = 3) -> FlowModule:
    """A density flow whose weights are far from the identity map it starts as (splines less
    so: at random knots of sd 0.4 their density has spikes no grid of this test resolves)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = make_density_layers(kind, d, n_layers, hidden=16, n_hidden=1, tail_bound=3.0)
        module = FlowModule(layers, d, None, 1e-6).double()
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0, 0.15 if kind == "spline" else 0.4)
    return module


@pytest.mark.parametrize("kind", KINDS)
def test_density_integrates_to_one_on_a_grid(kind):
    """∫ p(x) dx over a 2-D grid (trapezoid rule, the tails beyond ±7 hold < 1e-6 here)."""
    module = _random_module(kind, 2)
    g = torch.linspace(-7, 7, 351, dtype=F64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        p = module(torch.stack([xx.flatten(), yy.flatten()], -1)).exp().reshape(351, 351)
    mass = torch.trapezoid(torch.trapezoid(p, g, dim=1), g)
    # Tolerance: the trapezoid error of a smooth density at step 0.04 is below 1e-4.
    assert abs(float(mass) - 1.0) < 1e-3


@pytest.mark.parametrize("kind", [*KINDS, "iaf"])
def test_inverse_inverts_to_1e6(kind):
    torch.manual_seed(0)
    d = 5
    if kind == "iaf":
        layers = [IAFStep(d, 12, reverse=bool(i)).double() for i in range(2)]
        with torch.no_grad():
            for layer in layers:
                for p in layer.parameters():
                    p.normal_(0, 0.4)
    else:
        layers = list(_random_module(kind, d).layers)
    x = torch.randn(50, d, dtype=F64) * 2
    y = x
    for layer in layers:
        y, _ = layer(y)
    for layer in reversed(layers):
        y = layer.inverse(y)
    assert float((y - x).detach().abs().max()) < 1e-6


@pytest.mark.parametrize("cls", ["maf", "coupling", "spline"])
def test_layer_log_det_equals_autograd_jacobian(cls):
    torch.manual_seed(1)
    d = 4
    layer = {
        "maf": lambda: MaskedAffine(d, 8, reverse=True),
        "coupling": lambda: AffineCoupling(d, 8, parity=1),
        "spline": lambda: SplineCoupling(d, 8, n_bins=5, tail_bound=2.0),
    }[cls]().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    for _ in range(3):
        x = torch.randn(d, dtype=F64) * 1.5  # some coordinates fall in the spline's tails
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x)
        _, log_det = layer(x[None])
        torch.testing.assert_close(log_det[0], torch.linalg.slogdet(jac)[1], rtol=1e-9, atol=1e-10)
    if cls == "maf":  # autoregressive: output j depends on the inputs before it in its order
        assert torch.equal(jac.flip(0, 1).triu(1), torch.zeros_like(jac))


def test_one_layer_affine_flow_mle_is_the_gaussian_mle():
    """A masked affine layer with a linear MADE and a constant scale is u = A(x - μ) with A
    lower triangular: every Gaussian, nothing else. Its exact MLE must be the sample mean and
    the ML covariance (divisor n)."""
    gen = torch.Generator().manual_seed(0)
    d, n = 3, 400
    L = torch.tensor([[1.0, 0, 0], [0.8, 0.5, 0], [-0.3, 0.4, 2.0]], dtype=F64)
    X = torch.randn(n, d, generator=gen, dtype=F64) @ L.T + torch.tensor(
        [1.0, -2.0, 0.5], dtype=F64
    )
    torch.manual_seed(0)
    layer = MaskedAffine(d, 4, n_hidden=1, activation="linear", max_log_scale=50.0).double()
    layer.l_s.weight.requires_grad_(False)  # α_j = bias only: a constant scale
    module = FlowModule(torch.nn.ModuleList([layer]), d, None, 1e-6).double()
    with torch.no_grad():
        layer.l1.weight.normal_(0, 0.5)
    opt = torch.optim.LBFGS(
        [p for p in module.parameters() if p.requires_grad],
        lr=1,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = -module(X).mean()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    x0 = torch.zeros(1, d, dtype=F64)
    A = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x0[0])
    c = layer(x0)[0][0].detach()
    mu = -torch.linalg.solve(A, c)
    cov = torch.linalg.inv(A.T @ A)
    Xc = X - X.mean(0)
    torch.testing.assert_close(mu, X.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(cov, Xc.T @ Xc / n, rtol=0, atol=1e-6)
    gauss = torch.distributions.MultivariateNormal(X.mean(0), Xc.T @ Xc / n)
    torch.testing.assert_close(module(X).mean(), gauss.log_prob(X).mean(), rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def moons():
    X = make_moons(1500, noise=0.05, random_state=0)[0]
    return X, make_moons(500, noise=0.05, random_state=1)[0]


@pytest.fixture(scope="module")
def moons_flow(moons):
    torch.set_num_threads(1)
    return RealNVP(
        n_layers=6, hidden=64, epochs=30, lr=3e-3, batch_size=100, patience=None, random_state=0
    ).fit(moons[0])


def test_a_sample_count_beyond_the_machine_is_refused_before_drawing(moons_flow):
    with pytest.raises(ResourceLimitError, match=r"n_samples=1,000,000,000,000 draws of 2"):
        moons_flow.sample(10**12)
    with pytest.raises(ParameterError, match="n_samples"):
        moons_flow.sample(2.5)


def test_trained_flow_samples_match_the_data(moons, moons_flow):
    """MMD permutation test at n = 500; the test has power: it rejects the Gaussian with the
    data's mean and covariance, which a flow that learned nothing would resemble."""
    X, Xt = moons
    draws = moons_flow.sample(500, random_state=0)
    assert mmd_permutation_pvalue(draws, Xt) > 0.01
    gauss = np.random.default_rng(0).multivariate_normal(X.mean(0), np.cov(X.T), 500)
    assert mmd_permutation_pvalue(gauss, Xt) < 0.01
    # and the flow beats that Gaussian by a wide margin in held-out log-likelihood
    from scipy.stats import multivariate_normal

    gauss_ll = multivariate_normal(X.mean(0), np.cov(X.T)).logpdf(Xt).mean()
    assert moons_flow.score(Xt) > gauss_ll + 1.0


def test_save_load_roundtrip(moons_flow, moons, tmp_path):
    path = moons_flow.save(tmp_path / "flow.safetensors")
    back = latentfit.load(path)
    assert type(back) is RealNVP and back.get_params() == moons_flow.get_params()
    np.testing.assert_array_equal(back.score_samples(moons[1]), moons_flow.score_samples(moons[1]))
    np.testing.assert_array_equal(
        back.sample(5, random_state=3), moons_flow.sample(5, random_state=3)
    )


def test_dequantised_top_level_draws_stay_below_1():
    """float32 k + u rounds onto k + 1 for u within 2**-17 of 1 (7.6e-6 of the draws of the
    top 128 of 256 levels): such a draw was the value 1, outside [0, 1), where the logit of a
    small margin is infinite. A million draws of level 255 hit it a few times."""
    gen = torch.Generator().manual_seed(0)
    levels = torch.full((1000, 1000), 255.0)
    y = dequantize(levels, 256, gen)
    assert int((y >= 1).sum()) == 0
    assert bool((torch.floor(y * 256) == 255).all())
    w, log_det = logit_transform(y, 1e-8)  # a margin below float32's spacing at 1
    assert bool(w.isfinite().all() and log_det.isfinite().all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_levels", [256, 17, 22, 23, 37, 1000, 2**20])
def test_a_dequantised_level_is_read_back_as_itself(dtype, n_levels):
    """Every level at both ends of u (0 and torch.rand's largest draw, 1 - eps/2), brute
    force: floor(y L) (how a draw is read back as a level) gives k, in the dtype used. Before,
    k + u rounded onto k + 1, and for L not a power of 2 (k + u) / L could be read one level
    off (22 levels, float32: k = 13 at u = 0 read as 12)."""
    k = torch.arange(n_levels, dtype=dtype)
    for u in (0.0, 1 - torch.finfo(dtype).eps / 2):
        y = level_point(k, torch.full_like(k, u), n_levels)
        np.testing.assert_array_equal(torch.floor(y * n_levels).numpy(), k.numpy())
        assert float(y.max()) < 1 and float(y.min()) >= 0


def test_dequantised_bound_is_below_the_exact_discrete_likelihood():
    """2 pixels of 4 levels: the exact P(k) = ∫_bin p(y) dy (a fine midpoint rule) sums to at
    most 1 over the 16 cells; the dequantisation bound E_u log p(y) - d log L (the same rule)
    lies below log P(k) (Jensen), and score_samples estimates it without bias."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randint(0, 4, (300, 2), generator=gen).double()
    X[:, 1] = torch.minimum(X[:, 0] + torch.randint(0, 2, (300,), generator=gen), torch.tensor(3.0))
    model = MAF(
        n_layers=2,
        hidden=16,
        dequantize=True,
        n_levels=4,
        alpha=0.01,
        epochs=15,
        patience=None,
        dtype="float64",
        random_state=0,
    ).fit(X)
    cells = torch.cartesian_prod(torch.arange(4.0), torch.arange(4.0)).double()
    m = 200  # midpoints per axis and bin
    u = (torch.arange(m, dtype=F64) + 0.5) / m
    exact, jensen = [], []
    with torch.no_grad():
        for k in cells:
            y = torch.cartesian_prod((k[0] + u) / 4, (k[1] + u) / 4)
            w, log_det = logit_transform(y, 0.01)
            log_p = model.module_.log_prob_real(w) + log_det
            exact.append(math.log(float(log_p.exp().mean()) / 16))
            jensen.append(float(log_p.mean()) - math.log(16))
    exact, jensen = np.array(exact), np.array(jensen)
    assert np.exp(exact).sum() <= 1 + 1e-3
    assert np.all(jensen <= exact)
    reps = 400
    draws = model.score_samples(np.tile(cells.numpy(), (reps, 1))).reshape(reps, 16)
    se = draws.std(0) / math.sqrt(reps)
    assert np.all(np.abs(draws.mean(0) - jensen) < 4 * se + 1e-6)
    assert model.sample(20, random_state=0).max() <= 3


def test_errors_name_the_problem():
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(DataError, match=r"row 0, column 0"):
        MAF(dequantize=True, epochs=1).fit(X)
    with pytest.raises(DataError, match="1 feature"):
        MAF(epochs=1).fit(X[:, :1])
    with pytest.raises(ParameterError, match="flow must be"):
        FlowDensity("glow", epochs=1).fit(X)
    fitted = MAF(n_layers=1, hidden=8, epochs=1, random_state=0).fit(X)
    with pytest.raises(DataError, match="3 features"):
        fitted.score_samples(np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="planar"):
        latentfit.flows.PlanarStep(2).inverse(torch.zeros(1, 2))


def test_fit_resumes_exactly_from_the_trainers_checkpoint(tmp_path):
    """Training runs through latentfit.train: 2 epochs, then resumed to 4 from its checkpoint,
    equals 4 epochs in one go, weight for weight."""
    X = make_moons(200, noise=0.05, random_state=0)[0]
    kw = {"n_layers": 2, "hidden": 8, "batch_size": 50, "patience": None, "random_state": 0}
    ck = str(tmp_path / "ck")
    first = MAF(epochs=2, checkpoint_dir=ck, **kw).fit(X)
    resumed = MAF(epochs=4, checkpoint_dir=ck, **kw).fit(X)
    straight = MAF(epochs=4, **kw).fit(X)
    # the first two rows come from the checkpoint: their wall-clock fields are the first run's
    assert resumed.history_[:2] == first.history_ and len(resumed.history_) == 4
    for (name, a), b in zip(
        resumed.module_.state_dict().items(), straight.module_.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: MAF(hidden=10**7, epochs=1), "hidden=10000000"),
        (lambda: latentfit.NeuralSplineFlow(n_layers=10**6, epochs=1), "n_layers=1000000"),
        (lambda: RealNVP(n_hidden=10**6, epochs=1), "n_hidden=1000000"),
        (lambda: latentfit.NeuralSplineFlow(n_bins=10**8, epochs=1), "NeuralSplineFlow"),
    ],
)
def test_a_network_beyond_the_machine_is_refused_before_it_is_built(make, words):
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ResourceLimitError, match=words):
        make().fit(X)


@pytest.mark.parametrize("cls", [MAF, RealNVP, latentfit.NeuralSplineFlow])
@pytest.mark.parametrize("n_layers, n_hidden", [(1, 1), (3, 2), (4, 5)])
def test_the_size_check_counts_the_network_it_refuses(cls, n_layers, n_hidden, monkeypatch):
    # the check extrapolates from networks of 1-2 blocks and hidden layers; at the exact size
    # of the built network (weights x 4, buffers once) it refuses, one byte more and it passes

    model = cls(n_layers=n_layers, n_hidden=n_hidden, hidden=16)
    module = model._build(3)
    weights = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    need = (4 * weights + buffers) * 4  # float32
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: need - 1)
    with pytest.raises(ResourceLimitError, match=f"{need:,} bytes"):
        model._build(3)
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: need)
    model._build(3)


def test_a_sample_count_that_would_run_for_days_is_refused_before_drawing(monkeypatch):
    # a MAF inverts one coordinate a pass: a draw is d passes through every layer's MADE
    torch.set_num_threads(1)
    X = np.random.default_rng(0).normal(size=(200, 8))
    model = MAF(n_layers=2, hidden=16, n_hidden=1, epochs=1, random_state=0).fit(X)
    # MADE(8 -> 16 -> 2 x 8): weights and biases, counted by hand; 8 passes, 2 layers
    per_draw = 2 * 8 * ((8 * 16 + 16) + 2 * (16 * 8 + 8))
    with monkeypatch.context() as m:
        m.setattr(FlowModule, "sample", lambda *a, **k: pytest.fail("drew"))
        with pytest.raises(
            ResourceLimitError,
            match=rf"n_samples=4 draws .* \({per_draw:,} multiply-adds a draw\)"
            r".* n_samples <= 3\b",
        ):
            model.sample(4, max_work=3 * per_draw + 1)
    assert model.sample(3, max_work=3 * per_draw + 1).shape == (3, 8)
    assert model.sample(4, max_work=None).shape == (4, 8)
    # Real NVP inverts a coupling layer in one pass: a draw is one pass through its weights
    nvp = RealNVP(n_layers=2, hidden=8, epochs=1, random_state=0).fit(X)
    weights = sum(p.numel() for p in nvp.module_.layers.parameters())
    assert nvp.sample(10, max_work=10 * weights).shape == (10, 8)
    with pytest.raises(ResourceLimitError, match=r"n_samples <= 10\b"):
        nvp.sample(11, max_work=10 * weights)


def _flow_score_of_levels(model, levels: np.ndarray) -> np.ndarray:
    """The dequantisation bound of ``levels`` (n, d) given to the network as they are, with
    the draws of u that score_samples(random_state=0) takes: no reading of the user's scale."""
    with torch.no_grad():
        x = torch.as_tensor(levels, dtype=torch.float32)
        return model.module_(x, torch.Generator().manual_seed(0)).numpy()


def test_data_of_0s_and_1s_say_whether_they_are_codes_or_intensities():
    """0s and 1s of 5 levels are the codes 0 and 1 or the levels 0 and 4: refused unless
    level_scale says which, then scored as those levels (and so recorded for later data)."""
    binary = np.random.default_rng(0).integers(0, 2, (60, 3)).astype(float)
    fit = {"n_layers": 1, "hidden": 8, "epochs": 1, "random_state": 0, "dequantize": True}
    with pytest.raises(DataError, match=r"only 0s and 1s.*level_scale=1 \(codes\)"):
        RealNVP(n_levels=5, **fit).fit(binary)
    for scale in (1, 4):
        model = RealNVP(n_levels=5, level_scale=scale, **fit).fit(binary)
        assert model.level_scale_ == scale
        expected = _flow_score_of_levels(model, binary * scale)
        np.testing.assert_allclose(model.score_samples(binary), expected, rtol=1e-6)
    with pytest.raises(ParameterError, match="level_scale must be None"):
        RealNVP(n_levels=5, level_scale=2, **fit).fit(binary)
    # two levels: the codes 0 and 1 are the levels 0 and 1, nothing to ask
    assert RealNVP(n_levels=2, **fit).fit(binary).level_scale_ == 1.0


def test_intensities_of_many_levels_held_in_float32_read_as_their_levels():
    """k / 4999 cast to float32 is off by up to 3e-4 of a level once scaled back by 4999: read
    as level k (the VAE's tolerance, grid_tolerance), scored as the codes k themselves, while
    half a level off is still refused."""
    codes = np.random.default_rng(0).integers(0, 5000, (60, 3))
    X = codes / 4999  # float64, on the grid
    fit = {"n_layers": 1, "hidden": 8, "epochs": 1, "random_state": 0, "dequantize": True}
    model = RealNVP(n_levels=5000, **fit).fit(X)
    assert model.level_scale_ == 4999
    np.testing.assert_allclose(model.score_samples(X), _flow_score_of_levels(model, codes))
    with pytest.raises(DataError, match="row 0, column 0"):
        model.score_samples((codes + 0.5) / 4999)


def test_more_intensity_levels_than_float32_reads_are_refused_naming_float64():
    """An intensity is read as the level within grid_tolerance = 4 (L-1) eps of it: half a
    level at L = 2**20 + 1 in float32, where (k + 1/2) / 2**20, halfway between two levels,
    was fitted as one of them (float64 refuses it). float32 stops at 2**20 levels, where every
    halfway value is still refused; float64 takes 2**20 + 1 and reads its grid exactly."""
    top = 2**20
    codes = np.array([[3, 5], [top // 2, 7], [top - 1, 9], [0, 0]])
    fit = {"n_layers": 1, "hidden": 4, "epochs": 1, "random_state": 0, "dequantize": True}
    with pytest.raises(ParameterError, match=r"2 to 1,048,576.*got 1048577.*dtype='float64'"):
        MAF(n_levels=top + 1, level_scale=top, **fit).fit((codes + 0.5) / top)
    wide = MAF(n_levels=top + 1, level_scale=top, dtype="float64", **fit)
    with pytest.raises(DataError, match=r"row 0, column 0 holds 3\.3"):
        wide.fit((codes + 0.5) / top)
    wide.fit(codes / top)
    with torch.no_grad():
        x = torch.as_tensor(codes, dtype=torch.float64)
        levels = wide.module_(x, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(wide.score_samples(codes / top), levels, rtol=1e-12)
    with pytest.raises(DataError, match=r"row 0, column 0 holds 3\.3"):
        MAF(n_levels=top, level_scale=top - 1, **fit).fit((codes + 0.5) / (top - 1))
