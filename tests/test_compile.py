"""train.compile and the DPaI search's compile=True give the results of the eager code.

torch.compile (inductor, with this machine's gcc) takes minutes on a loaded 2-core box (the
first compiled ResNet-20 step: 227 s here), so the equality checks are marked slow."""
import pytest
import torch
from torch import nn

import dpai
from dpai.methods.dpai_method import DPaI
from dpai.training import TrainConfig, train

torch.set_num_threads(1)


def small_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return net


def batches(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(n)]
    return lambda *epoch: data


def test_compile_flags_are_validated():
    with pytest.raises(ValueError, match=r"train.compile='yes' is invalid: allowed is true or false"):
        TrainConfig(compile="yes")
    assert TrainConfig().compile is False
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0)
    with pytest.raises(ValueError, match=r"^dpai.compile=1 is invalid: allowed is true or false"):
        DPaI(model, 0.9, seed=0, compile=1)


@pytest.mark.extended
def test_compiled_training_step_equals_eager():
    results, nets = [], []
    for flag in (False, True):
        net = small_net(0)
        mask = {"0": torch.rand(8, 1, 3, 3, generator=torch.Generator().manual_seed(1)) < 0.5,
                "5": torch.ones(10, 8, dtype=torch.bool)}
        cfg = TrainConfig(epochs=2, lr=0.05, milestones=[1], compile=flag)
        results.append(train(net, mask, batches(0), batches(1, 1), cfg, progress=False,
                             log=None))
        nets.append(net)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)  # fused kernels reorder sums
    assert (nets[1][0].weight[~mask["0"]] == 0).all()
    for ra, rb in zip(results[0]["epochs"], results[1]["epochs"]):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)


@pytest.mark.extended
def test_compiled_dpai_step_follows_the_eager_trajectory():
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0)
    runs = []
    for flag in (False, True):
        search = DPaI(model, 0.95, seed=3, compile=flag)
        runs.append((search.run(6), search.mask()))
    (ta, ma), (tb, mb) = runs
    for key in ("nodes", "kernels", "params"):  # counts: exact
        assert ta[key] == tb[key], key
    assert tb["log_paths"] == pytest.approx(ta["log_paths"], rel=1e-5)
    for name in ma:
        assert torch.equal(ma[name], mb[name]), name
