"""The one validation of a pipeline parameter set (params.yaml), before any work starts.

    import dpai, yaml
    params = dpai.config.validate(yaml.safe_load(open("params.yaml")))

Every stage calls `validate` on the whole parameter set, so whichever stage DVC runs first
stops a mistake, with one line that names the key, the value and what is allowed. Library
callers get the same checks (method parameters through `dpai.pruners.check_method`, training
through `dpai.TrainConfig`).
"""
from pathlib import Path, PurePosixPath

import torch

from . import checks
from .data.specs import DATASETS
from .device import DEVICES
from .models import PRUNE, check_model_name, create_model
from .names import sparsity_name
from .pruners import METHODS, check_method
from .train import TrainConfig

TOP_KEYS = ("sparsity", "sparsities", "methods", "seeds", "data", "model", "mask", "train")
DATA_KEYS = ("dataset", "root", "url", "imagenet_archives", "split_seed")
MODEL_KEYS = ("name", "prune")
MASK_KEYS = ("device", "scoring_per_class", "scoring_batch_size", "transform")  # + per method
# parameters of several methods that the pipeline sets once, for every method that takes them
SHARED_METHOD_PARAMS = ("scoring_batch_size",)
TRANSFORMS = ("none", "shuffle")  # shuffle: layer-wise shuffle of the mask (a sanity check)
TRAIN_KEYS = ("device", "init")   # plus the TrainConfig fields
INITS = ("same", "fresh")         # same: the init the mask was computed on (the reference)
DOWNLOADABLE = tuple(n for n, s in DATASETS.items() if s.url is not None)
SPARSITY = checks.real(0, 1, lo_open=True, hi_open=True)
# folders that DVC stages write (and so delete before a rerun), relative to the repo root
STAGE_OUTPUTS = ("masks", "runs", "reports")


def _get(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"{dotted} is missing from params.yaml")
        node = node[key]
    return node


def _keys(block, name: str, allowed) -> dict:
    if not isinstance(block, dict):
        raise ValueError(f"{name}={block!r} is invalid: allowed is a mapping of {list(allowed)}")
    for key in block:
        if key not in allowed:
            raise ValueError(f"{name}.{key} is not a parameter; allowed: {sorted(allowed)}")
    return block


