"""Models, budgets and the Mask type: the numbers users rely on."""
import json

import pytest
import torch
from torch.nn.utils import prune as torch_prune

import dpai
from dpai.core.budget import erk_budget

COUNTS = [("resnet20", 10, 32, 270_896), ("vgg19_bn", 100, 32, 20_070_080),
          ("resnet18", 200, 64, 11_261_632)]


@pytest.mark.parametrize("name,classes,size,count", COUNTS)
def test_prunable_counts(name, classes, size, count):
    model = dpai.create_model(name, num_classes=classes, in_channels=3, image_size=size)
    assert dpai.num_prunable(model) == count


@pytest.mark.parametrize("name", sorted(dpai.MODELS))
def test_models_run_on_digits_shape(name):
    model = dpai.create_model(name, num_classes=10, in_channels=1, image_size=8)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert model.input_shape == (1, 8, 8)


def test_create_model_rejects_bad_input():
    with pytest.raises(ValueError, match="model='resnet21'"):
        dpai.create_model("resnet21")
    with pytest.raises(ValueError, match="num_classes=0"):
        dpai.create_model("resnet20", num_classes=0)


def test_seeded_init_is_reproducible():
    a = dpai.create_model("resnet20", seed=3).state_dict()
    b = dpai.create_model("resnet20", seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_erk_resnet20_90():
    model = dpai.create_model("resnet20")
    budget = erk_budget(model, 0.9)
    assert sum(budget.values()) == 27_104
    layers = dpai.prunable_layers(model)
    dense = [n for n, k in budget.items() if k == layers[n].weight.numel()]
    assert dense == ["layers.1.0.shortcut.0", "fc"]  # 32x16x1x1 shortcut and the 10x64 classifier


def test_erk_resnet20_99():
    budget = erk_budget(dpai.create_model("resnet20"), 0.99)
    assert sum(budget.values()) == 2_718
    assert list(budget.values()) == ([42] + [63] * 6 + [89, 115, 83] + [115] * 4
                                     + [168, 220, 161] + [220] * 4 + [122])


def test_uniform_budget_and_bad_sparsity():
    model = dpai.create_model("resnet20")
    assert dpai.uniform_budget(model, 0.5)["conv1"] == 216
    for bad in (1.0, -0.1, "0.9", True):
        with pytest.raises(ValueError, match="sparsity="):
            dpai.erk_budget(model, bad)


def test_mask_roundtrip_report_and_apply(tmp_path):
    model = dpai.create_model("resnet20", in_channels=1, image_size=8)
    mask = dpai.prune(model, "random_erk", 0.9, seed=0)
    path = mask.save(tmp_path / "m.pt")
    loaded = dpai.Mask.load(path)
    assert all(torch.equal(loaded[n], mask[n]) for n in mask)
    assert loaded.info["method"] == "random_erk"
    report = json.loads((tmp_path / "m.json").read_text())
    assert dpai.core.mask.load_report(path) == report  # the public reader of that report
    assert report["kept"] == mask.num_kept and set(report["layers"]) == set(mask)
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp"))
    mask.apply(model)
    assert dpai.Mask.from_weights(model).num_kept == mask.num_kept
    assert mask.density == pytest.approx(0.1, abs=2e-3)


def test_saved_bytes_depend_on_the_entries_only(tmp_path):
    """The same mask as views of one tensor (as DPaI's flat scores give) and as separate
    tensors (as the global selection gives) saves to the same bytes, so DVC hashes downstream of a
    mask stage do not change when only the way a mask was computed does."""
    mask = dpai.prune(dpai.create_model("resnet20", in_channels=1, image_size=8),
                      "random_erk", 0.9, seed=0)
    flat = torch.cat([m.flatten() for m in mask.values()])
    views = dpai.Mask({n: v.view_as(m) for (n, m), v in
                       zip(mask.items(), flat.split([m.numel() for m in mask.values()]))},
                      mask.info)
    a, b = mask.save(tmp_path / "a.pt"), views.save(tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()


def test_mask_validation_names_the_problem():
    model = dpai.create_model("resnet20", in_channels=1, image_size=8)
    mask = dpai.Mask.ones(model)
    mask["conv1"] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="conv1"):
        mask.validate(model)
    del mask["fc"]
    with pytest.raises(ValueError, match="missing \\['fc'\\]"):
        mask.validate(model)


def test_export_to_torch_prune():
    model = dpai.create_model("resnet20", in_channels=1, image_size=8)
    mask = dpai.prune(model, "random_uniform", 0.9, seed=1)
    mask.to_torch_prune(model)
    assert torch_prune.is_pruned(model)
    assert torch.equal(model.conv1.weight_mask.bool(), mask["conv1"])
    assert int((model.conv1.weight != 0).sum()) == mask.kept_per_layer()["conv1"]


def test_shuffle_keeps_layer_counts_and_moves_weights():
    model = dpai.create_model("resnet20", in_channels=1, image_size=8)
    mask = dpai.prune(model, "random_erk", 0.9, seed=0)
    shuffled = mask.shuffle(seed=1)
    assert shuffled.kept_per_layer() == mask.kept_per_layer()
    assert not torch.equal(shuffled["layers.2.0.conv2"], mask["layers.2.0.conv2"])
    assert shuffled.info["transform"] == "shuffle"


def test_prune_rejects_unknown_method_and_param():
    model = dpai.create_model("resnet20", in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="method='nope'"):
        dpai.prune(model, "nope", 0.9)
    with pytest.raises(ValueError, match=r"^dpai\.alfa is not a parameter; allowed: \['alpha', "):
        dpai.prune(model, "dpai", 0.9, alfa=0.5)
    with pytest.raises(ValueError, match=r"^dpai\.alpha='x' is invalid: allowed is a number"):
        dpai.prune(model, "dpai", 0.9, alpha="x")


def test_interrupt_right_after_the_temporary_file_is_made_leaves_nothing(tmp_path, monkeypatch):
    """A SIGTERM (KeyboardInterrupt here) landing just after mkstemp created the temporary
    file, before its name reached atomic_write, must not leave that file behind."""
    import tempfile

    from dpai.files import atomic as io

    real = tempfile.mkstemp

    def made_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(io.tempfile, "mkstemp", made_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(tmp_path / "out.pt", lambda tmp: None)
    assert list(tmp_path.iterdir()) == []
