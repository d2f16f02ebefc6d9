"""Magnitude at initialisation: keep the globally largest |W|.

Kaiming init scales weights by 1/sqrt(fan_in), so wide layers are stripped first and at extreme
sparsity whole layers can collapse; that is the method's known behaviour, kept as is.
"""
import torch

from ..core.budget import global_budget
from ..core.mask import Mask
from ..models import prunable_layers
from .registry import register
from ..core.select import global_topk


@register("magnitude")
def magnitude(model, sparsity, *, seed, data=None):
    k = global_budget(model, sparsity)
    scores = {n: m.weight.detach().abs() for n, m in prunable_layers(model).items()}
    return Mask(global_topk(scores, k, torch.Generator().manual_seed(seed)))
