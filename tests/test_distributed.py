"""DDP with gloo on 2 CPU processes equals single-process training with the same global batch.

In float64, so that the comparison tests the method (sharding, loss scaling, synchronised
BatchNorm, masking) and not float32's chaotic growth of rounding differences (see
tests/test_fused.py): observed differences ~1e-15, asserted 1e-9."""
import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

import dpai
from dpai.data import Data
from dpai.training import TrainConfig, train
from pipeline_repo import DVC, make_repo, run

torch.set_num_threads(1)
TOL = 1e-9
CFG = dict(epochs=2, batch_size=24, lr=0.1, momentum=0.9, weight_decay=5e-4, milestones=[1])


def tiny_data():
    g = torch.Generator().manual_seed(0)
    n = 91  # batches of 24, 24, 24, 19: the last splits 10 / 9 over the two ranks
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    meta = {"dataset": "tiny", "num_classes": 10, "mean": [0.5], "std": [0.25],
            "crop_padding": 1, "flip": True}
    return Data(x, y, x[:41].clone(), y[:41].clone(), meta)


def setup_run():
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0).double()
    mask = dpai.prune(model, "random_erk", 0.8, seed=0)
    return model, mask


class Interrupted(Exception):
    pass


def stop_at_epoch(data, epoch):
    """`data` whose train_batches raises at the start of epoch `epoch` (a killed run)."""
    calls = {"n": 0}
    batches = data.train_batches

    def train_batches(*args, **kwargs):
        if calls["n"] == epoch:
            raise Interrupted
        calls["n"] += 1
        return batches(*args, **kwargs)
    data.train_batches = train_batches
    return data


def _worker(rank, world, port, out, cfg=CFG, checkpoint_dir=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dpai.training import ddp, distributed
    r, w, device = ddp.setup(device="cpu")
    try:
        model, mask = setup_run()
        ckpt = (dpai.Checkpoint(checkpoint_dir, "ddp", {"run": 1}, every=1)
                if checkpoint_dir else None)
        if ckpt is not None and not ckpt.path.exists():  # the first attempt is killed
            try:
                distributed.train_ddp(model, mask, stop_at_epoch(tiny_data(), 1),
                                      TrainConfig(**cfg), seed=5, log=None, checkpoint=ckpt)
            except Interrupted:
                pass
            torch.distributed.barrier()  # rank 0 has written the checkpoint
            model, mask = setup_run()
        result = distributed.train_ddp(model, mask, tiny_data(), TrainConfig(**cfg), seed=5,
                                       log=None, checkpoint=ckpt)
        torch.save({"state": model.state_dict(), "result": result,
                    "nonzero": distributed.pruned_nonzero(model, mask),
                    "digest": ddp.mask_digest(mask)}, f"{out}/rank{r}.pt")
    finally:
        torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ADAMW = dict(CFG, epochs=3, lr=1e-3, weight_decay=0.05, optimizer="adamw", warmup_epochs=1,
             schedule="cosine")


@pytest.mark.parametrize("cfg,resumed", [(CFG, False), pytest.param(ADAMW, True,
                                                                   marks=pytest.mark.slow)],
                         ids=["sgd-multistep", "adamw-warmup-cosine-killed-and-resumed"])
def test_ddp_two_ranks_equal_single_process(tmp_path, cfg, resumed):
    ckpt_dir = str(tmp_path / "checkpoints") if resumed else None
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), cfg, ckpt_dir), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    data = tiny_data()
    model, mask = setup_run()
    g = torch.Generator().manual_seed(5)
    single = train(model, mask,
                   lambda e: ((x.double(), y) for x, y in data.train_batches(24, generator=g)),
                   lambda: ((x.double(), y) for x, y in data.test_batches(24)),
                   TrainConfig(**cfg), progress=False, log=None)
    ref = model.state_dict()
    for r, got in enumerate(ranks):
        assert got["nonzero"] == 0, f"rank {r}: pruned weights nonzero"
        assert got["result"]["steps"] == single["steps"] == 4 * cfg["epochs"]
        assert got["result"]["world_size"] == 2
        if resumed:
            assert got["result"]["timing"]["resumed_at_epoch"] == 1
        for name, t in ref.items():
            key = name  # SyncBatchNorm2d keeps BatchNorm2d's parameter and buffer names
            if t.is_floating_point():
                torch.testing.assert_close(got["state"][key], t, atol=TOL, rtol=TOL,
                                           msg=lambda m: f"rank {r} {name}: {m}")
            else:
                assert torch.equal(got["state"][key], t), name
        assert len(got["result"]["epochs"]) == len(single["epochs"])
        for a, b in zip(single["epochs"], got["result"]["epochs"]):
            assert set(a) == set(b), "the records are dpai.train's (no wall-clock values)"
            for key in ("train_loss", "test_loss", "train_acc", "test_acc", "lr"):
                assert b[key] == pytest.approx(a[key], rel=1e-6), (r, key)  # fp32 sums
    assert ranks[0]["digest"] == ranks[1]["digest"]


@pytest.mark.slow
def test_train_stage_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node 2 stages/train.py ...` writes one run file (rank 0), records
    the world size, keeps no checkpoint and follows the one-process stage. Loosely: in float32
    the first epoch's loss already moves by 0.1 % with the thread count alone (2.3019 with 1
    thread, 2.2993 with 2; 0.2 % between DDP and one process), so the exact equivalence is
    the float64 test above; here the wiring."""
    repo = make_repo(tmp_path / "repo", "preset=tiny", "methods=[random_erk]")
    item = "random_erk-0.99-0"
    run(f"{DVC} repro mask@{item}", repo)
    run(f"{sys.executable} -m torch.distributed.run --nproc_per_node 2 --master_port "
        f"{free_port()} stages/train.py random_erk 0.99 0", repo)
    ddp = json.loads((repo / f"runs/{item}.json").read_text())
    run(f"{sys.executable} stages/train.py random_erk 0.99 0", repo)
    one = json.loads((repo / f"runs/{item}.json").read_text())
    assert (ddp["environment"]["world_size"], one["environment"]["world_size"]) == (2, 1)
    assert ddp["config"]["sync_bn"] is True and ddp["steps"] == one["steps"]
    for a, b in zip(one["epochs"], ddp["epochs"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-2)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=2e-2)
    assert not list((repo / "checkpoints").glob("*.pt")), "the finished run keeps no checkpoint"


def test_a_last_batch_smaller_than_the_world_is_refused_up_front():
    from dpai.training.ddp import check_last_batch as _check_last_batch
    _check_last_batch(22, 10, 2)   # last batch 2 images: one per rank
    _check_last_batch(20, 10, 2)   # no partial batch
    with pytest.raises(ValueError, match=r"train.batch_size=10: the last batch .* 21 .* 1 < 2"):
        _check_last_batch(21, 10, 2)
