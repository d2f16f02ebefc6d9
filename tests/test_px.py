"""PX against its reference code (tests/reference/px.json, made by tests/reference/px.py from
github.com/iurada/px-ntk-pruning) and PX's own guarantees."""
import pytest
import torch
from torch import nn

import dpai
from dpai.methods import px as px_module
from reference import common

FIXTURE = common.read("px.json")


def ours(sparsity, rounds, version="fixed", seed=0):
    mask = dpai.prune(common.our_model(), "px", sparsity, seed=seed, data=[common.batch()],
                      rounds=rounds, version=version)
    masks = [mask[n] for n in common.layer_names()]
    return common.kept_counts(masks), common.mask_hash(masks)


@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_fixed_equals_reference(sparsity):
    # the same maths as the reference with its path-kernel BatchNorm in eval mode and dpai's
    # selection: over 5 rounds float rounding (see below) flips no weight, so the very same
    # mask (measured here on one thread; another CPU kind may round otherwise)
    ref = FIXTURE["runs"][f"fixed/exact/{sparsity}/5"]
    kept, digest = ours(sparsity, 5)
    assert kept == ref["kept"]
    assert digest == ref["hash"]


def layer_diff(a, b):
    """Sum over layers of |per-layer kept count difference| (0: the same layer budgets)."""
    return sum(abs(a[n] - b[n]) for n in a)


# PX is chaotic over many rounds: a round's mask sets the real network's ReLU gates of the
# next, so one weight chosen differently changes later scores everywhere. The reference
# against itself with only its own selection instead of dpai's (a weight or so per round,
# fixture "fixed/reference") has per-layer counts whose |differences| sum to 4 % (90 %) and
# 10 % (99 %) of the kept weights after 100 rounds; the two versions are 60-100 % apart. Float rounding (the
# reference's avg_pool2d and a batch of 100 identical ones vs our adaptive pool and one image)
# starts such a cascade in train-mode-BatchNorm networks (release, whose centred gradients
# cancel) within 5 rounds, and in every version within 100.
@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_release_close_to_reference(sparsity):
    # observed: 0 (90 %) and 4 % (99 %) of the kept weights; 10 % allowed, and the
    # fixed version of the reference is 43 % and 100 % away (a wrong formula lands there)
    runs = FIXTURE["runs"]
    kept, _ = ours(sparsity, 5, "release")
    total = sum(kept.values())
    assert total == runs[f"release/exact/{sparsity}/5"]["total"]
    assert layer_diff(kept, runs[f"release/exact/{sparsity}/5"]["kept"]) <= 0.1 * total
    assert layer_diff(kept, runs[f"fixed/exact/{sparsity}/5"]["kept"]) > 0.3 * total


@pytest.mark.extended
@pytest.mark.parametrize("version", ["fixed", "release"])
@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_close_to_reference_100_rounds(version, sparsity):
    # the reference's 100-round settings (~4 minutes per mask on one thread); observed: fixed
    # 5 % (90 %) and 18 % (99 %), release 10 % and 8 %, against 4 % and 10 % for the
    # reference against itself (see above) and 60-100 % between the versions: 25 % allowed
    runs = FIXTURE["runs"]
    kept, _ = ours(sparsity, 100, version)
    assert layer_diff(kept, runs[f"{version}/exact/{sparsity}/100"]["kept"]) <= 0.25 * sum(
        kept.values())


def test_head_path_kernel_is_degenerate():
    # the fixture's one-round check of the reference HEAD: features before the classifier are
    # rounding noise (<1e-5) in the path-kernel network, against ~1e6 with eval-mode BatchNorm
    check = FIXTURE["degeneracy_one_round_90"]
    assert check["head"]["pooled_max_abs"] < 1e-5 < 1e3 < check["fixed"]["pooled_max_abs"]
    assert check["head"]["score_max"] < 1e-6 * check["fixed"]["score_max"]


def test_pruned_weights_never_return_and_model_untouched():
    model = common.our_model()
    model.train()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = common.batch()
    masks = list(px_module.px_masks(model, 0.99, seed=0, data=[common.batch()], rounds=4))
    for before, after in zip(masks, masks[1:]):
        for n in before:
            assert not (after[n] & ~before[n]).any(), n  # nothing pruned comes back
    # the caller's model: same weights and buffers, mode, and ReLU modules that still act
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.training
    assert [m for m in model.modules() if isinstance(m, nn.ReLU)] == relus
    assert (model.relu(-x.abs()) == 0).all()


def test_other_activations_stay():
    # only nn.ReLU modules are gated or removed; a GELU stays a GELU in every network, so the
    # mask changes but keeps its exact count
    model = common.our_model()
    model.layers[0][0].relu1 = nn.GELU()
    mask = dpai.prune(model, "px", 0.9, data=[common.batch()], rounds=2)
    assert mask.num_kept == dpai.global_budget(model, 0.9)
    assert isinstance(model.layers[0][0].relu1, nn.GELU)


def test_bad_version_is_a_one_line_error():
    with pytest.raises(ValueError, match="version"):
        dpai.prune(common.our_model(), "px", 0.9, data=[common.batch()], version="paper")
