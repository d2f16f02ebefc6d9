"""GraSP (Wang et al. 2020): keep the weights whose removal would most reduce gradient flow.

Removing weights changes the gradient norm, to first order, by 2 * delta^T H g with delta = -W
on the removed entries. Per weight that change is proportional to S = -W * Hg: a large S means
removing the weight raises (or least lowers) the gradient norm, so the original code REMOVES the
largest S and keeps the rest (`keep = S <= threshold`). We keep the k largest W * Hg, which is
the same set. Its extra normalisation of S by |sum S| is positive and changes no order.
"""
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core import rules
from ..core.budget import global_budget
from ..core.device import model_device
from ..core.mask import Mask
from .registry import register
from .scoring import (SCORING_MODE, batches_on, check_scoring_batch_size, data_info,
                      loss_grads, micro_batches, weights, working_copy)
from ..core.select import global_topk


class _HardSigmoid(nn.Module):
    """relu6(x + 3) / 6: nn.Hardsigmoid's value, with the double backward Hg needs (torch has
    none for hardsigmoid; MobileNetV3's SE gates use it)."""

    def forward(self, x):
        return F.relu6(x + 3) / 6


def twice_differentiable(work: nn.Module) -> nn.Module:
    """Replace (in the working copy) the modules whose backward has no derivative."""
    for name, m in list(work.named_modules()):
        if isinstance(m, nn.Hardsigmoid):
            parent, _, child = name.rpartition(".")
            setattr(work.get_submodule(parent) if parent else work, child, _HardSigmoid())
    return work


def grasp_hg(work, batches, temperature: float) -> dict[str, torch.Tensor]:
    """Hg for the loss on logits / temperature, as the original: g summed over the batches
    without graph, then z = sum_b grad_b . g with graph, and Hg = dz/dW.

    Two passes over the batches: the first accumulates g (no graph), the second, with g held
    fixed, takes z_b = grad_b . g and dz_b/dW one batch at a time. Both are sums over batches
    (z is linear in grad_b), so with micro-batches (x, y, weight) only one chunk's double-
    backward graph is alive at a time and the sum is the same Hg."""
    g = loss_grads(work, batches, temperature)
    ws = weights(work)
    hg = None
    # the math attention kernel is the one with a double backward (fused ones have none)
    with sdpa_kernel(SDPBackend.MATH):
        for batch in batches:
            grads = loss_grads(work, [batch], temperature, create_graph=True)
            z = sum((grads[n] * g[n]).sum() for n in ws)
            part = torch.autograd.grad(z, list(ws.values()))
            hg = list(part) if hg is None else [h + p for h, p in zip(hg, part)]
    return dict(zip(ws, hg))


def grasp_scores(work, batches, temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """The keep score W * Hg (= minus GraSP's S): the largest are kept.

    Where Hg is not finite it is taken as 0, with a warning naming the layers: torch's double
    backward of a normalisation at an exact zero vector is 0/0 (Swin V2's cosine attention on
    the zero-padded tokens of a window larger than the feature map), which would otherwise
    make whole query/key projections NaN and the selection undefined."""
    ws = weights(work)
    hg = grasp_hg(work, batches, temperature)
    bad = {n: int((~torch.isfinite(h)).sum()) for n, h in hg.items()
           if not bool(torch.isfinite(h).all())}
    if bad:
        warnings.warn(f"grasp: the Hessian-gradient product is not finite for "
                      f"{sum(bad.values())} weights ({bad}); they score 0", RuntimeWarning,
                      stacklevel=3)
        hg = {n: torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0) for n, h in hg.items()}
    return {n: h.mul_(ws[n].detach()) for n, h in hg.items()}  # in Hg's own memory


@register("grasp", needs_data=True, rules={
    "temperature": rules.real(0, lo_open=True), "scoring_mode": SCORING_MODE,
    "scoring_batch_size": rules.optional(rules.integer(1))})
def grasp(model, sparsity, *, seed, data=None, temperature: float = 200.0,
          scoring_mode: str = "eval", scoring_batch_size=None):
    """scoring_mode: "eval" (the NPB harness, default) | "train" (BatchNorm on batch
    statistics, as the GraSP paper); scoring_batch_size: images per double-backward pass
    (None: each batch in one pass)."""
    check_scoring_batch_size(scoring_batch_size)
    k = global_budget(model, sparsity)
    batches = batches_on(data, model_device(model))
    work = twice_differentiable(working_copy(model, train=scoring_mode == "train"))
    scores = grasp_scores(work, micro_batches(batches, scoring_batch_size), float(temperature))
    g = torch.Generator().manual_seed(seed)
    return Mask(global_topk(scores, k, g), data_info(batches))
