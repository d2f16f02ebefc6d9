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


def kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest entry of a 1-D tensor (1 <= k <= n), by selection, not a full sort.

    Only the value is needed (the mask is then `> it`, plus ties), so any exact selection gives
    the same mask; this one is chosen for memory, which limits the largest models (SynFlow's
    float64 scores of a 300 M-weight ViT). CPU torch.topk holds a (value, index) pair per entry
    of the rows it selects from and returns k of each (for k = 95 % of n, about 37 bytes per
    entry with the chunked candidates). Here the smaller side is selected (for k > n/2 the
    n - k + 1 smallest), and:
    - when that side is at most n/16: the CHUNKS rows' top-m in parallel, then the j-th of
      those candidates (exact unless a row's m-th reaches it; then as below): ~2 bytes/entry;
    - otherwise torch.kthvalue (a quickselect on one (value, index) copy): 16 bytes per
      float64 entry, and its time does not grow with ties (numpy's partition took 10 s on
      87 M scores a third of which were -inf, kthvalue 1.8 s).
    """
    n = flat.numel()
    largest = k <= n - k + 1
    j = k if largest else n - k + 1
    if flat.device.type != "cpu" or n < CHUNKED_MIN:
        kth = torch.topk(flat, j, largest=largest, sorted=False).values
        return kth.min() if largest else kth.max()
    if j <= n // 16:
        width = n // CHUNKS
        per_row = j // CHUNKS
        m = per_row + 4 * math.isqrt(per_row) + 16  # expected share + 4 standard deviations
        rows = torch.topk(flat[:width * CHUNKS].view(CHUNKS, width), m, dim=1,
                          largest=largest, sorted=False).values
        candidates = torch.cat([rows.flatten(), flat[width * CHUNKS:]])
        kth = torch.topk(candidates, j, largest=largest, sorted=False).values
        value = kth.min() if largest else kth.max()
        # exact when every row's m-th entry lies strictly beyond the value: then every entry
        # at least as extreme as it is a candidate
        reached = (rows.amin(1) >= value) if largest else (rows.amax(1) <= value)
        if not bool(reached.any()):
            return value
    return torch.kthvalue(flat, n - k + 1).values


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
    threshold = kth_largest(flat, k)
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
    # one vector in the scores' common dtype (torch.cat promotes): the order is the scores'
    flat = torch.cat([scores[n].detach().flatten() for n in names])
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
