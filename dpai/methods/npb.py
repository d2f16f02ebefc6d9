"""NPB, Node-Path Balancing (Pham et al. 2023): one small integer program per layer.

    mask = dpai.prune(model, "npb", sparsity=0.99, seed=0)

Layers are solved one by one in module order (for the models here a topological order: a
ResNet shortcut conv comes after its block's convs, and its input, the block input, is
already fixed), each at its ERK budget k_l (`erk_budget`), exactly. For layer l:

1. Paths arriving at its input units: P_i = number of input-output paths of the masked
   prefix ending at input channel i, summed over positions: the exact path network of
   `dpai.paths` (float64, all-ones input, masks as weights, 0 for layers not solved yet),
   stopped at layer l. (The reference uses the same idea: all-ones weights, BatchNorm
   ignored, average pooling rescaled to a sum; it keeps max pooling and biases, the exact
   network here sums pooling windows and drops biases.)
2. The program, for a chunk of output units O (all inputs I), with T = min(max_taps,
   kernel area) and n_c the chunk's budget (the reference's program, in MILP form):

       maximise   alpha     * (sum_i u_i + sum_o v_o) / (|I| + |O|)        effective nodes
                + (1-alpha) * sum_{o,i} P_i x_oi / max_path                  effective paths
                + beta      * sum_{o,i} k_oi / n_c                           distinct kernels
       s.t.       sum x = n_c,   x_oi integer in [0, T]
                  k_oi <= x_oi,  u_i <= sum_o x_oi,  v_o <= sum_i x_oi,  k, u, v in [0, 1]

   x_oi = taps kept in kernel (o, i). max_path normalises the path term (`path_norm`):
   "max" is the largest sum_i P_i x_oi any feasible x reaches (fill the inputs with the
   largest P first), so the term lies in [0, 1]. "reference" (default) is the authors'
   formula (github.com/pvh1602/NPB, 090830c, Pruners/utils.py `optimize_layerwise`) as it
   runs: it takes the m = n_c // (|O| T) largest P with a negative slice, and for m = 0 (the
   chunk budget fits in one input's taps: every 3x3 conv of ResNet-20 at 99 %) that slice is
   the whole array, so |O| T sum_i P_i is added to the maximum and the path term nearly
   vanishes (divided by a sum 11-73x too large on ResNet-20). Measured on ResNet-20 at 99 %
   against the authors' code: "reference" 677 effective nodes / 2327 kernels / 37.1
   log-paths (theirs 684 / 2408 / 39.2), "max" 300 / 1295 / 50.2. Where m >= 1 (90 %) the
   two are the same.
   As x is integer, the optimum has k = min(1, x), u, v = min(1, sum): the 0/1 indicators of
   an active kernel and of an input/output node with at least one kept weight (the
   reference writes them as pos(1 - .) terms; declaring them continuous spares the solver
   branching on them). The reference's kernel term is (n_c - #empty kernels)/n_c: the same
   up to a constant. Its budget constraint is sum x <= n_c; here it is an equality (exact
   counts). With `effective_only=True` (not the reference) nodes and kernels only count
   when their input unit carries paths (P_i > 0).
3. Solved with scipy.optimize.milp (HiGHS), `time_limit` seconds per program; the best
   solution found is used when the limit is hit (counted in mask.info["time_limited"]; a
   time-limited solution can depend on machine speed, an optimal one does not).
   The solver gets an exact aggregated form with 3|I|+1 variables instead of 2|O||I|+|I|+|O|:
   the outputs of a chunk are interchangeable (P depends on the input only), so only
   X_i = taps from input i and K_i = active kernels from input i matter, with
   K_i <= X_i <= T*K_i, u_i <= K_i, V <= min(|O|, sum K) covered outputs: any K can be laid
   out with input i's kernels on K_i distinct outputs and output degrees differing by at most
   one (`layout`), which reaches that V, and the X_i taps are spread over the K_i kernels.
   Same optimum (checked against the full program in the tests), with a few |I| variables
   instead of tens of thousands for a 32x512 chunk, which the full form cannot solve in
   seconds.
4. Chunks: a layer with more than `chunk_size` output units is solved in chunks of
   `chunk_size` outputs, its budget split across chunks in proportion to their size
   (largest remainders, exact total), each chunk one program over all inputs (the reference
   chunks only its large layers, with ceil(density * chunk size) per chunk). Outputs and
   inputs are put in a seeded random order first: the program is symmetric in the outputs,
   so this changes no objective value, it only lets the seed choose among equal optima.
5. The x_oi taps inside each kernel are chosen uniformly at random (the reference default).
6. Fine-tuning (`fine_tune`, the reference's last step): the program only looks forward, so
   some kept weights lead nowhere (their output unit has no path to the network output) or
   come from nowhere. Layer by layer in module order, the ineffective kept weights of a
   layer are moved to free taps that would be effective, preferring kernels with the most
   effective taps, then input units with the most effective weights (the reference's
   order). The reference carries leftovers to the next layer and may overshoot; here each
   layer keeps exactly its ERK count (when too few effective free taps exist, some
   ineffective weights stay). "conv" (reference) treats conv layers, 1x1 shortcuts
   included; "all" also Linear layers; "none" skips the step.

Not reproduced: the reference script lowers max_taps by 2 after each ResNet shortcut (and at
fixed VGG layers); here max_taps is one number. Linear layers and 1x1 convs use the same
program with kernel area 1 (the kernel term is then constant). A dense layer (k_l = numel)
or an empty one (k_l = 0) needs no program.
"""
import math

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from ..core import rules
from ..core.budget import erk_budget
from ..core.mask import Mask
from ..models import prunable_layers
from ..paths.network import PathNetwork
from .registry import register
from ..core.select import topk_mask

