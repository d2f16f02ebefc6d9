"""Every mistake is named before work starts: one line with the key, the value and what is
allowed; exit status non-zero; no output touched. Fed through `dvc exp run -S ...` (as a
user types it) and through params.yaml (the `check` stage that `dvc repro` runs first)."""
import copy
import sys

import pytest
import yaml

import dpai
from pipeline_repo import DVC, make_repo, run, tree_digest

BASE = ("-S preset=tiny", "-S 'methods=[random_erk]'", "-S compute.threads=1")

# (override as typed after -S, the error line's expected start, words it must contain)
BAD = [
    ("sparsity=1.5", "error: sparsity=1.5 is invalid", ["(0, 1)"]),
    ("sparsity=abc", "error: sparsity='abc' is invalid", ["number"]),
    ("'methods=[]'", "error: methods=[] is invalid", ["non-empty list"]),
    ("'seeds=[]'", "error: seeds=[] is invalid", ["non-empty list"]),
    ("'methods=[random_erk,random_erk]'", "error: methods=", ["more than once"]),
    ("'seeds=[0,0]'", "error: seeds=[0, 0] is invalid", ["more than once"]),
    ("'seeds=[1.5]'", "error: seeds=[1.5] is invalid", ["non-negative integer"]),
    ("'seeds=[-1]'", "error: seeds=[-1] is invalid", ["non-negative integer"]),
    ("'methods=[random_erk,foo]'", "error: methods=", ["'foo'", "random_uniform"]),
    ("model.name=resnet99", "error: model.name='resnet99' is not one of", ["resnet20",
                                                                           "torchvision:"]),
    ("model.name=torchvision:alexnet", "error: model.name='torchvision:alexnet' does not fit",
     ["digits", "1x8x8"]),
    ("model.prune=conv", "error: model.prune='conv' is invalid", ["default", "linear"]),
    ("data.dataset=mnist", "error: data.dataset='mnist' is invalid", ["cifar10"]),
    ("mask.device=gpu", "error: mask.device='gpu' is invalid", ["auto", "cuda:N"]),
    ("train.device=tpu", "error: train.device='tpu' is invalid", ["cpu"]),
    ("mask.dpai.alpha=abc", "error: mask.dpai.alpha='abc' is invalid", ["[0, 1]"]),
    ("mask.iter_snip.rounds=0", "error: mask.iter_snip.rounds=0 is invalid", [">= 1"]),
    ("mask.scoring_per_class=0", "error: mask.scoring_per_class=0 is invalid", [">= 1"]),
    ("mask.scoring_per_class=500", "error: mask.scoring_per_class=500 is invalid", ["139"]),
    ("+mask.dpai.optimiser=sgd", "error: mask.dpai.optimiser is not a parameter", ["optimizer"]),
    ("mask.dpai.optimizer=rmsprop", "error: mask.dpai.optimizer='rmsprop' is invalid",
     ["adam", "sgd"]),
    ("train.epochs=0", "error: train.epochs=0 is invalid", [">= 1"]),
    ("'train.milestones=[1,1]'", "error: train.milestones=[1, 1] is invalid", ["increasing"]),
    ("'train.milestones=[5]'", "error: train.milestones=[5] is invalid", ["below 2"]),
    ("train.batch_size=5000", "error: train.batch_size=5000 is invalid", ["1437"]),
    ("data.url=http://example.com/d.tgz", "error: data.url='http://example.com/d.tgz' is invalid",
     ["digits", "cifar10"]),
    ("train.init=new", "error: train.init='new' is invalid", ["same", "fresh"]),
    ("data.dataset=imagenet", "error: data.imagenet_archives='data/imagenet-archives'",
     ["ILSVRC2012_img_train.tar", "put"]),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = make_repo(tmp_path_factory.mktemp("validation"), "preset=tiny",
                     "methods=[random_erk]")
    run(f"{DVC} repro", path)
    run("git add -A && git commit -qm run", path)
    return path


def error_line(proc) -> str:
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("error:")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("override,start,words", BAD, ids=[b[0] for b in BAD])
def test_dvc_exp_run_names_the_mistake_and_touches_nothing(repo, override, start, words):
    before = tree_digest(repo / "masks", repo / "runs", repo / "reports", repo / "data")
    proc = run(f"{DVC} exp run {' '.join(BASE)} -S {override}", repo, check=False)
    try:
        assert proc.returncode != 0
        line = error_line(proc)
        assert line.startswith(start) and all(w in line for w in words), line
        assert "Running stage 'data'" not in proc.stdout, "no stage may run before the check"
        after = tree_digest(repo / "masks", repo / "runs", repo / "reports", repo / "data")
        assert {k: v for k, v in after.items() if k in before} == \
            {k: v for k, v in before.items() if k in after}, "an output was changed"
    finally:
        # a new DAG shape (another sparsity, method or seed list) makes `dvc exp run` take the
        # old items' outputs out of the workspace first; they are in DVC's cache: nothing lost
        run(f"git checkout -q params.yaml dvc.lock && {DVC} checkout -q", repo)
    assert tree_digest(repo / "masks", repo / "runs", repo / "reports", repo / "data") == before


@pytest.mark.slow
def test_misspelt_option_is_a_hydra_error_not_a_new_key(repo):
    proc = run(f"{DVC} exp run {' '.join(BASE)} -S mask.dpai.optimiser=sgd", repo, check=False)
    run(f"git checkout -q params.yaml dvc.lock && {DVC} checkout -q", repo)
    assert proc.returncode != 0 and "mask.dpai.optimiser" in proc.stdout + proc.stderr


def params_cases(base: dict):
    """The same mistakes written into params.yaml by hand."""
    def set_(dotted, value):
        p = copy.deepcopy(base)
        node = p
        *path, last = dotted.split(".")
        for k in path:
            node = node[k]
        node[last] = value
        return p
    return [
        (set_("sparsity", 0), "error: sparsity=0 is invalid"),
        (set_("sparsities", []), "error: sparsities=[] is invalid"),
        (set_("sparsities", [0.9, 0.9]), "error: sparsities=[0.9, 0.9] is invalid"),
        (set_("methods", []), "error: methods=[] is invalid"),
        (set_("seeds", ["a"]), "error: seeds=['a'] is invalid"),
        (set_("mask.dpai.alpha", "abc"), "error: mask.dpai.alpha='abc' is invalid"),
        (set_("mask.dpai.optimiser", "sgd"), "error: mask.dpai.optimiser is not a parameter"),
        (set_("mask.scoring_per_class", 0), "error: mask.scoring_per_class=0 is invalid"),
        (set_("train.epochs", 0), "error: train.epochs=0 is invalid"),
        (set_("train.milestones", [1, 5]), "error: train.milestones=[1, 5] is invalid"),
        (set_("train.batch_size", 10**6), "error: train.batch_size=1000000 is invalid"),
        (set_("data.url", "file:///x.tgz"), "error: data.url='file:///x.tgz' is invalid"),
        (set_("data.imagenet_archives", "data/imagenet/archives"),
         "error: data.imagenet_archives='data/imagenet/archives' is invalid"),
        (set_("model.name", "resnet99"), "error: model.name='resnet99' is not one of"),
        (set_("mask.transform", "flip"), "error: mask.transform='flip' is invalid"),
        (set_("train.extra", 1), "error: train.extra is not a parameter"),
    ]


@pytest.mark.slow
def test_params_yaml_mistakes_stop_the_check_stage(repo, tmp_path):
    base = yaml.safe_load((repo / "params.yaml").read_text())
    cases = params_cases(base)
    imagenet = cases[12][0]
    imagenet["data"]["dataset"] = "imagenet"
    for params, start in cases:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = run(f"{sys.executable} stages/check.py", repo, check=False)
        assert proc.returncode == 2, (start, proc.stderr)
        assert proc.stderr.strip().splitlines() == [error_line(proc)]  # exactly one line
        assert error_line(proc).startswith(start), (start, error_line(proc))
    # and through `dvc repro`: DVC stops at the check, before any stage deletes an output
    (repo / "params.yaml").write_text(yaml.safe_dump(cases[4][0], sort_keys=False))
    before = tree_digest(repo / "masks", repo / "runs", repo / "reports")
    proc = run(f"{DVC} repro", repo, check=False)
    run("git checkout -q params.yaml", repo)
    assert proc.returncode != 0 and error_line(proc).startswith("error: seeds=['a']")
    assert tree_digest(repo / "masks", repo / "runs", repo / "reports") == before


def test_validate_is_the_library_entry_point_too(tmp_path):
    """The pipeline's check and a library call of the same method give the same error."""
    from dvc.utils.hydra import compose_and_dump
    from dpai.pipeline.validate import validate
    from pipeline_repo import ROOT
    compose_and_dump(str(tmp_path / "p.yaml"), str(ROOT / "conf"), None, "config", str(ROOT), [])
    params = yaml.safe_load((tmp_path / "p.yaml").read_text())
    typed = validate(params)
    assert typed.methods == params["methods"] and typed.mask.options("npb")["fine_tune"] == "conv"
    params["mask"]["npb"]["fine_tune"] = "some"
    error = r"^mask\.npb\.fine_tune='some' is invalid: allowed is one of \['conv', 'all', 'none'\]$"
    with pytest.raises(ValueError, match=error):
        validate(params)
    with pytest.raises(ValueError, match=error.replace("mask\\.", "")):
        dpai.prune(dpai.create_model("resnet20"), "npb", 0.9, fine_tune="some")
