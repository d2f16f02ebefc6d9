"""FLOPs of a pruned network: multiply-accumulates (MACs) per input image through the prunable
weights (every Conv2d and Linear), dense, through the kept weights and through the effective
weights (those on at least one input-output path, `dpai.topology`).

A weight of a prunable layer is used once per output position of that layer: a convolution
weight H_out x W_out times, a linear weight once per token (the product of the output's
non-batch, non-feature dimensions; 1 for a plain classifier). The positions are measured with
forward hooks on one all-zero input of the model's input shape, so every architecture the
package builds (strides, pooling, shortcuts, patch embeddings, tokens) is covered without a
per-model formula. Biases, normalisation, activations and pooling are not counted: the paper
compares the cost of the pruned weights.

    import dpai
    model = dpai.create_model("resnet20")
    mask = dpai.prune(model, method="snip", sparsity=0.99, seed=0, data=...)
    dpai.flops(model, mask)        # {"dense": ..., "kept": ..., "effective": ..., "layers": ...}
"""
import math

import torch
from torch import nn

from ..models import input_shape, prunable_layers


def output_positions(model: nn.Module) -> dict[str, int]:
    """Prunable layer name -> output positions per image (summed over calls of a shared layer),
    measured on one zero input; the model's parameters, buffers and train/eval modes are left
    as they were (the forward runs in eval mode, so batch-norm statistics do not move)."""
    layers = prunable_layers(model)
    positions = dict.fromkeys(layers, 0)

    def hook(name):
        def record(module, args, output):
            # (1, C, H, W) for a convolution, (1, ..., features) for a linear layer
            dims = output.shape[2:] if isinstance(module, nn.Conv2d) else output.shape[1:-1]
            positions[name] += math.prod(dims)
        return record

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape(model), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    unused = [n for n, p in positions.items() if p == 0]
    if unused:
        raise ValueError(f"prunable layers {unused} produced no output in a forward pass; "
                         f"FLOPs are defined only for layers the model uses")
    return positions


def flops(model: nn.Module, mask, topology: dict | None = None) -> dict:
    """MACs per image through the prunable weights: {"dense", "kept", "effective", "layers":
    {name: {"positions", "dense", "kept", "effective"}}}.

    `mask`: layer name -> bool tensor of the weight's shape (a `dpai.Mask`). `topology`: the
    result of `dpai.topology(model, mask)` (its per-layer "effective_params" count the weights
    on an input-output path); computed here when not given."""
    layers = prunable_layers(model)
    if set(layers) != set(mask):
        missing, extra = sorted(set(layers) - set(mask)), sorted(set(mask) - set(layers))
        raise ValueError(f"mask layers do not match the model: missing {missing}, extra {extra}")
    if topology is None:
        from .counts import topology as compute_topology
        topology = compute_topology(model, mask)
    effective = topology["layers"]
    positions = output_positions(model)
    out = {}
    for name, module in layers.items():
        if tuple(mask[name].shape) != tuple(module.weight.shape):
            raise ValueError(f"mask[{name!r}] has shape {tuple(mask[name].shape)}, the weight "
                             f"has {tuple(module.weight.shape)}")
        if name not in effective or "effective_params" not in effective[name]:
            raise ValueError(f"topology: key 'layers.{name}.effective_params' is missing")
        p = positions[name]
        out[name] = {"positions": p, "dense": module.weight.numel() * p,
                     "kept": int(mask[name].sum()) * p,
                     "effective": int(effective[name]["effective_params"]) * p}
    return {key: sum(layer[key] for layer in out.values())
            for key in ("dense", "kept", "effective")} | {"layers": out}
