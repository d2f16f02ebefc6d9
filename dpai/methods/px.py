"""PX, Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024): data-driven, iterative.

Each round builds R from two auxiliary copies of the masked network on the scoring batches x:
the gate network (every ReLU replaced by the 0/1 gates the real network opens on x, unit
weights, fed x^2; no gradient) gives z1, the path-kernel network (weights squared, ReLUs
removed, fed all-ones images) gives z2, R = sum(z1 * z2) over images and classes, and the score
of a weight W is |dR/d(W^2)| * W^2. The global top-d_t of the still-alive weights is kept,
d_t = d^(t/T) over `rounds` rounds; pruned weights are held at 0 and never return.

`version` picks the reference code's behaviour (github.com/iurada/px-ntk-pruning,
lib/pruners.py, class PX; docs/px.md lists every difference):
  fixed   (default) ed6c40e (the repository's HEAD) with the path-kernel network's BatchNorm in
          eval mode. HEAD runs it in train mode on identical all-ones images, which makes every
          feature map zero-mean per channel, z2 the classifier bias and all gradients 0 up to
          rounding: HEAD's scores are noise. Norm layers and the classifier (the last
          nn.Linear) keep their values in both auxiliary networks (HEAD skips names holding
          "bn" or "fc"; by module type here, so a BatchNorm not named "bn" is skipped too).
  head    ed6c40e as it runs: path-kernel BatchNorm in train mode, HEAD's name rule.
  release 82ce2bf (the CVPR 2024 release) as it runs: every network in train mode, z1 the real
          network's logits on x (its unit-weight reset writes to a copy), the path-kernel
          network fed x, squared by 82ce2bf's name rule, and the score
          |dR/dP * P * W * W^2| with P = W^2.
Activations: every nn.ReLU module of the working copies is gated (gate network) or removed
(path-kernel network); other activations (GELU, SiLU, LeakyReLU, ReLU6, sigmoid gates, and
any activation called as a function inside forward()) stay as they are in all three networks,
as the reference leaves everything but F.relu / F.leaky_relu (docs/px.md).
"""
import math

import torch
from torch import nn

from ..core import rules
from ..core.device import model_device
from ..core.mask import Mask
from ..core.select import global_topk
from ..models import input_shape, prunable_layers
from .registry import register
from .scoring import (batches_on, check_rounds, data_info, exponential_counts, last,
                      working_copy)

VERSIONS = ("fixed", "head", "release")
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class _Gates:
    """The ReLU gates of one batch, in call order (a ReLU module may be called several times)."""

    def __init__(self):
        self.maps, self.pos = [], 0


class _Relu(nn.Module):
    """Stands in for an nn.ReLU of a working copy: "record" applies it and keeps its gate
    (input > 0), "apply" multiplies by the recorded gates in call order, "linear" is the
    identity."""

    def __init__(self, mode: str, gates: _Gates):
        super().__init__()
        self.mode, self.gates = mode, gates

    def forward(self, x):
        if self.mode == "record":
            self.gates.maps.append(x > 0)
            return torch.relu(x)
        if self.mode == "apply":
            gate = self.gates.maps[self.gates.pos]
            self.gates.pos += 1
            return x * gate
        return x


def _replace_relus(work: nn.Module, mode: str, gates: _Gates) -> None:
    """Swap every nn.ReLU module of `work` (a copy) for a _Relu. Other activations stay as they
    are in all three networks, as in the reference (it swaps F.relu and F.leaky_relu only)."""
    for parent in list(work.modules()):
        for child, m in parent.named_children():
            if type(m) is nn.ReLU:
                setattr(parent, child, _Relu(mode, gates))


