"""Every registered method: exact kept counts at 0.5, 0.9, 0.99, 0.999 and the same mask for
the same seed (on the 8x8 one-channel ResNet-20 of the offline default)."""
import pytest
import torch

import dpai

# fewer iterations than the defaults: counts and determinism do not depend on them
FAST = {"dpai": {"steps": 5}, "iter_snip": {"rounds": 3}, "synflow": {"rounds": 3}}
LAYER_WISE = {"dpai": dpai.erk_budget, "random_erk": dpai.erk_budget, "npb": dpai.erk_budget,
              "random_uniform": dpai.uniform_budget}


@pytest.fixture(scope="module")
def model():
    return dpai.create_model("resnet20", num_classes=10, in_channels=1, image_size=8, seed=0)


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(100, 1, 8, 8, generator=g), torch.arange(10).repeat(10))]


def prune(model, method, sparsity, seed, sample):
    return dpai.prune(model, method, sparsity, seed=seed, **FAST.get(method, {}),
                      data=sample if method in dpai.DATA_DRIVEN else None)


@pytest.mark.parametrize("method", sorted(dpai.METHODS))
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99, 0.999])
def test_exact_count(model, sample, method, sparsity):
    mask = prune(model, method, sparsity, 0, sample)
    if method in LAYER_WISE:
        assert mask.kept_per_layer() == LAYER_WISE[method](model, sparsity)
    else:
        assert mask.num_kept == dpai.global_budget(model, sparsity)
    assert mask.info["method"] == method and mask.info["sparsity"] == sparsity


@pytest.mark.parametrize("method", sorted(dpai.METHODS))
def test_same_seed_same_mask(model, sample, method):
    a, b = (prune(model, method, 0.9, 3, sample) for _ in range(2))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_data_driven_methods_need_data(model):
    for method in sorted(dpai.DATA_DRIVEN):
        with pytest.raises(ValueError, match="needs data"):
            dpai.prune(model, method, 0.9, seed=0)
