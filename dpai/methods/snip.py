"""SNIP (Lee et al. 2019) and iterative SNIP (de Jorge et al. 2021, the "FORCE" paper).

Score |g * W| with g = dL/dW summed over the scoring batches, model in train mode, on the
weights that will be trained (no re-initialised copy, unlike the original SNIP code).
"""
import torch

from ..core import rules
from ..core.budget import global_budget
from ..core.device import model_device
from ..core.mask import Mask
from .registry import register
from .scoring import (batches_on, check_rounds, check_scoring_batch_size, data_info,
                      exponential_counts, iterative_masks, last, loss_grads, micro_batches,
                      weights, working_copy)
from ..core.select import global_topk


def snip_scores(work, batches) -> dict[str, torch.Tensor]:
    """|dL/dW * W| for every prunable weight of `work` (the weights as they are now)."""
    ws = weights(work)
    # in the gradients' own memory (fresh tensors from autograd, summed in loss_grads)
    return {n: g.mul_(ws[n].detach()).abs_() for n, g in loss_grads(work, batches).items()}


@register("snip", needs_data=True,
          rules={"scoring_batch_size": rules.optional(rules.integer(1))})
def snip(model, sparsity, *, seed, data=None, scoring_batch_size=None):
    """scoring_batch_size: images per forward/backward pass (None: each batch in one pass);
    gradients are accumulated over the passes (scoring.micro_batches)."""
    check_scoring_batch_size(scoring_batch_size)
    k = global_budget(model, sparsity)
    batches = batches_on(data, model_device(model))
    scores = snip_scores(working_copy(model, train=True),
                         micro_batches(batches, scoring_batch_size))
    g = torch.Generator().manual_seed(seed)
    return Mask(global_topk(scores, k, g), data_info(batches))


def iter_snip_masks(model, sparsity, *, seed, data, rounds: int = 60, scoring_batch_size=None):
    """Yield the mask after each of the `rounds` rounds (d_t = d^(t/T)). Each round rescores
    |g * W| on the masked network (pruned weights held at 0) and shrinks among the alive ones,
    as the reference's iterative SNIP mode (FORCE, which lets weights return, is not this)."""
    counts = exponential_counts(model, sparsity, rounds)
    batches = micro_batches(batches_on(data, model_device(model)), scoring_batch_size)
    work = working_copy(model, train=True)
    g = torch.Generator().manual_seed(seed)
    return iterative_masks(work, counts, lambda w: snip_scores(w, batches), g)


@register("iter_snip", needs_data=True, rules={
    "rounds": rules.integer(1), "scoring_batch_size": rules.optional(rules.integer(1))})
def iter_snip(model, sparsity, *, seed, data=None, rounds: int = 60, scoring_batch_size=None):
    # 60 rounds, exponential schedule: the reference README's CIFAR setting
    check_rounds(rounds)
    check_scoring_batch_size(scoring_batch_size)
    batches = batches_on(data, model_device(model))
    mask = last(iter_snip_masks(model, sparsity, seed=seed, data=batches, rounds=rounds,
                                scoring_batch_size=scoring_batch_size))
    return Mask(mask, {"rounds": rounds, "schedule": "exponential", **data_info(batches)})
