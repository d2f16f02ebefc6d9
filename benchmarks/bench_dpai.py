"""Seconds per DPaI step for the paper's three settings (prints figures; asserts nothing).

    python benchmarks/bench_dpai.py [--threads 2] [--steps 20] [--device auto] [--table PATH]

The authors' code on this 2-core CPU: ResNet-20 27 ms, ResNet-18 (64x64, 200 classes) 1.0 s,
VGG-19-BN (CIFAR-100) 1.8 s per step (docs/faithfulness.md). Run on an idle machine. Ends with
a Markdown table (machine, date, command in every row; benchmarks/table.py).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dpai  # noqa: E402
from dpai.methods.dpai_method import DPaI  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)

SETTINGS = [("resnet20", 10, 32, 27e-3), ("resnet18", 200, 64, 1.0), ("vgg19_bn", 100, 32, 1.8)]


def seconds_per_step(name, classes, size, steps, warmup, device, sparsity):
    model = dpai.create_model(name, num_classes=classes, in_channels=3, image_size=size).to(device)
    search = DPaI(model, sparsity, seed=0)
    for _ in range(warmup):
        search.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        last = search.step()
    last.tolist()  # waits for the device
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (x10 for resnet20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="*", default=[s[0] for s in SETTINGS])
    parser.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = dpai.resolve_device(args.device)
    print(f"DPaI step time, sparsity {args.sparsity}, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<10} {'input':<13} {'s/step':>9} {'authors (2-core CPU)':>21}")
    rows = []
    for name, classes, size, reference in SETTINGS:
        if name not in args.models:
            continue
        steps = args.steps * (10 if name == "resnet20" else 1)
        sec = seconds_per_step(name, classes, size, steps, args.warmup, device, args.sparsity)
        print(f"{name:<10} {f'3x{size}x{size}/{classes}':<13} {sec:>9.4f} {reference:>20.3f}")
        rows.append([name, f"3x{size}x{size}, {classes} classes", args.sparsity, str(device),
                     torch.get_num_threads(), steps, secs(sec), secs(reference)])
    emit(["model", "input", "sparsity", "device", "threads", "timed steps", "s/step",
          "authors' s/step (2-core CPU)"], rows, args.table, device)


if __name__ == "__main__":
    main()
