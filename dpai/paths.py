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
  (dpai-method.md section 3).
- "exact": float64, no normalisation, pooling summed, so sum(output) is the exact number of
  input-output paths. A weight is effective iff d sum(output) / d mask > 0 (the number of paths
  through it); this criterion has no rounding noise.

On CUDA the network runs with TF32 off (matmul and cuDNN; `no_tf32`), so that masks do not
depend on the GPU's matmul precision setting.
"""
import contextlib
import math
import operator
import sys

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .mask import Mask
from .models import input_shape, prunable_layers

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


def _optional(module: str, name: str):
    """`module.name` if `module` is already imported, else None. A model can only contain
    torchvision's classes once torchvision has imported them, and importing torchvision.ops
    here would cost every stage seconds (it loads torch._dynamo); _refresh_roles() looks again
    whenever a path network is built."""
    return getattr(sys.modules.get(module), name, None)


def _refresh_roles() -> None:
    """(Re)bind the role tables to the torchvision classes and functions imported by now."""
    global _SE, _SD, _FROZEN_BN, _PERMUTE, _SWIN_ATTENTION, _SWIN_PAD, _STOCHASTIC_DEPTH_FN
    global IDENTITY_MODULES, LEAF_MODULES, IDENTITY_FNS, STRUCT_FNS
    _SE = _optional("torchvision.ops.misc", "SqueezeExcitation")
    _SD = _optional("torchvision.ops.stochastic_depth", "StochasticDepth")
    _FROZEN_BN = _optional("torchvision.ops.misc", "FrozenBatchNorm2d")
    _PERMUTE = _optional("torchvision.ops.misc", "Permute")
    _SWIN_ATTENTION = _optional("torchvision.models.swin_transformer", "shifted_window_attention")
    _SWIN_PAD = _optional("torchvision.models.swin_transformer", "_patch_merging_pad")
    _STOCHASTIC_DEPTH_FN = _optional("torchvision.ops.stochastic_depth", "stochastic_depth")
    # modules that are the identity in a path count
    IDENTITY_MODULES = tuple(t for t in (
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
        nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm, _FROZEN_BN,
        nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Hardswish,
        nn.Hardsigmoid, nn.Mish, nn.ELU, nn.Softmax, nn.Identity,
        nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, _SD, _SE) if t is not None)
    LEAF_MODULES = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.Flatten, *POOL_MODULES,
                    *IDENTITY_MODULES, *((_PERMUTE,) if _PERMUTE else ()))
    IDENTITY_FNS = (_fns("relu", "relu_", "relu6", "gelu", "silu", "hardswish", "hardsigmoid",
                         "sigmoid", "tanh", "leaky_relu", "mish", "elu", "dropout", "dropout2d",
                         "layer_norm", "batch_norm", "group_norm", "softmax")
                    | _fns("relu", "relu_", "sigmoid", "tanh", "softmax", "clone", mod=torch)
                    | ({_STOCHASTIC_DEPTH_FN} if _STOCHASTIC_DEPTH_FN else set()))
    STRUCT_FNS = ({operator.getitem, getattr, torch._assert, _SWIN_PAD}
                  | _fns("flatten", "reshape", "permute", "transpose", "swapaxes", "cat",
                         "concat", "stack", "chunk", "split", "roll", "unsqueeze", "squeeze",
                         "narrow", "unbind", mod=torch) | _fns("pad")) - {None}


POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_fns = lambda *names, mod=F: {getattr(mod, n) for n in names if hasattr(mod, n)}  # noqa: E731
_refresh_roles()
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


class Const:
    """A value that carries no path (a parameter, a buffer, or computed from them alone)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else f"{getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', t)}"


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return f" inside {list(stack)[-1]!r}" if stack else ""


