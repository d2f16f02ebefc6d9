"""In-memory datasets as uint8 tensors, batched airbench-style (no DataLoader workers).

The images stay uint8 on the device they are used on; each batch is gathered by index,
augmented with batched tensor ops (random crop after zero padding, horizontal flip) and
normalised per channel. Every random number comes from a seeded CPU `torch.Generator` and is
moved to the device once per epoch, so a run is deterministic and CPU and GPU see the same
batches. This is the "device" data path: on CUDA the whole set lives on the GPU.

The "loader" path (`Data.loader_batches`, or `Data.batches(..., path="loader")`) is the usual
one: a torch DataLoader over the same uint8 tensors on the host, torchvision's per-image
RandomCrop(padding) and RandomHorizontalFlip, pinned batches copied to the device and
normalised there. Both draw the same augmentation distribution (tests/test_fast_data.py);
they do not draw the same numbers.
"""
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

SPLITS = ("train", "test")
# train.data_path: auto (= device) | device (batched tensor ops where the tensors are) | loader
DATA_PATHS = ("auto", "device", "loader")


def check_data_path(path) -> str:
    if path not in DATA_PATHS:
        raise ValueError(f"data_path={path!r} is not one of {list(DATA_PATHS)}")
    return "device" if path == "auto" else path


def check_shard(shard):
    """None or (rank, world_size) with 0 <= rank < world_size."""
    if shard is None:
        return None
    ok = (isinstance(shard, (tuple, list)) and len(shard) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
          and 0 <= shard[0] < shard[1])
    if not ok:
        raise ValueError(f"shard={shard!r} must be (rank, world_size) with 0 <= rank < world_size")
    return tuple(shard)


class _PerImage(torch.utils.data.Dataset):
    """uint8 images with a per-image torchvision transform (the DataLoader path)."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        xi = self.x[i]
        return (self.transform(xi) if self.transform is not None else xi), self.y[i]


def per_image_transform(image_size: int, crop_padding: int, flip: bool):
    """torchvision's RandomCrop(size, padding) (zero fill) then RandomHorizontalFlip, or None."""
    from torchvision import transforms
    ops = []
    if crop_padding:
        ops.append(transforms.RandomCrop(image_size, padding=crop_padding))
    if flip:
        ops.append(transforms.RandomHorizontalFlip())
    return transforms.Compose(ops) if ops else None


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    return batch_size


def check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator={generator!r} must be a seeded CPU torch.Generator")
    return generator


