"""PHEW (random walks) and NPB (per-layer integer programs): exact counts, determinism,
walk structure, and NPB's program against an independent full formulation."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

import dpai
from dpai.core.budget import global_budget
from dpai.methods.npb import layout, program_value, solve_chunk, split_budget
from dpai.methods.phew import _Walker

SPARSITIES = (0.5, 0.9, 0.99, 0.999)


def small_model(seed=0):
    return dpai.create_model("resnet20", num_classes=10, in_channels=1, image_size=8, seed=seed)


class Chain(nn.Module):
    """A plain chain: conv -> conv -> conv -> global pool -> linear."""
    input_shape = (2, 6, 6)

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.pool(self.c3(self.c2(self.c1(x)).relu()).relu()).flatten(1))


def off_walk(mask, names):
    """Kept weights of a chain not continued by a kept weight on either side: a weight whose
    input unit has no kept incoming weight, or whose output unit has no kept outgoing one."""
    count = 0
    for a, b in zip(names, names[1:]):
        out_a = mask[a].flatten(1).any(1)                           # units a feeds
        in_b = mask[b].transpose(0, 1).flatten(1).any(1)            # units b reads
        count += int(mask[b].transpose(0, 1).flatten(1)[~out_a].sum())
        count += int(mask[a].flatten(1)[~in_b].sum())
    return count


# -- both methods -------------------------------------------------------------------------------
def test_registered_data_free_with_params():
    assert {"phew", "npb"} <= set(dpai.METHODS)
    assert not {"phew", "npb"} & dpai.DATA_DRIVEN
    assert dpai.method_params("phew") == {"tap": "reference", "shortcut": "reference"}
    assert dpai.method_params("npb") == {"alpha": 0.01, "beta": 1.0, "chunk_size": 32,
                                         "max_taps": None, "time_limit": 10.0,
                                         "effective_only": False, "fine_tune": "conv",
                                         "path_norm": "reference"}


def test_npb_programs_are_solved_to_optimality():
    """(Exact per-layer counts: tests/test_methods.py.) A limit no machine reaches on these
    small programs: the result cannot depend on the machine's speed."""
    model = small_model()
    for sparsity in SPARSITIES:
        mask = dpai.prune(model, "npb", sparsity, seed=0, time_limit=1e6)
        assert mask.info["time_limited"] == 0 and mask.info["programs"] > 0, sparsity


