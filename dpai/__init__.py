"""dpai: DPaI (Differentiable Pruning at Initialization, ICLR 2025) and the PaI baselines.

    import dpai
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    mask = dpai.prune(model, method="dpai", sparsity=0.99, seed=0)
    dpai.topology(model, mask)
"""
from .budget import erk_budget, erk_density, global_budget, layer_budget, uniform_budget
from .device import resolve_device
from .mask import Mask
from .models import MODELS, create_model, num_prunable, prunable_layers
from .pruners import DATA_DRIVEN, METHODS, method_params, prune

__all__ = ["MODELS", "METHODS", "DATA_DRIVEN", "Mask", "create_model", "prune", "method_params",
           "prunable_layers", "num_prunable", "erk_budget", "erk_density", "uniform_budget",
           "global_budget", "layer_budget", "resolve_device"]
from .paths import PathNetwork, topology  # noqa: E402
__all__ += ["PathNetwork", "topology"]
from .train import TrainConfig, train  # noqa: E402
__all__ += ["TrainConfig", "train"]
from .data import DATASETS, Data, ScoringSample, scoring_batches  # noqa: E402
from .paths import log_paths_reference  # noqa: E402
__all__ += ["DATASETS", "Data", "ScoringSample", "scoring_batches", "log_paths_reference"]
from .train import NonFiniteLoss  # noqa: E402
from .checkpoint import Checkpoint  # noqa: E402
from . import config  # noqa: E402  (dpai.config.validate: the pipeline's parameter checks)
__all__ += ["NonFiniteLoss", "Checkpoint", "config"]
from .flops import flops  # noqa: E402
__all__ += ["flops"]
