"""Model configuration: everything needed to rebuild a network, and nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from segrefine.data.meta import IGNORE_INDEX
from segrefine.errors import SegrefineError, SettingError, check_fields
from segrefine.models.registry import VARIANTS

SRM_MODES = ("bilinear", "flow", "full")
SRM_MASKS = ("softmax", "sigmoid")
SRM_KERNELS = (1, 3, 5)
CRM_MODES = ("off", "gate", "attention")
LABEL_STRIDE = 4  # the logits' grid: the finest decoder level (c2) is 1/4 of the input
OUTPUT_STRIDE = 32  # the coarsest backbone stage (c5) is 1/32 of the input: smaller inputs leave it one pixel


@dataclass(frozen=True)
class ModelConfig:
    """Every switch of the network; `config.json` stores exactly these fields under "model"."""

    variant: str = field(default="lite", metadata={"help": "Network variant.", "choices": tuple(VARIANTS)})
    num_classes: int = 19
    srm: str = field(default="full", metadata={"help": "SRM mode.", "choices": SRM_MODES})
    srm_kernel: int = field(default=3, metadata={"help": "SRM neighbourhood size.", "choices": SRM_KERNELS})
    srm_mask: str = field(default="softmax", metadata={"help": "SRM mask activation.", "choices": SRM_MASKS})
    srm_fusion: bool = field(default=False, metadata={"help": "Also align the coarser pyramid levels to the 1/4 grid with an SRM before fusion."})
    srm_local: bool = field(default=False, metadata={"help": "Bound each SRM offset to one cell of the coarser map."})
    ibn: bool = field(default=False, metadata={"help": "Instance-batch normalisation (IBN-a) in the first three backbone stages."})
    crm: str = field(default="attention", metadata={"help": "CRM mode.", "choices": CRM_MODES})
    memory: bool = field(default=False, metadata={"help": "Add the MCIBI class memory."})
    memory_dim: int = field(default=0, metadata={"help": "Memory feature width (0: the variant's decoder width)."})
    aux: bool = field(default=True, metadata={"help": "Train with the auxiliary FCN head on C4."})

    def __post_init__(self) -> None:
        check_fields(self)
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise SettingError(
                    f"`{f.name}` must be one of {', '.join(map(str, choices))}; got {getattr(self, f.name)!r}"
                )
        if not 1 <= self.num_classes < IGNORE_INDEX:  # label maps are uint8, and IGNORE_INDEX is no class
            raise SettingError(f"`num_classes` must be 1-{IGNORE_INDEX - 1}, got {self.num_classes!r}")
        if self.memory_dim < 0:
            raise SettingError(f"`memory_dim` must be >= 0, got {self.memory_dim}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SegrefineError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)
