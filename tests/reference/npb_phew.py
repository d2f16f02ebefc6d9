"""Regenerate tests/reference/npb.json and tests/reference/phew.json from the authors' code.

    python tests/reference/npb_phew.py [--npb-source DIR] [--phew-source DIR] [--only npb|phew]

NPB: github.com/pvh1602/NPB (the NeurIPS 2023 authors' code; the DPaI authors' repository
holds DPaI's own pruner, not this one), `Pruners.pruners.Optimization_Pruner` with the
arguments of its ResNet-20 run script (scripts/run.sh: ERK budgets, alpha 0.01, beta 1,
max_p 9, chunk size 32, min_n 1), on its `lottery_resnet.resnet20`.
PHEW: github.com/ShreyasMalakarjunPatil/PHEW, `Prune.phew_utils.phew_masks` (what
Experiments/PHEW_Res.py calls) on its `resnet_cifar2.resnet20`.

Both are data-free; the models get our seed-0 ResNet-20 weights (tests/reference/common.py;
NPB overwrites them with ones, PHEW walks by their kernel norms). Sparsities 0.9 and 0.99,
seeds 0, 1, 2. Seeding: the references seed torch only (`torch.manual_seed(args.seed)`); they
also draw from numpy's global generator (NPB: tap positions inside a kernel; PHEW: every
walk step) and Python's `random` (PHEW: shortcut routes), so this script sets
`torch.manual_seed`, `numpy.random.seed` and `random.seed` to the seed before each run.
NPB's MILPs (cvxpy, solved by whichever MILP solver cvxpy picks, HiGHS here) have no time
limit and are deterministic for given inputs.

Extra packages for this script only: cvxpy (and a MILP solver it can use, e.g. highspy);
NPB's modules import seaborn and matplotlib for plots it never draws: stubbed here.

The figures (effective nodes, kernels, weights, log-paths) are computed on the reference
masks with OUR counting code (dpai.topology on our ResNet-20), as for our masks.
"""
import argparse
import contextlib
import importlib
import importlib.metadata
import io
import random
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import common  # noqa: E402
import dpai  # noqa: E402
from dpai.core.mask import Mask  # noqa: E402

NPB_REPO, NPB_COMMIT = "pvh1602/NPB", "090830c388bcbf7fa62260343e76e5a2eb55f41d"
PHEW_REPO, PHEW_COMMIT = "ShreyasMalakarjunPatil/PHEW", "c4a0d40be8582a8ea51a4eb01338202f62277225"
SPARSITIES = (0.9, 0.99)
SEEDS = (0, 1, 2)
# top-level package names both code bases use; purged between them
PACKAGES = ("Models", "Utils", "Layers", "Pruners", "Prune", "Experiments")


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def figures(masks: list[torch.Tensor]) -> dict:
    """Kept counts (our layer names), mask hash and our topology figures of reference masks."""
    model = common.our_model()
    names = common.layer_names()
    mask = Mask({n: m.detach().to(torch.bool).cpu().reshape(model.get_submodule(n).weight.shape)
                 for n, m in zip(names, masks)})
    topo = dpai.topology(model, mask)
    return {"kept": common.kept_counts(masks), "total": int(sum(m.count_nonzero() for m in masks)),
            "mask_hash": common.mask_hash(masks),
            **{k: topo[k] for k in ("effective_params", "effective_nodes", "effective_kernels",
                                    "log_paths_exact", "log_paths_reference")}}


@contextlib.contextmanager
def code_base(root: Path):
    """Import a reference code base from `root` (and forget it afterwards)."""
    for mod in ("seaborn", "matplotlib", "matplotlib.pyplot", "wandb"):
        sys.modules.setdefault(mod, types.ModuleType(mod))
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".")[0] in PACKAGES:
                del sys.modules[name]


