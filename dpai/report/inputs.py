"""Read the report's inputs: params.yaml values, mask reports and training runs.

Only the files the params name are opened, never a glob: `dvc repro` leaves the outputs of
matrix items that no longer exist in place (docs/dvc-notes.md, section 1).
"""
import json
import math
from pathlib import Path

# Stale files from another sparsity are caught by comparing against the params; the slack
# tolerates a run that records the achieved rather than the requested sparsity.
SPARSITY_TOLERANCE = 1e-3

# The files the report reads, relative to the repo root: stages/mask.py writes one mask report
# per seed, stages/train.py one run per seed. A mask template without {seed} names one report
# shared by all seeds.
MASK_FILE = "masks/{method}/{method}-{seed}.json"
RUN_FILE = "runs/{method}-{seed}.json"

MASK_KEYS = ("density", "layers", "info", "topology")
TOPOLOGY_KEYS = ("effective_params", "effective_nodes", "effective_kernels", "log_paths_exact",
                 "collapsed_layers", "layers")
RUN_KEYS = ("method", "seed", "final_test_acc", "best_test_acc", "train_seconds", "epochs")


def mask_path(root, method: str, seed: int | None = None, template: str = MASK_FILE) -> Path:
    return Path(root) / template.format(method=method, seed=seed)


def run_path(root, method: str, seed: int, template: str = RUN_FILE) -> Path:
    return Path(root) / template.format(method=method, seed=seed)


def read_params(params: dict) -> dict:
    """The report's settings from a loaded params.yaml: sparsity, methods, seeds, dataset, model."""
    def get(dotted):
        node = params
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"params: key {dotted!r} is missing")
            node = node[key]
        return node

    sparsity, methods, seeds = get("sparsity"), get("methods"), get("seeds")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) \
            or not 0 < sparsity < 1:
        raise ValueError(f"params: sparsity={sparsity!r} is not a number in (0, 1)")
    if not isinstance(methods, list) or not methods or len(set(methods)) < len(methods) \
            or not all(isinstance(m, str) and m for m in methods):
        raise ValueError(f"params: methods={methods!r} is not a non-empty list of distinct names")
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) < len(seeds) \
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"params: seeds={seeds!r} is not a non-empty list of distinct integers")
    return {"sparsity": float(sparsity), "methods": list(methods), "seeds": list(seeds),
            "dataset": str(get("data.dataset")), "model": str(get("model.name"))}


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing {what} {path} (named by params.yaml; "
                                f"run `dvc repro` to produce it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _require(doc: dict, keys, path: Path, prefix: str = "") -> None:
    for key in keys:
        if key not in doc:
            raise ValueError(f"{path}: key {prefix + key!r} is missing")


def _check_equal(path: Path, key: str, value, expected) -> None:
    if isinstance(expected, float):
        ok = isinstance(value, (int, float)) and math.isclose(value, expected,
                                                               abs_tol=SPARSITY_TOLERANCE)
    else:
        ok = value == expected
    if not ok:
        raise ValueError(f"{path}: {key}={value!r} but params.yaml asks for {expected!r} "
                         f"(a stale file? rerun `dvc repro`)")


def load_masks(root, methods: list[str], seeds: list[int], sparsity: float | None = None,
               template: str = MASK_FILE) -> dict[str, list[dict]]:
    """method -> mask reports, one per seed in `seeds` order (one in all if `template` has no
    {seed}), read from `root/masks/{method}/{method}-{seed}.json`, in `methods` order."""
    per_seed = "{seed}" in template
    out = {}
    for method in methods:
        out[method] = []
        for seed in seeds if per_seed else [None]:
            path = mask_path(root, method, seed, template)
            doc = _load(path, "mask report")
            _require(doc, MASK_KEYS, path)
            _require(doc["topology"], TOPOLOGY_KEYS, path, "topology.")
            info = doc["info"]
            if "method" in info:
                _check_equal(path, "info.method", info["method"], method)
            if per_seed and "seed" in info:
                _check_equal(path, "info.seed", info["seed"], seed)
            if sparsity is not None and "sparsity" in info:
                _check_equal(path, "info.sparsity", info["sparsity"], float(sparsity))
            out[method].append(doc)
    return out


def load_runs(root, methods: list[str], seeds: list[int], sparsity: float | None = None,
              template: str = RUN_FILE) -> dict[str, list[dict]]:
    """method -> runs (one per seed, in `seeds` order) from `root/runs/{method}-{seed}.json`."""
    out = {}
    for method in methods:
        out[method] = []
        for seed in seeds:
            path = run_path(root, method, seed, template)
            doc = _load(path, "run")
            _require(doc, RUN_KEYS, path)
            _check_equal(path, "method", doc["method"], method)
            _check_equal(path, "seed", doc["seed"], seed)
            if sparsity is not None and "sparsity" in doc:
                _check_equal(path, "sparsity", doc["sparsity"], float(sparsity))
            out[method].append(doc)
    return out
