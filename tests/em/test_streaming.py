"""Out-of-core EM: fitting a source read chunk by chunk equals fitting the array in memory.

The E-step statistics are sums, so a streamed fit differs from the in-memory one only in the
order of the additions: with the same chunk size it is identical, otherwise equal to float64
rounding (1e-10 relative after tens of iterations).
"""

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from latentfit import PPCA, FactorAnalysis, GaussianMixture
from latentfit.em.gaussian import PassOverflowCheck
from latentfit.em.sources.chunks import (
    ArraySource,
    IterableSource,
    NpySource,
    ParquetSource,
    open_source,
    shard_range,
)
from latentfit.errors import (
    DataError,
    DegenerateComponentWarning,
    HeywoodCaseWarning,
    ParameterError,
    VarianceFloorWarning,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [
            rng.normal(size=(400, 3)),
            rng.normal(size=(300, 3)) * 0.5 + 3,
            rng.normal(size=(301, 3)) - 3,
        ]
    )
    rng.shuffle(X)
    return X, rng.uniform(0.2, 3.0, size=len(X))


def _assert_same_fit(a, b, rtol=1e-10):
    assert a.n_iter_ == b.n_iter_
    for key in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_npy_memmap_fit_equals_in_memory(tmp_path, data, ct):
    X, w = data
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", w)
    kw = dict(covariance_type=ct, random_state=0, tol=1e-8, chunk_rows=128)
    mem = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    src = NpySource(tmp_path / "x.npy", sample_weight=tmp_path / "w.npy")
    disk = GaussianMixture(3, **kw).fit(src)
    _assert_same_fit(mem, disk)
    # Same chunks, same order of additions: not a bit differs.
    np.testing.assert_array_equal(mem.means_, disk.means_)


def test_parquet_row_groups_equal_in_memory(tmp_path, data):
    X, w = data
    table = pa.table(
        {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "weight": w, "label": ["x"] * len(X)}
    )
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=137)
    src = ParquetSource(tmp_path / "x.parquet", columns=["a", "b", "c"], weight_column="weight")
    assert src.n_samples == len(X) and src.n_features == 3
    kw = dict(random_state=0, tol=1e-8, chunk_rows=100)
    mem = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    _assert_same_fit(mem, GaussianMixture(3, **kw).fit(src))
    with pytest.raises(ValueError, match="'label' has type string"):
        ParquetSource(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="no column 'z'"):
        ParquetSource(tmp_path / "x.parquet", columns=["z"])


def test_iterables_equal_in_memory(data):
    X, w = data
    mem = GaussianMixture(3, random_state=0, tol=1e-8).fit(X, sample_weight=w)

    def pairs():  # a fresh generator for every pass, with weights
        for i in range(0, len(X), 333):
            yield X[i : i + 333], w[i : i + 333]

    _assert_same_fit(mem, GaussianMixture(3, random_state=0, tol=1e-8).fit(IterableSource(pairs)))
    listed = IterableSource(
        [(torch.from_numpy(X[i : i + 250]), w[i : i + 250]) for i in range(0, len(X), 250)]
    )
    _assert_same_fit(mem, GaussianMixture(3, random_state=0, tol=1e-8).fit(listed))


def test_one_shot_iterator_refuses_a_second_pass(data):
    X, _ = data
    src = IterableSource(iter([X[:500], X[500:]]))
    with pytest.raises(ParameterError, match="pass a callable that returns a fresh iterator"):
        GaussianMixture(2, random_state=0).fit(src)


def test_fit_on_device_moves_chunks(data, device):
    X, w = data
    src = ArraySource(X, sample_weight=w, chunk_rows=200).configured(device=device, dtype="float32")
    chunks = list(src)
    assert len(chunks) == 6
    assert all(c.device.type == device and c.dtype == torch.float32 for c, _ in chunks)
    assert all(cw.device.type == device for _, cw in chunks)
    kw = dict(random_state=0, tol=1e-8)
    cpu = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    dev = GaussianMixture(3, device=device, **kw).fit(ArraySource(X, sample_weight=w))
    # On another device the GEMMs round differently; EM contracts, so 1e-7 is ample in float64.
    np.testing.assert_allclose(dev.means_, cpu.means_, rtol=1e-7, atol=1e-9)
    assert dev.fit_predict(ArraySource(X, sample_weight=w)).tolist() == cpu.predict(X).tolist()


