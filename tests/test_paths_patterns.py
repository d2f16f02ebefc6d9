"""Exact path counts of the traced path network against brute-force enumeration, one tiny
model per pattern of the torchvision classifiers: grouped and depthwise convolution,
concatenation, a squeeze-and-excitation gate, channel shuffle, attention with a class token,
layer scale. Each model's unit graph is written out here independently of dpai.paths (edges
per kept weight), every input-output path is walked, and the count and the set of weights on
some path must equal exact_paths' log-count and effective weights."""
import math

import pytest
import torch
from torch import nn

import dpai
from dpai.paths.counts import exact_paths
from test_paths import enumerate_paths, linear_edges


def conv_edges(mask, src, dst, size, layer, groups=1, src_offset=0):
    """'same' padding, stride 1; output o of group g reads input channels of group g."""
    out_ch, in_per_group, k, _ = mask.shape
    pad, out_per_group = k // 2, out_ch // groups
    edges = []
    for o, i, kh, kw in mask.nonzero().tolist():
        c = (o // out_per_group) * in_per_group + i + src_offset
        for y in range(size):
            for x in range(size):
                sy, sx = y + kh - pad, x + kw - pad
                if 0 <= sy < size and 0 <= sx < size:
                    edges.append(((src, c, sy, sx), (dst, o, y, x), (layer, (o, i, kh, kw))))
    return edges


def identity(src, dst, channels, size, dst_channel=lambda c: c):
    return [((src, c, y, x), (dst, dst_channel(c), y, x), None)
            for c in range(channels) for y in range(size) for x in range(size)]


def gap(src, dst, channels, size):
    return [((src, c, y, x), (dst, c), None)
            for c in range(channels) for y in range(size) for x in range(size)]


def pixels(size, channels=1):
    return [("in", c, y, x) for c in range(channels) for y in range(size) for x in range(size)]


# ---- the patterns -----------------------------------------------------------------------------
class Grouped(nn.Module):
    """grouped conv (groups=2) -> depthwise conv -> global average pool -> linear."""
    input_shape = (2, 3, 3)

    def __init__(self):
        super().__init__()
        self.g = nn.Conv2d(2, 4, 3, padding=1, groups=2, bias=False)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn, self.fc = nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.dw(torch.relu(self.g(x)))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    @staticmethod
    def graph(m):
        e = conv_edges(m["g"], "in", "a", 3, "g", groups=2)
        e += conv_edges(m["dw"], "a", "b", 3, "dw", groups=4) + gap("b", "p", 4, 3)
        return e + linear_edges(m["fc"], "p", "out", "fc"), pixels(3, 2), "out"


class Concat(nn.Module):
    """two branches concatenated on channels (DenseNet, Inception) -> conv -> pool -> linear."""
    input_shape = (1, 3, 3)

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 1, 1)
        self.c, self.fc = nn.Conv2d(4, 2, 3, padding=1), nn.Linear(2, 2)

    def forward(self, x):
        x = torch.cat([self.a(x), self.b(x), x], 1)  # the input itself is concatenated too
        return self.fc(self.c(x).mean((2, 3)))

    @staticmethod
    def graph(m):
        e = conv_edges(m["a"], "in", "cat", 3, "a") + conv_edges(m["b"], "in", "b", 3, "b")
        e += identity("b", "cat", 1, 3, lambda c: 2) + identity("in", "cat", 1, 3, lambda c: 3)
        e += conv_edges(m["c"], "cat", "c", 3, "c") + gap("c", "p", 2, 3)
        return e + linear_edges(m["fc"], "p", "out", "fc"), pixels(3), "out"


class SEGate(nn.Module):
    """a hand-written squeeze-and-excitation block: x * sigmoid(fc2(relu(fc1(pool(x))))). The
    gate is a constant: the block is the identity and fc1, fc2 carry no path."""
    input_shape = (1, 3, 3)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = self.conv(x)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x * s, 1).flatten(1))

    @staticmethod
    def graph(m):
        e = conv_edges(m["conv"], "in", "c", 3, "conv") + gap("c", "p", 3, 3)
        return e + linear_edges(m["fc"], "p", "out", "fc"), pixels(3), "out"


