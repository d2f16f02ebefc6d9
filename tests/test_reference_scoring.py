"""SNIP, iterative SNIP and GraSP against the NPB / Synaptic-Flow prune loop, in both scoring
modes (fixture and how it was made: tests/reference/scoring_baselines.py).

One-shot SNIP and GraSP score the same |g * W| and W * Hg as the reference on the same weights
and batch, and the reference keeps every score above the k-th smallest with no tie there, so our
masks must be bit-identical in each mode; the two modes' masks overlap by Jaccard 0.05-0.17, so
a mask scored in the wrong mode cannot pass.

Iterative SNIP differs by design: ours is nested (a pruned weight stays pruned, as de Jorge et
al.), while the reference's loop rescores every weight each round -- pruned ones by |dL/dW_eff *
W_init|, which is not zero -- and lets them return (it re-admits 37 000 to 2.9 million weights
over a run). The masks then differ weight by weight, so the test compares where the weights go:
the per-layer kept counts, by their L1 distance divided by the kept total.
"""
import pytest
import torch

import dpai
from reference import common

FIX = common.read("scoring_baselines.json")
MODES = ("eval", "train")
OTHER = {"eval": "train", "train": "eval"}
ROUNDS = 10  # the fixture's short run of the reference loop (100 rounds: the regeneration script)
# Nested vs re-admitting, 10 rounds, measured L1/total: 0.25 (eval 90 %), 0.10 (train 90 %), 0.21
# (eval 99 %) against the same mode's reference, 0.32-0.55 against the other mode's: 0.3
# separates them, so a loop scored in the wrong mode (or a one-shot mask) fails.
LAYER_L1 = 0.3


def ours(method: str, mode: str, sparsity: float, **options) -> list[torch.Tensor]:
    if method == "grasp":  # the reference: temperature 200, the whole batch in one pass
        options.update(temperature=200.0, scoring_batch_size=None)
    mask = dpai.prune(common.our_model(), method, sparsity, seed=0, data=[common.batch()],
                      scoring_mode=mode, **options)
    return [mask[n] for n in common.layer_names()]


def run(method, mode, sparsity, rounds=None):
    return FIX["runs"][f"{method}/{mode}/{sparsity}" + (f"/r{rounds}" if rounds else "")]


def layer_l1(masks: list[torch.Tensor], ref: dict) -> float:
    kept = common.kept_counts(masks)
    return sum(abs(kept[n] - ref["kept"][n]) for n in kept) / sum(ref["kept"].values())


@pytest.mark.parametrize("sparsity", [0.9, 0.99])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_one_shot_masks_equal_the_reference(method, mode, sparsity):
    ref = run(method, mode, sparsity)
    assert ref["ties_at_threshold"] == 1  # the reference kept exactly the budget
    masks = ours(method, mode, sparsity)
    assert common.kept_counts(masks) == ref["kept"]
    assert common.mask_hash(masks) == ref["hash"]
    assert run(method, OTHER[mode], sparsity)["hash"] != ref["hash"]


@pytest.mark.parametrize("mode,sparsity", [("eval", 0.9), ("train", 0.9), ("eval", 0.99)])
def test_iterative_snip_layer_counts_follow_the_reference(mode, sparsity):
    masks = ours("iter_snip", mode, sparsity, rounds=ROUNDS)
    assert layer_l1(masks, run("iter_snip", mode, sparsity, ROUNDS)) < LAYER_L1
    assert layer_l1(masks, run("iter_snip", OTHER[mode], sparsity, ROUNDS)) > LAYER_L1


def test_reference_iterative_snip_collapses_in_train_mode_at_99():
    """At 99 % in train mode the reference's 10-round loop ends with 173 weights scoring above
    zero: it keeps only those (every score <= the threshold 0 is pruned) and its own sparsity
    check aborts the run. Ours keeps exactly the budget (seeded ties among the zero scores)."""
    ref = run("iter_snip", "train", 0.99, ROUNDS)
    assert ref["total"] == 173 and ref["harness_aborted"]
    masks = ours("iter_snip", "train", 0.99, rounds=ROUNDS)
    assert sum(int(m.sum()) for m in masks) == ref["requested"] == 2709


@pytest.mark.parametrize("mode,sparsity", [("eval", 0.9), ("train", 0.9), ("eval", 0.99)])
def test_readmitting_iterative_snip_equals_the_reference(mode, sparsity):
    """With re-admission (the reference loop's rule) the masks are bit-identical."""
    masks = ours("iter_snip", mode, sparsity, rounds=ROUNDS, readmit=True)
    assert common.mask_hash(masks) == run("iter_snip", mode, sparsity, ROUNDS)["hash"]
