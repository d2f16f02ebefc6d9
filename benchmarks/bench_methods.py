"""Seconds per mask of the iterative methods that cost many forwards per mask: NTK-SAP and PX
(tens of thousands of image forwards at their reference defaults) next to SynFlow (one
all-ones image per round), each at its defaults on ResNet-20 (CIFAR-10 shape, 10 classes,
3x32x32), sparsity 0.99. The data-driven ones score on a synthetic sample of the pipeline's
default size (10 images per class). Prints figures; asserts nothing.

    python benchmarks/bench_methods.py [--methods ntk_sap px synflow] [--threads 2]
                                       [--repeats 1] [--device cpu|cuda] [--table PATH]

Ends with a Markdown table (machine, date, command in every row; benchmarks/table.py).
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dpai  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)

SPARSITY = 0.99
PER_CLASS = 10


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=["ntk_sap", "px", "synflow"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="masks per method (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32,
                              seed=0).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10 * PER_CLASS, 3, 32, 32, generator=g)
    data = [(x.to(device), (torch.arange(len(x)) % 10).to(device))]
    rows = []
    for method in args.methods:
        seconds = []
        for seed in range(args.repeats):
            mask = dpai.prune(model, method, SPARSITY, seed=seed,
                              data=data if method in dpai.DATA_DRIVEN else None)
            seconds.append(mask.info["seconds"])
        options = ", ".join(f"{k}={v}" for k, v in mask.info["params"].items())
        print(f"{method:8s} {statistics.median(seconds):8.2f} s/mask  ({options})")
        rows.append([method, options, args.threads, args.repeats,
                     secs(statistics.median(seconds))])
    emit(["method", "options", "threads", "masks", "seconds per mask (median)"], rows,
         args.table, device=device)


if __name__ == "__main__":
    main()
