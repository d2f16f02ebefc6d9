"""ImageNet-1k, streamed from disk with torchvision's ImageNet (it parses the official
archives the user already has) through a DataLoader; same batch interface as `Data`.

Train: RandomResizedCrop(224) + horizontal flip; test: Resize(256) + CenterCrop(224).
Images travel as uint8 and are normalised on the device with the standard ImageNet mean/std.
"""
import json
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageNet
from torchvision.datasets.imagenet import ARCHIVE_META, META_FILE

from ..files.atomic import write_json
from .tensors import check_batch_size, check_generator

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # torchvision's, not recomputed
HOW_TO = ("download ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
          "ILSVRC2012_devkit_t12.tar.gz from https://image-net.org/download-images.php "
          "(registration needed) and put all three in {folder}/ (or pass url=<folder with them>)")


def check_sources(folder: Path) -> None:
    """One error naming every missing archive, unless torchvision already extracted it."""
    have = {"devkit": (folder / META_FILE).is_file(), "train": (folder / "train").is_dir(),
            "val": (folder / "val").is_dir()}
    missing = [ARCHIVE_META[k][0] for k, done in have.items()
               if not done and not (folder / ARCHIVE_META[k][0]).is_file()]
    if missing:
        raise FileNotFoundError(f"imagenet: {', '.join(missing)} not found in {folder}: "
                                + HOW_TO.format(folder=folder))


def prepare_imagenet(out: Path, source: Path, force: bool) -> Path:
    """Let torchvision extract the archives in `source` (it checks their md5 first), then
    write out/meta.json last, atomically: its presence marks a finished preparation."""
    check_sources(source)
    meta_path = out / "meta.json"
    if not force and meta_path.is_file() and json.loads(meta_path.read_text()).get("source") \
            == str(source):
        return out
    train, val = ImageNet(str(source), "train"), ImageNet(str(source), "val")
    meta = {"dataset": "imagenet", "num_classes": len(train.wnids), "in_channels": 3,
            "image_size": 224, "mean": MEAN, "std": STD,
            "stats": "standard torchvision ImageNet mean/std (not recomputed)",
            "n_train": len(train), "n_test": len(val), "crop_padding": 0, "flip": True,
            "source": str(source),
            "checksums": {name: {"md5": md5} for name, md5 in ARCHIVE_META.values()},
            "md5_verified": "by torchvision, when it extracts each archive",
            "split": "official train / val (as test)", "split_seed": None,
            "classes": list(train.wnids), "format": 1}
    write_json(meta_path, meta)
    return out


class _Transformed(Dataset):
    """Apply a transform on top of a dataset that returns (PIL image, label). With a seed, the
    transform's random numbers for item i come from torch seeded with (seed, i), so the
    augmentation does not depend on which worker (or how many) loads the item."""

    def __init__(self, base, transform, seed: int | None = None):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        if self.seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + i) % 2 ** 63)
            return self.transform(image), label


class ImageNetData:
    """ImageNet batches from disk; `num_workers` DataLoader processes decode the JPEGs."""
    test_transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])
    train_transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                                 T.PILToTensor()])

    def __init__(self, meta: dict, num_workers: int | None = None):
        self.meta = dict(meta)
        self.source = Path(meta["source"])
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self._sets, self._stats = {}, {}

    @classmethod
    def load(cls, folder) -> "ImageNetData":
        return cls(json.loads((Path(folder) / "meta.json").read_text()))

    name = property(lambda self: "imagenet")
    num_classes = property(lambda self: int(self.meta["num_classes"]))
    in_channels = property(lambda self: 3)
    image_size = property(lambda self: 224)
    input_shape = property(lambda self: (3, 224, 224))
    n_train = property(lambda self: int(self.meta["n_train"]))
    n_test = property(lambda self: int(self.meta["n_test"]))

    def _set(self, split: str):
        """torchvision's ImageNet for "train" or "val", listed once (1.28M files)."""
        if split not in self._sets:
            self._sets[split] = ImageNet(str(self.source), split)
        return self._sets[split]

    def num_batches(self, batch_size: int, split: str = "train") -> int:
        n = self.n_train if split == "train" else self.n_test
        return -(-n // check_batch_size(batch_size))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        key = str(x.device)
        if key not in self._stats:  # copied to the device once, not once per batch
            self._stats[key] = [torch.tensor(v, device=x.device)[:, None, None]
                                for v in (MEAN, STD)]
        mean, std = self._stats[key]
        return (x.float().div_(255) - mean).div_(std)

    def _batches(self, split, transform, batch_size, device, seed=None):
        device = torch.device(device or "cpu")
        shuffle = torch.Generator().manual_seed(seed) if seed is not None else None
        loader = DataLoader(_Transformed(self._set(split), transform, seed),
                            batch_size=batch_size, shuffle=seed is not None, generator=shuffle,
                            num_workers=self.num_workers, pin_memory=device.type == "cuda")
        for x, y in loader:
            yield self.normalize(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)

    def train_batches(self, batch_size: int, *, generator: torch.Generator, device=None,
                      augment: bool = True):
        """One shuffled epoch; order and augmentation come from one seed drawn from
        `generator`, so a run repeats whatever num_workers is."""
        check_batch_size(batch_size)
        check_generator(generator)
        seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        return self._batches("train", self.train_transform if augment else self.test_transform,
                             batch_size, device, seed)

    def test_batches(self, batch_size: int, device=None):
        check_batch_size(batch_size)
        return self._batches("val", self.test_transform, batch_size, device)

    def labels(self, split: str = "train") -> torch.Tensor:
        return torch.tensor(self._set("train" if split == "train" else "val").targets)

    def images(self, indices: torch.Tensor, split: str = "train", device=None) -> torch.Tensor:
        base = self._set("train" if split == "train" else "val")
        x = torch.stack([self.test_transform(base[i][0]) for i in indices.tolist()])
        return self.normalize(x.to(device or "cpu"))