def random_crop(x: torch.Tensor, shifts: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop each image of `x` (B, C, H, W) at (dy, dx) = shifts[b] from its zero-padded copy."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)  # zeros = black, as torchvision's RandomCrop(padding=)
    dev = x.device
    rows = (shifts[:, 0:1] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (shifts[:, 1:2] + torch.arange(w, device=dev))[:, None, None, :]
    return padded[torch.arange(b, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None], rows, cols]


def random_flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    return torch.where(flips[:, None, None, None], x.flip(3), x)


class Data:
    """A prepared dataset in memory: `train_x`/`test_x` uint8 (N, C, H, W), `*_y` int64.

    `meta` is the prepared meta.json (mean, std, crop_padding, flip, num_classes...).
    `crop_padding` and `flip` are attributes so an experiment can switch augmentation off.
    """

    def __init__(self, train_x, train_y, test_x, test_y, meta: dict):
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or y.dtype != torch.int64 or len(x) != len(y):
                raise ValueError(f"{split}: images must be uint8 (N, C, H, W) and labels int64 "
                                 f"(N,), got {x.dtype} {tuple(x.shape)} and {y.dtype} "
                                 f"{tuple(y.shape)}")
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.meta = dict(meta)
        self.crop_padding = int(meta.get("crop_padding", 0))
        self.flip = bool(meta.get("flip", False))
        self._copies = {}  # device -> its copy of the tensors, and mean/std

    @classmethod
    def load(cls, folder, device="cpu") -> "Data":
        """Read a folder written by `prepare` (meta.json, train.pt, test.pt)."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        s = {split: torch.load(folder / f"{split}.pt", map_location=device, weights_only=True)
             for split in SPLITS}
        return cls(s["train"]["x"], s["train"]["y"], s["test"]["x"], s["test"]["y"], meta)

    # what a model needs to know
    name = property(lambda self: self.meta["dataset"])
    num_classes = property(lambda self: int(self.meta["num_classes"]))
    in_channels = property(lambda self: int(self.train_x.shape[1]))
    image_size = property(lambda self: int(self.train_x.shape[2]))
    input_shape = property(lambda self: tuple(self.train_x.shape[1:]))
    n_train = property(lambda self: len(self.train_y))
    n_test = property(lambda self: len(self.test_y))

    def num_batches(self, batch_size: int, split: str = "train") -> int:
        """Batches per pass, the last partial one included."""
        n = self.n_train if split == "train" else self.n_test
        return math.ceil(n / check_batch_size(batch_size))

    def _tensors(self, device):
        """The four tensors on `device`, copied there once (uint8 is 4x smaller than float)."""
        device = torch.device(device) if device is not None else self.train_x.device
        if device == self.train_x.device:
            return self.train_x, self.train_y, self.test_x, self.test_y
        key = str(device)
        if key not in self._copies:
            self._copies[key] = tuple(t.to(device) for t in (self.train_x, self.train_y,
                                                              self.test_x, self.test_y))
        return self._copies[key]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32, per channel (x / 255 - mean) / std."""
        key = ("stats", str(x.device))
        if key not in self._copies:  # copied to the device once, not once per batch
            self._copies[key] = tuple(torch.tensor(self.meta[k], dtype=torch.float32,
                                                   device=x.device)[:, None, None]
                                      for k in ("mean", "std"))
        mean, std = self._copies[key]
        return (x.float().div_(255) - mean).div_(std)

    def batches(self, batch_size: int, *, generator: torch.Generator, device=None,
                augment: bool = True, path: str = "auto", num_workers: int = 0):
        """One training epoch on the chosen data path (`DATA_PATHS`): "auto" and "device" are
        `train_batches` (on CUDA: GPU-resident), "loader" is `loader_batches`."""
        if check_data_path(path) == "loader":
            return self.loader_batches(batch_size, generator=generator, device=device,
                                       augment=augment, num_workers=num_workers)
        return self.train_batches(batch_size, generator=generator, device=device,
                                  augment=augment)

    def train_batches(self, batch_size: int, *, generator: torch.Generator, device=None,
                      augment: bool = True, shard=None):
        """One epoch of shuffled (x float32 normalised, y int64) batches on `device`.

        Draws, in this order, from `generator`: the permutation, then (when augmenting) the
        crop shifts, then the flip coins. The last partial batch is kept.
        shard=(rank, world_size): every rank draws the same numbers and gets its part
        (torch.tensor_split) of each global batch of `batch_size` images (data-parallel
        training: the union over ranks is the single-process epoch, image for image).
        """
        check_batch_size(batch_size)
        check_generator(generator)
        shard = check_shard(shard)
        x, y = self._tensors(device)[:2]
        n = len(y)
        order = torch.randperm(n, generator=generator).to(x.device)
        pad = self.crop_padding if augment else 0
        shifts = (torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(x.device)
                  if pad else None)
        flips = ((torch.rand(n, generator=generator) < 0.5).to(x.device)
                 if augment and self.flip else None)
        return self._train_epoch(x, y, order, shifts, flips, pad, batch_size, shard)

    def _train_epoch(self, x, y, order, shifts, flips, pad, batch_size, shard=None):
        for start in range(0, len(order), batch_size):
            part = slice(start, start + batch_size)
            if shard is not None:  # this rank's contiguous part of the global batch
                rank, world = shard
                span = torch.arange(start, min(start + batch_size, len(order)))
                span = torch.tensor_split(span, world)[rank]
                part = slice(int(span[0]), int(span[-1]) + 1) if len(span) else slice(0, 0)
            idx = order[part]
            xb = x[idx]
            if shifts is not None:
                xb = random_crop(xb, shifts[part], pad)
            if flips is not None:
                xb = random_flip(xb, flips[part])
            yield self.normalize(xb), y[idx]

    def loader_batches(self, batch_size: int, *, generator: torch.Generator, device=None,
                       augment: bool = True, num_workers: int = 0, pin_memory=None):
        """One epoch through a torch DataLoader with torchvision's per-image transforms.

        The images are read from the host copy; batches are pinned (on CUDA), copied to
        `device` and normalised there. Seeded: the sampler's permutation and the transforms'
        random numbers come from two seeds drawn from `generator` (with workers, torch seeds
        each worker from the loader's generator; without, the transforms run on a private
        global-RNG state swapped in around each batch, so the caller's RNG is untouched).
        """
        check_batch_size(batch_size)
        check_generator(generator)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r} must be an int >= 0")
        device = torch.device(device) if device is not None else self.train_x.device
        host = self._tensors("cpu")
        transform = (per_image_transform(self.image_size, self.crop_padding, self.flip)
                     if augment else None)
        seeds = torch.randint(0, 2 ** 62, (2,), generator=generator).tolist()
        loader = torch.utils.data.DataLoader(
            _PerImage(host[0], host[1], transform), batch_size=batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(seeds[0]), num_workers=num_workers,
            pin_memory=device.type == "cuda" if pin_memory is None else pin_memory,
            persistent_workers=False)
        return self._loader_epoch(loader, seeds[1], device, num_workers)

    def _loader_epoch(self, loader, seed, device, num_workers):
        if num_workers:
            for xb, yb in loader:
                yield (self.normalize(xb.to(device, non_blocking=True)),
                       yb.to(device, non_blocking=True))
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = torch.get_rng_state()
        it = iter(loader)
        while True:
            outer = torch.get_rng_state()
            torch.set_rng_state(state)
            try:
                xb, yb = next(it)
            except StopIteration:
                return
            finally:
                state = torch.get_rng_state()
                torch.set_rng_state(outer)
            yield (self.normalize(xb.to(device, non_blocking=True)),
                   yb.to(device, non_blocking=True))

    def test_batches(self, batch_size: int, device=None, shard=None):
        """The test split in order, normalised, no augmentation; last partial batch kept.
        shard=(rank, world_size): this rank's contiguous part (torch.tensor_split) of the
        split, in batches of `batch_size` (data-parallel evaluation: the ranks' sums add up
        to the whole split)."""
        check_batch_size(batch_size)
        shard = check_shard(shard)
        x, y = self._tensors(device)[2:]
        if shard is not None:
            part = torch.tensor_split(torch.arange(len(y)), shard[1])[shard[0]]
            x, y = (x[int(part[0]):int(part[-1]) + 1], y[int(part[0]):int(part[-1]) + 1]
                    ) if len(part) else (x[:0], y[:0])
        return ((self.normalize(x[i:i + batch_size]), y[i:i + batch_size])
                for i in range(0, len(y), batch_size))

    def labels(self, split: str = "train") -> torch.Tensor:
        """All labels of a split, on the CPU."""
        return (self.train_y if split == "train" else self.test_y).cpu()

    def images(self, indices: torch.Tensor, split: str = "train", device=None) -> torch.Tensor:
        """The images at `indices`, normalised, not augmented."""
        x = self._tensors(device)[0 if split == "train" else 2]
        return self.normalize(x[indices.to(x.device)])
