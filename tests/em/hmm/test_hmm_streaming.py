"""Baum-Welch over a data source (out of core) and over processes (distributed).

The statistics are sums over whole sequences, so a streamed fit that starts where the
in-memory fit starts (a data set of at most ``init_rows`` rows is its own initialisation
sample) must follow the same path up to the rounding of a differently ordered sum: 1e-10
relative on the lower bounds, 1e-9 on the parameters (float64).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentfit import GMMHMM, CategoricalHMM, GaussianHMM, MultinomialHMM, PoissonHMM
from latentfit.em.hmm.sequences import SequenceSource, sequence_windows
from latentfit.em.sources.chunks import ArraySource, IterableSource, NpySource, ParquetSource
from latentfit.errors import DataError

LENGTHS = [37, 120, 5, 1, 80, 57]  # 300 rows; one sequence of a single step
WORKER = Path(__file__).with_name("dist_hmm_worker.py")


def _data(seed=0, n=300):
    """Three Gaussian regimes in blocks of rows, so that the sequences have state changes."""
    rng = np.random.default_rng(seed)
    m = n // 3
    return np.concatenate(
        [rng.normal(size=(m, 2)), rng.normal(size=(m, 2)) + 3, rng.normal(size=(n - 2 * m, 2)) - 2]
    )


def _model(ct, n_iter=25, **kw):
    return GaussianHMM(3, covariance_type=ct, random_state=0, n_iter=n_iter, tol=1e-12, **kw)


def _assert_same(a, b):
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-10)
    assert len(b.lower_bounds_) == len(a.lower_bounds_) > 5
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-12)


def _chunks(X, rows):
    return lambda: (X[i : i + rows] for i in range(0, len(X), rows))


@pytest.mark.parametrize("ct", ["diag", "full"])
def test_npy_and_iterable_sources_equal_in_memory(tmp_path, ct, device):
    X = _data()
    np.save(tmp_path / "x.npy", X)
    ref = _model(ct, device=device).fit(X, LENGTHS)
    # Chunks of 17 rows: sequences span chunks and chunks hold several sequences.
    npy = _model(ct, device=device).fit(NpySource(tmp_path / "x.npy", chunk_rows=17), LENGTHS)
    _assert_same(ref, npy)
    # An iterator whose blocks (23 rows) do not line up with the sequences either.
    it = _model(ct, device=device).fit(IterableSource(_chunks(X, 23), chunk_rows=29), LENGTHS)
    _assert_same(ref, it)


def test_parquet_source_equals_in_memory(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    X = _data(5)
    table = pa.table({"a": X[:, 0], "b": X[:, 1]})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=41)  # groups cut sequences
    ref = _model("diag").fit(X, LENGTHS)
    _assert_same(ref, _model("diag").fit(ParquetSource(tmp_path / "x.parquet"), LENGTHS))


def test_streamed_fit_starts_from_a_sample_of_large_data(tmp_path):
    """More rows than init_rows: the start is drawn from a sample, and the fit still climbs."""
    X = _data(1, 600)
    lengths = [150, 150, 300]
    m = _model("diag").fit(ArraySource(X, chunk_rows=50, init_rows=100), lengths)
    assert np.all(np.diff(m.lower_bounds_) > -1e-8)
    # The fitted model scores the data in memory as well as an in-memory fit does, roughly:
    # both find the three clusters (a loose bound, the starts differ).
    ref = _model("diag").fit(X, lengths)
    assert m.score(X, lengths) > ref.score(X, lengths) - 5.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # n_iter=15
def test_gmmhmm_streams_like_in_memory():
    X = _data(3)
    kw = dict(n_mix=2, covariance_type="diag", random_state=0, n_iter=15, tol=1e-12)
    ref = GMMHMM(2, **kw).fit(X, LENGTHS)
    got = GMMHMM(2, **kw).fit(IterableSource(_chunks(X, 31), chunk_rows=40), LENGTHS)
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    for name in ("weights_", "means_", "covars_", "transmat_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-12)


def test_poisson_hmm_streams_and_checks_counts(tmp_path):
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.poisson(2, size=(90, 2)), rng.poisson(9, size=(110, 2))]).astype(float)
    lengths = [60, 40, 100]
    ref = PoissonHMM(2, random_state=0, n_iter=20, tol=1e-12).fit(X, lengths)
    got = PoissonHMM(2, random_state=0, n_iter=20, tol=1e-12)
    got.fit(IterableSource(_chunks(X, 33)), lengths)
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(got.lambdas_, ref.lambdas_, rtol=1e-9)
    bad = X.copy()
    bad[150, 1] = 2.5
    with pytest.raises(ValueError, match="whole numbers"):
        PoissonHMM(2, random_state=0).fit(IterableSource(_chunks(bad, 33)), lengths)


def _symbols(seed=3):
    """Symbols 0..3 in three regimes of rows (symbol 4 never occurs), as floats (n, 1)."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.integers(0, 2, 100),
        rng.integers(2, 4, 120),
        rng.choice(4, 80, p=[0.7, 0.1, 0.1, 0.1]),
    ]
    return np.concatenate(parts).astype(float).reshape(-1, 1)


