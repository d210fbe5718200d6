"""FLOP counting with `torch.utils.flop_counter.FlopCounterMode` on the meta device.

Papers (and mmseg/fvcore) print multiply-accumulates and call them FLOPs; we report both: GMACs and
GFLOPs = 2 × GMACs. The model is built on the meta device, so counting needs no memory and no real arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

from segrefine.errors import SettingError
from segrefine.models.config import ModelConfig
from segrefine.hub.model import SegRefineModel

# What FlopCounterMode does not count in this network: cheap, memory-bound ops papers leave out too.
MAX_SIDE = 65536  # pixels: a side beyond what any camera or scan gives
UNCOUNTED = (
    "interpolate (bilinear resizing)",
    "grid_sample (SRM warping)",
    "the mask-weighted neighbourhood sum of offsets (SRM)",
    "softmax",
    "batch normalisation",
    "activations and other element-wise ops",
    "pooling",
)


# FlopCounterMode knows the fused attention kernels of CUDA but not the CPU's, which PyTorch picks for some inputs: the
# CRM's attention MACs would be left out of counts made on a CPU.
_CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_ATTENTION not in flop_registry:

    @register_flop_formula(_CPU_ATTENTION)
    def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        return sdpa_flop_count(query_shape, key_shape, value_shape)


@dataclass(frozen=True)
class FlopReport:
    variant: str
    input: tuple[int, int]
    params: int
    gmacs: float
    gflops: float
    modules: dict[str, float]  # GMACs per module
    uncounted: tuple[str, ...]
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


def count_module_flops(model: nn.Module, inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Total FLOPs (2 per multiply-accumulate) of one forward, and FLOPs per fully-qualified module name."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(inputs)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def _breakdown(per_module: dict[str, int], root: str) -> dict[str, float]:
    """GMACs per top-level module, with the per-level SRM/decoder dicts expanded (e.g. `srm.c2`)."""
    out: dict[str, float] = {}
    for name, flops in per_module.items():
        parts = name.split(".")
        if parts[0] != root or len(parts) < 2:
            continue
        expanded = parts[1] in ("srm", "lateral", "smooth")
        if len(parts) == (3 if expanded else 2):
            out[".".join(parts[1:])] = flops / 2e9
    return out


def check_size(size: tuple[int, int], name: str = "size") -> None:
    """An input size the counter can take: sides of 1 to MAX_SIDE pixels (beyond, its products overflow)."""
    if not all(0 < side <= MAX_SIDE for side in size):
        raise SettingError(f"`{name}` {size[0]}x{size[1]} must have sides of 1 to {MAX_SIDE} pixels")


def count_flops(config: ModelConfig, size: tuple[int, int] = (1024, 2048)) -> FlopReport:
    """Count the eval-mode network (auxiliary heads excluded) at batch 1 and the given H×W."""
    check_size(size)
    config = replace(config, aux=False)
    with torch.device("meta"):
        model = SegRefineModel(config).eval()
        inputs = torch.empty(1, 3, *size)
    total, per_module = count_module_flops(model, inputs)
    return FlopReport(
        variant=config.variant,
        input=tuple(size),
        params=sum(p.numel() for p in model.parameters()),
        gmacs=total / 2e9,
        gflops=total / 1e9,
        modules=_breakdown(per_module, type(model).__name__),
        uncounted=UNCOUNTED,
        config=config.to_dict(),
    )
