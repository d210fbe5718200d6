"""ONNX files as weights: an onnxruntime session behind the interface of segrefine's networks.

An exported file carries its checkpoint's config.json (model switches, class names, palette) in the ONNX metadata
under `CONFIG_KEY`, so the one file is a complete weights reference. onnx and onnxruntime are optional
(`pip install 'segrefine[onnx]'`); without them an ONNX reference fails with one line saying so.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from segrefine.errors import SegrefineError, one_line
from segrefine.imageio import UnreadableInput
from segrefine.models import OUTPUT_STRIDE, ModelConfig

ONNX_SUFFIX = ".onnx"
CONFIG_KEY = "segrefine_config"  # metadata_props key holding the checkpoint's config.json
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
INSTALL_HINT = "pip install 'segrefine[onnx]'"


def is_onnx(ref: str | os.PathLike) -> bool:
    """Whether a weights reference names an ONNX file."""
    return Path(str(ref)).suffix.lower() == ONNX_SUFFIX


def require(module: str) -> ModuleType:
    """Import `onnx`, `onnxruntime` or one of their submodules, or fail with one line saying how to install them."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SegrefineError(f"{module.partition('.')[0]} is not installed: {INSTALL_HINT}") from None


def providers(device: torch.device) -> list[str]:
    """The onnxruntime execution providers for `device`: CUDA's when asked for and built in, else the CPU's."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    available = require("onnxruntime").get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise SegrefineError(
        f"device {device} is not available to this onnxruntime (it has {', '.join(available)}): use device cpu, or "
        "install onnxruntime-gpu for CUDA"
    )


def session(path: str | os.PathLike, device: torch.device = torch.device("cpu")) -> Any:
    """An onnxruntime InferenceSession of the model in `path`, using as many threads as torch does."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's business
    # Worker threads stop spinning when a run returns: the decoding and encoding around it get the cores.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # onnxruntime exports its exception classes from no public module; its own docs import them from here.
    state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    failures = (state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile, state.InvalidArgument)
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=providers(device))
    except failures as e:
        raise SegrefineError(f"{path} is not an ONNX model onnxruntime can load: {one_line(e)}") from None


class OnnxModel(nn.Module):
    """B×3×H×W normalised images → B×K×H×W logits through onnxruntime, with the `config` of the exported network."""

    def __init__(self, session: Any, config: ModelConfig, name: str = "the ONNX model") -> None:
        super().__init__()
        self.session = session
        self.config = config
        self.name = name
        shape = session.get_inputs()[0].shape
        # A fixed-size export names its height and width; a dynamic one gives symbols (strings) instead.
        self.size = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None

    def forward(self, x: Tensor) -> Tensor:
        size = tuple(x.shape[-2:])
        if self.size is not None and size != self.size:
            raise UnreadableInput(
                f"{self.name} was exported for {self.size[0]}×{self.size[1]} images (H×W) and cannot take "
                f"{size[0]}×{size[1]}: export it for this size, or with dynamic sizes"
            )
        if min(size) < OUTPUT_STRIDE:
            raise UnreadableInput(
                f"{self.name} takes images of at least {OUTPUT_STRIDE}×{OUTPUT_STRIDE} pixels, got {size[0]}×{size[1]}"
            )
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors share no public base class
            raise UnreadableInput(
                f"onnxruntime cannot run {self.name} on a {size[0]}×{size[1]} image: {one_line(e)}"
            ) from None
        return torch.from_numpy(logits).to(x.device)


def load_onnx(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[OnnxModel, dict[str, Any]]:
    """An exported .onnx file as (model in eval mode, its config.json), running on onnxruntime."""
    if not Path(path).is_file():
        raise SegrefineError(f"weights not found: there is no file {path}")
    runner = session(path, torch.device(device))
    text = runner.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
    try:
        config = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise SegrefineError(
            f"{path} carries no segrefine config in its metadata ({CONFIG_KEY}): only files written by "
            "`segrefine export` are weights references"
        )
    model = OnnxModel(runner, ModelConfig.from_dict(dict(config["model"])), name=str(path))
    return model.eval(), config
