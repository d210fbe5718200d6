"""Checkpoints on disk: `config.json` + `model.safetensors` in one folder, written atomically, loaded strictly.

Pickled files are never loaded: `load_state` sniffs the first bytes and refuses them whatever the file is called.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from segrefine.errors import SegrefineError
from segrefine.imageio import atomic_write, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Layout of a training run folder: each of these holds CONFIG_NAME + WEIGHTS_NAME; references prefer best.
RUN_CHECKPOINTS = "checkpoints"
RUN_BEST_DIR = Path(RUN_CHECKPOINTS, "best")
RUN_LAST_DIR = Path(RUN_CHECKPOINTS, "last")

_RESERVED_KEYS = ("segrefine_version", "model", "dataset", "classes", "palette", "flip_pairs", "metrics")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # pickle's PROTO opcode, followed by the protocol number
_PICKLE_VERSIONS = (b"\x02", b"\x03", b"\x04", b"\x05")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def save_pretrained(
    model: nn.Module,
    folder: str | Path,
    *,
    dataset: str,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    flip_pairs: Iterable[Sequence[int]] = (),
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `config.json` and `model.safetensors` of `model` into `folder` (created if needed); returns the folder.

    `extra` adds top-level entries to config.json (e.g. `{"train": {...}}`); it may not replace the fixed ones.
    """
    model_config = model.config.to_dict()
    num_classes = model_config.get("num_classes")
    if num_classes is not None and not len(classes) == len(palette) == num_classes:
        raise SegrefineError(
            f"cannot save a {num_classes}-class model with {len(classes)} class names and {len(palette)} palette colours"
        )
    clash = sorted(set(extra or {}) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra entries may not replace config.json keys: {', '.join(clash)}")

    from segrefine import __version__

    config: dict[str, Any] = {
        "segrefine_version": __version__,
        "model": model_config,
        "dataset": dataset,
        "classes": list(classes),
        "palette": [[int(c) for c in colour] for colour in palette],
        "flip_pairs": [[int(a), int(b)] for a, b in flip_pairs],
    }
    if metrics is not None:
        config["metrics"] = _json_safe(metrics)
    config.update(_json_safe(dict(extra or {})))

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = _unshared_contiguous(model.state_dict())
    # Weights first: a folder whose config.json is present always has its weights.
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2, allow_nan=False) + "\n"))
    return folder


