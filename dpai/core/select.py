"""Exact-count selection with seeded tie-breaking.

Keeping "everything above the k-th value" drops or keeps all ties and misses the target count
(a known issue in Synaptic-Flow's code). Here entries strictly above the k-th largest value are
kept and the ties at that value are broken by a random order drawn from a seeded CPU generator,
so counts are exact and masks are the same on CPU and GPU.
"""
import functools
import math

import torch

# inputs at least this large take the chunked path on the CPU (topk_indices) and the bracketed
# one (kth_largest)
CHUNKED_MIN = 1 << 16
CHUNKS = 64
SAMPLE = 1 << 14  # sample size placing kth_largest's bracket


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


def kth_largest(parts: list[torch.Tensor], k: int) -> torch.Tensor:
    """The k-th largest entry of 1-D tensors taken together (1 <= k <= total), by selection,
    not a full sort, and on the CPU without concatenating them.

    Only the value is needed (the mask is then `> it`, plus ties), so any exact selection gives
    the same mask; this one is chosen for memory, which limits the largest models (SynFlow's
    float64 scores of a 630 M-weight ViT-H are 5 GB; a concatenated copy is 5 GB more, and
    torch.kthvalue holds a value and an int64 index per entry, 10 GB). On the GPU and for
    small inputs: torch.topk of the smaller side. Large CPU inputs: `_bracketed_kth` (a
    boolean per entry at a time), with kthvalue over everything when its bracket misses.
    """
    n = sum(p.numel() for p in parts)
    if parts[0].device.type != "cpu" or n < CHUNKED_MIN:
        flat = torch.cat(parts)
        largest = k <= n - k + 1
        kth = torch.topk(flat, k if largest else n - k + 1, largest=largest, sorted=False).values
        return kth.min() if largest else kth.max()
    value = _bracketed_kth(parts, k)
    return value if value is not None else torch.kthvalue(torch.cat(parts), n - k + 1).values


def _bracketed_kth(parts: list[torch.Tensor], k: int) -> torch.Tensor | None:
    """The k-th largest through a bracket [lo, hi] read off a random sample (Floyd-Rivest).

    The sample's order statistics on either side of rank k * SAMPLE / n, 4 standard deviations
    apart, bound the k-th largest with high probability; counting the entries above and at
    the bounds tells whether they do, and whether the answer is a bound itself (a tie at the
    bound, e.g. -inf for pruned weights). Otherwise it lies strictly between them, among
    at most 4 / sqrt(SAMPLE) ~ 3 % of the entries, where a kthvalue finds it. None when the
    bracket misses (the caller then selects over everything). The sample only places the
    bracket: the value returned is exact whatever it draws.
    """
    n = sum(p.numel() for p in parts)
    sample = _sorted_sample(parts)
    rank, p = k * SAMPLE / n, k / n
    spread = 4 * math.sqrt(SAMPLE * p * (1 - p)) + 8
    i_hi, i_lo = math.floor(rank - spread), math.ceil(rank + spread)
    hi = sample[i_hi] if i_hi >= 0 else sample.new_tensor(math.inf)
    lo = sample[i_lo] if i_lo < SAMPLE else sample.new_tensor(-math.inf)
    if count(x > hi for x in parts) >= k:
        return None
    at_or_above_hi = count(x >= hi for x in parts)
    if k <= at_or_above_hi:
        return hi
    if k > count(x > lo for x in parts):
        return lo if k <= count(x >= lo for x in parts) else None
    inside = torch.cat([x[(x > lo) & (x < hi)] for x in parts])
    return torch.kthvalue(inside, inside.numel() - (k - at_or_above_hi) + 1).values


def count(flags) -> int:
    """True entries of boolean tensors, one made at a time (bool .sum() would first cast to
    int64: 8 bytes per entry)."""
    return sum(int(torch.count_nonzero(f)) for f in flags)


def _sorted_sample(parts: list[torch.Tensor]) -> torch.Tensor:
    """SAMPLE entries of the parts' concatenation drawn with replacement (seeded CPU
    generator), largest first."""
    n = sum(p.numel() for p in parts)
    index = torch.randint(n, (SAMPLE,), generator=torch.Generator().manual_seed(0))
    drawn, start = [], 0
    for x in parts:
        mine = index[(index >= start) & (index < start + x.numel())]
        drawn.append(x[mine - start])
        start += x.numel()
    return torch.cat(drawn).sort(descending=True).values


def topk_masks(parts: list[torch.Tensor], k: int,
               generator: torch.Generator) -> list[torch.Tensor]:
    """Bool tensors of the parts' shapes with exactly `k` True entries in all, at the largest
    entries of the parts taken together: the mask of their concatenation, ties at the k-th
    value broken over its order (a seeded CPU permutation), without making it."""
    n = sum(p.numel() for p in parts)
    if k >= n:
        return [torch.ones_like(p, dtype=torch.bool) for p in parts]
    if k <= 0:
        return [torch.zeros_like(p, dtype=torch.bool) for p in parts]
    nans = count(torch.isnan(p) for p in parts)
    if nans:
        # NaN compares false with everything: "the k largest" is undefined (and the rule below
        # would keep nothing)
        raise ValueError(f"select: {nans} of {n} scores are NaN; an exact top-{k} needs "
                         "comparable scores")
    threshold = kth_largest(parts, k)
    keep = [p > threshold for p in parts]
    need = k - count(keep)
    if need > 0:
        ties = [p == threshold for p in parts]
        sizes = [count([t]) for t in ties]
        m = sum(sizes)
        # int32 when it fits: the same permutation as int64 from the same generator, half the
        # memory (SynFlow on a ViT whose zero-initialised head zeroes every score ties all)
        dtype = torch.int32 if m < 2 ** 31 else torch.int64
        chosen = torch.zeros(m, dtype=torch.bool)
        chosen[torch.randperm(m, generator=generator, dtype=dtype)[:need]] = True
        for kp, t, c in zip(keep, ties, chosen.split(sizes)):
            kp.masked_scatter_(t, c.to(kp.device))  # the i-th tie of a part gets c[i]
    return keep


def topk_mask(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool tensor of `scores`' shape with exactly `k` True entries at the largest scores."""
    return topk_masks([scores.detach().flatten()], k, generator)[0].view_as(scores)


def global_topk(scores: dict[str, torch.Tensor], k: int,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep the `k` largest scores over all layers together (ties broken over the layers'
    order), in their common dtype, as torch.cat would promote them."""
    names = list(scores)
    dtype = functools.reduce(torch.promote_types, (scores[n].dtype for n in names))
    parts = [scores[n].detach().flatten().to(dtype) for n in names]
    keep = topk_masks(parts, k, generator)
    return {n: kp.view_as(scores[n]) for n, kp in zip(names, keep)}


def layer_topk(scores: dict[str, torch.Tensor], budget: dict[str, int],
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep budget[name] largest scores inside each layer."""
    return {n: topk_mask(s, budget[n], generator) for n, s in scores.items()}
