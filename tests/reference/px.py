"""Regenerate tests/reference/px.json: PX's own pruner on the fixed inputs.

Reference: github.com/iurada/px-ntk-pruning, class PX of lib/pruners.py, run through the
prune loop of train_classification.py (model.eval(), then per round t = 1..T: score, keep the
global top d^(t/T)) on its lottery ResNet-20 (lib/models/lottery_resnet.py; 82ce2bf also
builds lib/models/lottery_resnet_no_act.py as its auxiliary model) with our seed-0 ResNet-20
weights copied in (common.copy_weights) and one batch, common.batch() (100 images, 10 per
class), as the data. PX draws no random numbers, so masks are kept (hashes, common.mask_hash).

Variants (name -> commit, what is changed around the code):
- "fixed": ED6C40E (HEAD) with two source edits in the temporary work tree: the path-kernel
  network's `.train()` becomes `.eval()`, and the shortcut BatchNorm ("shortcut.1", the one
  BatchNorm whose name lacks "bn") joins the skipped names. This is dpai's default
  (version="fixed").
- "head": ED6C40E as it is (dpai version="head"); used for the one-round degeneracy check.
- "release": RELEASE (82ce2bf, the CVPR 2024 code) as it is (dpai version="release").
Around the code for every variant: HEAD's class-balanced subset is the batch itself (its
get_balanced_subset would regroup the images by class and cannot hash tensor labels); the
batch is one batch (82ce2bf's batch_limit=2 never binds). Selection: "reference" = its own
_global_mask (kthvalue threshold, k = int((1 - d_t) N), every tie at the threshold pruned);
"exact" = its _global_mask replaced by dpai's (round(N d^(t/T)) kept, pruned weights at -inf,
ties by global_topk with a generator seeded 0 once per run), so scoring alone is compared.

Run: python tests/reference/px.py [--jobs 2] (20 minutes with --jobs 2 on a busy 2-core CPU; each
100-round run 5.5-7 minutes, recorded). Needs the fetched repository under /work/.mirror (or
--source <clone>) and `pip install tqdm` (imported by the reference; not a project
dependency; 82ce2bf also imports torchvision's model zoo helpers through its DeepLab files).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = "iurada/px-ntk-pruning"
HEAD = "ed6c40e"
RELEASE = "82ce2bf"
OUT = common.FIXTURES / "px.json"
SPARSITIES = (0.9, 0.99)
COMMITS = {"fixed": HEAD, "head": HEAD, "release": RELEASE}
# (variant, selection, rounds) for each sparsity
RUNS = [("fixed", "exact", 100), ("fixed", "reference", 100), ("fixed", "exact", 5),
        ("release", "exact", 100), ("release", "exact", 5)]


def patch_fixed(tree: Path) -> None:
    path = tree / "lib" / "pruners.py"
    src = path.read_text()
    edits = [("pk_model = copy.deepcopy(model).train().to(device)",
              "pk_model = copy.deepcopy(model).eval().to(device)", 1),
             ("skip_layers = ['weight_mask', 'bias_mask', 'bn', 'fc']",
              "skip_layers = ['weight_mask', 'bias_mask', 'bn', 'fc', 'shortcut.1']", 2)]
    for old, new, count in edits:
        if src.count(old) != count:
            raise SystemExit(f"patch: {old!r} found {src.count(old)} times, expected {count}")
        src = src.replace(old, new)
    path.write_text(src)


def setup(variant: str, source):
    tree = common.checkout(REPO, COMMITS[variant], source)
    if variant == "fixed":
        patch_fixed(tree)
    sys.path.insert(0, str(tree))
    from globals import CONFIG
    CONFIG.update({"dataset": "CIFAR10", "num_classes": common.NUM_CLASSES, "batch_size": 128,
                   "experiment_args": {"batch_limit": 2, "aux_model": "resnet20_no_act",
                                       "examples_per_class": common.PER_CLASS}})
    from lib import pruners
    from lib.generator import masked_parameters
    from lib.models.lottery_resnet import resnet20
    if hasattr(pruners.PX, "get_balanced_subset"):
        pruners.PX.get_balanced_subset = lambda self, dataset, n: dataset
    return pruners, masked_parameters, resnet20


def exact_selection(pruner, generator):
    """dpai's selection in place of the reference's _global_mask (counts of dpai's schedule)."""
    from dpai.core.select import global_topk

    def select(density):
        pairs = pruner.masked_parameters
        n = sum(p.numel() for _, p in pairs)
        k = pruner.counts.pop(0)
        scores = {str(i): pruner.scores[id(p)].clone().masked_fill_(m == 0, float("-inf"))
                  for i, (m, p) in enumerate(pairs)}
        keep = global_topk(scores, k, generator)
        for i, (m, _) in enumerate(pairs):
            m.copy_(keep[str(i)].to(m.dtype))
        assert n == sum(m.numel() for m, _ in pairs)
    return select


def worker(variant: str, selection: str, sparsity: float, rounds: int, source) -> dict:
    torch.set_num_threads(1)
    pruners, masked_parameters, resnet20 = setup(variant, source)
    from dpai.methods.scoring import exponential_counts
    theirs = resnet20(num_classes=common.NUM_CLASSES)
    ours = common.our_model()
    common.copy_weights(ours, theirs)
    x, y = common.batch()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)
    pruner = pruners.PX(masked_parameters(theirs))
    if selection == "exact":
        pruner.counts = exponential_counts(ours, sparsity, rounds)
        pruner._global_mask = exact_selection(pruner, torch.Generator().manual_seed(0))
    theirs.eval()  # as train_classification.py does for PX before the rounds
    start = time.perf_counter()
    for t in range(rounds):
        # the reference's `sparsity` is the density kept
        pruner.score(theirs, None, loader, "cpu")
        pruner.mask((1 - sparsity) ** ((t + 1) / rounds), "global")
    seconds = time.perf_counter() - start
    masks = [m.bool() for m, _ in pruner.masked_parameters]
    return {"kept": common.kept_counts(masks), "hash": common.mask_hash(masks),
            "total": int(sum(m.sum() for m in masks)), "seconds": round(seconds, 1)}


