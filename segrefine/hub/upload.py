"""Publish a local checkpoint on the Hub: config.json, model.safetensors and a model card, in one commit."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from segrefine.hub.card import model_card
from segrefine.hub.files import CONFIG_NAME, WEIGHTS_NAME
from segrefine.hub.flops import FlopReport, check_size, count_flops
from segrefine.hub.model import load_checkpoint
from segrefine.hub.reference import check_push_target, pushing, resolve_local
from segrefine.models.config import ModelConfig

CARD_NAME = "README.md"


def upload_checkpoint(
    source: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    flops_size: tuple[int, int] = (1024, 2048),
    commit_message: str | None = None,
) -> str:
    """Upload a checkpoint folder, .safetensors file or run folder to `repo_id`; returns the commit URL.

    The model card is the folder's own README.md when it has one, else one generated from config.json.
    The checkpoint is loaded strictly first, so weights that do not fit their config are never published; then a
    token must be at hand (`token`, HF_TOKEN or a saved login) before the Hub is contacted.
    """
    check_push_target(repo_id)
    check_size(flops_size, "flops_size")
    weights = resolve_local(source)
    _, config = load_checkpoint(weights)
    written = weights.config_path.with_name(CARD_NAME)
    if written.is_file():  # a checkpoint folder with its own card (the embedded default) is published unchanged
        card = written.read_text(encoding="utf-8")
    else:
        report = _complexity(config, flops_size)
        card = model_card(config, repo_id=repo_id, params=report.params, gmacs=report.gmacs, input_size=flops_size)
    # Only these three files, under their checkpoint names: a run folder also holds optimiser state and logs.
    with tempfile.TemporaryDirectory() as folder, pushing(repo_id, revision, token, private) as api:
        shutil.copyfile(weights.config_path, Path(folder, CONFIG_NAME))
        shutil.copyfile(weights.weights_path, Path(folder, WEIGHTS_NAME))
        Path(folder, CARD_NAME).write_bytes(card.encode())
        message = commit_message or f"Upload segrefine {config['model'].get('variant', '')} checkpoint"
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, commit_message=message).commit_url


def _complexity(config: dict, size: tuple[int, int]) -> FlopReport:
    return count_flops(ModelConfig.from_dict(dict(config["model"])), size)
