"""Sparse training as in the paper (docs/faithfulness.md): SGD + MultiStepLR + cross-entropy,
with the mask holding throughout (pruned weights exactly 0 after every optimizer step).

    config = TrainConfig(epochs=160, lr=0.1, milestones=[60, 120])
    result = train(model, mask, train_batches, test_batches, config)
    result["final_test_acc"], result["epochs"][-1]

`train_batches(epoch)` and `test_batches()` are callables returning iterables of (x, y); the
data layer seeds and shuffles, this module only consumes. Epochs are numbered from 0, the same
index that `train_batches` receives and that `milestones` refer to.

With `checkpoint=dpai.Checkpoint(...)` the model, optimizer, scheduler, RNG states (torch's and
those of `generators`, e.g. the data order's) and the metrics so far are saved after every
`checkpoint.every` epochs; a later call with the same checkpoint resumes after the last saved
epoch and, on the CPU, ends bit for bit where an uninterrupted run ends. A non-finite loss
stops training (NonFiniteLoss, naming the epoch and step) and keeps the last good checkpoint.

Data-parallel (DDP): called on every rank of an initialised torch.distributed process group of
more than one process, `train` trains a DistributedDataParallel copy. The batch callables then
yield this rank's part of each global batch (`Data.train_batches(..., shard=(rank, world))`,
`Data.test_batches(..., shard=...)`); each rank's loss is its sum over the global batch's
image count times the world size, so DDP's gradient average is the gradient of the global
batch mean; BatchNorm runs over the global batch (`sync_bn`, default); the ranks must hold
the same mask (checked by digest); epoch sums are all-reduced, so every rank returns the same
metrics; only rank 0 logs and saves checkpoints (every rank resumes from them). See
dpai/training/distributed.py for the launcher and tests/test_distributed.py for the equivalence.
"""
import contextlib
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..files.checkpoint import rng_state, set_rng_state
from ..core.device import model_device, resolve_device
from ..core.mask import Mask
from ..models import prunable_layers
from .config import TrainConfig
from .ddp import convert_sync_batchnorm, share_mask, world


def lr_factor(config: TrainConfig):
    """epoch (0-based) -> lr / config.lr: linear warmup, then multistep or cosine decay. With
    warmup_epochs=0 and multistep it is MultiStepLR's gamma ** (milestones passed)."""
    warm, epochs = config.warmup_epochs, config.epochs

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / (epochs - warm)))
        return config.gamma ** sum(epoch >= m for m in config.milestones)
    return factor


def _to(t: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Move a batch tensor to the device without blocking (no-op when already there)."""
    if channels_last and t.dim() == 4:
        return t.to(device, non_blocking=True, memory_format=torch.channels_last)
    return t.to(device, non_blocking=True)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


def _run_epoch(model, batches, device, autocast, channels_last, optimizer=None, step=None,
               world_size=1):
    """One pass; returns (loss sum, correct count, first bad batch, n), sums on the device.

    Sums are device tensors so the loop never waits for the device (no .item() per batch);
    `first bad batch` is the 1-based index of the first batch whose loss was not finite (0:
    none), tracked on the device as well. world_size > 1: the batches are this rank's parts
    of global batches, n is this rank's count (the caller all-reduces the sums)."""
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    batch = torch.zeros((), dtype=torch.long, device=device)
    first_bad = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    for x, y in batches:
        x, y = _to(x, device, channels_last), _to(y, device, False)
        with autocast:
            out = model(x)
            if world_size == 1:
                loss = F.cross_entropy(out, y)
            else:
                # DDP averages the ranks' gradients: sum over the rank's images / global count
                # * world is the global batch mean (also for a last batch that splits unevenly)
                local = F.cross_entropy(out, y, reduction="sum")
                count = torch.full((), y.shape[0], dtype=local.dtype, device=device)
                if optimizer is not None:
                    dist.all_reduce(count)  # asynchronous on the device: no host sync
                loss = local * (world_size / count)
        batch.add_(1)
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()), batch,
                                first_bad)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step()
        if world_size == 1:
            loss_sum.add_(loss.detach().float(), alpha=y.shape[0])
        else:
            loss_sum.add_(local.detach().float())
        correct.add_((out.detach().argmax(1) == y).sum())
        n += y.shape[0]
    return loss_sum, correct, first_bad, n


