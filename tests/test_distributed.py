"""DDP with gloo on 2 CPU processes equals single-process training with the same global batch.

In float64, so that the comparison tests the method (sharding, loss scaling, synchronised
BatchNorm, masking) and not float32's chaotic growth of rounding differences (see
tests/test_fused.py): observed differences ~1e-15, asserted 1e-9."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import dpai
from dpai.data import Data
from dpai.train import TrainConfig, train

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


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dpai import distributed
    r, w, device = distributed.setup(device="cpu")
    try:
        model, mask = setup_run()
        result = distributed.train_ddp(model, mask, tiny_data(), TrainConfig(**CFG), seed=5,
                                       log=None)
        torch.save({"state": model.state_dict(), "result": result,
                    "nonzero": distributed.pruned_nonzero(model, mask),
                    "digest": distributed.mask_digest(mask)}, f"{out}/rank{r}.pt")
    finally:
        torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_equal_single_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    data = tiny_data()
    model, mask = setup_run()
    g = torch.Generator().manual_seed(5)
    single = train(model, mask,
                   lambda e: ((x.double(), y) for x, y in data.train_batches(24, generator=g)),
                   lambda: ((x.double(), y) for x, y in data.test_batches(24)),
                   TrainConfig(**CFG), progress=False, log=None)
    ref = model.state_dict()
    for r, got in enumerate(ranks):
        assert got["nonzero"] == 0, f"rank {r}: pruned weights nonzero"
        assert got["result"]["steps"] == single["steps"] == 8
        for name, t in ref.items():
            key = name  # SyncBatchNorm2d keeps BatchNorm2d's parameter and buffer names
            if t.is_floating_point():
                torch.testing.assert_close(got["state"][key], t, atol=TOL, rtol=TOL,
                                           msg=lambda m: f"rank {r} {name}: {m}")
            else:
                assert torch.equal(got["state"][key], t), name
        for a, b in zip(single["epochs"], got["result"]["epochs"]):
            for key in ("train_loss", "test_loss", "train_acc", "test_acc", "lr"):
                assert b[key] == pytest.approx(a[key], rel=1e-6), (r, key)  # fp32 sums
    assert ranks[0]["digest"] == ranks[1]["digest"]
