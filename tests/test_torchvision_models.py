"""Every method on torchvision classifiers (dpai.create_model("torchvision:<name>")): exact
kept counts, the same mask twice from the same seed, and a path network with paths.

What runs where (CI budget: the default loop takes about 4 minutes on 2 shared cores):
- test_every_method_small_builders (default): all of dpai.METHODS with cheap settings on the
  smallest builder of seven families with SE gates, depthwise/grouped convs, channel shuffle,
  concatenation and hard-swish/hard-sigmoid: squeezenet1_1, shufflenet_v2_x0_5, mnasnet0_5,
  mobilenet_v3_small, mobilenet_v2, efficientnet_b0, regnet_y_400mf (0.3-4 M weights each);
  NPB only on the four under 2 M weights (NPB_FAST: one program per group and chunk takes
  a minute on the others). PHEW's walks must cross the traced graph (check_phew_walks).
- test_path_network_families (default): the topology of an ERK random mask and PHEW's walks
  on the smallest builder of the remaining families whose smallest member builds in seconds:
  resnet18, densenet121, googlenet, convnext_tiny, swin_t.
- test_every_method_every_builder (slow): all 80 builders of
  torchvision.models.list_models(module=torchvision.models) x all methods; NPB only on builders
  under 15 M prunable weights (its per-layer programs take minutes on larger ones).
Input: 32x32, except alexnet (64: smallest its pooling accepts), inception_v3 (96: 75 is its
minimum), maxvit_t (224: its window partitions need a multiple of 224 here) and vit_h_14 (224:
the 14-pixel patches need a multiple of 14; 224 is the size it is built for).
PHEW walks the model's traced unit graph (dpai.paths.units), a grouped or depthwise convolution
through its groups' blocks; NPB solves one program per group (a depthwise kernel takes its
group's budget)."""
import math

import pytest
import torch

import dpai
from dpai.models import torchvision_models

CHEAP = {"dpai": {"steps": 2}, "synflow": {"rounds": 2}, "iter_snip": {"rounds": 2},
         "npb": {"time_limit": 2.0}, "ntk_sap": {"rounds": 2, "draws": 1}, "px": {"rounds": 2}}
SIZES = {"alexnet": 64, "inception_v3": 96, "maxvit_t": 224, "vit_h_14": 224}
SPARSITY = 0.9
SMALL = ["squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v3_small",
         "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf"]
FAMILIES = ["resnet18", "densenet121", "googlenet", "convnext_tiny", "swin_t"]
NPB_MAX_WEIGHTS = 15_000_000
NPB_FAST = {"squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v3_small"}


def build(name):
    return dpai.create_model("torchvision:" + name, num_classes=10, in_channels=3,
                             image_size=SIZES.get(name, 32), seed=0)


def expected_counts(model, method):
    if method in ("dpai", "random_erk", "npb"):
        return dpai.erk_budget(model, SPARSITY)
    if method == "random_uniform":
        return dpai.uniform_budget(model, SPARSITY)
    return None  # global methods: only the total is fixed


def check_methods(name, methods):
    model = build(name)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, *model.input_shape, generator=g), torch.tensor([0, 1]))]
    total = dpai.num_prunable(model)
    for method in methods:
        kwargs = dict(seed=0, data=data if method in dpai.DATA_DRIVEN else None,
                      **CHEAP.get(method, {}))
        a = dpai.prune(model, method, SPARSITY, **kwargs)
        b = dpai.prune(model, method, SPARSITY, **kwargs)
        assert a.num_total == total
        layers = expected_counts(model, method)
        if layers is None:
            assert a.num_kept == dpai.global_budget(model, SPARSITY), (name, method)
        else:
            assert a.kept_per_layer() == layers, (name, method)
        assert all(torch.equal(a[n], b[n]) for n in a), (name, method, "not deterministic")
        if method == "phew":
            check_phew_walks(model, a, name)
    return model, a


def check_phew_walks(model, mask, name):
    """Every kernel PHEW keeps lies on a walk from the input to the output, except those of
    the one walk the budget cuts short (at most one per layer). Checked independently of the
    walk graph, by the exact path count of the mask with every kept kernel filled (a walk
    keeps one tap per kernel; whether its taps line up spatially is not PHEW's concern, as in
    the reference): a walk that left the traced graph (a wrong branch, concatenation offset,
    channel shuffle or group) would leave kernels without a path."""
    filled = dpai.Mask({n: m.flatten(2).any(2)[:, :, None, None].expand_as(m).clone()
                        if m.dim() == 4 else m.clone() for n, m in mask.items()})
    kept = sum(int(m.flatten(2).any(2).sum()) if m.dim() == 4 else int(m.sum())
               for m in filled.values())
    effective = dpai.topology(model, filled)["effective_kernels"]
    assert kept - len(mask) <= effective <= kept, (name, kept, effective)


def check_topology(model, mask, name):
    topo = dpai.topology(model, mask)
    assert math.isfinite(topo["log_paths_exact"]) and topo["log_paths_exact"] > 0, name
    assert math.isfinite(topo["log_paths_reference"]), name
    assert topo["effective_nodes"] > 0 and topo["effective_params"] > 0, name
    return topo


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_every_method_small_builders(name):
    methods = [m for m in dpai.METHODS if m != "npb" or name in NPB_FAST]
    model, mask = check_methods(name, methods)
    check_topology(model, dpai.prune(model, "random_erk", SPARSITY, seed=0), name)