def test_init_sample_is_uniform_and_reproducible(data):
    X, w = data
    src = ArraySource(X[:50], sample_weight=w[:50], chunk_rows=7, init_rows=10)
    gen = lambda seed: torch.Generator().manual_seed(seed)
    a, b = src.init_chunks(gen(1)), src.init_chunks(gen(1))
    assert a.X.shape == (10, 3) and torch.equal(a.X, b.X) and torch.equal(a.weights, b.weights)
    rows = [int(np.flatnonzero((X[:50] == r.numpy()).all(1))[0]) for r in a.X]
    assert rows == sorted(rows)  # kept in data order, with their weights
    np.testing.assert_array_equal(a.weights.numpy(), w[rows])
    counts = np.zeros(50)
    for seed in range(300):
        s = src.init_chunks(gen(seed)).X.numpy()
        counts += (X[:50, None, 0] == s[None, :, 0]).any(1)
    # Each row is kept with probability 10/50; 300 draws: sd 0.023, so ±0.12 is over 5 sd.
    assert np.abs(counts / 300 - 0.2).max() < 0.12
    # At most init_rows rows: the whole data set and no random draw.
    g = gen(3)
    full = ArraySource(X, init_rows=len(X)).init_chunks(g)
    assert torch.equal(full.X, torch.from_numpy(X)) and torch.equal(
        g.get_state(), gen(3).get_state()
    )


def test_fit_from_a_sample_initialisation_finds_the_same_optimum(tmp_path, data):
    X, _ = data
    np.save(tmp_path / "x.npy", X)
    mem = GaussianMixture(3, random_state=0, tol=1e-10).fit(X)
    disk = GaussianMixture(3, random_state=0, tol=1e-10).fit(
        NpySource(tmp_path / "x.npy", init_rows=200)
    )
    # Well separated clusters: started from k-means on 200 rows EM reaches the same maximum.
    assert disk.lower_bound_ == pytest.approx(mem.lower_bound_, rel=1e-8)
    order = lambda m: m[np.argsort(m[:, 0])]
    np.testing.assert_allclose(order(disk.means_), order(mem.means_), rtol=1e-5, atol=1e-6)


def test_bad_values_are_named_by_row_and_column(tmp_path, data):
    X, w = data
    bad = X.copy()
    bad[777, 2] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"bad.npy contains inf at row 777, column 2"):
        GaussianMixture(2).fit(NpySource(tmp_path / "bad.npy", chunk_rows=100))
    shard = NpySource(tmp_path / "bad.npy", chunk_rows=100).shard(1, 2)
    with pytest.raises(ValueError, match="row 777, column 2"):  # rows of the whole file
        list(shard)
    with pytest.raises(ValueError, match="every block must be \\(rows, 3\\)"):
        list(IterableSource([X[:10], X[:10, :2]]))
    neg = w.copy()
    neg[5] = -1
    with pytest.raises(ValueError, match="sample_weight must be non-negative; sample 5 has"):
        list(ArraySource(X, sample_weight=neg))  # the in-memory check, when the source is made
    with pytest.raises(ValueError, match="sample weight of row 5 is -1"):
        list(IterableSource([(X[:3], w[:3]), (X[3:10], neg[3:10])]))
    with pytest.raises(FileNotFoundError, match="no data file"):
        NpySource(tmp_path / "nothing.npy")
    with pytest.raises(ValueError, match="carries its own sample weights"):
        GaussianMixture(2).fit(ArraySource(X), sample_weight=w)
    with pytest.raises(ValueError, match="at least 3 are needed"):
        GaussianMixture(3).fit(ArraySource(X[:2]))
    with pytest.raises(ValueError, match="rank must lie in"):
        ArraySource(X).shard(2, 2)


def test_shards_partition_the_rows(tmp_path, data):
    X, _ = data
    np.save(tmp_path / "x.npy", X)
    pq.write_table(
        pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]}),
        tmp_path / "x.parquet",
        row_group_size=77,
    )
    blocks = [X[i : i + 100] for i in range(0, len(X), 100)]
    sources = [
        NpySource(tmp_path / "x.npy", chunk_rows=64),
        ParquetSource(tmp_path / "x.parquet", chunk_rows=64),
        ArraySource(X, chunk_rows=64),
    ]
    for src in sources:
        parts = [torch.cat([c for c, _ in src.shard(r, 3)]).numpy() for r in range(3)]
        assert [len(p) for p in parts] == [
            shard_range(len(X), r, 3)[1] - shard_range(len(X), r, 3)[0] for r in range(3)
        ]
        np.testing.assert_array_equal(np.concatenate(parts), X)
    # Without random access every third block goes to each process.
    parts = [
        torch.cat([c for c, _ in IterableSource(blocks).shard(r, 3)]).numpy() for r in range(3)
    ]
    np.testing.assert_array_equal(parts[1], np.concatenate(blocks[1::3]))


