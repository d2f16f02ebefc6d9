"""Path-counting networks and the topology of a mask.

The path network is the model run once on an all-ones input of the model's input shape with
every prunable weight replaced by its binary mask (bias dropped). It works on any model that
torch.fx can trace: the model is traced once and every operation of the graph is given its
role in a path count (README "Path-count conventions"):

- linear maps: Conv2d (grouped and depthwise included) and Linear modules use their mask;
  nn.MultiheadAttention and torchvision's Swin window attention are linear maps of their
  value projection (its mask rows, or all ones where it is not prunable) followed by uniform
  token mixing and the masked output projection;
- identities: normalisations (BatchNorm, LayerNorm, GroupNorm, ...), activations, dropout,
  stochastic depth and torchvision's SqueezeExcitation block (as the authors' code treats it:
  its two convs carry no path);
- kept as they are: residual sums, concatenations, reshapes, permutations, slicing (channel
  shuffle, window partitions, the class token), flattening;
- pooling: as is in reference mode (average pooling averages, max pooling takes the max), a
  sum over each window in exact mode (every input of a window is an edge); a mean over
  dimensions likewise;
- constants (parameters, buffers and anything computed from them alone) carry no path: added
  to a path-carrying tensor they are dropped (biases, positional embeddings, relative position
  biases), multiplied with one they count as 1 (layer scale), concatenated with one they are
  0 (the class token);
- multiplicative gates: the output of a sigmoid, hard sigmoid or softmax that multiplies a
  path-carrying tensor (squeeze-and-excitation written by hand, attention's softmax(q k^T))
  is a constant: 1 for a product, uniform token mixing for attention (weights 1 in exact
  mode, 1/number of keys in reference mode, as a softmax of equal logits). The gate's own
  branch is evaluated for its shape only, without gradient: its weights (SE convs, query and
  key projections) carry no path.
Any other operation on a path-carrying tensor raises one ValueError naming it.

Two modes:
- "reference": what the DPaI authors' code computes and optimises. Each prunable layer divides
  its input by the input's maximum (inside the autograd graph; an all-zero input keeps scale 1
  instead of dividing by 0, see _normalise) and log(max) is accumulated;
  log P = log(sum of the output) + sum of log(max). Because each branch is normalised
  separately, residual sums are unequal: this is NOT the exact number of paths
  (docs/path-counting.md).
- "exact": float64, no normalisation, pooling summed, so sum(output) is the exact number of
  input-output paths. A weight is effective iff d sum(output) / d mask > 0 (the number of paths
  through it); this criterion has no rounding noise.

On CUDA the network runs with TF32 off (matmul and cuDNN; `no_tf32`), so that masks do not
depend on the GPU's matmul precision setting.
"""
import contextlib
import math

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..models import input_shape, prunable_layers
from . import attention, roles
from .roles import (ADD, DIV, GATE_FNS, GATE_METHODS, GATE_MODULES, IDENTITY_METHODS, MATMUL,
                    MEAN, MUL, POOL_FNS, POOL_MODULES, SDPA, STRUCT_METHODS, SUB)
from .trace import nodes_in as _nodes_in, target_name as _target_name, tensors as _tensors
from .trace import trace, where as _where

MODES = ("reference", "exact")


@contextlib.contextmanager
def no_tf32():
    """TF32 off for CUDA matmuls and cuDNN convolutions inside the block, restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn



class Const:
    """A value that carries no path (a parameter, a buffer, or computed from them alone)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value