def _categorical(n_features=5, **kw):
    return CategoricalHMM(3, n_features=n_features, random_state=0, n_iter=25, tol=1e-12, **kw)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=1e-12
def test_categorical_hmm_streams_with_n_features(tmp_path, device):
    X = _symbols()
    np.save(tmp_path / "x.npy", X)
    # n_features=5 is more than the data shows (symbols 0..3): the streamed fit cannot read the
    # symbol count from the data, and must use the one given, as the in-memory fit does.
    ref = _categorical(device=device).fit(X.astype(np.int64), LENGTHS)
    assert ref.emissionprob_.shape == (3, 5)
    got_npy = _categorical(device=device).fit(NpySource(tmp_path / "x.npy", chunk_rows=17), LENGTHS)
    got_it = _categorical(device=device).fit(IterableSource(_chunks(X, 23), chunk_rows=29), LENGTHS)
    for got in (got_npy, got_it):
        assert len(got.lower_bounds_) == len(ref.lower_bounds_) == 25
        np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
        for name in ("emissionprob_", "transmat_", "startprob_"):
            np.testing.assert_allclose(
                getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-12
            )
        assert got.n_features_ == 5 and got.n_features == 5  # n_features stays the symbol count
    # A model fitted before on fewer symbols (n_features_ = 3) takes the n_features given now.
    again = CategoricalHMM(3, random_state=0, n_iter=25, tol=1e-12).fit([[0], [2], [1]])
    again.set_params(n_features=5, device=device).fit(NpySource(tmp_path / "x.npy"), LENGTHS)
    np.testing.assert_allclose(again.emissionprob_, ref.emissionprob_, rtol=1e-9, atol=1e-12)


def test_categorical_hmm_stream_errors(tmp_path):
    X = _symbols()
    bad = X.copy()
    bad[150, 0] = 4  # in the block of rows 132..164: the error names its row of the data
    msg = (
        r"the array stream: row 150 of X holds symbol 4 but the model emits symbols 0\.\.3 "
        r"\(n_features=4\)"
    )
    with pytest.raises(ValueError, match=msg):
        _categorical(4).fit(IterableSource(_chunks(bad, 33)), LENGTHS)
    bad[150, 0] = 2.5
    with pytest.raises(ValueError, match=r"symbols must be integers; row 150 of X holds 2\.5"):
        _categorical(4).fit(IterableSource(_chunks(bad, 33)), LENGTHS)
    bad[150, 0] = -1
    with pytest.raises(ValueError, match="non-negative; row 150 of X holds -1"):
        _categorical(4).fit(IterableSource(_chunks(bad, 33)), LENGTHS)
    with pytest.raises(ValueError, match="pass n_features=K"):
        CategoricalHMM(2).fit(ArraySource(X), LENGTHS)
    with pytest.raises(ValueError, match="has 2 columns; CategoricalHMM takes one column"):
        _categorical(4).fit(ArraySource(np.hstack([X, X])), LENGTHS)
    with pytest.raises(ValueError, match="n_features must be a positive integer"):
        _categorical(0).fit(ArraySource(X), LENGTHS)


