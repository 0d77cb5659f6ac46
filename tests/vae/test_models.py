"""Discrete and ladder VAEs, schedules, free bits, diagnostics, images, save/load."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from latentfit.vae import (
    ELBO,
    IWAE,
    ConstantKL,
    CyclicalWarmup,
    LinearWarmup,
    active_units,
    build_model,
    free_bits_kl,
    init_decoder_bias,
    load_model,
    mutual_information,
    save_model,
)
from latentfit.vae.images import (
    image_grid,
    interpolate,
    reconstruct,
    sample_images,
    save_grid,
    traverse,
)


def bits(n, d, seed=0):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) > 0.5).double()


def test_gumbel_max_samples_follow_q_and_kl_is_exact():
    model = build_model(kind="discrete", x_dim=8, z_dim=2, n_categories=3, hidden=[6]).double()
    x = bits(2, 8)
    p = model(x, 20_000, torch.Generator().manual_seed(1), relaxed=False)
    probs = model.logits(x).softmax(-1).detach()  # (n, L, C)
    freq = p.z.reshape(20_000, 2, 2, 3).mean(0)
    # binomial standard error ≤ √(0.25/20000) = 0.0035; 5 SE
    assert (freq - probs).abs().max() < 0.018
    brute = (probs * (probs.log() - math.log(1 / 3))).sum(-1)  # KL(q ‖ uniform) per latent
    torch.testing.assert_close(p.kl.detach(), brute, rtol=1e-12, atol=1e-12)
    # log q of the drawn one-hot sample is the categorical log-probability
    idx = p.z.reshape(20_000, 2, 2, 3).argmax(-1)
    lq = probs.log().expand(20_000, -1, -1, -1).gather(-1, idx[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(p.log_qz.detach(), lq, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("straight_through", [False, True])
def test_relaxed_training_reports_the_exact_bound(straight_through):
    model = build_model(
        kind="discrete",
        x_dim=8,
        z_dim=2,
        n_categories=3,
        hidden=[6],
        straight_through=straight_through,
        temperature=0.5,
    )
    x = bits(5, 8).float()
    out = IWAE(4)(model, x, torch.Generator().manual_seed(2))
    out.loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())  # gradients reach the encoder
    p_soft = model(x, 4, torch.Generator().manual_seed(2))
    assert p_soft.exact == straight_through
    model.eval()
    exact = IWAE(4)(model, x, torch.Generator().manual_seed(3))
    assert torch.isfinite(exact.bound).all()
    if straight_through:  # the decoder saw one-hot samples: the bound is already exact
        p_hard = model(x, 4, torch.Generator().manual_seed(2), relaxed=False)
        torch.testing.assert_close(p_soft.log_px_z, p_hard.log_px_z)


def test_ladder_posterior_is_the_precision_weighted_combination():
    model = build_model(
        kind="ladder", x_dim=10, z_dim=3, z2_dim=2, hidden=[8], hidden2=[6]
    ).double()
    x = bits(4, 10)
    _, _, p1, loc_q, scale_q, _ = model._layers(x, 1, torch.Generator().manual_seed(0))
    b1 = model.up1(x)
    v_hat, v_p = b1.scale**2, p1.scale**2
    # product of two Gaussians: precision adds, mean is precision-weighted (Sønderby eq. 19–20)
    torch.testing.assert_close(scale_q**2, v_hat * v_p / (v_hat + v_p), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        loc_q, (b1.loc * v_p + p1.loc * v_hat) / (v_hat + v_p), rtol=1e-12, atol=1e-14
    )


def test_ladder_kl_matches_monte_carlo():
    model = build_model(
        kind="ladder", x_dim=10, z_dim=3, z2_dim=2, hidden=[8], hidden2=[6]
    ).double()
    x = bits(3, 10)
    with torch.no_grad():
        p = model(x, 40_000, torch.Generator().manual_seed(1))
    mc = p.log_qz - p.log_pz  # (s, n)
    err = mc.std(0) / math.sqrt(mc.shape[0])
    # the ladder's KL averages the closed-form KL of z₁ over the same z₂ samples, so both
    # estimate the same expectation; 5 standard errors
    assert ((mc.mean(0) - p.kl.sum(-1)).abs() < 5 * err).all()


def test_schedules():
    lin = LinearWarmup(10)
    assert [lin(s) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    cyc = CyclicalWarmup(total_steps=40, n_cycles=4, ratio=0.5)
    # period 10: rises over steps 0..5, flat at 1 for 5..9, restarts at 10 (Fu et al. 2019)
    assert [cyc(s) for s in (0, 1, 5, 9, 10, 12, 39, 40)] == [
        0.0,
        0.2,
        1.0,
        1.0,
        0.0,
        0.4,
        1.0,
        1.0,
    ]
    assert ConstantKL(0.3)(123) == 0.3
    with pytest.raises(ValueError):
        LinearWarmup(0)
    with pytest.raises(ValueError):
        CyclicalWarmup(10, ratio=0.0)


def test_free_bits():
    kl = torch.tensor([[0.1, 2.0, 0.0, 1.0], [0.3, 4.0, 0.0, 1.0]])  # batch means 0.2, 3, 0, 1
    assert float(free_bits_kl(kl, 0.5)) == pytest.approx(0.5 + 3.0 + 0.5 + 1.0)
    assert float(free_bits_kl(kl, 0.5, group_size=2)) == pytest.approx(3.2 + 1.0)
    with pytest.raises(ValueError, match="divide"):
        free_bits_kl(kl, 0.5, group_size=3)
    # below the floor the KL gets no gradient: nothing pushes those units further down
    kl = kl.clone().requires_grad_()
    free_bits_kl(kl, 0.5).backward()
    assert kl.grad[:, 0].abs().sum() == 0 and kl.grad[:, 1].abs().sum() > 0
    model = build_model(x_dim=8, z_dim=3, hidden=[6])
    out = ELBO(free_bits=100.0)(model, bits(4, 8).float(), torch.Generator().manual_seed(0))
    out.loss.backward()  # every dimension below the floor: the encoder gets no KL gradient
    assert float(out.loss.detach()) == pytest.approx(float(-out.log_px_z.mean()) + 300.0, rel=1e-5)


def test_active_units_count_encoder_mean_variance():
    model = build_model(x_dim=6, z_dim=3, hidden=[5]).double()
    enc = model.encoder
    with torch.no_grad():  # loc = [x₀, 0.05·x₁, 0]: variances 0.25, 0.0025·0.25, 0 for bits
        enc.body = nn.Identity()
        enc.head = nn.Linear(6, 6).double()
        enc.head.weight.zero_(), enc.head.bias.zero_()
        enc.head.weight[0, 0], enc.head.weight[1, 1] = 1.0, 0.05
    X = bits(4000, 6)
    n_active, var = active_units(model, X)
    assert n_active == 1
    np.testing.assert_allclose(
        var.numpy(),
        [X[:, 0].var(unbiased=False), 0.0025 * X[:, 1].var(unbiased=False), 0],
        rtol=1e-9,
        atol=1e-15,
    )


def test_mutual_information_bounds():
    model = build_model(x_dim=6, z_dim=2, hidden=[5]).double()
    with torch.no_grad():
        model.encoder.head.weight.zero_()  # q(z|x) does not depend on x: I(x; z) = 0 exactly
    assert mutual_information(
        model, bits(50, 6), torch.Generator().manual_seed(0)
    ) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():  # a near-deterministic encoder of distinct inputs: I → log n
        model.encoder.head.weight.normal_(0, 50, generator=torch.Generator().manual_seed(1))
        model.encoder.head.bias[2:] = -30.0
    X = torch.eye(6, dtype=torch.float64)
    assert mutual_information(model, X, torch.Generator().manual_seed(0)) == pytest.approx(
        math.log(6), abs=1e-6
    )


def test_images(tmp_path):
    model = build_model(x_dim=16, z_dim=3, hidden=[8])
    g = torch.Generator().manual_seed(0)
    X = bits(5, 16).float()
    assert sample_images(model, 6, g).shape == (6, 16)
    rec = reconstruct(model, X)
    assert rec.shape == (5, 16) and (rec >= 0).all() and (rec <= 1).all()
    assert interpolate(model, X[0], X[1], 7).shape == (7, 16)
    assert traverse(model, X[0], dims=[0, 2], values=[-1.0, 0.0, 1.0]).shape == (6, 16)
    grid = image_grid(rec, (4, 4), nrow=3)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)
    np.testing.assert_array_equal(grid[1:5, 1:5], rec[0].reshape(4, 4).numpy())
    assert save_grid(tmp_path / "g.png", rec, (4, 4)).read_bytes()[:4] == b"\x89PNG"
    assert model.training  # the helpers restore the training flag


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(flow="iaf", flow_steps=2),
        dict(kind="ladder"),
        dict(kind="discrete", n_categories=4),
        dict(likelihood="gaussian"),
        dict(network="conv", image_shape=[1, 4, 4], likelihood="categorical", n_levels=8),
    ],
)
def test_save_load_round_trip(tmp_path, kw):
    model = build_model(x_dim=16, z_dim=4, hidden=[8], seed=3, **kw)
    path = save_model(model, tmp_path / "m.safetensors")
    again = load_model(path)
    x = bits(3, 16).float()
    model.eval(), again.eval()
    a = model(x, 2, torch.Generator().manual_seed(0))
    b = again(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(a.log_px_z, b.log_px_z) and torch.equal(a.log_qz, b.log_qz)
    assert again.spec == model.spec


def test_build_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_model(seed=4, hidden=[8]), build_model(seed=4, hidden=[8])
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match="image_shape"):
        build_model(network="conv")
    with pytest.raises(ValueError, match="flows are available"):
        build_model(kind="ladder", flow="iaf")
    with pytest.raises(ValueError, match=r"kind=.hmm. \(must be gaussian/discrete/ladder\)"):
        build_model(kind="hmm")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope")
    (tmp_path / "bad").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a latentfit VAE"):
        load_model(tmp_path / "bad")


def test_init_decoder_bias_starts_at_the_mean_image():
    X = torch.rand(50, 16, generator=torch.Generator().manual_seed(0)).double()
    for lik in ("bernoulli", "gaussian"):
        model = build_model(
            x_dim=16, z_dim=3, hidden=[8], likelihood=lik, gaussian_variance="fixed"
        ).double()
        init_decoder_bias(model, X)
        with torch.no_grad():
            model.decoder.body[-1].weight.zero_()  # only the bias remains
            mean = model.decode(torch.zeros(1, 3, dtype=torch.float64))[0]
        torch.testing.assert_close(mean, X.mean(0), rtol=1e-12, atol=1e-12)


def test_prior_draws_and_interpolations_check_their_count_first():
    from latentfit.errors import ParameterError, ResourceLimitError

    model = build_model(x_dim=16, z_dim=3, hidden=[8])
    x = torch.rand(16)
    with pytest.raises(ParameterError, match=r"^n must be an integer"):
        sample_images(model, 2.5)
    with pytest.raises(ResourceLimitError, match=r"n=100,000,000,000 draws of 27 values"):
        sample_images(model, 10**11)
    with pytest.raises(ResourceLimitError, match="n_steps=100,000,000,000"):
        interpolate(model, x, x, n_steps=10**11)
    assert interpolate(model, x, x, n_steps=3).shape == (3, 16)