def load_state(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file into CPU tensors; pickled checkpoints are refused, never unpickled."""
    path = Path(path)
    check_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise SegrefineError(f"{path} is not a readable safetensors file: {_one_line(e)}") from None


def check_safetensors(path: Path) -> None:
    """Raise SegrefineError unless `path` starts like safetensors (8-byte header length, then a JSON header)."""
    if not path.is_file():
        raise SegrefineError(f"weights file not found: {path}")
    with path.open("rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if 0 < header_len <= min(_MAX_HEADER, path.stat().st_size - 8) and head[8:9] == b"{":
        return
    if head.startswith(_ZIP_MAGIC) or (head[:1] == _PICKLE_PROTO and head[1:2] in _PICKLE_VERSIONS):
        raise SegrefineError(
            f"{path} is a pickled PyTorch checkpoint (torch.save); segrefine never loads pickles because they can run "
            "arbitrary code: convert it once with safetensors.torch.save_file and use the .safetensors file"
        )
    raise SegrefineError(f"{path} is not a safetensors file")


def load_state_dict_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load `state` into `module`; any missing or unexpected key or shape mismatch is one error naming them.

    Tied tensors (one tensor under several names) need only one of their names in `state`.
    """
    own = module.state_dict()
    aliases = _alias_groups(own)
    missing = [group[0] for group in aliases if not any(name in state for name in group)]
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{name} {_shape(state[name])} vs {_shape(own[name])}"
        for name in own
        if name in state and state[name].shape != own[name].shape
    ]
    problems = [
        _listing(label, items)
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise SegrefineError(f"weights in {source} do not fit the model: " + "; ".join(problems))
    full = dict(state)
    for group in aliases:
        present = next(name for name in group if name in state)
        full.update({name: state[present] for name in group})
    with torch.no_grad():
        module.load_state_dict(full, strict=True)


def describe(ref: str | Path, config: Mapping[str, Any]) -> str:
    """One line naming a loaded model for users: reference, variant, training dataset and class count."""
    model = config["model"]
    dataset = config.get("dataset") or "an unnamed dataset"
    return f"model {ref}: {model.get('variant', '?')}, trained on {dataset}, {model.get('num_classes', '?')} classes"


def class_mismatch(ref: str | Path, config: Mapping[str, Any], dataset: str, classes: Sequence[str]) -> str | None:
    """Why a model's classes do not match a dataset's (count, or names in order), or None when they match."""
    trained = config["model"].get("num_classes")
    if trained != len(classes):
        return f"weights {ref} were trained for {trained} classes but dataset {dataset} has {len(classes)} classes"
    names = config.get("classes")
    if names and [n.lower() for n in names] != [c.lower() for c in classes]:
        differ = [f"{i}: {a} vs {b}" for i, (a, b) in enumerate(zip(names, classes)) if a.lower() != b.lower()]
        shown = ", ".join(differ[:3]) + (", ..." if len(differ) > 3 else "")
        return (
            f"weights {ref} were trained on {config.get('dataset') or 'other data'} whose class names differ from "
            f"dataset {dataset}'s ({shown})"
        )
    return None


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's config.json (a JSON object with a "model" section)."""
    config = read_json(path, "checkpoint config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise SegrefineError(f"{path} is not a segrefine config.json (it has no \"model\" section)")
    return config


def rebuild(config: Mapping[str, Any]) -> nn.Module:
    """Build the (untrained) network that a config.json describes."""
    from segrefine.models import ModelConfig, build_model

    return build_model(ModelConfig.from_dict(dict(config["model"])))


def load_model(
    ref: str | Path, device: str | torch.device = "cpu", *, token: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Resolve a weights reference, rebuild its network and load it strictly; returns (model in eval mode, config).

    An exported .onnx file loads as a model that runs on onnxruntime (see `segrefine.hub.onnx`)."""
    from segrefine.hub.onnx import is_onnx, load_onnx
    from segrefine.hub.reference import resolve

    if is_onnx(ref):
        return load_onnx(ref, device)
    weights = resolve(ref, token=token)
    config = read_config(weights.config_path)
    model = rebuild(config)
    load_state_dict_strict(model, load_state(weights.weights_path), str(ref))
    return model.to(device).eval(), config


def _alias_groups(state: Mapping[str, Tensor]) -> list[list[str]]:
    """Names grouped by the tensor they refer to (same storage, offset, shape and strides), in state order."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        # Empty tensors share a null pointer without sharing anything.
        groups.setdefault(key if t.numel() else (name,), []).append(name)
    return list(groups.values())


def _unshared_contiguous(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One entry per tied tensor, each contiguous and owning its storage (safetensors refuses shared memory)."""
    out: dict[str, Tensor] = {}
    used: set[tuple] = set()
    for group in _alias_groups(state):
        t = state[group[0]].detach()
        if not t.is_contiguous():
            t = t.contiguous()
        elif t.numel() and (t.device, t.untyped_storage().data_ptr()) in used:
            t = t.clone()
        used.add((t.device, t.untyped_storage().data_ptr()))
        out[group[0]] = t
    return out


def _json_safe(value: Any) -> Any:
    """Nested containers with NaN/inf floats turned into None, tuples into lists (valid strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _listing(label: str, items: Sequence[str], shown: int = 5) -> str:
    more = f" … ({len(items)} in all)" if len(items) > shown else ""
    return f"{len(items)} {label} ({', '.join(items[:shown])}{more})"


def _shape(t: Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
