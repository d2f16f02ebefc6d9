"""dpai: DPaI (Differentiable Pruning at Initialization, ICLR 2025) and the PaI baselines.

    import dpai
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    mask = dpai.prune(model, method="dpai", sparsity=0.99, seed=0)
    dpai.topology(model, mask)

The names below are loaded on first use (PEP 562), so `import dpai.<subpackage>` loads that
subpackage only: each pipeline stage imports just the code it runs, and that is what its
dependencies in dvc.yaml list (tests/test_deps.py derives them from the imports).
"""
import importlib

# public name -> the module that defines it
API = {
    **dict.fromkeys(["Mask", "erk_budget", "erk_density", "uniform_budget", "global_budget",
                     "layer_budget", "resolve_device"], "dpai.core"),
    **dict.fromkeys(["MODELS", "create_model", "prunable_layers", "num_prunable"], "dpai.models"),
    **dict.fromkeys(["METHODS", "DATA_DRIVEN", "prune", "method_params", "options"],
                    "dpai.methods"),
    **dict.fromkeys(["PathNetwork", "topology", "log_paths_reference", "flops"],
                    "dpai.paths"),
    **dict.fromkeys(["TrainConfig", "train", "NonFiniteLoss", "train_ddp", "train_fused"],
                    "dpai.training"),
    **dict.fromkeys(["DATASETS", "Data", "ScoringSample", "scoring_batches"], "dpai.data"),
    "Checkpoint": "dpai.files",
}
SUBPACKAGES = ("core", "models", "methods", "paths", "training", "data", "files",
               "pipeline", "report")
__all__ = sorted(API)


def __getattr__(name):
    if name in API:
        value = getattr(importlib.import_module(API[name]), name)
    elif name in SUBPACKAGES:
        value = importlib.import_module(f"dpai.{name}")
    else:
        raise AttributeError(f"module 'dpai' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *API, *SUBPACKAGES])
