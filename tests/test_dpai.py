"""DPaI: the straight-through gradient, the update rule, and the reference behaviour."""
import pytest
import torch

import dpai
from dpai.paths.network import PathNetwork
from dpai.methods.dpai_method import CollapseWarning, DPaI


def small_model():
    return dpai.create_model("resnet20", num_classes=10, in_channels=1, image_size=8, seed=0)


def test_ste_gradient_and_update_rule():
    """With alpha=0 and plain SGD (lr 1) one step moves S by dlogP/dM * sign(S), the
    straight-through gradient of M = topk(|S|) computed here independently by autograd."""
    model = small_model()
    search = DPaI(model, 0.9, seed=0, alpha=0.0, lr=1.0, optimizer="sgd")
    before = search.scores.detach().clone()
    # independent STE: M = hard + |S| - |S|.detach() has dM/dS = sign(S)
    s = before.clone().requires_grad_(True)
    hard = search._hard_mask(search._select()).clone()
    ste = hard + s.abs() - s.abs().detach()
    views = {n: m.view(sh) for n, m, sh in zip(search.names, ste.split(search.sizes),
                                                search.shapes)}
    PathNetwork(model, "reference")(views).backward()
    search.step()
    # (hard + |s| - |s|) differs from hard by float rounding, hence the tolerance
    torch.testing.assert_close(search.scores.detach() - before, s.grad, rtol=1e-3, atol=1e-6)
    assert s.grad.abs().sum() > 0


def test_node_and_kernel_terms_only_touch_dead_units():
    """alpha=1, beta=0: exactly the weights into dead output channels that have a nonzero path
    gradient move, by lr * |G| (SGD, lr 1), and at 99 % there are such weights."""
    model = small_model()
    search = DPaI(model, 0.99, seed=0, alpha=1.0, beta=0.0, lr=1.0, optimizer="sgd")
    before = search.scores.detach().clone()
    hard = search._hard_mask(search._select()).clone().requires_grad_(True)
    views = {n: m.view(sh) for n, m, sh in zip(search.names, hard.split(search.sizes),
                                                search.shapes)}
    total, log_scale = PathNetwork(model, "reference")(views, parts=True)
    (grad,) = torch.autograd.grad(torch.log(total) + log_scale, hard)
    expected = []
    for g, m, shape in zip(grad.split(search.sizes), hard.detach().split(search.sizes),
                           search.shapes):
        g, m = g.view(shape), m.view(shape)
        alive = ((g != 0) & (m > 0)).flatten(1).any(1)          # effective nodes
        dead_rows = (~alive).view(-1, *([1] * (len(shape) - 1)))
        expected.append(((g != 0) & dead_rows).flatten())
    expected = torch.cat(expected)
    search.step()
    moved = search.scores.detach() != before
    assert expected.any() and torch.equal(moved, expected)
    step = (search.scores.detach() - before)[moved]
    # ascent on dlogP/dS = G * sign(S): S moves by +G * sign(S)
    # (S + d) - S is exact only up to the rounding of S (|S| ~ 1: ulp 1.2e-7)
    torch.testing.assert_close(step, (grad * before.sign())[moved], rtol=1e-3, atol=5e-7)


def test_mask_is_exact_deterministic_and_weight_independent():
    model = small_model()
    a = dpai.prune(model, "dpai", 0.99, seed=1, steps=30)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    b = dpai.prune(model, "dpai", 0.99, seed=1, steps=30)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert a.kept_per_layer() == dpai.erk_budget(model, 0.99)
    c = dpai.prune(model, "dpai", 0.99, seed=2, steps=30)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_trajectory_is_recorded():
    mask = dpai.prune(small_model(), "dpai", 0.9, seed=0, steps=7)
    traj = mask.info["trajectory"]
    assert traj["step"] == list(range(7))
    for key in ("objective", "log_paths", "nodes", "kernels", "params"):
        assert len(traj[key]) == 7 and all(isinstance(v, float) for v in traj[key])
    assert mask.info["params"]["alpha"] == 0.99 and mask.info["params"]["steps"] == 7


