"""PHEW (Patil & Dovrolis 2021): data-free random walks biased by kernel L1 norms.

    mask = dpai.prune(model, "phew", sparsity=0.99, seed=0)

Walks alternate: a forward walk starts at an input channel of the first layer (round robin)
and crosses the network to the classifier; a backward walk starts at an output unit of the
classifier (round robin) and crosses it back to the input. At every layer a walk moves from
its current unit to a unit of the next layer with probability proportional to the L1 norm of
the kernel between them (the initial weights) and switches on one tap of that kernel: a tap
picked uniformly among the taps not kept yet (`tap="uniform"`), or with probability
proportional to |w| among them (`tap="magnitude"`; the reference samples taps by |w|, with
replacement). A walk that meets a full kernel goes on without adding. Walks continue until
exactly `global_budget(model, sparsity)` weights are kept; layer densities emerge.

The walk graph is the chain of prunable layers in module order, where the unit index passes
from a layer's outputs to the inputs of the next layer, with two refinements:
- a layer inside a submodule named `shortcut` (the 1x1 convs of ResNet blocks) is an
  alternative route: a walk entering such a block takes the block's main layers or the
  shortcut with probability 1/2 each (as the reference does); identity shortcuts are not
  routes (walks always cross the block's convs, as in the reference);
- when the unit counts of consecutive layers differ: next inputs = f x previous outputs
  (a flatten of C x H x W, channel-major) maps channel c to c*f + r, r uniform; previous
  outputs = m x next inputs (ViT's qkv: 3*dim features q|k|v, then proj on dim) means only
  the last block of outputs feeds the next layer (v: the only part of qkv that carries
  paths, as in dpai.paths): a forward walk leaving qkv picks among the v outputs, v feature
  2*dim + d enters proj as d, and a backward walk goes from proj input d to qkv output
  2*dim + d. PHEW therefore keeps no query/key weight (attention stays uniform).

Vectorised: each batch runs many walks at once as tensor ops (inverse-CDF sampling of the
kernel-norm distributions with a seeded CPU generator: the law of torch.multinomial, about
10x faster on VGG-19). Batch semantics vs. one walk at a time: walks of one batch see the
kept set as it was at the start of the batch (two walks may pick the same tap; it counts
once). The count is exact: walk w of a batch is ordered before walk w+1 (forward and
backward walks interleaved) and additions are kept in that order until the budget is met,
so only the last walk can be cut short. Walks run on the CPU; the mask goes to the model's
device.
"""
import torch

from .. import checks
from ..budget import global_budget
from ..mask import Mask
from ..models import prunable_layers
from . import register

TAPS = ("uniform", "magnitude")
# submodule names of a residual block's projection shortcut: ours, torchvision's ResNets
SHORTCUTS = ("shortcut", "downsample")
MAX_WALKS = 8192      # walks per batch
STALL_BATCHES = 64    # consecutive batches without a new weight before giving up


def walk_stages(model) -> list[list[list[str]]]:
    """The walk graph: a list of stages, each a list of alternative routes (lists of layer
    names). A stage with one route is plain; a ResNet block with a 1x1 shortcut conv is the
    stage [[conv1, conv2], [shortcut]]."""
    stages: list[list[list[str]]] = []
    for name in prunable_layers(model):
        word = next((w for w in SHORTCUTS if f".{w}." in f".{name}"), None)
        if word is None:
            stages.append([[name]])
            continue
        block = name.split(word + ".")[0]           # "layers.1.0." (or "" at top level)
        last = stages[-1] if stages else None
        if last is not None and len(last) == 2 and last[1][0].startswith(block + word + "."):
            last[1].append(name)                     # a shortcut with several layers
            continue
        main = []
        while stages and len(stages[-1]) == 1 and stages[-1][0][0].startswith(block):
            main = stages.pop()[0] + main
        if not main:
            raise ValueError(f"phew: shortcut layer {name!r} has no main branch in its block")
        stages.append([main, [name]])
    return stages


