"""CPU vs GPU: masks, the mask through bf16 training, the DPaI trajectory, the data paths and
fused training. Every test skips without CUDA.

Tolerances: masks of random_uniform, random_erk and magnitude are compared exactly (no
arithmetic order involved). The other methods compute scores in floating point, where the GPU
sums in another order, so a near-tie at the top-k boundary may flip: their masks must keep the
same number of weights and differ in at most 1 % of the kept weights (0.5 % per side). The
DPaI trajectory: exact node / kernel / parameter counts for the first 50 steps (its mask
depends only on |S| rankings, which the path-count gradient moves identically until a tie flips).
Digits accuracy: the GPU data path (bf16) within 5 percentage points of the CPU path (fp32)
after 8 epochs (360 test images: 1 image = 0.28 points; two seeds' runs spread ~2 points).
"""
import pytest
import torch

import dpai
from dpai.data import prepare
from dpai.training.fused import train_fused
from dpai.models import prunable_layers
from dpai.methods.dpai_method import DPaI
from dpai.training import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
EXACT = ("random_uniform", "random_erk", "magnitude")
FLIP_FRACTION = 0.01


def model_cpu():
    return dpai.create_model("resnet20", 10, 3, 32, seed=0)


def scoring(device):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 3, 32, 32, generator=g), torch.arange(100) % 10
    return [(x.to(device), y.to(device))]


@pytest.mark.parametrize("method", sorted(dpai.METHODS))
def test_same_mask_on_cpu_and_gpu(method):
    params = {"dpai": {"steps": 200}, "iter_snip": {"rounds": 10},
              "synflow": {"rounds": 20}}.get(method, {})
    masks = []
    for device in ("cpu", "cuda"):
        model = model_cpu().to(device)
        data = scoring(device) if method in dpai.DATA_DRIVEN else None
        masks.append(dpai.prune(model, method, 0.99, seed=0, data=data, **params))
    cpu, gpu = masks
    assert cpu.num_kept == gpu.num_kept
    differ = sum(int((cpu[n].cpu() != gpu[n].cpu()).sum()) for n in cpu)
    if method in EXACT:
        assert differ == 0, f"{method}: {differ} weights differ"
    else:
        assert differ <= FLIP_FRACTION * cpu.num_kept, \
            f"{method}: {differ} of {cpu.num_kept} kept weights differ"


def test_pruned_weights_stay_zero_through_bf16_training():
    model = model_cpu().cuda()
    mask = dpai.prune(model, "random_erk", 0.99, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(128, 3, 32, 32, generator=g).cuda(),
                torch.randint(0, 10, (128,), generator=g).cuda()) for _ in range(5)]
    layers = prunable_layers(model)
    bad = []

    def check(step):
        bad.append(sum(int((m.weight[~mask[n].cuda()] != 0).sum()) for n, m in layers.items()))

    train(model, mask, lambda e: batches, lambda: batches[:1],
          TrainConfig(epochs=2, amp=True, milestones=[1]), progress=False, log=None,
          on_step=check)
    assert len(bad) == 10 and sum(bad) == 0
    assert model.conv1.weight.dtype == torch.float32  # autocast: weights stay fp32


def test_dpai_trajectory_on_gpu_follows_cpu():
    runs = []
    for device in ("cpu", "cuda"):
        search = DPaI(model_cpu().to(device), 0.99, seed=0)
        runs.append(search.run(50))
    for key in ("nodes", "kernels", "params"):
        assert runs[0][key] == runs[1][key], key
    assert runs[1]["log_paths"] == pytest.approx(runs[0]["log_paths"], rel=1e-4)


def test_compiled_dpai_step_on_gpu_follows_eager():
    runs = []
    for flag in (False, True):
        search = DPaI(model_cpu().cuda(), 0.99, seed=0, compile=flag)
        runs.append(search.run(30))
    for key in ("nodes", "kernels", "params"):
        assert runs[0][key] == runs[1][key], key


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare("digits", root)
    return root


def digits_run(root, device, path):
    data = dpai.data.load(root, "digits", device=device)
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0).to(device)
    mask = dpai.prune(model, "random_erk", 0.9, seed=0)
    g = torch.Generator().manual_seed(0)
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.05, milestones=[6])
    res = train(model, mask, lambda e: data.batches(64, generator=g, device=device, path=path),
                lambda: data.test_batches(256, device=device), cfg, progress=False, log=None)
    return res["final_test_acc"]


def test_gpu_data_path_trains_like_the_cpu_path(digits):
    cpu = digits_run(digits, "cpu", "device")
    gpu = digits_run(digits, "cuda", "device")
    loader = digits_run(digits, "cuda", "loader")
    assert cpu > 80, cpu
    assert abs(gpu - cpu) <= 5 and abs(loader - cpu) <= 5, (cpu, gpu, loader)


def test_fused_on_gpu_matches_separate_runs():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 3, 32, 32, generator=g).cuda(),
                torch.randint(0, 10, (64,), generator=g).cuda()) for _ in range(4)]
    cfg = TrainConfig(epochs=1, milestones=[5], amp=False)
    sep = []
    for s in range(2):
        m = dpai.create_model("resnet20", 10, 3, 32, seed=s).cuda()
        train(m, None, lambda e: batches, lambda: batches[:1], cfg, progress=False, log=None)
        sep.append(m)
    fused = [dpai.create_model("resnet20", 10, 3, 32, seed=s).cuda() for s in range(2)]
    train_fused(fused, [None, None], [lambda e: batches] * 2, lambda: batches[:1], cfg, log=None)
    for a, b in zip(sep, fused):
        for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            if x.is_floating_point():  # TF32/cuDNN algorithm choice: looser than on the CPU
                torch.testing.assert_close(y, x, atol=2e-3, rtol=2e-3, msg=n)
