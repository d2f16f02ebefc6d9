"""Which units of a prunable layer feed which units of the layers after it, on any model the
path network (dpai.paths.network) can trace: the graph PHEW's random walks cross.

Units are a layer's channels (Conv2d) or features (Linear, attention projections); the
network input's units are its channels, the output's are the classes. The exact path network
is cut at every prunable layer: the layer's output is replaced by a leaf tensor, so the input
of a layer is a linear function of the leaves just before it (and of the network input)
through the operations between them: sums, concatenations, reshapes, channel shuffles,
pooling, token mixing. Output unit u of A feeds input unit v of B iff
d input_B[..., v, ...] / d output_A[..., u, ...] != 0 for some position or token; every row of
that Jacobian comes from one batched backward pass (torch.autograd.grad with
is_grads_batched) that stops at the leaves, so each pass only crosses one segment.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import prunable_layers
from .network import PathNetwork, no_tf32
from .trace import tensors as _tensors

INPUT, OUTPUT = "<input>", "<output>"
CHUNK_ELEMENTS = 1 << 22   # one-hot gradient elements per batched backward pass


@dataclass
class UnitGraph:
    """nodes: INPUT, the prunable layers that carry paths in evaluation (topological) order,
    OUTPUT. units_in / units_out: unit counts (OUTPUT has no units_out, INPUT no units_in).
    rows[layer]: the weight row of output unit 0 (2 * dim for the value rows of a q|k|v
    projection, else 0). edges[(a, b)]: bool [units_out[a], units_in[b]], True where an output
    unit of a reaches an input unit of b through no other prunable layer."""
    nodes: list
    units_in: dict = field(default_factory=dict)
    units_out: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    edges: dict = field(default_factory=dict)


class _CutNetwork(PathNetwork):
    """The exact path network with every prunable layer's output replaced by a leaf."""

    def __init__(self, model):
        super().__init__(model, "exact")
        # float32 is enough to tell a zero from a non-zero derivative here (no products of
        # path counts, only sums of ones), and halves the batched backward passes
        self.dtype, self.input = torch.float32, self.input.float()
        self.prunable = set(self.names)
        self.cuts: dict = {}          # layer -> (its input, the leaf for its output, rows)

    def _masked(self, name, x, fn, rows: int = 0):
        if name not in self.prunable:
            # a weight that is not prunable (the attention input projection with
            # prune="linear") is dense, all ones: every input unit reaches every output unit
            return fn(x)
        if name in self.cuts:
            raise ValueError(f"dpai.unit_graph: prunable layer {name!r} is applied more than "
                             f"once; a walk graph needs each layer once")
        with torch.no_grad():
            shape = fn(x).shape
        leaf = torch.ones(shape, dtype=x.dtype, device=x.device, requires_grad=True)
        self.cuts[name] = (x, leaf, rows)
        return leaf

    def run(self):
        x = self.input.clone().requires_grad_(True)
        self.masks, self.log_scales = {}, []       # all-ones weights: only shapes are used
        with no_tf32():
            out = self._run(x)
        tensors = _tensors(out)
        if not tensors:
            raise ValueError("dpai.unit_graph: the model's output does not depend on its input")
        return x, tensors[0]


def _support(y: torch.Tensor, dim: int, leaves: list) -> dict:
    """{leaf name: bool [leaf units, y units]}: where d y / d leaf is non-zero, by unit.
    leaves: (name, tensor, unit dim) of every leaf y may depend on."""
    n = y.shape[dim]
    dim %= y.dim()
    chunk = max(1, min(n, CHUNK_ELEMENTS // max(1, y.numel())))
    found: dict = {}
    shape = [1] * y.dim()
    shape[dim] = n
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(n, start + chunk), device=y.device)
        onehot = (torch.arange(n, device=y.device) == idx[:, None]).to(y.dtype)
        grad_out = onehot.view(len(idx), *shape).expand(len(idx), *y.shape)
        grads = torch.autograd.grad(y, [t for _, t, _ in leaves], grad_out, retain_graph=True,
                                    allow_unused=True, is_grads_batched=True)
        for (name, t, d), g in zip(leaves, grads):
            if g is None:
                continue
            unit = d % t.dim() + 1
            rest = [i for i in range(1, g.dim()) if i != unit]
            # non-zero somewhere: max > 0 or min < 0, two float reductions without temporaries
            # (a boolean `g != 0` then `any` over a moved copy took 10x longer)
            hit = ((g.amax(rest) > 0) | (g.amin(rest) < 0)) if rest else g != 0   # [chunk, units]
            if bool(hit.any()):
                if name not in found:
                    found[name] = torch.zeros(t.shape[d], n, dtype=torch.bool)
                found[name][:, start:start + len(idx)] = hit.t().cpu()
    return found


def _unit_dim(module) -> int:
    return 1 if isinstance(module, nn.Conv2d) else -1


def unit_graph(model: nn.Module) -> UnitGraph:
    """The unit graph of `model` (eval-mode trace; see the module docstring)."""
    layers = prunable_layers(model)
    network = _CutNetwork(model)
    x, y = network.run()
    graph = UnitGraph(nodes=[INPUT, *network.cuts, OUTPUT])
    graph.units_out[INPUT] = x.shape[1]
    leaves = [(INPUT, x, 1)]
    for name, (inp, leaf, rows) in network.cuts.items():
        module = layers.get(name)
        d = _unit_dim(module)
        graph.units_in[name], graph.units_out[name], graph.rows[name] = (
            inp.shape[d], leaf.shape[d], rows)
        for src, block in _support(inp, d, leaves).items():
            graph.edges[(src, name)] = block
        leaves.append((name, leaf, d))
    graph.units_in[OUTPUT] = y.shape[-1]
    for src, block in _support(y, -1, leaves).items():
        graph.edges[(src, OUTPUT)] = block
    return graph
