"""Compilation behind flags: `train.compile` (dpai.train) and `compile=True` of the DPaI search.

torch.compile with inductor; on CUDA the DPaI step's path network uses mode "reduce-overhead"
(CUDA graphs: a 3000-step search on ResNet-20 is bound by kernel launches, not by arithmetic).
"""
import torch


def compile_module(model):
    """The training step's forward (and, through AOTAutograd, its backward) compiled."""
    return torch.compile(model)


def compile_network(network, device):
    """The DPaI step's path-count network (its forward, and its backward through AOTAutograd)
    compiled; CUDA graphs on CUDA. The whole step is not compiled: dynamo rejects its in-place
    mask update on a tensor that autograd also reads (index_fill_ then requires_grad_)."""
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    fn = network if isinstance(network, torch.nn.Module) else network.__call__
    return torch.compile(fn, mode=mode)


__all__ = ["compile_module", "compile_network"]
