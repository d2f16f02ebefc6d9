"""Device choice: `auto` is CUDA when available, else CPU; the CPU's model name for records."""
import platform
from pathlib import Path

import torch

from .rules import Rule

DEVICES = ("auto", "cpu", "cuda")
DEVICE_RULE = Rule(f"one of {list(DEVICES)} or cuda:N", lambda v: isinstance(v, str) and (
    v in DEVICES or (v.startswith("cuda:") and v[5:].isdigit())))


def resolve_device(device: str = "auto") -> torch.device:
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ValueError(f"device={device!r} is not one of {list(DEVICES)} (or cuda:N)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here")
    return torch.device(device)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo; elsewhere platform's), never a host.
    Recorded with results: the CPU kind changes float results, and torch's dispatch level
    alone does not tell two AVX-512 processors apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
