"""`Mask`: prunable layer name -> bool tensor of the weight's shape."""
import json
from pathlib import Path

import torch
from torch import nn

from ..files.atomic import write_json, write_torch
from ..models import prunable_layers, weight_owner


class Mask(dict):
    """A dict of bool tensors keyed by prunable layer name, with `info` about how it was made.

    `info` is a JSON-able dict (method, sparsity, seed, timing, DPaI's trajectory, ...)."""

    def __init__(self, tensors: dict[str, torch.Tensor], info: dict | None = None):
        super().__init__({name: t.detach().to(torch.bool) for name, t in tensors.items()})
        self.info = dict(info or {})

    @classmethod
    def ones(cls, model: nn.Module) -> "Mask":
        return cls({n: torch.ones_like(m.weight, dtype=torch.bool)
                    for n, m in prunable_layers(model).items()})

    @classmethod
    def from_weights(cls, model: nn.Module) -> "Mask":
        """The mask of a model's nonzero prunable weights."""
        return cls({n: m.weight.detach() != 0 for n, m in prunable_layers(model).items()})

    def validate(self, model: nn.Module) -> "Mask":
        layers = prunable_layers(model)
        if set(layers) != set(self):
            missing, extra = sorted(set(layers) - set(self)), sorted(set(self) - set(layers))
            raise ValueError(f"mask layers do not match the model: missing {missing}, extra {extra}")
        for name, m in layers.items():
            if tuple(self[name].shape) != tuple(m.weight.shape):
                raise ValueError(f"mask[{name!r}] has shape {tuple(self[name].shape)}, "
                                 f"the weight has {tuple(m.weight.shape)}")
        return self

    # -- counts -------------------------------------------------------------------------
    def kept_per_layer(self) -> dict[str, int]:
        return {n: int(t.sum()) for n, t in self.items()}

    def total_per_layer(self) -> dict[str, int]:
        return {n: t.numel() for n, t in self.items()}

    def density_per_layer(self) -> dict[str, float]:
        return {n: int(t.sum()) / t.numel() for n, t in self.items()}

    @property
    def num_kept(self) -> int:
        return sum(self.kept_per_layer().values())

    @property
    def num_total(self) -> int:
        return sum(t.numel() for t in self.values())

    @property
    def density(self) -> float:
        return self.num_kept / self.num_total

    @property
    def sparsity(self) -> float:
        return 1 - self.density

    # -- use ----------------------------------------------------------------------------
    def to(self, device) -> "Mask":
        return Mask({n: t.to(device) for n, t in self.items()}, self.info)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of `model` in place."""
        self.validate(model)
        for name, m in prunable_layers(model).items():
            m.weight.mul_(self[name].to(m.weight.device, m.weight.dtype))
        return model

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Attach the mask with torch.nn.utils.prune.custom_from_mask (weight_orig + weight_mask;
        for an attention input projection in_proj_weight_orig + in_proj_weight_mask)."""
        from torch.nn.utils import prune
        self.validate(model)
        for name, m in prunable_layers(model).items():
            module, attr = weight_owner(m)
            prune.custom_from_mask(module, attr, self[name].to(m.weight.device))
        return model

    def shuffle(self, seed: int) -> "Mask":
        """Layer-wise shuffle (Frankle et al. 2021): same count per layer, random positions."""
        g = torch.Generator().manual_seed(seed)
        out = {}
        for name, t in self.items():
            flat = t.flatten().cpu()
            out[name] = flat[torch.randperm(flat.numel(), generator=g)].view_as(t).to(t.device)
        return Mask(out, {**self.info, "transform": "shuffle", "shuffle_seed": seed})

    # -- files --------------------------------------------------------------------------
    def report(self) -> dict:
        """The JSON sparsity report saved next to the mask."""
        kept, total = self.kept_per_layer(), self.total_per_layer()
        return {"density": self.density, "sparsity": self.sparsity, "kept": self.num_kept,
                "total": self.num_total,
                "layers": {n: {"kept": kept[n], "total": total[n], "density": kept[n] / total[n]}
                           for n in self},
                "info": self.info}

    def save(self, path, **extra) -> Path:
        """Write `path` (torch file of bool tensors + info) and `path` with suffix .json (the
        sparsity report plus any `extra` JSON-able entries, e.g. topology=dpai.topology(...))."""
        path = Path(path)
        # each tensor in its own compact storage: torch.save writes a view's whole storage,
        # so the bytes would depend on how a mask was computed (views of one concatenated
        # tensor or not), not only on its entries
        cpu = {n: compact(t.cpu()) for n, t in self.items()}
        write_torch(path, {"masks": cpu, "info": self.info})
        write_json(path.with_suffix(".json"), {**self.report(), **extra})
        return path

    @classmethod
    def load(cls, path, map_location="cpu") -> "Mask":
        blob = torch.load(path, map_location=map_location, weights_only=True)
        return cls(blob["masks"], blob.get("info", {}))


def compact(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when it owns exactly its storage, else a contiguous copy."""
    if t.is_contiguous() and t.storage_offset() == 0 \
            and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.contiguous().clone()


def report_path(path) -> Path:
    return Path(path).with_suffix(".json")


def load_report(path) -> dict:
    return json.loads(report_path(path).read_text())
