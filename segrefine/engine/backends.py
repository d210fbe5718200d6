"""How a loaded model runs: on PyTorch in fp32 or under bf16 autocast, or on onnxruntime."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from segrefine.errors import SettingError
from segrefine.hub.onnx import OnnxModel, require, session
from segrefine.models import fold_batchnorm

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16")


class Autocast(nn.Module):
    """A network run under bf16 autocast on its input's device, returning float32 logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.model(x)
        if isinstance(out, Mapping):  # train mode
            return {key: value.float() for key, value in out.items()}
        return out.float()


def bf16_problem(device: torch.device) -> str | None:
    """Why `device` cannot run bf16 autocast usefully, or None."""
    if device.type == "cpu" and not _cpu_has_bf16():
        return "this CPU has no bf16 instructions (AVX-512 BF16 or AMX) that oneDNN uses"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type not in ("cpu", "cuda"):
        return f"bf16 autocast is supported here on CPU and CUDA only, not {device.type}"
    return None


def _cpu_has_bf16() -> bool:
    """Whether oneDNN finds bf16 instructions on this CPU."""
    # Private, on purpose: torch has no public CPU bf16 check (torch.cuda.is_bf16_supported has no CPU twin), and
    # this is the test oneDNN's own bf16 kernels make.
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def to_onnxruntime(model: nn.Module, device: torch.device) -> OnnxModel:
    """A PyTorch network exported (any input size) and loaded into onnxruntime."""
    from segrefine.engine.export import to_onnx

    for module in ("onnxruntime", "onnxscript"):  # before the export's seconds of work, not after
        require(module)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.onnx")
        to_onnx(model, {"model": model.config.to_dict()}, path)
        return OnnxModel(session(path, device), model.config, name="the model exported to onnxruntime")


def for_inference(
    model: nn.Module, device: torch.device, *, backend: str | None = None, precision: str = "fp32"
) -> nn.Module:
    """`model`, as `load_model` gave it, set up to run on `backend` at `precision`.

    An exported .onnx model runs on onnxruntime only; a PyTorch one runs on onnxruntime after an export to memory
    (`backend="onnxruntime"`). `backend=None` keeps the model's own. bf16 autocast is for the torch backend. A
    PyTorch model is set up in place, for inference only: eval mode, BatchNorm folded into the convolutions.
    """
    exported = isinstance(model, OnnxModel)
    if backend is not None and backend not in BACKENDS:
        raise SettingError(f"`backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise SettingError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if exported and backend == "torch":
        raise SettingError("`backend` torch cannot run an exported .onnx file: pass the PyTorch checkpoint instead")
    if precision == "bf16" and (exported or backend == "onnxruntime"):
        raise SettingError("`precision` bf16 applies to the torch `backend` only (onnxruntime runs fp32 or int8 files)")
    if precision == "bf16":
        problem = bf16_problem(device)
        if problem:
            raise SettingError(f"`precision` bf16: {problem}")
    if backend == "onnxruntime" and not exported:
        return to_onnxruntime(model, device)
    if exported:
        return model
    model = fold_batchnorm(model)
    return Autocast(model) if precision == "bf16" else model
