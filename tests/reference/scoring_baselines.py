"""Reference fixture for SNIP, iterative SNIP and GraSP in both scoring modes.

Runs the prune loop of the NPB code base (github.com/pvh1602/NPB, a fork of Synaptic-Flow,
github.com/ganguli-lab/Synaptic-Flow; the harness behind the DPaI paper's baseline numbers) on
the fixed inputs of common.py: our seed-0 ResNet-20 copied into the reference's lottery
ResNet-20, and the 100-image batch as the prune loader's only batch. Each method runs with the
model in eval mode (the harness default: `--prune-train-mode` is never given by the NPB or DPaI
run scripts) and in train mode, at 90 % and 99 % sparsity (`--compression 1` and `2`).

How the harness is driven (its defaults, as in NPB's main.py):
- pruner classes `SNIP` and `GraSP` of Pruners/pruners.py on `generator.masked_parameters(
  model)` with prune_bias, prune_batchnorm, prune_residual all False, and a pruned classifier
  (dense_classifier False): the prunable set is every conv and linear weight, shortcut 1x1
  convs and the classifier included -- the same set as ours;
- `prune.prune_loop` with mask scope "global", schedule "exponential"; SNIP and GraSP one
  round (`--prune-epochs 1`, the default); iterative SNIP is the SNIP pruner with
  `--prune-epochs 100` (the setting NPB's main.py names "iter_snip"), plus a 10-round run for
  the fast test; loss nn.CrossEntropyLoss (mean over the batch);
- GraSP: temperature 200 and the whole batch in one pass (this harness does not split the batch
  in halves as the GraSP authors' code does), i.e. our `temperature=200,
  scoring_batch_size=None`.

What is recorded per run: per-layer kept counts (our layer names), the mask hash
(common.mask_hash), the kept total and how many scores tie with the threshold (the reference
prunes every score <= the k-th smallest, so ties would keep fewer than asked); for iterative
SNIP, how many weights the loop re-admits after they were pruned. Also the Jaccard index between
the eval-mode and train-mode masks of each method and sparsity.

Usage (needs the fetched copies under /work/.mirror, or --npb/--synflow with clone paths):
    python tests/reference/scoring_baselines.py            # regenerate the fixture
    python tests/reference/scoring_baselines.py --table    # also print ours vs the reference
The reference runs on the CPU with one thread, so the masks are reproducible. Packages the
reference code needs beyond this project's: tqdm, pandas, cvxpy (imported by NPB's pruner
module, not used here); seaborn is replaced by an empty module if absent.
"""
import argparse
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import common  # noqa: E402

NPB = ("pvh1602/NPB", "090830c388bcbf7fa62260343e76e5a2eb55f41d")
SYNFLOW = ("ganguli-lab/Synaptic-Flow", "9dfa57aa4012c34028ee646d367f18e32f0e3bc7")
FIXTURE = common.FIXTURES / "scoring_baselines.json"
SPARSITIES = (0.9, 0.99)
COMPRESSION = {0.9: 1.0, 0.99: 2.0}  # the harness's --compression: density = 10 ** -c
MODES = ("eval", "train")
ITER_ROUNDS = (100, 10)  # 100: NPB's iterative SNIP; 10: the same loop, short, for the test
PACKAGES = ("Layers", "Models", "Pruners", "Utils", "prune")
CODE = ("Layers", "Models", "Pruners", "Utils", "prune.py")  # all a prune loop run imports


def checkout_code(repo: str, commit: str, source: str | None = None) -> Path:
    """A temporary tree of the reference's code folders only (the fetched Synaptic-Flow copy
    lacks the large result files of its history, so a whole-tree archive fails)."""
    git_dir = Path(source) if source else Path("/work/.mirror") / repo.replace("/", "+") / "repo"
    out = Path(tempfile.mkdtemp(prefix=repo.replace("/", "+") + "-"))
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", commit, *CODE],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def key(method: str, mode: str, sparsity: float, rounds: int | None = None) -> str:
    return f"{method}/{mode}/{sparsity}" + (f"/r{rounds}" if rounds else "")


