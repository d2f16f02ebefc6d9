"""dpai-repro (dpai/pipeline/runner.py) on a toy DVC repo: parallel and submitit runs equal a
sequential `dvc repro`, workers and GPUs are assigned, failures stop the DAG, and a second clone
restores everything from a DVC remote's run-cache without running a stage.

The runner is started from its file (runpy) rather than `python -m dpai.pipeline.runner`, which would
import the dpai package and with it torch (10-20 s per start on the 2-core CI box); the toy
stages need neither. The toy stages append one JSON line per run to `ran.log` (git-ignored,
not an output), which shows what ran and with which environment.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNNER_PY = ROOT / "dpai" / "pipeline" / "runner.py"
sys.path.insert(0, str(ROOT))
from dpai.pipeline import runner as runner_mod  # noqa: E402  (imports dpai, as every test file does)

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
}
ENV.pop("CUDA_VISIBLE_DEVICES", None)
ENV.pop("TOY_FAIL", None)

STEP = r'''
import hashlib, json, os, sys, time
from pathlib import Path
kind, item = sys.argv[1], sys.argv[2]
with open("ran.log", "a") as f:
    f.write(json.dumps({"item": f"{kind}@{item}" if kind in ("a", "b") else kind,
                        **{k: os.environ.get(k) for k in
                           ("CUDA_VISIBLE_DEVICES",)}}) + "\n")
time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
if os.environ.get("TOY_FAIL") == f"{kind}@{item}":
    sys.exit(3)
scale = open("params.yaml").read().split("scale:")[1].split()[0]
def h(text):
    return hashlib.sha256(text.encode()).hexdigest()
if kind == "prep":
    Path("out").mkdir(exist_ok=True)
    Path("out/prep.txt").write_text(f"prep scale={scale}\n")
elif kind == "a":
    Path("out/a").mkdir(parents=True, exist_ok=True)
    Path(f"out/a/{item}.txt").write_text(h(Path("out/prep.txt").read_text() + item) + "\n")
elif kind == "b":
    Path("out/b").mkdir(parents=True, exist_ok=True)
    Path(f"out/b/{item}.txt").write_text(h(Path(f"out/a/{item}.txt").read_text()) + "\n")
else:
    parts = [p.name + " " + p.read_text() for p in sorted(Path("out/b").glob("*.txt"))]
    Path("out/agg.txt").write_text("".join(parts))
'''

DVC_YAML = """\
stages:
  prep:
    cmd: python src/step.py prep prep
    deps:
      - src/step.py
    params:
      - scale
    outs:
      - out/prep.txt
  a:
    matrix:
      method: ${methods}
      seed: ${seeds}
    cmd: python src/step.py a ${item.method}-${item.seed}
    deps:
      - src/step.py
      - out/prep.txt
    outs:
      - out/a/${item.method}-${item.seed}.txt
  b:
    matrix:
      method: ${methods}
      seed: ${seeds}
    cmd: python src/step.py b ${item.method}-${item.seed}
    deps:
      - src/step.py
      - out/a/${item.method}-${item.seed}.txt
    outs:
      - out/b/${item.method}-${item.seed}.txt
  agg:
    cmd: python src/step.py agg agg
    deps:
      - src/step.py
      - out/b
    outs:
      - out/agg.txt
