"""dpai.train: the mask holds after every step, the model learns, the schedule and config behave."""
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

import dpai
from dpai.core.mask import Mask
from dpai.models import prunable_layers
from dpai.training import TrainConfig, train

torch.set_num_threads(1)


def random_data(seed, n_batches=3, batch=16, shape=(1, 8, 8), classes=10):
    """train_batches/test_batches over fixed random tensors, reshuffled per epoch (seeded)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * batch, *shape, generator=g)
    y = torch.randint(0, classes, (n_batches * batch,), generator=g)

    def train_batches(epoch):
        p = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        return [(x[p[i:i + batch]], y[p[i:i + batch]]) for i in range(0, len(y), batch)]

    def test_batches():
        return [(x[:batch], y[:batch])]
    return train_batches, test_batches


def tiny_resnet(seed=0):
    return dpai.create_model("resnet20", num_classes=10, in_channels=1, image_size=8, seed=seed)


def metrics(result):
    """Per-epoch numbers without the wall-clock times."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in result["epochs"]]


@pytest.mark.parametrize("nesterov", [False, True])
def test_pruned_weights_exactly_zero_after_every_step(nesterov):
    model = tiny_resnet()
    mask = dpai.prune(model, "random_erk", 0.9, seed=0)
    layers = prunable_layers(model)
    pruned = {n: ~mask[n] for n in layers}
    checked, changed = [], []
    before = {n: m.weight.detach().clone() for n, m in layers.items()}

    # a global hook fires after every optimizer.step(), whoever calls it
    def check(optimizer, args, kwargs):
        for n, m in layers.items():
            assert (m.weight[pruned[n]] == 0).all(), f"{n}: pruned weight nonzero after a step"
            buf = optimizer.state[m.weight].get("momentum_buffer")
            assert buf is None or (buf[pruned[n]] == 0).all(), f"{n}: momentum leaked"
        checked.append(1)

    handle = register_optimizer_step_post_hook(check)
    try:
        train_batches, test_batches = random_data(0)
        cfg = TrainConfig(epochs=2, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov,
                          milestones=[1])
        steps = []
        result = train(model, mask, train_batches, test_batches, cfg, progress=False, log=None,
                       on_step=steps.append)
    finally:
        handle.remove()
    assert len(checked) == 6 and steps == list(range(1, 7)) and result["steps"] == 6
    for n, m in layers.items():
        changed.append((m.weight[mask[n]] != before[n][mask[n]]).any().item())
    assert all(changed), "kept weights must be trained"
    assert Mask.from_weights(model).num_kept == mask.num_kept


def test_nonzero_pruned_weights_are_zeroed_at_start():
    model = tiny_resnet()
    mask = dpai.prune(model, "random_erk", 0.8, seed=1)
    train_batches, test_batches = random_data(1, n_batches=1)
    train(model, mask, train_batches, test_batches, TrainConfig(epochs=1), progress=False,
          log=None)
    for n, m in prunable_layers(model).items():
        assert (m.weight[~mask[n]] == 0).all()


def digits_data(batch=64):
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1200], perm[1200:]

    def train_batches(epoch):
        p = tr[torch.randperm(len(tr), generator=torch.Generator().manual_seed(epoch))]
        return [(x[p[i:i + batch]], y[p[i:i + batch]]) for i in range(0, len(p), batch)]

    def test_batches():
        return [(x[te], y[te])]
    return train_batches, test_batches


def test_sparse_training_learns_digits():
    torch.manual_seed(0)
    model = tiny_resnet()
    mask = dpai.prune(model, "random_erk", 0.9, seed=0)
    lines = []
    result = train(model, mask, *digits_data(), TrainConfig(epochs=3, lr=0.05, milestones=[2]),
                   progress=False, log=lines.append)
    accs = [r["test_acc"] for r in result["epochs"]]
    assert result["final_test_acc"] > 80 and accs[-1] > accs[0], accs
    assert result["final_train_acc"] > 80
    assert result["best_test_acc"] == max(accs) and accs[result["best_epoch"]] == max(accs)
    assert len(lines) == 3 and "test_acc" in lines[0]
    keys = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"}
    assert keys == set(result["epochs"][0]) and result["timing"]["train_seconds"] > 0


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_lr_follows_milestones():
    train_batches, test_batches = random_data(0, n_batches=1, batch=4)
    cfg = TrainConfig(epochs=6, lr=0.2, milestones=[2, 4], gamma=0.5)
    result = train(Tiny(), None, train_batches, test_batches, cfg, progress=False, log=None)
    assert [r["epoch"] for r in result["epochs"]] == list(range(6))
    assert [r["lr"] for r in result["epochs"]] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05, 0.05])


