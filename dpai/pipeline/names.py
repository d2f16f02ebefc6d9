"""How pipeline items and their files are named (one place, used by stages and report).

An item is `<method>-<sparsity>-<seed>`, the key of the DVC stages `mask@...` and `train@...`;
the sparsity appears as str(float(s)) (0.99 -> '0.99', 0.6838 -> '0.6838'), which is how DVC
renders the matrix value in the stage name and in the `cmd`.
"""
from pathlib import Path

MASK_FILE = "masks/{item}.json"       # the mask report; the mask itself: same name, .pt
RUN_FILE = "runs/{item}.json"
TIMING_FILE = "timings/{stage}/{item}.json"
TIMING_STAGES = ("mask", "train")


def sparsity_name(sparsity: float) -> str:
    return str(float(sparsity))


def item_name(method: str, sparsity: float, seed: int) -> str:
    return f"{method}-{sparsity_name(sparsity)}-{seed}"


def mask_path(root, method: str, sparsity: float, seed: int) -> Path:
    """masks/<item>.json (the mask itself: the same name with .pt)."""
    return Path(root) / MASK_FILE.format(item=item_name(method, sparsity, seed))


def run_path(root, method: str, sparsity: float, seed: int) -> Path:
    return Path(root) / RUN_FILE.format(item=item_name(method, sparsity, seed))


def timing_path(root, stage: str, method: str, sparsity: float, seed: int) -> Path:
    """timings/<stage>/<item>.json, stage = "mask" or "train"."""
    if stage not in TIMING_STAGES:
        raise ValueError(f"stage={stage!r} is not one of {list(TIMING_STAGES)}")
    return Path(root) / TIMING_FILE.format(stage=stage, item=item_name(method, sparsity, seed))