def _distinct_list(name: str, value, item: checks.Rule, ident=lambda v: v) -> list:
    """A non-empty list of distinct values, each allowed by `item`."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name}={value!r} is invalid: allowed is a non-empty list, each "
                         f"item {item.allowed}")
    for v in value:
        if not item.test(v):
            raise ValueError(f"{name}={value!r} is invalid: item {v!r} is not {item.allowed}")
    seen = [ident(v) for v in value]
    dupes = sorted({str(v) for v in seen if seen.count(v) > 1})
    if dupes:
        raise ValueError(f"{name}={value!r} is invalid: {', '.join(dupes)} appears more than "
                         f"once (allowed: distinct values)")
    return value


def _device(name: str, value) -> None:
    ok = isinstance(value, str) and (value in DEVICES or (
        value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: allowed is one of {list(DEVICES)} or "
                         f"cuda:N")


def _inside(path: str, folder: str) -> bool:
    p, f = PurePosixPath(Path(path).as_posix()), PurePosixPath(Path(folder).as_posix())
    return p == f or f in p.parents


def check_model_fits(name: str, dataset: str, prune: str = "default") -> None:
    """Build the model (without its reference init) and run one input of the data set's
    shape through it: a model that cannot take that input fails here, not after the data is
    loaded. On the CPU, not the meta device: meta kernels of nn.init and BatchNorm import
    torch._dynamo, 1.7 s in every stage process here; a paper model takes milliseconds."""
    spec = DATASETS[dataset]
    shape = (1, spec.in_channels, spec.image_size, spec.image_size)
    try:
        with torch.no_grad():
            model = create_model(name, num_classes=spec.num_classes,
                                 in_channels=spec.in_channels, image_size=spec.image_size,
                                 prune=prune, initialise=False)
            out = model.eval()(torch.zeros(shape))
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"model.name={name!r} does not fit data.dataset={dataset!r} (input "
                         f"{spec.in_channels}x{spec.image_size}x{spec.image_size}): "
                         f"{detail}") from None
    if tuple(out.shape) != (1, spec.num_classes):
        raise ValueError(f"model.name={name!r} gives outputs of shape {tuple(out.shape)} on "
                         f"data.dataset={dataset!r}, expected (1, {spec.num_classes})")


def _data(params: dict, check_files: bool) -> dict:
    data = _keys(_get(params, "data"), "data", DATA_KEYS)
    for key in DATA_KEYS:
        _get(params, f"data.{key}")
    dataset = data["dataset"]
    if dataset not in DATASETS:
        raise ValueError(f"data.dataset={dataset!r} is invalid: allowed is one of "
                         f"{sorted(DATASETS)}")
    checks.Rule("a folder path", lambda v: isinstance(v, str) and v != "").check(
        "data.root", data["root"])
    if data["url"] is not None:
        if dataset not in DOWNLOADABLE:
            raise ValueError(f"data.url={data['url']!r} is invalid for data.dataset={dataset!r}, "
                             f"which has no download (allowed: null; data.url applies to "
                             f"{list(DOWNLOADABLE)})")
        checks.Rule("null or a URL or path", lambda v: isinstance(v, str) and v != "").check(
            "data.url", data["url"])
    checks.integer(0).check("data.split_seed", data["split_seed"])
    if dataset == "imagenet":
        archives = data["imagenet_archives"]
        if not isinstance(archives, str) or not archives:
            raise ValueError(f"data.imagenet_archives={archives!r} is invalid: allowed is the "
                             f"folder holding your ILSVRC2012 archives, outside every pipeline "
                             f"output (e.g. data/imagenet-archives)")
        outputs = [str(Path(data["root"]) / dataset), *STAGE_OUTPUTS]
        for out in outputs:
            if _inside(archives, out) or _inside(out, archives):
                raise ValueError(f"data.imagenet_archives={archives!r} is invalid: it overlaps "
                                 f"the pipeline output {out}/, which DVC deletes before a rerun "
                                 f"(allowed: a folder outside {outputs})")
        from .data.imagenet import check_sources
        try:
            if not check_files:
                return data
            check_sources(Path(archives))
        except FileNotFoundError as exc:
            raise ValueError(f"data.imagenet_archives={archives!r}: {exc}") from None
    return data


def _mask(params: dict) -> None:
    mask = _get(params, "mask")
    _keys(mask, "mask", (*MASK_KEYS, *METHODS))
    for key in MASK_KEYS:
        _get(params, f"mask.{key}")
    _device("mask.device", mask["device"])
    checks.one_of(*TRANSFORMS).check("mask.transform", mask["transform"])
    checks.optional(checks.integer(1)).check("mask.scoring_batch_size",
                                             mask["scoring_batch_size"])
    spec = DATASETS[params["data"]["dataset"]]
    checks.Rule(f"an integer in [1, {spec.min_class_train}] (the training images of "
                f"the smallest class of {spec.name})",
                lambda v: checks.is_int(v) and 1 <= v <= spec.min_class_train).check(
        "mask.scoring_per_class", mask["scoring_per_class"])
    for method in params["methods"]:
        if method not in mask:
            raise ValueError(f"mask.{method} is missing: every method in methods needs its "
                             f"block of parameters in mask (conf/config.yaml)")
    for method in METHODS:
        if method in mask:
            block = mask[method] if mask[method] is not None else {}
            shared = [k for k in SHARED_METHOD_PARAMS if k in block]
            if shared:
                raise ValueError(f"mask.{method}.{shared[0]} is not a parameter here; allowed: "
                                 f"mask.{shared[0]} (one value for every method that takes it)")
            check_method(method, block, prefix=f"mask.{method}")


def _train(params: dict) -> TrainConfig:
    train = dict(_get(params, "train"))
    for key in TRAIN_KEYS:
        _get(params, f"train.{key}")
    _device("train.device", train.pop("device"))
    checks.one_of(*INITS).check("train.init", train.pop("init"))
    config = TrainConfig.from_dict(train)
    late = [m for m in config.milestones if m >= config.epochs]
    if late:
        raise ValueError(f"train.milestones={config.milestones} is invalid for train.epochs="
                         f"{config.epochs}: allowed are epochs below {config.epochs}")
    spec = DATASETS[params["data"]["dataset"]]
    if config.batch_size > spec.n_train:
        raise ValueError(f"train.batch_size={config.batch_size} is invalid: allowed is at most "
                         f"the {spec.n_train} training images of {spec.name}")
    return config


def validate(params: dict, check_files: bool = True) -> dict:
    """Raise ValueError (one line: key, value, what is allowed) on the first mistake in a
    whole parameter set; return it unchanged when it is valid. check_files=False skips what
    depends on this machine's files (the ImageNet archives), to check a configuration that
    will run elsewhere."""
    if not isinstance(params, dict):
        raise ValueError(f"params.yaml holds {type(params).__name__}, expected a mapping")
    _keys(params, "params", TOP_KEYS)
    for key in TOP_KEYS:
        _get(params, key)
    SPARSITY.check("sparsity", params["sparsity"])
    _distinct_list("sparsities", params["sparsities"], SPARSITY, sparsity_name)
    _distinct_list("methods", params["methods"],
                   checks.Rule(f"a method name (one of {sorted(METHODS)})",
                               lambda v: v in METHODS))
    _distinct_list("seeds", params["seeds"], checks.Rule("a non-negative integer",
                                                         lambda v: checks.is_int(v) and v >= 0))
    _data(params, check_files)
    model = _keys(_get(params, "model"), "model", MODEL_KEYS)
    check_model_name(_get(params, "model.name"))
    checks.one_of(*PRUNE).check("model.prune", _get(params, "model.prune"))
    _mask(params)
    _train(params)
    check_model_fits(model["name"], params["data"]["dataset"], model["prune"])
    return params


__all__ = ["validate", "sparsity_name", "check_model_fits", "TRANSFORMS", "INITS"]
