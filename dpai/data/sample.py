"""The sample that data-driven pruners (SNIP, GraSP, ...) score the network on."""
import torch

from .tensors import check_batch_size


class ScoringSample(list):
    """A list of (inputs, targets) batches; `.info` says how it was drawn and `.indices` are
    the train-split rows it holds, in batch order."""

    def __init__(self, batches, info: dict, indices: torch.Tensor):
        super().__init__(batches)
        self.info = info
        self.indices = indices


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")
    return value


def scoring_batches(data, *, num_classes: int, per_class: int = 10, seed: int,
                    balanced: bool = True, batch_size: int | None = None,
                    device=None) -> ScoringSample:
    """`per_class * num_classes` training images, normalised and not augmented.

    balanced=True takes exactly `per_class` images of every class (as GraSP's reference does);
    balanced=False takes the same number uniformly at random from the whole train split.
    The sample is then shuffled (so a batch mixes classes) and cut into batches of
    `batch_size` (None: one batch). Same data and seed -> same images in the same order.
    """
    _positive_int("num_classes", num_classes)
    _positive_int("per_class", per_class)
    if num_classes != data.num_classes:
        raise ValueError(f"num_classes={num_classes} but the {data.name} data has "
                         f"{data.num_classes} classes")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int")
    if batch_size is not None:
        check_batch_size(batch_size)
    labels = data.labels("train")
    total = per_class * num_classes
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    if balanced:
        counts = torch.bincount(labels, minlength=num_classes)
        short = (counts < per_class).nonzero().flatten()
        if len(short):
            c = int(short[0])
            raise ValueError(f"per_class={per_class} but class {c} has only {int(counts[c])} "
                             "training images")
        # group a random order by class (stable), then keep the first per_class of each
        grouped, pos = torch.sort(labels[order], stable=True)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(labels)) - first[grouped]
        chosen = order[pos[rank < per_class]]
        chosen = chosen[torch.randperm(total, generator=g)]
    else:
        if total > len(labels):
            raise ValueError(f"per_class * num_classes = {total} exceeds the {len(labels)} "
                             "training images")
        chosen = order[:total]
    step = batch_size or total
    batches = []
    for i in range(0, total, step):
        idx = chosen[i:i + step]
        x = data.images(idx, "train", device)
        batches.append((x, labels[idx].to(x.device)))
    info = {"split": "train", "balanced": balanced, "per_class": per_class,
            "num_classes": num_classes, "num_images": total, "seed": seed,
            "batch_size": step, "augment": False}
    return ScoringSample(batches, info, chosen)
