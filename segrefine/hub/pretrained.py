"""Networks that save and load like Hugging Face Hub models: `build_model`, `from_pretrained`, `save_pretrained`,
`push_to_hub`, all through safetensors and strict loading."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin

from segrefine.data.meta import DatasetMeta
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub.card import model_card
from segrefine.hub.onnx import is_onnx, load_onnx
from segrefine.hub.checkpoint import (
    checkpoint_config, class_mismatch, load_checkpoint, save_checkpoint,
)  # fmt: skip
from segrefine.hub.registry import default_model
from segrefine.hub.reference import resolve
from segrefine.hub.upload import upload_checkpoint
from segrefine.models.config import ModelConfig
from segrefine.models.segmenter import SegRefineNet

# config.json entries besides the network's own switches ("model") and the version that wrote it.
_OWN_KEYS = ("model", "segrefine_version")
# Entries of `info` that checkpoint_config takes by name; the others (train, provenance, ...) pass as extras.
_NAMED = ("dataset", "classes", "palette", "flip_pairs", "metrics")


class SegRefineModel(
    SegRefineNet,
    ModelHubMixin,
    library_name="segrefine",
    pipeline_tag="image-segmentation",
    tags=["segrefine", "semantic-segmentation"],
):
    """The network plus what its config.json records about the data it learned (`info`: dataset, classes, palette,
    flip pairs, metrics, training settings); saves and loads as a Hub model folder."""

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
        weights = resolve(text, token=token, cache_dir=cache_dir)

        def build(config: dict[str, Any]) -> SegRefineModel:
            return cls(ModelConfig.from_dict(dict(config["model"])), {k: v for k, v in config.items() if k not in _OWN_KEYS})

        model, _ = load_checkpoint(weights.config_path, weights.weights_path, text, build)
        return model.to(device).eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        save_checkpoint(self, save_directory, **self._checkpoint_info())

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        return ModelCard(model_card(self.checkpoint_config, **kwargs))

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        private: bool = False,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Save this model with its card and publish it to `repo_id` in one commit; returns the commit URL."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card_kwargs={"repo_id": repo_id})
            return upload_checkpoint(
                folder, repo_id, revision=revision, private=private, token=token, commit_message=commit_message
            )


def build_model(
    variant: str = "lite",
    num_classes: int = 19,
    *,
    weights: str | Path | None = None,
    **switches: Any,
) -> SegRefineModel:
    """A network, e.g. `build_model("lite", 19, memory=True)`; with `weights` (any weights reference), its trained
    parameters, loaded strictly. Switches are the fields of `ModelConfig` (srm, srm_kernel, srm_mask, crm, memory,
    memory_dim, aux)."""
    unknown = sorted(set(switches) - set(ModelConfig.__dataclass_fields__))
    if unknown:
        raise SegrefineError(f"unknown model switches: {', '.join(unknown)} (known: {', '.join(ModelConfig.__dataclass_fields__)})")
    config = ModelConfig(variant=variant, num_classes=num_classes, **switches)
    if weights is None:
        return SegRefineModel(config)
    model = SegRefineModel.from_pretrained(weights)
    differ = [f"{k} {v!r} (weights: {getattr(model.config, k)!r})" for k, v in config.to_dict().items()
              if getattr(model.config, k) != v and k != "aux"]  # fmt: skip
    if differ:
        raise SegrefineError(f"weights {weights} do not fit the requested model: " + ", ".join(differ))
    if model.config.aux != config.aux:
        model = _with_aux(model, config.aux)
    return model.train()


def _with_aux(model: SegRefineModel, aux: bool) -> SegRefineModel:
    """The same trained network with the training-only auxiliary head added (untrained) or dropped."""
    rebuilt = SegRefineModel(replace(model.config, aux=aux), model.info)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("aux_head.")}
    missing, unexpected = rebuilt.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("aux_head.") for k in missing)
    return rebuilt


def load_model(
    ref: str | Path, device: str | torch.device = "cpu", *, token: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a weights reference strictly; returns (the bare network in eval mode on `device`, its config.json).

    An exported .onnx file loads as a model that runs on onnxruntime (see `segrefine.hub.onnx`)."""
    if is_onnx(ref):
        return load_onnx(ref, device)
    weights = resolve(ref, token=token)
    model, config = load_checkpoint(weights.config_path, weights.weights_path, str(ref))
    return model.to(device).eval(), config


def load_for_dataset(
    weights: str | Path | None,
    meta: DatasetMeta | None,
    device: str | torch.device = "cpu",
    *,
    warn: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """Load `weights` (default: the shipped model for `meta`'s dataset, else for segmentation) to score or show
    `meta`'s dataset; returns (model, config, the reference used).

    A model whose classes cannot score the dataset is refused: another class count, or other class names for the
    default model; other names for given weights only call `warn`."""
    ref = str(weights) if weights is not None else default_model(meta.name if meta is not None else None).name
    model, config = load_model(ref, device)
    mismatch = class_mismatch(ref, config, meta.name, meta.classes) if meta is not None else None
    if mismatch and weights is None:
        raise SettingError(f"{mismatch}: pass `weights` with a model trained on {meta.name}")
    if mismatch and config["model"].get("num_classes") != meta.num_classes:
        raise SegrefineError(mismatch)
    if mismatch and warn is not None:
        warn(f"{mismatch}; using them anyway")
    return model, config, ref
