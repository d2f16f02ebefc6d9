"""DPaI with the paper defaults on ResNet-20 (CIFAR-10 shape), seeds 0, 1, 2: start and end of
log-paths, nodes, kernels and effective params, next to the authors' figures
(dpai-method.md section 5). Prints figures; asserts nothing (tests/test_dpai.py does).

    python benchmarks/dpai_reference.py [--sparsities 0.9 0.99] [--threads 2]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dpai  # noqa: E402

AUTHORS = {0.9: "log P 92.3 -> 102.8..103.1, nodes 794 -> 677..706, kernels 18.5k -> "
                "10.7..12.7k, params 27.04..27.10k",
           0.99: "log P 42.8..43.6 -> 70.1..72.4, nodes 750..757 -> 269..287, kernels 2.5k -> "
                 "1.45..1.49k, params 2.61k -> 2.69..2.71k"}
KEYS = ("objective", "log_paths", "nodes", "kernels", "params")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.9, 0.99])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    for sparsity in args.sparsities:
        print(f"sparsity {sparsity}: authors' code: {AUTHORS.get(sparsity, 'n/a')}")
        print("seed  " + "  ".join(f"{k:>19}" for k in KEYS) + "  seconds")
        for seed in args.seeds:
            mask = dpai.prune(model, "dpai", sparsity, seed=seed)
            traj = mask.info["trajectory"]
            cells = [f"{traj[k][0]:>8.2f} -> {traj[k][-1]:>8.2f}" for k in KEYS]
            print(f"{seed:<4}  " + "  ".join(cells) + f"  {mask.info['seconds']:.1f}")


if __name__ == "__main__":
    main()
