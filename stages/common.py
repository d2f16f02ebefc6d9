"""Shared by the stage scripts: typed params, safe outputs, threads, data and model.

Every stage starts with `start()`: it reads params.yaml into the sections the stage uses
(dpai.pipeline.params: one line naming the key, the value and what is allowed, exit status
2, before any work), sets torch's thread count from compute.threads, makes SIGTERM unwind
like Ctrl-C (so no temporary file survives it), points temporary files outside every folder
DVC hashes and removes those a killed run left behind.
"""
import json
import os
import signal
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stages work from a checkout even without `pip install -e .`

from dpai.core.device import cpu_model, resolve_device  # noqa: E402
from dpai.files.atomic import clean_stale, write_json  # noqa: E402
from dpai.files.checkpoint import Checkpoint, file_digest, source_digest  # noqa: E402
from dpai.models import create_model  # noqa: E402
from dpai.pipeline import names  # noqa: E402
from dpai.pipeline.params import Params, read  # noqa: E402

# outside the stages' outputs, so DVC never deletes them before a rerun (git- and dvc-ignored)
CHECKPOINTS = Path(os.environ.get("DPAI_CHECKPOINT_DIR", "checkpoints"))
TMP = Path(".dvc/tmp/dpai")   # temporary files of atomic writes
OUTPUT_FOLDERS = ("masks", "runs", "reports", "timings/mask", "timings/train")


def fail(message: str, status: int = 2) -> None:
    """One line on stderr, then exit (2: bad input, 1: the computation failed)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: finally blocks remove temporary files


def start(mask=None, train=None, path: str = "params.yaml") -> Params:
    """params.yaml as Params, with the `mask` and `train` sections built by the classes given
    (None: the stage does not read that section)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        params = Params.from_dict(read(path), mask=mask, train=train)
    except (OSError, ValueError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:  # a YAML syntax error
        fail(f"{path}: {str(exc).splitlines()[0]}")
    os.environ["DPAI_TMPDIR"] = str(TMP.resolve())
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only rank 0 writes (or cleans)
        clean_stale(TMP, CHECKPOINTS, *OUTPUT_FOLDERS)
    torch.set_num_threads(params.compute.threads)
    return params


def item(method: str, sparsity, seed: int) -> str:
    """<method>-<sparsity>-<seed>: the DVC item key and the file name part."""
    return names.item_name(method, sparsity, seed)


def parse_item(params: Params, argv: list[str]) -> tuple[str, float, int]:
    """METHOD SPARSITY SEED from the command line, each checked against params.yaml."""
    if len(argv) != 3:
        fail(f"usage: python {Path(sys.argv[0]).name} METHOD SPARSITY SEED")
    method, sparsity, seed = argv
    if method not in params.methods:
        fail(f"method={method!r} is not in params methods {params.methods}")
    levels = {names.sparsity_name(s): float(s) for s in params.sparsities}
    try:
        key = names.sparsity_name(sparsity)
    except ValueError:
        key = sparsity
    if key not in levels:
        fail(f"sparsity={sparsity!r} is not in params sparsities {params.sparsities}")
    if not seed.isdigit() or int(seed) not in params.seeds:
        fail(f"seed={seed!r} is not in params seeds {params.seeds}")
    return method, levels[key], int(seed)


def mask_path(name: str) -> Path:
    return Path(names.MASK_FILE.format(item=name)).with_suffix(".pt")


def run_path(name: str) -> Path:
    return Path(names.RUN_FILE.format(item=name))


def write_timing(stage: str, name: str, timing: dict) -> None:
    write_json(names.TIMING_FILE.format(stage=stage, item=name), timing)


def data_meta(params: Params) -> dict:
    path = params.data.folder / "meta.json"
    if not path.is_file():
        fail(f"{path} is missing: run `dvc repro data` first")
    return json.loads(path.read_text())


def build_model(params: Params, meta: dict, seed: int):
    return create_model(params.model.name, num_classes=meta["num_classes"],
                        in_channels=meta["in_channels"], image_size=meta["image_size"],
                        seed=seed, prune=params.model.prune)


def device(value: str) -> torch.device:
    try:
        return resolve_device(value)
    except ValueError as exc:
        fail(str(exc))


def environment(device, **extra) -> dict:
    """What else moves results besides params and seeds, recorded with each output: the torch
    version, the device, the thread count, `extra`, and the CPU kind (the vector instruction
    set torch dispatches to, and the processor model: float kernels differ between CPU kinds,
    even between two AVX-512 ones, e.g. with and without AMX)."""
    return {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
            **extra, "cpu": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model()}


def checkpoint(stage: str, name: str, key: dict, every: int) -> Checkpoint:
    """The stage's checkpoint, keyed by everything its result depends on: `key` (params and
    input file hashes), the code of dpai/ and stages/, the torch version and threads."""
    full = {"stage": stage, "item": name, **key, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "code": source_digest(ROOT / "dpai", ROOT / "stages")}
    return Checkpoint(CHECKPOINTS, f"{stage}-{name}", full, every=every)


def data_digest(meta: dict) -> dict:
    """What identifies the prepared data: its recorded file checksums."""
    return meta.get("files") or meta.get("checksums") or {}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit():
        fail(f"{name}={value!r} is invalid: allowed is an integer >= 0 (0: no checkpoints)")
    return int(value)


__all__ = ["start", "fail", "item", "parse_item", "mask_path", "run_path", "write_timing",
           "data_meta", "build_model", "device", "environment", "checkpoint", "data_digest",
           "env_int", "file_digest"]
