"""`prepare`: source -> verified -> root/<dataset>/{train.pt, test.pt, meta.json}, atomically;
`load`: the prepared folder -> `Data` (or `ImageNetData`).

Everything is built in a temporary folder next to the output (extraction included) and
renamed onto root/<dataset> only when complete; on any error the temporary folder is removed,
so root/<dataset> is either absent, the previous complete version, or the new one. A folder
left by a killed run is removed by the next one. meta.json records the sha256 of every
prepared file; a folder whose files no longer match is rebuilt, never used.
Downloaded archives are kept in root/downloads/ so a rerun does not download again.
"""
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

from ..files.atomic import clean_stale, temp_folder, write_json
from .fetch import extract, fetch, file_hashes, local_path
from .readers import READERS, read_digits
from .specs import get_spec
from .tensors import Data

FORMAT = 2  # 2: meta.json records the sha256 of every prepared file


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[list, list]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1], in float64
    chunks (Tiny-ImageNet as float64 at once would take 10 GB)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].to(torch.float64).div_(255).transpose(0, 1).flatten(1)
        total += part.sum(1)
        squares += part.square().sum(1)
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


def _check_labels(splits: dict, num_classes: int, dataset: str) -> None:
    for split, s in splits.items():
        y = s["y"]
        if len(y) == 0:
            raise ValueError(f"{dataset}: the {split} split is empty")
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"{dataset}: {split} labels span {int(y.min())}..{int(y.max())}, "
                             f"expected 0..{num_classes - 1}")


