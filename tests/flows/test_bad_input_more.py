"""Bad input to flows and DDPMs: refused with a LatentfitError before any work, never a raw
torch error, a NaN model reported as fitted, or NaN draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentfit.diffusion import DDPM
from latentfit.errors import DataError, LatentfitError, ParameterError, ResourceLimitError
from latentfit.flows import MAF, NeuralSplineFlow, RealNVP
from latentfit.flows.objectives import dequantize, logit_transform

X = np.random.default_rng(0).normal(size=(30, 2))
LEVELS = np.random.default_rng(0).integers(0, 256, size=(20, 2)).astype(float)


@pytest.mark.parametrize("cls", [MAF, RealNVP, NeuralSplineFlow])
def test_a_huge_hidden_width_is_refused_before_allocating(cls):
    with pytest.raises(ResourceLimitError, match="hidden=100000000000"):
        cls(hidden=10**11, n_layers=1, epochs=1).fit(X)


def test_a_huge_ddpm_width_is_refused_before_allocating():
    with pytest.raises(ResourceLimitError, match="hidden=100000000000"):
        DDPM(10, hidden=10**11, discrete=False, epochs=1).fit(X)


def test_a_diverging_flow_is_not_returned_as_fitted():
    model = MAF(hidden=8, n_layers=1, epochs=3, lr=1e10, patience=None, random_state=0)
    with pytest.raises(ParameterError, match=r"diverged.*learning rate"):
        model.fit(X)
    assert not hasattr(model, "module_")


def test_a_diverging_ddpm_is_not_returned_as_fitted():
    model = DDPM(10, hidden=8, discrete=False, epochs=2, lr=1e10, patience=None, random_state=0)
    with pytest.raises(ParameterError, match="diverged"):
        model.fit(X)


def test_nan_weights_give_no_draws():
    model = MAF(hidden=8, n_layers=1, epochs=1, random_state=0).fit(X)
    with torch.no_grad():
        next(model.module_.parameters()).fill_(float("nan"))
    with pytest.raises(ParameterError, match="non-finite"):
        model.sample(3, random_state=0)


def test_dequantize_and_logit_refuse_bad_settings():
    with pytest.raises(ParameterError, match="n_levels"):
        dequantize(torch.zeros(2, 2), 0)
    with pytest.raises(ParameterError, match="alpha"):
        logit_transform(torch.zeros(2, 2), 1.0)
    with pytest.raises(ParameterError, match="alpha"):
        logit_transform(torch.zeros(2, 2), float("nan"))


@pytest.mark.parametrize("bound", [-1.0, 0.0, float("nan"), float("inf")])
def test_spline_tail_bound_must_be_finite_and_positive(bound):
    with pytest.raises(ParameterError, match="tail_bound"):
        NeuralSplineFlow(tail_bound=bound, n_layers=1, hidden=4, epochs=1).fit(X)


def test_more_levels_than_the_dtype_tells_apart_are_refused():
    with pytest.raises(ParameterError, match="n_levels"):
        MAF(dequantize=True, n_levels=10**14, epochs=1).fit(LEVELS)
    with pytest.raises(ParameterError, match="n_levels"):
        DDPM(10, n_levels=10**14, epochs=1).fit(LEVELS)


def test_errors_are_latentfit_errors():
    assert issubclass(ResourceLimitError, LatentfitError)
    assert issubclass(ParameterError, LatentfitError)


def test_a_value_beyond_float32_is_said_as_overflow_not_as_inf():
    from latentfit._validation import as_float_tensor
    from latentfit.errors import DataError

    for allow_nan in (False, True):
        with pytest.raises(DataError, match=r"holds 1e\+300 at row 1, column 0, beyond the range"):
            as_float_tensor([[0.0, 1.0], [1e300, 1.0]], dtype=torch.float32, allow_nan=allow_nan)
    with pytest.raises(DataError, match="contains inf at row 0"):
        as_float_tensor([[float("inf"), 1.0]], dtype=torch.float32)
    # the flow estimators compute in float32 by default and take dtype=: the API offers it
    huge = [[1e300, 0.0], [0.0, 1.0], [1.0, 1.0]] * 4
    for model in (MAF(hidden=4, n_layers=1, epochs=1), DDPM(10, hidden=4, epochs=1)):
        with pytest.raises(
            DataError, match=r"float32 .* standardise the columns\) or use dtype=float64$"
        ):
            model.fit(huge)
    # a caller without a dtype to choose (the command line, a fixed float32) offers only rescaling
    with pytest.raises(DataError, match=r"standardise the columns\)$"):
        as_float_tensor(huge, dtype=torch.float32, float64_option=None)
    with pytest.raises(DataError, match=r"standardise the columns\) or use --float64$"):
        as_float_tensor(huge, dtype=torch.float32, float64_option="--float64")


def test_float64_data_near_1e300_are_standardised_to_finite_moments():
    # found by the property tests: DDPM stored scale_ = inf (x.std squared 1e300) and scored
    # every row -inf after a fit that raised nothing; MAF's standardisation did the same
    X = np.array([[1e300, 1.0], [0.0929817323, 2.0]] * 4)
    for model in (
        MAF(n_layers=1, hidden=8, n_hidden=1, epochs=1, dtype="float64"),
        DDPM(5, hidden=8, n_hidden=1, epochs=1, discrete=False, dtype="float64"),
    ):
        model.fit(X)
        assert np.isfinite(model.score(X))
    assert float(model.scale_[0]) == pytest.approx(np.std(X[:, 0] / 1e300, ddof=1) * 1e300)


def test_sampling_in_chunks_of_rows_gives_the_same_draws():
    # found by hand (a helper's hunt): density sample -n 5000000 pushed all rows through the
    # network at once (10 GB of activations at 512 units), past the draws' own memory check;
    # the estimators now sample in chunks of rows, which must not change a draw
    X = np.random.default_rng(0).normal(size=(40, 2))
    for model in (
        MAF(n_layers=2, hidden=8, n_hidden=1, epochs=1, dtype="float64"),
        DDPM(5, hidden=8, n_hidden=1, epochs=1, discrete=False, dtype="float64"),
    ):
        module = model.fit(X).module_
        whole = module.sample(50, torch.Generator().manual_seed(3))
        chunked = module.sample(50, torch.Generator().manual_seed(3), chunk_rows=7)
        assert torch.allclose(whole, chunked, rtol=1e-12, atol=1e-12)


def test_a_constant_column_is_warned_of_before_the_likelihood_climbs_without_bound():
    # found by hand: a CSV whose first column was all 1 trained to 7.6 nats a row and rising
    X = np.c_[np.ones(40), np.random.default_rng(0).normal(size=40)]
    with pytest.warns(RuntimeWarning, match=r"column\(s\) 0 \(1\) hold one value in every row"):
        MAF(epochs=1, hidden=8, random_state=0).fit(X)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        MAF(epochs=1, hidden=8, random_state=0).fit(
            X + np.random.default_rng(1).normal(size=X.shape)
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: MAF(hidden=4, n_layers=1, epochs=1, random_state=0, **kw),
        lambda **kw: DDPM(5, hidden=4, n_hidden=1, discrete=False, epochs=1, random_state=0, **kw),
    ],
)
def test_one_row_cannot_be_split_into_training_and_validation_rows(make):
    with pytest.raises(DataError, match=r"1 row.*validation_fraction=0"):
        make().fit(X[:1])
    make(validation_fraction=0).fit(X[:1])  # no held-out rows: the one row trains


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: MAF(hidden=4, n_layers=1, epochs=1, random_state=0, **kw),
        lambda **kw: DDPM(5, hidden=4, n_hidden=1, discrete=False, epochs=1, random_state=0, **kw),
    ],
)
def test_a_large_validation_fraction_leaves_a_training_row(make):
    model = make(validation_fraction=0.9).fit(X[:2])
    assert len(model.history_) == 1


def test_numpy_scalars_are_taken_as_training_settings():
    settings = dict(epochs=np.int64(1), batch_size=np.int64(10), lr=np.float32(1e-3))
    model = MAF(hidden=4, n_layers=1, random_state=0, **settings).fit(X)
    assert len(model.history_) == 1


@pytest.mark.parametrize("n_samples", [0, -1, 2.5, None, True])
def test_dequantisation_draws_must_be_a_positive_count(n_samples):
    model = MAF(hidden=4, n_layers=1, epochs=1, dequantize=True, random_state=0).fit(LEVELS)
    with pytest.raises(ParameterError, match="n_samples must be an integer >= 1"):
        model.score_samples(LEVELS, n_samples=n_samples)
    with pytest.raises(ParameterError, match="n_samples"):
        model.bits_per_dim(LEVELS, n_samples=n_samples)


def test_the_dequantisation_bound_with_several_draws_is_their_log_mean_exp():
    model = MAF(hidden=4, n_layers=1, epochs=1, dequantize=True, random_state=0).fit(LEVELS)
    gen = torch.Generator().manual_seed(3)
    x = torch.as_tensor(LEVELS, dtype=torch.float32)
    with torch.no_grad():
        draws = torch.stack([model.module_(x, gen) for _ in range(4)]).double()  # (4, n)
    expected = torch.logsumexp(draws, 0) - np.log(4)
    got = model.score_samples(LEVELS, n_samples=4, random_state=3)
    # summed in float64, given in the float32 model's dtype: one rounding, within one ulp
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected.numpy(), rtol=2.0**-23)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_ddpm_bound_batch_size_must_be_a_positive_count(batch_size):
    model = DDPM(5, hidden=4, n_hidden=1, discrete=False, epochs=1, random_state=0).fit(X)
    with pytest.raises(ParameterError, match="batch_size must be an integer >= 1"):
        model.bound_terms(X, batch_size=batch_size)


def test_a_column_below_float32s_range_is_said_not_read_as_zeros():
    # found by a helper's hunt: data of 1e-300 fitted in float32 became zeros, and the only
    # word was a misleading "constant column (0)" warning
    from latentfit._validation import as_float_tensor

    tiny = np.random.default_rng(0).normal(size=(12, 2)) * [1.0, 1e-300]
    with pytest.raises(DataError, match=r"column 1 holds values no larger than .*e-300"):
        as_float_tensor(tiny, dtype=torch.float32)
    with pytest.raises(DataError, match=r"float32 .* or use dtype=float64$"):
        MAF(hidden=4, n_layers=1, epochs=1).fit(tiny)
    # float64 holds them; one tiny value beside ordinary ones is not read as 0 either, but
    # named (tests/test_float32_law.py)
    assert as_float_tensor(tiny).abs()[:, 1].min() > 0
    ok = np.ones((3, 2))
    ok[0, 0] = 1e-300
    with pytest.raises(DataError, match=r"1e-300 at row 0, column 0, below the smallest"):
        as_float_tensor(ok, dtype=torch.float32)


def test_whole_numbers_with_ties_are_warned_of_as_discrete_data():
    """Codes 0..4 fitted as continuous data: the density narrows onto the five values, and
    log p(x) climbs past what any distribution of discrete data can give; warned, while the
    same codes spread over their bins, whole numbers without ties and the codes with
    dequantize=True are not."""
    import warnings

    codes = np.random.default_rng(0).integers(0, 5, (300, 3)).astype(float)
    fit = {"n_layers": 1, "hidden": 8, "epochs": 1, "random_state": 0}
    words = r"only whole numbers, and column 0 only 5 distinct values \(0\.\.4\) in 300 rows"
    with pytest.warns(RuntimeWarning, match=words + r".*pass dequantize=True"):
        MAF(**fit).fit(codes)
    spread = codes + np.random.default_rng(1).uniform(size=codes.shape)
    distinct = np.stack([np.random.default_rng(j).permutation(300) for j in range(3)], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        MAF(**fit).fit(spread)
        MAF(**fit).fit(distinct.astype(float))
        MAF(dequantize=True, n_levels=5, **fit).fit(codes)
