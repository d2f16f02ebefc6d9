"""Read the report's inputs: params.yaml values, mask reports, training runs and timing files.

One item of the pipeline is (method, sparsity, seed), named `<method>-<sparsity>-<seed>` with
the sparsity written as `str(float(s))` (0.99 -> "0.99"), as DVC renders the matrix items
`mask@...` and `train@...`. Only the files the params name are opened, never a glob: `dvc
repro` leaves the outputs of matrix items that no longer exist in place.
"""
import json
import math
from pathlib import Path

from ..pipeline.names import (MASK_FILE, RUN_FILE, TIMING_FILE, TIMING_STAGES,  # noqa: F401
                     item_name, mask_path, run_path, sparsity_name, timing_path)

# Stale files from another sparsity are caught by comparing against the params; the slack
# tolerates a file that records the achieved rather than the requested sparsity.
SPARSITY_TOLERANCE = 1e-3

# The files the report reads, relative to the repo root: stages/mask.py writes one mask
# (masks/<item>.pt) and its report (.json) per item, stages/train.py one run per item.
# Untracked side files ({"seconds": float}) that nothing depends on: stage = "mask" | "train"

MASK_KEYS = ("density", "layers", "info", "topology", "flops")
TOPOLOGY_KEYS = ("effective_params", "effective_nodes", "effective_kernels", "log_paths_exact",
                 "collapsed_layers", "layers")
FLOPS_KEYS = ("dense", "kept", "effective")
RUN_KEYS = ("method", "seed", "final_test_acc", "best_test_acc", "epochs")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_method_names(methods) -> None:
    """Method names are keys of metrics.json: '.' and '@' would make DVC's flattened metric
    names (`methods.<method>.<sparsity key>.<metric>`) ambiguous."""
    for method in methods:
        if "." in method or "@" in method:
            raise ValueError(f"methods: {method!r} cannot be a metrics key: names must not "
                             f"contain '.' or '@'")


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing {what} {path} (named by params.yaml; "
                                f"run `dvc repro` to produce it)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a JSON object")
    return doc


def _require(doc: dict, keys, path: Path, prefix: str = "") -> None:
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: {prefix.rstrip('.')!r} is not an object")
    for key in keys:
        if key not in doc:
            raise ValueError(f"{path}: key {prefix + key!r} is missing")


def _check_equal(path: Path, key: str, value, expected) -> None:
    if isinstance(expected, float):
        ok = _is_number(value) and math.isclose(value, expected, abs_tol=SPARSITY_TOLERANCE)
    else:
        ok = value == expected
    if not ok:
        raise ValueError(f"{path}: {key}={value!r} but params.yaml asks for {expected!r} "
                         f"(a stale file? rerun `dvc repro`)")


def load_masks(root, methods: list[str], sparsities: list[float],
               seeds: list[int]) -> dict[float, dict[str, list[dict]]]:
    """sparsity -> method -> mask reports (one per seed, in `seeds` order), read from
    `root/masks/<method>-<sparsity>-<seed>.json`; sparsities and methods in the given order."""
    out = {}
    for sparsity in map(float, sparsities):
        out[sparsity] = {}
        for method in methods:
            out[sparsity][method] = []
            for seed in seeds:
                path = mask_path(root, method, sparsity, seed)
                doc = _load(path, "mask report")
                _require(doc, MASK_KEYS, path)
                _require(doc["topology"], TOPOLOGY_KEYS, path, "topology.")
                _require(doc["flops"], FLOPS_KEYS, path, "flops.")
                info = doc["info"]
                if "method" in info:
                    _check_equal(path, "info.method", info["method"], method)
                if "seed" in info:
                    _check_equal(path, "info.seed", info["seed"], seed)
                if "sparsity" in info:
                    _check_equal(path, "info.sparsity", info["sparsity"], sparsity)
                out[sparsity][method].append(doc)
    return out


def load_runs(root, methods: list[str], sparsities: list[float],
              seeds: list[int]) -> dict[float, dict[str, list[dict]]]:
    """sparsity -> method -> runs (one per seed, in `seeds` order) from
    `root/runs/<method>-<sparsity>-<seed>.json`."""
    out = {}
    for sparsity in map(float, sparsities):
        out[sparsity] = {}
        for method in methods:
            out[sparsity][method] = []
            for seed in seeds:
                path = run_path(root, method, sparsity, seed)
                doc = _load(path, "run")
                _require(doc, RUN_KEYS, path)
                _check_equal(path, "method", doc["method"], method)
                _check_equal(path, "seed", doc["seed"], seed)
                if "sparsity" in doc:
                    _check_equal(path, "sparsity", doc["sparsity"], sparsity)
                out[sparsity][method].append(doc)
    return out


def _seconds(path: Path):
    """The "seconds" of a timing side file; None when it is absent or unreadable (a side file
    is informative only: it never stops the report)."""
    try:
        value = json.loads(path.read_text()).get("seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if _is_number(value) and math.isfinite(value) else None


def load_timings(root, methods: list[str], sparsities: list[float],
                 seeds: list[int]) -> dict[float, dict[str, dict[str, list]]]:
    """sparsity -> method -> {"mask": [seconds | None per seed], "train": [...]} from the
    untracked side files timings/{mask,train}/<method>-<sparsity>-<seed>.json."""
    return {float(s): {m: {stage: [_seconds(timing_path(root, stage, m, s, seed))
                                   for seed in seeds] for stage in TIMING_STAGES}
                       for m in methods} for s in sparsities}
