"""Data-parallel sparse training (DDP) launched by torchrun, on one or several machines.

    torchrun --nproc_per_node 2 -m dpai.distributed --data data/digits --dataset digits \\
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
import hashlib
import json
import os

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from .mask import Mask
from .models import prunable_layers
from .train import TrainConfig, train


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1 or (dist.is_available() and dist.is_initialized())


def is_main() -> bool:
    """True on the rank that writes files (rank 0, or the only process)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def setup(backend: str | None = None, device: str = "auto"):
    """Join the process group torchrun describes; returns (rank, world_size, device).

    device auto: cuda:LOCAL_RANK with NCCL when CUDA is there, else the CPU with gloo."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of ['auto', 'cpu', 'cuda']")
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not cuda:
        raise ValueError("device='cuda' but CUDA is not available here")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    return dist.get_rank(), dist.get_world_size(), dev


def mask_digest(mask: Mask) -> str:
    """SHA-256 over the layer names, shapes and bits of a mask."""
    h = hashlib.sha256()
    for name in sorted(mask.keys()):
        m = mask[name].detach().to("cpu", torch.bool).contiguous()
        h.update(f"{name}:{tuple(m.shape)};".encode())
        h.update(m.numpy().tobytes())
    return h.hexdigest()


def share_mask(mask: Mask) -> Mask:
    """Check that every rank holds the same mask (by digest); raise naming the ranks if not."""
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, mask_digest(mask))
    if len(set(digests)) != 1:
        raise ValueError(f"the ranks hold different masks: digests {digests}; compute or load "
                         "the mask once (same file, same seed) for every rank")
    return mask


def broadcast_mask(mask: Mask | None) -> Mask:
    """Rank 0's mask on every rank (the others may pass None)."""
    box = [({n: t.cpu() for n, t in mask.items()}, dict(mask.info)) if mask is not None
           else None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        raise ValueError("broadcast_mask: rank 0 has no mask")
    return Mask(*box[0])


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all ranks, for any backend (gloo on the CPU).

    Mean, then the centred sum of squares, each all-reduced with the differentiable
    torch.distributed.nn all_reduce (its backward all-reduces the gradients, as the global
    statistics need). Running statistics: the global mean and the unbiased global variance."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        c = x.shape[1]
        local = torch.cat([x.sum((0, 2, 3)),
                           torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)])
        total = dist_fn.all_reduce(local)
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean[None, :, None, None]
        var = dist_fn.all_reduce((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (self.momentum if self.momentum is not None
                     else 1.0 / float(self.num_batches_tracked))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (count / (count - 1)) if count > 1 else var.detach()
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d synchronised: torch's SyncBatchNorm on CUDA, SyncBatchNorm2d else."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(child.weight.device,
                                                                child.weight.dtype)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def _check_last_batch(n: int, batch_size: int, world: int) -> None:
    """Every rank needs one image of every global batch, the last (smallest) included."""
    last = n % batch_size or batch_size
    if n and last < world:
        raise ValueError(f"train.batch_size={batch_size}: the last batch of the {n} training "
                         f"images has {last} < {world} images, one per rank at least; "
                         "choose a batch size that leaves a larger last batch")


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
        raise ValueError(f"config={type(config).__name__} must be a dpai.train.TrainConfig")
    if not dist.is_initialized():
        raise ValueError("train_ddp needs a process group: call dpai.distributed.setup() "
                         "under torchrun first")
    rank, world = dist.get_rank(), dist.get_world_size()
    _check_last_batch(data.n_train, config.batch_size, world)
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
    from . import data as data_mod
    from .io import write_json
    from .models import create_model
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
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("DPAI_THREADS", "1")))
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