def test_progress_bar_per_pass(tmp_path, data, capsys):
    X, _ = data
    np.save(tmp_path / "x.npy", X)
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(2, random_state=0, max_iter=2).fit(
            NpySource(tmp_path / "x.npy", progress=True)
        )
    err = capsys.readouterr().err
    # One bar for the initialisation pass and one per E-step, each over the file's 1001 rows.
    assert err.count("| 0/1001 [") == 3 and err.count("pass over x.npy") >= 3


def test_open_source_by_suffix_and_warm_start(tmp_path, data):
    X, _ = data
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="a,b,c", comments="")
    np.save(tmp_path / "x.npy", X)
    assert isinstance(open_source(tmp_path / "x.npy"), NpySource)
    csv = open_source(tmp_path / "x.csv", columns=["a", "c"])
    assert csv.n_features == 2 and isinstance(csv, ArraySource)
    (tmp_path / "gap.csv").write_text("a,b\n1,2\n3,\n5,6\n")
    with pytest.raises(ValueError, match=r"gap\.csv contains nan at row 1, column 1"):
        list(open_source(tmp_path / "gap.csv"))
    assert torch.isnan(
        next(iter(open_source(tmp_path / "gap.csv").configured(allow_nan=True)))[0][1, 1]
    )
    gm = GaussianMixture(3, random_state=0, warm_start=True, max_iter=3, tol=0)
    with pytest.warns(ConvergenceWarning):
        gm.fit(open_source(tmp_path / "x.npy"))
        gm.fit(open_source(tmp_path / "x.npy"))
    ref = GaussianMixture(3, random_state=0, max_iter=6, tol=0)
    with pytest.warns(ConvergenceWarning):
        ref.fit(X)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-10)


def test_missing_values_stream_like_in_memory(tmp_path, data):
    X, _ = data
    Xm = X[:150].copy()
    Xm[::10, 1] = np.nan
    np.save(tmp_path / "xm.npy", Xm)
    kw = dict(random_state=0, max_iter=4, tol=0, missing="marginalize", chunk_rows=64)
    with pytest.warns(ConvergenceWarning):  # a fixed number of iterations is compared
        mem = GaussianMixture(2, **kw).fit(Xm)
        disk = GaussianMixture(2, **kw).fit(NpySource(tmp_path / "xm.npy"))
    _assert_same_fit(mem, disk)
    # Huge but finite values overflow the quick sum check and are still accepted.
    big = np.array([[1e308], [1e308], [-1e308]])
    assert torch.equal(next(iter(ArraySource(big)))[0], torch.from_numpy(big))


class _LabelledMeanHooks:
    """Hooks whose batches are (X, w, labels) and whose initialize takes a custom object, as
    the labelled mixtures' do: the weighted mean (no latent variable, EM converges at once)."""

    def initialize(self, data, generator):
        assert data[0] == "init"
        return {"mean": data[1].X.mean(0)}

    def estep(self, params, batch):
        X, w, labels = batch
        assert labels is None
        return {"S1": w @ X, "weight": w.sum()}

    def mstep(self, params, stats):
        return {"mean": stats["S1"] / stats["weight"]}

    def lower_bound(self, params, stats):
        return -float((params["mean"] - stats["S1"] / stats["weight"]).square().sum())


def test_prepare_stream_adapts_batches_for_other_hooks(data):
    from latentfit.em.driver import run_em
    from latentfit.em.sources.stream import prepare_stream

    X, w = data
    stream = prepare_stream(
        ArraySource(X, sample_weight=w, chunk_rows=100),
        _LabelledMeanHooks(),
        device="cpu",
        dtype=torch.float64,
        chunk_rows=None,
        batch=lambda X, w: (X, w, None),
        init_data=lambda chunks: ("init", chunks),
    )
    res = run_em(stream.hooks, stream.data, reduce=stream.reduce, max_iter=5, tol=1e-12)
    expected = (w @ X) / w.sum()
    np.testing.assert_allclose(res.params["mean"].numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (5, ParameterError, "data is int, not an iterable of arrays"),
        (lambda: 5, ParameterError, "what data\\(\\) returned is int"),
        (lambda: iter(["a"]), DataError, "must be an array \\(rows, d\\)"),
    ],
)
def test_an_array_stream_of_what_is_not_arrays_says_what_it_takes(data, error, match):
    # Python's TypeError ('int' object is not iterable) and IndexError used to reach the caller
    with pytest.raises(error, match=match):
        GaussianMixture(2, max_iter=2).fit(IterableSource(data))


