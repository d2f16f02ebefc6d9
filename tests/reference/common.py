"""The fixed inputs every reference fixture is computed from, and the glue between our
ResNet-20 and a reference code base's copy of it.

A fixture is made by running a method's public reference code (fetched, never copied into
this repository) on exactly these inputs: our ResNet-20 for CIFAR-10 (3x32x32, 10 classes)
initialised with seed 0, its weights copied into the reference's own ResNet-20, and one
seeded synthetic batch of 100 images (10 per class). The fixture keeps what the reference
produced (per-layer kept counts under our layer names, and mask hashes where the method is
deterministic), so the tests compare our implementation with it without the reference code.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import dpai  # noqa: E402
from dpai.models import prunable_layers  # noqa: E402

FIXTURES = Path(__file__).resolve().parent
MODEL_SEED = 0
BATCH_SEED = 0
NUM_CLASSES = 10
PER_CLASS = 10


def our_model() -> nn.Module:
    """Our ResNet-20 (CIFAR-10 shape) with the seed-0 init every fixture starts from."""
    return dpai.create_model("resnet20", num_classes=NUM_CLASSES, in_channels=3, image_size=32,
                             seed=MODEL_SEED)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic scoring batch: 100 standard-normal 3x32x32 images, 10 of each class."""
    g = torch.Generator().manual_seed(BATCH_SEED)
    x = torch.randn(NUM_CLASSES * PER_CLASS, 3, 32, 32, generator=g)
    y = torch.arange(NUM_CLASSES * PER_CLASS) % NUM_CLASSES
    return x, y


def layer_names() -> list[str]:
    """Our prunable layers in module order (the order of every reference ResNet-20 too)."""
    return list(prunable_layers(our_model()))


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return "weight"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "norm"
    return None


def copy_weights(ours: nn.Module, theirs: nn.Module) -> list[nn.Module]:
    """Copy every conv, linear and BatchNorm tensor of `ours` into `theirs`, matching modules
    of each kind in module order (shapes checked). Returns the reference's conv/linear modules
    in that order, which is the order of `layer_names()`."""
    pairs = {"weight": ([], []), "norm": ([], [])}
    for side, model in ((0, ours), (1, theirs)):
        for m in model.modules():
            kind = _kind(m)
            if kind:
                pairs[kind][side].append(m)
    for kind, (a, b) in pairs.items():
        if len(a) != len(b):
            raise ValueError(f"{kind}: ours has {len(a)} modules, the reference {len(b)}")
        for x, y in zip(a, b):
            with torch.no_grad():
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    src, dst = getattr(x, attr, None), getattr(y, attr, None)
                    if src is None or dst is None:
                        continue
                    if src.shape != dst.shape:
                        raise ValueError(f"{kind} {attr}: shape {tuple(src.shape)} vs "
                                         f"{tuple(dst.shape)}")
                    dst.copy_(src)
    return pairs["weight"][1]


def kept_counts(masks: list[torch.Tensor]) -> dict[str, int]:
    """Per-layer kept counts under our layer names, from masks in module order."""
    names = layer_names()
    if len(masks) != len(names):
        raise ValueError(f"{len(masks)} masks for {len(names)} layers")
    return {n: int(m.count_nonzero()) for n, m in zip(names, masks)}


def mask_hash(masks: list[torch.Tensor]) -> str:
    """sha256 of the masks as bytes (bool, module order): equal hashes, equal masks."""
    h = hashlib.sha256()
    for m in masks:
        h.update(m.detach().to(torch.bool).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def checkout(repo: str, commit: str, source: str | None = None) -> Path:
    """A temporary work tree of `repo` ("owner/name") at `commit`, from `source` (a clone or a
    bare git directory; default: the fetched copy under $WORK/.mirror, WORK=/work unless set)."""
    mirror = Path(os.environ.get("WORK", "/work")) / ".mirror"
    git_dir = Path(source) if source else mirror / repo.replace("/", "+") / "repo"
    if not git_dir.exists():
        raise SystemExit(f"no copy of {repo} at {git_dir}: clone github.com/{repo} and pass "
                         f"its path with --source")
    out = Path(tempfile.mkdtemp(prefix=repo.replace("/", "+") + "-"))
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", commit],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def write(path: Path, data: dict) -> None:
    """A fixture as JSON (sorted keys, so a regenerated fixture diffs cleanly)."""
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def read(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())
