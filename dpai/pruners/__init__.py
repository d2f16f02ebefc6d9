"""Pruner registry. Every pruner has one signature:

    fn(model, sparsity, *, seed, data, **params) -> Mask

`data` is an iterable of (inputs, targets) batches (a DataLoader, for example) for the
data-driven methods and None for the others. A pruner must not change `model`'s weights or
mode as seen by the caller, must keep exact counts and must draw random numbers from a
`torch.Generator` seeded with `seed` (on the CPU), so the same seed gives the same mask.
"""
import inspect
import time

from torch import nn

from ..budget import check_sparsity
from ..mask import Mask

METHODS: dict = {}
DATA_DRIVEN: set = set()


def register(name: str, needs_data: bool = False):
    def wrap(fn):
        METHODS[name] = fn
        if needs_data:
            DATA_DRIVEN.add(name)
        return fn
    return wrap


def method_params(method: str) -> dict:
    """The method's own parameters and their defaults."""
    sig = inspect.signature(METHODS[method])
    return {n: p.default for n, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and n not in ("seed", "data")}


def check_method(method: str, params: dict | None = None) -> None:
    """Raise a one-line error for an unknown method or parameter, before any work."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {sorted(METHODS)}")
    allowed = method_params(method)
    for key in params or {}:
        if key not in allowed:
            raise ValueError(f"{method}: parameter {key!r} is not one of {sorted(allowed)}")


def prune(model: nn.Module, method: str, sparsity: float, seed: int = 0, data=None,
          **params) -> Mask:
    """Compute a mask for `model` keeping a `1 - sparsity` fraction of its prunable weights."""
    check_method(method, params)
    sparsity = check_sparsity(sparsity)
    if method in DATA_DRIVEN and data is None:
        raise ValueError(f"method={method!r} needs data (an iterable of (inputs, targets) batches)")
    start = time.perf_counter()
    mask = METHODS[method](model, sparsity, seed=seed, data=data, **params)
    seconds = time.perf_counter() - start
    mask.validate(model)
    mask.info = {"method": method, "sparsity": sparsity, "seed": seed,
                 "params": {**method_params(method), **params}, "density": mask.density,
                 "seconds": seconds, **mask.info}
    return mask


# registration happens on import
from . import dpai_method, grasp, magnitude, npb, phew, random_masks, snip, synflow  # noqa: E402,F401