def test_an_impossible_row_in_a_later_chunk_is_named_by_its_row_of_the_file(tmp_path):
    # Found by hand: a fit that keeps its emissions (params without "e") on a source named
    # the row a symbol of probability 0 sat in counted from the start of its group of
    # sequences: "row 3 of X (step 3 of sequence 0)" for row 13 of the file.
    X = np.zeros((20, 1))
    X[::2] = 1
    X[13] = 2  # in the third group of whole sequences (rows 10..14)
    np.save(tmp_path / "x.npy", X)

    def kept():
        m = CategoricalHMM(2, n_features=3, init_params="st", params="st", random_state=0)
        m.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])  # symbol 2: never
        return m

    msg = r"row 13 of X \(step 3 of sequence 2\) has zero probability under every state"
    for data in (X, NpySource(tmp_path / "x.npy", chunk_rows=5), ArraySource(X, chunk_rows=5)):
        with pytest.raises(ValueError, match=msg):
            kept().fit(data, [5, 5, 5, 5])
    with pytest.raises(ValueError, match=msg):  # in memory, in batches of whole sequences
        kept().fit(X, [5, 5, 5, 5], batch_steps=5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # n_iter=5
def test_bad_lengths_and_guards(tmp_path):
    X = _data()
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match=r"lengths sum to 299 but x\.npy has 300 rows"):
        _model("diag").fit(NpySource(tmp_path / "x.npy"), [*LENGTHS[:-1], 56])
    # An iterator does not know its size before a pass: the pass finds it out.
    with pytest.raises(ValueError, match="has 300 rows but lengths sum to 301"):
        _model("diag").fit(IterableSource(_chunks(X, 23)), [*LENGTHS[:-1], 58])
    with pytest.raises(ValueError, match="has 300 rows but lengths sum to 299"):
        _model("diag").fit(IterableSource(_chunks(X, 23)), [*LENGTHS[:-1], 56])
    with pytest.raises(ValueError, match="sequence 1 has 120 rows, more than max_rows_in_memory"):
        _model("diag").fit(NpySource(tmp_path / "x.npy"), LENGTHS, max_rows_in_memory=100)
    with pytest.raises(ValueError, match="needs lengths"):
        _model("diag").fit(IterableSource(_chunks(X, 23)))
    with pytest.raises(ValueError, match="sample weights"):
        _model("diag").fit(ArraySource(X, sample_weight=np.full(300, 2.0)), LENGTHS)
    bad = X.copy()
    bad[200, 1] = np.inf
    with pytest.raises(ValueError, match="row 200, column 1"):
        _model("diag").fit(ArraySource(bad, chunk_rows=40), LENGTHS)
    # A source without lengths is one sequence, as an array without lengths.
    one = _model("diag", n_iter=5).fit(NpySource(tmp_path / "x.npy", chunk_rows=40))
    np.testing.assert_allclose(
        one.lower_bounds_, _model("diag", n_iter=5).fit(X).lower_bounds_, rtol=1e-10
    )


def test_sequence_shards_are_whole_sequences():
    """Rank r reads the contiguous block of sequences shard_range(n_sequences, r, w)."""
    X = np.arange(300.0).reshape(-1, 1)
    seen = []
    for r in range(3):
        s0, s1, r0, r1 = sequence_windows(LENGTHS, r, 3)
        src = SequenceSource(ArraySource(X, chunk_rows=7), LENGTHS).shard(r, 3)
        assert src.lengths == LENGTHS[s0:s1]
        rows = np.concatenate([c.numpy() for c, _ in src]).ravel()
        np.testing.assert_array_equal(rows, np.arange(r0, r1))
        seen.append(rows)
    np.testing.assert_array_equal(np.concatenate(seen), X.ravel())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=1e-12
