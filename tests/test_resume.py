"""Kill real `dvc repro` processes with SIGKILL at several moments (mid-DPaI-search, between
seeds, mid-epoch, mid-checkpoint-write), rerun `dvc repro`, and compare every mask and run
file byte for byte with an uninterrupted run. Also SIGTERM, and a NaN loss."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline_repo import DVC, ENV, make_repo, ran, run

pytestmark = pytest.mark.slow

SETTING = ("preset=tiny", "methods=[dpai]", "seeds=[0,1]", "mask.dpai.steps=300",
           "train.epochs=4", "train.milestones=[2]")
FAULT_ENV = {"DPAI_SEARCH_CHECKPOINT_EVERY": "100", "DPAI_CHECKPOINT_EVERY": "1"}
OUTPUTS = ["masks/dpai-0.99-0.pt", "masks/dpai-0.99-0.json", "masks/dpai-0.99-1.pt",
           "masks/dpai-0.99-1.json", "runs/dpai-0.99-0.json", "runs/dpai-0.99-1.json"]


def recover_rwlock(repo: Path) -> None:
    """What docs/reliability.md tells a user to do after a kill: DVC rewrites .dvc/tmp/rwlock
    in place, so a SIGKILL during that write leaves it empty and DVC refuses to start. With no
    DVC process running, an unreadable file holds no live lock; delete it."""
    path = repo / ".dvc/tmp/rwlock"
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except json.JSONDecodeError:
        path.unlink()


def start_repro(repo: Path, log: Path, **env) -> subprocess.Popen:
    recover_rwlock(repo)
    return subprocess.Popen(f"{DVC} repro train", cwd=repo, shell=True,
                            env={**ENV, **FAULT_ENV, **env}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 300.0,
              delay: float = 0.0) -> None:
    """SIGKILL the whole process group (dvc and the stage) `delay` s after `condition()`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError("the run ended before the fault could be injected")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("timed out waiting for the moment to kill")
        time.sleep(0.0005)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a killed process stays a zombie until init reaps it (0.5-2 s here), and DVC counts a
    # zombie as alive: a rerun started at once found the stage's data "busy" (its rwlock).
    # The group's members are looked up after the kill, so the kill lands without delay.
    deadline = time.monotonic() + 30
    while _in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _in_group(pgid: int) -> list[int]:
    """The processes (zombies included) of process group `pgid`."""
    out = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                out.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return out


def no_partial_outputs(repo: Path) -> None:
    for folder in ("masks", "runs", "reports"):
        for path in (repo / folder).glob("*"):
            assert not path.name.endswith((".tmp", ".tmpdir")), path
            if path.suffix == ".json":
                json.loads(path.read_text())  # complete, strict JSON


def checkpoint_epoch(repo: Path, item: str) -> int:
    import torch
    for path in (repo / "checkpoints").glob(f"train-{item}-*.pt"):
        try:
            return torch.load(path, weights_only=True)["state"]["epoch"]
        except Exception:
            return -1
    return -1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("uninterrupted"), *SETTING)
    run(f"{DVC} repro train", repo, env=FAULT_ENV)
    return {name: (repo / name).read_bytes() for name in OUTPUTS}


