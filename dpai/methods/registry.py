"""The method registry. Every method has one signature:

    fn(model, sparsity, *, seed, data, **options) -> Mask

`data` is an iterable of (inputs, targets) batches (a DataLoader, for example) for the
data-driven methods and None for the others. A method must not change `model`'s weights or
mode as seen by the caller, must keep exact counts and must draw random numbers from a
`torch.Generator` seeded with `seed` (on the CPU), so the same seed gives the same mask.

Its options are its keyword-only parameters with their defaults; `options_class(name)` makes
them a `Section` dataclass (KEY `mask.<name>`, as in params.yaml) whose rules come from
`register(..., rules=...)` or, for an option without one, from its default's type.
"""
import dataclasses
import functools
import inspect
import time

from torch import nn

from ..core import rules
from ..core.budget import check_sparsity
from ..core.mask import Mask

METHODS: dict = {}
DATA_DRIVEN: set = set()
RULES: dict = {}  # method -> {option: rules.Rule}
# keyword arguments that control how a method runs, not which mask it makes
RUNTIME_ARGS = ("seed", "data", "progress", "checkpoint")


def register(name: str, needs_data: bool = False, rules: dict | None = None):
    """Register a method. `rules`: option -> rules.Rule; an option without one must have the
    type of its default."""
    def wrap(fn):
        METHODS[name] = fn
        RULES[name] = dict(rules or {})
        if needs_data:
            DATA_DRIVEN.add(name)
        options_class.cache_clear()
        return fn
    return wrap


def method_params(method: str) -> dict:
    """The method's options and their defaults, in signature order."""
    sig = inspect.signature(METHODS[method])
    return {n: p.default for n, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and n not in RUNTIME_ARGS}


@functools.cache
def options_class(method: str, key: str | None = None) -> type:
    """The method's options as a Section dataclass: one field per option, its default and rule.
    `key` names them in errors: `mask.<method>` (params.yaml, the default) or `<method>`."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {sorted(METHODS)}")
    made = []
    for name, default in method_params(method).items():
        rule = RULES[method].get(name) or rules.like(default)
        made.append((name, object, rules.param(default, rule)))
    return dataclasses.make_dataclass(f"{method}_options", made, bases=(rules.Section,),
                                      namespace={"KEY": key or f"mask.{method}"})


def options(method: str, params: dict | None = None):
    """The method's options from `params` (missing ones keep their defaults), validated: a
    one-line ValueError (`<method>.<option>=...`) for an unknown method, option or value,
    before any work."""
    return options_class(method, method).from_dict(params or {}, complete=False)


def prune(model: nn.Module, method: str, sparsity: float, seed: int = 0, data=None,
          **params) -> Mask:
    """Compute a mask for `model` keeping a `1 - sparsity` fraction of its prunable weights.

    `progress=True` and `checkpoint=dpai.Checkpoint(...)` are passed to the methods that take
    them (DPaI); they change how the search runs, never the mask."""
    runtime = {k: params.pop(k) for k in ("progress", "checkpoint") if k in params}
    chosen = options(method, params).to_dict()
    sparsity = check_sparsity(sparsity)
    if method in DATA_DRIVEN and data is None:
        raise ValueError(f"method={method!r} needs data (an iterable of (inputs, targets) batches)")
    accepted = inspect.signature(METHODS[method]).parameters
    runtime = {k: v for k, v in runtime.items() if k in accepted}
    start = time.perf_counter()
    mask = METHODS[method](model, sparsity, seed=seed, data=data, **chosen, **runtime)
    seconds = time.perf_counter() - start
    mask.validate(model)
    mask.info = {"method": method, "sparsity": sparsity, "seed": seed, "params": chosen,
                 "density": mask.density, "seconds": seconds, **mask.info}
    return mask


__all__ = ["METHODS", "DATA_DRIVEN", "register", "method_params", "options_class", "options",
           "prune"]
