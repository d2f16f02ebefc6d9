"""End to end: `dvc repro` of the tiny preset in a temporary git copy of the repo, then the
commands a user types: an unchanged rerun, one more seed, another sparsity, a sweep. Each
test works on its own copy of the repro'd repo, so any order and any worker gives the same
result (grouping on one worker only saves building that repo twice)."""
import csv
import json
import math
import shutil

import pytest
import yaml

from pipeline_repo import DVC, make_repo, ran, run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]

METHODS = ["dpai", "random_erk", "snip"]
# `dvc exp run` composes params.yaml from conf/ again: the repo's settings go with every call
# (compute.threads included: another thread count reruns every stage, as it should)
SETTING = f"-S preset=tiny -S 'methods=[{','.join(METHODS)}]' -S compute.threads=1"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny preset, `dvc repro`'d and committed: (repo, output of the repro)."""
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo", "preset=tiny",
                     f"methods=[{','.join(METHODS)}]")
    out = run(f"{DVC} repro", repo).stdout
    run("git add -A && git commit -qm 'tiny run'", repo)
    return repo, out


@pytest.fixture
def repo(built, tmp_path):
    """A copy of the built repo for one test (DVC's cache and links included)."""
    return shutil.copytree(built[0], tmp_path / "repo", symlinks=True)


def items(stage, methods, sparsities, seeds):
    return {f"{stage}@{m}-{s}-{seed}" for m in methods for s in sparsities for seed in seeds}


def test_repro_runs_every_item_and_reports_real_numbers(built):
    repo, out = built
    assert set(ran(out)) == {"check", "data", "report"} | items("mask", METHODS, ["0.99"], [0]) \
        | items("train", METHODS, ["0.99"], [0])
    for m in METHODS:
        doc = json.loads((repo / f"runs/{m}-0.99-0.json").read_text())
        accs = [doc["final_test_acc"], doc["best_test_acc"]] + [e["test_acc"] for e in doc["epochs"]]
        assert all(math.isfinite(a) and 0 < a <= 100 for a in accs), (m, accs)
        assert doc["environment"]["threads"] == 1 and doc["environment"]["torch"]
        assert "seconds" not in json.dumps(doc), "wall-clock values make reruns differ"
        mask = json.loads((repo / f"masks/{m}-0.99-0.json").read_text())
        assert "seconds" not in json.dumps(mask)
        assert json.loads((repo / f"timings/train/{m}-0.99-0.json").read_text())["train_seconds"] > 0
    assert (repo / "reports/metrics.json").is_file()
    # the prepared data lives in DVC's cache; DVC leaves a copy after the run, and a checkout
    # (what temporary clones, other workers and machines do) links it instead of copying
    run(f"{DVC} checkout --relink -q data/digits", repo)
    prepared = repo / "data/digits/train.pt"
    assert prepared.is_symlink() or prepared.stat().st_nlink >= 2
    assert run(f"{DVC} status", repo).stdout.strip().endswith("up to date.")


def test_rerun_with_unchanged_inputs_skips_every_training(repo):
    before = {p.name: p.read_bytes() for p in (repo / "masks").glob("*-0.99-0.*")}
    out = run(f"{DVC} repro -f -s mask@random_erk-0.99-0 mask@dpai-0.99-0", repo).stdout
    assert set(ran(out)) == {"mask@random_erk-0.99-0", "mask@dpai-0.99-0"}
    assert {p.name: p.read_bytes() for p in (repo / "masks").glob("*-0.99-0.*")} == before
    out = run(f"{DVC} repro", repo).stdout
    assert ran(out) == [], "identical masks must leave every training (and the report) skipped"


def test_adding_a_seed_runs_only_that_seeds_items(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # what DVC sees as changed, to say why if more than the new seed's items run
    status = run(f"{DVC} status --json", repo).stdout
    out = run(f"{DVC} repro", repo).stdout
    assert set(ran(out)) == {"check", "report"} | items("mask", METHODS, ["0.99"], [1]) \
        | items("train", METHODS, ["0.99"], [1]), f"status before: {status[:3000]}\n{out[-3000:]}"
    rows = list(csv.DictReader((repo / "reports/results.csv").open()))
    assert {r["method"] for r in rows} == set(METHODS)


def test_another_sparsity_reruns_only_its_items(repo):
    out = run(f"{DVC} exp run {SETTING} -S sparsity=0.98", repo).stdout
    assert set(ran(out)) == {"check", "report"} | items("mask", METHODS, ["0.98"], [0]) \
        | items("train", METHODS, ["0.98"], [0]), out[-4000:]
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["methods"]) == set(METHODS)
    shown = json.loads(run(f"{DVC} exp show --json", repo).stdout)
    assert [e for b in shown for e in (b.get("experiments") or [])], "no experiment listed"


def test_paper_sweep_gives_the_figure_and_a_second_repro_runs_nothing(repo):
    levels = ["0.6838", "0.9", "0.9684", "0.99"]
    out = run(f"{DVC} exp run -S preset=tiny -S 'methods=[dpai,random_erk]' -S compute.threads=1 "
              f"-S sweep=paper", repo).stdout
    assert items("train", ["dpai", "random_erk"], levels[:3], [0]) <= set(ran(out))
    assert "data" not in ran(out)
    for name in ("figure.md", "figure.csv", "figure.tex", "figure.png"):
        assert (repo / "reports" / name).stat().st_size > 0, name
    figure = (repo / "reports/figure.md").read_text()
    assert all(level in figure or f"{float(level) * 100:g}" in figure for level in levels)
    assert ran(run(f"{DVC} repro", repo).stdout) == []
