"""Bad input to VAE pieces: settings, specs too large to build, data outside the
likelihood's support, and training that diverges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentfit.errors import DataError, ParameterError, ResourceLimitError
from latentfit.train import TrainConfig, train
from latentfit.vae import BetaVAE, CyclicalWarmup, ModelSpec, build_model, marginal_log_likelihood
from latentfit.vae.objectives import ELBO
from latentfit.vae.schedules import LinearWarmup, free_bits_kl


@pytest.mark.parametrize("floor", [-1.0, math.nan, math.inf, 1e308])
def test_free_bits_floor_is_checked(floor):
    with pytest.raises(ParameterError, match="floor"):
        free_bits_kl(torch.ones(3, 2), floor)
    with pytest.raises(ParameterError, match="free_bits"):
        ELBO(free_bits=floor)


@pytest.mark.parametrize("beta", [math.nan, math.inf, -1.0])
def test_beta_must_be_finite_and_non_negative(beta):
    with pytest.raises(ParameterError, match="beta"):
        BetaVAE(beta=beta)


def test_schedules_refuse_nan():
    with pytest.raises(ParameterError):
        CyclicalWarmup(math.nan)
    with pytest.raises(ParameterError):
        CyclicalWarmup(10, ratio=math.nan)
    with pytest.raises(ParameterError):
        LinearWarmup(math.nan)


@pytest.mark.parametrize(
    "spec", [dict(z_dim=2 * 10**9, hidden=[8]), dict(z_dim=2, hidden=[2 * 10**9])]
)
def test_a_spec_too_large_is_refused_before_allocating(spec):
    with pytest.raises(ResourceLimitError, match="hidden"):
        build_model(ModelSpec(x_dim=4, **spec))


def _model():
    return build_model(ModelSpec(x_dim=4, z_dim=2, hidden=[8]))


@pytest.mark.parametrize("value", [255.0, -1.0])
def test_bernoulli_scores_refuse_data_outside_0_1(value):
    X = torch.full((3, 4), 0.5)
    X[1, 2] = value
    with pytest.raises(DataError, match=r"row 1, column 2.*Bernoulli"):
        marginal_log_likelihood(_model(), X, k=2)


def test_categorical_scores_read_floats_as_intensities_and_integers_as_levels():
    model = build_model(
        ModelSpec(x_dim=4, z_dim=2, hidden=[8], likelihood="categorical", n_levels=256)
    )
    # float pixels of 0..255 would be read as intensities and rounded to levels up to 65,025
    with pytest.raises(DataError, match=r"row 0, column 1.*intensities in \[0, 1\]"):
        marginal_log_likelihood(model, torch.tensor([[0.0, 255.0, 3.0, 1.0]] * 2), k=2)
    likelihood = model.decoder.likelihood  # integer levels, as levels() reads them
    with pytest.raises(DataError, match=r"level 256 at row 0, column 1.*integer levels 0..255"):
        likelihood.check_data(torch.tensor([[0, 256, 3, 1]]))
    likelihood.check_data(torch.tensor([[0, 255, 3, 1]]))
    # 0.6 is the level 153 of 256 (0.5 lies between two and is refused)
    assert marginal_log_likelihood(model, torch.full((2, 4), 0.6), k=2).log_px.shape == (2,)


def test_bernoulli_training_refuses_data_outside_0_1():
    cfg = TrainConfig(epochs=1, batch_size=3, diagnostics=False, progress=False)
    with pytest.raises(DataError, match="Bernoulli"):
        train(_model(), ELBO(), torch.full((3, 4), 255.0), None, cfg)


def test_training_that_never_takes_a_finite_step_raises():
    X = torch.rand(6, 4)
    cfg = TrainConfig(epochs=2, batch_size=3, diagnostics=False, progress=False, patience=None)
    with pytest.raises(ParameterError, match=r"diverged.*beta"):
        train(_model(), BetaVAE(beta=1e308), X, None, cfg)


def test_an_occasional_skipped_step_is_still_allowed():
    X = torch.rand(6, 4)
    calls = {"n": 0}
    obj = ELBO()

    def flaky(model, x, generator=None, kl_weight=1.0):
        out = obj(model, x, generator, kl_weight)
        calls["n"] += 1
        if calls["n"] == 1:  # the first step only: skipped, the next ones train
            return out._replace(loss=out.loss * math.nan)
        return out

    cfg = TrainConfig(epochs=1, batch_size=2, diagnostics=False, progress=False, patience=None)
    res = train(_model(), flaky, X, None, cfg)
    assert res.n_skipped == 1 and res.steps == 3


@pytest.mark.parametrize(
    "settings, match",
    [
        (
            {"flow": "planar", "flow_steps": 1001},
            r"flow_steps=1001 \(must be an integer in \[1, 1000\]\)",
        ),
        ({"flow": "planar", "flow_steps": 10**6}, r"flow_steps=1000000"),
        ({"hidden": [2] * 65}, r"hidden=.*1 to 64 positive layer sizes"),
        ({"likelihood": "categorical", "n_levels": 10**5}, r"n_levels=100000"),
        ({"kind": "discrete", "straight_through": "no"}, r"straight_through='no' \(must be true"),
        ({"seed": 1.5}, r"seed=1.5"),
        ({"seed": 2**70}, r"seed=1180591620717411303424"),
        ({"bogus": 1}, r"unknown setting\(s\) \['bogus'\]"),
    ],
)
def test_build_model_refuses_what_load_model_would(settings, match):
    # found by hand: build_model took specs that save_model wrote and load_model refused
    # (and flow_steps=10**6 built for more than ten minutes; straight_through="no" meant on)
    with pytest.raises(ParameterError, match=match):
        build_model(**{"x_dim": 12, "z_dim": 3, "hidden": [8], **settings})


def test_a_spec_of_numpy_integers_and_tuples_saves_and_loads(tmp_path):
    from latentfit.vae import load_model, save_model

    model = build_model(x_dim=np.int64(12), z_dim=3, hidden=(8,))
    save_model(model, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").spec == model.spec


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf, "a"])
def test_a_constant_kl_weight_outside_0_to_inf_is_refused(weight):
    # found by hand: -1 trained silently, rewarding a larger KL; NaN surfaced as "diverged"
    from latentfit.vae.schedules import ConstantKL

    with pytest.raises(ParameterError, match="weight must be a finite number >= 0"):
        ConstantKL(weight)


def test_marginal_log_likelihood_takes_a_seed_numpy_rows_and_float64_rows():
    # found by hand (a helper's hunt): generator=0 reached torch.randn (TypeError), numpy X
    # reached torch.isfinite (TypeError), float64 X on a float32 model reached mm (RuntimeError)
    model = build_model(x_dim=12, z_dim=3, hidden=[8])
    X = torch.rand(5, 12, generator=torch.Generator().manual_seed(0))
    a = marginal_log_likelihood(model, X, k=10, generator=0)
    for same in (X.numpy(), X.double()):
        assert torch.equal(
            torch.as_tensor(a[0]),
            torch.as_tensor(marginal_log_likelihood(model, same, k=10, generator=0)[0]),
        )
    with pytest.raises(ParameterError, match="generator must be None, an int seed"):
        marginal_log_likelihood(model, X, k=10, generator="a")


def _all_rows_functions():
    from latentfit.vae import (
        IWAE,
        active_units,
        diagnose,
        init_decoder_bias,
        kl_per_dimension,
        mutual_information,
    )
    from latentfit.vae.images import reconstruct

    return {
        "kl_per_dimension": kl_per_dimension,
        "active_units": active_units,
        "mutual_information": mutual_information,
        "diagnose": diagnose,
        "init_decoder_bias": init_decoder_bias,
        "reconstruct": reconstruct,
        "ELBO": lambda model, X: ELBO()(model, X),
        "IWAE": lambda model, X: IWAE(2)(model, X),
    }


@pytest.mark.parametrize("name", list(_all_rows_functions()))
def test_vae_functions_name_rows_with_the_wrong_columns(name):
    # found by a bug hunt: each raised torch's "mat1 and mat2 shapes cannot be multiplied
    # (5x3 and 4x8)"; init_decoder_bias "The size of tensor a (4) must match ..."
    fn = _all_rows_functions()[name]
    x = "x" if name in ("ELBO", "IWAE") else "X"
    with pytest.raises(
        DataError, match=rf"the model expects 4 columns, {x} has 3 \(shape \(5, 3\)\)"
    ):
        fn(_model(), torch.full((5, 3), 0.5))


@pytest.mark.parametrize("name", ["kl_per_dimension", "diagnose", "init_decoder_bias"])
def test_vae_functions_name_a_nan_and_leave_the_model_alone(name):
    # found by a bug hunt: init_decoder_bias took NaN rows and set a NaN decoder bias, so that
    # every later training step was skipped as non-finite ("training diverged")
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X = torch.full((5, 4), 0.5)
    X[1, 2] = math.nan
    with pytest.raises(DataError, match="non-finite value at row 1, column 2"):
        _all_rows_functions()[name](model, X)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_columns_are_told_for_a_model_built_by_hand():
    from torch import nn

    from latentfit.vae import VAE, kl_per_dimension
    from latentfit.vae.likelihoods import BernoulliLikelihood, input_columns
    from latentfit.vae.networks import Decoder, GaussianEncoder, mlp

    dec = Decoder(mlp([2, 8, 4], final_activation=False), BernoulliLikelihood())
    model = VAE(GaussianEncoder(mlp([4, 8]), 8, 2), dec)
    with pytest.raises(DataError, match="expects 4 columns, X has 3"):
        kl_per_dimension(model, torch.full((5, 3), 0.5))
    assert kl_per_dimension(model, torch.full((5, 4), 0.5)).shape == (2,)
    # a body it cannot read: no check, rather than a wrong one
    assert input_columns(VAE(GaussianEncoder(nn.Identity(), 4, 2), dec)) is None


@pytest.mark.parametrize("which", ["X_train", "X_val"])
def test_training_names_data_with_the_wrong_columns(which):
    # found by a bug hunt: RuntimeError "mat1 and mat2 shapes cannot be multiplied (3x3 and 4x8)"
    good, bad = torch.full((5, 4), 0.5), torch.full((5, 3), 0.5)
    data = (bad, None) if which == "X_train" else (good, bad)
    cfg = TrainConfig(epochs=1, batch_size=3, diagnostics=False, progress=False)
    with pytest.raises(DataError, match=rf"expects 4 columns, {which} has 3"):
        train(_model(), ELBO(), *data, cfg)


@pytest.mark.parametrize("threshold", [math.nan, math.inf, -0.01, "0.01", None])
def test_active_units_threshold_must_be_a_finite_variance(threshold):
    # found by a bug hunt: threshold=nan counted no unit active, without a word
    from latentfit.vae import active_units, diagnose

    X = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    for fn in (active_units, diagnose):
        with pytest.raises(ParameterError, match="threshold must be a finite number >= 0"):
            fn(_model(), X, threshold=threshold)
    assert active_units(_model(), X, threshold=0.0)[1].shape == (2,)


def test_diagnostics_check_batch_size_and_generator():
    from latentfit.vae import kl_per_dimension, mutual_information

    X = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ParameterError, match="batch_size must be an integer >= 1"):
        kl_per_dimension(_model(), X, batch_size=0)
    with pytest.raises(ParameterError, match="generator must be None, an int seed"):
        mutual_information(_model(), X, generator="a")
    assert mutual_information(_model(), X, generator=0) == mutual_information(
        _model(), X.numpy(), generator=0
    )


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda f: f(torch.empty(0)), DataError, r"x of shape \(0,\) holds no values"),
        (lambda f: f(torch.empty(0, 3)), DataError, r"holds no values along dim=0"),
        (lambda f: f(torch.tensor(1.0)), DataError, "0-D tensor"),
        (lambda f: f(torch.ones(3), 2), ParameterError, r"dim=2 is out of range.*-1 to 0"),
        (lambda f: f(torch.ones(3), 0.5), ParameterError, "dim must be an integer"),
        (lambda f: f([1.0, 2.0]), DataError, "must be a torch.Tensor"),
    ],
)
def test_log_mean_exp_names_what_it_cannot_average(call, error, needle):
    # found by a bug hunt: an empty tensor gave "ValueError: math domain error" (log 0)
    from latentfit.vae import log_mean_exp

    with pytest.raises(error, match=needle):
        call(log_mean_exp)


def test_iwae_bound_names_no_samples():
    from latentfit.vae import iwae_bound

    with pytest.raises(DataError, match=r"log_w of shape \(0, 3\) holds no log-weights"):
        iwae_bound(torch.empty(0, 3))
    with pytest.raises(DataError, match="log_w is a 0-D tensor"):
        iwae_bound(torch.tensor(0.5))  # was IndexError: tuple index out of range
    log_w = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(iwae_bound(log_w), torch.logsumexp(log_w, 0) - math.log(2))


@pytest.mark.parametrize(
    "kl, group_size, error, needle",
    [
        (torch.ones(3), 1, DataError, r"\(n, d_z\) tensor.*shape \(3,\).*unsqueeze\(0\)"),
        (torch.ones(3, 2, 2), 1, DataError, r"shape \(3, 2, 2\)"),
        (torch.ones(0, 2), 1, DataError, "holds no rows"),
        (torch.ones(3, 2), 1.5, ParameterError, "group_size must be an integer >= 1"),
        (torch.ones(3, 2), 3, ParameterError, "must divide the latent size 2"),
    ],
)
def test_free_bits_kl_names_a_bad_shape(kl, group_size, error, needle):
    # found by a bug hunt: a 1-d input gave "IndexError: tuple index out of range"
    with pytest.raises(error, match=needle):
        free_bits_kl(kl, 0.5, group_size)


@pytest.mark.parametrize("which", ["interpolate_a", "interpolate_b", "traverse"])
@pytest.mark.parametrize(
    "row, match",
    [
        (torch.full((3,), 0.5), r"the model expects 4 columns, {x} has 3 \(shape \(3,\)\)"),
        (torch.full((1, 5), 0.5), r"the model expects 4 columns, {x} has 5 \(shape \(1, 5\)\)"),
        (torch.full((2, 4), 0.5), r"{x} must be one row .* \(4,\) or \(1, 4\), got shape \(2, 4\)"),
        (torch.full((2, 2, 1), 0.5), r"got shape \(2, 2, 1\); flatten an image first"),
        (
            torch.tensor([0.5, math.nan, 0.5, 0.5]),
            "{x} holds a non-finite value at row 0, column 1",
        ),
        (torch.tensor([0.5, 255.0, 0.5, 0.5]), "{x} holds 255 at row 0, column 1.*Bernoulli"),
    ],
)
def test_interpolate_and_traverse_name_a_bad_row(which, row, match):
    # found by a bug hunt: a row of the wrong width reached the encoder as torch's "mat1 and
    # mat2 shapes cannot be multiplied (1x5 and 4x8)", two rows as torch.stack's "stack expects
    # each tensor to be equal size", and NaN or 255 (Bernoulli) rows were decoded silently
    from latentfit.vae.images import interpolate, traverse

    good = torch.full((4,), 0.5)
    call, x = {
        "interpolate_a": (lambda r: interpolate(_model(), r, good, 3), "x_a"),
        "interpolate_b": (lambda r: interpolate(_model(), good, r, 3), "x_b"),
        "traverse": (lambda r: traverse(_model(), r, [0]), "x"),
    }[which]
    with pytest.raises(DataError, match=match.format(x=x)):
        call(row)


def test_interpolate_and_traverse_take_a_row_as_d_or_1_by_d_numpy_or_float64():
    from latentfit.vae.images import interpolate, traverse

    model = _model()
    row = np.full(4, 0.5)
    same = interpolate(model, torch.full((4,), 0.5), torch.full((1, 4), 0.5), 3)
    torch.testing.assert_close(interpolate(model, row, row[None].tolist(), 3), same)
    assert same.shape == (3, 4)
    assert traverse(model, torch.full((1, 4), 0.5, dtype=torch.float64), 1).shape == (7, 4)
    assert traverse(model, row, torch.tensor([0, 1]), np.array([0.0, 1.0])).shape == (4, 4)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dims=[2]), r"dims must be .* integers from 0 to 1 \(the model has 2 latent"),
        (dict(dims="a"), "dims must be a non-empty list"),
        (dict(dims=[]), "dims must be a non-empty list"),
        (dict(dims=[True]), "dims must be a non-empty list"),
        (dict(dims=[0], values=[math.nan]), "values must be a non-empty 1-D sequence of finite"),
        (dict(dims=[0], values=[[1.0, 2.0]]), "values must be a non-empty 1-D sequence"),
        (dict(dims=[0], values="ab"), "values must be a non-empty 1-D sequence"),
        (dict(dims=[0], values=[]), "values must be a non-empty 1-D sequence"),
        (dict(dims=[0], generator="a"), "generator must be None, an int seed"),
    ],
)
def test_traverse_names_bad_dims_values_and_generator(kw, match):
    # found by a bug hunt: dims=[2] was torch's IndexError "index 2 is out of bounds", a string
    # "new(): invalid data type 'str'", a NaN value decoded silently
    from latentfit.vae.images import traverse

    with pytest.raises(ParameterError, match=match):
        traverse(_model(), torch.full((4,), 0.5), **kw)


def test_traverse_refuses_more_rows_than_memory_holds(monkeypatch):
    # 1 MB "available": 10 x 1000 rows of 14 values (latents, hidden, image) would need 3.6 MB
    # (the rows are sized as sample_images sizes its draws), so no machine's memory is at risk
    from latentfit.vae.images import traverse

    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**6)
    with pytest.raises(ResourceLimitError, match=r"len\(dims\) x len\(values\)=10,000 draws"):
        traverse(_model(), torch.full((4,), 0.5), [0] * 10, values=torch.zeros(1000))


def test_image_functions_take_a_seed_and_name_bad_grids():
    # found by a bug hunt: sample_images(generator=0) raised torch's "randn() received an
    # invalid combination of arguments", and image_grid numpy's "cannot reshape array of
    # size 15 into shape (2,2)"
    from latentfit.vae.images import image_grid, sample_images

    torch.testing.assert_close(sample_images(_model(), 3, 0), sample_images(_model(), 3, 0))
    with pytest.raises(DataError, match=r"images must be rows of 4 values .* got shape \(3, 5\)"):
        image_grid(np.full((3, 5), 0.5), (2, 2))
    with pytest.raises(DataError, match=r"images .*NaN at row 0, column 1"):
        image_grid(torch.tensor([[0.0, math.nan, 0.0, 0.0]]), (2, 2))
    with pytest.raises(ParameterError, match="nrow must be an integer >= 1"):
        image_grid(torch.full((3, 4), 0.5), (2, 2), nrow=0)
    with pytest.raises(ParameterError, match="image_shape must be"):
        image_grid(torch.full((3, 4), 0.5), 4)
    # rows, numpy rows and (n, h, w) images tile alike; ±inf are clipped to [0, 1]
    grid = image_grid(torch.full((3, 4), 0.5), (2, 2))
    np.testing.assert_array_equal(image_grid(np.full((3, 2, 2), 0.5), (2, 2)), grid)
    assert image_grid(torch.tensor([[0.0, math.inf, -math.inf, 0.0]]), (2, 2)).max() == 1.0
