"""Model registry: name -> builder(num_classes, in_channels, image_size).

`create_model` also applies the reference initialisation and records the input shape on the
model (`model.input_shape`), which the data-free methods and the path network read, and which
weights are prunable (`model.prune`, see PRUNE).

Models by name:
- the paper's hand-written models: "resnet20", "vgg19_bn", "resnet18", "vit_tiny" (MODELS);
- "torchvision:<builder>" for every classification builder of torchvision.models
  (`torchvision.models.list_models(module=torchvision.models)`), built with weights=None and
  torchvision's own initialisation; the first convolution is rebuilt for `in_channels`
  (same kernel, stride, padding), ViT and MaxViT get `image_size` as their input size.
"""

import contextlib

import torch
from torch import nn

from .resnet import resnet18, resnet20
from .vgg import vgg19_bn
from .vit import vit_tiny

MODELS = {"resnet20": resnet20, "vgg19_bn": vgg19_bn, "resnet18": resnet18, "vit_tiny": vit_tiny}

# reference initialisation per model (docs/faithfulness.md; the authors' code, github QuanNguyen-Tri/DPaI)
INIT = {"resnet20": "kaiming_normal", "vgg19_bn": "kaiming_normal", "resnet18": "kaiming_uniform",
        "vit_tiny": "kaiming_normal"}


def init_weights(model: nn.Module, init: str) -> None:
    """Kaiming (fan-in, ReLU gain) conv/linear weights, zero biases, BN/LN weight 1 bias 0."""
    fill = {"kaiming_normal": nn.init.kaiming_normal_, "kaiming_uniform": nn.init.kaiming_uniform_}
    if init not in fill:
        raise ValueError(f"init={init!r} is not one of {sorted(fill)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fill[init](m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


TORCHVISION = "torchvision:"
# which weights are prunable (docs/faithfulness.md):
# - "default": the weight of every nn.Conv2d (grouped and depthwise included) and nn.Linear,
#   plus the input projection of every nn.MultiheadAttention (`in_proj_weight`, a raw
#   parameter of the attention module, not a Linear; q, k, v rows together);
# - "linear": the authors' ViT setting, "linear layers only": the weights of the nn.Conv2d
#   and nn.Linear modules (patch projection, MLPs, attention's out_proj, which is an
#   nn.Linear module, and the head); the attention input projection stays dense, because the
#   authors' code scores modules and in_proj_weight belongs to no Conv2d/Linear module.
PRUNE = ("default", "linear")


def torchvision_models() -> list[str]:
    """Every classification builder of torchvision.models, as "torchvision:<name>"."""
    import torchvision
    return [TORCHVISION + n for n in torchvision.models.list_models(module=torchvision.models)]


def check_model_name(name, key: str = "model.name") -> str:
    """`name` if it is a model create_model builds; else a one-line ValueError naming `key`,
    the value and what is allowed."""
    if isinstance(name, str) and name in MODELS:
        return name
    if isinstance(name, str) and name.startswith(TORCHVISION):
        if name in torchvision_models():
            return name
        raise ValueError(f"model.name={name!r}: {name[len(TORCHVISION):]!r} is not a "
                         f"torchvision classification builder (torchvision.models.list_models"
                         f"(module=torchvision.models), e.g. 'torchvision:resnet50')")
    raise ValueError(f"{key}={name!r} is not one of {sorted(MODELS)} or "
                     f"'torchvision:<name>' for a torchvision classification builder")


def _torchvision(builder: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    import torchvision
    kwargs = {"weights": None, "num_classes": num_classes}
    if builder.startswith("vit_"):
        kwargs["image_size"] = image_size
    elif builder.startswith("maxvit"):
        kwargs["input_size"] = (image_size, image_size)
    elif builder in ("googlenet", "inception_v3"):
        # torchvision's init, without its warning; no auxiliary classifiers, so that the
        # training-mode output is the logits, which the scoring methods and dpai.train use
        # (the original recipe's auxiliary loss is not part of this pipeline)
        kwargs.update(init_weights=True, aux_logits=False)
    model = torchvision.models.get_model(builder, **kwargs)
    if in_channels != 3:
        name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
        new = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride,
                        first.padding, first.dilation, 1, first.bias is not None,
                        first.padding_mode)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 seed: int | None = None, prune: str = "default",
                 initialise: bool = True) -> nn.Module:
    """Build a model by name (module docstring) with its reference init; `seed` makes the
    init reproducible; `prune` chooses the prunable weights (PRUNE). initialise=False skips
    the reference init of the paper models (for shape checks)."""
    check_model_name(name, key="model")
    if prune not in PRUNE:
        raise ValueError(f"model.prune={prune!r} is not one of {list(PRUNE)}")
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r} must be a positive integer")
    fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with fork:
        if seed is not None:
            torch.manual_seed(seed)
        if name in MODELS:
            model = MODELS[name](num_classes=num_classes, in_channels=in_channels,
                                 image_size=image_size)
            if initialise:
                init_weights(model, INIT[name])
        else:
            model = _torchvision(name[len(TORCHVISION):], num_classes, in_channels, image_size)
    model.name = name
    model.prune = prune
    model.input_shape = (in_channels, image_size, image_size)
    model.num_classes = num_classes
    return model



class ParamWeight:
    """A prunable weight that is a raw parameter of a module (`module.<attr>`, e.g.
    nn.MultiheadAttention.in_proj_weight), seen through the `.weight` interface of a layer."""

    def __init__(self, module: nn.Module, attr: str):
        self.module, self.attr = module, attr

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.attr)

    def __repr__(self):
        return f"ParamWeight({type(self.module).__name__}.{self.attr})"


def weight_owner(layer) -> tuple[nn.Module, str]:
    """(module, attribute name) holding a prunable layer's weight."""
    return (layer.module, layer.attr) if isinstance(layer, ParamWeight) else (layer, "weight")


def prunable_layers(model: nn.Module) -> dict[str, object]:
    """The prunable weights of `model` (`model.prune`, default "default"), in module order:
    name -> an object with `.weight`. Conv2d and Linear modules appear under their module
    name (first conv and classifier included); with prune="default" an nn.MultiheadAttention
    adds "<module>.in_proj_weight" (a ParamWeight)."""
    rule = getattr(model, "prune", "default")
    if rule not in PRUNE:
        raise ValueError(f"model.prune={rule!r} is not one of {list(PRUNE)}")
    out: dict[str, object] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out[name] = m
        elif isinstance(m, nn.MultiheadAttention) and rule == "default":
            attrs = (["in_proj_weight"] if m.in_proj_weight is not None
                     else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
            for attr in attrs:
                out[f"{name}.{attr}" if name else attr] = ParamWeight(m, attr)
    return out


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> the prunable weight tensor itself (same names as prunable_layers)."""
    return {n: layer.weight for n, layer in prunable_layers(model).items()}


def num_prunable(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in prunable_layers(model).values())


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("the model has no input_shape (C, H, W); build it with dpai.create_model "
                         "or set model.input_shape")
    return tuple(shape)


__all__ = ["MODELS", "PRUNE", "TORCHVISION", "create_model", "check_model_name",
           "torchvision_models", "prunable_layers", "prunable_weights", "weight_owner",
           "ParamWeight", "num_prunable", "input_shape", "init_weights"]
