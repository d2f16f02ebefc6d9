"""Library-level resume and numerical faults: a training or a DPaI search interrupted at any
point and resumed from its checkpoint ends bit for bit where an uninterrupted one ends; a
checkpoint of other inputs is never resumed; a NaN stops work with the epoch and step."""
import pytest
import torch

import dpai
from dpai.files.checkpoint import Checkpoint
from dpai.methods.dpai_method import DPaI
from dpai.training import NonFiniteLoss, TrainConfig, train

torch.set_num_threads(1)


class Killed(Exception):
    """Stands for SIGKILL at a chosen step (the process tests do the real thing)."""


def digits_run(tmp_path, *, kill_at_step=None, epochs=3, lr=0.05, key=None):
    """A digits training with a checkpoint after every epoch; optionally 'killed' inside a step."""
    data = dpai.data.load(dpai.data.prepare("digits", tmp_path / "data"), "digits")
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0)
    mask = dpai.prune(model, "random_erk", 0.9, seed=0)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ckpt = Checkpoint(tmp_path / "ckpt", "t", key or {"lr": lr}, every=1, log=None)

    def on_step(step):
        if step == kill_at_step:
            raise Killed

    result = train(model, mask, lambda e: data.train_batches(128, generator=g),
                   lambda: data.test_batches(256), TrainConfig(epochs=epochs, lr=lr,
                                                               milestones=[2]),
                   progress=False, log=None, on_step=on_step, checkpoint=ckpt, generators=[g])
    return result, model, ckpt


def test_training_resumes_bit_for_bit(tmp_path):
    full, full_model, _ = digits_run(tmp_path / "a")
    steps_per_epoch = full["steps"] // 3
    with pytest.raises(Killed):  # inside epoch 2, after the epoch-1 checkpoint
        digits_run(tmp_path / "b", kill_at_step=steps_per_epoch + 5)
    resumed, model, ckpt = digits_run(tmp_path / "b")
    assert resumed["timing"]["resumed_at_epoch"] == 1
    assert resumed["epochs"] == full["epochs"] and resumed["steps"] == full["steps"]
    for a, b in zip(full_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_of_other_inputs_is_never_resumed(tmp_path):
    with pytest.raises(Killed):
        digits_run(tmp_path, kill_at_step=20, lr=0.05)
    other = Checkpoint(tmp_path / "ckpt", "t", {"lr": 0.01}, every=1)
    assert other.load() is None and other.path != Checkpoint(tmp_path / "ckpt", "t",
                                                             {"lr": 0.05}).path
    result, _, _ = digits_run(tmp_path, lr=0.01)
    assert result["timing"]["resumed_at_epoch"] == 0


def test_dpai_search_resumes_bit_for_bit(tmp_path):
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0)
    full = DPaI(model, 0.99, seed=0)
    full_traj = full.run(230)
    ckpt = Checkpoint(tmp_path, "s", {"seed": 0}, every=100)
    search = DPaI(model, 0.99, seed=0)
    step, calls = search.step, []

    def killed_step():
        calls.append(1)
        if len(calls) == 180:
            raise Killed
        return step()
    search.step = killed_step
    with pytest.raises(Killed):
        search.run(230, checkpoint=ckpt)
    again = DPaI(model, 0.99, seed=0)
    traj = again.run(230, checkpoint=ckpt)
    assert traj == full_traj
    assert all(torch.equal(a, b) for a, b in zip(again.mask().values(), full.mask().values()))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    digits_run(tmp_path, epochs=2)  # a finished run leaves its checkpoint (the stage removes it)
    with pytest.raises(NonFiniteLoss, match=r"not finite at epoch 0, step \d+ .*no result"):
        digits_run(tmp_path / "x", lr=1e30)


def test_dpai_nan_is_caught_at_the_check_interval():
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0)
    search = DPaI(model, 0.99, seed=0)
    step = search.step

    def poisoned():
        out = step()
        with torch.no_grad():
            search.scores[0] = float("nan")
        return out
    search.step = poisoned
    with pytest.raises(FloatingPointError, match="at step 100 of 300"):
        search.run(300)


def test_dpai_uniform_budget_ablation():
    model = dpai.create_model("resnet20", 10, 1, 8, seed=0)
    mask = dpai.prune(model, "dpai", 0.9, seed=0, steps=3, budget="uniform")
    assert mask.kept_per_layer() == dpai.uniform_budget(model, 0.9)
    assert mask.kept_per_layer() != dpai.erk_budget(model, 0.9)
    assert mask.info["params"]["budget"] == "uniform"
