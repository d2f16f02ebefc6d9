"""Pruning-at-initialisation methods by name: `prune(model, method, sparsity, seed, data,
**options)`. Each method is one module that registers itself (registry.register) when
imported here; adding a method is adding its file and one name to the import below."""
from .registry import (DATA_DRIVEN, METHODS, method_params, options, options_class, prune,
                       register)

# registration happens on import
from . import (dpai_method, grasp, magnitude, npb, ntk_sap, phew, px,  # noqa: E402,F401
               random_masks, snip, synflow)

__all__ = ["METHODS", "DATA_DRIVEN", "prune", "register", "method_params", "options",
           "options_class"]