@pytest.mark.parametrize("name", FAMILIES)
def test_path_network_families(name):
    model = build(name)
    check_topology(model, dpai.prune(model, "random_erk", SPARSITY, seed=0), name)
    check_phew_walks(model, dpai.prune(model, "phew", SPARSITY, seed=0), name)


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "mnasnet0_5"])
def test_snip_keeps_paths_in_the_default_scoring_mode(name):
    """SNIP at 90 % scores with BatchNorm in eval mode by default (the NPB harness): on these
    32x32 builders the mask keeps input-output paths. In train mode (batch statistics) SNIP
    keeps no weight of shufflenet's last 1x1 conv (conv5.0), so no path survives there."""
    model = build(name)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(100, 3, 32, 32, generator=g), torch.arange(100) % 10)]
    default = dpai.prune(model, "snip", SPARSITY, seed=0, data=data)
    assert default.info["params"]["scoring_mode"] == "eval"
    check_topology(model, default, name)
    if name == "shufflenet_v2_x0_5":
        train = dpai.prune(model, "snip", SPARSITY, seed=0, data=data, scoring_mode="train")
        assert int(train["conv5.0"].sum()) == 0
        assert dpai.topology(model, train)["effective_nodes"] == 0


def test_every_builder_is_listed():
    names = torchvision_models()
    assert len(names) >= 80 and "torchvision:efficientnet_b0" in names
    with pytest.raises(ValueError, match="not a torchvision classification builder"):
        dpai.create_model("torchvision:fasterrcnn_resnet50_fpn")
    with pytest.raises(ValueError, match=r"model\.name='resnet5' is not one of"):
        dpai.models.check_model_name("resnet5")
    with pytest.raises(ValueError, match=r"model\.prune='conv'"):
        dpai.create_model("resnet20", prune="conv")


def test_first_layer_follows_in_channels():
    for name in ("resnet18", "mobilenet_v3_small"):
        model = dpai.create_model("torchvision:" + name, num_classes=7, in_channels=1,
                                  image_size=32, seed=0)
        assert model.input_shape == (1, 32, 32)
        assert model(torch.ones(2, 1, 32, 32)).shape == (2, 7)
    a = dpai.create_model("torchvision:resnet18", seed=3).state_dict()
    b = dpai.create_model("torchvision:resnet18", seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_auxiliary_heads_are_off():
    """GoogLeNet and Inception v3 are built without auxiliary classifiers: in train mode
    (scoring, training) their output is the logits, not a named tuple."""
    for name in ("googlenet", "inception_v3"):
        model = build(name).train()
        out = model(torch.randn(2, *model.input_shape))
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10), name
        assert not any("aux" in n for n in dpai.prunable_layers(model)), name


def test_prune_linear_mask_round_trip(tmp_path):
    """prune="linear" and "default" through Mask save/load, apply and to_torch_prune on a ViT
    (in_proj_weight is a raw parameter of nn.MultiheadAttention)."""
    for rule in ("default", "linear"):
        model = dpai.create_model("torchvision:vit_b_32", num_classes=10, image_size=32, seed=0,
                                  prune=rule)
        assert model.prune == rule
        mask = dpai.prune(model, "random_erk", 0.99, seed=0)
        path = mask.save(tmp_path / f"{rule}.pt")
        loaded = dpai.Mask.load(path).validate(model)
        assert all(torch.equal(loaded[n], mask[n]) for n in mask)
        mask.to_torch_prune(model)
        for name, layer in dpai.prunable_layers(model).items():
            assert not layer.weight[~mask[name]].any(), name
        with torch.no_grad():
            model.eval()(torch.ones(1, 3, 32, 32))


@pytest.mark.extended
@pytest.mark.parametrize("name", [n.split(":", 1)[1] for n in torchvision_models()])
def test_every_method_every_builder(name):
    methods = list(dpai.METHODS)
    if dpai.num_prunable(build(name)) > NPB_MAX_WEIGHTS:
        methods.remove("npb")
    model, _ = check_methods(name, methods)
    # the path network on every operation of the model: the dense mask has paths (the last
    # method's mask need not: SynFlow with its cheap 2 rounds empties a layer of maxvit_t)
    dense = dpai.Mask({n: torch.ones_like(w, dtype=torch.bool)
                       for n, w in dpai.models.prunable_weights(model).items()})
    check_topology(model, dense, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet50", "vit_b_16"])
def test_dpai_and_synflow_at_224(name):
    """The paper's input size: DPaI and SynFlow on the paper's large models at 224x224."""
    model = dpai.create_model("torchvision:" + name, num_classes=1000, image_size=224, seed=0)
    d = dpai.prune(model, "dpai", 0.9, seed=0, steps=3)
    assert d.kept_per_layer() == dpai.erk_budget(model, 0.9)
    traj = d.info["trajectory"]
    assert all(math.isfinite(v) for v in traj["log_paths"]) and min(traj["nodes"]) > 0
    check_topology(model, d, name)
    # SynFlow with 2 rounds (cheap) may collapse a layer at 90 %: counts and a defined
    # (possibly -inf) path count only
    s = dpai.prune(model, "synflow", 0.9, seed=0, rounds=2)
    assert s.num_kept == dpai.global_budget(model, 0.9)
    assert not math.isnan(dpai.topology(model, s)["log_paths_exact"])


def test_phew_walks_stay_inside_groups():
    """Every PHEW walk crosses the network input to output, so on a model without gates every
    kept weight is effective except those of the one walk cut short by the budget (at most
    one per layer): a walk that stepped outside a group's block would break that."""
    from test_paths_patterns import Grouped, Shuffle
    for net in (Grouped, Shuffle):
        torch.manual_seed(0)
        model = net()
        for seed in range(3):
            mask = dpai.prune(model, "phew", 0.6, seed=seed)
            topo = dpai.topology(model, mask)
            assert topo["effective_params"] >= mask.num_kept - len(mask), (net.__name__, seed)
