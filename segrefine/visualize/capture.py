"""One forward pass that also records the model's internals: SRM offset fields and CRM attention affinities.

Forward hooks on `model.srm[level]` (inputs: fine, coarse) and `model.crm.channel_attention` /
`model.crm.spatial_attention` (input: z) call the modules' own `offsets` / `affinity` methods, so what is drawn is
what the network computes, and the model code is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from segrefine.data.transforms import normalize
from segrefine.engine.device import model_device
from segrefine.errors import SegrefineError
from segrefine.hub.model import LEVELS


@dataclass
class Capture:
    """What one forward pass of one image showed (CPU tensors, batch dimension dropped)."""

    logits: Tensor  # K×H×W at the input size
    offsets: dict[str, Tensor] = field(default_factory=dict)  # level -> 2×h×w, (x, y) in that level's pixels
    channel: Tensor | None = None  # C×C channel affinity, rows sum to 1
    spatial: Tensor | None = None  # N×N spatial affinity, rows = queries over the 1/32 grid
    grid: tuple[int, int] | None = None  # h×w of the 1/32 grid of `spatial`


def _switch(model: nn.Module, name: str) -> object:
    return getattr(getattr(model, "config", None), name, None)


def require_offsets(model: nn.Module) -> None:
    """Raise SegrefineError unless the model's SRM predicts offsets (srm=flow or srm=full)."""
    srm = _switch(model, "srm")
    if srm not in ("flow", "full"):
        raise SegrefineError(f"offset fields need a model with srm=flow or srm=full, but this one has srm={srm}")


def require_attention(model: nn.Module) -> None:
    """Raise SegrefineError unless the model's CRM uses channel and spatial attention (crm=attention)."""
    crm = _switch(model, "crm")
    if crm != "attention":
        raise SegrefineError(f"attention maps need a model with crm=attention, but this one has crm={crm}")


@torch.inference_mode()
def capture(model: nn.Module, image: Tensor, *, offsets: bool = False, attention: bool = False) -> Capture:
    """Run `model` (eval mode) on one uint8 3×H×W image, recording offsets and/or attention on request."""
    watched: dict[str, nn.Module] = {}
    if offsets:
        require_offsets(model)
        watched.update({level: model.srm[level] for level in LEVELS})
    if attention:
        require_attention(model)
        watched.update(channel=model.crm.channel_attention, spatial=model.crm.spatial_attention)
    found: dict[str, Tensor] = {}
    grids: dict[str, tuple[int, int]] = {}

    def record(key: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            compute = module.offsets if key in LEVELS else module.affinity
            found[key] = compute(*inputs)[0].float().cpu()
            grids[key] = tuple(inputs[0].shape[-2:])

        return hook

    handles = [module.register_forward_hook(record(key)) for key, module in watched.items()]
    was_training = model.training
    model.eval()
    try:
        logits = model(normalize(image[None].to(model_device(model))))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return Capture(
        logits=logits[0].float().cpu(),
        offsets={level: found[level] for level in LEVELS if level in found},
        channel=found.get("channel"),
        spatial=found.get("spatial"),
        grid=grids.get("spatial"),
    )
