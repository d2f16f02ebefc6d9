"""NTK-SAP (Wang, Li and Sun, ICLR 2023): data-free, iterative, aligns the pruned network's
neural tangent kernel with the dense one's. Behaviour follows the authors' code,
github.com/YiteWang/NTK-SAP at e23682b (Pruners/pruners.py `NTKSAP`, prune.py), see
docs/ntk-sap.md.

Each of `rounds` rounds (exponential schedule, one global threshold over every conv/linear
weight) sums over `draws` x (noise batches) draws, each of which
- re-draws every prunable weight theta from the model's init (the reference calls the model's
  `_initialize_weights`: Kaiming normal, fan-in, ReLU gain),
- draws an input batch x ~ N(0, 1) and a perturbation n ~ N(0, I),
- makes the BatchNorm running statistics this batch's: reset, momentum 1, one no-grad forward
  of the masked net with BN in train mode (scoring_mode="eval" skips it on the very first
  draw, as the reference does when --prune-train-mode is off),
- with BN in eval mode (both copies normalise with those same statistics) takes
  J = sum_i ||f(x_i; m*theta) - f(x_i; m*(theta + eps*n))||^2 and accumulates dJ/dm.
The score is |dJ/dm| of the alive weights; pruned ones never return.

dJ/dm is computed as dJ/dW0 * theta + dJ/dW1 * (theta + eps*n) with W0 = m*theta and
W1 = m*(theta + eps*n), the weights of two working copies whose BN buffers are shared (one
autograd call for both), so any model works without mask parametrisation. Every random number
(re-draws, inputs, perturbations, tie breaks) comes from one seeded CPU generator and is
moved to the model's device: CPU and GPU make the same draws. They are drawn in the
reference's order (weights in module order, input, perturbations), so on the CPU a seed gives
the reference's own draws for `torch.manual_seed(seed)`.
"""
import math

import torch
from torch import nn

from ..core import rules
from ..core.device import model_device
from ..core.mask import Mask
from ..core.select import global_topk
from ..models import INIT, input_shape
from .registry import register
from .scoring import SCORING_MODE, exponential_counts, last, weights, working_copy

REDRAW = ("model", "kaiming_normal", "kaiming_uniform")


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _redraw_kind(model: nn.Module, init: str) -> str:
    """The paper models' own init (dpai.models.INIT); the reference's Kaiming normal for the
    others (torchvision builders, hand-made models)."""
    if init != "model":
        return init
    return INIT.get(getattr(model, "name", None), "kaiming_normal")


def _draw(shape: torch.Size, kind: str, g: torch.Generator) -> torch.Tensor:
    """A re-draw on the CPU with the models' init (dpai.models.init_weights: Kaiming, fan-in,
    ReLU gain), from the search's generator."""
    fill = {"kaiming_normal": nn.init.kaiming_normal_, "kaiming_uniform": nn.init.kaiming_uniform_}
    return fill[kind](torch.empty(shape), mode="fan_in", nonlinearity="relu", generator=g)


