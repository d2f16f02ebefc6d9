"""Resumable state files for long computations (training epochs, DPaI steps).

    ckpt = Checkpoint("checkpoints", "train-dpai-0.99-0", key={...inputs...}, every=1)
    state = ckpt.load()          # None, or the state saved by a run with the same key
    ...
    ckpt.save({"epoch": 3, ...}) # atomic: a kill leaves the previous checkpoint intact
    ckpt.remove()                # when the computation is complete

The file name carries a digest of `key` (everything the result depends on: parameters, input
file hashes, code version), so a run with other inputs never finds, let alone resumes, it.
"""
import hashlib
import json
from pathlib import Path

import torch

from .atomic import write_torch


def digest(obj) -> str:
    """A short stable hash of a JSON-able object (dict key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digest(*folders) -> str:
    """Hash of every .py file under `folders`: a checkpoint of older code is never resumed."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class Checkpoint:
    def __init__(self, folder, name: str, key: dict, every: int = 1, log=print):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint every={every!r} must be an integer >= 0 (0: never)")
        self.key, self.every, self.log = key, every, log
        self.path = Path(folder) / f"{name}-{digest(key)}.pt"

    def due(self, done: int) -> bool:
        """Whether to save after `done` units (epochs, steps)."""
        return self.every > 0 and done > 0 and done % self.every == 0

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable: start over rather than fail or resume garbage
            if self.log:
                self.log(f"checkpoint {self.path} is unreadable ({type(exc).__name__}); "
                         f"starting over")
            return None
        if blob.get("key") != json.loads(json.dumps(self.key, default=str)):
            return None
        return blob["state"]

    def save(self, state: dict) -> Path:
        key = json.loads(json.dumps(self.key, default=str))
        return write_torch(self.path, {"key": key, "state": state})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state(generators=()) -> dict:
    """torch's global CPU (and CUDA) RNG states and those of `generators`."""
    state = {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators=()) -> None:
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["Checkpoint", "digest", "file_digest", "source_digest", "rng_state", "set_rng_state"]
