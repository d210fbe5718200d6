"""Checkpoints on disk: `config.json` + `model.safetensors` in one folder, written atomically and loaded strictly."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import safetensors.torch
from safetensors import SafetensorError
from safetensors.torch import save_model
from torch import Tensor, nn

from segrefine.errors import SegrefineError, one_line
from segrefine.hub.files import CONFIG_NAME, WEIGHTS_NAME, check_safetensors
from segrefine.imageio import atomic_write, write_json
from segrefine.models.backbone import ResNetBackbone
from segrefine.models.config import ModelConfig

# The network's own switches and the version that wrote the file; every other entry of config.json is `info`.
OWN_KEYS = ("model", "segrefine_version")
# Entries of `info` that checkpoint_config takes by name; the others (train, provenance, ...) pass as extras.
NAMED_INFO = ("dataset", "classes", "palette", "flip_pairs", "metrics")


def checkpoint_config(
    model: ModelConfig,
    *,
    dataset: str,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    flip_pairs: Iterable[Sequence[int]] = (),
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The contents of a checkpoint's config.json: the network's switches under "model", then what it learned from.

    `extra` adds top-level entries (e.g. `{"train": {...}}`); it may not replace the fixed ones.
    """
    if not len(classes) == len(palette) == model.num_classes:
        raise SegrefineError(
            f"cannot save a {model.num_classes}-class model with {len(classes)} class names and {len(palette)} "
            "palette colours"
        )
    clash = sorted(set(extra or {}) & {*OWN_KEYS, *NAMED_INFO})
    if clash:
        raise ValueError(f"extra entries may not replace config.json keys: {', '.join(clash)}")

    from segrefine import __version__

    config: dict[str, Any] = {
        "segrefine_version": __version__,
        "model": model.to_dict(),
        "dataset": dataset,
        "classes": list(classes),
        "palette": [[int(c) for c in colour] for colour in palette],
        "flip_pairs": [[int(a), int(b)] for a, b in flip_pairs],
    }
    if metrics is not None:
        config["metrics"] = _json_safe(metrics)
    config.update(_json_safe(dict(extra or {})))
    try:  # before anything is written: a value JSON cannot hold would otherwise fail halfway through a save
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SegrefineError(f"cannot store the model's info in {CONFIG_NAME}: {e}") from None
    return config


def save_checkpoint(model: nn.Module, folder: str | Path, **info: Any) -> Path:
    """Write `config.json` (see `checkpoint_config` for `info`) and `model.safetensors` of `model` into `folder`
    (created if needed); returns the folder."""
    config = checkpoint_config(model.config, **info)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Weights first: a folder whose config.json is present always has its weights. save_model stores a tied
    # tensor once; safetensors' load_model restores it under all its names.
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_model(model, str(tmp), metadata={"format": "pt"}))
    write_json(folder / CONFIG_NAME, config)
    return folder


def load_weights_file(module: nn.Module, path: str | Path, source: str) -> None:
    """Load a safetensors file into `module`, strictly: any missing or unexpected key or shape mismatch is one error
    naming them. Pickles are refused."""
    path = Path(path)
    _refuse_misfit(source, [], [], list(_wrong_shapes(module, check_safetensors(path)).values()))
    try:  # unlike load_state_dict, this restores a tied tensor that save_model stored once under all its names
        missing, unexpected = safetensors.torch.load_model(module, str(path), strict=False)
    except (SafetensorError, OSError) as e:
        raise SegrefineError(f"{path} is not a readable safetensors file: {one_line(e)}") from None
    _refuse_misfit(source, sorted(missing), sorted(unexpected), [])


def load_state_dict_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load `state` into `module`; any missing or unexpected key or shape mismatch is one error naming them."""
    wrong = _wrong_shapes(module, {name: tensor.shape for name, tensor in state.items()})
    with torch.no_grad():  # load_state_dict raises on a shape mismatch even when not strict: leave those out
        missing, unexpected = module.load_state_dict({k: v for k, v in state.items() if k not in wrong}, strict=False)
    _refuse_misfit(source, [k for k in missing if k not in wrong], sorted(unexpected), list(wrong.values()))


def _wrong_shapes(module: nn.Module, shapes: Mapping[str, torch.Size]) -> dict[str, str]:
    """The tensors of `shapes` whose shape differs from the module's, each described as "name given vs expected"."""
    own = module.state_dict()
    return {
        name: f"{name} {_shape(shapes[name])} vs {_shape(own[name].shape)}"
        for name in own
        if name in shapes and shapes[name] != own[name].shape
    }


def _refuse_misfit(source: str, missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[str]) -> None:
    problems = [
        _listing(label, items)
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise SegrefineError(f"weights in {source} do not fit the model: " + "; ".join(problems))


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


def load_backbone_weights(backbone: ResNetBackbone, state: Mapping[str, Tensor], source: str) -> None:
    """Load an ImageNet classifier's state dict (torchvision/timm key names) into a backbone, strictly; the
    classifier (`fc.*`) is dropped."""
    load_state_dict_strict(backbone, {k: v for k, v in state.items() if not k.startswith("fc.")}, source)


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


def _shape(shape: torch.Size) -> str:
    return "×".join(map(str, shape)) or "scalar"
