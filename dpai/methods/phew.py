"""PHEW (Patil & Dovrolis 2021): data-free random walks biased by kernel L1 norms.

    mask = dpai.prune(model, "phew", sparsity=0.99, seed=0)

Walks alternate: a forward walk starts at an input channel of the first layer (round robin)
and crosses the network to the classifier; a backward walk starts at an output unit of the
classifier (round robin) and crosses it back to the input. At every layer a walk moves from
its current unit to a unit of the next layer with probability proportional to the L1 norm of
the kernel between them (the initial weights) and switches on one tap of that kernel:
`tap="reference"` (default, as the authors' code, github.com/ShreyasMalakarjunPatil/PHEW,
c4a0d40, Prune/phew_utils.py) draws a tap with probability proportional to |w| among all
taps of the kernel, and a tap already kept adds nothing; "uniform" picks uniformly among the
free taps and "magnitude" proportionally to |w| among the free taps (both add a weight at
every step but at a full kernel; on ResNet-20 at 90 % they keep 15-20 % more weights in the
first stage than the reference, "reference" within 2 %). Walks continue until
exactly `global_budget(model, sparsity)` weights are kept; layer densities emerge.

The walk graph is the model's own graph (dpai.unit_graph: the traced path network cut at
every prunable layer), at the level of units (channels, features): a walk leaving output unit
u of a layer moves to an input unit v of a layer that u feeds through no other prunable layer
(v = u through sums and concatenations at an offset, c*f + r for a flatten, a permutation for
a channel shuffle, ...). Where u feeds several layers, a layer that another candidate leads to
is skipped (an identity shortcut is not a route, as in the reference: walks cross the block's
convs), and the remaining ones are equally likely (a ResNet block with a 1x1 projection
shortcut: the main convs or the shortcut, 1/2 each, as the reference does); then v is uniform
among the units u reaches there. Backward walks mirror this (`shortcut="traced"`).
`shortcut="reference"` (default) keeps the authors' forward rule: their walk decides on the
shortcut one layer early (it tests whether the layer three ahead is a 1x1 conv), so a forward
walk leaving the conv before the block input goes on to that conv or, with 1/2, straight into
the projection shortcut, carrying its unit there; from the block input it always takes the
main convs (half of the forward walks skip the last conv of the first two stages: on
ResNet-20 "traced" keeps 19-29 % more weights than the reference in layers.0.2.conv2 and
layers.1.2.conv2, "reference" within 2 % at 90 %).
Generalised: where a walk leaving layer A may go to targets with fewer layers left to the
output than another target (a shortcut that skips convs), those targets move to the single
layer P before A, with their share of A's walks, A's input unit standing for the shortcut's;
where A has several predecessors (or the network input) or the unit counts differ, the
traced routes stay. Backward walks are the traced ones (the reference's are the same).

A layer crossing only picks units that lead on: attention's query and key rows and a
squeeze-and-excitation block's convs carry no path, so PHEW keeps none of their weights;
forward walks start at the input channels (round robin) and end at the output, backward
walks start at the classes (round robin).

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

from ..core import rules
from ..core.budget import global_budget
from ..core.mask import Mask
from ..models import prunable_layers
from ..paths.units import INPUT, OUTPUT, unit_graph
from .registry import register

TAPS = ("reference", "uniform", "magnitude")
SHORTCUTS = ("reference", "traced")
MAX_WALKS = 8192      # walks per batch
STALL_BATCHES = 64    # consecutive batches without a new weight before giving up


class _Choice:
    """Where a walk goes from each unit of one node: (node index, unit, probability) entries,
    entry e belonging to unit rows[e], as one sorted flat CDF (row r shifted by r): a batch
    samples with one searchsorted."""

    def __init__(self, units: int, rows, node, unit, prob):
        order = torch.argsort(rows, stable=True)
        rows, self.node, self.unit, prob = rows[order], node[order], unit[order], prob[order]
        counts = torch.bincount(rows, minlength=units)
        self.end = counts.cumsum(0) - 1                  # last entry of each row
        cum = prob.cumsum(0)
        start = self.end - counts + 1
        before = torch.where(start > 0, cum[(start - 1).clamp_min(0)], torch.zeros_like(cum[:1]))
        cdf = cum - before[rows]
        cdf[self.end[counts > 0]] = 1.0                  # exact row ends despite round-off
        self.prob, self.cdf = prob, cdf + rows
        self.empty = counts == 0

    def sample(self, unit, g):
        """(node, unit) for walks at `unit`; node -1 where the unit leads nowhere."""
        u = torch.rand(unit.shape, generator=g, dtype=torch.float64)
        pick = torch.searchsorted(self.cdf, unit + u, right=True)
        pick = torch.minimum(pick, self.end[unit]).clamp_min(0)
        node = torch.where(self.empty[unit], -1, self.node[pick])
        return node, self.unit[pick]


def _moves(graph, index, reach, forward: bool) -> dict:
    """{node index: (units, rows, nodes, units there, probabilities)}: where a walk at each
    unit of a node goes next, forward (successors) or backward (predecessors)."""
    links: dict = {}
    for (a, b), block in graph.edges.items():
        if forward:
            links.setdefault(a, []).append((b, block))
        else:
            links.setdefault(b, []).append((a, block.t()))
    out = {}
    for here, targets in links.items():
        ids = torch.tensor([index[t] for t, _ in targets])
        feeds = torch.stack([block.any(1) for _, block in targets], 1)  # unit -> target layer
        # skip a target that another candidate of the same unit leads to (a shortcut past it)
        between = (reach[ids][:, ids] if forward else reach[ids][:, ids].t()).double()
        keep = feeds & ~((feeds.double() @ between) > 0)
        share = keep.double() / keep.sum(1, keepdim=True).clamp_min(1)
        rows, nodes, units, probs = [], [], [], []
        for j, (_, block) in enumerate(targets):
            block = block & keep[:, j:j + 1]
            u, v = block.nonzero(as_tuple=True)
            if u.numel() == 0:
                continue
            rows.append(u)
            nodes.append(torch.full_like(u, int(ids[j])))
            units.append(v)
            probs.append(share[u, j] / block.sum(1).double()[u])
        out[index[here]] = (feeds.shape[0], torch.cat(rows), torch.cat(nodes), torch.cat(units),
                            torch.cat(probs))
    return out


def _branch_one_layer_early(moves: dict, longest: list, units_in: dict, names: list) -> dict:
    """The reference's forward route at a projection shortcut: where a walk leaving layer A
    may go to the main branch or to a layer S that skips part of it (fewer layers left to the
    output: a 1x1 projection shortcut), the choice is made one layer earlier. A walk leaving
    the layer P before A goes to A or, with S's share of A's walks, straight to S, carrying
    the input unit it would have had at A; from A it always takes the main branch. Applied
    where A has a single predecessor P and S has as many input units as A (the reference's
    ResNets); elsewhere the traced routes stay."""
    moves = dict(moves)
    preds = {}
    for p, (_, _, nodes, _, _) in moves.items():
        for a in nodes.unique().tolist():
            preds.setdefault(a, []).append(p)
    for a, (n_units, rows, nodes, units, probs) in list(moves.items()):
        targets = nodes.unique().tolist()
        deepest = max(longest[t] for t in targets)
        skips = [t for t in targets if longest[t] < deepest]
        if (not skips or len(preds.get(a, [])) != 1 or preds[a][0] == 0
                or any(units_in.get(names[t]) != units_in.get(names[a]) for t in skips)):
            continue
        alive = int(rows.unique().numel())
        w = {t: float(probs[nodes == t].sum()) / alive for t in skips}   # S's share of walks
        main = ~torch.isin(nodes, torch.tensor(skips))
        keep_p = probs[main]
        total = torch.zeros(n_units, dtype=probs.dtype).index_add_(0, rows[main], keep_p)
        moves[a] = (n_units, rows[main], nodes[main], units[main], keep_p / total[rows[main]])
        p = preds[a][0]
        pu, prow, pnode, punit, pprob = moves[p]
        into = pnode == a
        extra = [(prow[into], torch.full_like(pnode[into], t), punit[into], pprob[into] * w[t])
                 for t in skips]
        pprob = torch.where(into, pprob * (1 - sum(w.values())), pprob)
        moves[p] = (pu, torch.cat([prow, *(e[0] for e in extra)]),
                    torch.cat([pnode, *(e[1] for e in extra)]),
                    torch.cat([punit, *(e[2] for e in extra)]),
                    torch.cat([pprob, *(e[3] for e in extra)]))
    return moves


class _Layer:
    """One prunable layer as the walks see it (CPU tensors)."""

    def __init__(self, module, offset: int, tap: str, rows: int, leads_on, reached):
        groups = module.groups if isinstance(module, torch.nn.Conv2d) else 1
        w = module.weight.detach().to("cpu", torch.float64).abs()
        self.c_out, self.in_per_group = w.shape[:2]
        w = w.reshape(self.c_out, self.in_per_group, -1)
        self.area = w.shape[2]
        self.offset, self.rows = offset, rows
        # a grouped (depthwise) conv: output o reads only the inputs of its group; as a walk
        # graph it is an (out, in) kernel-norm matrix that is 0 outside the groups' blocks
        self.c_in, self.out_per_group = self.in_per_group * groups, self.c_out // groups
        norm = w.sum(-1)                               # kernel L1 norms (out, in per group)
        if groups > 1:
            full = torch.zeros(self.c_out, self.c_in, dtype=norm.dtype)
            cols = ((torch.arange(self.c_out) // self.out_per_group)[:, None] * self.in_per_group
                    + torch.arange(self.in_per_group))
            norm = full.scatter_(1, cols, norm)
        # a crossing only picks units the walk can go on from: outputs that feed a next layer
        # (weight rows from `rows`: the v rows of a q|k|v projection), inputs reached from
        # the network input
        out_ok = torch.zeros(self.c_out, dtype=torch.bool)
        out_ok[rows:rows + len(leads_on)] = leads_on
        self.forward_cdf = _cdf(norm.t(), out_ok)      # P(out | in)
        self.backward_cdf = _cdf(norm, reached)        # P(in | out)
        # floor at a tiny |w| so a free tap always beats a kept one in the Gumbel-max below;
        # uniform taps need no per-weight tensor (a float64 zero per weight was 5 GB on ViT-H)
        self.log_tap = w.clamp_min(1e-300).log() if tap != "uniform" else None
        self.replace = tap == "reference"               # draw among all taps, kept ones too


def _cdf(p: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Row-wise CDFs of the rows of `p` restricted to the `allowed` columns (normalised), row r
    shifted by r and flattened: one sorted sequence, so a whole batch samples with one
    searchsorted and no row gathers. A row of zeros (a unit whose kernels are all 0) is
    uniform over the allowed columns, as in the reference."""
    allowed = allowed if bool(allowed.any()) else torch.ones_like(allowed)
    p = p * allowed
    total = p.sum(1, keepdim=True)
    uniform = allowed.to(p.dtype).expand_as(p) / allowed.sum()
    p = torch.where(total > 0, p / total.clamp_min(1e-300), uniform)
    cdf = p.cumsum(1)
    cdf[:, -1] = 1.0
    return (cdf + torch.arange(p.shape[0], dtype=p.dtype)[:, None]).flatten()