def test_a_collapsed_result_is_a_warned_mask_not_an_error():
    """mobilenet_v3_small on 8x8 digits at 99 %: a 2-step search ends without any path (its
    random ERK start has none). That is a result the report shows as layer collapse, so the
    search returns its mask (exact ERK counts) and warns instead of failing the pipeline."""
    model = dpai.create_model("torchvision:mobilenet_v3_small", num_classes=10, in_channels=1,
                              image_size=8, seed=0)
    with pytest.warns(CollapseWarning, match="the mask has collapsed"):
        mask = dpai.prune(model, "dpai", 0.99, seed=0, steps=2)
    assert mask.kept_per_layer() == dpai.erk_budget(model, 0.99)
    assert dpai.topology(model, mask)["effective_nodes"] == 0


@pytest.mark.parametrize("key,value", [("alpha", 1.5), ("beta", -0.1), ("lr", 0.0),
                                       ("steps", -1), ("optimizer", "rmsprop")])
def test_bad_parameters(key, value):
    with pytest.raises(ValueError, match=f"{key}="):
        dpai.prune(small_model(), "dpai", 0.9, seed=0, **{key: value})


# Measured with the authors' code (ResNet-20, CIFAR-10 shape, their
# seeds 0-2): (low, high) of log P at step 0 and of the final log P, nodes, kernels, params.
REFERENCE = {
    0.9: dict(log_paths0=(92.0, 92.7), log_paths=(102.8, 103.1), nodes=(677, 706),
              kernels=(10_700, 12_700), params=(27_040, 27_100)),
    0.99: dict(log_paths0=(42.8, 43.6), log_paths=(70.1, 72.4), nodes=(269, 287),
               kernels=(1_450, 1_490), params=(2_690, 2_710)),
}


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [pytest.param(0.9, marks=pytest.mark.extended), 0.99])
def test_reference_behaviour_resnet20_cifar10(sparsity):
    """Paper defaults, seeds 0, 1, 2: log-paths rise, nodes and kernels fall and the objective
    goes down (Adam cancels the alpha weighting), by the amounts the reference code gives.
    Trajectories are chaotic (a different Adam kernel alone moves a seed's final node count by
    ~5 %; so does another CPU's float kernels), so each seed's node, kernel and effective
    param counts must land within 5 % of the reference range (params at most the kept budget)
    and the seed mean within 2 %; log-paths within 1 (a factor e) per seed and 0.5 for the
    mean. The step-exact comparison with the authors' code is tests/test_dpai_reference.py."""
    model = dpai.create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    ref = REFERENCE[sparsity]
    kept = sum(dpai.erk_budget(model, sparsity).values())
    finals = {key: [] for key in ("log_paths", "nodes", "kernels", "params")}
    for seed in (0, 1, 2):
        traj = dpai.prune(model, "dpai", sparsity, seed=seed).info["trajectory"]
        lo, hi = ref["log_paths0"]
        assert lo - 0.5 <= traj["log_paths"][0] <= hi + 0.5
        assert traj["nodes"][-1] < traj["nodes"][0] and traj["kernels"][-1] < traj["kernels"][0]
        assert traj["objective"][-1] < traj["objective"][0]
        for key, values in finals.items():
            lo, hi = ref[key]
            values.append(traj[key][-1])
            if key == "log_paths":
                # a log-count: +-1 is a factor e in paths (5 % of 70 would be a factor 30)
                assert lo - 1.0 <= values[-1] <= hi + 1.0, (seed, key, values[-1], ref[key])
            elif key == "params":
                # effective params cannot exceed the kept budget; the bound that can fail is
                # the lower one, 5 % per seed as nodes and kernels (an AVX-512/AMX CPU gave
                # seed 2 2639, 1.9 % under the reference's lowest; the mean stays within 2 %)
                assert 0.95 * lo <= values[-1] <= kept, (seed, key, values[-1], ref[key])
            else:
                assert 0.95 * lo <= values[-1] <= 1.05 * hi, (seed, key, values[-1], ref[key])
    for key, values in finals.items():
        lo, hi = ref[key]
        mean = sum(values) / 3
        if key == "log_paths":
            assert lo - 0.5 <= mean <= hi + 0.5, (key, values, ref[key])
        else:
            assert 0.98 * lo <= mean <= 1.02 * hi, (key, values, ref[key])
