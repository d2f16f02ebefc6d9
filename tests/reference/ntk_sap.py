"""Regenerate tests/reference/ntk_sap.json: NTK-SAP's own pruner on the fixed inputs.

Reference: github.com/YiteWang/NTK-SAP at COMMIT (a Synaptic-Flow fork). Its `NTKSAP`
pruner (Pruners/pruners.py) runs through its `prune_loop` (prune.py) on its lottery ResNet-20,
with our seed-0 ResNet-20 weights copied in (common.copy_weights) and a "data loader" of one
batch shaped like common.batch() (100 images, 3x32x32; NTK-SAP only reads its shape: its inputs
are fresh N(0, 1) noise), global scope, exponential schedule, --prune-train-mode True, as
scripts/run.sh. NTK-SAP re-draws every weight and the noise from torch's global RNG, so its
mask depends on that seed: the fixture keeps per-layer kept counts for several seeds (their
spread is the reference's own seed-to-seed variation), not masks.

Settings (name -> rounds T, draws R per round, epsilon):
- "default": T=20, R=5, eps=0.01, the CIFAR-10 settings of scripts/run.sh (slow on one CPU
  thread: the seconds are recorded);
- "fast": T=4, R=1, eps=0.01, cheap enough for tests/test_ntk_sap.py to match in its time;
- "one_round": T=1, R=2, eps=0.01: one scoring round. Our method draws its random numbers in
  the reference's order (re-drawn weights in module order, input, perturbations) from a
  generator seeded like the reference's global RNG, so with the same seed it scores on the
  very same draws and its one-round mask must match up to float rounding at the threshold.
  Over several rounds those few flipped weights change the next rounds' networks, and the
  masks drift apart to the reference's seed-to-seed spread ("fast", "default").

The reference quits when its mask misses the target by >= 5 weights (its `<=` threshold
prunes every tie); that exit is caught and the miss recorded (`reached`), the mask kept.

Run: python tests/reference/ntk_sap.py [--settings default fast] [--seeds 0 1 2]
[--sparsities 0.9 0.99] (runs are merged into the existing fixture)
(needs the fetched repository under /work/.mirror, or --source <clone>; the reference
imports tqdm and pandas, `pip install tqdm pandas`; they are not project dependencies).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = "YiteWang/NTK-SAP"
COMMIT = "e23682b"
OUT = common.FIXTURES / "ntk_sap.json"
SPARSITIES = (0.9, 0.99)
SETTINGS = {"default": {"rounds": 20, "draws": 5, "epsilon": 0.01},
            "fast": {"rounds": 4, "draws": 1, "epsilon": 0.01},
            "one_round": {"rounds": 1, "draws": 2, "epsilon": 0.01}}


def run_reference(tree: Path, sparsity: float, seed: int, rounds: int, draws: int,
                  epsilon: float) -> dict:
    sys.path.insert(0, str(tree))
    from Models import lottery_resnet
    from Pruners import pruners
    from Utils import generator
    import prune as ref_prune

    theirs = lottery_resnet.resnet20((3, 32, 32), common.NUM_CLASSES)
    ref_layers = common.copy_weights(common.our_model(), theirs)
    x, y = common.batch()
    pruner = pruners.NTKSAP(generator.masked_parameters(theirs, False, False, False),
                            ntksap_epsilon=epsilon, ntksap_R=draws)
    torch.manual_seed(seed)
    start = time.perf_counter()
    reached = True
    try:
        # the reference's `sparsity` argument is the density kept
        ref_prune.prune_loop(theirs, torch.nn.CrossEntropyLoss(), pruner, [(x, y)],
                             torch.device("cpu"), 1 - sparsity, "exponential", "global", rounds,
                             train_mode=True)
    except SystemExit:
        reached = False
    seconds = time.perf_counter() - start
    masks = [m.weight_mask for m in ref_layers]
    counts = common.kept_counts(masks)
    return {"counts": counts, "total": sum(counts.values()), "reached": reached,
            "seconds": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="a clone of the reference repository")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    tree = common.checkout(REPO, COMMIT, args.source)
    meta = {"repo": REPO, "commit": COMMIT, "model": "resnet20 (ours, seed 0) -> lottery "
                 "resnet20", "batch_shape": list(common.batch()[0].shape), "train_mode": True,
                 "schedule": "exponential", "scope": "global", "torch": torch.__version__,
                 "threads": 1,
                 "layers": common.layer_names()}
    for name in args.settings:
        for sparsity in args.sparsities:
            for seed in args.seeds:
                result = run_reference(tree, sparsity, seed, **SETTINGS[name])
                print(name, sparsity, seed, result["total"], result["seconds"], "s", flush=True)
                # merged into the file as it is now: several runs may write it in turn
                data = common.read(OUT.name) if OUT.exists() else {}
                data.update(meta)
                block = data.setdefault("runs", {}).setdefault(name, {"results": {}})
                block["settings"] = SETTINGS[name]
                block["command"] = " ".join(["python tests/reference/ntk_sap.py", *sys.argv[1:]])
                block["results"].setdefault(str(sparsity), {})[str(seed)] = result
                common.write(OUT, data)


if __name__ == "__main__":
    main()
