"""The sources' own arguments and data follow the in-memory rules: sample weights as
check_sample_weight takes them (a number for every row, not all zero), rows read as
as_float_tensor reads them (ragged rows named, a float32 overflow said as such), sizes as
integers (numpy's included, bools refused)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from latentfit import GaussianMixture
from latentfit.em.sources.chunks import ArraySource, IterableSource, NpySource
from latentfit.errors import DataError, ParameterError

X = np.random.default_rng(0).normal(size=(100, 3))


def _fit(source, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(2, random_state=0, **kwargs).fit(source)


def test_a_number_as_sample_weight_weights_every_row():
    plain = _fit(ArraySource(X))
    for source in (ArraySource(X, sample_weight=2.0), IterableSource([(X, 2.0)])):
        np.testing.assert_allclose(_fit(source).means_, plain.means_, rtol=1e-10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ArraySource(X, sample_weight=np.zeros(100)),
        lambda: _fit(IterableSource([(X[:50], np.zeros(50)), (X[50:], np.zeros(50))])),
        lambda: _fit(IterableSource([(X, 0.0)])),
    ],
    ids=["array", "stream", "stream-number"],
)
def test_weights_that_sum_to_zero_are_said_so(make):
    with pytest.raises(DataError, match=r"sum(s)? to zero: at least one sample needs a positive"):
        make()


def test_zero_weights_in_some_blocks_are_fine():
    w = np.r_[np.zeros(50), np.ones(50)]
    ref = _fit(ArraySource(X, sample_weight=w))
    got = _fit(IterableSource([(X[:50], np.zeros(50)), (X[50:], np.ones(50))]))
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-10)


def test_npy_weights_that_sum_to_zero_are_said_so(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", np.zeros(100))
    with pytest.raises(DataError, match="sum to zero"):
        _fit(NpySource(tmp_path / "x.npy", sample_weight=tmp_path / "w.npy"))


def test_ragged_rows_are_a_data_error():
    with pytest.raises(DataError, match="rectangular array of numbers"):
        ArraySource([[1, 2], [3]])
    with pytest.raises(DataError, match=r"item 1 of the array stream.*rectangular"):
        _fit(IterableSource([X.tolist(), [[1.0, 2.0, 3.0], [4.0]]], n_features=3))


def test_a_pair_given_as_a_list_is_said_to_be_a_tuple():
    with pytest.raises(DataError, match=r"A pair \(X, sample_weight\) must be a tuple"):
        IterableSource([[X, np.ones(100)]])


def test_rows_given_as_lists_fit_as_arrays():
    np.testing.assert_allclose(
        _fit(IterableSource([X.tolist()])).means_, _fit(ArraySource(X)).means_, rtol=1e-10
    )


@pytest.mark.parametrize("n_features", [0, -1, "3", 2.0, True])
def test_iterable_source_checks_n_features(n_features):
    with pytest.raises(ParameterError, match="n_features must be an integer >= 1"):
        IterableSource([X], n_features=n_features)


def test_sizes_take_numpy_integers_and_refuse_bools():
    source = ArraySource(X, chunk_rows=np.int64(10), init_rows=np.int32(50))
    assert source.chunk_rows == 10 and type(source.chunk_rows) is int
    assert IterableSource([X], n_features=np.int64(3)).n_features == 3
    for bad in (True, 0, 2.5, "10"):
        with pytest.raises(ParameterError, match="chunk_rows must be an integer >= 1"):
            ArraySource(X, chunk_rows=bad)


def test_a_float32_overflow_is_said_as_such_with_its_row():
    data = np.r_[X, X]
    data[150, 1] = 1e39
    with pytest.raises(DataError, match=r"holds 1e\+39 at row 150, column 1, beyond the range"):
        _fit(ArraySource(data, chunk_rows=64), dtype="float32")
    with pytest.raises(DataError, match="contains inf at row 150, column 1"):
        data[150, 1] = np.inf
        _fit(ArraySource(data, chunk_rows=64), dtype="float32")


def test_a_tensor_source_reads_as_before():
    got = _fit(ArraySource(torch.as_tensor(X), sample_weight=torch.ones(100)))
    np.testing.assert_allclose(got.means_, _fit(ArraySource(X)).means_, rtol=1e-10)
