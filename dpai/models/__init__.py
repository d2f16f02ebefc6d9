"""Model registry: name -> builder(num_classes, in_channels, image_size).

`create_model` also applies the reference initialisation and records the input shape on the
model (`model.input_shape`), which the data-free methods and the path network read.
"""

import contextlib

import torch
from torch import nn

from .resnet import resnet18, resnet20
from .vgg import vgg19_bn
from .vit import vit_tiny

MODELS = {"resnet20": resnet20, "vgg19_bn": vgg19_bn, "resnet18": resnet18, "vit_tiny": vit_tiny}

# reference initialisation per model (dpai-method.md section 8)
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


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 seed: int | None = None) -> nn.Module:
    """Build a registered model with the reference init; `seed` makes the init reproducible."""
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not one of {sorted(MODELS)}")
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r} must be a positive integer")
    fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with fork:
        if seed is not None:
            torch.manual_seed(seed)
        model = MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        init_weights(model, INIT[name])
    model.name = name
    model.input_shape = (in_channels, image_size, image_size)
    model.num_classes = num_classes
    return model



def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear, in module order (first conv and classifier included)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def num_prunable(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in prunable_layers(model).values())


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("the model has no input_shape (C, H, W); build it with dpai.create_model "
                         "or set model.input_shape")
    return tuple(shape)


__all__ = ["MODELS", "create_model", "prunable_layers", "num_prunable", "input_shape",
           "init_weights"]
