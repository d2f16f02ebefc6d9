"""What every registered method guarantees (and what a new method's author relies on), on the
8x8 one-channel ResNet-20 of the offline default: exact kept counts at 50-99.9 % sparsity,
the same mask for the same seed, the caller's model untouched, a bool mask on exactly the
prunable layers, and a one-line error naming a bad option before any work. A method added to
the registry is checked here without a line of test code."""
import functools

import pytest
import torch

import dpai
from dpai.methods import registry

# fewer iterations than the defaults: counts and determinism do not depend on them
FAST = {"dpai": {"steps": 5}, "iter_snip": {"rounds": 3}, "synflow": {"rounds": 3},
        "ntk_sap": {"rounds": 2, "draws": 1}, "px": {"rounds": 2}}
LAYER_WISE = {"dpai": dpai.erk_budget, "random_erk": dpai.erk_budget, "npb": dpai.erk_budget,
              "random_uniform": dpai.uniform_budget}
METHODS = sorted(dpai.METHODS)


def small_model():
    return dpai.create_model("resnet20", num_classes=10, in_channels=1, image_size=8, seed=0)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 1, 8, 8, generator=g)
    y = torch.arange(10).repeat_interleave(10)[torch.randperm(100, generator=g)]
    return [(x[:50], y[:50]), (x[50:], y[50:])]


def prune(model, method, sparsity, seed, sample, **options):
    return dpai.prune(model, method, sparsity, seed=seed, **{**FAST.get(method, {}), **options},
                      data=sample if method in dpai.DATA_DRIVEN else None)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99, 0.999])
def test_exact_count(model, sample, method, sparsity):
    mask = prune(model, method, sparsity, 0, sample)
    if method in LAYER_WISE:
        assert mask.kept_per_layer() == LAYER_WISE[method](model, sparsity)
    else:
        assert mask.num_kept == dpai.global_budget(model, sparsity)
    assert mask.info["method"] == method and mask.info["sparsity"] == sparsity


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_mask(model, sample, method):
    a, b = (prune(model, method, 0.99, 3, sample) for _ in range(2))
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("method", METHODS)
def test_mask_is_bool_on_exactly_the_prunable_layers(model, sample, method):
    mask = prune(model, method, 0.9, 0, sample)
    layers = dpai.prunable_layers(model)
    assert list(mask) == list(layers)
    for name, layer in layers.items():
        assert mask[name].dtype == torch.bool and mask[name].shape == layer.weight.shape
        assert mask[name].device == layer.weight.device


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("train", [True, False])
def test_callers_model_untouched(sample, method, train):
    model = small_model()
    model.bn1.weight.requires_grad_(False)  # a frozen parameter must stay frozen
    model.train(train)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    modes = {k: m.training for k, m in model.named_modules()}
    prune(model, method, 0.9, 0, sample)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats too
    assert flags == {k: p.requires_grad for k, p in model.named_parameters()}
    assert modes == {k: m.training for k, m in model.named_modules()}
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_a_bad_option_is_named_before_any_work(model, sample, method, monkeypatch):
    calls = []
    original = registry.METHODS[method]

    @functools.wraps(original)  # the same signature, so the same options
    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setitem(registry.METHODS, method, spy)
    with pytest.raises(ValueError, match=rf"^{method}\.bogus is not a parameter; allowed: "):
        prune(model, method, 0.9, 0, sample, bogus=1)
    for option in dpai.method_params(method):
        # a list is none of: a number, an integer, a boolean, a string, one of the choices
        with pytest.raises(ValueError, match=rf"^{method}\.{option}=\[\] is invalid: allowed is "):
            prune(model, method, 0.9, 0, sample, **{option: []})
    assert calls == []


def test_data_driven_methods_need_data(model):
    for method in sorted(dpai.DATA_DRIVEN):
        with pytest.raises(ValueError, match="needs data"):
            dpai.prune(model, method, 0.9, seed=0)
