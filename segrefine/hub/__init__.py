"""Weights: safetensors checkpoints, weights references, the model zoo registry and the Hugging Face Hub."""

from segrefine.hub.card import model_card
from segrefine.hub.checkpoint import (
    CONFIG_NAME,
    RUN_BEST_DIR,
    RUN_CHECKPOINTS,
    RUN_LAST_DIR,
    WEIGHTS_NAME,
    check_safetensors,
    class_mismatch,
    describe,
    load_model,
    load_state,
    load_state_dict_strict,
    read_config,
    rebuild,
    save_pretrained,
)
from segrefine.hub.reference import HubUnreachable, ResolvedWeights, fetch_backbone, pull, resolve, resolve_local
from segrefine.hub.registry import (
    DEFAULT_TASK, BackboneEntry, ModelEntry, Registry, default_model, default_weights, load_registry,
)  # fmt: skip
from segrefine.hub.upload import push_to_hub

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
    "class_mismatch",
    "default_model",
    "default_weights",
    "describe",
    "fetch_backbone",
    "load_model",
    "load_registry",
    "load_state",
    "load_state_dict_strict",
    "model_card",
    "pull",
    "push_to_hub",
    "read_config",
    "rebuild",
    "resolve",
    "resolve_local",
    "save_pretrained",
]
