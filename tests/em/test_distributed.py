"""Distributed EM: two gloo processes on 127.0.0.1, started by torchrun, against one process.

The worker (tests/em/dist_worker.py) fits on its shard with the statistics all-reduced; both
processes must hold the same parameters, equal to a single-process fit on all the data up to
the rounding of a differently ordered sum (1e-9 relative, float64). Another worker
(tests/em/dist_check_worker.py) makes the two processes disagree on what they fit, or leaves
one asleep: every process must stop with an error that names the rank and the field, or the
timeout.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latentfit import GaussianMixture
from latentfit.em.sources.chunks import NpySource
from latentfit.em.sources.distributed import (
    DEFAULT_TIMEOUT_S,
    DistributedSource,
    all_reduce_stats,
    check_timeout,
    collective_errors,
    init_distributed,
    local_device,
)
from latentfit.em.sources.stream import _printable, describe_fit
from latentfit.errors import DataError, LatentfitError, ParameterError

WORKER = Path(__file__).with_name("dist_worker.py")
CHECK_WORKER = Path(__file__).with_name("dist_check_worker.py")
ESTEP_WORKER = Path(__file__).with_name("dist_estep_worker.py")
SCORE_WORKER = Path(__file__).with_name("dist_score_worker.py")


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


def _torchrun(args: list, timeout: float) -> subprocess.CompletedProcess:
    """Two processes under torchrun; on timeout the whole process group is killed (no process
    is left behind) and the test fails."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *map(str, args),
    ]  # fmt: skip
    env = dict(_env(), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the processes were still running after {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


MISMATCHES = {  # case of dist_check_worker.py: (field named, error class, rank 1's, rank 0's)
    "n_features": ("n_features", DataError, "3", "2"),
    "n_components": ("n_components", ParameterError, "3", "2"),
    "covariance_type": ("covariance_type", ParameterError, "'diag'", "'full'"),
    "dtype": ("dtype", DataError, "float32", "float64"),
    "model": ("model", ParameterError, "PPCA", "GaussianMixture"),
    "hmm_n_components": ("n_components", ParameterError, "3", "2"),
}


@pytest.fixture(scope="module")
def mismatch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mismatch")
    X = np.random.default_rng(0).normal(size=(301, 3))
    X[:150] += 3
    np.save(tmp / "x2.npy", X[:, :2])
    np.save(tmp / "x3.npy", X)
    cases = [*MISMATCHES, "agree"]
    proc = _torchrun([CHECK_WORKER, tmp, tmp / "x2.npy", tmp / "x3.npy", *cases], timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MISMATCHES))
def test_processes_that_disagree_all_stop_naming_the_rank_and_field(mismatch_run, case):
    """Before the fix rank 1 died in gloo ("terminate called ... Received data size doesn't
    match expected size") and rank 0 got a raw "Connection reset by peer"; different dtypes
    even exchanged misread bytes. Now every rank raises the same error before any statistic."""
    field, cls, theirs, ours = MISMATCHES[case]
    for r, res in enumerate(mismatch_run):
        assert res[case].startswith(f"latentfit.errors.{cls.__name__}: "), res[case]
        assert f"rank 1 has {field}={theirs} where rank 0 has {field}={ours}" in res[case]
        assert f"this is rank {r}" in res[case]


@pytest.mark.slow
def test_processes_that_agree_still_fit(mismatch_run):
    # The same model with different per-process settings (chunk_rows) passes the check.
    assert [res["agree"] for res in mismatch_run] == ["", ""]


@pytest.mark.slow
def test_a_stopped_process_makes_the_others_fail_within_the_timeout(tmp_path):
    """Rank 1 sleeps 300 s without joining the fit; rank 0, in a group made with timeout=2,
    must stop with an error naming the timeout well before that (it used to wait 30 minutes)."""
    X = np.random.default_rng(0).normal(size=(40, 2))
    np.save(tmp_path / "x.npy", X)
    args = [CHECK_WORKER, tmp_path, tmp_path / "x.npy", tmp_path / "x.npy", "timeout"]
    proc = _torchrun(args, timeout=200)
    assert proc.returncode != 0  # rank 0 fails (status 3) and torchrun stops rank 1
    msg = json.loads((tmp_path / "rank0.json").read_text())["timeout"]
    assert msg.startswith("latentfit.errors.LatentfitError: rank 0 waited longer than timeout=2 s")
    assert "raise the timeout" in msg and "--timeout SECONDS" in msg


ESTEP_ERRORS = {  # case of dist_estep_worker.py: the error of the row rank 1's E-step refuses
    "mixture": "BatchRowError: row 33 of X is beyond 100",
    "hmm": "SequenceRowError: row 13 of X (step 3 of sequence 2) has zero probability under "
    "every state",
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("case", list(ESTEP_ERRORS))
def test_an_estep_error_names_the_row_of_the_whole_data(tmp_path, case):
    """Rank 1's E-step refuses a row of its shard. It named the row counted from the start
    of its shard: row 13 for row 33 of the mixture's 40 rows, and "row 3 of X (step 3 of
    sequence 0)" for row 13 of the HMM's four sequences of 5 rows. Rank 0 waited for its
    statistics until rank 1 went away ("rank 0: the all-reduce of the EM statistics failed
    (... Connection reset by peer)") or, where rank 1 went on running, until the timeout (10 s
    here, 300 s by default): an error about the collective, not the row. Now every process
    stops at once with rank 1's error."""
    if case == "mixture":
        X = np.random.default_rng(0).normal(size=(40, 2))
        X[33, 1] = 1e3  # the worker's mixture refuses it in its E-step
    else:
        X = np.zeros((20, 1))
        X[::2] = 1
        X[13] = 2  # a symbol no state emits
    np.save(tmp_path / "x.npy", X)
    proc = _torchrun([ESTEP_WORKER, tmp_path, case, tmp_path / "x.npy"], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert said[1].startswith(ESTEP_ERRORS[case]), said[1]
    # rank 0 stops at once with the same error (a BatchRowError naming the same row)
    words = ESTEP_ERRORS[case].split(": ", 1)[1]
    assert said[0].startswith(f"BatchRowError: {words}"), said[0]
    assert said[0] == said[1].replace("SequenceRowError", "BatchRowError") + (
        " (found by rank 1; this is rank 0)"
    )


SCORE_ERRORS = {  # case of dist_score_worker.py: the error of the row rank 1's scoring refuses
    "mixture": "BatchRowError: row 33 of X is beyond 100",
    "hmm": "SequenceRowError: row 33 of X (step 3 of sequence 3) is beyond 100",
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("case", list(SCORE_ERRORS))
def test_an_error_in_the_final_scoring_stops_every_process(tmp_path, case):
    """After the fit, the scoring of rank 1 refuses row 33 of 40, in its share. Rank 1 named
    it by the row of its share ("row 13 of X", and "row 13 of X (step 3 of sequence 1)" for
    the HMM) and left, while rank 0 waited in the sum of the log-likelihood until rank 1 was
    gone ("rank 0: the check that every process finished its pass failed (... Connection
    closed by peer ...)", "rank 0: summing the log-likelihood failed (...)") or, where rank 1
    went on running, until the timeout: the fit's E-step told the other processes, the
    scoring did not. Now every process stops at once with rank 1's error, naming the row of
    the whole data."""
    X = np.random.default_rng(0).normal(size=(40, 2))
    X[33, 1] = 1e3  # the fit takes it, the worker's scoring refuses it
    np.save(tmp_path / "x.npy", X)
    proc = _torchrun([SCORE_WORKER, tmp_path, case, tmp_path / "x.npy"], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert said[1] == SCORE_ERRORS[case], said[1]
    words = SCORE_ERRORS[case].split(": ", 1)[1]
    assert said[0] == f"BatchRowError: {words} (found by rank 1; this is rank 0)", said[0]


@pytest.mark.parametrize(
    "bad", [0, -1.0, float("nan"), float("inf"), "60", True, None, 1e308, 10**20]
)
def test_timeout_must_be_positive_seconds(bad):
    with pytest.raises(ParameterError, match="timeout must be a positive number of seconds"):
        check_timeout(bad)
    with pytest.raises(ParameterError, match="timeout"):
        init_distributed(timeout=bad)
    assert check_timeout(2).total_seconds() == 2.0
    assert DEFAULT_TIMEOUT_S < 1800  # a few minutes, not the half hour it was


def test_a_missing_process_at_the_rendezvous_fails_within_the_timeout(monkeypatch):
    """A world of two where the second never comes: the first gives up after timeout=1 s with
    an error naming the setting (before: torch's DistStoreError after 30 minutes)."""
    import torch.distributed as dist

    env = dict(RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(LatentfitError, match=r"rank 0 waited longer than timeout=1 s .* joining"):
        init_distributed(timeout=1)
    assert not dist.is_initialized()


def test_a_failed_collective_says_what_waited_and_what_to_raise(monkeypatch):
    monkeypatch.setenv("RANK", "3")  # no process group: the rank comes from the launcher
    with pytest.raises(LatentfitError, match=r"^rank 3 waited longer than timeout=7 s .* in the"):
        with collective_errors("the thing", timeout=7):
            raise RuntimeError("[pair.cc:129] Timed out waiting 7000ms for recv operation")
    with pytest.raises(LatentfitError, match=r"^rank 3: the thing failed \(Connection reset\)"):
        with collective_errors("the thing"):
            raise RuntimeError("Connection reset\nby peer")


def test_description_holds_what_must_agree_and_not_what_may_differ(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3))
    np.save(tmp_path / "x.npy", X)
    src = NpySource(tmp_path / "x.npy").configured(dtype="float32")
    a = describe_fit(GaussianMixture(2, covariance_type="diag", verbose=2, device="cpu"), src)
    b = describe_fit(GaussianMixture(2, covariance_type="diag", random_state=5, chunk_rows=7), src)
    assert a == b  # verbose, device, chunk_rows and the seed are each process's own
    assert a["model"] == "GaussianMixture" and a["covariance_type"] == "'diag'"
    assert (a["n_features"], a["dtype"], a["device_type"]) == ("3", "float32", "cpu")
    c = describe_fit(GaussianMixture(2, means_init=np.zeros((2, 3))), src)
    d = describe_fit(GaussianMixture(2, means_init=np.ones((2, 3))), src)
    assert c["means_init"] != d["means_init"]  # arrays compare by content
    assert _printable(object()) == _printable(object())  # not by their address


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
        "--quiet", "--tol", "1e-10", "--out", str(tmp_path / "model.lf"), "--timeout", "120",
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
    with pytest.raises(ParameterError, match="torchrun"):
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
        stats = {"x": torch.ones(3, dtype=torch.float64, device=device)}  # nccl: on the GPU
        assert torch.equal(all_reduce_stats(stats)["x"], stats["x"])
        assert src.configured(device=device).n_samples_total == 110
    finally:
        dist.destroy_process_group()


def test_train_and_em_share_one_meaning_of_distributed():
    """A world of one process is a process group but not a distributed run, for EM and the
    trainers alike; the trainers' cleanup still leaves no group behind."""
    import torch.distributed as dist

    from latentfit.em.sources import distributed as em_dist
    from latentfit.train import distributed as train_dist

    assert train_dist.is_distributed is em_dist.is_distributed
    train_dist.init_process(0, 1, _free_port(), timeout=30)
    try:
        assert em_dist.in_process_group() and not em_dist.is_distributed()
        assert (train_dist.rank(), train_dist.world_size(), train_dist.is_main()) == (0, 1, True)
        t = torch.ones(2)
        assert torch.equal(train_dist.all_reduce_sum(t), torch.ones(2))
        assert em_dist._group_timeout() in (30.0, None)  # None where torch hides it
    finally:
        train_dist.cleanup()
    assert not dist.is_initialized()
    with pytest.raises(ParameterError, match="timeout"):
        train_dist.init_process(0, 1, _free_port(), timeout=0)


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


def test_cli_timeout_option(tmp_path):
    from typer.testing import CliRunner

    from latentfit.cli import app

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 2)))
    args = ["fit", "gmm", str(tmp_path / "x.npy"), "-k", "2", "--distributed", "--timeout", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--timeout" in res.output
    assert "--timeout" in CliRunner().invoke(app, ["fit", "gmm", "--help"]).output


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


@pytest.mark.parametrize("device", ["zz", 2.5, "cuda:x"])
def test_local_device_refuses_what_is_not_a_device(device):
    # torch's own RuntimeError/TypeError used to reach the caller
    with pytest.raises(ParameterError, match="not a torch device"):
        local_device(device)


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("0,1\n{rows}", ["--header"]),  # a first line of numbers that names the columns
        ("{rows}", ["--delimiter", ":"]),  # a delimiter the sniffer does not try
    ],
)
@pytest.mark.parametrize("command", ["gmm", "hmm"])
def test_cli_distributed_reads_a_text_file_with_the_delimiter_and_header(
    tmp_path, monkeypatch, text, options, command
):
    """A world of one process fits the rows the in-memory fit reads (before: --delimiter and
    --header were dropped on the way to the file, so the names row was fitted as data)."""
    from typer.testing import CliRunner

    from latentfit.cli import app

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 4])
    sep = ":" if "--delimiter" in options else ","
    rows = "\n".join(sep.join(f"{v:.6f}" for v in row) for row in X) + "\n"
    (tmp_path / "x.csv").write_text(text.format(rows=rows))
    args = ["fit", command, "x.csv", "-k", "2", "--quiet", "--json", *options]
    if command == "hmm":
        (tmp_path / "len.csv").write_text("20\n40\n")
        args += ["--lengths", "len.csv"]
    plain = CliRunner().invoke(app, [*args, "--out", "a.st"])
    assert plain.exit_code == 0, plain.output
    env = dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    res = CliRunner().invoke(app, [*args, "--distributed", "--out", "b.st"])
    assert res.exit_code == 0, res.output
    got, ref = json.loads(res.output), json.loads(plain.output)
    assert got["n_samples"] == ref["n_samples"] == 60
    np.testing.assert_allclose(got["means"], ref["means"], rtol=1e-8)


