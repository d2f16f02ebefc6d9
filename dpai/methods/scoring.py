"""Shared plumbing for the scoring pruners (SNIP, iterative SNIP, GraSP, SynFlow).

Every scorer works on a deep copy of the caller's model, so the caller's weights, requires_grad
flags, training mode and BatchNorm running statistics are never touched, and it asks autograd
for gradients (`torch.autograd.grad`) instead of filling `.grad`. In train mode the copy's
dropout and stochastic depth stay off, so a mask depends on the seed and the data only.
"""
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core import rules
from ..core.budget import check_sparsity, global_budget
from ..models import num_prunable, prunable_layers
from ..core.select import global_topk


# BatchNorm during the scoring passes of the data-driven baselines: "eval" normalises with the
# running statistics (the identity at init), the default of the Synaptic-Flow prune loop that
# the NPB and DPaI harnesses run (they never pass --prune-train-mode); "train" normalises with
# the batch's statistics, as the SNIP, FORCE and GraSP papers and NTK-SAP's harness
SCORING_MODE = rules.one_of("eval", "train")


def working_copy(model: nn.Module, train: bool, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy in the requested mode where only the prunable weights require grad."""
    work = copy.deepcopy(model)
    if dtype is not None:
        work = work.to(dtype)
    work.train(train)
    # dropout and stochastic depth off even in train mode (BatchNorm keeps batch statistics):
    # they would draw from the global RNG and make the mask depend on more than the seed
    for m in work.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ == "StochasticDepth":
            m.eval()
    for p in work.parameters():
        p.requires_grad_(False)
    for m in prunable_layers(work).values():
        m.weight.requires_grad_(True)
    return work


def weights(work: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight for n, m in prunable_layers(work).items()}


def batches_on(data, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The scoring batches moved once to `device`; a list, since iterative methods reread them."""
    if data is None:
        raise ValueError("data=None: this method needs an iterable of (inputs, targets) batches")
    out = [(x.to(device), y.to(device)) for x, y in data]
    if not out:
        raise ValueError("data is empty: give at least one (inputs, targets) batch")
    return out


def check_scoring_batch_size(size):
    """None (each scoring batch in one pass) or an int >= 1."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"scoring_batch_size={size!r} must be null (one pass per batch) or an "
                         "integer >= 1")
    return size


def micro_batches(batches, size: int | None) -> list[tuple]:
    """Each (x, y) batch cut into chunks of at most `size` images, as (x, y, weight) with
    weight = len(chunk) / len(batch): the weighted chunk losses sum to the batch's mean loss,
    so gradients (and GraSP's Hessian-gradient product, linear in them) accumulated over the
    chunks are the batch's. Layers that mix images of a batch (BatchNorm in train mode) see
    the chunk instead: with them the result is that of the smaller batches (as the GraSP
    reference's two half-batches), no longer the one-batch result. None: batches unchanged."""
    check_scoring_batch_size(size)
    if size is None:
        return list(batches)
    out = []
    for x, y in batches:
        for xc, yc in zip(x.split(size), y.split(size)):
            out.append((xc, yc, len(yc) / len(y)))
    return out


def data_info(batches) -> dict:
    return {"num_batches": len(batches), "num_samples": sum(len(y) for _, y in batches)}


def loss_grads(work: nn.Module, batches, temperature: float = 1.0,
               create_graph: bool = False) -> dict[str, torch.Tensor]:
    """dL/dW of the cross-entropy (mean over each batch), summed over the batches; a batch
    (x, y, weight) from `micro_batches` has its loss multiplied by weight."""
    ws = weights(work)
    total = None
    for x, y, *weight in batches:
        loss = F.cross_entropy(work(x) / temperature, y)
        if weight:
            loss = loss * weight[0]
        grads = torch.autograd.grad(loss, list(ws.values()), create_graph=create_graph)
        total = list(grads) if total is None else [t + g for t, g in zip(total, grads)]
    return dict(zip(ws, total))


def check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} must be a positive integer")
    return rounds


def exponential_counts(model: nn.Module, sparsity: float, rounds: int,
                       floor_pruned: bool = False) -> list[int]:
    """Kept counts round(N * d^(t/T)), t = 1..T; the last is exactly global_budget.
    floor_pruned: N - floor((1 - d^(t/T)) * N), the Synaptic-Flow prune loop's rule (a loop that
    re-admits weights is chaotic: one weight more or less in a round gives another mask)."""
    check_rounds(rounds)
    n, density = num_prunable(model), 1 - check_sparsity(sparsity)
    kept = (lambda d: n - math.floor((1 - d) * n)) if floor_pruned else (lambda d: round(n * d))
    counts = [kept(density ** (t / rounds)) for t in range(1, rounds + 1)]
    counts[-1] = global_budget(model, sparsity)
    return counts


def iterative_masks(work: nn.Module, counts: list[int], score_fn, generator: torch.Generator):
    """Yield the global mask after each round, round t keeping counts[t] weights.

    Before each round the pruned weights of `work` are set to zero (the others keep their
    initial values: scoring never changes a weight, and a pruned weight stays pruned, so no
    copy of the initial weights is needed), `score_fn(work)` gives a score per weight (fresh
    tensors, overwritten here), and the next mask is the top-d_t among the still-alive weights:
    pruned weights get -inf so that an alive weight scoring exactly 0 (a dead unit) can never
    tie with, and lose its place to, a pruned one. A pruned weight therefore never comes back.
    """
    layers = prunable_layers(work)
    mask = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()}
    for k in counts:
        with torch.no_grad():
            for n, m in layers.items():
                m.weight.masked_fill_(~mask[n], 0)
        scores = score_fn(work)
        for n, s in scores.items():
            s.detach().masked_fill_(~mask[n], -math.inf)
        mask = global_topk(scores, k, generator)
        del scores
        yield mask


def last(masks):
    """The final item of a generator of masks."""
    out = None
    for out in masks:
        pass
    return out

