"""Shared by the stage scripts: params, validation, threads, the dataset and the model."""
import json
import os
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stages work from a checkout even without `pip install -e .`

import dpai  # noqa: E402
from dpai.report import inputs as report_inputs  # noqa: E402


def fail(message: str) -> None:
    """One line on stderr, exit status 2, before any work."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_params(path: str = "params.yaml") -> dict:
    params = yaml.safe_load(Path(path).read_text())
    try:
        dpai.budget.check_sparsity(params["sparsity"])
        for method in params["methods"]:
            dpai.pruners.check_method(method, params["mask"].get(method) or {})
    except ValueError as exc:
        fail(str(exc))
    for seed in params["seeds"]:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            fail(f"seeds: {seed!r} must be a non-negative integer")
    try:
        dpai.models.check_model_name(params["model"]["name"])
    except ValueError as exc:
        fail(str(exc))
    if params["model"].get("prune", "default") not in dpai.models.PRUNE:
        fail(f"model.prune={params['model']['prune']!r} is not one of {list(dpai.models.PRUNE)}")
    if params["data"]["dataset"] not in dpai.DATASETS:
        fail(f"data.dataset={params['data']['dataset']!r} is not one of {sorted(dpai.DATASETS)}")
    return params


def set_threads() -> None:
    """All cores by default; DPAI_THREADS caps it when several stages run side by side."""
    threads = int(os.environ.get("DPAI_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(threads)


def data_folder(params: dict) -> Path:
    return Path(params["data"]["root"]) / params["data"]["dataset"]


def data_meta(params: dict) -> dict:
    path = data_folder(params) / "meta.json"
    if not path.is_file():
        fail(f"{path} is missing: run `dvc repro data` first")
    return json.loads(path.read_text())


def build_model(params: dict, meta: dict, seed: int):
    return dpai.create_model(params["model"]["name"], num_classes=meta["num_classes"],
                             in_channels=meta["in_channels"], image_size=meta["image_size"],
                             seed=seed, prune=params["model"].get("prune", "default"))


def mask_path(method: str, seed: int) -> Path:
    """masks/<method>/<method>-<seed>.pt; its report (.json) is what the report stage reads."""
    return report_inputs.mask_path(".", method, seed).with_suffix(".pt")


def run_path(method: str, seed: int) -> Path:
    return report_inputs.run_path(".", method, seed)


def device(value: str) -> torch.device:
    try:
        return dpai.resolve_device(value)
    except ValueError as exc:
        fail(str(exc))
