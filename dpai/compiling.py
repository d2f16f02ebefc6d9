"""Compilation behind flags: `train.compile` (dpai.train) and `compile=True` of the DPaI search.

torch.compile with inductor; on CUDA the DPaI step uses mode "reduce-overhead" (CUDA graphs:
a 3000-step search on ResNet-20 is bound by kernel launches, not by arithmetic). Graph breaks
(autograd.grad inside the step, for one) fall back to eager for that part, so the result is the
same computation; outputs of a CUDA-graph replay are cloned before the next replay reuses them.
"""
import torch


def compile_module(model):
    """The training step's forward (and, through AOTAutograd, its backward) compiled."""
    return torch.compile(model)


def compile_step(step, device):
    """A zero-argument step function compiled; returns a function giving fresh tensors."""
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    compiled = torch.compile(step, mode=mode)

    def run():
        return compiled().clone()

    return run


__all__ = ["compile_module", "compile_step"]