@pytest.mark.parametrize("rows", [10, 200])
def test_a_float32_source_overflowing_over_its_blocks_is_refused_as_in_memory(tmp_path, rows):
    # 3e18 among small values: 10 rows of it square to 9e37, below float32's 3.4e38, but 200
    # do not; the source was checked block by block and fitted where the array is refused
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    X[150, 1] = 3e18
    np.save(tmp_path / "x.npy", X)
    said = r"column 1 of X spans 3e\+18 \(row 150 holds 3e\+18\).*overflow float32"
    with pytest.raises(DataError, match=said):
        GaussianMixture(2, dtype="float32").fit(X)
    for source in (
        NpySource(tmp_path / "x.npy", chunk_rows=rows),
        IterableSource([X[i : i + rows] for i in range(0, 200, rows)]),
    ):
        with pytest.raises(DataError, match=said):
            GaussianMixture(2, dtype="float32", random_state=0).fit(source)
    # the check is of one pass: 200 rows spanning 1e18 (2e38 in all) fit over many passes
    X[150, 1] = 1e18
    m = GaussianMixture(2, dtype="float32", random_state=0, max_iter=5, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed number of iterations
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the one far row
        m.fit(ArraySource(X, chunk_rows=rows))
    assert m.n_iter_ == 5


def test_a_float32_source_is_judged_for_overflow_by_its_weights_as_in_memory():
    # row 150 at 1e16 spans 1e32 squared: 200 rows weighted 1e6 (2e8 in all) sum to 2e40,
    # past float32's 3.4e38, which the array refuses; the source counted rows (2e34) and fitted
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    X[150, 1] = 1e16
    w = np.full(200, 1e6)
    said = r"column 1 of X spans 1e\+16 \(row 150 holds 1e\+16\).*overflow float32"
    with pytest.raises(DataError, match=said):
        GaussianMixture(2, dtype="float32", random_state=0).fit(X, sample_weight=w)
    for rows in (10, 200):
        source = ArraySource(X, sample_weight=w, chunk_rows=rows)
        with pytest.raises(DataError, match="^data: " + said):
            GaussianMixture(2, dtype="float32", random_state=0).fit(source)


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: GaussianMixture(1, dtype=dt, random_state=0),
        lambda dt: FactorAnalysis(1, dtype=dt, random_state=0),
        lambda dt: PPCA(1, dtype=dt, random_state=0),
    ],
)
def test_float32_sample_weights_summing_past_float32_are_refused_from_a_source(make):
    """Constant columns span 0, so no span overflows; the weights (1e37 a row, 4e39 in all)
    do, past float32's 3.4e38. The array is refused; the source failed with NaN ("non-finite
    weights" at the start, or "log-likelihood became nan"), naming reg_covar and scaling X.
    The advice holds: the weights divided by their maximum fit as float64 fits the 1e37s."""
    X = np.tile([2.0, 3.0, -1.0], (400, 1))
    w = np.full(400, 1e37)
    with pytest.raises(DataError, match=r"sample_weight sums to 4e\+39, which overflows float32"):
        make("float32").fit(X, sample_weight=w)
    said = r"data: sample_weight sums to 3\.5e\+38 by row 34, .*or use float64"
    with pytest.raises(DataError, match=said):
        make("float32").fit(ArraySource(X, sample_weight=w, chunk_rows=50))
    with warnings.catch_warnings():
        for floors in (HeywoodCaseWarning, VarianceFloorWarning):  # of constant columns
            warnings.simplefilter("ignore", floors)
        want = make("float64").fit(ArraySource(X, sample_weight=w, chunk_rows=50))
        got = make("float32").fit(ArraySource(X, sample_weight=w / w.max(), chunk_rows=50))
    mean = (lambda m: m.means_[0]) if hasattr(want, "means_") else (lambda m: m.mean_)
    np.testing.assert_array_equal(mean(want), [2.0, 3.0, -1.0])
    np.testing.assert_allclose(mean(got), mean(want), rtol=1e-6)


def test_sample_weights_overflowing_only_summed_over_the_processes_are_refused():
    """Each of two processes holds constant rows weighted 2e36 (2e38 apiece, below float32's
    3.4e38; no span to overflow): the M-step divides by the weights all-reduced, 4e38, which
    the pass's totals gathered over the processes took without a word."""
    X = torch.full((100, 2), 3.0)
    w = torch.full((100,), 2e36)
    shares = []
    for rank in range(2):
        check = PassOverflowCheck()
        check(X, w)  # one process alone is within float32
        shares.append(check.totals(100 * rank, 2))
    with pytest.raises(DataError, match=r"sums to 4e\+38 over the processes.*or use float64"):
        PassOverflowCheck().check_totals(torch.stack(shares), torch.float32)
    PassOverflowCheck().check_totals(torch.stack(shares), torch.float64)  # 4e38 is float64's
