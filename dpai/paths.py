"""Path-counting networks and the topology of a mask.

The path network is the model run once on an all-ones input of the model's input shape with
every prunable weight replaced by its binary mask (bias dropped) and every normalisation,
activation and dropout layer replaced by the identity; pooling, flattening and residual sums
stay. Two modes:

- "reference": what the DPaI authors' code computes and optimises. Each prunable layer divides
  its input by the input's maximum (inside the autograd graph; an all-zero input keeps scale 1
  instead of dividing by 0, see PathLayer) and log(max) is accumulated;
  log P = log(sum of the output) + sum of log(max). Average pooling still averages. Because
  each branch is normalised separately, residual sums are unequal: this is NOT the exact
  number of paths (dpai-method.md section 3).
- "exact": float64, no normalisation, average pooling replaced by sum pooling and max pooling
  by sum pooling (every input of a window is an edge), so sum(output) is the exact number of
  input-output paths. A weight is effective iff d sum(output) / d mask > 0 (the number of paths
  through it); this criterion has no rounding noise.

Vision Transformer: positional embeddings and the class token are zeroed and attention mixes
tokens uniformly (on an all-ones input every patch token is the same, so softmax attention is
uniform anyway); query and key weights therefore carry no path.
"""
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .mask import Mask
from .models import input_shape, prunable_layers

IDENTITY = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.ReLU, nn.ReLU6,
            nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.LeakyReLU, nn.Hardswish)
MODES = ("reference", "exact")


class PathLayer(nn.Module):
    """A conv/linear layer whose weight is supplied per call (the mask), bias dropped."""

    def __init__(self, layer: nn.Module, name: str, net: "PathNetwork"):
        super().__init__()
        self.name, self.net = name, [net]  # list: keep the owner out of the module tree
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            self.kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                           groups=layer.groups)

    def forward(self, x):
        net = self.net[0]
        if net.mode == "reference":
            top = x.amax()
            # An all-zero input (a layer cut off by extreme sparsity; its residual sum may still
            # carry paths) would make the reference divide by 0: log P = -inf and NaN gradients.
            # Its scale is then taken as 1, which changes nothing where the reference is finite.
            top = torch.where(top > 0, top, torch.ones_like(top))
            net.log_scales.append(torch.log(top))
            x = x / top
        weight = net.masks[self.name]
        return F.conv2d(x, weight, None, **self.kw) if self.conv else F.linear(x, weight)