@pytest.mark.parametrize(
    ("args", "row", "needles"),
    [
        (["-k", "50"], None, ["x.csv has 10 rows, fewer than -k 50"]),
        (["-k", "2"], 4, ["x.csv contains", "row 4, column 1", "--missing marginalize"]),
    ],
)
def test_fit_hmm_distributed_errors_speak_as_the_fit_in_one_process(
    tmp_path, monkeypatch, args, row, needles
):
    """A --distributed fit said "the data has 10 rows, fewer than n_components=50" where the
    fit in one process says "x.csv has 10 rows, fewer than -k 50", and left out the hint of
    --missing marginalize for a NaN."""
    from typer.testing import CliRunner

    from latentfit.cli import app

    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).normal(size=(10, 2))
    if row is not None:
        X[row, 1] = np.nan
    np.savetxt("x.csv", X, delimiter=",", header="a,b", comments="")
    env = dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for mode in ("--no-distributed", "--distributed"):
        res = CliRunner().invoke(app, ["fit", "hmm", "x.csv", *args, mode, "--quiet"])
        assert res.exit_code == 2, res.output
        text = " ".join(res.output.split())
        assert all(n in text for n in needles), (mode, text)
        assert "n_components" not in text and "the data has" not in text, (mode, text)


OVERFLOW_WORKER = Path(__file__).with_name("dist_overflow_worker.py")


