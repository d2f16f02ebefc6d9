"""Fused training of K models of one architecture in one process (torch.func over stacked weights).

    results = train_fused(models, masks, train_batches, test_batches, config)
    results[k]["final_test_acc"]   # the same dict `dpai.train` returns for model k alone

A ResNet-20 at batch 128 leaves a large GPU mostly idle; stacking K models' weights and
vmapping one functional forward over them launches one kernel per layer for all K (HFTA's idea,
done with `torch.func.functional_call` + `vmap` instead of grouped convolutions). Every model
keeps its own mask, init, data order (its own `train_batches[k]`, normally from its own seeded
generator) and BatchNorm statistics (stacked buffers, updated in place per model).

Same numbers as K separate `dpai.train` runs up to floating-point order: the summed loss gives
model k exactly the gradient of its own loss; SGD (momentum, weight decay, Nesterov), the
schedule and the gradient mask are elementwise, so they act on a stacked tensor as on its K
slices. Only the convolution/matmul kernels differ (a batched kernel sums in another order).
tests/test_fused.py checks each model against its separate run.

Not applied here: `config.compile` (rejected) and channels_last (the stacked 5-D batches have no
channels_last layout); bf16 autocast on CUDA is, as in `dpai.train`.
"""
import contextlib
import copy
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from ..core.device import model_device
from ..core.mask import Mask
from ..models import prunable_layers
from .config import TrainConfig


def _full(out):
    """bf16/fp16 logits (autocast) to fp32 for the loss; fp32/fp64 unchanged."""
    return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out


def _check(models, masks, train_batches):
    if not isinstance(models, (list, tuple)) or not models:
        raise ValueError("models must be a non-empty list of nn.Module")
    k = len(models)
    if len(masks) != k or len(train_batches) != k:
        raise ValueError(f"{k} models but {len(masks)} masks and {len(train_batches)} "
                         "train_batches: give one of each per model")
    shapes = [{n: tuple(t.shape) for n, t in m.state_dict().items()} for m in models]
    for i, s in enumerate(shapes[1:], 1):
        if s != shapes[0] or type(models[i]) is not type(models[0]):
            raise ValueError(f"models[{i}] is not the architecture of models[0]: fused "
                             "training needs K models of one architecture")


def train_fused(models, masks, train_batches, test_batches, config: TrainConfig, *,
                device=None, log=print, on_step=None) -> list[dict]:
    """Train the K `models` in place, model k with masks[k] (None: dense) on train_batches[k].

    train_batches: K callables epoch -> iterable of (x, y); at every step the K batches must
    have one shape (same data set and batch size). test_batches: one callable () -> iterable
    (every model is tested on the same batches). Returns K result dicts as `dpai.train`.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config={type(config).__name__} must be a dpai.train.TrainConfig")
    if getattr(config, "compile", False):
        raise ValueError("train.compile=True is not supported by fused training; set it false")
    _check(models, masks, train_batches)
    device = model_device(models[0]) if device is None else torch.device(device)
    k = len(models)
    for model, mask in zip(models, masks):
        model.to(device)
        if mask is not None:
            (mask if isinstance(mask, Mask) else Mask(mask)).apply(model)
    params, buffers = stack_module_state(list(models))  # copies: (K, ...) leaves
    names = [f"{n}.weight" for n in prunable_layers(models[0])]
    pairs = []
    if any(m is not None for m in masks):
        for n, key in zip(prunable_layers(models[0]), names):
            stacked = torch.stack([
                torch.ones_like(params[key][i]) if m is None
                else torch.zeros_like(params[key][i]).copy_(m[n])
                for i, m in enumerate(masks)])
            pairs.append((params[key], stacked))
    stateless = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(stateless, (p, b), (x,))

    batched = vmap(forward)                        # model k on its own batch k
    shared = vmap(forward, in_dims=(0, 0, None))   # every model on the same test batch
    cuda = device.type == "cuda"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.amp
                else contextlib.nullcontext())
    optimizer = torch.optim.SGD(list(params.values()), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones, config.gamma)
    steps = 0
    records = [[] for _ in range(k)]
    start = time.perf_counter()
    for epoch in range(config.epochs):
        t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        stateless.train()
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, dtype=torch.long, device=device)
        n = 0
        for group in zip(*(tb(epoch) for tb in train_batches)):
            x = torch.stack([xb.to(device, non_blocking=True) for xb, _ in group])
            y = torch.stack([yb.to(device, non_blocking=True) for _, yb in group])
            with autocast:
                out = batched(params, buffers, x)                       # (K, B, classes)
                losses = F.cross_entropy(_full(out).flatten(0, 1), y.flatten(),
                                         reduction="none").view(k, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # d(sum_j L_j)/dW_k = dL_k/dW_k
            if pairs:
                torch._foreach_mul_([w.grad for w, _ in pairs], [m for _, m in pairs])
            optimizer.step()
            steps += 1
            if on_step is not None:
                on_step(steps)
            loss_sum.add_(losses.detach() * y.shape[1])
            correct.add_((out.detach().argmax(2) == y).sum(1))
            n += y.shape[1]
        if n == 0:
            raise ValueError(f"train_batches[*]({epoch}) yielded no batches")
        tr_loss, tr_correct = loss_sum.tolist(), correct.tolist()
        step_seconds = time.perf_counter() - t0
        scheduler.step()
        stateless.eval()
        te_loss = torch.zeros(k, device=device)
        te_correct = torch.zeros(k, dtype=torch.long, device=device)
        te_n = 0
        with torch.inference_mode(), autocast:
            for xb, yb in test_batches():
                xb, yb = xb.to(device), yb.to(device)
                out = _full(shared(params, buffers, xb))
                te_loss.add_(F.cross_entropy(out.flatten(0, 1), yb.repeat(k),
                                             reduction="none").view(k, -1).sum(1))
                te_correct.add_((out.argmax(2) == yb).sum(1))
                te_n += len(yb)
        if te_n == 0:
            raise ValueError("test_batches() yielded no batches")
        te_loss, te_correct = te_loss.tolist(), te_correct.tolist()
        seconds = time.perf_counter() - t0
        for i in range(k):
            records[i].append({
                "epoch": epoch, "lr": lr, "train_loss": tr_loss[i] / n,
                "train_acc": 100.0 * tr_correct[i] / n, "test_loss": te_loss[i] / te_n,
                "test_acc": 100.0 * te_correct[i] / te_n, "seconds": seconds,
                "step_seconds": step_seconds})
        if log is not None:
            accs = " ".join(f"{records[i][-1]['test_acc']:.2f}" for i in range(k))
            log(f"fused x{k} epoch {epoch} of {config.epochs} lr {lr:.4g} test_acc {accs} "
                f"({seconds:.1f}s)")
    with torch.no_grad():  # the trained weights and statistics back into the caller's models
        for i, model in enumerate(models):
            for name, t in {**dict(model.named_parameters()),
                            **dict(model.named_buffers())}.items():
                t.copy_((params.get(name) if name in params else buffers[name])[i])
    total = time.perf_counter() - start
    results = []
    for rec in records:
        best = max(rec, key=lambda r: r["test_acc"])
        results.append({"epochs": rec, "final_test_acc": rec[-1]["test_acc"],
                        "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
                        "final_train_acc": rec[-1]["train_acc"], "train_seconds": total,
                        "steps": steps})
    return results


__all__ = ["train_fused"]
