"""What each operation of a traced model is in a path count: the role tables of dpai.paths.

torchvision's classes are looked up only once torchvision is imported (importing torchvision.ops
here would cost every process seconds: it loads torch._dynamo); `refresh()` rebinds the tables
and is called whenever a path network is built, so read them as `roles.NAME`.
"""
import operator
import sys

import torch
import torch.nn.functional as F
from torch import nn

def _optional(module: str, name: str):
    """`module.name` if `module` is already imported, else None. A model can only contain
    torchvision's classes once torchvision has imported them, and importing torchvision.ops
    here would cost every stage seconds (it loads torch._dynamo); refresh() looks again
    whenever a path network is built."""
    return getattr(sys.modules.get(module), name, None)


def refresh() -> None:
    """(Re)bind the role tables to the torchvision classes and functions imported by now."""
    global SE, SD, FROZEN_BN, PERMUTE, SWIN_ATTENTION, SWIN_PAD, STOCHASTIC_DEPTH_FN
    global IDENTITY_MODULES, LEAF_MODULES, IDENTITY_FNS, STRUCT_FNS
    SE = _optional("torchvision.ops.misc", "SqueezeExcitation")
    SD = _optional("torchvision.ops.stochastic_depth", "StochasticDepth")
    FROZEN_BN = _optional("torchvision.ops.misc", "FrozenBatchNorm2d")
    PERMUTE = _optional("torchvision.ops.misc", "Permute")
    SWIN_ATTENTION = _optional("torchvision.models.swin_transformer", "shifted_window_attention")
    SWIN_PAD = _optional("torchvision.models.swin_transformer", "_patch_merging_pad")
    STOCHASTIC_DEPTH_FN = _optional("torchvision.ops.stochastic_depth", "stochastic_depth")
    # modules that are the identity in a path count
    IDENTITY_MODULES = tuple(t for t in (
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
        nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm, FROZEN_BN,
        nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Hardswish,
        nn.Hardsigmoid, nn.Mish, nn.ELU, nn.Softmax, nn.Identity,
        nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, SD, SE) if t is not None)
    LEAF_MODULES = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.Flatten, *POOL_MODULES,
                    *IDENTITY_MODULES, *((PERMUTE,) if PERMUTE else ()))
    IDENTITY_FNS = (_fns("relu", "relu_", "relu6", "gelu", "silu", "hardswish", "hardsigmoid",
                         "sigmoid", "tanh", "leaky_relu", "mish", "elu", "dropout", "dropout2d",
                         "layer_norm", "batch_norm", "group_norm", "softmax")
                    | _fns("relu", "relu_", "sigmoid", "tanh", "softmax", "clone", mod=torch)
                    | ({STOCHASTIC_DEPTH_FN} if STOCHASTIC_DEPTH_FN else set()))
    STRUCT_FNS = ({operator.getitem, getattr, torch._assert, SWIN_PAD}
                  | _fns("flatten", "reshape", "permute", "transpose", "swapaxes", "cat",
                         "concat", "stack", "chunk", "split", "roll", "unsqueeze", "squeeze",
                         "narrow", "unbind", mod=torch) | _fns("pad")) - {None}


POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_fns = lambda *names, mod=F: {getattr(mod, n) for n in names if hasattr(mod, n)}  # noqa: E731
refresh()
GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softmax)

IDENTITY_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "softmax", "clone", "float",
                    "to", "type_as"}
GATE_FNS = _fns("sigmoid", "hardsigmoid", "softmax") | _fns("sigmoid", "softmax", mod=torch)
GATE_METHODS = {"sigmoid", "softmax"}
STRUCT_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "swapaxes", "unsqueeze",
                  "squeeze", "expand", "expand_as", "chunk", "split", "roll", "size", "dim",
                  "narrow", "unbind", "view_as", "contiguous"}
ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"}
SUB = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"}
DIV = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
MATMUL = {operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"}
MEAN = {torch.mean, "mean"}
POOL_FNS = _fns("avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d")
SDPA = F.scaled_dot_product_attention
