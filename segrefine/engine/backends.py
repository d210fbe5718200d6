"""How a loaded model runs: on PyTorch in fp32 or under bf16 autocast, or on onnxruntime.

A PyTorch model run on onnxruntime is exported once: the file is cached in `cache_folder()`/onnx under a key made of
the weights' sha256, the input size and the model's switches, so the next run with the same weights loads it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from segrefine import __version__
from segrefine.engine.progress import status
from segrefine.engine.inference import check_runtime
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub.onnx import ONNX_SUFFIX, OnnxModel, providers, require, session
from segrefine.imageio import atomic_write, folder_problem
from segrefine.models import fold_batchnorm

CACHE_ENV = "SEGREFINE_CACHE"


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
    # Private, on purpose: torch has no public CPU bf16 check (torch.cuda.is_bf16_supported has no CPU twin), and
    # this is the test oneDNN's own bf16 kernels make.
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "this CPU has no bf16 instructions (AVX-512 BF16 or AMX) that oneDNN uses"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type not in ("cpu", "cuda"):
        return f"bf16 autocast is supported here on CPU and CUDA only, not {device.type}"
    return None


def cache_folder() -> Path:
    """segrefine's cache: $SEGREFINE_CACHE, else $XDG_CACHE_HOME/segrefine, else ~/.cache/segrefine."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "segrefine"


def export_key(model: nn.Module) -> str:
    """The sha256 of the weights (every tensor's name, type, shape and bytes), the input size, the model's switches
    and the versions of segrefine and torch that export it."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    about = {"size": "any", "model": model.config.to_dict(), "segrefine": __version__, "torch": torch.__version__}
    digest.update(json.dumps(about, sort_keys=True).encode())
    return digest.hexdigest()


def to_onnxruntime(model: nn.Module, device: torch.device) -> OnnxModel:
    """A PyTorch network exported (any input size) and loaded into onnxruntime; the export comes from the cache when
    these weights and switches were exported before, and goes into it otherwise."""
    from segrefine.engine.export import to_onnx

    for module in ("onnxruntime", "onnxscript"):  # before the export's seconds of work, not after
        require(module)
    providers(device)  # a device onnxruntime lacks fails here, not as a damaged cache file
    folder = cache_folder() / "onnx"
    cached = folder / f"{export_key(model)}{ONNX_SUFFIX}"
    name = "the model exported to onnxruntime"
    if cached.is_file():
        try:
            return OnnxModel(session(cached, device), model.config, name=name)
        except SegrefineError:  # a damaged cache file is exported again
            cached.unlink(missing_ok=True)
    keep = folder_problem(folder) is None  # else the export serves this run only
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.onnx")
        with status(f"exporting the model to ONNX for onnxruntime{f' (once: cached in {folder})' if keep else ''}"):
            to_onnx(model, {"model": model.config.to_dict()}, path)
        runner = session(path, device)
        if keep:
            with contextlib.suppress(SegrefineError):  # e.g. a full disk: the export still serves this run
                atomic_write(cached, lambda target: shutil.copyfile(path, target))
        return OnnxModel(runner, model.config, name=name)


def for_inference(
    model: nn.Module, device: torch.device, *, backend: str | None = None, precision: str = "fp32"
) -> nn.Module:
    """`model`, as `load_model` gave it, set up to run on `backend` at `precision`.

    An exported .onnx model runs on onnxruntime only; a PyTorch one runs on onnxruntime after an export to memory
    (`backend="onnxruntime"`). `backend=None` keeps the model's own. bf16 autocast is for the torch backend. A
    PyTorch model is set up in place, for inference only: eval mode, BatchNorm folded into the convolutions.
    """
    exported = isinstance(model, OnnxModel)
    check_runtime(backend, precision)
    if exported and backend == "torch":
        raise SettingError("`backend` torch cannot run an exported .onnx file: pass the PyTorch checkpoint instead")
    if precision == "bf16" and (exported or backend == "onnxruntime"):
        raise SettingError("`precision` bf16 applies to the torch `backend` only (onnxruntime runs fp32 or int8 files)")
    if precision == "bf16" and (problem := bf16_problem(device)):
        raise SettingError(f"`precision` bf16: {problem}")
    if backend == "onnxruntime" and not exported:
        return to_onnxruntime(model, device)
    if exported:
        return model
    model = fold_batchnorm(model)
    return Autocast(model) if precision == "bf16" else model