"""
ITEMS = ["prep", *[f"{k}@{m}-0" for k in "ab" for m in ("m1", "m2")], "agg"]


def sh(*cmd, cwd, check=True, env=None):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or ENV, capture_output=True,
                         text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def repro(*args, cwd, check=True, env=None):
    """dpai-repro ARGS in cwd (the runner's file, run as __main__)."""
    code = ("import runpy, sys; p = sys.argv.pop(1); sys.argv[0] = 'dpai-repro'; "
            "runpy.run_path(p, run_name='__main__')")
    return sh(sys.executable, "-c", code, RUNNER_PY, "--no-validate", *args, cwd=cwd,
              check=check, env=env)


def ran(repo):
    log = Path(repo) / "ran.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def outputs(repo):
    return {str(p.relative_to(repo)): p.read_bytes()
            for p in sorted((Path(repo) / "out").rglob("*.txt"))}


def lock(repo):
    """dvc.lock's bytes: a parallel run must leave the very file a sequential one does."""
    return (Path(repo) / "dvc.lock").read_bytes()


def status(repo):
    return json.loads(sh(sys.executable, "-m", "dvc", "status", "--json", cwd=repo).stdout)


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def make_toy(repo, methods=("m1", "m2"), seeds=(0,)):
    """The toy DVC repo (git and DVC initialised, committed) at ``repo``."""
    repo = Path(repo)
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "step.py").write_text(STEP)
    (repo / "params.yaml").write_text(
        f"methods: [{', '.join(methods)}]\nseeds: [{', '.join(map(str, seeds))}]\nscale: 3\n")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / ".gitignore").write_text("ran.log\n")
    sh("git", "init", "-q", cwd=repo)
    sh(sys.executable, "-m", "dvc", "init", "-q", cwd=repo)
    sh(sys.executable, "-m", "dvc", "config", "core.analytics", "false", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "toy pipeline", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy") / "repo")


@pytest.fixture(scope="module")
def sequential(template):
    repo = copy(template, template.parent / "seq")
    sh(sys.executable, "-m", "dvc", "repro", cwd=repo)
    assert sorted(r["item"] for r in ran(repo)) == sorted(ITEMS)
    return repo


@pytest.fixture(scope="module")
def parallel(template):
    repo = copy(template, template.parent / "par")
    res = repro("-j", "2", "--gpus", "0,1", cwd=repo)
    return repo, res


def test_workers_come_from_compute_threads_and_gpus_cycle():
    """No thread variable reaches a stage (compute.threads, a parameter, sets its threads):
    workers default to cores // threads, or one per GPU x K; too many threads are named."""
    assert runner_mod.worker_plan(4) == [{}] * 4
    # K=2 workers per GPU: 4 workers over 2 devices, round-robin
    assert [p["CUDA_VISIBLE_DEVICES"] for p in runner_mod.worker_plan(4, ["0", "1"])] \
        == ["0", "1", "0", "1"]
    assert runner_mod.default_workers(16, 2, [], 1) == 8
    assert runner_mod.default_workers(2, 2, [], 1) == 1
    assert runner_mod.default_workers(16, 2, ["0", "1"], 2) == 4
    assert runner_mod.oversubscribed(2, 1, 2) is None
    assert runner_mod.oversubscribed(2, 2, 2).startswith(
        "warning: 2 workers x compute.threads=2 = 4 threads on 2 cores")
    with pytest.raises(ValueError, match="workers"):
        runner_mod.worker_plan(0)


def test_lock_entries_take_the_sequential_order(tmp_path):
    """Entries there before keep their place, new ones follow in planning order, whatever
    order the workers finished in; every entry's text is kept."""
    entry = "  {}:\n    cmd: python step.py {}\n    outs:\n    - path: out/{}.txt\n      md5: 0{}\n"
    body = lambda names: "schema: '2.0'\nstages:\n" + "".join(  # noqa: E731
        entry.format(n, n, n, i) for i, n in enumerate(names))
    (tmp_path / "dvc.lock").write_text(body(["old", "b@2", "agg", "b@1"]))
    runner_mod.order_lock(tmp_path, ["b@1", "b@2", "agg"], before=["old"])
    assert runner_mod.lock_stages(tmp_path) == ["old", "b@1", "b@2", "agg"]
    text = (tmp_path / "dvc.lock").read_text()
    assert "  b@1:\n    cmd: python step.py b@1\n    outs:\n    - path: out/b@1.txt\n      md5: 03\n" \
        in text


def test_lock_errors_are_recognised():
    assert runner_mod._lock_error("ERROR: Unable to acquire lock. Most likely another DVC")
    assert runner_mod._lock_error("ERROR: failed to reproduce 'x': 'out/a' is busy, it is")
    assert not runner_mod._lock_error("ERROR: failed to reproduce 'x': failed to run: exit 3")
    assert not runner_mod._lock_error("the GPU is busy")  # a stage's own output


@pytest.mark.slow  # a toy DVC repo end to end
def test_parallel_equals_sequential(parallel, sequential):
    repo, res = parallel
    assert sorted(r["item"] for r in ran(repo)) == sorted(ITEMS), res.stderr
    assert outputs(repo) == outputs(sequential)
    assert len(outputs(repo)) == len(ITEMS)
    assert lock(repo) == lock(sequential)
    assert status(repo) == {}
    for item in ITEMS:
        assert (repo / ".dvc/tmp/dpai-repro/logs" / f"{item}.log").is_file()
    # order: every phase finished before the next started
    order = [r["item"] for r in ran(repo)]
    assert order[0] == "prep" and order[-1] == "agg"
    assert max(order.index(i) for i in ITEMS if i.startswith("a@")) \
        < min(order.index(i) for i in ITEMS if i.startswith("b@"))


@pytest.mark.slow  # a toy DVC repo end to end
def test_parallel_rerun_runs_nothing(parallel):
    repo, _ = parallel
    before = ran(repo)
    res = repro("-j", "2", cwd=repo)
    assert ran(repo) == before
    assert "0 item(s) run" in res.stderr


@pytest.mark.slow  # a toy DVC repo end to end
def test_gpus_round_robin(parallel):
    repo, _ = parallel
    records = ran(repo)
    assert {r["CUDA_VISIBLE_DEVICES"] for r in records} == {"0", "1"}
    for kind in "ab":  # each 2-item phase used both devices
        assert {r["CUDA_VISIBLE_DEVICES"] for r in records if r["item"].startswith(kind)} \
            == {"0", "1"}


@pytest.mark.slow  # a toy DVC repo end to end
def test_dry_run_lists_phases(sequential, tmp_path):
    repo = copy(sequential, tmp_path / "dry")
    (repo / "params.yaml").write_text("methods: [m1, m2]\nseeds: [0]\nscale: 4\n")
    before = ran(repo)
    dry = repro("--dry-run", "-j", "2", "--gpus", "none", cwd=repo)
    lines = dry.stdout.splitlines()
    assert lines[0] == "4 phases; 2 worker(s), 1 thread(s) each (compute.threads)"
    assert lines[1:4] == ["phase 1/4 [prep]: 1 pending", "  prep",
                          "phase 2/4 [a@*]: 0 pending, 2 more if their inputs change"]
    assert "  b@m2-0 (after upstream)" in lines and "  agg (after upstream)" in lines
    assert ran(repo) == before  # a dry run runs nothing


@pytest.mark.slow  # a toy DVC repo end to end
def test_failed_item_stops_downstream(template):
    repo = copy(template, template.parent / "fail")
    res = repro("-j", "2", cwd=repo, check=False, env={**ENV, "TOY_FAIL": "a@m2-0"})
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    log = ".dvc/tmp/dpai-repro/logs/a@m2-0.log"
    assert last.startswith("error: 1 item(s) failed: a@m2-0 (log: ") and log in last, last
    assert "exit code 3" in (repo / log).read_text() or "exited" in (repo / log).read_text()
    names = [r["item"] for r in ran(repo)]
    assert sorted(names) == ["a@m1-0", "a@m2-0", "prep"]  # no b@*, no agg
    assert "a@m2-0" in status(repo) and "a@m1-0" not in status(repo)


@pytest.fixture(scope="module")
def submitted(template, tmp_path_factory):
    repo = copy(template, template.parent / "sub")
    store = tmp_path_factory.mktemp("remote") / "store"
    sh(sys.executable, "-m", "dvc", "remote", "add", "-d", "store", store, cwd=repo)
    res = repro("--executor", "submitit", "--cluster", "local", "-j", "2", "--remote", "store",
                cwd=repo)
    return repo, store, res


@pytest.mark.slow  # a toy DVC repo end to end
def test_submitit_local_equals_sequential(submitted, sequential):
    repo, _, res = submitted
    assert sorted(r["item"] for r in ran(repo)) == sorted(ITEMS), res.stderr
    assert outputs(repo) == outputs(sequential)
    assert lock(repo) == lock(sequential)
    assert status(repo) == {}
    assert "submitit/local" in res.stderr
    assert list((repo / ".dvc/tmp/dpai-repro/submitit").iterdir())  # submitit's job folders


@pytest.mark.slow  # a toy DVC repo end to end
def test_clone_restores_from_remote(submitted, sequential, tmp_path):
    repo, _, _ = submitted
    sh("git", "add", "-A", cwd=repo)  # code, params, dvc.lock and the remote's config
    sh("git", "commit", "-q", "--allow-empty", "-m", "results", cwd=repo)
    # another machine with the committed dvc.lock: pull, then repro finds nothing to do
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", repo, clone, cwd=tmp_path)
    assert outputs(clone) == {}
    sh(sys.executable, "-m", "dvc", "pull", "--run-cache", cwd=clone)
    sh(sys.executable, "-m", "dvc", "repro", cwd=clone)
    assert ran(clone) == []  # no stage script ran
    assert outputs(clone) == outputs(sequential)
    assert lock(clone) == lock(sequential)
    assert status(clone) == {}


@pytest.mark.slow  # a toy DVC repo end to end
def test_clone_without_lock_restores_from_run_cache(submitted, sequential, tmp_path):
    """Only the run-cache the jobs pushed can tell a clone without dvc.lock that the stages
    already ran: `dvc repro --pull` restores each one from it instead of running it."""
    repo, _, _ = submitted
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "--allow-empty", "-m", "results", cwd=repo)
    clone = tmp_path / "bare"
    sh("git", "clone", "-q", repo, clone, cwd=tmp_path)
    (clone / "dvc.lock").unlink()
    sh(sys.executable, "-m", "dvc", "repro", "--pull", cwd=clone)
    assert ran(clone) == []
    assert outputs(clone) == outputs(sequential)
    assert lock(clone) == lock(sequential)


