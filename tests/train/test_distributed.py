"""DistributedDataParallel with 2 gloo processes on 127.0.0.1 equals one process on the same
global batch (that process accumulating the same two micro-batches)."""

import time

import pytest
import torch
import torch.multiprocessing as mp

from latentfit.train import TrainConfig, train
from latentfit.train import distributed as dist_utils
from latentfit.vae import IWAE, build_model

SPEC = dict(x_dim=16, z_dim=3, hidden=[12], seed=7)


def data():
    g = torch.Generator().manual_seed(0)
    proto = (torch.rand(4, 16, generator=g) > 0.5).double() * 0.9 + 0.05
    X = proto[torch.randint(4, (95,), generator=g)]
    return X[:75], X[75:]


def config(grad_accum, checkpoint_dir=None):
    # 75 rows in batches of 20: the last batch (15 rows) is cut into uneven micro-batches (8, 7);
    # validation in batches of 8 spreads 20 rows over the processes unevenly.
    return TrainConfig(
        epochs=3,
        batch_size=20,
        val_batch_size=8,
        lr=5e-3,
        binarize=True,
        grad_accum=grad_accum,
        progress=False,
        patience=None,
        diagnostics=True,
        restore_best=False,
        checkpoint_dir=checkpoint_dir,
    )


def _worker(rank, world, port, out):
    torch.set_num_threads(1)
    dist_utils.init_process(rank, world, port)
    try:
        X, Xv = data()
        model = build_model(**SPEC).double()
        res = train(model, IWAE(3), X, Xv, config(1, checkpoint_dir=f"{out}/ck"))
        if rank == 0:
            torch.save(
                {
                    "params": [p.detach() for p in model.parameters()],
                    "val": [r["val_bound"] for r in res.history],
                },
                f"{out}/ddp.pt",
            )
    finally:
        dist_utils.cleanup()


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    port = dist_utils.free_port()
    ctx = mp.start_processes(
        _worker, args=(2, port, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=2):
            if time.monotonic() > deadline:
                pytest.fail("the two DDP processes did not finish within 180 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    X, Xv = data()
    model = build_model(**SPEC).double()
    res = train(model, IWAE(3), X, Xv, config(2))
    for a, b in zip(ddp["params"], model.parameters(), strict=True):
        # float64; the only difference is the order of summation of gradients (all-reduce).
        torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-12)
    assert ddp["val"] == pytest.approx([r["val_bound"] for r in res.history], rel=1e-10)
    assert (tmp_path / "ck" / "last.pt").exists()


def test_shard_covers_the_range():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            parts = [range(n)[dist_utils.shard(n, r, world)] for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
