"""select_model's arguments: refused before any fit, and a sweep of which no fit could even
start (every candidate refused its settings or the data) raises the model's own error."""

from __future__ import annotations

import numpy as np
import pytest

from latentfit import GaussianMixture, select_model
from latentfit.errors import ArgumentError, DataError, ParameterError

X = np.random.default_rng(0).normal(size=(100, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"covariance_types": "full"}, "covariance_types must be a list, got str 'full'"),
        ({"n_components": "3"}, "n_components must be a list, got str '3'"),
        ({"n_components": 3}, r"n_components must be a list, got int 3; e.g. n_components=\[3\]"),
        ({"n_components": [-1]}, "n_components must hold integers >= 1, got -1"),
        ({"n_components": [1.5]}, "n_components must hold integers >= 1, got 1.5"),
        ({"n_components": [True]}, "n_components must hold integers >= 1, got True"),
        ({"n_components": range(1, 10**12)}, "names 999,999,999,999 sizes; sweep at most 1000"),
        ({"n_components": range(1, 10**20)}, "names over 2\\*\\*63 sizes; sweep at most 1000"),
        ({"covariance_types": [1]}, "covariance_types must hold names"),
        ({"foo": 1}, "GaussianMixture.*unexpected keyword argument 'foo'"),
        ({"candidates": [1, 2]}, "candidates must hold unfitted estimators"),
        ({"candidates": GaussianMixture(2)}, "candidates must be a list"),
        ({"candidates": [(5, GaussianMixture(2))]}, "label must be a string"),
        ({"callback": 5}, "callback must be callable"),
    ],
)
def test_bad_arguments_are_refused_before_any_fit(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        select_model(X, **kwargs)


@pytest.mark.parametrize(
    "data, kwargs, error, match",
    [
        (X, {"max_iter": -1}, ParameterError, "max_iter"),
        (X, {"random_state": "x"}, ParameterError, "random_state"),
        (X, {"covariance_types": ["fulll"]}, ParameterError, "covariance_type"),
        (np.r_[X, [[np.nan, 0.0]]], {}, DataError, "NaN at row 100"),
        (X[:1], {}, DataError, "at least 2 samples"),
        (-np.ones((20, 2)), {"family": "poisson"}, DataError, "non-negative"),
    ],
    ids=["max_iter", "random_state", "covariance_type", "nan", "one-row", "poisson"],
)
def test_a_sweep_whose_every_fit_is_refused_raises_the_error(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        select_model(data, n_components=[1, 2], **kwargs)


def test_a_sweep_whose_every_fit_is_too_large_raises_the_size_error():
    # found by a helper's hunt: each fit refused its size, and select_model returned a
    # table of failures instead of the error the model gives on its own
    from latentfit import LinearGaussianSSM
    from latentfit.errors import ResourceLimitError

    with pytest.raises(ResourceLimitError, match="state dim"):
        select_model(X, family=LinearGaussianSSM, n_components=[10**6])


def test_a_sweep_with_some_failed_fits_is_still_a_result():
    # K=7 on 6 rows fails, K=1..2 fit: the failures are rows of the table, not an error
    data = np.random.default_rng(1).normal(size=(6, 1))
    result = select_model(data, n_components=[1, 2, 7], covariance_types=["diag"])
    errors = [r["error"] for r in result.rows]
    assert errors[:2] == [None, None] and errors[2] is not None


def test_sizes_from_a_generator_and_a_range_are_swept():
    a = select_model(X, n_components=(k for k in (1, 2)), covariance_types=["diag"])
    b = select_model(X, n_components=range(1, 3), covariance_types=["diag"])
    assert [r["label"] for r in a.rows] == [r["label"] for r in b.rows] == ["diag K=1", "diag K=2"]
    assert [r["bic"] for r in a.rows] == [r["bic"] for r in b.rows]


def test_cv_takes_a_numpy_integer_and_refuses_a_bool():
    # Before, cv=np.int64(3) was refused as "cv must be an integer >= 2 (number of folds)",
    # though n_components and every other count of the package take numpy integers.
    kwargs = {"n_components": [1], "covariance_types": ["diag"], "max_iter": 5}
    a = select_model(X, cv=np.int64(3), **kwargs)
    b = select_model(X, cv=3, **kwargs)
    assert a.rows[0]["cv_loglik"] == b.rows[0]["cv_loglik"]
    with pytest.raises(ParameterError, match="cv must be an integer >= 2"):
        select_model(X, cv=True, **kwargs)


def test_icl_is_refused_for_a_model_without_classes():
    # found by the property tests: `select fa --criterion icl` fitted every size, found every
    # ICL NA (a factor model has no assignments) and said "every fit failed"
    X = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ParameterError, match=r"criterion='icl' needs a model of discrete.*bic"):
        select_model(X, family="fa", n_components=[1, 2], criterion="icl")
    assert select_model(X, family="fa", n_components=[1], criterion="bic").best_model_ is not None


@pytest.mark.parametrize(
    ("second", "what"),
    [
        ([GaussianMixture(2)], r"models \(GaussianMixture\(n_components=2\)\)"),
        ([("two", GaussianMixture(2))], r"models \(.*\)"),
        ("gmm", r"a family \('gmm'\)"),
        (GaussianMixture, r"a family \(<class .*GaussianMixture.>\)"),
    ],
)
def test_models_given_as_the_second_argument_say_where_they_go(second, what):
    # select_model(X, [GaussianMixture(2), ...]) put the models in lengths, the second
    # argument, and was refused as lengths "of dtype object".
    with pytest.raises(
        ArgumentError, match=f"select_model\\(\\) got {what} as its second argument"
    ):
        select_model(X, second)
    with pytest.raises(TypeError, match=r"candidates=\[\.\.\.\], e\.g\. select_model\(X, cand"):
        select_model(X, second)
    best = select_model(X, candidates=[GaussianMixture(1), GaussianMixture(2)]).best_row_
    assert best["error"] is None  # given by keyword, as the message says: fitted