def _slurm_up():
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%a %t"], capture_output=True, text=True)
    states = [line.split() for line in res.stdout.splitlines()]
    return res.returncode == 0 and any(s[:1] == ["up"] and s[1:2] in (["idle"], ["mix"])
                                       for s in states)


@pytest.mark.skipif(not _slurm_up(), reason="no SLURM cluster here (sbatch/sinfo absent or down)")
def test_submitit_slurm_equals_sequential(template, sequential):
    """Through a real SLURM (one job array per phase) when this machine has one."""
    repo = copy(template, template.parent / "slurm")
    res = repro("--executor", "submitit", "--cluster", "slurm", "-j", "2",
                "--timeout-min", "10", cwd=repo)
    assert "submitit/slurm" in res.stderr
    assert sorted(r["item"] for r in ran(repo)) == sorted(ITEMS)
    assert outputs(repo) == outputs(sequential)
    assert lock(repo) == lock(sequential)
    assert status(repo) == {}


def test_params_validated_before_any_work(tmp_path, monkeypatch, capsys):
    """The whole params.yaml (dpai.pipeline.validate) before anything else; the thread
    count then sizes the workers, with a warning when they oversubscribe the cores."""
    monkeypatch.chdir(tmp_path)  # no DVC repo here: any work would fail differently
    (tmp_path / "params.yaml").write_text("train:\n  epochs: -1\n")
    assert runner_mod.main(["--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "error: sparsity is missing from params.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert runner_mod.main(["--dry-run"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: train.epochs=-1 is invalid")
    params["train"]["epochs"] = 20
    params["compute"]["threads"] = runner_mod.cpu_count()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert runner_mod.main(["--dry-run", "-j", "2"]) == 2  # valid: goes on, finds no pipeline
    err = capsys.readouterr().err
    assert "cannot read the DVC pipeline" in err and err.startswith("warning: 2 workers x ")
    assert runner_mod.main(["--dry-run", "--no-validate"]) == 2