def test_runs_all_epochs_with_one_batch_per_epoch():
    # the reference divides by the batch index in a progress print and dies at epoch 90
    train_batches, test_batches = random_data(0, n_batches=1, batch=2)
    result = train(Tiny(), None, train_batches, test_batches, TrainConfig(epochs=95),
                   progress=False, log=None)
    assert len(result["epochs"]) == 95 and result["steps"] == 95


def test_same_seed_same_metrics_on_cpu():
    def run(seed):
        torch.manual_seed(seed)
        model = tiny_resnet(seed)
        mask = dpai.prune(model, "random_erk", 0.9, seed=seed)
        cfg = TrainConfig(epochs=3, milestones=[2], weight_decay=5e-4)
        return metrics(train(model, mask, *random_data(seed), cfg, progress=False, log=None))

    first = run(0)
    assert run(0) == first
    assert run(1) != first


def test_dense_training_equals_all_ones_mask():
    train_batches, test_batches = random_data(2)
    cfg = TrainConfig(epochs=2, milestones=[1])
    dense = tiny_resnet()
    r_dense = train(dense, None, train_batches, test_batches, cfg, progress=False, log=None)
    ones = tiny_resnet()
    r_ones = train(ones, Mask.ones(ones), train_batches, test_batches, cfg, progress=False,
                   log=None)
    assert metrics(r_dense) == metrics(r_ones)
    assert Mask.from_weights(dense).density == 1.0  # nothing was pruned
    start = tiny_resnet()
    assert not torch.equal(dense.fc.weight, start.fc.weight)


def test_mask_of_another_model_is_rejected():
    other = dpai.create_model("resnet20", num_classes=5, in_channels=1, image_size=8, seed=0)
    mask = Mask.ones(other)
    with pytest.raises(ValueError, match="shape"):
        train(tiny_resnet(), mask, *random_data(0), TrainConfig(epochs=1), progress=False,
              log=None)


def test_empty_batches_are_an_error():
    train_batches, test_batches = random_data(0, n_batches=1)
    with pytest.raises(ValueError, match="test_batches"):
        train(Tiny(), None, train_batches, lambda: [], TrainConfig(epochs=1), progress=False,
              log=None)
    with pytest.raises(ValueError, match="train_batches"):
        train(Tiny(), None, lambda e: [], test_batches, TrainConfig(epochs=1), progress=False,
              log=None)


@pytest.mark.parametrize("key,value", [
    ("epochs", 0), ("epochs", 2.5), ("epochs", True), ("batch_size", -1), ("lr", 0),
    ("lr", float("nan")), ("momentum", 1.0), ("momentum", -0.1), ("weight_decay", -1e-4),
    ("milestones", [120, 60]), ("milestones", [0, 10]), ("milestones", 60), ("gamma", 0),
    ("gamma", 1.5), ("nesterov", "yes"), ("amp", 1)])
def test_config_rejects_bad_values(key, value):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{key: value})
    message = str(err.value)
    assert key in message and repr(value) in message and "\n" not in message


def test_config_nesterov_needs_momentum_and_unknown_keys_fail():
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(nesterov=True, momentum=0.0)
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig.from_dict({"lr": 0.1, "lr_decay": 0.5})
    cfg = TrainConfig.from_dict({"milestones": (30, 60, 80), "lr": 0.01, "epochs": 100})
    assert cfg.milestones == [30, 60, 80] and cfg.to_dict()["lr"] == 0.01
