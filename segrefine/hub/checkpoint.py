"""Checkpoints on disk (`config.json` + `model.safetensors` in one folder, written atomically, loaded strictly), the
network that saves, loads and publishes as one (`SegRefineModel`, a Hugging Face Hub model), and `load_model`, which
every way of loading weights goes through."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import safetensors.torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors import SafetensorError
from safetensors.torch import save_model
from torch import Tensor, nn

from segrefine.errors import SegrefineError, SettingError, one_line
from segrefine.hub.card import model_card
from segrefine.hub.files import CONFIG_NAME, WEIGHTS_NAME, check_safetensors, read_config
from segrefine.hub.onnx import is_onnx, load_onnx
from segrefine.hub.reference import ResolvedWeights, pushing, resolve
from segrefine.imageio import atomic_write, write_json
from segrefine.models.backbone import ResNetBackbone
from segrefine.models.config import ModelConfig
from segrefine.models.segmenter import SegRefineNet

# The network's own switches and the version that wrote the file; every other entry of config.json is `info`.
_OWN_KEYS = ("model", "segrefine_version")
# Entries of `info` that checkpoint_config takes by name; the others (train, provenance, ...) pass as extras.
_NAMED = ("dataset", "classes", "palette", "flip_pairs", "metrics")
_RESERVED_KEYS = _OWN_KEYS + _NAMED


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


class SegRefineModel(
    SegRefineNet,
    ModelHubMixin,
    library_name="segrefine",
    pipeline_tag="image-segmentation",
    tags=["segrefine", "semantic-segmentation"],
):
    """The network plus what its config.json records about the data it learned (`info`: dataset, classes, palette,
    flip pairs, metrics, training settings); saves, loads and publishes as a Hub model folder."""

    def __init__(self, config: ModelConfig, info: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.info: dict[str, Any] = dict(info or {})

    @property
    def checkpoint_config(self) -> dict[str, Any]:
        """The whole config.json of this model: its switches under "model", then `info`."""
        return checkpoint_config(self.config, **self._checkpoint_info())

    def _checkpoint_info(self) -> dict[str, Any]:
        if not {"classes", "palette"} <= self.info.keys():
            raise SettingError(
                "saving a model needs its class names and palette: set `info` (e.g. model.info = {'dataset': ..., "
                "'classes': [...], 'palette': [...]}); a model from from_pretrained or from training has them"
            )
        extra = {k: v for k, v in self.info.items() if k not in _NAMED}
        return {"dataset": "", **{k: self.info[k] for k in _NAMED if k in self.info}, "extra": extra}

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        ref: str | Path,
        *,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> "SegRefineModel":
        """Load any weights reference (registry name, Hub id `owner/name[@revision]`, run or checkpoint folder,
        .safetensors file) strictly, in eval mode on `device`."""
        text = str(ref)
        if revision is not None:
            if "@" in text:
                raise SegrefineError(f"give the revision once: {text!r} already names one, and `revision` is {revision!r}")
            text = f"{text}@{revision}"
        return load_checkpoint(resolve(text, token=token, cache_dir=cache_dir), device)[0]

    def _save_pretrained(self, save_directory: Path) -> None:
        save_checkpoint(self, save_directory, **self._checkpoint_info())

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        return ModelCard(model_card(self.checkpoint_config, **kwargs))

    def push_to_hub(  # type: ignore[override]
        self, repo_id: str, *, revision: str | None = None, token: str | None = None, private: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """The mixin's push (one commit of `save_pretrained`'s folder) to the branch `revision` (made when missing),
        with `repo_id` on the card and failures in one line; returns the commit URL."""
        kwargs["model_card_kwargs"] = {"repo_id": repo_id, **(kwargs.get("model_card_kwargs") or {})}
        with pushing(repo_id, revision, token, private):
            return super().push_to_hub(repo_id, branch=revision, token=token, private=private, **kwargs).commit_url


def rebuild(config: Mapping[str, Any]) -> nn.Module:
    """The (untrained) network that a config.json describes, with the rest of the config as its `info`."""
    own = ModelConfig.from_dict(dict(config["model"]))
    return SegRefineModel(own, {k: v for k, v in config.items() if k not in _OWN_KEYS})


def load_checkpoint(weights: ResolvedWeights, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the network that resolved weights describe (`rebuild`) and load them strictly; returns (the network in
    eval mode on `device`, its config.json)."""
    config = read_config(weights.config_path)
    model = rebuild(config)
    load_weights_file(model, weights.weights_path, weights.ref)
    return model.to(device).eval(), config


def load_model(
    ref: str | Path, device: str | torch.device = "cpu", *, token: str | None = None, cache_dir: str | Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load any weights reference (see `segrefine.hub.resolve`) strictly; returns (the network in eval mode on
    `device`, its config.json). An exported .onnx file loads as a model that runs on onnxruntime (`segrefine.hub.onnx`)."""
    if is_onnx(ref):
        return load_onnx(ref, device)
    return load_checkpoint(resolve(ref, token=token, cache_dir=cache_dir), device)


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