def _replace_dir(new: Path, out: Path) -> None:
    """Put the finished folder `new` at `out`, replacing a previous version."""
    old = None
    if out.exists():
        old = temp_folder(out.parent, f"{out.name}.old")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _prepared_problem(out: Path, source: str, split_seed) -> str | None:
    """None when `out` holds this preparation intact, else why it must be rebuilt."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError) as e:
        return f"meta.json is unreadable ({type(e).__name__})"
    if meta.get("format") != FORMAT:
        return f"format {meta.get('format')} is not the current {FORMAT}"
    if meta.get("source") != source or meta.get("split_seed") != split_seed:
        return "it was prepared from another source or split"
    return verify_files(out, meta)


def verify_files(folder: Path, meta: dict) -> str | None:
    """None when every file meta.json lists has its recorded sha256, else what is wrong."""
    files = meta.get("files") or {}
    if set(files) != {f"{s}.pt" for s in ("train", "test")}:
        return "meta.json lists no file checksums (older format)"
    for name, sha in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        found = file_hashes(path)["sha256"]
        if found != sha:
            return f"{path} has sha256 {found}, meta.json recorded {sha}"
    return None


def prepare(dataset: str, root, *, url: str | None = None, md5: str | None = None,
            split_seed: int = 0, download: bool = True, force: bool = False) -> Path:
    """Download (when needed), verify and write `dataset` to root/<dataset>/; return that folder.

    url: where the source archive is: an http(s) URL, a file:// URL or a local path (default:
        the official one). For imagenet, the local folder holding the three ILSVRC2012
        archives (default root/imagenet). digits comes from scikit-learn: url must be None.
    md5: expected md5 of the archive. Default: the official md5 when url is the official
        URL; for any other url without md5 the archive is NOT verified (a warning says so)
        and meta.json records md5_verified=false and the md5 it has.
    split_seed: seed of the digits train/test split (other datasets have an official split).
    download: False refuses to download (the archive must already be in root/downloads/).
    force: redo the preparation even if root/<dataset> already holds it.
    """
    spec = get_spec(dataset)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) \
            or not 0 <= split_seed < 2 ** 32:
        raise ValueError(f"split_seed={split_seed!r} must be an int in [0, 2**32)")
    if dataset == "digits" and (url is not None or md5 is not None):
        raise ValueError(f"url={url!r}, md5={md5!r}: digits ships with scikit-learn, "
                         "no source can be given")
    root = Path(root).expanduser()
    out = root / dataset
    if dataset == "imagenet":
        folder = local_path(url) if url is not None else out
        if folder is None:
            raise ValueError(f"url={url!r}: imagenet cannot be downloaded; give the local folder "
                             "holding the ILSVRC2012 archives")
        from .imagenet import prepare_imagenet
        return prepare_imagenet(out, folder, force)

    source = "sklearn" if dataset == "digits" else os.fspath(url or spec.url)
    expected = md5 or (spec.md5 if source == spec.url else None)
    recorded_seed = split_seed if dataset == "digits" else None
    clean_stale(root)  # temporary folders of a killed earlier run
    if not force and out.exists():
        problem = _prepared_problem(out, source, recorded_seed)
        if problem is None:
            return out
        print(f"{dataset}: rebuilding {out}: {problem}", file=sys.stderr)
    if dataset != "digits" and expected is None:
        warnings.warn(f"{dataset}: no md5 given for {source}; the archive is not verified "
                      "(pass md5=... to verify it)", stacklevel=2)

    root.mkdir(parents=True, exist_ok=True)
    stage = temp_folder(root, dataset)
    try:
        if dataset == "digits":
            splits, info = read_digits(split_seed)
        else:
            archive, hashes = fetch(source, root / "downloads", md5=expected,
                                    download_ok=download, dataset=dataset)
            extract(archive, stage / "raw", dataset)
            splits, info = READERS[dataset](stage / "raw", dataset)
            info["checksums"] = {archive.name: hashes}
            shutil.rmtree(stage / "raw")
        _check_labels(splits, spec.num_classes, dataset)
        train_x = splits["train"]["x"]
        if tuple(train_x.shape[1:]) != (spec.in_channels, spec.image_size, spec.image_size):
            raise ValueError(f"{dataset}: images are {tuple(train_x.shape[1:])}, expected "
                             f"{(spec.in_channels, spec.image_size, spec.image_size)}")
        mean, std = channel_stats(train_x)
        for split, tensors in splits.items():
            torch.save(tensors, stage / f"{split}.pt")
        meta = {"dataset": dataset, "num_classes": spec.num_classes,
                "in_channels": spec.in_channels, "image_size": spec.image_size,
                "mean": mean, "std": std,
                "n_train": len(splits["train"]["y"]), "n_test": len(splits["test"]["y"]),
                "crop_padding": spec.crop_padding, "flip": spec.flip, "source": source,
                "checksums": info["checksums"],
                # digits has no archive to verify (None); its checksums are of the arrays
                "md5_verified": None if dataset == "digits" else expected is not None,
                "split": info["split"], "split_seed": info["split_seed"],
                "classes": info["classes"], "format": FORMAT,
                "files": {f"{split}.pt": file_hashes(stage / f"{split}.pt")["sha256"]
                          for split in splits}}
        write_json(stage / "meta.json", meta)
        _replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def load(path, dataset: str, *, device="cpu"):
    """The prepared `dataset` from `path` = root (holding <dataset>/) or the prepared folder.
    In-memory datasets come back as `Data` with tensors on `device`; imagenet as ImageNetData."""
    get_spec(dataset)
    path = Path(path).expanduser()
    folder = path / dataset if (path / dataset / "meta.json").is_file() else path
    if not (folder / "meta.json").is_file():
        raise FileNotFoundError(f"no prepared {dataset} in {path}: run "
                                f"dpai.data.prepare({dataset!r}, root) first")
    found = json.loads((folder / "meta.json").read_text()).get("dataset")
    if found != dataset:
        raise ValueError(f"dataset={dataset!r} but {folder}/meta.json holds {found!r}")
    if dataset == "imagenet":
        from .imagenet import ImageNetData
        return ImageNetData.load(folder)
    return Data.load(folder, device=device)