FINE_TUNE = ("conv", "all", "none")
TINY = 2.0 ** -900   # input scale that keeps float64 path counts finite on any model here


class _Stop(Exception):
    pass


def input_paths(network: PathNetwork, name: str, masks: dict) -> torch.Tensor | None:
    """Paths arriving at each input unit of layer `name`, float64 on the CPU (relative
    values: the count may be taken on a scaled input to stay finite); None when the path
    network never reaches the layer (dpai.paths: e.g. the convs of an SE gate)."""
    seen = {}

    def hook(x):
        seen["x"] = x.detach()
        raise _Stop

    network.pre_hooks[name] = hook
    try:
        for scale in (1.0, TINY):
            try:
                network(masks, scale=scale)
            except _Stop:
                pass
            if "x" not in seen:
                return None  # no path reaches it (an SE block's conv, an auxiliary head)
            x = seen["x"]
            paths = x.sum(dim=(0, 2, 3)) if x.dim() == 4 else x.reshape(-1, x.shape[-1]).sum(0)
            if torch.isfinite(paths).all():
                return paths.cpu()
    finally:
        network.pre_hooks.pop(name, None)
    raise ValueError(f"npb: path counts at layer {name!r} overflow float64")


# -- the per-chunk program ----------------------------------------------------------------------
def max_path_sum(paths: np.ndarray, budget: int, capacity: int) -> float:
    """Largest sum_i P_i X_i with sum X = budget and 0 <= X_i <= capacity (greedy on P)."""
    top = np.sort(paths)[::-1]
    full, rest = divmod(budget, capacity)
    total = capacity * top[:full].sum()
    return float(total + (rest * top[full] if rest and full < len(top) else 0.0))


def reference_path_sum(paths: np.ndarray, budget: int, capacity: int) -> float:
    """The reference's normaliser of the path term: max_path_sum, except that it takes the
    `full` largest P with the slice [-full:], which for full = 0 (the budget fits in one
    input's capacity: every 3x3 conv of ResNet-20 at 99 %) is the whole array, so all of P
    times the capacity is added to the intended maximum."""
    full = budget // capacity
    extra = capacity * float(np.sum(paths)) if full == 0 else 0.0
    return extra + max_path_sum(paths, budget, capacity)


PATH_NORMS = {"reference": reference_path_sum, "max": max_path_sum}