class _Layer:
    """One prunable layer as the walks see it (CPU tensors)."""

    def __init__(self, module, offset: int, tap: str, next_in: int | None):
        groups = module.groups if isinstance(module, torch.nn.Conv2d) else 1
        w = module.weight.detach().to("cpu", torch.float64).abs()
        self.c_out, self.in_per_group = w.shape[:2]
        w = w.reshape(self.c_out, self.in_per_group, -1)
        self.area = w.shape[2]
        self.offset = offset
        # a grouped (depthwise) conv: output o reads only the inputs of its group; as a walk
        # graph it is an (out, in) kernel-norm matrix that is 0 outside the groups' blocks
        self.c_in, self.out_per_group = self.in_per_group * groups, self.c_out // groups
        norm = w.sum(-1)                               # kernel L1 norms (out, in per group)
        if groups > 1:
            full = torch.zeros(self.c_out, self.c_in, dtype=norm.dtype)
            cols = ((torch.arange(self.c_out) // self.out_per_group)[:, None] * self.in_per_group
                    + torch.arange(self.in_per_group))
            norm = full.scatter_(1, cols, norm)
        # outputs that feed the next layer: all, or the last third (ViT qkv -> v)
        fold = next_in is not None and self.c_out == 3 * next_in
        self.feed_lo = self.c_out - next_in if fold else 0
        self.forward_cdf = _cdf(norm[self.feed_lo:].t())   # P(out | in)
        self.backward_cdf = _cdf(norm)                 # P(in | out)
        # floor at a tiny |w| so a free tap always beats a kept one in the Gumbel-max below
        self.log_tap = w.clamp_min(1e-300).log() if tap == "magnitude" else torch.zeros_like(w)


def _inputs(module) -> int:
    """Input units of a prunable layer (all groups of a grouped conv)."""
    groups = module.groups if isinstance(module, torch.nn.Conv2d) else 1
    return module.weight.shape[1] * groups


def _cdf(p: torch.Tensor) -> torch.Tensor:
    """Row-wise CDFs of the rows of `p` (normalised), row r shifted by r and flattened: one
    sorted sequence, so a whole batch samples with one searchsorted and no row gathers.
    A row of zeros (a unit whose kernels are all 0) is uniform, as in the reference."""
    total = p.sum(1, keepdim=True)
    p = torch.where(total > 0, p / total.clamp_min(1e-300), torch.ones_like(p) / p.shape[1])
    cdf = p.cumsum(1)
    cdf[:, -1] = 1.0
    return (cdf + torch.arange(p.shape[0], dtype=p.dtype)[:, None]).flatten()


class _Walker:
    def __init__(self, model, budget: int, seed: int, tap: str):
        modules = prunable_layers(model)
        self.stages = walk_stages(model)
        next_in = {}                                   # input units of the layer after each
        for s, stage in enumerate(self.stages):
            after = self.stages[s + 1][0][0] if s + 1 < len(self.stages) else None
            for route in stage:
                for a, b in zip(route, route[1:] + [after]):
                    next_in[a] = _inputs(modules[b]) if b else None
        self.layers, offset = {}, 0
        for name, m in modules.items():
            self.layers[name] = _Layer(m, offset, tap, next_in[name])
            offset += m.weight.numel()
        self.kept = torch.zeros(offset, dtype=torch.bool)
        self.max_steps = len(self.layers)
        self.g = torch.Generator().manual_seed(seed)
        self.budget = budget
        self.next_seed = {True: 0, False: 0}   # round-robin start units, forward / backward

    # -- unit index mapping between consecutive layers --------------------------------------
    def _to_next(self, idx, p_out, q_in):
        if q_in == p_out:
            return idx
        if q_in % p_out == 0:                  # flatten: channel c -> features c*f .. c*f+f-1
            f = q_in // p_out
            return idx * f + torch.randint(f, idx.shape, generator=self.g)
        if p_out == 3 * q_in:                  # qkv -> proj: v feature 2*dim + d -> d
            return idx - (p_out - q_in)
        raise ValueError(f"phew: cannot pass {p_out} units to a layer with {q_in} inputs: "
                         f"PHEW walks the chain of prunable layers in module order (projection "
                         f"shortcuts named {'/'.join(SHORTCUTS)} as alternative routes), and "
                         f"this model's layers do not form such a chain")

    def _to_prev(self, idx, q_in, p_out):
        if q_in == p_out:
            return idx
        if q_in % p_out == 0:
            return idx // (q_in // p_out)
        if p_out == 3 * q_in:
            return idx + (p_out - q_in)
        raise ValueError(f"phew: cannot pass {q_in} units to a layer with {p_out} outputs: "
                         f"PHEW walks the chain of prunable layers in module order, and this "
                         f"model's layers do not form such a chain")

    # -- one layer crossed by a set of walks ------------------------------------------------
    def _cross(self, layer: _Layer, unit, forward: bool):
        """Move every walk across `layer` from `unit` (an input index going forward, an output
        index going backward); return the new unit and the flat positions switched on
        (-1 where the chosen kernel is full)."""
        # inverse-CDF sampling (same law as torch.multinomial on the row, without gathering rows)
        if forward:   # towards the outputs that feed the next layer
            cdf, width, shift = layer.forward_cdf, layer.c_out - layer.feed_lo, layer.feed_lo
        else:
            cdf, width, shift = layer.backward_cdf, layer.c_in, 0
        u = torch.rand(unit.shape, generator=self.g, dtype=torch.float64)
        other = torch.searchsorted(cdf, unit + u, right=True) - unit * width
        other = other.clamp_max(width - 1) + shift     # clamp: float round-off at a row's end
        i, o = (unit, other) if forward else (other, unit)
        # the input's index inside the output's group (groups=1: the input itself); a pair
        # outside a group (only reachable through a row of zero norms) adds nothing
        local = i - (o // layer.out_per_group) * layer.in_per_group
        inside = (local >= 0) & (local < layer.in_per_group)
        local = local.clamp(0, layer.in_per_group - 1)
        base = layer.offset + (o * layer.in_per_group + local) * layer.area
        taps = base[:, None] + torch.arange(layer.area)
        free = ~self.kept[taps]
        # Gumbel-max over the free taps: uniform, or proportional to |w| with tap="magnitude"
        u = torch.rand(free.shape, generator=self.g, dtype=torch.float64).clamp_min(1e-300)
        key = layer.log_tap[o, local] - torch.log(-torch.log(u))
        choice = key.masked_fill(~free, -torch.inf).argmax(1)
        pos = torch.where(free.any(1) & inside, base + choice, -1)
        return (o if forward else i), pos

    def _walk(self, unit, order, forward: bool, out: list):
        """Walks starting at `unit` (their ids in `order`); records (order key, pos) pairs."""
        step = torch.zeros_like(unit)
        stages = self.stages if forward else self.stages[::-1]
        dim = None
        for stage in stages:
            routes = stage if forward else [r[::-1] for r in stage]
            pick = torch.randint(len(routes), unit.shape, generator=self.g) if len(routes) > 1 \
                else torch.zeros_like(unit)
            new_unit, new_step, new_dim = unit.clone(), step.clone(), dim
            for r, route in enumerate(routes):
                sel = pick == r
                u, s, d = unit[sel], step[sel], dim
                for name in route:
                    layer = self.layers[name]
                    if d is not None:
                        u = (self._to_next(u, d, layer.c_in) if forward
                             else self._to_prev(u, d, layer.c_out))
                    u, pos = self._cross(layer, u, forward)
                    out.append((order[sel] * self.max_steps + s, pos))
                    s, d = s + 1, (layer.c_out if forward else layer.c_in)
                new_unit[sel], new_step[sel], new_dim = u, s, d
            unit, step, dim = new_unit, new_step, new_dim

    def _seeds(self, n: int, forward: bool):
        name = self.stages[0][0][0] if forward else self.stages[-1][0][-1]
        layer = self.layers[name]
        units = layer.c_in if forward else layer.c_out
        start = self.next_seed[forward]
        self.next_seed[forward] = (start + n) % units
        return (start + torch.arange(n)) % units

    def run(self) -> int:
        """Walk until the budget is met; returns the number of walks."""
        walks = stalled = 0
        size = 2
        kept = 0
        while (missing := self.budget - kept) > 0:
            # about one walk per `max_steps` missing weights (even: forward/backward pairs)
            wanted = 2 * -(-missing // (2 * self.max_steps))
            size = min(MAX_WALKS, max(size if stalled else 2, wanted))
            half = size // 2
            records = []
            order = torch.arange(size)
            self._walk(self._seeds(half, True), order[0::2], True, records)    # even: forward
            self._walk(self._seeds(half, False), order[1::2], False, records)  # odd: backward
            walks += size
            key = torch.cat([k for k, _ in records])
            pos = torch.cat([p for _, p in records])
            key, pos = key[pos >= 0], pos[pos >= 0]
            if pos.numel() == 0:
                stalled += 1
                if stalled >= STALL_BATCHES:
                    raise RuntimeError(
                        f"phew: {stalled} batches of random walks in a row added no weight "
                        f"({self.budget - missing}/{self.budget} kept): the kernels the walks "
                        f"can reach are full")
                size = min(MAX_WALKS, 2 * size)
                continue
            stalled = 0
            # a tap picked by several walks belongs to the first of them
            uniq, inverse = torch.unique(pos, return_inverse=True)
            first = torch.full(uniq.shape, key.max() + 1).scatter_reduce(0, inverse, key, "amin")
            if uniq.numel() > missing:          # keep the additions of the earliest walks only
                uniq = uniq[torch.topk(first, missing, largest=False, sorted=False).indices]
            self.kept[uniq] = True
            kept += uniq.numel()
        return walks


@register("phew", rules={"tap": checks.one_of(*TAPS)})
def phew(model, sparsity, *, seed, data=None, tap: str = "uniform"):
    if tap not in TAPS:
        raise ValueError(f"phew: tap={tap!r} is not one of {list(TAPS)}")
    layers = prunable_layers(model)
    budget = global_budget(model, sparsity)
    walker = _Walker(model, budget, seed, tap)
    total = walker.kept.numel()
    walks = 0
    if budget >= total:
        walker.kept[:] = True                   # dense: no walk needed (zero-norm kernels included)
    elif budget > 0:
        walks = walker.run()
    masks = {}
    for name, m in layers.items():
        start = walker.layers[name].offset
        kept = walker.kept[start:start + m.weight.numel()]
        masks[name] = kept.view_as(m.weight).to(m.weight.device)
    return Mask(masks, {"walks": walks})
