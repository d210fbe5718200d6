"""The MCIBI class memory: cosine similarity between its class slots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F
from torch import nn

from segrefine.errors import SegrefineError
from segrefine.visualize.draw import Image, matrix_picture


def require_memory(model: nn.Module) -> None:
    """Raise SegrefineError unless the model has an MCIBI class memory (memory=on)."""
    if getattr(model, "memory", None) is None:
        raise SegrefineError("the model has no class memory (it was built with memory=off)")


def slot_similarity(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(K×K cosine similarity between memory slots, NaN for slots never filled; K bools: slot filled)."""
    require_memory(model)
    slots = model.memory.memory.detach().float().cpu()
    filled = model.memory.initialized.detach().cpu().bool() & (slots.norm(dim=1) > 0)
    unit = F.normalize(slots, dim=1)
    similarity = (unit @ unit.t()).numpy().astype(np.float64)
    empty = ~filled.numpy()
    similarity[empty, :] = np.nan
    similarity[:, empty] = np.nan
    return similarity, filled.numpy()


def memory_picture(model: nn.Module, classes: Sequence[str], title: str = "MCIBI class memory") -> Image:
    """K×K heat map of the cosine similarity between class slots, labelled with the class names."""
    similarity, filled = slot_similarity(model)
    if len(classes) != similarity.shape[0]:
        raise SegrefineError(f"the memory has {similarity.shape[0]} slots but {len(classes)} class names were given")
    labels = [name if ok else f"{name} (empty)" for name, ok in zip(classes, filled)]
    return matrix_picture(
        similarity, title=f"{title}: cosine similarity between class slots ({int(filled.sum())}/{len(filled)} filled)",
        vmin=-1.0, vmax=1.0, cmap="coolwarm", row_labels=labels, col_labels=labels, annotate="{:.2f}",
    )  # fmt: skip
