"""DPaI with the paper defaults on ResNet-20 (CIFAR-10 shape), seeds 0, 1, 2: start and end of
log-paths, nodes, kernels and effective params, next to the authors' figures
(docs/faithfulness.md). Prints figures; asserts nothing (tests/test_dpai.py does).

    python benchmarks/dpai_reference.py [--sparsities 0.9 0.99] [--threads 2] [--table PATH]

Ends with a Markdown table of this run's figures (machine, date, command in every row;
benchmarks/table.py); the authors' figures are printed above it as quoted text.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dpai  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)

AUTHORS = {0.9: "log P 92.3 -> 102.8..103.1, nodes 794 -> 677..706, kernels 18.5k -> "
                "10.7..12.7k, params 27.04..27.10k",
           0.99: "log P 42.8..43.6 -> 70.1..72.4, nodes 750..757 -> 269..287, kernels 2.5k -> "
                 "1.45..1.49k, params 2.61k -> 2.69..2.71k"}
KEYS = ("objective", "log_paths", "nodes", "kernels", "params")


def num(x):
    """A trajectory figure as printed (2 decimals), without trailing zeros."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.9, 0.99])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    rows = []
    for sparsity in args.sparsities:
        print(f"sparsity {sparsity}: authors' code: {AUTHORS.get(sparsity, 'n/a')}")
        print("seed  " + "  ".join(f"{k:>19}" for k in KEYS) + "  seconds")
        for seed in args.seeds:
            mask = dpai.prune(model, "dpai", sparsity, seed=seed)
            traj = mask.info["trajectory"]
            cells = [f"{traj[k][0]:>8.2f} -> {traj[k][-1]:>8.2f}" for k in KEYS]
            print(f"{seed:<4}  " + "  ".join(cells) + f"  {mask.info['seconds']:.1f}")
            rows.append([sparsity, seed, args.threads,
                         *(f"{num(traj[k][0])} -> {num(traj[k][-1])}" for k in KEYS),
                         secs(mask.info["seconds"])])
    emit(["sparsity", "seed", "threads", *(f"{k} (start -> end)" for k in KEYS), "seconds"], rows,
         args.table)


if __name__ == "__main__":
    main()
