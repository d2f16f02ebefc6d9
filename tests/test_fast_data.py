"""The two data paths (batched tensor ops on the device vs a DataLoader with torchvision's
per-image transforms) draw the same augmentation distribution; both are seeded."""
import pytest
import torch
from scipy import stats

from dpai.data import Data
from dpai.data.tensors import check_data_path

torch.set_num_threads(1)
SIZE = 8
N = 2048
ALPHA = 1e-3  # each test's false-alarm rate for a correct implementation (seeds are fixed anyway)


def position_data(n, pad, flip):
    """8x8 one-channel images whose pixel (r, c) holds 1 + 8 r + c: zero padding shows as 0,
    so a crop's offset and a flip can be read back from any output image."""
    pixel = (1 + torch.arange(SIZE * SIZE, dtype=torch.uint8)).view(1, 1, SIZE, SIZE)
    x = pixel.expand(n, 1, SIZE, SIZE).contiguous()
    y = torch.arange(n) % 10
    meta = {"dataset": "positions", "num_classes": 10, "mean": [0.0], "std": [1.0],
            "crop_padding": pad, "flip": flip}
    return Data(x, y, x[:16].clone(), y[:16].clone(), meta)


def decode(xb, pad):
    """(dy, dx, flipped) of every normalised output image (mean 0, std 1: x = uint8 / 255)."""
    v = (xb[:, 0] * 255).round().long()                      # (B, H, W), 0 = padding
    b = len(v)
    first = (v > 0).flatten(1).float().argmax(1)             # top-left visible pixel, row-major
    i, j = first // SIZE, first % SIZE
    rows = torch.arange(b)
    value = v[rows, i, j] - 1
    r, c = value // SIZE, value % SIZE
    right = v[rows, i, j + 1] - 1                            # always visible: width >= 4
    flipped = right < value
    dy = r + pad - i
    dx = torch.where(flipped, c - (SIZE - 1 - j) + pad, c - j + pad)
    return dy, dx, flipped


def draws(data, path, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [decode(xb, data.crop_padding) for xb, _ in data.batches(256, generator=g, path=path)]
    return [torch.cat(parts) for parts in zip(*out)]


def check_distribution(dy, dx, flipped, pad, flip_rate):
    """Offsets uniform on exactly {0..2 pad} (chi-square), flips Binomial(n, flip_rate)."""
    for name, d in (("dy", dy), ("dx", dx)):
        assert int(d.min()) == 0 and int(d.max()) == 2 * pad, f"{name} range {d.min()}..{d.max()}"
        counts = torch.bincount(d, minlength=2 * pad + 1).numpy()
        if pad:
            p = stats.chisquare(counts).pvalue
            assert p > ALPHA, f"{name} not uniform on 0..{2 * pad}: {counts}, p={p:.2g}"
    k = int(flipped.sum())
    if flip_rate in (0, 1):
        assert k == flip_rate * len(flipped), f"{k} flips of {len(flipped)}"
    else:
        p = stats.binomtest(k, len(flipped), flip_rate).pvalue
        assert p > ALPHA, f"flip rate {k / len(flipped):.3f}, expected {flip_rate}, p={p:.2g}"


@pytest.mark.parametrize("pad,flip", [(4, True), (1, False)], ids=["cifar-like", "digits-like"])
def test_both_paths_draw_the_paper_augmentation(pad, flip):
    data = position_data(N, pad, flip)
    results = {}
    for path in ("device", "loader"):
        dy, dx, flipped = draws(data, path)
        assert len(dy) == N
        check_distribution(dy, dx, flipped, pad, 0.5 if flip else 0.0)
        results[path] = (dy, dx, flipped)
    # and the two paths against each other (two-sample chi-square on the joint offsets)
    joint = [torch.bincount(dy * (2 * pad + 1) + dx, minlength=(2 * pad + 1) ** 2)
             for dy, dx, _ in results.values()]
    table = torch.stack(joint).numpy()
    assert stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue > ALPHA


def test_the_check_rejects_a_wrong_offset_range_or_flip_rate():
    g = torch.Generator().manual_seed(1)
    pad = 4
    good = torch.randint(0, 2 * pad + 1, (N,), generator=g)
    coins = torch.rand(N, generator=g)
    check_distribution(good, good.roll(1), coins < 0.5, pad, 0.5)
    narrow = torch.randint(0, 2 * pad, (N,), generator=g)          # randint's exclusive end
    with pytest.raises(AssertionError, match="range"):
        check_distribution(narrow, good, coins < 0.5, pad, 0.5)
    centred = torch.clamp(torch.randint(-1, 2 * pad + 2, (N,), generator=g), 0, 2 * pad)
    with pytest.raises(AssertionError, match="not uniform"):       # clipped: heavy ends
        check_distribution(centred, good, coins < 0.5, pad, 0.5)
    with pytest.raises(AssertionError, match="flip rate"):
        check_distribution(good, good, coins < 0.44, pad, 0.5)
    with pytest.raises(AssertionError, match="flips"):
        check_distribution(good, good, coins < 0.01, pad, 0.0)


def test_loader_path_is_seeded_covers_the_epoch_and_leaves_the_global_rng():
    data = position_data(300, 4, True)
    data.train_y = torch.arange(300)  # labels identify the images
    before = torch.get_rng_state()
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        runs.append(list(data.batches(64, generator=g, path="loader")))
    assert torch.equal(torch.get_rng_state(), before)
    assert [len(y) for _, y in runs[0]] == [64, 64, 64, 64, 44]
    assert torch.equal(torch.cat([y for _, y in runs[0]]).sort().values, torch.arange(300))
    for (xa, ya), (xb, yb) in zip(*runs):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    g = torch.Generator().manual_seed(8)
    other = torch.cat([y for _, y in data.batches(64, generator=g, path="loader")])
    assert not torch.equal(other, torch.cat([y for _, y in runs[0]]))


def test_data_path_switch():
    assert check_data_path("auto") == "device"
    with pytest.raises(ValueError, match=r"data_path='gpu' is not one of \['auto', 'device'"):
        check_data_path("gpu")


def test_shards_partition_each_global_batch():
    data = position_data(100, 1, False)
    data.train_y = torch.arange(100)
    whole = [y for _, y in data.train_batches(32, generator=torch.Generator().manual_seed(3))]
    parts = [[y for _, y in data.train_batches(32, generator=torch.Generator().manual_seed(3),
                                               shard=(r, 3))] for r in range(3)]
    for k, y in enumerate(whole):
        assert torch.equal(torch.cat([p[k] for p in parts]), y)
    with pytest.raises(ValueError, match="shard"):
        next(data.train_batches(32, generator=torch.Generator(), shard=(3, 3)))


def test_test_shards_partition_the_split():
    data = position_data(100, 1, False)
    data.test_y = torch.arange(len(data.test_y))
    whole = torch.cat([y for _, y in data.test_batches(4)])
    parts = [[y for _, y in data.test_batches(4, shard=(r, 3))] for r in range(3)]
    assert [len(y) for y in parts[0]] == [4, 2]  # 16 images: ranks hold 6, 5, 5
    assert torch.equal(torch.cat([y for p in parts for y in p]), whole)
    assert [sum(len(y) for y in p) for p in parts] == [len(t) for t in
                                                       torch.tensor_split(whole, 3)]
    with pytest.raises(ValueError, match="shard"):
        next(data.test_batches(4, shard=(0, 0)))