class SumPool(nn.Module):
    """Average pooling times the window size: every input of a window is an edge."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        if isinstance(self.pool, nn.AdaptiveAvgPool2d):
            out = self.pool(x)
            return out * (x.shape[-2] * x.shape[-1] / (out.shape[-2] * out.shape[-1]))
        k = self.pool.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        stride = self.pool.stride or k
        return F.avg_pool2d(x, k, stride, self.pool.padding) * (kh * kw)


class PathNetwork:
    """Callable: masks {layer: float tensor} -> log P (reference) or sum of output (exact)."""

    def __init__(self, model: nn.Module, mode: str = "reference"):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {list(MODES)}")
        self.mode = mode
        self.names = list(prunable_layers(model))
        # copy the structure without copying the (possibly large) weights
        memo = {id(p): None for p in model.parameters()}
        memo.update({id(b): None for b in model.buffers()})
        net = copy.deepcopy(model, memo)
        for name, module in list(net.named_modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                _replace(net, name, PathLayer(module, name, self))
            elif isinstance(module, IDENTITY):
                _replace(net, name, nn.Identity())
            elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) and mode == "exact":
                _replace(net, name, SumPool(module))
            elif isinstance(module, nn.MaxPool2d) and mode == "exact":
                _replace(net, name, SumPool(nn.AvgPool2d(module.kernel_size, module.stride,
                                                         module.padding)))
            elif hasattr(module, "uniform"):  # ViT attention
                module.uniform = "sum" if mode == "exact" else "mean"
        self.dtype = torch.float64 if mode == "exact" else torch.float32
        device = next(model.parameters()).device
        for pname in ("pos_embed", "cls_token"):
            if isinstance(getattr(model, pname, None), torch.Tensor):
                net._parameters.pop(pname, None)
                setattr(net, pname, torch.zeros_like(getattr(model, pname), dtype=self.dtype))
        self.net = net.eval()
        self.input = torch.ones(1, *input_shape(model), device=device, dtype=self.dtype)
        self.masks: dict = {}
        self.log_scales: list = []

    def __call__(self, masks: dict[str, torch.Tensor], scale: float = 1.0, parts: bool = False):
        """Exact mode: the number of paths. Reference mode: log P, or with parts=True the pair
        (sum of the normalised output, sum of the log scales), log P = log(first) + second."""
        self.masks, self.log_scales = masks, []
        try:
            out = self.net(self.input * scale if scale != 1.0 else self.input).sum()
            if self.mode == "exact":
                return out
            log_scale = torch.stack(self.log_scales).sum()
            return (out, log_scale) if parts else torch.log(out) + log_scale
        finally:
            self.masks, self.log_scales = {}, []


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def effective_counts(mask: torch.Tensor, effective: torch.Tensor) -> dict:
    """Per-layer counts from a bool tensor of effective weights."""
    conv = mask.dim() == 4
    nodes_alive = effective.flatten(1).any(1)
    kernels_alive = effective.flatten(2).any(2) if conv else effective
    return {"kept": int(mask.sum()), "effective_params": int(effective.sum()),
            "nodes": mask.shape[0], "effective_nodes": int(nodes_alive.sum()),
            "kernels": kernels_alive.numel(), "effective_kernels": int(kernels_alive.sum())}


def exact_paths(model: nn.Module, mask: Mask, network: PathNetwork | None = None):
    """(log number of input-output paths, {layer: bool effective weights}), exact in float64."""
    network = network or PathNetwork(model, "exact")
    masks = {n: mask[n].to(network.input.device, torch.float64).requires_grad_(True)
             for n in network.names}
    # the network is linear in its input: if the count overflows float64, count on a tiny
    # input (2^-900) and shift the log back; path counts through any weight stay >= 2^-900
    for log2_scale in (0, -900):
        total = network(masks, scale=2.0 ** log2_scale)
        if torch.isfinite(total):
            break
    else:
        raise ValueError("the path count overflows float64 even on a 2^-900 input")
    if total <= 0:
        effective = {n: torch.zeros_like(m, dtype=torch.bool) for n, m in mask.items()}
        return -math.inf, effective
    grads = torch.autograd.grad(total, [masks[n] for n in network.names])
    effective = {n: (g > 0) & mask[n].to(g.device) for n, g in zip(network.names, grads)}
    return float(torch.log(total.detach())) - log2_scale * math.log(2), effective


@torch.no_grad()
def log_paths_reference(model: nn.Module, mask: Mask) -> float:
    """The reference ("number of effective paths") quantity that DPaI optimises."""
    network = PathNetwork(model, "reference")
    masks = {n: mask[n].to(network.input.device, torch.float32) for n in network.names}
    return float(network(masks))


def topology(model: nn.Module, mask: Mask) -> dict:
    """Effective params, nodes and kernels (total and per layer), collapsed layers (no effective
    node), the reference log-paths quantity and the exact log number of paths."""
    mask.validate(model)
    log_exact, effective = exact_paths(model, mask)
    layers = {n: effective_counts(mask[n], effective[n]) for n in mask}
    totals = {key: sum(layer[key] for layer in layers.values())
              for key in ("effective_params", "effective_nodes", "effective_kernels")}
    return {**totals, "log_paths_reference": log_paths_reference(model, mask),
            "log_paths_exact": log_exact,
            "collapsed_layers": [n for n, layer in layers.items() if layer["effective_nodes"] == 0],
            "layers": layers}