class _Walker:
    def __init__(self, model, budget: int, seed: int, tap: str, shortcut: str = "reference"):
        modules = prunable_layers(model)
        graph = unit_graph(model)
        self.graph = graph
        self.names = graph.nodes                       # INPUT, layers..., OUTPUT
        index = {n: i for i, n in enumerate(self.names)}
        # reach[a, b]: b lies downstream of a (nodes are in topological order)
        reach = torch.zeros(len(self.names), len(self.names), dtype=torch.bool)
        succ: dict = {}
        for a, b in graph.edges:
            succ.setdefault(index[a], set()).add(index[b])
        longest = [0] * len(self.names)   # layers on the longest path from each node
        for a in range(len(self.names) - 1, -1, -1):
            for b in succ.get(a, ()):
                reach[a, b] = True
                reach[a] |= reach[b]
                longest[a] = max(longest[a], longest[b] + (b != len(self.names) - 1))
        forward = _moves(graph, index, reach, True)
        if shortcut == "reference":
            forward = _branch_one_layer_early(forward, longest, graph.units_in, self.names)
        self.forward = {i: _Choice(*m) for i, m in forward.items()}
        self.backward = {i: _Choice(*m) for i, m in _moves(graph, index, reach, False).items()}
        # layers by node index (a prunable layer no path reaches, such as an SE conv, is
        # never walked); offsets: where each layer's weights start in the flat kept vector
        self.layers, self.offsets, offset = {}, {}, 0
        for name, m in modules.items():
            self.offsets[name] = offset
            if name in index:
                i = index[name]
                leads_on = (~self.forward[i].empty if i in self.forward
                            else torch.zeros(graph.units_out[name], dtype=torch.bool))
                reached = (~self.backward[i].empty if i in self.backward
                           else torch.zeros(graph.units_in[name], dtype=torch.bool))
                self.layers[i] = _Layer(m, offset, tap, graph.rows[name], leads_on, reached)
            offset += m.weight.numel()
        self.kept = torch.zeros(offset, dtype=torch.bool)
        self.max_steps = max(1, longest[0])
        self.g = torch.Generator().manual_seed(seed)
        self.budget = budget
        self.next_seed = {True: 0, False: 0}   # round-robin start units, forward / backward

    def next_layers(self, name: str) -> dict:
        """{layer: probability} of where a forward walk leaving `name` goes, averaged over the
        units of `name` that lead on (the walk graph at the level of layers)."""
        choice = self.forward[self.names.index(name)]
        alive = int((~choice.empty).sum())
        total = torch.zeros(len(self.names), dtype=torch.float64).index_add_(0, choice.node,
                                                                             choice.prob)
        return {self.names[i]: float(total[i]) / alive for i in total.nonzero().flatten().tolist()}

    # -- one layer crossed by a set of walks ------------------------------------------------
    def _cross(self, layer: _Layer, unit, forward: bool):
        """Move every walk across `layer` from `unit` (an input index going forward, a weight
        row going backward); return the new unit and the flat positions switched on (-1 where
        the chosen kernel is full)."""
        # inverse-CDF sampling (same law as torch.multinomial on the row, without gathering rows)
        cdf, width = (layer.forward_cdf, layer.c_out) if forward else (layer.backward_cdf, layer.c_in)
        u = torch.rand(unit.shape, generator=self.g, dtype=torch.float64)
        other = torch.searchsorted(cdf, unit + u, right=True) - unit * width
        other = other.clamp(0, width - 1)              # clamp: float round-off at a row's end
        i, o = (unit, other) if forward else (other, unit)
        # the input's index inside the output's group (groups=1: the input itself); a pair
        # outside a group (only reachable through a row of zero norms) adds nothing
        local = i - (o // layer.out_per_group) * layer.in_per_group
        inside = (local >= 0) & (local < layer.in_per_group)
        local = local.clamp(0, layer.in_per_group - 1)
        base = layer.offset + (o * layer.in_per_group + local) * layer.area
        taps = base[:, None] + torch.arange(layer.area)
        free = ~self.kept[taps]
        # Gumbel-max over the taps: uniform, or proportional to |w| (magnitude, reference)
        u = torch.rand(free.shape, generator=self.g, dtype=torch.float64).clamp_min(1e-300)
        key = -torch.log(-torch.log(u))
        if layer.log_tap is not None:
            key = layer.log_tap[o, local] + key
        if layer.replace:   # the reference: |w|-weighted among all taps; a kept one adds nothing
            choice = key.argmax(1)
            hit_free = free.gather(1, choice[:, None]).squeeze(1)
            pos = torch.where(hit_free & inside, base + choice, -1)
        else:
            choice = key.masked_fill(~free, -torch.inf).argmax(1)
            pos = torch.where(free.any(1) & inside, base + choice, -1)
        return (o if forward else i), pos

    def _walk(self, start, order, forward: bool, out: list):
        """Walks from the input (forward) or the output (backward) units `start` (their ids in
        `order`); records (order key, flat position) pairs. Nodes are visited in topological
        order (reversed going backward), so one pass moves every walk to its end."""
        moves = self.forward if forward else self.backward
        first = 0 if forward else len(self.names) - 1
        node, unit = moves[first].sample(start, self.g)
        step = torch.zeros_like(unit)
        visit = range(1, len(self.names) - 1)
        for i in (visit if forward else reversed(visit)):
            sel = (node == i).nonzero().squeeze(1)
            if sel.numel() == 0 or i not in self.layers:
                continue
            layer = self.layers[i]
            here = unit[sel] if forward else unit[sel] + layer.rows
            there, pos = self._cross(layer, here, forward)
            out.append((order[sel] * self.max_steps + step[sel], pos))
            step[sel] += 1
            if forward:
                there = there - layer.rows
            if i in moves:
                node[sel], unit[sel] = moves[i].sample(there, self.g)
            else:
                node[sel] = -1

    def _seeds(self, n: int, forward: bool):
        units = (self.graph.units_out[INPUT] if forward else self.graph.units_in[OUTPUT])
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


@register("phew", rules={"tap": rules.one_of(*TAPS), "shortcut": rules.one_of(*SHORTCUTS)})
def phew(model, sparsity, *, seed, data=None, tap: str = "reference",
         shortcut: str = "reference"):
    layers = prunable_layers(model)
    budget = global_budget(model, sparsity)
    walker = _Walker(model, budget, seed, tap, shortcut)
    total = walker.kept.numel()
    walks = 0
    if budget >= total:
        walker.kept[:] = True                   # dense: no walk needed (zero-norm kernels included)
    elif budget > 0:
        walks = walker.run()
    masks = {}
    for name, m in layers.items():
        start = walker.offsets[name]
        kept = walker.kept[start:start + m.weight.numel()]
        masks[name] = kept.view_as(m.weight).to(m.weight.device)
    return Mask(masks, {"walks": walks})
