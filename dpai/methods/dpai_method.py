"""DPaI: differentiable pruning at initialization with the node-path balance principle.

Reference behaviour (docs/faithfulness.md): ERK layer budgets; scores S ~ N(0, 1) from
the seed; mask = per-layer top-k of |S| with a straight-through backward; G = dlogP/dS through
the reference path network; score gradient = -((1-alpha) G + alpha((1-beta) G|dead nodes +
beta G|dead kernels)); one Adam step (constant lr) on all scores per step. The mask never looks
at the weights, so it is the same for any initialisation of the model.

Implementation notes (speed, same numbers): the scores live in one flat tensor so that abs,
sign, the update and Adam are single ops over all layers; the mask is a leaf tensor and
dlogP/dS = dlogP/dM * sign(S) (the STE); the trajectory stays on the device until the end.
"""
import math
import warnings

import torch
from tqdm.auto import tqdm

from ..core import rules
from ..core.budget import erk_budget, uniform_budget
from ..files.checkpoint import Checkpoint
from ..core.mask import Mask
from ..models import prunable_layers
from ..paths.network import PathNetwork, no_tf32
from .registry import options, register
from ..core.select import topk_indices

OPTIMIZERS = ("adam", "sgd")


def compile_network(network, device):
    """The path network compiled (its forward, and its backward through AOTAutograd), with
    CUDA graphs on CUDA: a 3000-step search on ResNet-20 is bound by kernel launches, not by
    arithmetic. The whole step is not compiled: dynamo rejects its in-place mask update on a
    tensor that autograd also reads (index_fill_ then requires_grad_)."""
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    return torch.compile(network.__call__, mode=mode)


class CollapseWarning(UserWarning):
    """DPaI ended with a mask that has no input-output path."""


BUDGETS = {"erk": erk_budget, "uniform": uniform_budget}  # erk: the reference; uniform: ablation


