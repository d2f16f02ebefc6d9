"""Data-parallel sparse training (DDP) launched by torchrun, on one or several machines.

    torchrun --nproc_per_node 2 -m dpai.training.distributed --data data/digits --dataset digits \\
        --model resnet20 --mask masks/dpai-0.99-0.pt --seed 0 --out runs/x.json \\
        --train '{"epochs": 30, "batch_size": 128, "milestones": [15, 22]}'
    # several machines: torchrun --nnodes 2 --node_rank R --master_addr HOST ... (the same)

or, from a stage started by torchrun (WORLD_SIZE set): `rank, world, device = setup()`, then
`result = train_ddp(model, mask, data, config, seed=seed)`, and write files where `is_main()`.

What holds (tests/test_distributed.py checks it with gloo and 2 CPU processes):
- the mask: every rank loads or computes it; `share_mask` checks by SHA-256 that all ranks hold
  the same one (or `broadcast_mask` sends rank 0's); pruned weights are exactly 0 on every
  rank after every step (gradients masked after DDP's all-reduce, then SGD, see dpai.train);
- data: every rank draws the same permutation / crops / flips from the run's seeded generator
  and takes its part of each global batch of `config.batch_size` images (Data.train_batches'
  `shard`), so the ranks together see exactly the single-process epoch;
- the loss of a rank is its sum of per-image losses / the global batch size * world size, so
  DDP's gradient average is the gradient of the global batch mean, even for a last batch
  that does not split evenly;
- BatchNorm: `train.sync_bn: true` (default) normalises with the statistics of the global batch
  (torch.nn.SyncBatchNorm on CUDA; on the CPU, where torch's needs a GPU, `SyncBatchNorm2d`
  below, two differentiable all-reduces per layer); false keeps per-rank statistics
  (DDP broadcasts rank 0's running statistics at each forward);
- metrics: loss sums, correct counts and image counts are all-reduced once per epoch; the
  test split is sharded the same way. Every rank returns the same result dict;
- checkpoints: rank 0 saves (dpai.train's), every rank resumes; only rank 0 writes files;
- with sync_bn the result equals single-process `dpai.train` with the same global batch
  within floating-point tolerance.
"""
import argparse
import json

import torch
import torch.distributed as dist
from torch import nn

from ..core.mask import Mask
from ..models import prunable_layers
from .config import TrainConfig
from .ddp import check_last_batch, is_main, setup
from .loop import train



def train_ddp(model: nn.Module, mask, data, config: TrainConfig, *, seed: int, log=print,
              augment: bool = True, checkpoint=None, device=None) -> dict:
    """Train `model` in place on this rank's shard of `data` (a dpai.data.Data) with DDP.

    Call after `setup()`; the model must already be on this rank's device (and in the dtype
    to train in) and built from the same init on every rank (DDP also broadcasts rank 0's
    weights). The data order comes from torch.Generator().manual_seed(seed), as in
    stages/train.py; `checkpoint` (a dpai.Checkpoint on a file system every rank reads) is
    saved by rank 0 and resumed by all. This is `dpai.train` with sharded batches: the same
    optimiser, schedule, non-finite-loss stop and metrics (the same dict on every rank)."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config={type(config).__name__} must be a dpai.TrainConfig")
    if not dist.is_initialized():
        raise ValueError("train_ddp needs a process group: call dpai.training.ddp.setup() "
                         "under torchrun first")
    rank, world = dist.get_rank(), dist.get_world_size()
    check_last_batch(data.n_train, config.batch_size, world)
    param = next(model.parameters())
    device = param.device if device is None else device
    dtype = param.dtype
    shard = (rank, world)
    generator = torch.Generator().manual_seed(seed)

    def cast(batches):  # the data layer gives float32; a float64 model trains in float64
        return ((x.to(dtype), y) for x, y in batches) if dtype != torch.float32 else batches

    result = train(
        model, mask,
        lambda epoch: cast(data.train_batches(config.batch_size, generator=generator,
                                              device=device, augment=augment, shard=shard)),
        lambda: cast(data.test_batches(config.batch_size, device=device, shard=shard)),
        config, progress=False, log=log, checkpoint=checkpoint, generators=[generator])
    return {**result, "world_size": world}


def pruned_nonzero(model: nn.Module, mask: Mask) -> int:
    """How many pruned weights are nonzero on this rank (0 after train_ddp)."""
    layers = prunable_layers(model.module if hasattr(model, "module") else model)
    return sum(int((m.weight[~mask[n].to(m.weight.device)] != 0).sum()) for n, m in layers.items())


def main(argv=None):
    from .. import data as data_mod
    from ..files.atomic import write_json
    from ..models import create_model
    ap = argparse.ArgumentParser(description="DDP sparse training (launch with torchrun)")
    ap.add_argument("--data", required=True, help="prepared data root or folder")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mask", help="a mask .pt (default: dense)")
    ap.add_argument("--seed", type=int, default=0, help="data order seed")
    ap.add_argument("--init-seed", type=int, default=None, help="model init (default: --seed)")
    ap.add_argument("--train", default="{}", help="train config as JSON (dpai.TrainConfig)")
    ap.add_argument("--no-sync-bn", action="store_true", help="per-rank BatchNorm statistics")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--out", help="run JSON, written by rank 0")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = TrainConfig.from_dict(json.loads(args.train))
    if args.no_sync_bn:
        config.sync_bn = False
    rank, world, device = setup(device=args.device)
    try:
        data = data_mod.load(args.data, args.dataset, device=device)
        init_seed = args.seed if args.init_seed is None else args.init_seed
        model = create_model(args.model, data.num_classes, data.in_channels, data.image_size,
                             seed=init_seed).to(device)
        mask = Mask.load(args.mask) if args.mask else None
        result = train_ddp(model, mask, data, config, seed=args.seed)
        timing = result.pop("timing")
        if is_main():
            print(f"ddp x{world}: final test accuracy {result['final_test_acc']:.2f} % in "
                  f"{timing['train_seconds']:.1f} s")
        if args.out and is_main():
            write_json(args.out, {"model": args.model, "dataset": args.dataset,
                                  "seed": args.seed, "init_seed": init_seed,
                                  "config": config.to_dict(), **result})
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
