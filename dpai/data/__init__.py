"""Datasets: prepare (download, verify, write tensors atomically), load, batch, score-sample.

    from dpai.data import prepare, load, scoring_batches
    folder = prepare("digits", "data")            # data/digits/{train.pt,test.pt,meta.json}
    data = load("data", "digits")                 # Data: uint8 tensors + meta
    g = torch.Generator().manual_seed(0)
    for x, y in data.train_batches(128, generator=g, device="cuda"): ...
    sample = scoring_batches(data, num_classes=10, per_class=10, seed=0)  # for SNIP, GraSP...

Datasets: digits (scikit-learn, offline), cifar10, cifar100, tiny-imagenet, imagenet (from the
user's own ILSVRC2012 archives, streamed through a DataLoader).
"""
from .fetch import ChecksumError
from .prepare import channel_stats, load, prepare
from .readers import reorganize_tiny_imagenet_val
from .sample import ScoringSample, scoring_batches
from .specs import DATASETS, DatasetSpec
from .tensors import Data

__all__ = ["DATASETS", "DatasetSpec", "Data", "ImageNetData", "ChecksumError", "prepare",
           "load", "scoring_batches", "ScoringSample", "channel_stats",
           "reorganize_tiny_imagenet_val"]


def __getattr__(name):
    # ImageNetData needs torchvision (seconds to import): loaded on first use only
    if name == "ImageNetData":
        from .imagenet import ImageNetData
        return ImageNetData
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
