"""SNIP (Lee et al. 2019) and iterative SNIP (de Jorge et al. 2021, the "FORCE" paper).

Score |g * W| with g = dL/dW summed over the scoring batches, on the weights that will be
trained (no re-initialised copy, unlike the original SNIP code). `scoring_mode` (scoring.py):
"eval" (default, the NPB/Synaptic-Flow harness that produced the DPaI paper's comparison)
or "train" (BatchNorm on batch statistics, as the SNIP and FORCE papers and NTK-SAP's harness).
"""
import torch

from ..core import rules
from ..core.budget import global_budget
from ..core.device import model_device
from ..core.mask import Mask
from ..models import prunable_layers
from .registry import register
from .scoring import (SCORING_MODE, batches_on, check_rounds, check_scoring_batch_size,
                      data_info, exponential_counts, iterative_masks, last, loss_grads,
                      micro_batches, weights, working_copy)
from ..core.select import global_topk


def snip_scores(work, batches) -> dict[str, torch.Tensor]:
    """|dL/dW * W| for every prunable weight of `work` (the weights as they are now)."""
    ws = weights(work)
    # in the gradients' own memory (fresh tensors from autograd, summed in loss_grads)
    return {n: g.mul_(ws[n].detach()).abs_() for n, g in loss_grads(work, batches).items()}


@register("snip", needs_data=True, rules={
    "scoring_mode": SCORING_MODE, "scoring_batch_size": rules.optional(rules.integer(1))})
def snip(model, sparsity, *, seed, data=None, scoring_mode: str = "eval",
         scoring_batch_size=None):
    """scoring_batch_size: images per forward/backward pass (None: each batch in one pass);
    gradients are accumulated over the passes (scoring.micro_batches)."""
    check_scoring_batch_size(scoring_batch_size)
    k = global_budget(model, sparsity)
    batches = batches_on(data, model_device(model))
    scores = snip_scores(working_copy(model, train=scoring_mode == "train"),
                         micro_batches(batches, scoring_batch_size))
    g = torch.Generator().manual_seed(seed)
    return Mask(global_topk(scores, k, g), data_info(batches))


def readmit_masks(work, counts, batches, generator):
    """The NPB / Synaptic-Flow loop: each round scores EVERY weight by |dL/dW_eff * W_init| on the
    masked network (a pruned weight's gradient is not zero) and keeps the top count, so pruned
    weights can return."""
    layers = prunable_layers(work)
    init = {n: m.weight.detach().clone() for n, m in layers.items()}
    for k in counts:
        scores = {n: g.mul_(init[n]).abs_() for n, g in loss_grads(work, batches).items()}
        mask = global_topk(scores, k, generator)
        with torch.no_grad():
            for n, m in layers.items():
                m.weight.copy_(init[n] * mask[n])
        yield mask


def iter_snip_masks(model, sparsity, *, seed, data, rounds: int = 60, scoring_mode: str = "eval",
                    scoring_batch_size=None, readmit: bool = False):
    """Yield the mask after each of the `rounds` rounds (d_t = d^(t/T)). Each round rescores
    |g * W| on the masked network (pruned weights held at 0) and shrinks among the alive ones,
    so a pruned weight never returns (de Jorge et al.). readmit=True is the NPB / Synaptic-Flow
    prune loop as written: it rescores every weight, so pruned ones can return."""
    batches = micro_batches(batches_on(data, model_device(model)), scoring_batch_size)
    work = working_copy(model, train=scoring_mode == "train")
    g = torch.Generator().manual_seed(seed)
    if readmit:
        counts = exponential_counts(model, sparsity, rounds, floor_pruned=True)
        return readmit_masks(work, counts, batches, g)
    counts = exponential_counts(model, sparsity, rounds)
    return iterative_masks(work, counts, lambda w: snip_scores(w, batches), g)


@register("iter_snip", needs_data=True, rules={
    "rounds": rules.integer(1), "scoring_mode": SCORING_MODE,
    "scoring_batch_size": rules.optional(rules.integer(1)), "readmit": rules.boolean()})
def iter_snip(model, sparsity, *, seed, data=None, rounds: int = 60, scoring_mode: str = "eval",
              scoring_batch_size=None, readmit: bool = False):
    # 60 rounds, exponential schedule: the reference README's CIFAR setting
    check_rounds(rounds)
    check_scoring_batch_size(scoring_batch_size)
    batches = batches_on(data, model_device(model))
    mask = last(iter_snip_masks(model, sparsity, seed=seed, data=batches, rounds=rounds,
                                scoring_mode=scoring_mode, scoring_batch_size=scoring_batch_size,
                                readmit=readmit))
    return Mask(mask, {"rounds": rounds, "schedule": "exponential", **data_info(batches)})