def test_sigkill_at_four_moments_then_resume_bit_for_bit(tmp_path, reference):
    repo = make_repo(tmp_path / "repo", *SETTING)
    logs = [tmp_path / f"log{i}.txt" for i in range(4)]
    tmp = repo / ".dvc/tmp/dpai"
    ckpts = repo / "checkpoints"
    lock = repo / "dvc.lock"

    # 1. mid-checkpoint-write: the search checkpoints every step here, and the kill lands
    #    while a temporary checkpoint file is being written (an earlier one is complete)
    #    (on a loaded machine the write can finish between the check and the kill: try again,
    #    each try resuming from the last complete checkpoint)
    for _ in range(5):
        proc = start_repro(repo, logs[0], DPAI_SEARCH_CHECKPOINT_EVERY="1")
        kill_when(proc, lambda: any(ckpts.glob("mask-dpai-*.pt")) and tmp.is_dir()
                  and any(p.name.startswith(".mask-dpai") for p in tmp.iterdir()))
        stale = [p.name for p in tmp.iterdir()]
        if stale:
            break
    assert stale, "the kill did not land during a checkpoint write in 5 tries"
    no_partial_outputs(repo)

    # 2. mid-DPaI-search, well after a checkpoint (every 100 steps from here on)
    proc = start_repro(repo, logs[1])
    kill_when(proc, lambda: any(ckpts.glob("mask-dpai-0.99-*.pt")), delay=1.0)
    no_partial_outputs(repo)

    # 3. between seeds: one mask item committed by DVC, the other seed's search under way
    proc = start_repro(repo, logs[2])
    kill_when(proc, lambda: lock.is_file() and "mask@dpai-0.99-" in lock.read_text())
    no_partial_outputs(repo)

    # 4. mid-epoch: a training has checkpointed epoch 1 and is inside the next one (an epoch
    #    of the tiny preset takes about 0.4 s here; a longer delay once let the training
    #    finish before the kill, leaving nothing to resume)
    proc = start_repro(repo, logs[3])
    kill_when(proc, lambda: max(checkpoint_epoch(repo, "dpai-0.99-0"),
                                checkpoint_epoch(repo, "dpai-0.99-1")) >= 1, delay=0.1)
    no_partial_outputs(repo)

    # resume to the end: every item continues from its checkpoint and says so
    recover_rwlock(repo)
    out = run(f"{DVC} repro train", repo, env=FAULT_ENV).stdout
    text = "".join(log.read_text() for log in logs) + out
    assert "dpai: resuming from checkpoint" in text, text[-3000:]
    assert "resuming from checkpoint" in out and "at epoch 1" in out, out[-3000:]
    # (a kill that lands right after DVC wrote an item's lock entry was once seen to make the
    # next run redo that item, resuming from its checkpoint; not asserted until understood)
    for name in OUTPUTS:
        assert (repo / name).read_bytes() == reference[name], name
    assert not list(ckpts.glob("*.pt")), "checkpoints must be removed when a stage completes"
    assert not [p for p in tmp.iterdir() if p.name in stale], "stale temporary files stay"
    assert ran(run(f"{DVC} repro train", repo).stdout) == []


def test_sigterm_leaves_no_temporary_file(tmp_path):
    repo = make_repo(tmp_path / "repo", *SETTING)
    run(f"{DVC} repro data", repo)
    proc = subprocess.Popen([sys.executable, "stages/mask.py", "dpai", "0.99", "0"], cwd=repo,
                            env={**ENV, **FAULT_ENV, "DPAI_SEARCH_CHECKPOINT_EVERY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp = repo / ".dvc/tmp/dpai"
    deadline = time.monotonic() + 120
    while not (tmp.is_dir() and any(tmp.iterdir())):  # a checkpoint write under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.0005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert not list(tmp.iterdir()) and not (repo / "masks").exists()


def test_nan_loss_stops_training_without_a_result(tmp_path):
    """An absurd learning rate drives the loss to inf/NaN within the first epoch."""
    repo = make_repo(tmp_path / "repo", "preset=tiny", "methods=[random_erk]", "train.lr=1e30",
                     "train.epochs=3", "train.milestones=[2]")
    proc = run(f"{DVC} repro train", repo, check=False)
    assert proc.returncode != 0
    line = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("error:")][0]
    assert "not finite at epoch 0" in line and "step" in line and "no result written" in line
    assert not (repo / "runs/random_erk-0.99-0.json").exists()


def test_an_emptied_dvc_rwlock_stops_dvc_until_removed(tmp_path):
    """The situation docs/reliability.md describes: a kill during DVC's in-place rewrite of
    .dvc/tmp/rwlock leaves it empty; DVC then refuses to run, and deleting it is the fix."""
    repo = make_repo(tmp_path / "repo", *SETTING)
    (repo / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    (repo / ".dvc/tmp/rwlock").write_text("")
    proc = run(f"{DVC} repro check", repo, check=False)
    assert proc.returncode != 0 and "JSON structure is corrupted" in proc.stdout + proc.stderr
    recover_rwlock(repo)
    run(f"{DVC} repro check", repo)