def solve_chunk(paths: np.ndarray, n_out: int, budget: int, taps: int, alpha: float,
                beta: float, time_limit: float, effective_only: bool,
                path_norm: str = "max") -> tuple[np.ndarray, bool]:
    """Taps per kernel x (n_out, n_in) for one chunk; returns (x, hit the time limit).

    Solved in aggregated form (exact, see the module docstring): per input i, X_i taps in
    K_i kernels, K_i <= X_i <= T*K_i; the outputs are interchangeable, so any K can be laid
    out with K_i distinct outputs per input and balanced output degrees, which covers
    min(n_out, sum K) outputs, the most possible."""
    n_in = len(paths)
    if budget >= n_out * n_in * taps:
        return np.full((n_out, n_in), taps), False
    live = (paths > 0 if effective_only else np.ones(n_in, bool)).astype(float)
    max_path = PATH_NORMS[path_norm](paths, budget, n_out * taps)
    node = alpha / (n_in + n_out)
    # variables: X (n_in), K (n_in), u (n_in), V (1); milp minimises
    c = np.concatenate([-(1 - alpha) * paths / (max_path if max_path > 0 else 1.0),
                        -beta / budget * live, -node * live, [-node]])
    eye, zero, col = sp.identity(n_in), sp.csr_matrix((n_in, n_in)), sp.csr_matrix((n_in, 1))
    row = sp.csr_matrix
    a = sp.vstack([
        row(np.r_[np.ones(n_in), np.zeros(2 * n_in + 1)]),               # sum X = budget
        sp.hstack([-eye, eye, zero, col]),                                # K <= X
        sp.hstack([eye, -taps * eye, zero, col]),                         # X <= T K
        sp.hstack([zero, -eye, eye, col]),                                # u <= K
        row(np.r_[np.zeros(n_in), -live, np.zeros(n_in), 1.0]),          # V <= sum K (live)
    ], format="csr")
    lower = np.concatenate([[budget], np.full(3 * n_in + 1, -np.inf)])
    upper = np.concatenate([[budget], np.zeros(3 * n_in + 1)])
    ub = np.concatenate([np.full(n_in, n_out * taps), np.full(n_in, n_out), np.ones(n_in), [n_out]])
    integrality = np.concatenate([np.ones(2 * n_in), np.zeros(n_in + 1)])
    res = milp(c, constraints=LinearConstraint(a, lower, upper), bounds=Bounds(0, ub),
               integrality=integrality, options={"time_limit": time_limit})
    if res.x is None:
        raise RuntimeError(f"npb: the solver found no solution for a {n_out}x{n_in} chunk "
                           f"(status {res.status}: {res.message}); raise time_limit")
    total = np.rint(res.x[:n_in]).astype(np.int64)
    kernels = np.rint(res.x[n_in:2 * n_in]).astype(np.int64)
    if total.sum() != budget:
        raise RuntimeError(f"npb: the solver kept {total.sum()} taps instead of {budget}")
    return layout(total, kernels, n_out), res.status == 1


def layout(total: np.ndarray, kernels: np.ndarray, n_out: int) -> np.ndarray:
    """x (n_out, n_in) with kernels[i] active kernels holding total[i] taps for input i:
    edge e (inputs one after the other) goes to output e mod n_out, so each input's kernels
    are on distinct outputs and output degrees differ by at most one; taps are spread evenly
    over an input's kernels."""
    n_in = len(total)
    edge_input = np.repeat(np.arange(n_in), kernels)
    edge = np.arange(len(edge_input))
    rank = edge - np.repeat(np.cumsum(kernels) - kernels, kernels)    # j-th kernel of its input
    base, extra = np.divmod(total, np.maximum(kernels, 1))
    x = np.zeros((n_out, n_in), np.int64)
    x[edge % n_out, edge_input] = base[edge_input] + (rank < extra[edge_input])
    return x


def program_value(x: np.ndarray, paths: np.ndarray, taps: int, alpha: float,
                  beta: float, path_norm: str = "max") -> float:
    """The reference program's objective (effective_only=False) at taps per kernel x
    (n_out, n_in), whose sum is the chunk budget."""
    n_out, n_in = x.shape
    budget = int(x.sum())
    max_path = PATH_NORMS[path_norm](paths, budget, n_out * taps)
    nodes = int((x.sum(0) > 0).sum() + (x.sum(1) > 0).sum())
    return (alpha * nodes / (n_in + n_out) + (1 - alpha) * float(paths @ x.sum(0)) / max_path
            + beta * int((x > 0).sum()) / budget)


