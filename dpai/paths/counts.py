"""Exact path counts and the topology of a mask: effective weights, nodes and kernels, collapsed
layers, the reference log-paths quantity (what DPaI optimises) and the exact log number of
input-output paths (float64, no normalisation)."""
import math

import torch
from torch import nn

from ..core.mask import Mask
from .network import PathNetwork, no_tf32

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
    # The backward pass counts the paths from each unit to the output, also from units no
    # input path reaches; in deep concatenating nets (densenet169) those counts overflow
    # float64, and 0 x inf = NaN then spreads to every weight. Seeding the backward with
    # 2^-(1000 - input scale) keeps them finite while a weight on a path (>= 1 path, times
    # both scales >= 2^-1000) keeps a positive gradient.
    grads, undefined = _path_gradients(
        network, masks, total, torch.full_like(total, 2.0 ** -(1000 + log2_scale)))
    if undefined:
        # Still beyond float64 (dense densenet169 at 32x32: 2^1149 paths): a weighted count whose
        # every weight is positive has the same support, so count again with each masked
        # layer's input divided by its (constant) maximum, which bounds every value.
        network.normalise_exact = True
        try:
            weighted = network(masks)
        finally:
            network.normalise_exact = False
        grads, undefined = _path_gradients(network, masks, weighted, torch.ones_like(weighted))
    if undefined:
        raise ValueError(f"effective weights undefined: path counts exceed float64 even with "
                         f"scaled passes (NaN gradients in {undefined[:3]}"
                         f"{' ...' if len(undefined) > 3 else ''})")
    effective = {n: (g > 0) & mask[n].to(g.device) for n, g in zip(network.names, grads)}
    return float(torch.log(total.detach())) - log2_scale * math.log(2), effective


def _path_gradients(network, masks, total, seed):
    """d total / d mask for every layer (zeros where no path reaches it) and the layers whose
    gradient holds a NaN."""
    with no_tf32():
        # allow_unused: a layer no path reaches (an SE block's convs, an auxiliary classifier,
        # a position-bias MLP) is not in the graph; it has no effective weight
        grads = torch.autograd.grad(total, [masks[n] for n in network.names],
                                    grad_outputs=seed, allow_unused=True)
    grads = [torch.zeros_like(masks[n]) if g is None else g for n, g in zip(network.names, grads)]
    nan = torch.stack([torch.isnan(g).any() for g in grads]).tolist()  # one sync
    return grads, [n for n, bad in zip(network.names, nan) if bad]


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
