"""The network as a Hub model (`SegRefineModel`), its FLOP count, safetensors checkpoints, weights references, the
model zoo registry and the Hugging Face Hub."""

from segrefine.hub.card import model_card
from segrefine.hub.checkpoint import (
    checkpoint_config,
    class_mismatch,
    describe,
    load_backbone_weights,
    load_state_dict_strict,
    load_weights_file,
    save_checkpoint,
)
from segrefine.hub.model import SegRefineModel, load_model, rebuild
from segrefine.hub.files import (
    CONFIG_NAME, RUN_BEST_DIR, RUN_CHECKPOINTS, RUN_LAST_DIR, WEIGHTS_NAME, check_safetensors, load_state, read_config,
)  # fmt: skip
from segrefine.hub.pretrained import build_model, load_for_dataset
from segrefine.hub.reference import HubUnreachable, ResolvedWeights, fetch_backbone, pull, resolve, resolve_local
from segrefine.hub.registry import (
    DEFAULT_TASK, BackboneEntry, ModelEntry, Registry, default_model, default_weights, load_registry,
)  # fmt: skip
from segrefine.hub.upload import upload_checkpoint

__all__ = [
    "CONFIG_NAME",
    "RUN_BEST_DIR",
    "RUN_CHECKPOINTS",
    "RUN_LAST_DIR",
    "WEIGHTS_NAME",
    "BackboneEntry",
    "HubUnreachable",
    "ModelEntry",
    "Registry",
    "ResolvedWeights",
    "DEFAULT_TASK",
    "check_safetensors",
    "checkpoint_config",
    "class_mismatch",
    "default_model",
    "default_weights",
    "describe",
    "fetch_backbone",
    "build_model",
    "load_backbone_weights",
    "load_for_dataset",
    "load_model",
    "load_weights_file",
    "load_registry",
    "load_state",
    "load_state_dict_strict",
    "model_card",
    "pull",
    "read_config",
    "rebuild",
    "resolve",
    "resolve_local",
    "save_checkpoint",
    "upload_checkpoint",
    "SegRefineModel",
]