def split_budget(budget: int, sizes: list[int]) -> list[int]:
    """Integers proportional to `sizes` summing exactly to `budget` (largest remainders)."""
    exact = [budget * s / sum(sizes) for s in sizes]
    out = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda j: out[j] - exact[j])
    for j in by_remainder[:budget - sum(out)]:
        out[j] += 1
    return out


def taps_per_kernel(paths, c_out, budget, taps, chunk_size, alpha, beta, time_limit,
                    effective_only, path_norm, g) -> tuple[torch.Tensor, int, int]:
    """x (c_out, c_in) for one layer from its chunked programs; (x, programs, time-limited)."""
    c_in = len(paths)
    out_order, in_order = torch.randperm(c_out, generator=g), torch.randperm(c_in, generator=g)
    paths = paths[in_order.numpy()]
    chunks = out_order.split(chunk_size)
    counts = torch.zeros(c_out, c_in, dtype=torch.long)
    limited = 0
    for chunk, n in zip(chunks, split_budget(budget, [len(c) for c in chunks])):
        # never fewer taps per kernel than the chunk's budget needs (as the reference)
        chunk_taps = max(taps, -(-n // (len(chunk) * c_in)))
        x, hit = (solve_chunk(paths, len(chunk), n, chunk_taps, alpha, beta, time_limit,
                              effective_only, path_norm) if n
                  else (np.zeros((len(chunk), c_in)), False))
        counts[chunk[:, None], in_order[None, :]] = torch.as_tensor(x, dtype=torch.long)
        limited += hit
    return counts, len(chunks), limited


def place_taps(counts: torch.Tensor, area: int, g: torch.Generator) -> torch.Tensor:
    """Bool (c_out, c_in, area): counts[o, i] taps of kernel (o, i), uniformly at random."""
    order = torch.rand(*counts.shape, area, generator=g).argsort(-1)
    keep = torch.arange(area) < counts[..., None]
    return torch.zeros(*counts.shape, area, dtype=torch.bool).scatter_(-1, order, keep)


# -- fine-tuning --------------------------------------------------------------------------------
def paths_through(network: PathNetwork, masks: dict, name: str) -> torch.Tensor:
    """d(paths)/d(weight) of layer `name`: > 0 exactly where a weight is (would be) effective."""
    masks = dict(masks)
    masks[name] = masks[name].clone().requires_grad_(True)
    for scale in (1.0, TINY):
        total = network(masks, scale=scale)
        if torch.isfinite(total):
            grad = torch.autograd.grad(total, masks[name], allow_unused=True)[0] \
                if total > 0 and total.requires_grad else None  # unreached: no path through it
            return torch.zeros_like(masks[name]) if grad is None else grad
    raise ValueError(f"npb: path counts overflow float64 (fine-tuning {name!r})")


def fine_tune_layer(mask: torch.Tensor, through: torch.Tensor, g: torch.Generator) -> int:
    """Move the ineffective kept weights of one layer (bool `mask`, changed in place) to free
    effective taps; returns how many moved."""
    useful = through.cpu() > 0
    kept = mask.cpu()
    effective = kept & useful
    stuck = kept & ~useful
    free = ~kept & useful
    n_move = min(int(stuck.sum()), int(free.sum()))
    if n_move == 0:
        return 0
    c_out, c_in = kept.shape[:2]
    flat_eff = effective.reshape(c_out, c_in, -1)
    per_kernel = flat_eff.sum(-1, keepdim=True).double()          # (out, in, 1)
    per_input = flat_eff.sum((0, 2))[None, :, None].double()      # (1, in, 1)
    kernel_rank = torch.randperm(c_out * c_in, generator=g).view(c_out, c_in, 1).double()
    # lexicographic: kernel's effective taps, input's effective weights, a random kernel
    # order (fills a kernel before the next), a random tap order
    key = ((per_kernel * (per_input.max() + 1) + per_input) * (c_out * c_in) + kernel_rank
           + torch.rand(flat_eff.shape, generator=g, dtype=torch.float64))
    key = key.view_as(kept).masked_fill(~free, -math.inf)
    added = topk_mask(key, n_move, g)
    dropped = topk_mask(torch.rand(kept.shape, generator=g).masked_fill(~stuck, -1), n_move, g)
    mask.copy_(((kept & ~dropped) | added).to(mask.device))
    return n_move


# -- the pruner ---------------------------------------------------------------------------------
@register("npb", rules={
    "alpha": rules.real(0, 1), "beta": rules.real(0), "chunk_size": rules.integer(1),
    "max_taps": rules.optional(rules.integer(1)), "time_limit": rules.real(0, lo_open=True),
    "effective_only": rules.boolean(), "fine_tune": rules.one_of(*FINE_TUNE),
    "path_norm": rules.one_of(*PATH_NORMS)})
def npb(model, sparsity, *, seed, data=None, alpha: float = 0.01, beta: float = 1.0,
        chunk_size: int = 32, max_taps: int | None = None, time_limit: float = 10.0,
        effective_only: bool = False, fine_tune: str = "conv", path_norm: str = "reference"):
    budget = erk_budget(model, sparsity)
    layers = prunable_layers(model)
    g = torch.Generator().manual_seed(seed)
    network = PathNetwork(model, "exact")
    device = network.input.device
    # float64 0/1 masks as the path network's weights; layers not solved yet are 0
    masks = {n: torch.zeros(m.weight.shape, dtype=torch.float64, device=device)
             for n, m in layers.items()}
    programs = limited = 0
    for name, module in layers.items():
        groups = module.groups if isinstance(module, torch.nn.Conv2d) else 1
        c_out, c_in = module.weight.shape[:2]
        area = module.weight[0, 0].numel()
        k = budget[name]
        if k in (0, module.weight.numel()):
            counts = torch.full((c_out, c_in), area if k else 0, dtype=torch.long)
        else:
            paths = input_paths(network, name, masks)
            if paths is None:   # its inputs carry no path: every input unit counts 0
                paths = torch.zeros(c_in * groups, dtype=torch.float64)
            if paths.numel() != c_in * groups:
                raise ValueError(f"npb: layer {name!r} receives {paths.numel()} units, "
                                 f"expected {c_in * groups}")
            paths = (paths / paths.max().clamp_min(1e-300)).numpy()
            taps = min(max_taps or area, area)
            if groups == 1:
                counts, n, hit = taps_per_kernel(paths, c_out, k, taps, chunk_size, alpha, beta,
                                                 time_limit, effective_only, path_norm, g)
            else:
                # a grouped conv is `groups` independent layers (outputs of group j read
                # inputs of group j), its budget split across them in proportion to size
                per = c_out // groups
                parts, n, hit = [], 0, 0
                for j, kj in enumerate(split_budget(k, [per] * groups)):
                    if c_in * per == 1:        # depthwise: one kernel, its taps are the budget
                        parts.append(torch.full((1, 1), kj, dtype=torch.long))
                        continue
                    part, nj, hj = taps_per_kernel(paths[j * c_in:(j + 1) * c_in], per, kj,
                                                   taps, chunk_size, alpha, beta, time_limit,
                                                   effective_only, path_norm, g)
                    parts.append(part)
                    n, hit = n + nj, hit + hj
                counts = torch.cat(parts)
            programs, limited = programs + n, limited + hit
        masks[name] = place_taps(counts, area, g).view(module.weight.shape).to(device,
                                                                                 torch.float64)
    moved = {}
    for name, module in layers.items():
        if fine_tune == "none" or (fine_tune == "conv" and not isinstance(module, torch.nn.Conv2d)):
            continue
        kept = masks[name].bool()
        moved[name] = fine_tune_layer(kept, paths_through(network, masks, name), g)
        masks[name] = kept.to(torch.float64)
    out = {n: masks[n].to(m.weight.device, torch.bool) for n, m in layers.items()}
    return Mask(out, {"programs": programs, "time_limited": limited,
                      "fine_tuned": sum(moved.values())})
