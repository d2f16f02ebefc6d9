"""The exact path count and effective-weight criterion against brute-force enumeration."""
import math
import sys

import pytest
import torch
from torch import nn

import dpai
from dpai.paths.counts import exact_paths

sys.setrecursionlimit(10_000)


class TinyMLP(nn.Module):
    input_shape = (5,)

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.c(self.relu(self.b(self.relu(self.a(x)))))


class TinyResNet(nn.Module):
    """conv -> residual block (identity shortcut) -> max pool -> residual block (1x1 conv
    shortcut) -> global average pool -> linear: residual sums and both poolings."""
    input_shape = (1, 4, 4)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.c1, self.c2 = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.MaxPool2d(2)
        self.c3, self.c4 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.short = nn.Conv2d(2, 3, 1)
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(3, 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.relu(self.bn(self.c2(self.relu(self.c1(x)))) + x)
        x = self.pool(x)
        x = self.relu(self.c4(self.relu(self.c3(x))) + self.short(x))
        return self.fc(self.gap(x).flatten(1))


# ---- an independent unit-level graph of the same networks --------------------------------
def linear_edges(mask, src, dst, layer):
    return [((src, i), (dst, o), (layer, (o, i))) for o, i in mask.nonzero().tolist()]


def conv_edges(mask, src, dst, size, layer):
    pad = mask.shape[-1] // 2
    out = []
    for o, c, kh, kw in mask.nonzero().tolist():
        for y in range(size):
            for x in range(size):
                sy, sx = y + kh - pad, x + kw - pad
                if 0 <= sy < size and 0 <= sx < size:
                    out.append(((src, c, sy, sx), (dst, o, y, x), (layer, (o, c, kh, kw))))
    return out


def identity_edges(src, dst, channels, size):
    return [((src, c, y, x), (dst, c, y, x), None)
            for c in range(channels) for y in range(size) for x in range(size)]


def pool_edges(src, dst, channels, size, k):
    return [((src, c, y, x), (dst, c, y // k, x // k), None)
            for c in range(channels) for y in range(size) for x in range(size)]


def mlp_graph(m):
    edges = linear_edges(m["a"], "in", "h1", "a") + linear_edges(m["b"], "h1", "h2", "b") \
        + linear_edges(m["c"], "h2", "out", "c")
    return edges, [("in", i) for i in range(5)], "out"


def resnet_graph(m):
    e = conv_edges(m["stem"], "in", "s", 4, "stem")
    e += conv_edges(m["c1"], "s", "h1", 4, "c1") + conv_edges(m["c2"], "h1", "b1", 4, "c2")
    e += identity_edges("s", "b1", 2, 4) + pool_edges("b1", "p", 2, 4, 2)
    e += conv_edges(m["c3"], "p", "h3", 2, "c3") + conv_edges(m["c4"], "h3", "b2", 2, "c4")
    e += conv_edges(m["short"], "p", "b2", 2, "short")
    e += [(("b2", c, y, x), ("g", c), None) for c in range(3) for y in range(2) for x in range(2)]
    e += linear_edges(m["fc"], "g", "out", "fc")
    return e, [("in", 0, y, x) for y in range(4) for x in range(4)], "out"


def enumerate_paths(edges, sources, sink):
    """Walk every input-output path one by one; return the count and the weights used."""
    succ = {}
    for a, b, w in edges:
        succ.setdefault(a, []).append((b, w))
    count, used = 0, set()

    def walk(node, weights):
        nonlocal count
        if node[0] == sink:
            count += 1
            used.update(weights)
            return
        for nxt, w in succ.get(node, ()):
            walk(nxt, weights + ((w,) if w else ()))

    for s in sources:
        walk(s, ())
    return count, used


CASES = [(TinyMLP, mlp_graph), (TinyResNet, resnet_graph)]


@pytest.mark.parametrize("net,graph", CASES)
@pytest.mark.parametrize("density", [0.7, 0.5, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_paths_match_enumeration(net, graph, density, seed):
    model = net()
    g = torch.Generator().manual_seed(seed)
    mask = dpai.Mask({n: torch.rand(l.weight.shape, generator=g) < density
                      for n, l in dpai.prunable_layers(model).items()})
    count, used = enumerate_paths(*graph(mask))
    log_paths, effective = exact_paths(model, mask)
    assert log_paths == (pytest.approx(math.log(count), abs=1e-9) if count else -math.inf)
    expected = {(layer, idx) for layer, idx in used}
    got = {(n, tuple(i)) for n, t in effective.items() for i in t.nonzero().tolist()}
    assert got == expected
    topo = dpai.topology(model, mask)
    assert topo["effective_params"] == len(expected)


def test_reference_log_paths_differs_from_exact_on_residual_nets():
    """ResNet-20 at 99 %: the reference quantity normalises branches separately (43.6 vs 28.7
    for the authors' seed-0 mask), so both are reported."""
    model = dpai.create_model("resnet20")
    topo = dpai.topology(model, dpai.prune(model, "random_erk", 0.99, seed=0))
    assert topo["log_paths_reference"] > topo["log_paths_exact"] + 5


def test_dense_resnet20_topology():
    model = dpai.create_model("resnet20")
    topo = dpai.topology(model, dpai.Mask.ones(model))
    assert topo["effective_params"] == 270_896
    assert topo["effective_nodes"] == 794 and topo["collapsed_layers"] == []
    assert topo["layers"]["conv1"] == {"kept": 432, "effective_params": 432, "nodes": 16,
                                       "effective_nodes": 16, "kernels": 48,
                                       "effective_kernels": 48}


def test_collapsed_layer_is_reported():
    model = dpai.create_model("resnet20", in_channels=1, image_size=8)
    mask = dpai.Mask.ones(model)
    mask["layers.0.0.conv2"][:] = False
    topo = dpai.topology(model, mask)
    # conv1 of that block only feeds the dead conv2, so it collapses with it
    assert topo["collapsed_layers"] == ["layers.0.0.conv1", "layers.0.0.conv2"]
    assert topo["log_paths_exact"] > 0  # the identity shortcut still carries paths


def test_large_counts_do_not_overflow():
    model = dpai.create_model("vgg19_bn", num_classes=100)
    log_paths, _ = exact_paths(model, dpai.Mask.ones(model))
    assert math.isfinite(log_paths) and log_paths > 100
