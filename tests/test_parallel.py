"""The real pipeline (tiny preset, compute.threads=1) through `dpai-repro -j 2` and through
submitit's local executor with a DVC remote: byte for byte the dvc.lock and reports of a
sequential `dvc repro` (every stage computes with compute.threads, whoever runs it), and a
second clone pointed at the remote restores everything without running a stage."""
import shutil
import subprocess
import sys

import pytest

from dpai.report import OUTPUTS
from pipeline_repo import DVC, make_repo, ran, run

# both tests compare with one sequential run: one xdist worker builds it once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("parallel")]

SETTING = ("preset=tiny", "methods=[random_erk,snip]")  # two items per phase: 2 workers busy
RUNNER = f"{sys.executable} -m dpai.pipeline.runner"  # what the dpai-repro script runs


def lock(repo):
    return (repo / "dvc.lock").read_bytes()


def reports(repo):
    return {name: (repo / "reports" / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("sequential"), *SETTING)
    run(f"{DVC} repro", repo)
    return repo


def test_two_workers_equal_sequential(sequential, tmp_path):
    repo = make_repo(tmp_path / "parallel", *SETTING)
    out = run(f"{RUNNER} -j 2", repo)
    assert "failed" not in out.stdout.lower().replace("0 failed", "")
    assert lock(repo) == lock(sequential)
    assert reports(repo) == reports(sequential)
    assert run(f"{DVC} status", repo).stdout.strip().endswith("up to date.")
    logs = sorted(p.name for p in (repo / ".dvc/tmp/dpai-repro/logs").iterdir())
    assert "train@snip-0.99-0.log" in logs and len(logs) == 1 + 1 + 2 + 2 + 1


def test_submitit_with_a_remote_then_a_clone_restores_without_running(sequential, tmp_path):
    repo = make_repo(tmp_path / "submitted", *SETTING)
    store = tmp_path / "store"
    run(f"{DVC} remote add -d store {store} && git add .dvc/config && git commit -qm remote",
        repo)
    run(f"{RUNNER} -j 2 --executor submitit --cluster local --remote store", repo)
    assert lock(repo) == lock(sequential)
    assert reports(repo) == reports(sequential)
    run("git add -A && git commit -qm 'results'", repo)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    out = run(f"{DVC} pull --run-cache -q && {DVC} repro", clone).stdout
    assert ran(out) == [], out[-2000:]
    for name in ("masks/snip-0.99-0.pt", "runs/random_erk-0.99-0.json", "data/digits/train.pt"):
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name
    shutil.rmtree(clone)