def train(model: nn.Module, mask: Mask | None, train_batches, test_batches, config: TrainConfig,
          *, device=None, progress: bool = True, log=print, on_step=None, checkpoint=None,
          generators=()) -> dict:
    """Train `model` in place with `mask` held fixed (mask=None: dense) and return the metrics.

    device: None = the model's device (a string like "cuda" or "auto" or a torch.device moves
    the model there). log: called with one line per epoch (None: silent). on_step(step): called
    after every optimizer step with the 1-based global step count (for tests and monitoring;
    it runs inside the inner loop, so it must not sync the device unless that is the point).
    checkpoint: a dpai.Checkpoint to save to and resume from; generators: the CPU generators
    `train_batches` draws from, saved and restored with it.
    Returns the metrics (no wall-clock values) and, under "timing", the seconds spent.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config={type(config).__name__} must be a dpai.TrainConfig")
    # Measured on the 2-core CPU machine: with torch._dynamo imported, the same training steps
    # run about 2x faster (4 digits epochs of ResNet-20, 2 threads: 7.4 s -> 3.6 s). torchvision
    # used to import it as a side effect; dpai no longer imports torchvision at start-up.
    import torch._dynamo  # noqa: F401
    if device is None:
        device = model_device(model)
    else:
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        model.to(device)
    cuda = device.type == "cuda"
    rank, world_size = world()
    if world_size > 1 and config.sync_bn:
        model = convert_sync_batchnorm(model, device)  # in place, before the optimizer
    if cuda:
        model.to(memory_format=torch.channels_last)  # faster convs on tensor cores
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.amp
                else contextlib.nullcontext())

    weights, masks = [], []
    if mask is not None:
        mask = mask if isinstance(mask, Mask) else Mask(mask)
        if world_size > 1:
            share_mask(mask)  # the same mask on every rank, or an error naming the digests
        mask.apply(model)  # validates layer names and shapes, zeroes the pruned weights
        for name, m in prunable_layers(model).items():
            # float 0/1 masks prepared once, in the weight's dtype, device and memory format
            weights.append(m.weight)
            masks.append(torch.zeros_like(m.weight).copy_(mask[name]))

    # train.compile: the step runs through the compiled module (same parameters as `model`);
    # data-parallel: through DDP's wrapper (evaluation runs the plain model on each shard)
    net = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device] if cuda else None,
                                      **_buffer_sync(config.sync_bn))
    net = torch.compile(net) if config.compile else net  # inductor; forward and backward
    eval_net = net if world_size == 1 else model

    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov)
    if config.schedule == "multistep" and config.warmup_epochs == 0:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones,
                                                         config.gamma)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    steps, first_epoch, records = 0, 0, []
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], generators)
        steps, first_epoch, records = state["steps"], state["epoch"], state["records"]
        if log is not None and rank == 0:
            log(f"resuming from checkpoint {checkpoint.path} at epoch {first_epoch} "
                f"(of {config.epochs})")

    def step():
        nonlocal steps
        if masks:
            # Exact: SGD's update of a weight reads only its own grad, weight and momentum
            # buffer. With grad = 0 and weight = 0 there, d = g + wd * w = 0, the buffer
            # b = mu * b + d starts at 0 and stays 0, (nesterov d + mu * b = 0) and
            # w - lr * 0 = 0: every term is an exact 0 in floating point, so pruned weights
            # (and their momentum) stay exactly 0. One fused call over all prunable grads.
            torch._foreach_mul_([w.grad for w in weights], masks)
        optimizer.step()
        steps += 1
        if on_step is not None:
            on_step(steps)

    emit = (tqdm.write if log is print else log) if log is not None and rank == 0 else None
    start, epoch_seconds, step_seconds = time.perf_counter(), [], []
    # progress=True draws the bar on a terminal only (tqdm: disable=None), never into logs
    bar = tqdm(range(first_epoch, config.epochs), desc="train", unit="epoch",
               initial=first_epoch, total=config.epochs,
               disable=None if progress and rank == 0 else True)
    for epoch in bar:
        t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        steps_before = steps
        model.train()
        tr_loss, tr_correct, bad, tr_n = _epoch_sums(
            _run_epoch(net, train_batches(epoch), device, autocast, cuda, optimizer, step,
                       world_size), world_size)
        step_seconds.append(time.perf_counter() - t0)
        if tr_n == 0:
            raise ValueError(f"train_batches({epoch}) yielded no batches")
        if bad:
            kept = (f"; the last good checkpoint (epoch {first_epoch_saved(checkpoint)}) is "
                    f"kept at {checkpoint.path}" if checkpoint is not None
                    and checkpoint.path.is_file() else "")
            raise NonFiniteLoss(f"train: the loss is not finite at epoch {epoch}, step "
                                f"{int(bad)} of the epoch (global step {steps_before + int(bad)}),"
                                f" lr {lr:.4g}: training stopped, no result written{kept}")
        scheduler.step()
        model.eval()
        with torch.inference_mode():
            te_loss, te_correct, _, te_n = _epoch_sums(
                _run_epoch(eval_net, test_batches(), device, autocast, cuda,
                           world_size=world_size), world_size)
        if te_n == 0:
            raise ValueError("test_batches() yielded no batches")
        rec = {"epoch": epoch, "lr": lr,
               "train_loss": tr_loss / tr_n, "train_acc": 100.0 * tr_correct / tr_n,
               "test_loss": te_loss / te_n, "test_acc": 100.0 * te_correct / te_n}
        records.append(rec)
        epoch_seconds.append(time.perf_counter() - t0)
        if (checkpoint is not None and rank == 0 and checkpoint.due(epoch + 1)
                and epoch + 1 < config.epochs):
            checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "rng": rng_state(generators),
                             "steps": steps, "epoch": epoch + 1, "records": records})
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", test_acc=f"{rec['test_acc']:.2f}")
        if emit is not None:
            emit(f"epoch {epoch} of {config.epochs} lr {lr:.4g} "
                 f"train_loss {rec['train_loss']:.4f} train_acc {rec['train_acc']:.2f} "
                 f"test_loss {rec['test_loss']:.4f} test_acc {rec['test_acc']:.2f} "
                 f"({epoch_seconds[-1]:.1f}s)")
    bar.close()

    best = max(records, key=lambda r: r["test_acc"])  # first epoch reaching the maximum
    return {"epochs": records, "final_test_acc": records[-1]["test_acc"],
            "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
            "final_train_acc": records[-1]["train_acc"], "steps": steps,
            "timing": {"train_seconds": time.perf_counter() - start,
                       "epoch_seconds": epoch_seconds, "step_seconds": step_seconds,
                       "resumed_at_epoch": first_epoch}}


def _buffer_sync(sync_bn: bool) -> dict:
    """DDP's keyword for buffer broadcasts: with synchronised BatchNorm every rank's running
    statistics are already the global ones, so none at each forward; without, rank 0's (DDP's
    default). torch 2.14 renamed broadcast_buffers to forward_sync_buffers."""
    if not sync_bn:
        return {}
    import inspect
    from torch.nn.parallel import DistributedDataParallel
    key = ("forward_sync_buffers"
           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
           else "broadcast_buffers")
    return {key: False}


def _epoch_sums(sums, world_size):
    """(loss sum, correct, first bad batch, n) of an epoch as Python numbers, over all ranks:
    the epoch's one host-device sync (and, data-parallel, its one all-reduce)."""
    loss, correct, bad, n = sums
    stacked = torch.stack([loss.double(), correct.double(), bad.double(),
                           torch.tensor(float(n), dtype=torch.float64, device=loss.device)])
    if world_size > 1:
        # a bad batch on any rank stops every rank (the index reported is the largest)
        bad_any = stacked[2:3].clone()
        dist.all_reduce(stacked)
        dist.all_reduce(bad_any, op=dist.ReduceOp.MAX)
        stacked[2:3] = bad_any
    loss, correct, bad, n = stacked.tolist()
    return loss, correct, bad, int(n)


def first_epoch_saved(checkpoint) -> int | None:
    state = checkpoint.load()
    return None if state is None else state["epoch"]


__all__ = ["TrainConfig", "NonFiniteLoss", "train", "world"]
