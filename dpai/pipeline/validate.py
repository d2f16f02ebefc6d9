"""The whole parameter set checked at once, before any work: every section (dpai.pipeline.
params), the rules between sections, the files the run needs here, and whether the model
takes the data set's input. The `check` stage runs it before DVC runs (or deletes the outputs
of) any other stage; `dpai-repro` runs it (without the model) before it starts.

    from dpai.pipeline.validate import validate
    validate(yaml.safe_load(open("params.yaml")))   # Params, or one-line ValueError
"""
from pathlib import Path, PurePosixPath

import torch

from ..data.specs import DATASETS
from ..methods import METHODS
from ..methods.params import MaskParams
from ..models import create_model
from ..training.config import TrainParams
from .params import Params

# folders that DVC stages write (and so delete before a rerun), relative to the repo root
STAGE_OUTPUTS = ("masks", "runs", "reports")


def _inside(path: str, folder: str) -> bool:
    p, f = PurePosixPath(Path(path).as_posix()), PurePosixPath(Path(folder).as_posix())
    return p == f or f in p.parents


def model_fits(name: str, dataset: str, prune: str = "default") -> None:
    """Build the model (without its reference init) and run one input of the data set's
    shape through it: a model that cannot take that input fails here, not after the data is
    loaded. On the CPU, not the meta device: meta kernels of nn.init and BatchNorm import
    torch._dynamo, 1.7 s a process here; a paper model takes milliseconds."""
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


def _imagenet(params: Params, check_files: bool) -> None:
    archives = params.data.imagenet_archives
    outputs = [str(params.data.folder), *STAGE_OUTPUTS]
    for out in outputs:
        if _inside(archives, out) or _inside(out, archives):
            raise ValueError(f"data.imagenet_archives={archives!r} is invalid: it overlaps "
                             f"the pipeline output {out}/, which DVC deletes before a rerun "
                             f"(allowed: a folder outside {outputs})")
    if check_files:
        from ..data.imagenet import check_sources
        try:
            check_sources(Path(archives))
        except FileNotFoundError as exc:
            raise ValueError(f"data.imagenet_archives={archives!r}: {exc}") from None


def validate(raw: dict, check_files: bool = True, fit: bool = True) -> Params:
    """Raise ValueError (one line: key, value, what is allowed) on the first mistake in a
    whole parameter set; return it typed. check_files=False skips what depends on this
    machine's files (the ImageNet archives); fit=False skips building the model."""
    params = Params.from_dict(raw, mask=MaskParams, train=TrainParams)
    for method in params.methods:
        if method not in METHODS:
            raise ValueError(f"methods={params.methods!r} is invalid: item {method!r} is not "
                             f"a method name (one of {sorted(METHODS)})")
        params.mask.options(method)  # its block must be there
    spec = params.data.spec
    if params.mask.scoring_per_class > spec.min_class_train:
        raise ValueError(f"mask.scoring_per_class={params.mask.scoring_per_class} is invalid: "
                         f"allowed is an integer in [1, {spec.min_class_train}] (the training "
                         f"images of the smallest class of {spec.name})")
    if params.train.batch_size > spec.n_train:
        raise ValueError(f"train.batch_size={params.train.batch_size} is invalid: allowed is at "
                         f"most the {spec.n_train} training images of {spec.name}")
    if params.data.dataset == "imagenet":
        _imagenet(params, check_files)
    if fit:
        model_fits(params.model.name, params.data.dataset, params.model.prune)
    return params


__all__ = ["validate", "model_fits", "STAGE_OUTPUTS"]
