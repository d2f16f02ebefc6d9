"""The paper's large-model presets (EfficientNet-B0 / ImageNet, ViT-B/16 / Tiny-ImageNet) run
on the CPU through the real code paths: compose the preset, build the model, prune with the
preset's methods (cheap settings), train a few steps on random tensors of the right shape with
the preset's optimiser and schedule. Also the new TrainConfig fields (optimizer, warmup_epochs,
schedule)."""
import math

import pytest
import torch

import dpai
from dpai.training.loop import lr_factor
from test_presets import compose

CHEAP = {"dpai": {"steps": 2}, "synflow": {"rounds": 2}, "iter_snip": {"rounds": 2}}


def batches(shape, classes, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, *shape, generator=g), torch.randint(0, classes, (2,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("preset,classes,size,expected", [
    ("imagenet_efficientnet_b0", 1000, 224,
     dict(model="torchvision:efficientnet_b0", prune="default", sparsity=0.7,
          methods=["dpai", "synflow"], optimizer="sgd", schedule="multistep")),
    pytest.param("tinyimagenet_vit_b16", 200, 64,  # built at the data set's 64x64
                 dict(model="torchvision:vit_b_16", prune="linear", sparsity=0.99,
                      optimizer="adamw", schedule="cosine"), marks=pytest.mark.slow),
])
def test_large_preset_runs_a_few_steps(tmp_path, preset, classes, size, expected):
    p = compose(tmp_path, f"preset={preset}")
    assert p["model"]["name"] == expected["model"] and p["model"]["prune"] == expected["prune"]
    assert p["sparsity"] == expected["sparsity"] and p["seeds"] == [0, 1, 2]
    if "methods" in expected:
        assert p["methods"] == expected["methods"]
    train = {k: v for k, v in p["train"].items() if k not in ("device", "init")}
    assert (train["optimizer"], train["schedule"]) == (expected["optimizer"], expected["schedule"])
    full = dpai.TrainConfig.from_dict(train)  # the preset's own recipe is valid
    model = dpai.create_model(p["model"]["name"], num_classes=classes, in_channels=3,
                              image_size=size, seed=0, prune=p["model"]["prune"])
    mask = None
    for method in p["methods"][:2]:
        data = batches((3, size, size), classes, 1, 1) if method in dpai.DATA_DRIVEN else None
        mask = dpai.prune(model, method, p["sparsity"], seed=0, data=data,
                          **{**p["mask"].get(method, {}), **CHEAP.get(method, {})})
        assert mask.num_kept == (sum(dpai.erk_budget(model, p["sparsity"]).values())
                                 if method in ("dpai", "random_erk")
                                 else dpai.global_budget(model, p["sparsity"]))
    # a few steps of the preset's recipe: 3 epochs of 2 steps, warmup and decay both exercised
    short = dpai.TrainConfig.from_dict({**train, "epochs": 3, "warmup_epochs": 1,
                                        "milestones": [2] if full.schedule == "multistep" else []})
    data = batches((3, size, size), classes, 2, 2)
    result = dpai.train(model, mask, lambda epoch: data, lambda: data[:1], short,
                        progress=False, log=None)
    assert result["steps"] == 6 and all(math.isfinite(e["train_loss"]) for e in result["epochs"])
    assert mask.apply(model) is model  # pruned weights are still exactly zero
    for name, layer in dpai.prunable_layers(model).items():
        assert not layer.weight[~mask[name]].any(), name
    lrs = [e["lr"] for e in result["epochs"]]
    assert lrs[0] < lrs[1]  # warmup


def test_schedules():
    cos = dpai.TrainConfig(epochs=10, lr=1.0, warmup_epochs=2, schedule="cosine", milestones=[])
    f = lr_factor(cos)
    assert [f(e) for e in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert f(2 + 4) == pytest.approx(0.5) and f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    step = lr_factor(dpai.TrainConfig(epochs=10, milestones=[3, 6], gamma=0.1))
    assert [step(e) for e in (0, 2, 3, 5, 6, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_adamw_is_built():
    model = dpai.create_model("resnet20", in_channels=1, image_size=8, seed=0)
    data = batches((1, 8, 8), 10, 1, 0)
    seen = []
    config = dpai.TrainConfig(epochs=1, optimizer="adamw", lr=1e-3, milestones=[])
    dpai.train(model, None, lambda e: data, lambda: data, config, progress=False, log=None,
               on_step=lambda s: seen.append(s))
    assert seen == [1]


@pytest.mark.parametrize("key,value", [("optimizer", "adam"), ("schedule", "linear"),
                                       ("warmup_epochs", -1), ("warmup_epochs", 1.5),
                                       ("warmup_epochs", 160)])
def test_bad_new_train_fields(key, value):
    with pytest.raises(ValueError, match=rf"train\.{key}="):
        dpai.TrainConfig(**{key: value})


def test_nesterov_needs_sgd():
    with pytest.raises(ValueError, match=r"train\.nesterov="):
        dpai.TrainConfig(optimizer="adamw", nesterov=True)
