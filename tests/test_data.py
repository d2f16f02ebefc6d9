"""dpai.data: real preparation code on small archives in the official on-disk formats (no
network: sources are file:// URLs or local paths), batching and the scoring sample."""
import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dpai.data import (DATASETS, ChecksumError, Data, ImageNetData, load, prepare,
                       reorganize_tiny_imagenet_val, scoring_batches)
from dpai.data.fetch import download, extract
from dpai.data.tensors import random_crop

torch.set_num_threads(1)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(root: Path, dataset: str) -> list:
    """Anything a failed preparation could have left: the output or a temporary folder."""
    return [p.name for p in root.iterdir() if p.name == dataset or p.name.startswith(f".{dataset}")]


# ---------------------------------------------------------------- archives in official formats

def _tar_gz(path: Path, files: dict) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_cifar(tmp_path: Path, dataset: str, per_file=2, n_test=3, seed=0, drop=()):
    """A CIFAR-10 (5 train batches) or CIFAR-100 (train/test) python-pickle tar.gz."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if dataset == "cifar10" else 100
    folder, label_key = (("cifar-10-batches-py", "labels") if dataset == "cifar10"
                         else ("cifar-100-python", "fine_labels"))
    names = ([f"data_batch_{i}" for i in range(1, 6)] if dataset == "cifar10" else ["train"])
    n = per_file if dataset == "cifar10" else 5 * per_file
    files, truth = {}, {"train": [[], []], "test": [[], []]}
    for name, count, split in [(m, n, "train") for m in names] + [
            ("test_batch" if dataset == "cifar10" else "test", n_test, "test")]:
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, count).tolist()
        entry = {"data": data, label_key: labels,
                 "filenames": [f"{name}_{i}.png" for i in range(count)]}
        if dataset == "cifar100":
            entry["coarse_labels"] = [lab // 5 for lab in labels]
        files[f"{folder}/{name}"] = pickle.dumps(entry, protocol=2)
        truth[split][0].append(data)
        truth[split][1] += labels
    meta_name, meta_key = (("batches.meta", "label_names") if dataset == "cifar10"
                           else ("meta", "fine_label_names"))
    files[f"{folder}/{meta_name}"] = pickle.dumps({meta_key: [f"c{i}" for i in range(num_classes)]})
    for name in drop:
        del files[f"{folder}/{name}"]
    archive = _tar_gz(tmp_path / f"{dataset}-python.tar.gz", files)
    truth = {s: (np.concatenate(x).reshape(-1, 3, 32, 32), np.array(y))
             for s, (x, y) in truth.items()}
    return archive, truth


WNIDS = ["n03", "n01", "n02"]  # file order differs from sorted order on purpose
COLOUR = {"n01": (255, 0, 0), "n02": (0, 255, 0), "n03": (0, 0, 255)}  # label 0, 1, 2


def _jpeg(colour, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (64, 64), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_tiny_imagenet(tmp_path: Path) -> Path:
    """tiny-imagenet-200.zip: 3 wnids x 2 train images, 2 val images each, 1 test image."""
    top = "tiny-imagenet-200"
    files = {f"{top}/wnids.txt": "\n".join(WNIDS) + "\n",
             f"{top}/words.txt": "".join(f"{w}\tthing {w}\n" for w in WNIDS)}
    for w in WNIDS:
        boxes = "".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(2))
        files[f"{top}/train/{w}/{w}_boxes.txt"] = boxes
        for i in range(2):
            files[f"{top}/train/{w}/images/{w}_{i}.JPEG"] = _jpeg(COLOUR[w])
    files[f"{top}/train/n01/images/n01_1.JPEG"] = _jpeg(128, mode="L")  # grayscale, as some are
    annotations = []
    for i, w in enumerate(["n02", "n03", "n01", "n03", "n01", "n02"]):
        files[f"{top}/val/images/val_{i}.JPEG"] = _jpeg(COLOUR[w])
        annotations.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63\n")
    files[f"{top}/val/val_annotations.txt"] = "".join(annotations)
    files[f"{top}/test/images/test_0.JPEG"] = _jpeg((9, 9, 9))
    path = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


# ---------------------------------------------------------------- digits (real data)

@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare("digits", root, split_seed=0)
    return root


@pytest.fixture(scope="module")
def digits(digits_root):
    return load(digits_root, "digits")


def test_digits_prepared_split_and_meta(digits_root, digits):
    from sklearn.datasets import load_digits
    meta = json.loads((digits_root / "digits" / "meta.json").read_text())
    assert (meta["n_train"], meta["n_test"], meta["num_classes"]) == (1437, 360, 10)
    shape = (meta["in_channels"], meta["image_size"], meta["crop_padding"], meta["flip"])
    assert shape == (1, 8, 1, False)
    assert meta["source"] == "sklearn" and meta["split_seed"] == 0
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.uint8 and int(digits.train_x.max()) == 255
    # every source image lands in exactly one split, scaled 0..16 -> 0..255, with its label
    src = load_digits()
    parts = {s: torch.load(digits_root / "digits" / f"{s}.pt", weights_only=True)
             for s in ("train", "test")}
    index = torch.cat([parts["train"]["index"], parts["test"]["index"]])
    assert torch.equal(index.sort().values, torch.arange(1797))
    i = parts["test"]["index"]
    expected = torch.from_numpy(np.rint(src.images[i.numpy()] * 255 / 16)).to(torch.uint8)
    assert torch.equal(parts["test"]["x"][:, 0], expected)
    assert torch.equal(parts["test"]["y"], torch.from_numpy(src.target[i.numpy()]))
    # stratified: each class has 35 or 36 test images (360 of 1797, classes of ~180)
    counts = torch.bincount(digits.test_y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    # stored statistics are those of the train split
    mean, std = digits.meta["mean"], digits.meta["std"]
    ref = digits.train_x.double() / 255
    assert mean[0] == pytest.approx(float(ref.mean()), abs=1e-9)
    assert std[0] == pytest.approx(float(ref.std(unbiased=False)), abs=1e-9)


def test_digits_split_is_deterministic_per_seed(digits_root, digits, tmp_path):
    again = load(prepare("digits", tmp_path / "a", split_seed=0), "digits")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    other = load(prepare("digits", tmp_path / "b", split_seed=1), "digits")
    assert not torch.equal(other.test_x, digits.test_x)
    assert other.meta["split_seed"] == 1


def test_prepare_skips_a_finished_folder_unless_forced(tmp_path):
    folder = prepare("digits", tmp_path)
    stamp = (folder / "train.pt").stat().st_mtime_ns
    assert prepare("digits", tmp_path) == folder
    assert (folder / "train.pt").stat().st_mtime_ns == stamp
    prepare("digits", tmp_path, force=True)
    assert (folder / "train.pt").stat().st_mtime_ns != stamp
    assert leftovers(tmp_path, "digits") == ["digits"]


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="dataset='mnist'.*cifar10"):
        prepare("mnist", tmp_path)
    with pytest.raises(ValueError, match="split_seed=-1"):
        prepare("digits", tmp_path, split_seed=-1)
    with pytest.raises(ValueError, match="digits ships with scikit-learn"):
        prepare("digits", tmp_path, url="file:///x.tar.gz")
    with pytest.raises(FileNotFoundError, match="no prepared cifar10"):
        load(tmp_path, "cifar10")
    # no network is touched: the cache is empty and downloading is refused
    with pytest.raises(FileNotFoundError, match="download=False"):
        prepare("cifar10", tmp_path, download=False)
    assert leftovers(tmp_path, "cifar10") == []


# ---------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_prepare_reads_the_pickles(tmp_path, dataset):
    archive, truth = make_cifar(tmp_path, dataset)
    root = tmp_path / "data"
    folder = prepare(dataset, root, url=archive.as_uri(), md5=md5(archive))
    assert folder == root / dataset
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "test.pt", "train.pt"]
    data = load(folder, dataset)
    assert data.train_x.shape == (10, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    assert torch.equal(data.train_x, torch.from_numpy(truth["train"][0]))
    assert torch.equal(data.test_y, torch.from_numpy(truth["test"][1]))
    # row layout: the first 1024 bytes are the red plane, row-major
    row = truth["train"][0].reshape(-1, 3072)[0]
    assert torch.equal(data.train_x[0, 0].flatten(), torch.from_numpy(row[:1024]))
    meta = data.meta
    assert meta["num_classes"] == DATASETS[dataset].num_classes and meta["md5_verified"] is True
    assert meta["checksums"][archive.name]["md5"] == md5(archive)
    assert meta["source"] == archive.as_uri() and (meta["crop_padding"], meta["flip"]) == (4, True)
    # statistics recomputed independently (numpy, float64 over the raw archive arrays)
    raw = truth["train"][0].astype(np.float64) / 255
    assert meta["mean"] == pytest.approx(raw.mean(axis=(0, 2, 3)).tolist(), rel=1e-12)
    assert meta["std"] == pytest.approx(raw.std(axis=(0, 2, 3)).tolist(), rel=1e-9)
    assert leftovers(root, dataset) == [dataset]


def test_cifar_from_a_plain_path_without_md5_warns(tmp_path):
    archive, _ = make_cifar(tmp_path, "cifar10")
    with pytest.warns(UserWarning, match="not verified"):
        folder = prepare("cifar10", tmp_path / "data", url=str(archive))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["md5_verified"] is False and meta["checksums"][archive.name]["md5"] == md5(archive)


def test_corrupted_archive_fails_the_checksum_and_leaves_nothing(tmp_path):
    archive, _ = make_cifar(tmp_path, "cifar10")
    good = md5(archive)
    archive.write_bytes(archive.read_bytes()[:-100])  # truncated download
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match=f"md5 of .*{archive.name} is .* expected {good}"):
        prepare("cifar10", root, url=archive.as_uri(), md5=good)
    assert leftovers(root, "cifar10") == []


def test_failure_keeps_the_previous_version_intact(tmp_path):
    archive, truth = make_cifar(tmp_path, "cifar10")
    root = tmp_path / "data"
    prepare("cifar10", root, url=str(archive), md5=md5(archive))
    before = {p.name: p.read_bytes() for p in (root / "cifar10").iterdir()}
    (tmp_path / "broken").mkdir()
    broken, _ = make_cifar(tmp_path / "broken", "cifar10", drop=["test_batch"])  # fails late
    with pytest.raises(FileNotFoundError, match="no cifar-10-batches-py/test_batch"):
        prepare("cifar10", root, url=str(broken), md5=md5(broken), force=True)
    assert {p.name: p.read_bytes() for p in (root / "cifar10").iterdir()} == before
    assert leftovers(root, "cifar10") == ["cifar10"]


def test_default_url_uses_the_downloaded_archive_offline(tmp_path):
    archive, truth = make_cifar(tmp_path, "cifar10")
    root = tmp_path / "data"
    (root / "downloads").mkdir(parents=True)
    cached = root / "downloads" / "cifar-10-python.tar.gz"  # where a download would have put it
    cached.write_bytes(archive.read_bytes())
    with pytest.raises(ChecksumError, match="expected c58f30108f718f92721af3b95e74349a"):
        prepare("cifar10", root, download=False)  # official md5 by default: not the fixture
    data = load(prepare("cifar10", root, download=False, md5=md5(archive)), "cifar10")
    assert torch.equal(data.test_y, torch.from_numpy(truth["test"][1]))
    assert data.meta["source"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def test_download_is_atomic_and_complete(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 5000)
    dest = download(src.as_uri(), tmp_path / "cache" / "x.bin")
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["x.bin"]
    with pytest.raises(OSError):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "cache" / "y.bin")
    assert [p.name for p in dest.parent.iterdir()] == ["x.bin"]


# ---------------------------------------------------------------- Tiny-ImageNet

def test_tiny_imagenet_val_reorganisation(tmp_path):
    extract(make_tiny_imagenet(tmp_path), tmp_path / "x", "tiny-imagenet")
    top = tmp_path / "x" / "tiny-imagenet-200"
    reorganize_tiny_imagenet_val(top)
    assert not (top / "val" / "images").exists()
    assert sorted(p.name for p in (top / "val" / "n03").iterdir()) == ["val_1.JPEG", "val_3.JPEG"]
    assert sorted(p.name for p in (top / "val" / "n01").iterdir()) == ["val_2.JPEG", "val_4.JPEG"]
    reorganize_tiny_imagenet_val(top)  # a second call finds it done
    assert sorted(p.name for p in (top / "val").iterdir() if p.is_dir()) == ["n01", "n02", "n03"]


def test_tiny_imagenet_prepare(tmp_path):
    archive = make_tiny_imagenet(tmp_path)
    data = load(prepare("tiny-imagenet", tmp_path / "data", url=archive.as_uri(), md5=md5(archive)),
                "tiny-imagenet")
    assert data.train_x.shape == (6, 3, 64, 64) and data.test_x.shape == (6, 3, 64, 64)
    assert data.meta["classes"] == ["n01", "n02", "n03"]  # labels follow sorted wnids
    assert data.train_y.tolist() == data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    # each val image was filed under its annotated class: its colour says which
    channel = data.test_x.float().mean((2, 3)).argmax(1)
    assert torch.equal(channel, data.test_y)
    gray = data.train_x[1].float()  # n01_1 was grayscale: three equal channels
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    assert abs(float(gray.mean()) - 128) < 3
    colour = data.train_x[[0, 2, 4]].float().mean((2, 3)).argmax(1)
    assert colour.tolist() == [0, 1, 2]
    assert data.meta["n_test"] == 6 and data.meta["md5_verified"] is True


# ---------------------------------------------------------------- batching

def toy(n=20, size=4, padding=0, flip=False, channels=1) -> Data:
    """Images whose pixels encode (index, position): every output pixel can be traced back."""
    x = torch.arange(1, size * size + 1).view(1, 1, size, size).repeat(n, channels, 1, 1)
    x = x.to(torch.uint8)
    x[:, :, 0, 0] = 100 + torch.arange(n).view(n, 1).to(torch.uint8)  # corner = index
    meta = {"dataset": "toy", "num_classes": 2, "mean": [0.0] * channels,
            "std": [1 / 255] * channels, "crop_padding": padding, "flip": flip}
    y = torch.arange(n) % 2
    return Data(x, y, x.clone(), y.clone(), meta)


def test_train_batches_cover_the_epoch_deterministically():
    data = toy(n=20)
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return list(data.train_batches(8, generator=g, augment=False))
    a, b, c = run(0), run(0), run(1)
    assert [len(y) for _, y in a] == [8, 8, 4]  # last partial batch kept
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    seen = torch.cat([x[:, 0, 0, 0] for x, _ in a]).round().long() - 100
    assert sorted(seen.tolist()) == list(range(20))  # each image once
    assert seen.tolist() != list(range(20))  # shuffled
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in c]))
    labels = torch.cat([y for _, y in a])
    assert torch.equal(labels, seen % 2) and labels.dtype == torch.int64
    g = torch.Generator().manual_seed(0)
    first, second = (list(data.train_batches(20, generator=g)) for _ in range(2))
    assert not torch.equal(first[0][1], second[0][1])  # a fresh permutation each call


def test_random_crop_matches_zero_padded_slicing():
    x = torch.randint(1, 256, (5, 3, 6, 7), dtype=torch.uint8)
    shifts = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 0], [0, 4]])
    out = random_crop(x, shifts, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[b], padded[b, :, dy:dy + 6, dx:dx + 7])


def test_augmentation_crops_and_flips_as_configured():
    img = toy(n=1, size=4).train_x[0, 0].float()
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    crops = [padded[dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)]
    # digits-like: pad 1, no flip -> every output is one of the 9 shifted windows, all occur
    data = toy(n=64, size=4, padding=1, flip=False)
    data.train_x[:] = data.train_x[0]
    x, _ = next(data.train_batches(64, generator=torch.Generator().manual_seed(0)))
    which = [[i for i, c in enumerate(crops) if torch.allclose(out[0], c, atol=1e-3)] for out in x]
    assert all(len(w) == 1 for w in which) and {w[0] for w in which} == set(range(9))
    # flip only: each output is the image or its mirror, both occur
    data = toy(n=64, size=4, padding=0, flip=True)
    data.train_x[:] = data.train_x[0]
    x, _ = next(data.train_batches(64, generator=torch.Generator().manual_seed(0)))
    plain = torch.tensor([torch.allclose(o[0], img, atol=1e-3) for o in x])
    mirror = torch.tensor([torch.allclose(o[0], img.flip(1), atol=1e-3) for o in x])
    assert bool((plain ^ mirror).all()) and plain.any() and mirror.any()
    # augment=False: untouched
    x, _ = next(data.train_batches(64, generator=torch.Generator().manual_seed(0), augment=False))
    assert torch.allclose(x[:, 0], img.expand(64, 4, 4), atol=1e-3)


def test_test_batches_in_order_normalised(digits):
    batches = list(digits.test_batches(100))
    assert [len(y) for _, y in batches] == [100, 100, 100, 60]
    x = torch.cat([b[0] for b in batches])
    mean, std = digits.meta["mean"][0], digits.meta["std"][0]
    assert torch.allclose(x, (digits.test_x.float() / 255 - mean) / std, atol=1e-6)
    assert torch.equal(torch.cat([b[1] for b in batches]), digits.test_y)
    g = torch.Generator().manual_seed(0)
    train = torch.cat([x for x, _ in digits.train_batches(512, generator=g, augment=False)])
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    assert digits.num_batches(100, "test") == 4 and digits.num_batches(128) == 12


def test_batching_rejects_bad_arguments(digits):
    with pytest.raises(ValueError, match="batch_size=0"):
        digits.train_batches(0, generator=torch.Generator())
    with pytest.raises(ValueError, match="generator=None"):
        digits.train_batches(8, generator=None)
    with pytest.raises(ValueError, match="batch_size=2.5"):
        digits.test_batches(2.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_and_gpu_batches_are_equal(digits):
    cpu = list(digits.train_batches(256, generator=torch.Generator().manual_seed(3), device="cpu"))
    gpu = list(digits.train_batches(256, generator=torch.Generator().manual_seed(3), device="cuda"))
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and torch.equal(yc, yg.cpu())
        assert torch.allclose(xc, xg.cpu(), atol=1e-6)


# ---------------------------------------------------------------- scoring sample

def test_scoring_sample_is_balanced_seeded_and_traceable(digits):
    s = scoring_batches(digits, num_classes=10, per_class=10, seed=0)
    assert len(s) == 1 and s[0][0].shape == (100, 1, 8, 8)
    assert torch.equal(torch.bincount(s[0][1], minlength=10), torch.full((10,), 10))
    assert s.info["balanced"] is True and s.info["seed"] == 0 and s.info["num_images"] == 100
    assert len(set(s.indices.tolist())) == 100
    assert torch.equal(s[0][0], digits.images(s.indices))
    assert torch.equal(s[0][1], digits.train_y[s.indices])
    again = scoring_batches(digits, num_classes=10, per_class=10, seed=0, batch_size=32)
    assert [len(y) for _, y in again] == [32, 32, 32, 4] and torch.equal(again.indices, s.indices)
    assert torch.equal(torch.cat([x for x, _ in again]), s[0][0])
    other = scoring_batches(digits, num_classes=10, seed=1)
    assert set(other.indices.tolist()) != set(s.indices.tolist())
    free = scoring_batches(digits, num_classes=10, per_class=10, seed=0, balanced=False)
    assert free.info["balanced"] is False and len(free[0][1]) == 100


def test_scoring_sample_rejects_bad_arguments(digits):
    with pytest.raises(ValueError, match="num_classes=100 but the digits data has 10"):
        scoring_batches(digits, num_classes=100, seed=0)
    with pytest.raises(ValueError, match="per_class=500 but class .* has only"):
        scoring_batches(digits, num_classes=10, per_class=500, seed=0)
    with pytest.raises(ValueError, match="per_class=0"):
        scoring_batches(digits, num_classes=10, per_class=0, seed=0)


# ---------------------------------------------------------------- ImageNet

def test_imagenet_without_archives_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare("imagenet", tmp_path)
    msg = str(err.value)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                 "ILSVRC2012_devkit_t12.tar.gz"):
        assert name in msg
    assert str(tmp_path / "imagenet") in msg and "\n" not in msg


def test_imagenet_batches_from_an_extracted_tree(tmp_path):
    """torchvision's extracted layout (meta.bin, train/<wnid>/, val/<wnid>/) with tiny images."""
    folder = tmp_path / "imagenet"
    wnids = ["n001", "n002"]
    for split, count in (("train", 3), ("val", 2)):
        for k, w in enumerate(wnids):
            (folder / split / w).mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (40, 30), (200 * k, 50, 9 * i))
                image.save(folder / split / w / f"{w}_{i}.JPEG")
    val_wnids = ["n001", "n001", "n002", "n002"]
    torch.save(({w: (f"class {w}",) for w in wnids}, val_wnids), folder / "meta.bin")
    prepare("imagenet", tmp_path)
    data = load(tmp_path, "imagenet")
    assert isinstance(data, ImageNetData)
    assert (data.n_train, data.n_test, data.num_classes) == (6, 4, 2)
    data.num_workers = 0
    run = lambda: list(data.train_batches(4, generator=torch.Generator().manual_seed(0)))
    a, b = run(), run()
    assert [tuple(x.shape) for x, _ in a] == [(4, 3, 224, 224), (2, 3, 224, 224)]
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    test = list(data.test_batches(3))
    assert [len(y) for _, y in test] == [3, 1]
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 1, 1]
    s = scoring_batches(data, num_classes=2, per_class=2, seed=0)
    assert torch.bincount(s[0][1]).tolist() == [2, 2] and s[0][0].shape == (4, 3, 224, 224)


def test_cifar_sources_are_torchvisions():
    """specs.py writes torchvision's CIFAR URLs and md5s out (no torchvision import there)."""
    from torchvision.datasets import CIFAR10, CIFAR100
    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        assert (DATASETS[name].url, DATASETS[name].md5) == (cls.url, cls.tgz_md5)