def load_reference(root: Path) -> types.SimpleNamespace:
    """Import the reference's model, generator, pruners and prune loop from a work tree."""
    for name in list(sys.modules):
        if name.split(".")[0] in PACKAGES:
            del sys.modules[name]
    if "seaborn" not in sys.modules:
        try:
            import seaborn  # noqa: F401
        except ImportError:  # only NPB's plotting helpers use it
            sys.modules["seaborn"] = types.ModuleType("seaborn")
    sys.path.insert(0, str(root))
    try:
        from Models import lottery_resnet
        from Pruners import pruners
        from Utils import generator
        import prune
    finally:
        sys.path.remove(str(root))
    prune.tqdm = iter  # no progress bar per run
    return types.SimpleNamespace(resnet20=lottery_resnet.resnet20, pruners=pruners,
                                 generator=generator, prune=prune)


def run_reference(ref, method: str, mode: str, sparsity: float, rounds: int = 1) -> dict:
    """One prune_loop run; returns the masks (module order) and what the run recorded."""
    ours = common.our_model()
    model = ref.resnet20((3, 32, 32), common.NUM_CLASSES, dense_classifier=False)
    common.copy_weights(ours, model)
    pruner_cls = {"snip": ref.pruners.SNIP, "grasp": ref.pruners.GraSP,
                  "iter_snip": ref.pruners.SNIP}[method]
    pruner = pruner_cls(ref.generator.masked_parameters(model, False, False, False))
    history = []
    mask_step = pruner.mask

    def recording_mask(density, scope):  # keep each round's mask to count re-admissions
        mask_step(density, scope)
        history.append([m.detach().bool().clone() for m, _ in pruner.masked_parameters])

    pruner.mask = recording_mask
    x, y = common.batch()
    density = 10 ** -COMPRESSION[sparsity]
    loop_args = dict(reinitialize=False, train_mode=mode == "train", shuffle=False, invert=False)
    if "args" in ref.prune.prune_loop.__code__.co_varnames:  # NPB's loop reads its CLI args
        loop_args["args"] = types.SimpleNamespace(pruner=method.replace("iter_", ""),
                                                  shuffle=False)
    aborted = None
    try:
        ref.prune.prune_loop(model, nn.CrossEntropyLoss(), pruner, [(x, y)],
                             torch.device("cpu"), density, "exponential", "global", rounds,
                             **loop_args)
    except SystemExit:  # the loop quit()s when the kept count misses the target by >= 5
        aborted = "prune_loop quit: kept count off the target by 5 or more"
    masks = history[-1]
    scores = torch.cat([pruner.scores[id(p)].flatten() for _, p in pruner.masked_parameters])
    k = int((1.0 - density) * scores.numel())
    threshold = torch.kthvalue(scores, k).values
    out = {"kept": common.kept_counts(masks), "total": sum(int(m.sum()) for m in masks),
           "hash": common.mask_hash(masks), "ties_at_threshold": int((scores == threshold).sum()),
           "requested": scores.numel() - k, "harness_aborted": aborted}
    if rounds > 1:
        # a weight re-admitted: pruned at some round, kept at the next
        back = [sum(int((b & ~a).sum()) for a, b in zip(prev, cur))
                for prev, cur in zip(history, history[1:])]
        ever_pruned = [~m for m in history[0]]
        for h in history[1:-1]:
            ever_pruned = [e | ~m for e, m in zip(ever_pruned, h)]
        out["readmitted_total"] = sum(back)
        out["readmitted_rounds"] = sum(1 for b in back if b)
        out["final_kept_once_pruned"] = sum(int((m & e).sum()) for m, e in zip(masks, ever_pruned))
    return {"masks": masks, "record": out}


