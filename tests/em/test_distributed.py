"""Distributed EM: two gloo processes on 127.0.0.1, started by torchrun, against one process.

The worker (tests/em/dist_worker.py) fits on its shard with the statistics all-reduced; both
processes must hold the same parameters, equal to a single-process fit on all the data up to
the rounding of a differently ordered sum (1e-9 relative, float64).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latentfit import GaussianMixture
from latentfit.em.distributed import DistributedSource, all_reduce_stats, local_device
from latentfit.em.sources import NpySource

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # One thread per process on the 2-core test machines; gloo talks over the loopback.
    lo = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=lo)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [
            rng.normal(size=(120, 2)),
            rng.normal(size=(90, 2)) * 0.5 + 3,
            rng.normal(size=(91, 2)) - 4,
        ]
    )
    rng.shuffle(X)
    w = rng.uniform(0.5, 2.0, size=len(X))
    np.save(tmp / "x.npy", X)
    np.save(tmp / "w.npy", w)
    bad = X.copy()
    bad[250, 1] = np.nan  # in the second process's half
    np.save(tmp / "bad.npy", bad)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        str(WORKER), str(tmp), str(tmp / "x.npy"), str(tmp / "w.npy"), str(tmp / "bad.npy"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [dict(np.load(tmp / f"rank{r}.npz")) for r in range(2)]
    return X, w, ranks


@pytest.mark.slow
@pytest.mark.parametrize("ct", ["full", "diag"])
def test_two_processes_equal_one_process(two_process_run, ct):
    X, w, ranks = two_process_run
    one = GaussianMixture(3, covariance_type=ct, random_state=0, tol=1e-10, max_iter=30)
    one.fit(X, sample_weight=w)
    # Each process read its own half of the rows.
    assert [int(r[f"{ct}_rows"]) for r in ranks] == [150, 151]
    for key in ("means", "weights", "covariances"):
        a, b = ranks[0][f"{ct}_{key}"], ranks[1][f"{ct}_{key}"]
        np.testing.assert_array_equal(a, b)  # every process ends with the same parameters
        np.testing.assert_allclose(a, getattr(one, f"{key}_"), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ranks[0][f"{ct}_bounds"], one.lower_bounds_, rtol=1e-10)


@pytest.mark.slow
def test_cli_distributed_under_torchrun(two_process_run, tmp_path):
    """`torchrun --nproc-per-node 2 -m latentfit fit gmm DATA -k 3 --distributed`: rank 0 alone
    reports and saves, and the saved model is the single-process fit."""
    import latentfit

    X, _, _ = two_process_run
    np.save(tmp_path / "x.npy", X)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        "-m", "latentfit", "fit", "gmm", str(tmp_path / "x.npy"), "-k", "3", "--distributed",
        "--quiet", "--tol", "1e-10", "--out", str(tmp_path / "model.lf"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("GaussianMixture: K=3, covariance=full, n=301, d=2") == 1
    one = GaussianMixture(3, random_state=0, tol=1e-10).fit(X)
    ll = one.score(X) * len(X)
    assert f"log-likelihood: {ll:.6f}" in proc.stdout or f"log-likelihood: {ll:.5f}" in proc.stdout
    saved = latentfit.load(tmp_path / "model.lf")
    np.testing.assert_allclose(saved.means_, one.means_, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_all_reduce_sums_every_dtype(two_process_run):
    _, _, ranks = two_process_run
    for r in ranks:
        np.testing.assert_array_equal(r["reduced_a"], np.full((2, 3), 3.0))  # 1 + 2
        np.testing.assert_array_equal(r["reduced_b"], [3.0])
        assert bool(r["reduced_b_is_f32"])


@pytest.mark.slow
def test_unreadable_shard_fails_every_process(two_process_run):
    _, _, ranks = two_process_run
    # The process whose shard holds the NaN names it; the other does not hang but says why.
    assert "row 250, column 1" in str(ranks[1]["error"])
    assert "could not read their shard" in str(ranks[0]["error"])
    for r in ranks:
        assert "use fit(DistributedSource(...))" in str(r["online_error"])


def test_distributed_needs_a_process_group():
    with pytest.raises(RuntimeError, match="torchrun"):
        DistributedSource(NpySource.__new__(NpySource))


def test_single_process_group_is_the_plain_fit(tmp_path, device):
    """A world of one process: the collectives are identities, the fit is the plain fit."""
    import torch.distributed as dist

    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(60, 2)), rng.normal(size=(50, 2)) + 3])
    np.save(tmp_path / "x.npy", X)
    backend = "nccl" if device == "cuda" else "gloo"  # gloo has no all_gather of CUDA tensors
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        src = DistributedSource(NpySource(tmp_path / "x.npy"))
        kw = dict(random_state=0, device=device, tol=1e-10)
        a = GaussianMixture(2, **kw).fit(src)
        b = GaussianMixture(2, **kw).fit(X)
        np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
        stats = {"x": torch.ones(3, dtype=torch.float64)}
        assert torch.equal(all_reduce_stats(stats)["x"], stats["x"])
        assert src.configured(device=device).n_samples_total == 110
    finally:
        dist.destroy_process_group()


def test_local_device_uses_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == torch.device("cuda", 3)
    assert local_device("cuda:1") == torch.device("cuda", 1)
    assert local_device(None) == torch.device("cpu")


def test_cli_distributed_outside_a_launcher_says_how_to_launch(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from latentfit.cli import app

    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 2)))
    res = CliRunner().invoke(
        app, ["fit", "gmm", str(tmp_path / "x.npy"), "-k", "2", "--distributed"]
    )
    assert res.exit_code == 2
    assert "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT" in res.output and "torchrun" in res.output


def test_cli_device_option(tmp_path, device):
    from typer.testing import CliRunner

    from latentfit.cli import app

    X = np.random.default_rng(0).normal(size=(40, 2))
    np.save(tmp_path / "x.npy", X)
    res = CliRunner().invoke(
        app, ["fit", "gmm", str(tmp_path / "x.npy"), "-k", "2", "--device", device, "--quiet"]
    )
    assert res.exit_code == 0, res.output
    ll = GaussianMixture(2, random_state=0).fit(X).score(X) * len(X)
    assert f"log-likelihood: {ll:.6f}" in res.output
    if not torch.cuda.is_available():
        res = CliRunner().invoke(
            app, ["fit", "gmm", str(tmp_path / "x.npy"), "-k", "2", "--device", "cuda"]
        )
        assert res.exit_code == 2 and "no CUDA device is available" in res.output
