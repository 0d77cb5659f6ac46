"""Settings and samples the EM estimators refuse with an error that names them, found by
probing the public API: counts that would size a history or a model beyond the machine, seeds
and chunk sizes torch cannot take, priors and parameter letters that mean nothing, samples
whose density overflows; and empty count rows, which a multinomial mixture fits."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from latentfit import (
    GMMHMM,
    BernoulliMixture,
    GaussianHMM,
    GaussianMixture,
    MultinomialMixture,
    PoissonMixture,
    select_model,
)
from latentfit.errors import DataError, ParameterError, ResourceLimitError

X = np.random.default_rng(0).normal(size=(60, 2))


@pytest.mark.parametrize(
    "est, named",
    [
        (GaussianMixture(2, n_init=10**12), "n_init"),
        (GaussianHMM(2, n_init=10**12), "n_init"),
        (GaussianMixture(2, max_iter=10**13), "max_iter"),
        (GMMHMM(2, n_mix=10**12, n_iter=1), "n_mix"),
    ],
)
def test_counts_beyond_the_machine_are_refused_at_once(est, named):
    t0 = time.perf_counter()
    with pytest.raises(ResourceLimitError, match=named):
        est.fit(X)
    assert time.perf_counter() - t0 < 10


def test_a_sweep_over_sparse_category_codes_names_the_row_before_sizing_the_models():
    C = np.random.default_rng(1).integers(0, 3, size=(60, 2))
    C[5, 1] = 3_000_000
    with pytest.raises(DataError, match=r"row 5, column 1 .*3000000"):
        select_model(C, family="categorical", n_components=[1])


@pytest.mark.parametrize("seed", [2**70, -(2**64)])
def test_a_seed_torch_cannot_take_is_named(seed):
    with pytest.raises(ParameterError, match="random_state"):
        GaussianMixture(2, random_state=seed).fit(X)


@pytest.mark.parametrize("rows", [2.5, 0, -1, "8"])
def test_chunk_rows_must_be_a_positive_integer(rows):
    with pytest.raises(ParameterError, match="chunk_rows"):
        GaussianMixture(2, chunk_rows=rows).fit(X)


def test_a_sample_whose_density_overflows_is_named_not_scored_nan():
    gm = GaussianMixture(2, random_state=0).fit(X)
    far = np.vstack([X[:3], [[1e308, 1e308]]])
    for method in (gm.score_samples, gm.predict_proba, gm.predict, gm.score):
        with pytest.raises(DataError, match="row 3 of X"):
            method(far)
    assert np.isfinite(gm.score_samples([[1e150, -1e150]])).all()  # large, not overflowing


def test_a_sample_no_component_can_hold_has_no_component():
    gm = GaussianMixture(2, random_state=0).fit(X)
    far = [[0.0, 0.0], [1e200, 0.0]]  # a density that underflows to zero in every component
    assert gm.score_samples(far)[1] == -np.inf  # scored so: log 0
    for method in (gm.predict, gm.predict_proba):
        with pytest.raises(DataError, match="row 1 of X has zero density"):
            method(far)


@pytest.mark.parametrize(
    "setting",
    [
        {"startprob_prior": -1},
        {"transmat_prior": float("nan")},
        {"transmat_prior": np.full((2, 2), np.inf)},
        {"covars_prior": -1},
        {"means_weight": -5},
        {"means_prior": float("inf")},
        {"params": "xyz"},
        {"init_params": "stq"},
    ],
)
def test_hmm_priors_and_parameter_letters_are_checked(setting):
    name = next(iter(setting))
    with pytest.raises(ParameterError, match=name):
        GaussianHMM(2, n_iter=2, **setting).fit(X)


def test_gmmhmm_takes_its_own_letter_and_priors_are_checked_there_too():
    GMMHMM(2, n_mix=2, n_iter=2, params="stmcw", random_state=0).fit(X)
    # diag: covars_weight is the inverse-gamma scale (>= 0); covars_prior is its shape, whose
    # hmmlearn default is negative (-1.5), so -1.0 is a valid setting there
    with pytest.raises(ParameterError, match="covars_weight"):
        GMMHMM(2, n_mix=2, covars_weight=-1.0).fit(X)


@pytest.mark.parametrize("seed", range(6))
def test_a_multinomial_mixture_fits_count_rows_that_are_all_zero(seed):
    C = np.random.default_rng(seed).integers(0, 5, size=(20, 3))
    C[4] = 0  # an empty document: the same likelihood under every component
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MultinomialMixture(2, random_state=seed).fit(C)
    assert np.isfinite(model.probs_).all() and np.isfinite(model.score(C))


@pytest.mark.parametrize("value", [5, (1, 2, 3), "ab", (1.0, float("nan")), (float("inf"), 0.0)])
@pytest.mark.parametrize(
    ("cls", "name"), [(PoissonMixture, "rate_prior"), (BernoulliMixture, "mean_prior")]
)
def test_a_pair_prior_that_is_not_a_pair_of_finite_numbers_is_named(cls, name, value):
    """Not Python's "GammaPrior() argument after * must be an iterable" or "takes from 1 to
    3 positional arguments", and no inf shape reaching the fit."""
    C = np.random.default_rng(0).poisson(3, size=(30, 2)).astype(float)
    with pytest.raises(ParameterError, match=rf"^{name} must be a pair \(a, b\) of finite") as err:
        cls(2, **{name: value}).fit(C if cls is PoissonMixture else (C > 2).astype(float))
    assert "argument" not in str(err.value) and "Prior" not in str(err.value)


@pytest.mark.parametrize(
    ("cls", "name", "value", "why"),
    [
        (PoissonMixture, "rate_prior", (0.5, 1.0), "shape a must be >= 1"),
        (PoissonMixture, "rate_prior", (1.0, -1.0), "rate b must be >= 0"),
        (BernoulliMixture, "mean_prior", (1.0, 0.5), "b must be >= 1"),
    ],
)
def test_a_pair_prior_out_of_range_is_named_by_its_argument(cls, name, value, why):
    C = np.random.default_rng(0).poisson(3, size=(30, 2)).astype(float)
    with pytest.raises(ParameterError, match=rf"^{name}=\({value[0]}, {value[1]}\): .*{why}"):
        cls(2, **{name: value}).fit(C if cls is PoissonMixture else (C > 2).astype(float))