def _adaptive_sum(x: torch.Tensor, size) -> torch.Tensor:
    """Sum over each window of adaptive pooling (windows as torch computes them)."""
    out = (size, size) if isinstance(size, int) else tuple(size)
    h, w = x.shape[-2:]
    oh, ow = (h if out[0] is None else out[0]), (w if out[1] is None else out[1])
    if h % oh == 0 and w % ow == 0:
        return F.avg_pool2d(x, (h // oh, w // ow), divisor_override=1)
    area = torch.tensor([[(math.ceil((i + 1) * h / oh) - (i * h) // oh)
                          * (math.ceil((j + 1) * w / ow) - (j * w) // ow)
                          for j in range(ow)] for i in range(oh)], dtype=x.dtype, device=x.device)
    return F.adaptive_avg_pool2d(x, (oh, ow)) * area


def _sum_pool(x, kernel, stride, padding, ceil_mode=False, dilation=1):
    if dilation not in (1, (1, 1), [1, 1]):
        raise ValueError(f"dpai.paths: max pooling with dilation={dilation} has no sum form")
    return F.avg_pool2d(x, kernel, stride or kernel, padding, ceil_mode, True, divisor_override=1)



class PathNetwork:
    """Callable: masks {layer: float tensor} -> log P (reference) or sum of output (exact).

    `pre_hooks[name] = fn` calls fn(x) with the input of prunable layer `name` (after the
    reference normalisation) just before its masked map; fn may raise to stop the pass."""

    def __init__(self, model: nn.Module, mode: str = "reference"):
        roles.refresh()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {list(MODES)}")
        self.mode = mode
        layers = prunable_layers(model)
        self.names = list(layers)
        self.model = model
        self.graph = trace(model)
        self.dtype = torch.float64 if mode == "exact" else torch.float32
        param = next(model.parameters())
        self.model_dtype, device = param.dtype, param.device
        self.input = torch.ones(1, *input_shape(model), device=device, dtype=self.dtype)
        self.modules = dict(model.named_modules())
        self.live = self._live_nodes()
        self.masks: dict = {}
        self.log_scales: list = []
        self.pre_hooks: dict = {}
        self.normalise_exact = False

    # -- static analysis: which nodes carry paths -------------------------------------------
    def _is_gate(self, node, memo) -> bool:
        if not isinstance(node, fx.Node):
            return False
        if node in memo:
            return memo[node]
        gate = False
        if node.op == "call_module":
            m = self.modules[node.target]
            gate = isinstance(m, GATE_MODULES) or (
                isinstance(m, (nn.Dropout, nn.Identity)) and self._is_gate(node.args[0], memo))
        elif node.op == "call_function":
            gate = node.target in GATE_FNS or (
                (node.target in roles.STRUCT_FNS or node.target in (F.dropout,)) and node.args
                and self._is_gate(node.args[0], memo))
        elif node.op == "call_method":
            gate = node.target in GATE_METHODS or (
                (node.target in STRUCT_METHODS or node.target in IDENTITY_METHODS)
                and self._is_gate(node.args[0], memo))
        memo[node] = gate
        return gate

    def _path_inputs(self, node, memo) -> list:
        """The input nodes through which paths reach `node`."""
        t = node.target
        if node.op == "call_module" and isinstance(self.modules[t], nn.MultiheadAttention):
            return _nodes_in(node.args[0] if node.args else node.kwargs["query"])
        if node.op == "call_function" and t is SDPA:
            return _nodes_in(node.args[2] if len(node.args) > 2 else node.kwargs["value"])
        if node.op == "call_function" and t is roles.SWIN_ATTENTION:
            return _nodes_in(node.args[0])
        ins = _nodes_in((node.args, node.kwargs))
        if t in MUL or t in MATMUL or t is torch.einsum:
            return [n for n in ins if not self._is_gate(n, memo)]
        return ins

    def _live_nodes(self) -> set:
        memo, live = {}, set()
        out = next(n for n in self.graph.nodes if n.op == "output")
        stack = [out]
        while stack:
            node = stack.pop()
            if node in live:
                continue
            live.add(node)
            stack.extend(self._path_inputs(node, memo))
        return live

    # -- evaluation ---------------------------------------------------------------------------
    def __call__(self, masks: dict[str, torch.Tensor], scale: float = 1.0, parts: bool = False):
        """Exact mode: the number of paths. Reference mode: log P, or with parts=True the pair
        (sum of the normalised output, sum of the log scales), log P = log(first) + second."""
        self.masks, self.log_scales = masks, []
        try:
            with no_tf32():
                out = self._run(self.input * scale if scale != 1.0 else self.input)
            tensors = _tensors(out)
            if not tensors:
                raise ValueError("dpai.paths: the model's output does not depend on its input")
            out = tensors[0].sum()
            if self.mode == "exact":
                return out
            log_scale = (torch.stack(self.log_scales).sum() if self.log_scales
                         else torch.zeros((), device=out.device))
            return (out, log_scale) if parts else torch.log(out) + log_scale
        finally:
            self.masks, self.log_scales = {}, []

    def _run(self, x):
        env, first = {}, True
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env[node] = x if first else (node.args[0] if node.args else None)
                first = False
            elif node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: env[n])
            elif node.op == "get_attr":
                value = self.model
                for part in node.target.split("."):
                    value = getattr(value, part)
                env[node] = Const(value)
            else:
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                if node in self.live and _tensors((args, kwargs)):
                    env[node] = self._path_op(node, args, kwargs)
                else:
                    env[node] = self._const_op(node, args, kwargs)
        raise ValueError("dpai.paths: the traced graph has no output")

    def _unwrap(self, value, cast: bool):
        if isinstance(value, Const):
            return value.value
        if isinstance(value, torch.Tensor):
            value = value.detach()
            return value.to(self.model_dtype) if cast and value.is_floating_point() else value
        if isinstance(value, (list, tuple)):
            items = [self._unwrap(v, cast) for v in value]
            return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
        if isinstance(value, dict):
            return {k: self._unwrap(v, cast) for k, v in value.items()}
        return value

    def _const_op(self, node, args, kwargs):
        """Evaluate a node that carries no path (real weights, no gradient): only its value
        (a shape, a gate's shape, a constant) is used."""
        args, kwargs = self._unwrap(args, True), self._unwrap(kwargs, True)
        with torch.no_grad():
            if node.op == "call_module":
                value = self.modules[node.target](*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                value = node.target(*args, **kwargs)
        return self._wrap(value)

    def _wrap(self, value):
        if isinstance(value, torch.Tensor):
            return Const(value)
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(self._wrap(v) for v in value)
        return value

    def _unknown(self, node, what=None):
        return ValueError(f"dpai.paths: no path-count role for {what or _target_name(node)} "
                          f"(graph node {node.name!r}{_where(node)}); see README "
                          f"'Path-count conventions' for the supported operations")

    def _normalise(self, x):
        if self.mode != "reference":
            if self.normalise_exact:  # exact_paths' support count: see there
                top = x.detach().amax()
                return x / torch.where(top > 0, top, torch.ones_like(top))
            return x
        top = x.amax()
        # An all-zero input (a layer cut off by extreme sparsity; its residual sum may still
        # carry paths) would make the reference divide by 0: log P = -inf and NaN gradients.
        # Its scale is then taken as 1, which changes nothing where the reference is finite.
        top = torch.where(top > 0, top, torch.ones_like(top))
        self.log_scales.append(torch.log(top))
        return x / top

    def _weight(self, name, shape, device):
        if name in self.masks:
            return self.masks[name]
        return torch.ones(shape, dtype=self.dtype, device=device)  # a dense, unprunable weight

    def _masked(self, name, x, fn, rows: int = 0):
        """fn(x): the masked map of layer `name` on its (normalised) input. `rows`: the weight
        row of fn's first output (2 * dim where fn is the v rows of a q|k|v projection);
        dpai.unit_graph reads it."""
        x = self._normalise(x)
        hook = self.pre_hooks.get(name)
        if hook is not None:
            hook(x)
        return fn(x)

    def _mix(self, v, dim, keys=None):
        """Uniform token mixing over `dim`: every query gets the sum (exact) or the mean
        (reference) of the values."""
        out = v.sum(dim, keepdim=True) if self.mode == "exact" else v.mean(dim, keepdim=True)
        return out.expand_as(v)

    def _path_op(self, node, args, kwargs):
        op, t = node.op, node.target
        if op == "call_module":
            return self._module(node, self.modules[t], args, kwargs)
        first = next((a for a in args if not isinstance(a, (int, float, str))), None)
        if t is roles.SWIN_ATTENTION:
            return attention.shifted_window(self, node, *args, **kwargs)
        if t is SDPA:
            q, v = args[0], (args[2] if len(args) > 2 else kwargs["value"])
            if kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
                raise self._unknown(node, "scaled_dot_product_attention with a mask")
            q = q.value if isinstance(q, Const) else q
            out = self._mix(v, -2)
            return out[..., :1, :].expand(*q.shape[:-1], v.shape[-1]) if q.shape[-2] != v.shape[-2] else out
        if t in ADD or t in SUB:
            a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
            pa, pb = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
            if pa and pb:
                if t in SUB:
                    raise self._unknown(node, "a difference of two path-carrying tensors")
                return a + b
            return a if pa else b  # a constant offset (bias, positional embedding) carries no path
        if t in MUL or t in DIV:
            a, b = args[0], args[1]
            pa, pb = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
            if pa and pb:
                raise self._unknown(node, "a product of two path-carrying tensors (not a gate)")
            if t in DIV and pb:
                raise self._unknown(node, "a division by a path-carrying tensor")
            path, other = (a, b) if pa else (b, a)
            if isinstance(other, Const) and isinstance(other.value, torch.Tensor):
                # a constant factor (layer scale) or a gate counts as 1
                shape = torch.broadcast_shapes(path.shape, other.value.shape)
                return path.expand(shape) if shape != path.shape else path
            return path  # a number
        if t in MATMUL:
            a, b = args[0], args[1]
            if isinstance(a, Const) and self._is_gate(node.args[0], {}) and isinstance(b, torch.Tensor):
                ones = torch.ones(a.value.shape, dtype=b.dtype, device=b.device)
                if self.mode == "reference":
                    ones = ones / a.value.shape[-1]
                return torch.matmul(ones, b)
            raise self._unknown(node, "a matrix product that is not attention weights @ values")
        if t is torch.einsum:
            eq, *ops = args if not (len(args) == 2 and isinstance(args[1], (list, tuple)))                 else (args[0], *args[1])
            gates = [i for i, (n, o) in enumerate(zip(_nodes_in(node.args[1:]), ops))
                     if isinstance(o, Const) and self._is_gate(n, {})]
            paths = [o for o in ops if isinstance(o, torch.Tensor)]
            if len(ops) == 2 and len(gates) == 1 and len(paths) == 1:
                g = ops[gates[0]].value
                ones = torch.ones(g.shape, dtype=paths[0].dtype, device=paths[0].device)
                if self.mode == "reference":
                    ones = ones / g.shape[-1]
                ops = [ones if i == gates[0] else o for i, o in enumerate(ops)]
                return torch.einsum(eq, *ops)
            raise self._unknown(node, f"einsum {eq!r} that is not attention weights x values")
        if t in MEAN:
            x = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
            if self.mode == "reference":
                return x.mean(dim, keepdim=keep) if dim is not None else x.mean()
            return x.sum(dim, keepdim=keep) if dim is not None else x.sum()
        if op == "call_function" and t in POOL_FNS:
            return self._pool_fn(node, t, args, kwargs)
        if (op == "call_function" and t in roles.IDENTITY_FNS) or (op == "call_method" and t in IDENTITY_METHODS):
            if op == "call_method" and t in ("to", "float", "type_as"):
                return args[0]
            return next(a for a in args if isinstance(a, torch.Tensor))
        if op == "call_function" and t in roles.STRUCT_FNS:
            if t is torch._assert:
                return None
            if t in (torch.cat, torch.concat, torch.stack):
                parts = args[0]
                ref = _tensors(parts)[0]
                parts = [torch.zeros(p.value.shape, dtype=ref.dtype, device=ref.device)
                         if isinstance(p, Const) else p for p in parts]  # class token: 0
                return t(parts, *args[1:], **kwargs)
            if any(isinstance(a, Const) for a in args[1:]):
                raise self._unknown(node)
            return t(*args, **kwargs)
        if op == "call_method" and t in STRUCT_METHODS:
            args = [a.value if isinstance(a, Const) and t in ("expand_as", "view_as") else a
                    for a in args]
            return getattr(args[0], t)(*args[1:], **kwargs)
        del first
        raise self._unknown(node)

    def _pool_fn(self, node, t, args, kwargs):
        x = args[0]
        if self.mode == "reference":
            return t(*args, **kwargs)
        names = {F.avg_pool2d: ("kernel_size", "stride", "padding", "ceil_mode"),
                 F.max_pool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
        if t in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            return _adaptive_sum(x, args[1] if len(args) > 1 else kwargs["output_size"])
        values = dict(zip(names[t], args[1:]))
        values.update({k: v for k, v in kwargs.items() if k in names[t]})
        return _sum_pool(x, values["kernel_size"], values.get("stride"), values.get("padding", 0),
                         values.get("ceil_mode", False), values.get("dilation", 1))

    def _module(self, node, m, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        name = node.target
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise self._unknown(node, f"Conv2d with padding_mode={m.padding_mode!r}")
            w = self._weight(name, m.weight.shape, x.device)
            return self._masked(name, x, lambda x: F.conv2d(x, w, None, m.stride, m.padding,
                                                            m.dilation, m.groups))
        if isinstance(m, nn.Linear):
            w = self._weight(name, m.weight.shape, x.device)
            return self._masked(name, x, lambda x: F.linear(x, w))
        if isinstance(m, roles.IDENTITY_MODULES):
            return x
        if isinstance(m, nn.Flatten):
            return x.flatten(m.start_dim, m.end_dim)
        if roles.PERMUTE is not None and isinstance(m, roles.PERMUTE):
            return x.permute(m.dims)
        if isinstance(m, POOL_MODULES):
            if self.mode == "reference":
                return m(x)
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                return _adaptive_sum(x, m.output_size)
            if isinstance(m, nn.AvgPool2d):
                return _sum_pool(x, m.kernel_size, m.stride, m.padding, m.ceil_mode)
            return _sum_pool(x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.dilation)
        if isinstance(m, nn.MultiheadAttention):
            return attention.multihead(self, node, m, args, kwargs)
        raise self._unknown(node, f"module {type(m).__module__}.{type(m).__name__} "
                                  f"({node.target!r})")