class DPaI:
    """The DPaI optimisation state; `run(steps)` returns the trajectory, `mask()` the result."""

    def __init__(self, model, sparsity, *, seed, alpha=0.99, beta=0.5, lr=0.005,
                 optimizer="adam", budget="erk", compile=False):
        # the registry's rules for these options (the same error as through dpai.prune)
        options("dpai", dict(alpha=alpha, beta=beta, lr=lr, optimizer=optimizer, budget=budget,
                             compile=compile))
        self.alpha, self.beta = alpha, beta
        layers = prunable_layers(model)
        self.names = list(layers)
        self.shapes = [layers[n].weight.shape for n in self.names]
        self.sizes = [s.numel() for s in self.shapes]
        counts = BUDGETS[budget](model, sparsity)
        self.k = [counts[n] for n in self.names]
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(seed)
        # drawn layer by layer in network order on the CPU: same scores on every device
        flat = torch.cat([torch.randn(s, generator=g).flatten() for s in self.shapes])
        self.scores = flat.to(device).requires_grad_(True)
        # the fused kernel does Adam in one pass over the scores (4x faster on VGG-19's 20 M)
        self.optimizer = (torch.optim.Adam([self.scores], lr=lr, fused=True) if optimizer == "adam"
                          else torch.optim.SGD([self.scores], lr=lr))
        self.network = PathNetwork(model, "reference")
        self.offsets = torch.tensor([0] + self.sizes[:-1]).cumsum(0).tolist()
        self._mask, self._kept_index = None, None
        if compile:
            self.network = compile_network(self.network, device)

    def _select(self) -> list[torch.Tensor]:
        """Per layer, the indices of its k largest |S| (the kept weights)."""
        magnitude = self.scores.detach().abs()
        return [topk_indices(part, k) for part, k in zip(magnitude.split(self.sizes), self.k)]

    def _hard_mask(self, kept: list[torch.Tensor]) -> torch.Tensor:
        """The flat 0/1 mask, updated in place: only the old and the new kept entries move."""
        index = torch.cat([i + off for i, off in zip(kept, self.offsets)])
        if self._kept_index is None:
            self._mask = torch.zeros_like(self.scores, requires_grad=False)
        else:
            self._mask.index_fill_(0, self._kept_index, 0.0)
        self._kept_index = index
        return self._mask.index_fill_(0, index, 1.0)

    def step(self) -> torch.Tensor:
        """One update; returns [objective, log_paths, nodes, kernels, params] on the device."""
        kept = self._select()
        mask = self._hard_mask(kept).detach().requires_grad_(True)
        views = {n: m.view(s) for n, m, s in zip(self.names, mask.split(self.sizes), self.shapes)}
        total, log_scale = self.network(views, parts=True)
        log_paths = torch.log(total) + log_scale
        # A mask with no input-output path at all (possible at extreme sparsity) has log P =
        # -inf and no gradient (the reference gets NaNs); the gradient of the path sum itself
        # then points to the pruned weights that would reconnect it. Elsewhere: d log P.
        target = torch.where(total > 0, torch.log(total.clamp_min(1e-30)), total) + log_scale
        with no_tf32():  # the path network's backward without TF32 too (TF32 would make masks depend on the GPU's matmul precision)
            (grad,) = torch.autograd.grad(target, mask)
        # straight-through estimator: dlogP/dS = dlogP/dM * sign(S)
        grad.mul_(self.scores.detach().sign())
        # score gradient = -G * ((1-a) + a(1-b) [node dead] + a b [kernel dead]): one factor per
        # (out, in) kernel, broadcast over its taps in place. A weight is effective when
        # |G| * M > 0, so only the (few) kept entries need testing.
        a, b = self.alpha, self.beta
        nodes, kernels, params = [], [], []
        for g, idx, shape in zip(grad.split(self.sizes), kept, self.shapes):
            out, inp = shape[0], shape[1]
            taps = g.numel() // (out * inp)
            effective = g[idx] != 0
            kernel_alive = torch.zeros(out * inp, device=g.device).index_add_(
                0, idx // taps, effective.float()).view(out, inp) > 0
            node_alive = kernel_alive.any(1)
            nodes.append(node_alive.sum())
            kernels.append(kernel_alive.sum())
            params.append(effective.sum())
            factor = -((1 - a) + a * (1 - b) * (~node_alive)[:, None].float()
                       + a * b * (~kernel_alive).float())
            g.view(out, inp, taps).mul_(factor[:, :, None])
        self.scores.grad = grad
        self.optimizer.step()
        nodes, kernels = torch.stack(nodes).sum().float(), torch.stack(kernels).sum().float()
        objective = (1 - a) * log_paths.detach() + a * ((1 - b) * torch.log(nodes)
                                                        + b * torch.log(kernels))
        return torch.stack([objective, log_paths.detach(), nodes, kernels,
                            torch.stack(params).sum().float()])

    def state(self, rows: list) -> dict:
        """Everything a resumed search needs: scores, optimizer state, trajectory so far."""
        return {"scores": self.scores.detach().cpu(), "optimizer": self.optimizer.state_dict(),
                "rows": torch.stack(rows).cpu() if rows else torch.zeros(0, 5)}

    def restore(self, state: dict) -> list:
        with torch.no_grad():
            self.scores.copy_(state["scores"])
        self.optimizer.load_state_dict(state["optimizer"])
        return list(state["rows"].to(self.scores.device).unbind(0))

    def run(self, steps: int, progress: bool = False, check_every: int = 100,
            checkpoint: Checkpoint | None = None) -> dict:
        """`steps` updates; with `checkpoint`, saved every `checkpoint.every` steps and resumed
        from the last save (bit for bit the same trajectory on the CPU)."""
        rows = []
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:
            rows = self.restore(state)
            print(f"dpai: resuming from checkpoint {checkpoint.path} at step {len(rows)} "
                  f"(of {steps})", flush=True)
        # a bar on a terminal only (disable=None), never in logs; a line per `check_every` steps
        bar = tqdm(range(len(rows), steps), desc="dpai", unit="step", initial=len(rows),
                   total=steps, disable=None if progress else True, leave=False)
        for t in bar:
            rows.append(self.step())
            if (t + 1) % check_every == 0 or t + 1 == steps:
                # one host sync per `check_every` steps, not per step
                last = rows[-1].tolist()
                if math.isnan(last[0]) or not bool(torch.isfinite(self.scores).all()):
                    raise FloatingPointError(
                        f"dpai: the objective is {last[0]} (scores finite: "
                        f"{bool(torch.isfinite(self.scores).all())}) at step {t + 1} of {steps}")
                bar.set_postfix(log_paths=f"{last[1]:.2f}", nodes=int(last[2]))
                if progress:
                    tqdm.write(f"dpai step {t + 1}/{steps}: objective {last[0]:.4f} log-paths "
                               f"{last[1]:.2f} nodes {last[2]:.0f} kernels {last[3]:.0f} "
                               f"effective params {last[4]:.0f}")
            if checkpoint is not None and checkpoint.due(t + 1) and t + 1 < steps:
                checkpoint.save(self.state(rows))  # one host copy per checkpoint, not per step
        table = torch.stack(rows).cpu().T.tolist() if rows else [[]] * 5
        if rows and (not table[2][-1] > 0 or not math.isfinite(table[1][-1])):
            # A result, not an error: at extreme sparsity (or after too few steps) a mask can
            # end without any input-output path, as other methods' masks do; the stages
            # train it (chance accuracy) and the report shows the collapse.
            warnings.warn(f"dpai: effective nodes {table[2][-1]:.0f}, log-paths {table[1][-1]} "
                          f"after {steps} steps: the mask has collapsed (no input-output path)",
                          CollapseWarning, stacklevel=2)
        keys = ("objective", "log_paths", "nodes", "kernels", "params")
        return {"step": list(range(steps)), **dict(zip(keys, table))}

    def mask(self) -> Mask:
        flat = self._hard_mask(self._select()).bool()
        return Mask({n: m.view(s) for n, m, s in zip(self.names, flat.split(self.sizes),
                                                      self.shapes)})


@register("dpai", rules={
    "alpha": rules.real(0, 1), "beta": rules.real(0, 1), "lr": rules.real(0, lo_open=True),
    "steps": rules.integer(0), "optimizer": rules.one_of(*OPTIMIZERS),
    "budget": rules.one_of(*BUDGETS), "compile": rules.boolean()})
def dpai(model, sparsity, *, seed, data=None, alpha=0.99, beta=0.5, lr=0.005, steps=3000,
         optimizer="adam", budget="erk", compile=False, progress=False, checkpoint=None):
    """The paper defaults: alpha 0.99, beta 0.5, Adam lr 0.005 (constant), 3000 steps, ERK
    layer budgets. checkpoint: a dpai.Checkpoint (counted in steps) to save to and resume from;
    compile: compile the path network (CUDA graphs on CUDA; the same numbers, faster steps)."""
    search = DPaI(model, sparsity, seed=seed, alpha=alpha, beta=beta, lr=lr, optimizer=optimizer,
                  budget=budget, compile=compile)
    trajectory = search.run(steps, progress=progress, checkpoint=checkpoint)
    mask = search.mask()
    mask.info["trajectory"] = trajectory
    return mask
