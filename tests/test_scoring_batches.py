"""scoring_batch_size: SNIP, iterative SNIP and GraSP scored in micro-batches give the one-batch
scores (floating-point tolerance) and, where the top-k boundary is tie-free, the same mask."""
import pytest
import torch
from torch import nn

import dpai
from dpai.methods.grasp import grasp_scores
from dpai.methods.scoring import micro_batches, working_copy
from dpai.methods.snip import snip_scores

torch.set_num_threads(1)
RTOL, ATOL = 1e-4, 1e-9  # float32 sums in another order; scores are ~1e-3..1e-8


def net(seed=0):
    """No BatchNorm: nothing mixes the images of a batch, so micro-batching is exact (with
    train-mode BatchNorm each chunk is normalised by its own statistics, see micro_batches)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def sample(n=40):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10)]


@pytest.mark.parametrize("scorer", ["snip", "grasp"])
def test_micro_batched_scores_equal_one_batch(scorer):
    model, data = net(), sample()
    fn = {"snip": snip_scores, "grasp": lambda w, b: grasp_scores(w, b, 200.0)}[scorer]
    whole = fn(working_copy(model, train=True), data)
    parts = fn(working_copy(model, train=True), micro_batches(data, 7))  # 7,7,7,7,7,5
    for n in whole:
        torch.testing.assert_close(parts[n], whole[n], rtol=RTOL, atol=ATOL)
    # the chunk weights matter: unweighted chunk losses would be another score
    bad = [(x, y) for x, y, _ in micro_batches(data, 7)]
    wrong = fn(working_copy(model, train=True), bad)
    assert not all(torch.allclose(wrong[n], whole[n], rtol=RTOL, atol=ATOL) for n in whole)


@pytest.mark.parametrize("method,params", [("snip", {}), ("grasp", {}),
                                           ("iter_snip", {"rounds": 3})])
def test_micro_batched_mask_is_the_one_batch_mask(method, params):
    model, data = net(), sample()
    sparsity = 0.9
    if method != "iter_snip":  # the top-k boundary is tie-free: wider than the float error
        fn = snip_scores if method == "snip" else lambda w, b: grasp_scores(w, b, 200.0)

        def flat(batches):
            scores = fn(working_copy(model, train=True), batches)
            return torch.cat([v.flatten() for v in scores.values()])
        s, err = flat(data), (flat(micro_batches(data, 7)) - flat(data)).abs().max()
        top = s.sort(descending=True).values
        k = dpai.global_budget(model, sparsity)
        assert top[k - 1] - top[k] > 10 * err, (float(top[k - 1] - top[k]), float(err))
    one = dpai.prune(model, method, sparsity, seed=0, data=data, **params)
    for size in (7, 1):
        micro = dpai.prune(model, method, sparsity, seed=0, data=data, scoring_batch_size=size,
                           **params)
        for n in one:
            assert torch.equal(one[n], micro[n]), (method, size, n)
        assert micro.info["params"]["scoring_batch_size"] == size
        assert micro.info["num_samples"] == 40 and micro.info["num_batches"] == 1


def test_scoring_batch_size_is_validated():
    for bad in (0, 2.5, True, "8"):
        with pytest.raises(ValueError, match=r"^snip\.scoring_batch_size=.* is invalid: allowed is null or an integer >= 1$"):
            dpai.prune(net(), "snip", 0.5, seed=0, data=sample(), scoring_batch_size=bad)
