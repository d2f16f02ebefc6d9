"""Exact-count selection with seeded tie-breaking.

Keeping "everything above the k-th value" drops or keeps all ties and misses the target count
(a known issue in Synaptic-Flow's code). Here entries strictly above the k-th largest value are
kept and the ties at that value are broken by a random order drawn from a seeded CPU generator,
so counts are exact and masks are the same on CPU and GPU.
"""
import math

import torch

# inputs at least this large take the chunked path on the CPU
CHUNKED_MIN = 1 << 16
CHUNKS = 64


def topk_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (any order) of the `k` largest entries of a 1-D tensor.

    On the CPU, torch.topk of one long vector runs on one thread (38 ms for 2.4 M scores here).
    Large inputs are cut into CHUNKS rows whose top-m are found in parallel, then the top k of
    those candidates is taken. That is exact when no row's m-th largest value reaches the k-th
    largest candidate (then every entry >= it is a candidate); otherwise fall back to one topk.
    """
    n = values.numel()
    if k >= n:
        return torch.arange(n, device=values.device)
    if values.device.type != "cpu" or n < CHUNKED_MIN:
        return torch.topk(values, k, sorted=False).indices
    per_row = k // CHUNKS
    m = per_row + 4 * math.isqrt(per_row) + 16  # expected share + 4 standard deviations
    width = -(-n // CHUNKS)
    if m >= width // 2:
        return torch.topk(values, k, sorted=False).indices
    padded = values
    if width * CHUNKS != n:
        padded = torch.cat([values, values.new_full((width * CHUNKS - n,), -math.inf)])
    rows = torch.topk(padded.view(CHUNKS, width), m, dim=1, sorted=False)
    best = torch.topk(rows.values.flatten(), k, sorted=False)
    if bool((rows.values.amin(1) >= best.values.min()).any()):
        return torch.topk(values, k, sorted=False).indices
    offsets = torch.arange(CHUNKS, device=values.device)[:, None] * width
    return (rows.indices + offsets).flatten()[best.indices]


def topk_mask(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool tensor of `scores`' shape with exactly `k` True entries at the largest scores."""
    flat = scores.detach().flatten()
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if bool(torch.isnan(flat).any()):
        # NaN compares false with everything: "the k largest" is undefined (and the rule below
        # would keep nothing)
        raise ValueError(f"select: {int(torch.isnan(flat).sum())} of {n} scores are NaN; an "
                         f"exact top-{k} needs comparable scores")
    # a selection, not a full sort
    threshold = flat[topk_indices(flat, k)].min()
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
