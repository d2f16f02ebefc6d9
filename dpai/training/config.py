"""What a sparse training run is configured by: `TrainConfig` (the library's, paper Table 6
defaults) and `TrainParams`, the `train:` section of params.yaml (TrainConfig plus where the
pipeline trains and which initialisation).

    config = TrainConfig(epochs=160, lr=0.1, milestones=[60, 120])
    TrainConfig(epochs=0)  -> ValueError: train.epochs=0 is invalid: allowed is an integer >= 1
"""
from dataclasses import dataclass, fields

from ..core.device import DEVICE_RULE
from ..core.rules import Rule, Section, boolean, integer, is_int, one_of, param, real

MILESTONES = Rule("a strictly increasing list of integers >= 1",
                  lambda ms: isinstance(ms, (list, tuple)) and all(is_int(m) and m >= 1 for m in ms)
                  and all(a < b for a, b in zip(ms, ms[1:])))
INITS = ("same", "fresh")   # same: the init the mask was computed on (the baselines' reference)


@dataclass
class TrainConfig(Section):
    KEY = "train"
    epochs: int = param(160, integer(1), "passes over the training set")
    batch_size: int = param(128, integer(1), "images per optimizer step")
    lr: float = param(0.1, real(0, lo_open=True), "initial learning rate")
    momentum: float = param(0.9, real(0, 1, hi_open=True), "SGD momentum")
    weight_decay: float = param(1e-4, real(0), "L2 weight decay")
    milestones: list[int] = param([60, 120], MILESTONES,
                                  "epochs (0-based) at whose start lr is multiplied by gamma")
    gamma: float = param(0.1, real(0, 1, lo_open=True), "lr factor at each milestone")
    nesterov: bool = param(False, boolean(), "Nesterov momentum (needs momentum > 0, sgd)")
    amp: bool = param(True, boolean(), "bf16 autocast on CUDA (BatchNorm fp32); CPU trains fp32")
    compile: bool = param(False, boolean(),
                          "torch.compile the training step: the same numbers up to float order")
    optimizer: str = param("sgd", one_of("sgd", "adamw"),
                           "sgd (momentum, nesterov) | adamw (the authors' ViT optimiser)")
    warmup_epochs: int = param(0, integer(0), "epochs of linear warmup, below epochs")
    schedule: str = param("multistep", one_of("multistep", "cosine"),
                          "after warmup: x gamma at each milestone | half a cosine to 0")
    sync_bn: bool = param(True, boolean(),
                          "data-parallel runs: BatchNorm over the global batch (false: per rank)")

    def validate(self):
        self.milestones = list(self.milestones)  # params.yaml gives a list, Python a tuple maybe
        if self.nesterov and self.momentum == 0:
            raise ValueError("train.nesterov=True is invalid with train.momentum=0: allowed "
                             "only with momentum > 0")
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(f"train.nesterov=True is invalid with train.optimizer="
                             f"{self.optimizer!r}: allowed only with sgd")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs={self.warmup_epochs} is invalid: allowed is "
                             f"an integer below train.epochs={self.epochs}")

    @classmethod
    def from_dict(cls, params, *, complete: bool = False) -> "TrainConfig":
        """From a mapping of TrainConfig fields (missing ones keep their defaults)."""
        return super().from_dict(params, complete=complete)


@dataclass
class TrainParams(TrainConfig):
    """The train: section of params.yaml: every TrainConfig field (all required there, with the
    milestones inside the run), plus the device and the initialisation."""
    device: str = param("auto", DEVICE_RULE, "auto (CUDA when available) | cpu | cuda | cuda:N")
    init: str = param("same", one_of(*INITS), "same: the init the mask saw | fresh: a new one")

    def validate(self):
        super().validate()
        late = [m for m in self.milestones if m >= self.epochs]
        if late:
            raise ValueError(f"train.milestones={self.milestones} is invalid for train.epochs="
                             f"{self.epochs}: allowed are epochs below {self.epochs}")

    @classmethod
    def from_dict(cls, params, *, complete: bool = True) -> "TrainParams":
        return Section.from_dict.__func__(cls, params, complete=complete)

    def config(self) -> TrainConfig:
        """The library's TrainConfig (without device and init)."""
        names = [f.name for f in fields(TrainConfig)]
        return TrainConfig(**{n: getattr(self, n) for n in names})


__all__ = ["TrainConfig", "TrainParams", "INITS"]
