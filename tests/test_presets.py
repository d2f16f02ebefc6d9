"""Every preset composes (as `dvc exp run -S preset=NAME` does) into valid params, and
`-S sparsity=...` changes nothing else, so only mask, train and report rerun."""
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

import dpai
from dpai.methods.params import SHARED_OPTIONS, MaskParams
from dpai.pipeline.params import TOP_KEYS, ComputeParams, DataParams, ModelParams
from dpai.pipeline.validate import validate
from dpai.training import TrainParams

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf/preset").glob("*.yaml"))


def compose(tmp_path, *overrides):
    out = tmp_path / f"params-{len(list(tmp_path.iterdir()))}.yaml"
    compose_and_dump(str(out), str(ROOT / "conf"), None, "config", str(ROOT), list(overrides))
    return yaml.safe_load(out.read_text())


def test_paper_presets_exist():
    assert {"digits", "tiny", "resnet20_cifar10", "vgg19_cifar100",
            "resnet18_tinyimagenet", "imagenet_efficientnet_b0",
            "tinyimagenet_vit_b16"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_valid_and_sparsity_only_changes_sparsity(tmp_path, preset):
    params = compose(tmp_path, f"preset={preset}")
    validate(params, check_files=False)
    changed = compose(tmp_path, f"preset={preset}", "sparsity=0.98")
    assert changed.pop("sparsity") == 0.98 and changed.pop("sparsities") == [0.98]
    assert params.pop("sparsities") == [params.pop("sparsity")]
    assert changed == params


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("sweep,levels", [
    ("paper", [0.6838, 0.9, 0.9684, 0.99]),
    ("extreme", [0.6838, 0.9, 0.9684, 0.99, 0.9968, 0.999])])
def test_sweep_groups_combine_with_every_preset(tmp_path, preset, sweep, levels):
    params = compose(tmp_path, f"preset={preset}", f"sweep={sweep}")
    assert params["sparsities"] == levels
    validate(params, check_files=False)
    single = compose(tmp_path, f"preset={preset}")
    assert {k: v for k, v in params.items() if k != "sparsities"} == \
        {k: v for k, v in single.items() if k != "sparsities"}


def test_every_method_option_is_in_the_config_with_its_default(tmp_path):
    """`-S mask.dpai.optimizer=sgd` then works without Hydra's `+`, and a misspelt option is
    a Hydra error instead of a silently added key."""
    params = compose(tmp_path)
    for method in dpai.METHODS:
        options = {k: v for k, v in dpai.method_params(method).items() if k not in SHARED_OPTIONS}
        assert params["mask"][method] == options, method
    assert set(SHARED_OPTIONS) <= set(params["mask"])


def test_config_and_schema_do_not_drift(tmp_path):
    """conf/config.yaml lists exactly the schema's keys, section by section, so a parameter
    added to one and not the other fails here (compute.threads and every Section default
    included)."""
    params = compose(tmp_path)
    assert sorted(params) == sorted(TOP_KEYS)
    for section, cls in (("data", DataParams), ("model", ModelParams),
                         ("compute", ComputeParams), ("train", TrainParams)):
        assert sorted(params[section]) == sorted(cls.names()), section
    assert sorted(params["mask"]) == sorted([n for n in MaskParams.names() if n != "methods"]
                                            + list(dpai.METHODS))
    assert params["compute"]["threads"] == ComputeParams().threads
    for section, cls in (("data", DataParams), ("mask", MaskParams)):
        defaults = cls().to_dict()
        assert {k: v for k, v in params[section].items() if k in defaults} == \
            {k: defaults[k] for k in params[section] if k in defaults}, section


def committed_params() -> str:
    """params.yaml as committed (`dvc exp run` leaves the workspace copy modified)."""
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True,
                          text=True)
    return proc.stdout if proc.returncode == 0 else (ROOT / "params.yaml").read_text()


def test_committed_params_are_the_default_composition(tmp_path):
    """`dvc repro` reads params.yaml; it must equal what `dvc exp run` would compose."""
    assert yaml.safe_load(committed_params()) == compose(tmp_path)


def test_sparsity_is_an_axis_of_mask_and_train_only():
    """The scalar `sparsity` reaches the stages only through `sparsities`, the matrix axis of
    mask and train (so a new level reruns its own items), and the report."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, stage in stages.items()
               if {"sparsity", "sparsities"} & set(stage.get("params") or [])}
    assert readers == {"report"}
    for name in ("mask", "train"):
        assert stages[name]["matrix"]["sparsity"] == "${sparsities}"
        assert "${item.sparsity}" in stages[name]["cmd"]
    assert stages["train"]["deps"][-1] == "masks/${item.method}-${item.sparsity}-${item.seed}.pt"
    assert stages["data"]["params"] == ["data", "compute"]


@pytest.mark.parametrize("preset,values", [
    ("resnet20_cifar10", dict(dataset="cifar10", model="resnet20", epochs=160, lr=0.1,
                              milestones=[60, 120])),
    ("vgg19_cifar100", dict(dataset="cifar100", model="vgg19_bn", epochs=160, lr=0.1,
                            milestones=[60, 120])),
    ("resnet18_tinyimagenet", dict(dataset="tiny-imagenet", model="resnet18", epochs=100,
                                   lr=0.01, milestones=[30, 60, 80])),
])
def test_paper_hyperparameters(tmp_path, preset, values):
    """The paper's Table 6: SGD momentum 0.9, batch 128, wd 1e-4."""
    p = compose(tmp_path, f"preset={preset}")
    assert p["data"]["dataset"] == values["dataset"] and p["model"]["name"] == values["model"]
    train = p["train"]
    assert (train["epochs"], train["lr"], train["milestones"]) == \
        (values["epochs"], values["lr"], values["milestones"])
    assert (train["momentum"], train["batch_size"], train["weight_decay"], train["gamma"]) == \
        (0.9, 128, 1e-4, 0.1)
    assert p["seeds"] == [0, 1, 2] and len(p["methods"]) == 10
    assert p["mask"]["dpai"] == {"alpha": 0.99, "beta": 0.5, "lr": 0.005, "steps": 3000,
                                 "optimizer": "adam", "budget": "erk", "compile": False}
    assert p["train"]["init"] == "same"