def jaccard(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    inter = sum(int((x & y).sum()) for x, y in zip(a, b))
    union = sum(int((x | y).sum()) for x, y in zip(a, b))
    return inter / union


def cases():
    for method in ("snip", "grasp"):
        for mode in MODES:
            for s in SPARSITIES:
                yield method, mode, s, None
    for rounds in ITER_ROUNDS:
        for mode in MODES:
            for s in SPARSITIES:
                yield "iter_snip", mode, s, rounds


def our_options(method: str, mode: str, rounds: int | None) -> dict:
    """The options that make our call match the reference's run (see the module docstring)."""
    opts = {"scoring_mode": mode}
    if method == "grasp":
        opts.update(temperature=200.0, scoring_batch_size=None)
    if method == "iter_snip":
        opts["rounds"] = rounds
    return opts


def ours(method: str, mode: str, sparsity: float, rounds: int | None) -> list[torch.Tensor]:
    import dpai
    mask = dpai.prune(common.our_model(), method, sparsity, seed=0, data=[common.batch()],
                      **our_options(method, mode, rounds))
    return [mask[n] for n in common.layer_names()]


def table(results: dict) -> str:
    """Markdown: ours vs the reference per method, mode and sparsity."""
    rows = ["| method | mode | sparsity | kept ours / ref | identical | layers equal | "
            "max layer diff | Jaccard ours-ref | Jaccard ref eval-train |",
            "|---|---|---|---|---|---|---|---|---|"]
    for method, mode, s, rounds in cases():
        k = key(method, mode, s, rounds)
        ref_masks = results[k]["masks"]
        our_masks = ours(method, mode, s, rounds)
        diff = [abs(int(a.sum()) - int(b.sum())) for a, b in zip(our_masks, ref_masks)]
        other = results[key(method, "train" if mode == "eval" else "eval", s, rounds)]["masks"]
        name = method + (f" ({rounds} rounds)" if rounds else "")
        rows.append(
            f"| {name} | {mode} | {s:.0%} | {sum(int(m.sum()) for m in our_masks)} / "
            f"{results[k]['record']['total']} | "
            f"{'yes' if common.mask_hash(our_masks) == results[k]['record']['hash'] else 'no'} | "
            f"{sum(d == 0 for d in diff)}/{len(diff)} | {max(diff)} | "
            f"{jaccard(our_masks, ref_masks):.4f} | {jaccard(ref_masks, other):.4f} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npb", help="a clone (or bare git dir) of pvh1602/NPB")
    ap.add_argument("--synflow", help="a clone (or bare git dir) of ganguli-lab/Synaptic-Flow")
    ap.add_argument("--table", action="store_true", help="print ours vs the reference")
    args = ap.parse_args()
    torch.set_num_threads(1)
    npb = load_reference(checkout_code(*NPB, source=args.npb))
    results = {}
    for method, mode, s, rounds in cases():
        print(f"reference {method} {mode} {s} rounds={rounds or 1}", flush=True)
        results[key(method, mode, s, rounds)] = run_reference(npb, method, mode, s, rounds or 1)
    # the upstream loop and pruners must give the same masks (NPB only adds CLI plumbing)
    synflow = load_reference(checkout_code(*SYNFLOW, source=args.synflow))
    for method, mode, s, rounds in cases():
        if rounds == 100:
            continue  # the 10-round runs already exercise the same loop
        up = run_reference(synflow, method, mode, s, rounds or 1)["record"]["hash"]
        if up != results[key(method, mode, s, rounds)]["record"]["hash"]:
            raise SystemExit(f"Synaptic-Flow and NPB differ on {key(method, mode, s, rounds)}")
    between = {}
    for method, _, s, rounds in cases():
        k = key(method, "eval", s, rounds).replace("/eval", "")
        between[k] = round(jaccard(results[key(method, "eval", s, rounds)]["masks"],
                                   results[key(method, "train", s, rounds)]["masks"]), 6)
    common.write(FIXTURE, {
        "reference": {"repo": NPB[0], "commit": NPB[1], "same_masks_as": f"{SYNFLOW[0]}@{SYNFLOW[1]}"},
        "inputs": {"model": "resnet20", "model_seed": common.MODEL_SEED,
                   "batch_seed": common.BATCH_SEED, "batch": common.NUM_CLASSES * common.PER_CLASS},
        "settings": {
            "loop": "prune.prune_loop, scope global, schedule exponential, CPU, 1 thread",
            "prunable": "every conv and linear weight (prune_bias/batchnorm/residual False, "
                        "dense_classifier False)",
            "compression": {str(s): c for s, c in COMPRESSION.items()},
            "snip": {"rounds": 1}, "grasp": {"rounds": 1, "temperature": 200,
                                             "batch_split": "none (one pass)"},
            "iter_snip": {"rounds": list(ITER_ROUNDS), "pruner": "SNIP",
                          "schedule": "density ** (t / rounds)"},
            "ties": "the reference prunes every score <= the k-th smallest of all scores",
        },
        "runs": {k: r["record"] for k, r in results.items()},
        "jaccard_eval_vs_train": between,
    })
    print(f"wrote {FIXTURE}")
    if args.table:
        print(table(results))


if __name__ == "__main__":
    main()
