"""The network (backbone → CRM → SRM decoder → fusion → (memory) → classifier) as the one model class, which is also
a Hugging Face Hub model (`SegRefineModel`), and `load_model`, which every way of loading weights goes through."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelHubMixin
from torch import Tensor, nn

from segrefine.errors import SegrefineError, SettingError
from segrefine.hub.card import model_card
from segrefine.hub.checkpoint import NAMED_INFO, OWN_KEYS, checkpoint_config, load_weights_file, save_checkpoint
from segrefine.hub.files import read_config
from segrefine.hub.onnx import is_onnx, load_onnx
from segrefine.hub.reference import ResolvedWeights, pushing, resolve
from segrefine.models.backbone import ResNetBackbone
from segrefine.models.config import ModelConfig
from segrefine.models.crm import ContextualRefinement
from segrefine.models.fusion import Fusion
from segrefine.models.layers import conv_bn_relu, memory_format
from segrefine.models.memory import ClassMemory
from segrefine.models.registry import VARIANTS
from segrefine.models.srm import SemanticRefinement

LEVELS = ("c4", "c3", "c2")  # decoder levels, coarse to fine
FUSED = ("c5", "c4", "c3")  # pyramid levels brought to the 1/4 grid for the fusion (c2 is that grid)


def _resize(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SegRefineModel(
    nn.Module,
    ModelHubMixin,
    library_name="segrefine",
    pipeline_tag="image-segmentation",
    tags=["segrefine", "semantic-segmentation"],
):
    """The network, and what its config.json records about the data it learned (`info`: dataset, classes, palette,
    flip pairs, metrics, training settings); saves, loads and publishes as a Hub model folder.

    In eval mode: B×3×H×W → B×K×H×W logits. In train mode: a dict with "out", "aux", "memory_logits", "features".
    """

    def __init__(self, config: ModelConfig, info: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.info: dict[str, Any] = dict(info or {})
        spec = VARIANTS[config.variant]
        d, k = spec.width, config.num_classes
        self.backbone = ResNetBackbone(spec.backbone, config.ibn)
        c2, c3, c4, c5 = self.backbone.channels
        self.crm = ContextualRefinement(self.backbone.channels, d, d, config.crm)
        self.lateral = nn.ModuleDict({name: conv_bn_relu(c, d, 1) for name, c in zip(LEVELS, (c4, c3, c2))})
        srm = partial(SemanticRefinement, d, config.srm, config.srm_kernel, config.srm_mask, config.srm_local)
        self.srm = nn.ModuleDict({name: srm() for name in LEVELS})
        self.smooth = nn.ModuleDict({name: conv_bn_relu(d, d, 3) for name in LEVELS})
        # srm_fusion: align the coarser pyramid levels to the finest one with an SRM each before they are
        # concatenated (as SFNet does), instead of bilinear upsampling.
        self.fusion_srm = (
            nn.ModuleDict({name: srm() for name in FUSED})
            if config.srm_fusion and config.srm != "bilinear" else None
        )
        self.fusion = Fusion(d, len(FUSED) + 1, spec.fusion_kernel)
        self.memory = ClassMemory(d, k, config.memory_dim or d) if config.memory else None
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(d, k, 1))
        self.aux_head = (
            nn.Sequential(conv_bn_relu(c4, d, 3), nn.Dropout2d(0.1), nn.Conv2d(d, k, 1)) if config.aux else None
        )

    def to_fine(self, name: str, coarse: Tensor, fine: Tensor, values: Tensor) -> Tensor:
        """`values`, made from the pyramid level `coarse`, on `fine`'s grid: upsampled, or warped as `fusion_srm`
        aligns `coarse` to `fine`."""
        if self.fusion_srm is None:
            return _resize(values, fine.shape[-2:])
        return self.fusion_srm[name](fine, coarse, values)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        size, layout = x.shape[-2:], memory_format(x)
        if x.device.type == "cpu" and not torch.compiler.is_exporting():
            # oneDNN's CPU convolutions run 10-20% faster channels-last, and NCHW max pooling is slower still: the
            # network runs channels-last inside and gives its logits back in the input's layout.
            x = x.contiguous(memory_format=torch.channels_last)
        c2, c3, c4, c5 = self.backbone(x)
        p = self.crm((c2, c3, c4, c5))
        pyramid = [p]
        for name, c in zip(LEVELS, (c4, c3, c2)):
            lateral = self.lateral[name](c)
            p = self.smooth[name](self.srm[name](lateral, p) + lateral)
            pyramid.append(p)
        fused = self.fusion(dict(zip(FUSED, pyramid)), pyramid[-1], self.to_fine)
        if self.memory is not None:
            fused, class_logits, features = self.memory(fused)
        logits = _resize(self.classifier(fused).contiguous(memory_format=layout), size)
        if not self.training:
            return logits
        outputs = {"out": logits}
        if self.aux_head is not None:
            outputs["aux"] = _resize(self.aux_head(c4), size)
        if self.memory is not None:
            outputs["memory_logits"] = _resize(class_logits, size)
            outputs["features"] = features
        return outputs

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
        extra = {k: v for k, v in self.info.items() if k not in NAMED_INFO}
        return {"dataset": "", **{k: self.info[k] for k in NAMED_INFO if k in self.info}, "extra": extra}

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
                raise SettingError(f"give the revision once: {text!r} already names one, and `revision` is {revision!r}")
            text = f"{text}@{revision}"
        return load_checkpoint(resolve(text, token=token, cache_dir=cache_dir), device)[0]

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:  # type: ignore[override]
        """The mixin's save, once the config is known to be complete: the mixin removes the folder's config.json
        before it writes the new one, so a refused save would otherwise break the checkpoint already there."""
        self.checkpoint_config  # noqa: B018 - raises here when the config is incomplete or cannot be stored
        return super().save_pretrained(save_directory, **kwargs)

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


def rebuild(config: Mapping[str, Any]) -> SegRefineModel:
    """The (untrained) network that a config.json describes, with the rest of the config as its `info`."""
    own = ModelConfig.from_dict(dict(config["model"]))
    return SegRefineModel(own, {k: v for k, v in config.items() if k not in OWN_KEYS})


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
