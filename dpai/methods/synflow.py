"""SynFlow (Tanaka et al. 2020): data-free, iterative conservation of synaptic flow.

On a float64 copy with every parameter and buffer replaced by its absolute value (the caller's
model keeps its signs), in eval mode (BatchNorm then uses its running statistics, the identity
at init), R = sum(model(ones)) and the score is |dR/dW * W|. Float64 because in float32 R
over/underflows on deep nets and creates ties. 100 rounds, exponential schedule, global.
"""
import torch

from ..core import rules
from ..core.device import model_device
from ..core.mask import Mask
from ..models import input_shape
from .registry import register
from .scoring import exponential_counts, iterative_masks, last, weights, working_copy


def synflow_scores(work) -> dict[str, torch.Tensor]:
    ws = weights(work)
    ones = torch.ones((1, *input_shape(work)), dtype=torch.float64, device=model_device(work))
    r = work(ones).sum()
    grads = torch.autograd.grad(r, list(ws.values()))
    # |g * W| in the gradients' own memory: the model's size is large enough already (float64)
    return {n: g.mul_(ws[n].detach()).abs_() for n, g in zip(ws, grads)}


def synflow_masks(model, sparsity, *, seed, rounds: int = 100):
    """Yield the mask after each round (d_t = d^(t/T)); pruned weights stay at 0 and pruned."""
    input_shape(model)  # fail early on a model without input_shape
    counts = exponential_counts(model, sparsity, rounds)
    work = working_copy(model, train=False, dtype=torch.float64)
    with torch.no_grad():
        for t in [*work.parameters(), *work.buffers()]:
            if t.is_floating_point():
                t.abs_()
    g = torch.Generator().manual_seed(seed)
    return iterative_masks(work, counts, synflow_scores, g)


@register("synflow", rules={"rounds": rules.integer(1)})
def synflow(model, sparsity, *, seed, data=None, rounds: int = 100):
    mask = last(synflow_masks(model, sparsity, seed=seed, rounds=rounds))
    return Mask(mask, {"rounds": rounds, "schedule": "exponential", "dtype": "float64"})