class _Tracer(fx.Tracer):
    """Leaves: the modules with a path-count role, and any other torch.nn module (which then
    raises, naming it); every other module is traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, LEAF_MODULES):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return type(m).__module__.startswith("torch.nn")


def trace(model: nn.Module) -> fx.Graph:
    """The fx graph of `model` in eval mode (the caller's train/eval flags are restored)."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - one clear line, whatever fx raised
        raise ValueError(f"dpai.paths: torch.fx cannot trace {type(model).__name__} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"the path network needs a traceable model") from exc
    finally:
        for m, flag in flags.items():
            m.training = flag


def _nodes_in(value) -> list:
    out = []
    fx.node.map_arg(value, out.append)
    return out


def _tensors(value) -> list:
    """The path-carrying tensors inside a (nested) argument."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


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
        _refresh_roles()
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
                (node.target in STRUCT_FNS or node.target in (F.dropout,)) and node.args
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
        if node.op == "call_function" and t is _SWIN_ATTENTION:
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
        if t is _SWIN_ATTENTION:
            return self._swin_attention(node, *args, **kwargs)
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
        if (op == "call_function" and t in IDENTITY_FNS) or (op == "call_method" and t in IDENTITY_METHODS):
            if op == "call_method" and t in ("to", "float", "type_as"):
                return args[0]
            return next(a for a in args if isinstance(a, torch.Tensor))
        if op == "call_function" and t in STRUCT_FNS:
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
        if isinstance(m, IDENTITY_MODULES):
            return x
        if isinstance(m, nn.Flatten):
            return x.flatten(m.start_dim, m.end_dim)
        if _PERMUTE is not None and isinstance(m, _PERMUTE):
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
            return self._attention(node, m, args, kwargs)
        raise self._unknown(node, f"module {type(m).__module__}.{type(m).__name__} "
                                  f"({node.target!r})")

    def _value_weight(self, name, attr_rows, full_shape, device):
        """Rows of a (possibly unprunable) q|k|v input projection that make the values."""
        w = self._weight(name, full_shape, device)
        return w[attr_rows] if attr_rows is not None else w

    def _attention(self, node, m, args, kwargs):
        """nn.MultiheadAttention(x, x, x): values through the v rows of the input projection,
        uniform mixing over the tokens, masked output projection. Returns (out, None)."""
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs.get("key")
        v = args[2] if len(args) > 2 else kwargs.get("value")
        if not (q is k is v):
            raise self._unknown(node, "nn.MultiheadAttention with different query, key and value")
        if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None:
            raise self._unknown(node, "nn.MultiheadAttention with a mask")
        e, base = m.embed_dim, node.target
        if m.in_proj_weight is not None:
            name, rows = f"{base}.in_proj_weight", 2 * e
            w = self._weight(name, m.in_proj_weight.shape, q.device)[rows:]
        else:
            name, rows = f"{base}.v_proj_weight", 0
            w = self._weight(name, m.v_proj_weight.shape, q.device)
        values = self._masked(name, q, lambda x: F.linear(x, w), rows)
        mixed = self._mix(values, 1 if m.batch_first else 0)
        out_name = f"{base}.out_proj"
        w_out = self._weight(out_name, m.out_proj.weight.shape, q.device)
        return self._masked(out_name, mixed, lambda x: F.linear(x, w_out)), None

    def _swin_attention(self, node, x, qkv_weight, proj_weight, relative_position_bias,
                        window_size, num_heads, shift_size, *rest, **kwargs):
        """torchvision's shifted window attention: values (v rows of qkv), uniform mixing over
        the tokens of a window that the attention mask lets attend to each other (the
        same region after the cyclic shift), masked output projection."""
        names = []
        for arg in node.args[1:3]:
            if not (isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target.endswith(".weight")):
                raise self._unknown(node, "shifted_window_attention with computed weights")
            names.append(arg.target[: -len(".weight")])
        qkv_name, proj_name = names
        b, h, w_, c = x.shape
        ws = list(window_size)
        pad_r, pad_b = (ws[1] - w_ % ws[1]) % ws[1], (ws[0] - h % ws[0]) % ws[0]
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = x.shape[1], x.shape[2]
        shift = list(shift_size)
        if ws[0] >= ph:
            shift[0] = 0
        if ws[1] >= pw:
            shift[1] = 0
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nw = (ph // ws[0]) * (pw // ws[1])
        x = x.view(b, ph // ws[0], ws[0], pw // ws[1], ws[1], c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * nw, ws[0] * ws[1], c)
        w_qkv = self._weight(qkv_name, self.modules[qkv_name].weight.shape, x.device)[2 * c:]
        v = self._masked(qkv_name, x, lambda t: F.linear(t, w_qkv), 2 * c)
        # which tokens of a window see each other: the attention mask's regions
        region = torch.zeros(ph, pw, dtype=v.dtype, device=v.device)
        if sum(shift) > 0:
            count = 0
            for hs in ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None)):
                for wsl in ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None)):
                    region[hs[0]:hs[1], wsl[0]:wsl[1]] = count
                    count += 1
        region = region.view(ph // ws[0], ws[0], pw // ws[1], ws[1]).permute(0, 2, 1, 3)
        region = region.reshape(nw, ws[0] * ws[1])
        attend = (region[:, :, None] == region[:, None, :]).to(v.dtype)   # nw, T, T
        if self.mode == "reference":
            attend = attend / attend.sum(-1, keepdim=True)
        v = v.view(b, nw, ws[0] * ws[1], c)
        mixed = torch.einsum("nij,bnjc->bnic", attend, v).reshape(b * nw, ws[0] * ws[1], c)
        w_proj = self._weight(proj_name, self.modules[proj_name].weight.shape, x.device)
        out = self._masked(proj_name, mixed, lambda t: F.linear(t, w_proj))
        out = out.view(b, ph // ws[0], pw // ws[1], ws[0], ws[1], c).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, ph, pw, c)
        if sum(shift) > 0:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :h, :w_, :].contiguous()


def effective_counts(mask: torch.Tensor, effective: torch.Tensor) -> dict:
    """Per-layer counts from a bool tensor of effective weights."""
    conv = mask.dim() == 4
    nodes_alive = effective.flatten(1).any(1)
    kernels_alive = effective.flatten(2).any(2) if conv else effective
    return {"kept": int(mask.sum()), "effective_params": int(effective.sum()),
            "nodes": mask.shape[0], "effective_nodes": int(nodes_alive.sum()),
            "kernels": kernels_alive.numel(), "effective_kernels": int(kernels_alive.sum())}


def exact_paths(model: nn.Module, mask: Mask, network: PathNetwork | None = None):
    """(log number of input-output paths, {layer: bool effective weights}), exact in float64."""
    network = network or PathNetwork(model, "exact")
    masks = {n: mask[n].to(network.input.device, torch.float64).requires_grad_(True)
             for n in network.names}
    # the network is linear in its input: if the count overflows float64, count on a tiny
    # input (2^-900) and shift the log back; path counts through any weight stay >= 2^-900
    for log2_scale in (0, -900):
        total = network(masks, scale=2.0 ** log2_scale)
        if torch.isfinite(total):
            break
    else:
        raise ValueError("the path count overflows float64 even on a 2^-900 input")
    if total <= 0:
        effective = {n: torch.zeros_like(m, dtype=torch.bool) for n, m in mask.items()}
        return -math.inf, effective
    # The backward pass counts the paths from each unit to the output, also from units no
    # input path reaches; in deep concatenating nets (densenet169) those counts overflow
    # float64, and 0 x inf = NaN then spreads to every weight. Seeding the backward with
    # 2^-(1000 - input scale) keeps them finite while a weight on a path (>= 1 path, times
    # both scales >= 2^-1000) keeps a positive gradient.
    grads, undefined = _path_gradients(
        network, masks, total, torch.full_like(total, 2.0 ** -(1000 + log2_scale)))
    if undefined:
        # Still beyond float64 (dense densenet169 at 32x32: 2^1149 paths): a weighted count whose
        # every weight is positive has the same support, so count again with each masked
        # layer's input divided by its (constant) maximum, which bounds every value.
        network.normalise_exact = True
        try:
            weighted = network(masks)
        finally:
            network.normalise_exact = False
        grads, undefined = _path_gradients(network, masks, weighted, torch.ones_like(weighted))
    if undefined:
        raise ValueError(f"effective weights undefined: path counts exceed float64 even with "
                         f"scaled passes (NaN gradients in {undefined[:3]}"
                         f"{' ...' if len(undefined) > 3 else ''})")
    effective = {n: (g > 0) & mask[n].to(g.device) for n, g in zip(network.names, grads)}
    return float(torch.log(total.detach())) - log2_scale * math.log(2), effective


def _path_gradients(network, masks, total, seed):
    """d total / d mask for every layer (zeros where no path reaches it) and the layers whose
    gradient holds a NaN."""
    with no_tf32():
        # allow_unused: a layer no path reaches (an SE block's convs, an auxiliary classifier,
        # a position-bias MLP) is not in the graph; it has no effective weight
        grads = torch.autograd.grad(total, [masks[n] for n in network.names],
                                    grad_outputs=seed, allow_unused=True)
    grads = [torch.zeros_like(masks[n]) if g is None else g for n, g in zip(network.names, grads)]
    nan = torch.stack([torch.isnan(g).any() for g in grads]).tolist()  # one sync
    return grads, [n for n, bad in zip(network.names, nan) if bad]


@torch.no_grad()
def log_paths_reference(model: nn.Module, mask: Mask) -> float:
    """The reference ("number of effective paths") quantity that DPaI optimises."""
    network = PathNetwork(model, "reference")
    masks = {n: mask[n].to(network.input.device, torch.float32) for n in network.names}
    return float(network(masks))


def topology(model: nn.Module, mask: Mask) -> dict:
    """Effective params, nodes and kernels (total and per layer), collapsed layers (no effective
    node), the reference log-paths quantity and the exact log number of paths."""
    mask.validate(model)
    log_exact, effective = exact_paths(model, mask)
    layers = {n: effective_counts(mask[n], effective[n]) for n in mask}
    totals = {key: sum(layer[key] for layer in layers.values())
              for key in ("effective_params", "effective_nodes", "effective_kernels")}
    return {**totals, "log_paths_reference": log_paths_reference(model, mask),
            "log_paths_exact": log_exact,
            "collapsed_layers": [n for n, layer in layers.items() if layer["effective_nodes"] == 0],
            "layers": layers}
