"""Device choice: `auto` is CUDA when available, else CPU."""
import torch

DEVICES = ("auto", "cpu", "cuda")


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