@pytest.mark.slow
def test_moments_that_overflow_only_summed_over_the_processes_are_refused_on_every_one(
    tmp_path,
):
    """Each process checked only its own rows for float32 overflow, while the M-step takes the
    sums of all of them: row 150 at 1.5e18 among 200 small rows spans 2.25e36 squared, 2.25e38
    over rank 1's 100 rows (below float32's 3.4e38) but 4.5e38 over the 200, which the fit in
    one process refuses; and 1.5e16 weighted 1e4 in every row, 2.25e38 per process but 4.5e38
    in all. Both fitted without a word. Now every process stops with the error of the fit in
    one process, naming the row and column of the whole data."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    X[150, 1] = 1.5e18
    Xw = rng.normal(size=(200, 2))
    Xw[150, 1] = 1.5e16
    w = np.full(200, 1e4)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "xw.npy", Xw)
    np.save(tmp_path / "w.npy", w)
    said = {
        "gmm": r"column 1 of X spans 1.5e\+18 \(row 150 holds 1.5e\+18\).*overflow float32",
        "gmm_weights": r"column 1 of X spans 1.5e\+16 \(row 150 holds 1.5e\+16\).*overflow float32",
    }
    for case, data, weights in (("gmm", X, None), ("gmm_weights", Xw, w)):  # in one process
        with pytest.raises(DataError, match=said[case]):
            GaussianMixture(2, dtype="float32").fit(data, sample_weight=weights)
    said |= {"ppca": said["gmm"], "hmm": said["gmm"]}
    args = [OVERFLOW_WORKER, tmp_path, *(tmp_path / f for f in ("x.npy", "xw.npy", "w.npy"))]
    proc = _torchrun([*args, *said], timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for case, match in said.items():
        assert got[0][case] == got[1][case], case  # every process says the same
        assert got[0][case].startswith("BatchRowError: "), (case, got[0][case])
        assert re.search(match, got[0][case]), (case, got[0][case])
