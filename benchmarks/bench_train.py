"""Training throughput: `dpai.train`'s loop vs plain PyTorch loops, same model, mask and steps.

    python3 benchmarks/bench_train.py --steps 50 --threads 2 --device auto [--table PATH]

ResNet-20 on CIFAR-10-shaped random tensors (3x32x32, 10 classes, batch 128, held in memory)
with a 99 % sparse random ERK mask. Each loop warms up, then runs --steps timed SGD steps
(the device is synchronised before the clock stops). Ends with a Markdown table (machine, date,
command in every row; benchmarks/table.py); asserts nothing.

Loops:
  plain       zero_grad, forward, backward, SGD step, then w.mul_(mask) for every weight
  reference   as plain, plus the reference's per-step loss.item() / correct.item() stats
  dpai.train  dpai.train (grads masked with one fused op, stats summed on the device),
              amp=False; on CUDA also amp=True (bf16 autocast); on CUDA both
              run channels_last, the plain loops do not
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import dpai  # noqa: E402
from dpai.models import prunable_layers  # noqa: E402
from dpai.training import TrainConfig, train  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)

BATCH, SHAPE, CLASSES, POOL = 128, (3, 32, 32), 10, 4


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(device):
    """A small pool of random batches, cycled (the data layer is not what is measured)."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(BATCH, *SHAPE, generator=g).to(device),
             torch.randint(0, CLASSES, (BATCH,), generator=g).to(device)) for _ in range(POOL)]


def setup(device):
    model = dpai.create_model("resnet20", CLASSES, SHAPE[0], SHAPE[1], seed=0).to(device)
    mask = dpai.prune(model, "random_erk", 0.99, seed=0)
    return model, mask


def plain_loop(device, batches, warmup, steps, reference_stats):
    """The reference style: SGD step, then re-multiply each weight by its mask."""
    model, mask = setup(device)
    mask.apply(model)
    pairs = [(m.weight, mask[n].to(device, m.weight.dtype))
             for n, m in prunable_layers(model).items()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    train_loss = correct = total = 0

    def one(i):
        nonlocal train_loss, correct, total
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, m in pairs:
                w.mul_(m)
        if reference_stats:  # one host-device sync per .item()
            train_loss += loss.item()
            correct += (out.argmax(1) == y).sum().item()
            total += y.shape[0]

    for i in range(warmup):
        one(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        one(i)
    sync(device)
    return time.perf_counter() - start


def dpai_loop(device, batches, warmup, steps, amp):
    """dpai.train with epoch 0 = warm-up and epoch 1 = the timed steps (its step_seconds)."""
    model, mask = setup(device)
    counts = {0: warmup, 1: steps}

    def train_batches(epoch):
        return (batches[i % len(batches)] for i in range(counts[epoch]))

    def test_batches():
        return batches[:1]

    cfg = TrainConfig(epochs=2, batch_size=BATCH, lr=0.1, momentum=0.9, weight_decay=1e-4,
                      milestones=[100], amp=amp)
    result = train(model, mask, train_batches, test_batches, cfg, progress=False, log=None)
    return result["timing"]["step_seconds"][1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="timed optimizer steps per loop")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the clock")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads(N)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    args = ap.parse_args(argv)
    for key in ("steps", "warmup", "threads"):
        if getattr(args, key) < (0 if key == "warmup" else 1):
            ap.error(f"--{key}={getattr(args, key)} must be >= {0 if key == 'warmup' else 1}")
    torch.set_num_threads(args.threads)
    device = dpai.resolve_device(args.device)
    batches = make_batches(device)

    rows = [("plain", lambda: plain_loop(device, batches, args.warmup, args.steps, False)),
            ("reference", lambda: plain_loop(device, batches, args.warmup, args.steps, True)),
            ("dpai.train", lambda: dpai_loop(device, batches, args.warmup, args.steps, False))]
    if device.type == "cuda":
        rows.append(("dpai.train amp", lambda: dpai_loop(device, batches, args.warmup,
                                                         args.steps, True)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"resnet20 {SHAPE} batch {BATCH}, random_erk 99% sparse, device {name}, "
          f"threads {args.threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, torch {torch.__version__}")
    print(f"{'loop':<16}{'seconds':>10}{'images/s':>12}{'vs plain':>10}")
    base, table = None, []
    omp = os.environ.get("OMP_NUM_THREADS")
    for label, fn in rows:
        seconds = fn()
        rate = args.steps * BATCH / seconds
        base = base or rate
        print(f"{label:<16}{seconds:>10.3f}{rate:>12.1f}{rate / base:>10.2f}")
        threads = args.threads if omp is None else f"{args.threads} (OMP_NUM_THREADS={omp})"
        table.append([label, str(device), threads, f"{args.steps} after {args.warmup} warm-up",
                      secs(seconds), f"{rate:.1f}", f"{rate / base:.2f}"])
    emit(["loop", "device", "threads", "timed steps", "seconds", "images/s", "vs plain"], table,
         args.table, device)


if __name__ == "__main__":
    main()