def degeneracy(source) -> dict:
    """One round of HEAD as it is and of "fixed" at 90 %: z2 and the scores."""
    out = {}
    for variant in ("head", "fixed"):
        out[variant] = json.loads(subprocess.run(
            [sys.executable, __file__, "--degeneracy-worker", variant]
            + (["--source", source] if source else []),
            check=True, capture_output=True, text=True).stdout)
    return out


def degeneracy_worker(variant: str, source) -> dict:
    torch.set_num_threads(1)
    pruners, masked_parameters, resnet20 = setup(variant, source)
    theirs = resnet20(num_classes=common.NUM_CLASSES)
    common.copy_weights(common.our_model(), theirs)
    x, y = common.batch()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)
    seen = []  # fc inputs/outputs of the deep copies PX makes (hooks are copied with them)
    theirs.fc.register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), o.detach())))
    pruner = pruners.PX(masked_parameters(theirs))
    theirs.eval()
    pruner.score(theirs, None, loader, "cpu")
    pooled, z2 = seen[-1]  # the path-kernel network runs last
    scores = torch.cat([s.flatten() for s in pruner.scores.values()])
    conv = torch.cat([pruner.scores[id(p)].flatten() for _, p in pruner.masked_parameters[:-1]])
    return {"z2_first_image": [round(v, 6) for v in z2[0].tolist()],
            "z2_minus_fc_bias_max_abs": float((z2 - theirs.fc.bias).abs().max()),
            "pooled_max_abs": float(pooled.abs().max()),
            "score_max": float(scores.max()), "score_median": float(scores.median()),
            "conv_score_max": float(conv.max()),
            "fraction_zero": float((scores == 0).double().mean()),
            "distinct_values": int(scores.unique().numel()), "num_scores": scores.numel()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--worker", nargs=4, metavar=("VARIANT", "SELECTION", "SPARSITY", "ROUNDS"))
    ap.add_argument("--degeneracy-worker")
    args = ap.parse_args()
    if args.worker:
        v, s, sp, r = args.worker
        print(json.dumps(worker(v, s, float(sp), int(r), args.source)))
        return
    if args.degeneracy_worker:
        print(json.dumps(degeneracy_worker(args.degeneracy_worker, args.source)))
        return
    jobs = [(v, s, sp, r) for v, s, r in RUNS for sp in SPARSITIES]
    procs, results = [], {}
    cmd = [sys.executable, __file__] + (["--source", args.source] if args.source else [])
    while jobs or procs:
        while jobs and len(procs) < args.jobs:
            job = jobs.pop(0)
            procs.append((job, subprocess.Popen(cmd + ["--worker", *map(str, job)],
                                                stdout=subprocess.PIPE, text=True)))
        job, p = procs.pop(0)
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"{job} failed")
        v, s, sp, r = job
        results[f"{v}/{s}/{sp}/{r}"] = json.loads(out)
        print(job, results[f"{v}/{s}/{sp}/{r}"]["total"], flush=True)
    common.write(OUT, {
        "repo": REPO, "commits": COMMITS, "runs": results,
        "degeneracy_one_round_90": degeneracy(args.source),
        "settings": {"model": "common.our_model() (ResNet-20, seed 0) copied into the "
                              "reference's lottery ResNet-20", "data": "[common.batch()]",
                     "schedule": "exponential, d_t = d^(t/T)", "threads": 1,
                     "keys": "variant/selection/sparsity/rounds"},
        "command": "python tests/reference/px.py --jobs 2"})


if __name__ == "__main__":
    main()