def run_npb(root: Path) -> dict:
    runs = {}
    with code_base(root):
        pruners = importlib.import_module("Pruners.pruners")
        lottery_resnet = importlib.import_module("Models.lottery_resnet")
        for sparsity in SPARSITIES:
            for seed in SEEDS:
                seed_all(seed)
                net = lottery_resnet.resnet20((3, 32, 32), 10)
                common.copy_weights(common.our_model(), net)
                # the run script's arguments (main.py passes density = 10**-compression)
                pruner = pruners.Optimization_Pruner(
                    initializer="ERK", alpha=0.01, beta=1.0, sparsity=round(1 - sparsity, 10),
                    device="cpu", max_param_per_kernel=9, min_param_to_node=1,
                    is_scale_weight=False, chunk_size=32, node_constraint=False)
                start = time.time()
                with contextlib.redirect_stdout(io.StringIO()):
                    pruner.prune(net, (3, 32, 32))
                masks = [b for n, b in net.named_buffers()
                         if n.endswith("weight_mask") and b.dim() in (2, 4)]
                runs.setdefault(str(sparsity), {})[str(seed)] = figures(masks)
                print(f"npb {sparsity} seed {seed}: {runs[str(sparsity)][str(seed)]['total']} kept,"
                      f" {time.time() - start:.0f} s", file=sys.stderr)
    return runs


class _Numpy1:
    """numpy as phew_utils expects it (numpy 1.x): `int()` of a one-element array drawn by
    np.random.choice(..., 1) is an error in numpy 2, so size-1 draws come back 0-d (the same
    numbers from the same generator)."""

    class random:  # noqa: N801 (stands in for the module)
        @staticmethod
        def choice(*args, **kwargs):
            out = np.random.choice(*args, **kwargs)
            return out.reshape(()) if np.ndim(out) == 1 and len(out) == 1 else out

    def __getattr__(self, name):
        return getattr(np, name)


def run_phew(root: Path) -> dict:
    runs = {}
    with code_base(root):
        phew_utils = importlib.import_module("Prune.phew_utils")
        phew_utils.np = _Numpy1()
        resnet_cifar2 = importlib.import_module("Models.resnet_cifar2")
        for sparsity in SPARSITIES:
            for seed in SEEDS:
                seed_all(seed)
                net = resnet_cifar2.resnet20((3, 32, 32), 10)
                common.copy_weights(common.our_model(), net)
                with contextlib.redirect_stdout(io.StringIO()):
                    # as Experiments/PHEW_Res.py: probabilities, empty masks, walks
                    prob, reverse, kernel = phew_utils.generate_probability(net, verbose=False)
                    zero = [torch.zeros_like(p) for p in net.parameters() if p.dim() != 1]
                    bias = [torch.zeros(len(z)) for z in zero]
                    start = time.time()
                    masks, _ = phew_utils.phew_masks(net, 100 * sparsity, prob, reverse, kernel,
                                                     zero, bias, verbose=False)
                runs.setdefault(str(sparsity), {})[str(seed)] = figures(masks)
                print(f"phew {sparsity} seed {seed}: {runs[str(sparsity)][str(seed)]['total']} "
                      f"kept, {time.time() - start:.0f} s", file=sys.stderr)
    return runs


def versions() -> dict:
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("cvxpy", "highspy", "scipy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    with contextlib.suppress(Exception):
        import cvxpy
        out["cvxpy_milp_solvers"] = [s for s in cvxpy.installed_solvers()
                                     if s in cvxpy.settings.MI_SOLVERS]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npb-source", help="a clone or bare git dir of " + NPB_REPO)
    parser.add_argument("--phew-source", help="a clone or bare git dir of " + PHEW_REPO)
    parser.add_argument("--only", choices=("npb", "phew"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = "python tests/reference/npb_phew.py"
    if args.only != "phew":
        root = common.checkout(NPB_REPO, NPB_COMMIT, args.npb_source)
        common.write(common.FIXTURES / "npb.json", {
            "reference": {"repo": NPB_REPO, "commit": NPB_COMMIT,
                          "entry": "Pruners.pruners.Optimization_Pruner(initializer='ERK', "
                                   "alpha=0.01, beta=1, max_param_per_kernel=9, "
                                   "min_param_to_node=1, chunk_size=32).prune"},
            "command": command, "versions": versions(),
            "seeding": "torch.manual_seed, numpy.random.seed, random.seed = seed",
            "runs": run_npb(root)})
    if args.only != "npb":
        root = common.checkout(PHEW_REPO, PHEW_COMMIT, args.phew_source)
        common.write(common.FIXTURES / "phew.json", {
            "reference": {"repo": PHEW_REPO, "commit": PHEW_COMMIT,
                          "entry": "Prune.phew_utils.phew_masks on Models.resnet_cifar2.resnet20"},
            "command": command, "versions": versions(),
            "seeding": "torch.manual_seed, numpy.random.seed, random.seed = seed",
            "runs": run_phew(root)})


if __name__ == "__main__":
    main()
