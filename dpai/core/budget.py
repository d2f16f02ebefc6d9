"""Layer budgets: how many weights each prunable layer keeps at a given sparsity.

- `global_budget`: one count for the whole network, round(density * N) (global methods).
- `uniform_budget`: every layer at the same density.
- `erk_budget`: Erdos-Renyi-Kernel densities with dense capping (docs/faithfulness.md).
Per-layer counts follow the reference: k_l = N_l - floor(s_l * N_l).
"""
import math

from torch import nn

from ..models import num_prunable, prunable_layers

BUDGETS = ("erk", "uniform")


def check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} must be a number in [0, 1)")
    return float(sparsity)


def global_budget(model: nn.Module, sparsity: float) -> int:
    return round((1 - check_sparsity(sparsity)) * num_prunable(model))


def _kept(numel: int, layer_sparsity: float) -> int:
    return numel - math.floor(layer_sparsity * numel)


def uniform_budget(model: nn.Module, sparsity: float) -> dict[str, int]:
    s = check_sparsity(sparsity)
    return {name: _kept(m.weight.numel(), s) for name, m in prunable_layers(model).items()}


def erk_density(model: nn.Module, sparsity: float) -> dict[str, float]:
    """ERK layer densities: eps * sum(shape)/prod(shape), layers whose density would exceed 1
    forced dense (largest raw ratio first) and eps solved again on the rest."""
    density = 1 - check_sparsity(sparsity)
    shapes = {name: tuple(m.weight.shape) for name, m in prunable_layers(model).items()}
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numel[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        budget = density * sum(numel.values()) - sum(numel[n] for n in dense)
        eps = budget / sum(raw[n] * numel[n] for n in free)
        top = max(raw[n] for n in free)
        if eps * top <= 1:
            break
        dense.update(n for n in free if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def erk_budget(model: nn.Module, sparsity: float) -> dict[str, int]:
    numel = {name: m.weight.numel() for name, m in prunable_layers(model).items()}
    return {n: _kept(numel[n], 1 - d) for n, d in erk_density(model, sparsity).items()}


def layer_budget(model: nn.Module, sparsity: float, budget: str = "erk") -> dict[str, int]:
    if budget not in BUDGETS:
        raise ValueError(f"budget={budget!r} is not one of {list(BUDGETS)}")
    return erk_budget(model, sparsity) if budget == "erk" else uniform_budget(model, sparsity)
