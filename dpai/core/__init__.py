"""What every part of dpai uses: the Mask type, layer budgets, exact top-k selection with
seeded ties, devices, and the parameter rules (`Section`, the base of every parameter block)."""
from .budget import (BUDGETS, erk_budget, erk_density, global_budget, layer_budget,
                     uniform_budget)
from .device import resolve_device
from .mask import Mask

__all__ = ["Mask", "BUDGETS", "erk_budget", "erk_density", "global_budget", "layer_budget",
           "uniform_budget", "resolve_device"]