def test_two_processes_equal_one_process(tmp_path):
    X = _data()
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "lengths.npy", np.array(LENGTHS))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        str(WORKER), str(tmp_path), str(tmp_path / "x.npy"), str(tmp_path / "lengths.npy"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    for ct in ("diag", "full"):
        one = _model(ct).fit(X, LENGTHS)
        np.testing.assert_allclose(ranks[0][f"{ct}_bounds"], one.lower_bounds_, rtol=1e-10)
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            a, b = ranks[0][f"{ct}_{name}"], ranks[1][f"{ct}_{name}"]
            np.testing.assert_array_equal(a, b)  # every process ends with the same parameters
            np.testing.assert_allclose(a, getattr(one, name), rtol=1e-9, atol=1e-12)
    symbols = np.clip(np.round(X[:, :1]) + 2, 0, 4).astype(np.int64)
    one = _categorical().fit(symbols, LENGTHS)
    np.testing.assert_allclose(ranks[0]["cat_bounds"], one.lower_bounds_, rtol=1e-10)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        a, b = ranks[0][f"cat_{name}"], ranks[1][f"cat_{name}"]
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, getattr(one, name), rtol=1e-9, atol=1e-12)
    counts = np.abs(np.round(X * 2))
    one = MultinomialHMM(3, random_state=0, n_iter=25, tol=1e-12).fit(counts, LENGTHS)
    np.testing.assert_allclose(ranks[0]["mult_bounds"], one.lower_bounds_, rtol=1e-10)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        a, b = ranks[0][f"mult_{name}"], ranks[1][f"mult_{name}"]
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, getattr(one, name), rtol=1e-9, atol=1e-12)
    for r in ranks:
        assert "1 sequence(s) cannot be shared by 2 processes" in str(r["error"])


def test_missing_values_stream_like_in_memory():
    X = _data(4)
    X[[3, 50, 51, 200], [0, 1, 0, 1]] = np.nan
    ref = _model("full", missing="marginalize").fit(X, LENGTHS)
    got = _model("full", missing="marginalize").fit(ArraySource(X, chunk_rows=19), LENGTHS)
    _assert_same(ref, got)
    with pytest.raises(ValueError, match="row 3, column 0"):
        _model("full").fit(ArraySource(X, chunk_rows=19), LENGTHS)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # n_iter=8
@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: GaussianHMM(3, dtype="float32", random_state=0, **kw),
        lambda **kw: GMMHMM(2, n_mix=2, dtype="float32", random_state=0, **kw),
    ],
    ids=["GaussianHMM", "GMMHMM"],
)
def test_a_float32_source_overflowing_over_its_blocks_is_refused_as_in_memory(tmp_path, make):
    # 3e18 among small values: 10 rows of it square to 9e37, below float32's 3.4e38, but 300
    # do not. A source had no such check: GaussianHMM refused it as a state's variance "below
    # the rounding of its update", GMMHMM fitted it (means 2.3e16 and 1.4e18 in column 1)
    X = _data()
    X[150, 1] = 3e18
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(DataError) as in_memory:
        make().fit(X, LENGTHS)
    said = str(in_memory.value)
    assert said.startswith("column 1 of X spans 3e+18 (row 150 holds 3e+18)")
    for source in (NpySource(tmp_path / "x.npy", chunk_rows=10), IterableSource(_chunks(X, 10))):
        with pytest.raises(DataError) as streamed:
            make().fit(source, LENGTHS)
        assert str(streamed.value) == f"{source.name}: {said}"
    # the check is of one pass: 300 rows spanning 5.8e17 (1e38 in all) fit over 8 passes,
    # as in memory (float32 sums in another order: 1e-5 of the data's scale, 5e16)
    X = _data() * 5e16
    ref = make(n_iter=8, tol=0).fit(X, LENGTHS)
    got = make(n_iter=8, tol=0).fit(ArraySource(X, chunk_rows=10), LENGTHS)
    assert got.monitor_.iter == 8
    np.testing.assert_allclose(got.means_ / 5e16, ref.means_ / 5e16, rtol=1e-5, atol=1e-5)
