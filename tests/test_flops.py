"""dpai.flops: multiply-accumulates per image, checked against counts worked out by hand."""
import pytest
import torch
from torch import nn

import dpai
from dpai.paths.flops import output_positions


class Tiny(nn.Module):
    """2x6x6 input -> conv 2->3 (3x3, pad 1) -> BN -> ReLU -> conv 3->4 (3x3, stride 2, pad 1)
    -> ReLU -> global average pool -> linear 4->5."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 4, 3, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)
        self.input_shape = (2, 6, 6)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.bn(self.c1(x)))))
        return self.fc(self.pool(x).flatten(1))


def tiny_mask():
    """c1 keeps output channel 0 (18 weights); c2 keeps 0<-0 (9, effective) and 1<-1 (9, fed by
    the empty channel 1 of c1: not effective); fc keeps column 0 (5, effective) and [0, 2]
    (fed by the empty channel 2 of c2: not effective)."""
    m = {"c1": torch.zeros(3, 2, 3, 3, dtype=torch.bool), "c2": torch.zeros(4, 3, 3, 3,
                                                                             dtype=torch.bool),
         "fc": torch.zeros(5, 4, dtype=torch.bool)}
    m["c1"][0] = True
    m["c2"][0, 0] = True
    m["c2"][1, 1] = True
    m["fc"][:, 0] = True
    m["fc"][0, 2] = True
    return dpai.Mask(m)


def test_tiny_conv_net_by_hand():
    model, mask = Tiny(), tiny_mask()
    topo = dpai.topology(model, mask)
    assert {n: topo["layers"][n]["effective_params"] for n in mask} == {"c1": 18, "c2": 9,
                                                                        "fc": 5}
    out = dpai.flops(model, mask, topo)
    # positions: c1 6x6 = 36, c2 (stride 2) 3x3 = 9, fc 1
    assert {n: v["positions"] for n, v in out["layers"].items()} == {"c1": 36, "c2": 9, "fc": 1}
    assert out["dense"] == 3 * 2 * 9 * 36 + 4 * 3 * 9 * 9 + 5 * 4 == 2936
    assert out["kept"] == 18 * 36 + 18 * 9 + 6 * 1 == 816
    assert out["effective"] == 18 * 36 + 9 * 9 + 5 * 1 == 734
    assert out["layers"]["c2"] == {"positions": 9, "dense": 972, "kept": 162, "effective": 81}
    # without a topology it is computed: same numbers
    assert dpai.flops(model, mask) == out


def test_model_is_left_untouched():
    model = Tiny().train()
    model.fc.eval()                       # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dpai.flops(model, tiny_mask())
    assert model.training and model.bn.training and not model.fc.training
    after = model.state_dict()
    # in train mode a zero batch would pull BN's running_var from 1 towards 0
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model._forward_hooks and not model.c1._forward_hooks


def test_resnet20_dense_macs_from_layer_shapes():
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32, seed=0)
    # the output side of every prunable layer: stem and stage 1 at 32x32, stage 2 at 16x16,
    # stage 3 at 8x8 (stride-2 first conv and 1x1 shortcut of each new stage), classifier 1
    side = {"conv1": 32, "layers.0": 32, "layers.1": 16, "layers.2": 8, "fc": 1}
    expected_pos = {}
    for name, m in dpai.prunable_layers(model).items():
        key = "conv1" if name == "conv1" else "fc" if name == "fc" else name[:8]
        expected_pos[name] = side[key] ** 2
    assert output_positions(model) == expected_pos
    dense = sum(m.weight.numel() * expected_pos[n] for n, m in dpai.prunable_layers(model).items())
    # by hand: 16*3*9*32^2 + 6*16*16*9*32^2 + 32*16*9*16^2 + 5*32*32*9*16^2 + 32*16*16^2
    #          + 64*32*9*8^2 + 5*64*64*9*8^2 + 64*32*8^2 + 64*10
    by_hand = (16 * 3 * 9 * 1024 + 6 * 16 * 16 * 9 * 1024 + 32 * 16 * 9 * 256
               + 5 * 32 * 32 * 9 * 256 + 32 * 16 * 256 + 64 * 32 * 9 * 64
               + 5 * 64 * 64 * 9 * 64 + 64 * 32 * 64 + 64 * 10)
    assert dense == by_hand == 40_813_184

    full = dpai.Mask.ones(model)
    out = dpai.flops(model, full)
    assert out["dense"] == out["kept"] == out["effective"] == by_hand

    gen = torch.Generator().manual_seed(0)
    sparse = dpai.Mask({n: torch.rand(t.shape, generator=gen) < 0.05 for n, t in full.items()})
    topo = dpai.topology(model, sparse)
    out = dpai.flops(model, sparse, topo)
    assert out["dense"] == by_hand
    assert out["kept"] == sum(int(t.sum()) * expected_pos[n] for n, t in sparse.items())
    assert out["effective"] == sum(topo["layers"][n]["effective_params"] * expected_pos[n]
                                   for n in sparse)
    assert out["effective"] <= out["kept"] < out["dense"]


def test_vit_linear_layers_count_tokens():
    model = dpai.create_model("vit_tiny", num_classes=10, in_channels=1, image_size=8, seed=0)
    pos = output_positions(model)
    # 8x8 digits, 1x1 patches: 64 patch positions, 65 tokens with the class token, classifier 1
    assert pos["patch_embed"] == 64 and pos["blocks.0.attn.qkv"] == 65
    assert pos["blocks.3.mlp.2"] == 65 and pos["fc"] == 1


def test_mask_that_does_not_fit_is_named():
    model, mask = Tiny(), tiny_mask()
    del mask["fc"]
    with pytest.raises(ValueError, match=r"missing \['fc'\]"):
        dpai.flops(model, mask, {"layers": {}})