class Shuffle(nn.Module):
    """conv -> channel shuffle (view, transpose, reshape as ShuffleNet) -> grouped 1x1 conv."""
    input_shape = (1, 2, 2)

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1, groups=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.b(x), 1), 1))

    @staticmethod
    def graph(m):
        e = conv_edges(m["a"], "in", "a", 2, "a")
        e += identity("a", "s", 4, 2, lambda c: (c % 2) * 2 + c // 2)  # channel g*2+j -> j*2+g
        e += conv_edges(m["b"], "s", "b", 2, "b", groups=2) + gap("b", "p", 4, 2)
        return e + linear_edges(m["fc"], "p", "out", "fc"), pixels(2), "out"


class ClassTokenAttention(nn.Module):
    """ViT in miniature: patch embedding, a zero class token, positional embedding,
    nn.MultiheadAttention with a residual, LayerNorm, head on the class token."""
    input_shape = (1, 4, 4)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 3, 2, 2)
        self.cls = nn.Parameter(torch.zeros(1, 1, 3))
        self.pos = nn.Parameter(torch.randn(1, 5, 3))
        self.attn = nn.MultiheadAttention(3, 1, batch_first=True)
        self.ln = nn.LayerNorm(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.fc(self.ln(x + y)[:, 0])

    @staticmethod
    def graph(m):
        e = []
        for o, c, kh, kw in m["patch"].nonzero().tolist():
            for t in range(4):
                ty, tx = divmod(t, 2)
                e.append((("in", c, 2 * ty + kh, 2 * tx + kw), ("x", t + 1, o),
                          ("patch", (o, c, kh, kw))))
        w_in = m["attn.in_proj_weight"]
        for j, i in w_in[6:].nonzero().tolist():           # value rows 6..8
            e += [(("x", t, i), ("v", t, j), ("attn.in_proj_weight", (6 + j, i)))
                  for t in range(5)]
        e += [(("v", s, j), ("mix", t, j), None) for s in range(5) for t in range(5)
              for j in range(3)]
        for o, j in m["attn.out_proj"].nonzero().tolist():
            e += [(("mix", t, j), ("y", t, o), ("attn.out_proj", (o, j))) for t in range(5)]
        e += [(("x", t, i), ("sum", t, i), None) for t in range(5) for i in range(3)]
        e += [(("y", t, i), ("sum", t, i), None) for t in range(5) for i in range(3)]
        e += [(("sum", 0, i), ("h", i), None) for i in range(3)]
        return e + linear_edges(m["fc"], "h", "out", "fc"), pixels(4), "out"


class LayerScale(nn.Module):
    """ConvNeXt-style block: depthwise conv, a learned per-channel layer scale, residual."""
    input_shape = (1, 3, 3)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.dw = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.pw = nn.Conv2d(2, 2, 1)
        self.gamma = nn.Parameter(torch.full((2, 1, 1), 1e-6))
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.gamma * self.pw(self.dw(x))
        return self.fc(nn.functional.avg_pool2d(x, 3).flatten(1))

    @staticmethod
    def graph(m):
        e = conv_edges(m["stem"], "in", "s", 3, "stem")
        e += conv_edges(m["dw"], "s", "d", 3, "dw", groups=2)
        e += conv_edges(m["pw"], "d", "sum", 3, "pw") + identity("s", "sum", 2, 3)
        e += gap("sum", "p", 2, 3)
        return e + linear_edges(m["fc"], "p", "out", "fc"), pixels(3), "out"


PATTERNS = [Grouped, Concat, SEGate, Shuffle, ClassTokenAttention, LayerScale]


@pytest.mark.parametrize("net", PATTERNS, ids=lambda n: n.__name__)
@pytest.mark.parametrize("density", [0.8, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_paths_match_enumeration(net, density, seed):
    torch.manual_seed(seed)
    model = net()
    g = torch.Generator().manual_seed(seed)
    mask = dpai.Mask({n: torch.rand(layer.weight.shape, generator=g) < density
                      for n, layer in dpai.prunable_layers(model).items()})
    count, used = enumerate_paths(*net.graph(mask))
    log_paths, effective = exact_paths(model, mask)
    assert log_paths == (pytest.approx(math.log(count), abs=1e-9) if count else -math.inf)
    got = {(n, tuple(i)) for n, t in effective.items() for i in t.nonzero().tolist()}
    assert got == used


def test_dense_counts_are_positive_and_gate_weights_carry_no_path():
    """Dense masks: paths exist (no silent 0); the SE convs and attention's query/key rows
    have no effective weight, the value rows all do."""
    se = SEGate()
    topo = dpai.topology(se, dpai.Mask.ones(se))
    assert topo["log_paths_exact"] > 0
    assert topo["collapsed_layers"] == ["fc1", "fc2"]
    att = ClassTokenAttention()
    _, effective = exact_paths(att, dpai.Mask.ones(att))
    assert not effective["attn.in_proj_weight"][:6].any()
    assert effective["attn.in_proj_weight"][6:].all()


def test_unknown_operation_is_named():
    class Odd(nn.Module):
        input_shape = (3,)

        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) * self.b(x)  # a product of two path-carrying tensors, no gate

    with pytest.raises(ValueError, match=r"no path-count role for a product .*mul"):
        exact_paths(Odd(), dpai.Mask.ones(Odd()))

    class Sorted(nn.Module):
        input_shape = (3,)

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return torch.cumsum(self.a(x), 1)

    with pytest.raises(ValueError, match="no path-count role for .*cumsum"):
        exact_paths(Sorted(), dpai.Mask.ones(Sorted()))


def test_prune_linear_keeps_attention_input_projection_dense():
    model = dpai.create_model("torchvision:vit_b_16", num_classes=10, image_size=32,
                              prune="linear")
    names = list(dpai.prunable_layers(model))
    assert not any(n.endswith("in_proj_weight") for n in names)
    assert "encoder.layers.encoder_layer_0.self_attention.out_proj" in names
    assert "conv_proj" in names and "heads.head" in names
    default = dpai.create_model("torchvision:vit_b_16", num_classes=10, image_size=32)
    extra = set(dpai.prunable_layers(default)) - set(names)
    assert len(extra) == 12 and all(n.endswith("self_attention.in_proj_weight") for n in extra)


def test_path_network_runs_without_tf32_and_restores_it():
    """Inside the path network TF32 is off for matmul and cuDNN; the caller's setting is back
    after (the flags exist on CPU builds too, so this runs everywhere)."""
    from dpai.paths.network import PathNetwork
    model = Grouped()
    net = PathNetwork(model, "exact")
    seen = []
    net.pre_hooks["fc"] = lambda x: seen.append((torch.backends.cuda.matmul.allow_tf32,
                                                 torch.backends.cudnn.allow_tf32))
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        net({n: m.double() for n, m in dpai.Mask.ones(model).items()})
        assert seen == [(False, False)]
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == \
            (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dpai_mask_does_not_depend_on_tf32_on_cuda():
    model = dpai.create_model("resnet20", seed=0).cuda()
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    masks = []
    try:
        for flag in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = flag
            masks.append(dpai.prune(model, "dpai", 0.99, seed=0, steps=30))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


def test_unit_graph_follows_concatenation_shuffle_and_gates():
    """dpai.paths.units (PHEW's walk graph): which output unit reaches which input unit of the
    next prunable layers, against the mappings written out by hand."""
    from dpai.paths.units import INPUT, OUTPUT, unit_graph
    eye = lambda n: torch.eye(n, dtype=torch.bool)  # noqa: E731
    g = unit_graph(Concat())
    # cat([a (2 ch), b (1 ch), input (1 ch)]) -> c: a -> 0, 1; b -> 2; the input -> 3
    assert torch.equal(g.edges[("a", "c")], torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]]).bool())
    assert torch.equal(g.edges[("b", "c")], torch.tensor([[0, 0, 1, 0]]).bool())
    assert torch.equal(g.edges[(INPUT, "c")], torch.tensor([[0, 0, 0, 1]]).bool())
    assert torch.equal(g.edges[("c", "fc")], eye(2)) and torch.equal(g.edges[("fc", OUTPUT)], eye(2))
    g = unit_graph(Shuffle())
    shuffle = torch.zeros(4, 4, dtype=torch.bool)
    shuffle[torch.arange(4), (torch.arange(4) % 2) * 2 + torch.arange(4) // 2] = True
    assert torch.equal(g.edges[("a", "b")], shuffle)
    g = unit_graph(SEGate())                       # the gate's convs are not in the graph
    assert g.nodes == [INPUT, "conv", "fc", OUTPUT]
    assert set(g.edges) == {(INPUT, "conv"), ("conv", "fc"), ("fc", OUTPUT)}
    g = unit_graph(ClassTokenAttention())
    rows = {name: r for name, r in g.rows.items() if r}
    assert rows and all(r == 2 * g.units_out[name] for name, r in rows.items())  # v rows


class DeadDeepBranch(nn.Module):
    """A short live path next to a 176-layer branch cut off from the input (its first layer
    fully pruned): 64^175 > 2^1023 paths lead from that branch to the output, more than
    float64 holds, while the live count is small."""
    input_shape = (4,)
    depth = 176

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.short = nn.Linear(8, 10)
        self.branch = nn.Sequential(nn.Linear(8, 64),
                                    *[nn.Linear(64, 64) for _ in range(self.depth - 2)],
                                    nn.Linear(64, 10))

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.short(h) + self.branch(h)


def test_effective_weights_survive_counts_beyond_float64_on_dead_units():
    """Backward counts from the dead branch's units overflow float64; through the pruned
    first layer's zeros (0 x inf = NaN) they used to poison the live units, whose weights then
    counted as not effective (densenet169 with PHEW: 26,417 kept kernels lost)."""
    model = DeadDeepBranch()
    mask = dpai.Mask.ones(model)
    mask["branch.0"].zero_()
    log_paths, effective = exact_paths(model, mask)
    assert log_paths == pytest.approx(math.log(4 * 8 * 10), abs=1e-9)
    assert effective["inp"].all() and effective["short"].all()
    assert not any(effective[n].any() for n in effective if n.startswith("branch"))


class DeepChain(nn.Module):
    """190 dense 64-wide linear layers: 64^191 = 2^1140 paths, beyond float64 forward and, with
    one pruned weight near the input, NaN in the scaled backward (0 x inf): the support count
    (each layer's input divided by its maximum) takes over."""
    input_shape = (64,)
    depth = 190

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(64, 64) for _ in range(self.depth)])

    def forward(self, x):
        return self.layers(x)


def test_counts_beyond_float64_keep_exact_log_and_every_effective_weight():
    model = DeepChain()
    mask = dpai.Mask.ones(model)
    mask["layers.1"][0, 0] = False  # near the input, where the backward counts overflow
    counts = [1] * 64  # paths from the input to each unit, exactly, in Python integers
    for i in range(model.depth):
        m = mask[f"layers.{i}"].tolist()
        counts = [sum(c for c, keep in zip(counts, row) if keep) for row in m]
    log_paths, effective = exact_paths(model, mask)
    assert log_paths == pytest.approx(math.log(sum(counts)), rel=1e-12)
    assert all(torch.equal(effective[n], mask[n]) for n in mask)
