"""ResNet-20 (CIFAR-10 shape) at 99.9 % sparsity: which methods leave a layer with no
effective node. DPaI must not; SynFlow's thinning of the 1x1 shortcuts is reproduced."""
import pytest
import torch

import dpai

SPARSITY = 0.999
# one xdist worker computes the shared masks once
pytestmark = pytest.mark.xdist_group("collapse")


@pytest.fixture(scope="module")
def results():
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32, seed=0)
    g = torch.Generator().manual_seed(0)
    # 10 images per class, as the stages give data-driven methods (random pixels suffice here)
    sample = [(torch.randn(100, 3, 32, 32, generator=g), torch.arange(10).repeat(10))]
    out = {}
    for method in sorted(dpai.METHODS):
        mask = dpai.prune(model, method, SPARSITY, seed=0,
                          data=sample if method in dpai.DATA_DRIVEN else None)
        out[method] = (mask, dpai.topology(model, mask))
    print("\nmethod           kept  eff.nodes  collapsed layers")
    for method, (mask, topo) in out.items():
        print(f"{method:<15} {mask.num_kept:>5} {topo['effective_nodes']:>10}  "
              f"{len(topo['collapsed_layers'])}: {', '.join(topo['collapsed_layers'])}")
    return out


@pytest.mark.slow
def test_dpai_keeps_every_layer_alive(results):
    mask, topo = results["dpai"]
    assert topo["collapsed_layers"] == []
    assert all(layer["effective_nodes"] > 0 for layer in topo["layers"].values())


@pytest.mark.slow
def test_synflow_thins_the_shortcuts(results):
    mask, topo = results["synflow"]
    shortcuts = [n for n in mask if "shortcut" in n]
    erk = dpai.erk_budget(dpai.create_model("resnet20"), SPARSITY)
    for name in shortcuts:
        assert mask.kept_per_layer()[name] <= erk[name] // 4, name
    assert sum(topo["layers"][n]["effective_nodes"] for n in shortcuts) <= 4


@pytest.mark.slow
def test_uniform_random_and_magnitude_collapse(results):
    """Known failures at this sparsity: uniform density leaves ~1 weight in small layers and
    magnitude strips wide layers first."""
    assert results["random_uniform"][1]["collapsed_layers"]
    assert results["magnitude"][1]["collapsed_layers"]
