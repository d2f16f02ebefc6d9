"""Exact-count selection with seeded tie-breaking.

Keeping "everything above the k-th value" drops or keeps all ties and misses the target count
(a known issue in Synaptic-Flow's code). Here entries strictly above the k-th largest value are
kept and the ties at that value are broken by a random order drawn from a seeded CPU generator,
so counts are exact and masks are the same on CPU and GPU.
"""
import torch


def topk_mask(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool tensor of `scores`' shape with exactly `k` True entries at the largest scores."""
    flat = scores.detach().flatten()
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    # a selection, not a full sort
    threshold = torch.topk(flat, k, sorted=False).values.min()
    keep = flat > threshold
    need = k - int(keep.sum())
    if need > 0:
        ties = torch.nonzero(flat == threshold).flatten()
        order = torch.randperm(ties.numel(), generator=generator)[:need]
        keep[ties[order.to(ties.device)]] = True
    return keep.view_as(scores)


def global_topk(scores: dict[str, torch.Tensor], k: int,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep the `k` largest scores over all layers together."""
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().to(torch.float64) for n in names])
    keep = topk_mask(flat, k, generator)
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start:start + size].view_as(scores[n])
        start += size
    return out


def layer_topk(scores: dict[str, torch.Tensor], budget: dict[str, int],
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep budget[name] largest scores inside each layer."""
    return {n: topk_mask(s, budget[n], generator) for n, s in scores.items()}
