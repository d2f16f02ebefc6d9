"""Reading each dataset's source into uint8 image tensors (N, C, H, W) and int64 labels.

Each reader returns ({"train": {"x", "y", ...}, "test": {...}}, info) where info holds what
goes into meta.json besides the statistics: classes, checksums, how the split was made.
"""
import hashlib
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

DIGITS_TEST = 360


def read_digits(split_seed: int):
    """scikit-learn's 1,797 8x8 digits (0..16 -> 0..255), seeded stratified 1,437/360 split."""
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # N, 1, 8, 8
    index = np.arange(len(images))
    train, test = train_test_split(index, test_size=DIGITS_TEST, stratify=digits.target,
                                   random_state=split_seed)
    splits = {}
    for split, idx in (("train", np.sort(train)), ("test", np.sort(test))):
        # "index" = row in load_digits(), so every prepared image traces back to its source
        splits[split] = {"x": torch.from_numpy(images[idx]),
                         "y": torch.from_numpy(digits.target[idx]).long(),
                         "index": torch.from_numpy(idx).long()}
    checksums = {"load_digits": {
        "sklearn_version": sklearn.__version__,
        "sha256_images": hashlib.sha256(np.ascontiguousarray(digits.images).tobytes()).hexdigest(),
        "sha256_target": hashlib.sha256(np.ascontiguousarray(digits.target).tobytes()).hexdigest()}}
    info = {"classes": [str(c) for c in range(10)], "checksums": checksums,
            "split": f"seeded stratified {len(train)}/{len(test)} split of load_digits()",
            "split_seed": split_seed}
    return splits, info


def _unpickle(path: Path, dataset: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: the archive has no {path.parent.name}/{path.name}")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the official python-format CIFAR pickles


def read_cifar(tree: Path, dataset: str):
    """CIFAR-10/100 python pickles: rows of 3072 bytes (1024 red, 1024 green, 1024 blue)."""
    from torchvision.datasets import CIFAR10, CIFAR100  # the archive layout they describe
    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset]
    base = tree / cls.base_folder
    label_key = "labels" if dataset == "cifar10" else "fine_labels"
    splits = {}
    for split, files in (("train", cls.train_list), ("test", cls.test_list)):
        entries = [_unpickle(base / name, dataset) for name, _md5 in files]
        x = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
        y = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
        splits[split] = {"x": torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()),
                         "y": torch.from_numpy(y)}
    classes = list(_unpickle(base / cls.meta["filename"], dataset)[cls.meta["key"]])
    return splits, {"classes": classes, "split": "official train/test", "split_seed": None}


def reorganize_tiny_imagenet_val(tree: Path) -> None:
    """val/images/<file> + val/val_annotations.txt -> val/<wnid>/<file> (ImageFolder layout)."""
    val = tree / "val"
    images = val / "images"
    if not images.is_dir():
        return  # already one folder per class
    lines = (val / "val_annotations.txt").read_text().splitlines()
    for line in filter(str.strip, lines):
        name, wnid = line.split("\t")[:2]  # file, wnid, x0, y0, x1, y1
        if not (images / name).is_file():
            raise FileNotFoundError(f"tiny-imagenet: val_annotations.txt names {name}, "
                                    f"which is not in {images}")
        (val / wnid).mkdir(exist_ok=True)
        os.replace(images / name, val / wnid / name)
    left = sorted(p.name for p in images.iterdir())
    if left:
        raise ValueError(f"tiny-imagenet: {len(left)} validation images have no annotation "
                         f"in val_annotations.txt, e.g. {left[0]}")
    images.rmdir()


def decode_images(files: list, size: int, desc: str) -> torch.Tensor:
    """Decode image files to one uint8 (N, 3, size, size) tensor (grayscale ones made RGB)."""
    from PIL import Image

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)

    def decode(i):
        with Image.open(files[i]) as im:
            a = np.array(im.convert("RGB"))  # a writable copy
        if a.shape != (size, size, 3):
            raise ValueError(f"{files[i]}: image is {a.shape[1]}x{a.shape[0]}, "
                             f"expected {size}x{size}")
        out[i] = torch.from_numpy(a).permute(2, 0, 1)

    # PIL releases the GIL while decoding, so threads help and keep the order by index
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(decode, range(len(files))), total=len(files), desc=desc,
                      unit="img", disable=None):
            pass
    return out


def read_tiny_imagenet(tree: Path, dataset: str = "tiny-imagenet"):
    """tiny-imagenet-200/: train/<wnid>/images/*, val/ regrouped by class; label = sorted wnid."""
    top = tree / "tiny-imagenet-200"
    if not (top / "wnids.txt").is_file():
        raise FileNotFoundError(f"{dataset}: the archive has no tiny-imagenet-200/wnids.txt")
    classes = sorted(filter(None, (top / "wnids.txt").read_text().split()))
    found = sorted(p.name for p in (top / "train").iterdir() if p.is_dir())
    if found != classes:
        raise ValueError(f"{dataset}: train/ has classes {found[:5]}... but wnids.txt lists "
                         f"{classes[:5]}... ({len(found)} vs {len(classes)})")
    reorganize_tiny_imagenet_val(top)
    splits = {}
    for split, folder, sub in (("train", top / "train", "images"), ("test", top / "val", "")):
        files, labels = [], []
        for label, wnid in enumerate(classes):
            names = sorted((folder / wnid / sub).iterdir()) if (folder / wnid).is_dir() else []
            files += names
            labels += [label] * len(names)
        splits[split] = {"x": decode_images(files, 64, f"decode {split}"),
                         "y": torch.tensor(labels, dtype=torch.int64)}
    return splits, {"classes": classes, "split": "official train / val (as test)",
                    "split_seed": None}


READERS = {"cifar10": read_cifar, "cifar100": read_cifar, "tiny-imagenet": read_tiny_imagenet}
