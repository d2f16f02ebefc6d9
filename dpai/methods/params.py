"""The `mask:` section of params.yaml: where masks are computed, the scoring sample of the
data-driven methods, the mask transform, and a block of options per registered method."""
from dataclasses import dataclass

from ..core.device import DEVICE_RULE
from ..core.rules import Section, integer, one_of, optional, param
from .registry import METHODS, options_class

TRANSFORMS = ("none", "shuffle")  # shuffle: layer-wise shuffle of the mask (a sanity check)
# options of several methods that params.yaml sets once, for every method that takes them
SHARED_OPTIONS = ("scoring_batch_size",)


@dataclass
class MaskParams(Section):
    KEY = "mask"
    device: str = param("auto", DEVICE_RULE, "auto (CUDA when available) | cpu | cuda | cuda:N")
    scoring_per_class: int = param(10, integer(1),
                                   "data-driven methods score on this many images per class")
    scoring_batch_size: int | None = param(None, optional(integer(1)),
                                           "images per scoring pass (null: all at once)")
    transform: str = param("none", one_of(*TRANSFORMS),
                           "none | shuffle (layer-wise shuffle, seeded by the mask seed)")
    methods: dict = param({}, None, "method -> its options (a Section each)")

    @classmethod
    def from_dict(cls, block, *, complete: bool = True) -> "MaskParams":
        """The mask block of params.yaml: the keys above and one block per method, each with
        every option of its method (null or {} for a method without options)."""
        if not isinstance(block, dict):
            raise ValueError(f"mask={block!r} is invalid: allowed is a mapping")
        own = [n for n in cls.names() if n != "methods"]
        for key in block:
            if key not in own and key not in METHODS:
                raise ValueError(f"mask.{key} is not a parameter; allowed: "
                                 f"{sorted(own)} and a block per method {sorted(METHODS)}")
        methods = {}
        for method in METHODS:
            if method not in block:
                continue
            options = block[method] if block[method] is not None else {}
            shared = [k for k in SHARED_OPTIONS if isinstance(options, dict) and k in options]
            if shared:
                raise ValueError(f"mask.{method}.{shared[0]} is not a parameter here; allowed: "
                                 f"mask.{shared[0]} (one value for every method that takes it)")
            if complete and isinstance(options, dict):
                missing = [k for k in _own_options(method) if k not in options]
                if missing:
                    raise ValueError(f"mask.{method}.{missing[0]} is missing from params.yaml")
            methods[method] = options_class(method).from_dict(options, complete=False)
        return Section.from_dict.__func__(cls, {**{k: block[k] for k in own if k in block},
                                                "methods": methods}, complete=complete)

    def options(self, method: str) -> dict:
        """The options `dpai.prune` gets for `method`: its block, plus the shared ones it takes."""
        if method not in self.methods:
            raise ValueError(f"mask.{method} is missing: every method in methods needs its "
                             f"block of options in mask (conf/config.yaml)")
        chosen = self.methods[method].to_dict()
        for key in SHARED_OPTIONS:
            if key in _all_options(method):
                chosen[key] = getattr(self, key)
        return chosen


def _all_options(method: str) -> list[str]:
    return options_class(method).names()


def _own_options(method: str) -> list[str]:
    """The options params.yaml sets in the method's block (the shared ones are set once)."""
    return [n for n in _all_options(method) if n not in SHARED_OPTIONS]


__all__ = ["MaskParams", "TRANSFORMS", "SHARED_OPTIONS"]
