"""Out-of-core EM for the discrete mixtures, MixtureModel and the factor models.

A source read chunk by chunk gives the statistics of the in-memory fit summed in the same order
when the chunks are the same (``chunk_rows``) and the data fits in the initialisation sample,
so the fits must agree to the last bits (checked at 1e-12 relative: equal up to nothing but
the rounding a different BLAS blocking could bring). The factor models' recentring of their
moments (online EM) is checked against the moments computed directly.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from latentfit import (
    PPCA,
    BernoulliMixture,
    CategoricalMixture,
    FactorAnalysis,
    MixtureModel,
    MultinomialMixture,
    PoissonMixture,
)
from latentfit.em.factor import factor_estep_stats, factor_posterior, recenter_factor_stats
from latentfit.em.sources.chunks import ArraySource, IterableSource, NpySource, ParquetSource

# The fits are capped at a few iterations: comparing them needs no convergence.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNG = np.random.default_rng(0)
N = 600
Z = RNG.integers(0, 2, N)
WEIGHTS = RNG.uniform(0.5, 2.0, N)
DATA = {
    "bernoulli": (RNG.uniform(size=(N, 6)) < np.where(Z[:, None] == 1, 0.8, 0.25)).astype(float),
    "poisson": RNG.poisson(np.where(Z[:, None] == 1, 6.0, 1.5), size=(N, 4)).astype(float),
    "multinomial": np.stack(
        [RNG.multinomial(30, [0.5, 0.3, 0.1, 0.1] if z else [0.1, 0.1, 0.3, 0.5]) for z in Z]
    ).astype(float),
    "categorical": np.where(
        Z[:, None] == 1, RNG.integers(0, 2, (N, 3)), RNG.integers(1, 4, (N, 3))
    ).astype(float),
    "gamma-lognormal": np.where(
        Z[:, None] == 1, RNG.gamma(2.0, 1.0, (N, 1)), RNG.lognormal(2.0, 0.3, (N, 1))
    ),
    "mvn": RNG.normal(size=(N, 2)) + 4 * Z[:, None],
}
MODELS = {
    "bernoulli": lambda **kw: BernoulliMixture(2, mean_prior=(2.0, 2.0), **kw),
    "poisson": lambda **kw: PoissonMixture(2, **kw),
    "multinomial": lambda **kw: MultinomialMixture(2, prob_concentration=1.5, **kw),
    "categorical": lambda **kw: CategoricalMixture(2, **kw),
    "gamma-lognormal": lambda **kw: MixtureModel(["gamma", "lognormal"], **kw),
    "mvn": lambda **kw: MixtureModel("mvn", 2, niw_shrinkage=0.01, **kw),
}
KW = dict(random_state=0, tol=1e-10, max_iter=15, chunk_rows=128)


def _fitted(model) -> dict:
    return {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")}


def _assert_same(a, b, rtol=1e-12):
    fa, fb = _fitted(a), _fitted(b)
    assert fa.keys() == fb.keys()
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol)
    for key, va in fa.items():
        vb = fb[key]
        if key == "components_" and isinstance(va, list):  # MixtureModel: dicts per component
            for ca, cb in zip(va, vb, strict=True):
                for name in ca:
                    np.testing.assert_allclose(ca[name], cb[name], rtol=rtol, atol=1e-14)
        elif isinstance(va, np.ndarray) and va.dtype.kind == "f":
            np.testing.assert_allclose(va, vb, rtol=rtol, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("family", list(MODELS))
def test_npy_fit_equals_in_memory_fit(tmp_path, family):
    X = DATA[family]
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", WEIGHTS)
    mem = MODELS[family](**KW).fit(X, sample_weight=WEIGHTS)
    streamed = MODELS[family](**KW).fit(
        NpySource(tmp_path / "x.npy", sample_weight=tmp_path / "w.npy")
    )
    _assert_same(mem, streamed)
    assert streamed.n_features_in_ == X.shape[1]
    # One more pass labels the stream as the in-memory fit labels the array.
    np.testing.assert_array_equal(
        MODELS[family](**KW).fit_predict(X, sample_weight=WEIGHTS),
        MODELS[family](**KW).fit_predict(
            NpySource(tmp_path / "x.npy", sample_weight=tmp_path / "w.npy")
        ),
    )


def test_parquet_and_iterables_equal_in_memory(tmp_path):
    X = DATA["poisson"]
    mem = PoissonMixture(2, **KW).fit(X, sample_weight=WEIGHTS)
    table = pa.table({f"c{j}": X[:, j] for j in range(X.shape[1])} | {"w": WEIGHTS})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=128)
    _assert_same(
        mem, PoissonMixture(2, **KW).fit(ParquetSource(tmp_path / "x.parquet", weight_column="w"))
    )

    def blocks():  # a fresh iterator per pass, blocks of the chunk size
        for i in range(0, N, 128):
            yield X[i : i + 128], WEIGHTS[i : i + 128]

    _assert_same(mem, PoissonMixture(2, **KW).fit(IterableSource(blocks)))


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_factor_models_stream_like_in_memory_with_missing_values(tmp_path, cls):
    rng = np.random.default_rng(1)
    W = rng.normal(size=(5, 2))
    X = rng.normal(size=(500, 2)) @ W.T + 3.0 + rng.normal(size=(500, 5)) * 0.3
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    np.save(tmp_path / "x.npy", X)
    kw = dict(n_components=2, missing="marginalize", chunk_rows=100, max_iter=30, tol=1e-12)
    mem = cls(**kw).fit(X, sample_weight=WEIGHTS[:500])
    src = NpySource(tmp_path / "x.npy", sample_weight=WEIGHTS[:500])
    _assert_same(mem, cls(**kw).fit(src))
    # Without missing="marginalize" the stream refuses NaN, naming where it is.
    i, j = np.argwhere(np.isnan(X))[0]
    with pytest.raises(ValueError, match=f"row {i}, column {j}"):
        cls(n_components=2).fit(NpySource(tmp_path / "x.npy"))


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
def test_factor_models_refuse_a_source_that_overflows_over_its_blocks(cls):
    # 3e18 among small values in float32: blocks of 10 rows square to 9e37 (below 3.4e38),
    # so the source was checked block by block and fitted, where the array is refused
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    X[150, 1] = 3e18
    said = r"column 1 of X spans 3e\+18 \(row 150 holds 3e\+18\).*overflow float32"
    with pytest.raises(ValueError, match=said):
        cls(n_components=1, dtype="float32").fit(X)
    with pytest.raises(ValueError, match="^data: " + said):
        cls(n_components=1, dtype="float32").fit(ArraySource(X, chunk_rows=10))


def test_every_block_is_checked_against_the_family():
    X = DATA["bernoulli"].copy()
    X[333, 2] = 0.5
    with pytest.raises(ValueError, match=r"^data: .*row 333, column 2"):
        BernoulliMixture(2).fit(ArraySource(X, chunk_rows=100))
    with pytest.raises(ValueError, match="negative"):
        PoissonMixture(2).fit(ArraySource(-DATA["poisson"], chunk_rows=100))


def test_categories_learnt_from_a_sample_are_enforced_on_the_stream():
    X = DATA["categorical"].copy()
    X[-1, 0] = 7  # a code the initialisation sample of 50 rows drawn with seed 2 misses
    src = ArraySource(X, chunk_rows=100, init_rows=50)
    with pytest.raises(ValueError, match=r"row 599, column 0 holds category 7.*n_categories"):
        CategoricalMixture(2, random_state=2).fit(src)
    fitted = CategoricalMixture(2, n_categories=8, random_state=2, max_iter=5, tol=1e-3)
    fitted.fit(src)
    assert fitted.probs_.shape == (2, 3, 8)


def test_source_arguments_that_make_no_sense_are_refused():
    src = ArraySource(DATA["poisson"])
    with pytest.raises(ValueError, match="labels"):
        PoissonMixture(2).fit(src, y=np.zeros(N, dtype=int))
    with pytest.raises(ValueError, match="carries its own sample weights"):
        PoissonMixture(2).fit(src, sample_weight=WEIGHTS)
    with pytest.raises(ValueError, match="n_components=9 must be at most n_features=4"):
        FactorAnalysis(9).fit(src)


def test_recentred_factor_statistics_equal_direct_moments():
    """Moments of the residual about a new prediction c + V z from the recentring formulas
    against the definition E[(x − c − V z)…] computed row by row from the posterior, with
    missing coordinates."""
    rng = np.random.default_rng(2)
    d, q, n = 4, 2, 30
    W, mu, psi = rng.normal(size=(d, q)), rng.normal(size=d), rng.uniform(0.3, 1.0, d)
    X = rng.normal(size=(n, d)) * 2
    X[rng.uniform(size=X.shape) < 0.25] = np.nan
    w = rng.uniform(0.5, 2.0, n)
    c = mu + rng.normal(size=d)  # the new centre
    V = W + rng.normal(size=(d, q))  # the new loadings
    t = {k: torch.from_numpy(v) for k, v in dict(X=X, w=w, W=W, mu=mu, psi=psi).items()}
    stats = factor_estep_stats(t["X"], t["w"], t["W"], t["mu"], t["psi"])
    moved = recenter_factor_stats(stats, torch.from_numpy(mu - c), torch.from_numpy(W - V))
    post = factor_posterior(t["X"], t["W"], t["mu"], t["psi"])
    Ez, cov = post.mean.numpy(), post.cov.numpy()
    Se, See, Sez = np.zeros(d), np.zeros(d), np.zeros((d, q))
    for i in range(n):
        Ezz = cov[i] + np.outer(Ez[i], Ez[i])
        for j in range(d):
            if np.isnan(X[i, j]):  # x_j = W_j z + μ_j + ε_j, ε_j independent of z
                D = W[j] - V[j]  # u = D z + μ_j − c_j + ε_j
                m = D @ Ez[i] + mu[j] - c[j]
                Se[j] += w[i] * m
                See[j] += w[i] * (m**2 + D @ cov[i] @ D + psi[j])
                Sez[j] += w[i] * (D @ Ezz + (mu[j] - c[j]) * Ez[i])
            else:  # u = r − V_j z
                r = X[i, j] - c[j]
                Se[j] += w[i] * (r - V[j] @ Ez[i])
                See[j] += w[i] * (r**2 - 2 * r * V[j] @ Ez[i] + V[j] @ Ezz @ V[j])
                Sez[j] += w[i] * (r * Ez[i] - V[j] @ Ezz)
    np.testing.assert_allclose(moved["Se"].numpy(), Se, rtol=1e-10)
    np.testing.assert_allclose(moved["See"].numpy(), See, rtol=1e-10)
    np.testing.assert_allclose(moved["Sez"].numpy(), Sez, rtol=1e-10)
    for key in ("Sw", "Sz", "Szz", "loglik"):
        assert torch.equal(moved[key], stats[key])


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    """Two gloo processes on 127.0.0.1, each reading half of the file, all-reduce their
    statistics: both end with the single-process fit up to the rounding of a differently
    ordered sum (1e-9 relative in float64, as for the Gaussian mixture)."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    counts = DATA["poisson"]
    rng = np.random.default_rng(8)
    gauss = rng.normal(size=(301, 2)) @ rng.normal(size=(2, 4)) + rng.normal(size=(301, 4))
    np.save(tmp_path / "counts.npy", counts)
    np.save(tmp_path / "gauss.npy", gauss)
    # one far row (1e8 in column 0): PPCA's σ² from the statistics summed over the processes
    far = np.r_[np.random.default_rng(0).normal(2.4, 1, (60, 3)), [[1e8, 2.4, 2.4]]]
    np.save(tmp_path / "far.npy", far)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Path(__file__).with_name("dist_models_worker.py")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(port),
        str(worker), str(tmp_path), str(tmp_path / "counts.npy"), str(tmp_path / "gauss.npy"),
        str(tmp_path / "far.npy"),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    pm = PoissonMixture(2, random_state=0, tol=1e-10, max_iter=20, chunk_rows=64).fit(counts)
    fa = FactorAnalysis(2, tol=1e-12, max_iter=20, chunk_rows=64).fit(gauss)
    expected = {
        "rates": pm.rates_,
        "weights": pm.weights_,
        "pm_bounds": pm.lower_bounds_,
        "components": fa.components_,
        "noise": fa.noise_variance_,
        "fa_bounds": fa.lower_bounds_,
        # Tipping & Bishop's σ², from the singular values of the centred rows (the M-step's
        # difference of column 0's moments held it at the floor, 53.7 for 0.7549)
        "far_noise": (
            np.linalg.svd((far - far.mean(0)) / np.sqrt(61), compute_uv=False)[1:] ** 2
        ).mean(),
    }
    for key, value in expected.items():
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])  # the same on every process
        np.testing.assert_allclose(ranks[0][key], value, rtol=1e-9, atol=1e-12, err_msg=key)
