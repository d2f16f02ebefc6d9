"""The parameter schema of the pipeline: params.yaml as typed sections, one dataclass each.

    params = Params.from_dict(yaml.safe_load(open("params.yaml")), mask=MaskParams)
    params.data.dataset, params.compute.threads, params.mask.options("dpai")

Top level: `sparsity`, `sparsities`, `methods`, `seeds`, and the sections `data`, `model`,
`compute` (here), `mask` (`dpai.methods.params.MaskParams`, with a block of options per
method) and `train` (`dpai.training.TrainParams`). Each section lives beside the code that
reads it, and a stage builds only the sections it reads, so that a stage imports (and
depends on) no code of another stage. `dpai.pipeline.validate` checks a whole parameter set,
the rules between sections included; the `check` stage runs it before any other stage.
"""
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.rules import Rule, Section, integer, one_of, optional, param, real, text
from ..data.specs import DATASETS
from ..models import PRUNE, check_model_name
from .names import sparsity_name

SPARSITY = real(0, 1, lo_open=True, hi_open=True)
SECTIONS = ("data", "model", "compute", "mask", "train")
TOP_KEYS = ("sparsity", "sparsities", "methods", "seeds", *SECTIONS)
DOWNLOADABLE = tuple(n for n, s in DATASETS.items() if s.url is not None)
MODEL_NAME = Rule("one of the paper models or 'torchvision:<builder>'",
                  lambda v: _model_name_ok(v))


def _model_name_ok(name) -> bool:
    check_model_name(name)  # raises its own one-line error naming what is allowed
    return True


@dataclass
class DataParams(Section):
    KEY = "data"
    dataset: str = param("digits", one_of(*DATASETS), "digits | cifar10 | cifar100 | "
                         "tiny-imagenet | imagenet")
    root: str = param("data", text(), "where prepared data sets go (data/<dataset>/)")
    url: str | None = param(None, optional(text()), "download URL; null: the official one")
    imagenet_archives: str = param("data/imagenet-archives", text(),
                                   "folder holding your ILSVRC2012 archives (imagenet only)")
    split_seed: int = param(0, integer(0), "seed of the fixed train/test split (digits only)")

    def validate(self):
        if self.url is not None and self.dataset not in DOWNLOADABLE:
            raise ValueError(f"data.url={self.url!r} is invalid for data.dataset="
                             f"{self.dataset!r}, which has no download (allowed: null; data.url "
                             f"applies to {list(DOWNLOADABLE)})")

    @property
    def spec(self):
        return DATASETS[self.dataset]

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.dataset


@dataclass
class ModelParams(Section):
    KEY = "model"
    name: str = param("resnet20", MODEL_NAME, "resnet20 | vgg19_bn | resnet18 | vit_tiny | "
                      "torchvision:<builder>")
    prune: str = param("default", one_of(*PRUNE), "default | linear (the paper's ViT setting)")


@dataclass
class ComputeParams(Section):
    KEY = "compute"
    threads: int = param(2, integer(1), "torch threads of every stage process; results depend "
                         "on it (float reduction order), so it is a tracked parameter")


def _list_of(item: Rule) -> Rule:
    """A non-empty list, each item allowed by `item` (distinctness: Params.check)."""
    return Rule(f"a non-empty list, each item {item.allowed}",
                lambda v: isinstance(v, list) and bool(v) and all(item.test(x) for x in v))


SEED = Rule("a non-negative integer", integer(0).test)


@dataclass
class Params(Section):
    """A whole parameter set; `mask` and `train` are None unless their section classes are
    given to `from_dict` (the stages that read them pass them)."""
    sparsity: float = param(0.99, SPARSITY, "the default sparsity level")
    sparsities: list = param([0.99], _list_of(SPARSITY),
                             "the levels the pipeline runs (set by the sweep group)")
    methods: list = param([], _list_of(text()), "methods to compare")
    seeds: list = param([0], _list_of(SEED), "seeds: one mask and run each")
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    compute: ComputeParams = field(default_factory=ComputeParams)
    mask: object = None
    train: object = None

    @classmethod
    def from_dict(cls, raw, *, mask=None, train=None) -> "Params":
        """`raw`: the parsed params.yaml; `mask`, `train`: the section classes to build those
        sections with (None: not read)."""
        if not isinstance(raw, dict):
            raise ValueError(f"params.yaml holds {type(raw).__name__}, expected a mapping")
        for key in raw:
            if key not in TOP_KEYS:
                raise ValueError(f"{key} is not a parameter; allowed: {sorted(TOP_KEYS)}")
        for key in TOP_KEYS:
            if key not in raw:
                raise ValueError(f"{key} is missing from params.yaml")
        return cls(**{k: raw[k] for k in ("sparsity", "sparsities", "methods", "seeds")},
                   data=DataParams.from_dict(raw["data"]),
                   model=ModelParams.from_dict(raw["model"]),
                   compute=ComputeParams.from_dict(raw["compute"]),
                   mask=mask.from_dict(raw["mask"]) if mask is not None else None,
                   train=train.from_dict(raw["train"]) if train is not None else None)


    def validate(self):
        for key, ident in (("sparsities", sparsity_name), ("methods", str), ("seeds", str)):
            value = getattr(self, key)
            seen = [ident(v) for v in value]
            dupes = sorted({v for v in seen if seen.count(v) > 1})
            if dupes:
                raise ValueError(f"{key}={value!r} is invalid: {', '.join(dupes)} appears more "
                                 f"than once (allowed: distinct values)")


def read(path="params.yaml") -> dict:
    """params.yaml as a dict (the raw values; Params.from_dict types and checks them)."""
    return yaml.safe_load(Path(path).read_text())


__all__ = ["Params", "DataParams", "ModelParams", "ComputeParams", "read", "SPARSITY",
           "TOP_KEYS", "SECTIONS"]
