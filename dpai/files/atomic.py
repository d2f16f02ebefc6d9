"""Atomic file output: write a temporary file, then rename it onto the target.

A reader (or DVC hashing a folder) sees a file complete or not at all. The temporary file
goes to `DPAI_TMPDIR` when that is set (the stages point it outside every folder DVC hashes,
on the same file system so the rename stays atomic), else next to the target. Its name
carries the writer's pid, so `clean_stale` can remove what a killed writer left behind
without touching the files of writers still running.
"""
import errno
import glob
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

# .<name>.<pid>.<random>.tmp (files) and .<name>.<pid>.<random>.tmpdir (folders)
_TEMP = re.compile(r"^\..*\.(\d+)\.[A-Za-z0-9_]+\.tmp(dir)?$")


def temp_dir(path: Path) -> Path:
    folder = os.environ.get("DPAI_TMPDIR")
    return Path(folder) if folder else path.parent


def _temp(path: Path, folder: Path, suffix: str = ".tmp") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix)
    os.close(fd)
    return tmp


def atomic_write(path, write) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path` only if it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = temp_dir(path)
    try:
        # created inside the try: a signal that lands just after mkstemp made the file (before
        # its name is known here) must not leave it behind, hence the clean-up by pattern below
        tmp = _temp(path, folder)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual file mode
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # DPAI_TMPDIR on another file system: fall back to a temporary file next to path
            local = _temp(path, path.parent)
            shutil.move(tmp, local)
            os.replace(local, path)
    except BaseException:
        # this process's temporaries for `path` (one write per path at a time per process)
        pattern = f".{glob.escape(path.name)}.{os.getpid()}.*.tmp"
        for left in {*folder.glob(pattern), *path.parent.glob(pattern)}:
            left.unlink(missing_ok=True)
        raise
    return path


def temp_folder(parent, name: str) -> Path:
    """A new folder `.<name>.<pid>.<random>.tmpdir` in `parent`, for building outputs."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmpdir", dir=parent))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(*folders) -> list[Path]:
    """Remove temporary files and folders that writers no longer alive left in `folders`."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _TEMP.match(entry.name)
            if match is None or _alive(int(match.group(1))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def write_torch(path, obj) -> Path:
    """torch.save, atomically and byte-reproducibly: serialised in memory first, because
    torch.save names the archive's records after the file it writes (here a random temporary
    name), which would make identical tensors give different bytes."""
    import io
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def strict(obj):
    """`obj` with every NaN or infinite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def write_json(path, obj) -> Path:
    """Strict JSON (NaN and infinities become null), atomically."""
    return write_text(path, json.dumps(strict(obj), indent=2, sort_keys=False,
                                       allow_nan=False) + "\n")