def _classifier(model: nn.Module) -> str | None:
    """Name of the last nn.Linear in module order (the classifier), if any."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _kept_tensors(model: nn.Module, version: str, skip: tuple[str, ...]) -> list[torch.Tensor]:
    """Floating parameters and buffers the auxiliary networks transform (unit / squared),
    prunable weights included: the reference's name rule (skip names holding `skip`) for
    head/release, module types for fixed (norm layers and the classifier left alone)."""
    if version != "fixed":
        return [t for n, t in model.state_dict(keep_vars=True).items()
                if t.is_floating_point() and not any(s in n for s in skip)]
    head = _classifier(model)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, NORMS) or name == head:
            continue
        out += [t for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]
                if t.is_floating_point()]
    return out


def _px_rounds(model, counts, batches, version, generator):
    """Yield the global mask after each round."""
    train_bn = version != "fixed"  # the path-kernel network's BatchNorm mode
    shape = input_shape(model)
    gates = _Gates()
    # the real network, recording gates (eval: HEAD copies the model after main.py's eval())
    real = working_copy(model, train=version == "release")
    _replace_relus(real, "record", gates)
    pk = working_copy(model, train=train_bn)
    _replace_relus(pk, "linear", gates)
    with torch.no_grad():
        for t in _kept_tensors(pk, version, ("bn",) if version == "release" else ("bn", "fc")):
            t.pow_(2)
    gate = None
    if version != "release":
        gate = working_copy(model, train=True)
        _replace_relus(gate, "apply", gates)
        with torch.no_grad():
            for t in _kept_tensors(gate, version, ("bn", "fc")):
                t.fill_(1.0)
    nets = [net for net in (real, pk, gate) if net is not None]
    layers = [prunable_layers(net) for net in nets]
    names = list(layers[0])
    w0 = {n: layers[0][n].weight.detach().clone() for n in names}  # the caller's weights
    w0_sq = {n: w.pow(2) for n, w in w0.items()}
    pk_w = prunable_layers(pk)
    device = model_device(model)
    # all-ones images: identical, so one (two for train-mode BatchNorm, which needs more than
    # one value per channel) gives the same z2 per image, and R = sum_c (sum_n z1[n, c]) z2[c]
    ones = torch.ones((2 if train_bn else 1, *shape), device=device)
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in w0.items()}
    for k in counts:
        with torch.no_grad():
            for lay in layers:
                for n in names:
                    lay[n].weight.masked_fill_(~mask[n], 0)
        params = [pk_w[n].weight for n in names]
        if version == "release":
            grads = None
            for x, _ in batches:
                gates.maps.clear()
                with torch.no_grad():
                    z1 = real(x)
                r = (z1 * pk(x)).sum()
                g = torch.autograd.grad(r, params)
                grads = list(g) if grads is None else [a + b for a, b in zip(grads, g)]
            gates.maps.clear()
            scores = {n: (g.mul_(p.detach()).mul_(layers[0][n].weight.detach()).mul_(w0_sq[n])
                          .abs_()) for n, g, p in zip(names, grads, params)}
        else:
            z1 = 0
            with torch.no_grad():
                for x, _ in batches:
                    gates.maps.clear()
                    gates.pos = 0
                    real(x)
                    z1 = z1 + gate(x.pow(2)).sum(0)
            gates.maps.clear()
            z2 = pk(ones)[0]
            grads = torch.autograd.grad((z1 * z2).sum(), params)
            scores = {n: g.abs_().mul_(w0_sq[n]) for n, g in zip(names, grads)}
        for n, s in scores.items():
            s.masked_fill_(~mask[n], -math.inf)  # a pruned weight never comes back
        mask = global_topk(scores, k, generator)
        yield mask


def px_masks(model, sparsity, *, seed, data, rounds: int = 100, version: str = "fixed"):
    """Yield the mask after each of the `rounds` rounds."""
    counts = exponential_counts(model, sparsity, rounds)
    batches = batches_on(data, model_device(model))
    return _px_rounds(model, counts, batches, version, torch.Generator().manual_seed(seed))


@register("px", needs_data=True, rules={"rounds": rules.integer(1),
                                         "version": rules.one_of(*VERSIONS)})
def px(model, sparsity, *, seed, data=None, rounds: int = 100, version: str = "fixed"):
    # 100 rounds, exponential schedule: the reference's launch_scripts/cifar10.sh
    check_rounds(rounds)
    batches = batches_on(data, model_device(model))
    mask = last(px_masks(model, sparsity, seed=seed, data=batches, rounds=rounds,
                         version=version))
    return Mask(mask, {"rounds": rounds, "schedule": "exponential", "version": version,
                       **data_info(batches)})
