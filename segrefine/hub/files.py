"""A checkpoint's files: their names, the run-folder layout, and the checks every weights file and config.json pass.

Pickled files are never loaded: `check_safetensors` sniffs the first bytes and refuses them whatever the file is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from segrefine.errors import SegrefineError, one_line
from segrefine.imageio import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Layout of a training run folder: each of these holds CONFIG_NAME + WEIGHTS_NAME; references prefer best.
RUN_CHECKPOINTS = "checkpoints"
RUN_BEST_DIR = Path(RUN_CHECKPOINTS, "best")
RUN_LAST_DIR = Path(RUN_CHECKPOINTS, "last")

# How torch.save's files begin: a zip archive, or a bare pickle (the PROTO opcode, then protocol 2 to 5).
_PICKLE_HEADS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def load_state(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file into CPU tensors; pickled checkpoints are refused, never unpickled."""
    path = Path(path)
    check_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise SegrefineError(f"{path} is not a readable safetensors file: {one_line(e)}") from None


def check_safetensors(path: Path) -> dict[str, torch.Size]:
    """Raise SegrefineError unless `path` is a safetensors file (`safe_open` validates the header); returns the
    shape of each tensor it holds."""
    if not path.is_file():
        raise SegrefineError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: torch.Size(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        with path.open("rb") as f:
            pickled = f.read(4).startswith(_PICKLE_HEADS)
        if pickled:
            raise SegrefineError(
                f"{path} is a pickled PyTorch checkpoint (torch.save); segrefine never loads pickles because they can "
                "run arbitrary code: convert it once with safetensors.torch.save_file and use the .safetensors file"
            ) from None
        raise SegrefineError(f"{path} is not a safetensors file ({one_line(e)})") from None


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's config.json (a JSON object with a "model" section)."""
    config = read_json(path, "checkpoint config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise SegrefineError(f"{path} is not a segrefine config.json (it has no \"model\" section)")
    return config