def noise_batches(images: int, batch_size: int) -> list[int]:
    """Batch sizes of the reference's prune loader over `images` samples (last one partial)."""
    full, rest = divmod(images, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def _num_classes(model: nn.Module, shape) -> int:
    n = getattr(model, "num_classes", None)
    if n is None:  # a hand-made model: the width of its output, on a copy in eval mode
        with torch.no_grad():
            probe = working_copy(model, train=False)
            n = probe(torch.zeros(2, *shape, device=model_device(model))).shape[-1]
    return int(n)


class _Scorer:
    """The two working copies (unperturbed, perturbed) and the draws of one mask search."""

    def __init__(self, model, *, seed, epsilon, scoring_mode, init, sizes):
        self.plain = working_copy(model, train=False)
        self.perturbed = working_copy(model, train=False)
        self.device = model_device(model)
        self.dtype = next(iter(weights(self.plain).values())).dtype
        self.kind = _redraw_kind(model, init)
        self.epsilon, self.sizes = epsilon, sizes
        self.g = torch.Generator().manual_seed(seed)
        self.shape = input_shape(model)
        # "eval": the reference's first draw runs in the mode prune_loop set (eval without
        # --prune-train-mode), so its stats stay reset; it sets train mode after every draw
        self.skip_stats_once = scoring_mode == "eval"
        self.norms = _norms(self.plain)
        for a, b in zip(self.norms, _norms(self.perturbed)):
            # the perturbed copy normalises with the unperturbed copy's statistics (shared)
            a.momentum = b.momentum = 1.0
            b.running_mean, b.running_var = a.running_mean, a.running_var
            b.num_batches_tracked = a.num_batches_tracked
        self.w0, self.w1 = weights(self.plain), weights(self.perturbed)

    def _to(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, self.dtype)

    def _batch_statistics(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            for m in self.norms:
                m.reset_running_stats()
            if self.skip_stats_once:
                self.skip_stats_once = False
                return
            # only BN in train mode: dropout and stochastic depth stay off (working_copy)
            for m in self.norms:
                m.train()
            self.plain(x)
            for m in self.norms:
                m.eval()

    def draw(self, mask: dict, total: dict, batch_size: int) -> None:
        """One draw: add dJ/dm (alive weights; pruned ones are ignored later) into `total`."""
        theta = {n: self._to(_draw(w.shape, self.kind, self.g)) for n, w in self.w0.items()}
        x = self._to(torch.randn((batch_size, *self.shape), generator=self.g))
        moved = {n: self._to(torch.randn(w.shape, generator=self.g)).mul_(self.epsilon)
                 .add_(theta[n]) for n, w in self.w0.items()}  # theta + eps * n
        with torch.no_grad():
            for n in self.w0:
                torch.mul(theta[n], mask[n], out=self.w0[n])
                torch.mul(moved[n], mask[n], out=self.w1[n])
        self._batch_statistics(x)
        j = (self.plain(x) - self.perturbed(x)).pow(2).sum()
        names = list(self.w0)
        grads = torch.autograd.grad(j, [self.w0[n] for n in names] + [self.w1[n] for n in names])
        for i, n in enumerate(names):
            total[n].addcmul_(grads[i], theta[n]).addcmul_(grads[len(names) + i], moved[n])

    def scores(self, mask: dict, draws: int) -> dict:
        total = {n: torch.zeros_like(w) for n, w in self.w0.items()}
        for _ in range(draws):
            for size in self.sizes:
                self.draw(mask, total, size)
        for n, s in total.items():
            s.abs_().masked_fill_(~mask[n], -math.inf)
        return total


def ntk_sap_masks(model, sparsity, *, seed, rounds=20, draws=5, epsilon=0.01, noise_per_class=10,
                  noise_batch_size=256, scoring_mode="train", init="model"):
    """Yield the mask after each round (kept d^(t/T) of the prunable weights, t = 1..T)."""
    shape = input_shape(model)
    counts = exponential_counts(model, sparsity, rounds)
    sizes = noise_batches(noise_per_class * _num_classes(model, shape), noise_batch_size)
    if 1 in sizes and _norms(model):
        raise ValueError(f"noise_batch_size={noise_batch_size!r} leaves a batch of one image, "
                         "whose BatchNorm statistics are undefined: choose another size")
    scorer = _Scorer(model, seed=seed, epsilon=epsilon, scoring_mode=scoring_mode, init=init,
                     sizes=sizes)
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in scorer.w0.items()}
    for k in counts:
        mask = global_topk(scorer.scores(mask, draws), k, scorer.g)
        yield mask


@register("ntk_sap", rules={
    "rounds": rules.integer(1), "draws": rules.integer(1),
    "epsilon": rules.real(0, lo_open=True), "noise_per_class": rules.integer(1),
    "noise_batch_size": rules.integer(1), "scoring_mode": SCORING_MODE,
    "init": rules.one_of(*REDRAW)})
def ntk_sap(model, sparsity, *, seed, data=None, rounds: int = 20, draws: int = 5,
            epsilon: float = 0.01, noise_per_class: int = 10, noise_batch_size: int = 256,
            scoring_mode: str = "train", init: str = "model"):
    """Defaults: the CIFAR-10 run of the reference's scripts/run.sh (T=20, R=5, eps=0.01,
    --prune-train-mode True) with its loader defaults (10 images per class, batches of 256)."""
    mask = last(ntk_sap_masks(model, sparsity, seed=seed, rounds=rounds, draws=draws,
                              epsilon=epsilon, noise_per_class=noise_per_class,
                              noise_batch_size=noise_batch_size, scoring_mode=scoring_mode,
                              init=init))
    return Mask(mask, {"rounds": rounds, "draws": draws, "schedule": "exponential",
                       "redraw": _redraw_kind(model, init)})
