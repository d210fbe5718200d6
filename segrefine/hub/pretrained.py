"""Networks by name and switches (`build_model`), and trained ones checked against the dataset they are to score
(`load_for_dataset`); both load through `load_model`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from segrefine.data.meta import DatasetMeta
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub.checkpoint import class_mismatch
from segrefine.hub.model import SegRefineModel, load_model
from segrefine.hub.registry import default_model
from segrefine.models.config import ModelConfig


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
    trained = SegRefineModel.from_pretrained(weights)
    differ = [f"{k} {v!r} (weights: {getattr(trained.config, k)!r})" for k, v in config.to_dict().items()
              if getattr(trained.config, k) != v and k != "aux"]  # fmt: skip
    if differ:
        raise SegrefineError(f"weights {weights} do not fit the requested model: " + ", ".join(differ))
    if trained.config.aux == config.aux:
        return trained.train()
    # The same trained network with the training-only auxiliary head added (untrained) or dropped.
    model = SegRefineModel(config, trained.info)
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith("aux_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("aux_head.") for k in missing)
    return model.train()


def load_for_dataset(
    weights: str | Path | None,
    meta: DatasetMeta | None,
    device: str | torch.device = "cpu",
    *,
    warn: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """`load_model` for scoring or showing `meta`'s dataset: `weights` default to the shipped model for it (else for
    segmentation); returns (model, config, the reference used).

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
