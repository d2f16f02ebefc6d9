"""End to end: `dvc repro` of the tiny preset in a temporary git copy of the repo, then
`dvc exp run -S sparsity=...`, as a user types them."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DPAI_THREADS": "1",
       "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
       "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com",
       "PYTHONPATH": str(ROOT)}


def run(cmd, cwd, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, shell=True)
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("reports/", "runs/", "masks/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline")
    copy_repo(path)
    # the tiny preset composed exactly as `dvc exp run -S preset=tiny` would compose it
    from dvc.utils.hydra import compose_and_dump
    compose_and_dump(str(path / "params.yaml"), str(path / "conf"), None, "config", str(path),
                     ["preset=tiny"])
    run("git init -q && git add -A && git commit -qm init", path)
    return path


@pytest.mark.slow
def test_repro_then_experiment(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    out = run(f"{sys.executable} -m dvc repro", repo).stdout
    for stage in ["data"] + [f"mask@{m}" for m in params["methods"]]:
        assert f"'{stage}'" in out
    rows = list(csv.DictReader((repo / "reports/results.csv").open()))
    assert [r["method"] for r in rows] == params["methods"]
    for name in ("results.md", "results.tex", "layer_density.png", "layer_nodes.png",
                 "dpai_trajectory.png", "training_curves.png"):
        assert (repo / "reports" / name).stat().st_size > 0
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["methods"]) == set(params["methods"])
    assert run(f"{sys.executable} -m dvc status -q", repo, check=False).returncode == 0

    run("git add -A && git commit -qm 'tiny run'", repo)
    exp = run(f"{sys.executable} -m dvc exp run -S preset=tiny -S sparsity=0.9", repo).stdout
    assert "Running stage 'data'" not in exp  # sparsity must not re-prepare the data
    assert "Running stage 'mask@dpai'" in exp and "Running stage 'report'" in exp
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["sparsity"] == 0.9
    shown = json.loads(run(f"{sys.executable} -m dvc exp show --json", repo).stdout)
    experiments = [e for baseline in shown for e in (baseline.get("experiments") or [])]
    assert experiments, "dvc exp show lists no experiment"


def test_bad_param_fails_before_work(repo, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad, ignore=shutil.ignore_patterns(".dvc", ".git", "masks", "runs"))
    params = yaml.safe_load((bad / "params.yaml").read_text())
    params["sparsity"] = 1.5
    (bad / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(f"{sys.executable} stages/mask.py dpai", bad, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: sparsity=1.5 must be a number in [0, 1)"
    assert not (bad / "masks").exists()
