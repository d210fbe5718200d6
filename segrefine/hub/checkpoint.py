"""Checkpoints on disk: `config.json` + `model.safetensors` in one folder, written atomically, loaded strictly.

Pickled files are never loaded: `load_state` sniffs the first bytes and refuses them whatever the file is called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import Tensor, nn

from segrefine.errors import SegrefineError
from segrefine.imageio import atomic_write, read_json, write_json
from segrefine.models.backbone import ResNetBackbone
from segrefine.models.config import ModelConfig
from segrefine.models.segmenter import SegRefineNet

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
    clash = sorted(set(extra or {}) & set(_RESERVED_KEYS))
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
    return config


def save_checkpoint(model: nn.Module, folder: str | Path, **info: Any) -> Path:
    """Write `config.json` (see `checkpoint_config` for `info`) and `model.safetensors` of `model` into `folder`
    (created if needed); returns the folder."""
    config = checkpoint_config(model.config, **info)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Weights first: a folder whose config.json is present always has its weights. save_model stores a tied
    # tensor once; load_model restores it under all its names.
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_model(model, str(tmp), metadata={"format": "pt"}))
    write_json(folder / CONFIG_NAME, config)
    return folder


def load_state(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file into CPU tensors; pickled checkpoints are refused, never unpickled."""
    path = Path(path)
    check_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise SegrefineError(f"{path} is not a readable safetensors file: {_one_line(e)}") from None


def check_safetensors(path: Path) -> dict[str, torch.Size]:
    """Raise SegrefineError unless `path` is a safetensors file (`safe_open` validates the header); returns the
    shape of each tensor it holds."""
    if not path.is_file():
        raise SegrefineError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: torch.Size(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        if _is_pickle(path):
            raise SegrefineError(
                f"{path} is a pickled PyTorch checkpoint (torch.save); segrefine never loads pickles because they can "
                "run arbitrary code: convert it once with safetensors.torch.save_file and use the .safetensors file"
            ) from None
        raise SegrefineError(f"{path} is not a safetensors file ({_one_line(e)})") from None


def load_weights_file(module: nn.Module, path: str | Path, source: str) -> None:
    """Load a safetensors file into `module`, strictly: any missing or unexpected key or shape mismatch is one error
    naming them. Pickles are refused."""
    path = Path(path)
    _refuse_misfit(source, [], [], list(_wrong_shapes(module, check_safetensors(path)).values()))
    try:  # load_model, unlike load_state_dict, restores a tied tensor that save_model stored once under all its names
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, OSError) as e:
        raise SegrefineError(f"{path} is not a readable safetensors file: {_one_line(e)}") from None
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


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's config.json (a JSON object with a "model" section)."""
    config = read_json(path, "checkpoint config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise SegrefineError(f"{path} is not a segrefine config.json (it has no \"model\" section)")
    return config


def rebuild(config: Mapping[str, Any]) -> nn.Module:
    """Build the (untrained) network that a config.json describes."""
    return SegRefineNet(ModelConfig.from_dict(dict(config["model"])))


def load_checkpoint(
    config_path: Path, weights_path: Path, source: str, build: Callable[[dict[str, Any]], nn.Module] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Read a checkpoint's config.json, build the network it describes (`build`, by default `rebuild`) and load its
    weights strictly; returns (model, config)."""
    config = read_config(config_path)
    model = (build or rebuild)(config)
    load_weights_file(model, weights_path, source)
    return model, config


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


def _is_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    return head.startswith(_ZIP_MAGIC) or (head[:1] == _PICKLE_PROTO and head[1:2] in _PICKLE_VERSIONS)


def _listing(label: str, items: Sequence[str], shown: int = 5) -> str:
    more = f" … ({len(items)} in all)" if len(items) > shown else ""
    return f"{len(items)} {label} ({', '.join(items[:shown])}{more})"


def _shape(shape: torch.Size) -> str:
    return "×".join(map(str, shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
