"""A temporary git + DVC copy of this repository, for the end-to-end tests."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
       "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com",
       "PYTHONPATH": str(ROOT)}
DVC = f"{sys.executable} -m dvc"


def run(cmd, cwd, check=True, env=None):
    proc = subprocess.run(cmd, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True,
                          text=True, shell=True)
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def make_repo(dest: Path, *overrides: str) -> Path:
    """Copy the tracked and new files (no outputs, no dvc.lock), compose params.yaml with the Hydra
    `overrides` exactly as `dvc exp run -S ...` would, and commit. Stages compute with one
    thread (compute.threads=1) unless an override says otherwise: the suite runs on two
    worker processes of one thread each."""
    if not any(o.startswith("compute.threads=") for o in overrides):
        overrides = (*overrides, "compute.threads=1")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        # no outputs and no dvc.lock: the repo's lock is the default pipeline's, not this one's
        if (ROOT / name).is_file() and not name.startswith(("reports/", "runs/", "masks/")) \
                and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    from dvc.utils.hydra import compose_and_dump
    compose_and_dump(str(dest / "params.yaml"), str(dest / "conf"), None, "config", str(dest),
                     list(overrides))
    run("git init -q && git add -A && git commit -qm init", dest)
    return dest


def ran(output: str) -> list[str]:
    """The stages DVC ran (not skipped) in a `dvc repro` / `dvc exp run` output."""
    return re.findall(r"Running stage '([^']+)'", output)


def tree_digest(*folders: Path) -> dict:
    """name -> sha256 of every file under `folders` (to show nothing changed)."""
    out = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")) if Path(folder).exists() else []:
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
