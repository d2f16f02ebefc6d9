"""Sparse training: the loop (`train`), its configuration, data-parallel training under
torchrun (`train_ddp`) and fused training of K models in one process (`train_fused`)."""
from .config import INITS, TrainConfig, TrainParams
from .distributed import train_ddp
from .fused import train_fused
from .loop import NonFiniteLoss, train

__all__ = ["TrainConfig", "TrainParams", "INITS", "train", "NonFiniteLoss", "train_ddp",
           "train_fused"]
