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

from .. import checks
from ..budget import check_sparsity
from ..mask import Mask

METHODS: dict = {}
DATA_DRIVEN: set = set()
RULES: dict = {}  # method -> {parameter: checks.Rule}
# keyword arguments that control how a pruner runs, not which mask it makes
RUNTIME_ARGS = ("seed", "data", "progress", "checkpoint")


def register(name: str, needs_data: bool = False, rules: dict | None = None):
    """Register a pruner. `rules`: parameter -> checks.Rule; a parameter without one must
    have the type of its default (checked before any work, see check_method)."""
    def wrap(fn):
        METHODS[name] = fn
        RULES[name] = dict(rules or {})
        if needs_data:
            DATA_DRIVEN.add(name)
        return fn
    return wrap


def method_params(method: str) -> dict:
    """The method's own parameters and their defaults."""
    sig = inspect.signature(METHODS[method])
    return {n: p.default for n, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and n not in RUNTIME_ARGS}


def check_method(method: str, params: dict | None = None, prefix: str | None = None) -> None:
    """Raise a one-line error for an unknown method, parameter or value, before any work.
    `prefix` names the parameters in errors (default: the method, e.g. `dpai.alpha`)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {sorted(METHODS)}")
    prefix = method if prefix is None else prefix
    allowed = method_params(method)
    for key, value in (params or {}).items():
        if key not in allowed:
            raise ValueError(f"{prefix}.{key} is not a parameter of {method}; allowed: "
                             f"{sorted(allowed)}")
        rule = RULES[method].get(key) or checks.like(allowed[key])
        if rule is not None:
            rule.check(f"{prefix}.{key}", value)


def prune(model: nn.Module, method: str, sparsity: float, seed: int = 0, data=None,
          **params) -> Mask:
    """Compute a mask for `model` keeping a `1 - sparsity` fraction of its prunable weights.

    `progress=True` and `checkpoint=dpai.Checkpoint(...)` are passed to the methods that take
    them (DPaI); they change how the search runs, never the mask."""
    runtime = {k: params.pop(k) for k in ("progress", "checkpoint") if k in params}
    check_method(method, params)
    sparsity = check_sparsity(sparsity)
    if method in DATA_DRIVEN and data is None:
        raise ValueError(f"method={method!r} needs data (an iterable of (inputs, targets) batches)")
    accepted = inspect.signature(METHODS[method]).parameters
    runtime = {k: v for k, v in runtime.items() if k in accepted}
    start = time.perf_counter()
    mask = METHODS[method](model, sparsity, seed=seed, data=data, **params, **runtime)
    seconds = time.perf_counter() - start
    mask.validate(model)
    mask.info = {"method": method, "sparsity": sparsity, "seed": seed,
                 "params": {**method_params(method), **params}, "density": mask.density,
                 "seconds": seconds, **mask.info}
    return mask


# registration happens on import
from . import dpai_method, grasp, magnitude, npb, phew, random_masks, snip, synflow  # noqa: E402,F401
