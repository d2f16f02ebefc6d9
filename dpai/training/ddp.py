"""Process groups for data-parallel training: joining one (torchrun), the same mask on every
rank, and BatchNorm over the global batch on any backend (gloo on the CPU included)."""
import hashlib
import os

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from ..core.mask import Mask


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True on the rank that writes files (rank 0, or the only process)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def setup(backend: str | None = None, device: str = "auto"):
    """Join the process group torchrun describes; returns (rank, world_size, device).

    device auto: cuda:LOCAL_RANK with NCCL when CUDA is there, else the CPU with gloo."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of ['auto', 'cpu', 'cuda']")
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not cuda:
        raise ValueError("device='cuda' but CUDA is not available here")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    return dist.get_rank(), dist.get_world_size(), dev


def mask_digest(mask: Mask) -> str:
    """SHA-256 over the layer names, shapes and bits of a mask."""
    h = hashlib.sha256()
    for name in sorted(mask.keys()):
        m = mask[name].detach().to("cpu", torch.bool).contiguous()
        h.update(f"{name}:{tuple(m.shape)};".encode())
        h.update(m.numpy().tobytes())
    return h.hexdigest()


def share_mask(mask: Mask) -> Mask:
    """Check that every rank holds the same mask (by digest); raise naming the ranks if not."""
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, mask_digest(mask))
    if len(set(digests)) != 1:
        raise ValueError(f"the ranks hold different masks: digests {digests}; compute or load "
                         "the mask once (same file, same seed) for every rank")
    return mask


def broadcast_mask(mask: Mask | None) -> Mask:
    """Rank 0's mask on every rank (the others may pass None)."""
    box = [({n: t.cpu() for n, t in mask.items()}, dict(mask.info)) if mask is not None
           else None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        raise ValueError("broadcast_mask: rank 0 has no mask")
    return Mask(*box[0])


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all ranks, for any backend (gloo on the CPU).

    Mean, then the centred sum of squares, each all-reduced with the differentiable
    torch.distributed.nn all_reduce (its backward all-reduces the gradients, as the global
    statistics need). Running statistics: the global mean and the unbiased global variance."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        c = x.shape[1]
        local = torch.cat([x.sum((0, 2, 3)),
                           torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)])
        total = dist_fn.all_reduce(local)
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean[None, :, None, None]
        var = dist_fn.all_reduce((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (self.momentum if self.momentum is not None
                     else 1.0 / float(self.num_batches_tracked))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (count / (count - 1)) if count > 1 else var.detach()
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d synchronised: torch's SyncBatchNorm on CUDA, SyncBatchNorm2d else."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(child.weight.device,
                                                                child.weight.dtype)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def check_last_batch(n: int, batch_size: int, world: int) -> None:
    """Every rank needs one image of every global batch, the last (smallest) included."""
    last = n % batch_size or batch_size
    if n and last < world:
        raise ValueError(f"train.batch_size={batch_size}: the last batch of the {n} training "
                         f"images has {last} < {world} images, one per rank at least; "
                         "choose a batch size that leaves a larger last batch")
