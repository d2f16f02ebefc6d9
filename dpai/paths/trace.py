"""The torch.fx trace that the path network evaluates, and helpers over its graph."""
import torch
import torch.fx as fx
from torch import nn

from . import roles

def target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else f"{getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', t)}"


def where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return f" inside {list(stack)[-1]!r}" if stack else ""


class Tracer(fx.Tracer):
    """Leaves: the modules with a path-count role, and any other torch.nn module (which then
    raises, naming it); every other module is traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, roles.LEAF_MODULES):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return type(m).__module__.startswith("torch.nn")


def trace(model: nn.Module) -> fx.Graph:
    """The fx graph of `model` in eval mode (the caller's train/eval flags are restored)."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - one clear line, whatever fx raised
        raise ValueError(f"dpai.paths: torch.fx cannot trace {type(model).__name__} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"the path network needs a traceable model") from exc
    finally:
        for m, flag in flags.items():
            m.training = flag


def nodes_in(value) -> list:
    out = []
    fx.node.map_arg(value, out.append)
    return out


def tensors(value) -> list:
    """The path-carrying tensors inside a (nested) argument."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    return []

