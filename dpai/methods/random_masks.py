"""Random baselines: uniform layer densities, or ERK layer densities ("Random" in DPaI papers)."""
import torch

from ..core.budget import erk_budget, uniform_budget
from ..core.mask import Mask
from ..models import prunable_layers
from .registry import register
from ..core.select import layer_topk


def _random(model, budget, seed):
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(m.weight.shape, generator=g) for n, m in prunable_layers(model).items()}
    device = next(model.parameters()).device
    return Mask({n: t.to(device) for n, t in layer_topk(scores, budget, g).items()})


@register("random_uniform")
def random_uniform(model, sparsity, *, seed, data=None):
    return _random(model, uniform_budget(model, sparsity), seed)


@register("random_erk")
def random_erk(model, sparsity, *, seed, data=None):
    return _random(model, erk_budget(model, sparsity), seed)