@pytest.mark.parametrize("method", ["phew", "npb"])
def test_same_seed_same_mask_other_seed_other_mask(method):
    a = dpai.prune(small_model(), method, 0.99, seed=3)
    b = dpai.prune(small_model(), method, 0.99, seed=3)
    c = dpai.prune(small_model(), method, 0.99, seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_phew_kept_weights_lie_on_walks():
    model, names = Chain(), ["c1", "c2", "c3", "fc"]
    for sparsity in (0.95, 0.99):
        for seed in (0, 1):
            mask = dpai.prune(model, "phew", sparsity, seed=seed)
            # only the last walk can be cut short (exact count): at most one dangling weight
            assert off_walk(mask, names) <= 1, (sparsity, seed)
    # the check has teeth: a random mask of the same density dangles
    assert off_walk(dpai.prune(model, "random_erk", 0.99, seed=0), names) > 1


def test_phew_never_walks_zero_norm_kernels():
    model = Chain()
    with torch.no_grad():
        for m in (model.c2, model.c3):
            o, i = torch.meshgrid(torch.arange(m.out_channels), torch.arange(m.in_channels),
                                  indexing="ij")
            m.weight[(o + i) % 2 == 0] = 0          # half the kernels, no all-zero row
    mask = dpai.prune(model, "phew", 0.8, seed=0)
    for m, name in ((model.c2, "c2"), (model.c3, "c3")):
        dead = m.weight.flatten(2).abs().sum(2) == 0
        assert mask[name].flatten(2).any(2)[dead].sum() == 0
        assert mask[name].sum() > 0


def test_phew_stalled_walks_are_an_error():
    model = Chain()
    with torch.no_grad():       # only "diagonal" kernels left: walks reach 440 of 1952 weights
        for m in (model.c2, model.c3):
            o, i = torch.meshgrid(torch.arange(m.out_channels), torch.arange(m.in_channels),
                                  indexing="ij")
            m.weight[o % m.in_channels != i] = 0
    with pytest.raises(RuntimeError, match="added no weight"):
        dpai.prune(model, "phew", 0.5, seed=0)


def test_phew_routes_resnet_shortcuts():
    """The reference's routes, read off the traced graph: a walk entering a block with a 1x1
    projection shortcut takes the main convs or the shortcut with probability 1/2 each; an
    identity shortcut is not a route (the walk crosses the block's convs); backward walks
    mirror this."""
    model = small_model()
    walker = _Walker(model, 100, 0, "uniform", "traced")
    assert walker.next_layers("layers.0.2.conv2") == {"layers.1.0.conv1": 0.5,
                                                      "layers.1.0.shortcut.0": 0.5}
    assert walker.next_layers("layers.0.1.conv2") == {"layers.0.2.conv1": 1.0}
    assert walker.next_layers("layers.1.0.conv1") == {"layers.1.0.conv2": 1.0}
    assert walker.next_layers("layers.1.0.shortcut.0") == {"layers.1.1.conv1": 1.0}
    assert walker.next_layers("fc") == {"<output>": 1.0}
    back = walker.backward[walker.names.index("layers.1.1.conv1")]
    assert {walker.names[i] for i in back.node.tolist()} == {"layers.1.0.conv2",
                                                             "layers.1.0.shortcut.0"}
    back = walker.backward[walker.names.index("layers.0.2.conv1")]
    assert {walker.names[i] for i in back.node.tolist()} == {"layers.0.1.conv2"}
    mask = dpai.prune(model, "phew", 0.99, seed=0)
    assert mask["layers.1.0.shortcut.0"].sum() > 0 and mask["layers.1.0.conv1"].sum() > 0


def test_phew_reference_shortcut_branches_one_layer_early():
    """shortcut="reference": the walk leaving the conv before the block input chooses, and
    carries its unit into the shortcut; the block input then always goes to the main convs;
    backward walks are the traced ones."""
    model = small_model()
    walker = _Walker(model, 100, 0, "uniform", "reference")
    traced = _Walker(model, 100, 0, "uniform", "traced")
    for stage in (0, 1):
        before, last = f"layers.{stage}.2.conv1", f"layers.{stage}.2.conv2"
        shortcut, first = f"layers.{stage + 1}.0.shortcut.0", f"layers.{stage + 1}.0.conv1"
        assert walker.next_layers(before) == {last: 0.5, shortcut: 0.5}
        assert walker.next_layers(last) == {first: 1.0}
    assert walker.next_layers("layers.0.1.conv2") == {"layers.0.2.conv1": 1.0}
    for i, choice in walker.backward.items():
        assert torch.equal(choice.node, traced.backward[i].node)
        assert torch.equal(choice.prob, traced.backward[i].prob)


def test_phew_vit_keeps_no_query_key_weight():
    model = dpai.create_model("vit_tiny", num_classes=10, in_channels=1, image_size=8, seed=0)
    mask = dpai.prune(model, "phew", 0.95, seed=0, tap="magnitude")
    assert mask.num_kept == global_budget(model, 0.95)
    dim = model.blocks[0].attn.proj.in_features
    for block in range(len(model.blocks)):
        qkv = mask[f"blocks.{block}.attn.qkv"]
        assert qkv[:2 * dim].sum() == 0 and qkv[2 * dim:].sum() > 0


# -- NPB ----------------------------------------------------------------------------------------
def full_program(paths, n_out, budget, taps, alpha, beta):
    """The per-chunk program in full: x (out, in) integer, kernel/node indicators binary."""
    n_in = len(paths)
    nk = n_out * n_in
    top = np.sort(paths)[::-1]
    full, rest = divmod(budget, n_out * taps)
    max_path = n_out * taps * top[:full].sum() + (rest * top[full] if rest else 0.0)
    c = -np.concatenate([(1 - alpha) * np.tile(paths, n_out) / max_path,
                         np.full(nk, beta / budget), np.full(n_in + n_out, alpha / (n_in + n_out))])
    x_of = np.arange(nk).reshape(n_out, n_in)
    rows = [np.r_[np.ones(nk), np.zeros(nk + n_in + n_out)]]
    lo, hi = [budget], [budget]
    for o in range(n_out):
        for i in range(n_in):
            r = np.zeros(2 * nk + n_in + n_out)
            r[nk + x_of[o, i]], r[x_of[o, i]] = 1, -1            # k <= x
            rows.append(r), lo.append(-np.inf), hi.append(0)
            r = np.zeros(2 * nk + n_in + n_out)
            r[x_of[o, i]], r[nk + x_of[o, i]] = 1, -taps         # x <= T k
            rows.append(r), lo.append(-np.inf), hi.append(0)
    for i in range(n_in):
        r = np.zeros(2 * nk + n_in + n_out)
        r[2 * nk + i], r[nk + x_of[:, i]] = 1, -1                # u_i <= sum_o k_oi
        rows.append(r), lo.append(-np.inf), hi.append(0)
    for o in range(n_out):
        r = np.zeros(2 * nk + n_in + n_out)
        r[2 * nk + n_in + o], r[nk + x_of[o]] = 1, -1            # v_o <= sum_i k_oi
        rows.append(r), lo.append(-np.inf), hi.append(0)
    ub = np.r_[np.full(nk, taps), np.ones(nk + n_in + n_out)]
    res = milp(c, constraints=LinearConstraint(sp.csr_matrix(np.array(rows)), lo, hi),
               bounds=Bounds(0, ub), integrality=np.ones(2 * nk + n_in + n_out))
    assert res.success
    return -res.fun


@pytest.mark.parametrize("alpha, beta", [(0.01, 1.0), (0.5, 0.1), (0.9, 0.0), (0.0, 0.0)])
def test_npb_program_matches_full_formulation(alpha, beta):
    rng = np.random.default_rng(0)
    for trial, (n_out, n_in) in enumerate([(3, 5), (4, 5), (5, 3), (6, 2), (4, 4)]):
        taps = 2 + trial % 2
        paths = rng.choice([0.0, 0.25, 0.5, 1.0], n_in)
        paths[0] = 1.0
        for budget in (1, 4, 9, n_out * n_in * taps - 2):
            x, hit = solve_chunk(paths, n_out, budget, taps, alpha, beta, 10.0, False)
            assert not hit and x.sum() == budget and x.min() >= 0 and x.max() <= taps
            assert program_value(x, paths, taps, alpha, beta) == pytest.approx(
                full_program(paths, n_out, budget, taps, alpha, beta), abs=1e-9)


def test_npb_program_extremes():
    paths = np.array([1.0, 0.5, 0.25, 0.0])
    # paths only: everything on the input with the most paths
    x, _ = solve_chunk(paths, 4, 8, 3, alpha=0.0, beta=0.0, time_limit=10.0, effective_only=False)
    assert x[:, 0].sum() == 8
    # kernels weigh most: one tap per kernel, best inputs first, all outputs reached
    x, _ = solve_chunk(paths, 4, 8, 3, alpha=0.01, beta=1.0, time_limit=10.0, effective_only=False)
    assert x.max() == 1 and x[:, :2].sum() == 8 and (x.sum(1) > 0).all()


def test_layout_and_split_are_exact():
    total, kernels = np.array([5, 0, 3, 4]), np.array([3, 0, 3, 2])
    x = layout(total, kernels, n_out=4)
    assert (x.sum(0) == total).all() and ((x > 0).sum(0) == kernels).all()
    assert (x > 0).sum(1).max() - (x > 0).sum(1).min() <= 1   # balanced output degrees
    assert split_budget(10, [32, 32, 3]) == [5, 5, 0]
    assert sum(split_budget(1001, [32, 32, 32])) == 1001


def test_npb_fine_tune_makes_kept_weights_effective():
    model = small_model()
    bare = dpai.prune(model, "npb", 0.99, seed=0, fine_tune="none")
    tuned = dpai.prune(model, "npb", 0.99, seed=0)
    assert tuned.kept_per_layer() == bare.kept_per_layer()
    before, after = dpai.topology(model, bare), dpai.topology(model, tuned)
    assert before["effective_params"] < bare.num_kept      # the forward-only program dangles
    assert after["effective_params"] > before["effective_params"]
    assert tuned.info["fine_tuned"] > 0
    # linear layers are left to "all" (the reference fine-tunes conv layers only)
    assert torch.equal(tuned["fc"], bare["fc"])


def test_phew_crosses_a_dense_attention_projection():
    """prune="linear" (the paper's ViT setting): attention's input projection is not prunable,
    so walks cross it as a dense map (from the patch embedding straight to the out
    projection, not into it) and PHEW still keeps exactly its budget, every kept weight of the
    out projection on an input-output path."""
    from test_paths_patterns import ClassTokenAttention
    torch.manual_seed(0)
    model = ClassTokenAttention()
    model.prune = "linear"
    assert "attn.in_proj_weight" not in dpai.prunable_layers(model)
    walker = _Walker(model, 10, 0, "uniform", "traced")
    assert walker.next_layers("patch") == {"attn.out_proj": 1.0}
    assert walker.next_layers("attn.out_proj") == {"fc": 1.0}
    for seed in range(3):
        mask = dpai.prune(model, "phew", 0.5, seed=seed)
        assert mask.num_kept == global_budget(model, 0.5)
        topo = dpai.topology(model, mask)
        assert topo["layers"]["attn.out_proj"]["effective_params"] == mask["attn.out_proj"].sum()
