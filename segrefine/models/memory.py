"""MCIBI dataset-level class memory (Jin et al., ICCV 2021).

One stored feature per class, updated from every training batch without gradient and read at every pixel through
a predicted class distribution.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.models.layers import conv_bn_relu


class ClassMemory(nn.Module):
    """Enrich pixel features with dataset-level class features."""

    def __init__(self, in_channels: int, num_classes: int, dim: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("memory", torch.zeros(num_classes, dim))
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))
        self.project = conv_bn_relu(in_channels, dim, 1) if dim != in_channels else nn.Identity()
        self.class_head = nn.Conv2d(in_channels, num_classes, 1)
        inner = max(dim // 8, 1)
        self.query = nn.Conv2d(dim, inner, 1)
        self.key = nn.Linear(dim, inner)
        self.fuse = conv_bn_relu(in_channels + dim, in_channels, 3)

    def read(self, features: Tensor, class_logits: Tensor) -> Tensor:
        """Dataset-level feature per pixel: memory slots weighted by the class distribution, refined by attention.

        The attention logits are log p(class) + q·k/√c with the pixel feature as query and the slots as keys and
        values; with uniform q·k this is exactly Σ_k p_k · memory_k.
        """
        b, _, h, w = features.shape
        q = self.query(features).flatten(2).transpose(1, 2)  # B×N×c
        k = self.key(self.memory)  # K×c
        logits = class_logits.log_softmax(dim=1).flatten(2).transpose(1, 2) + q @ k.t() / math.sqrt(k.shape[1])
        dataset_features = logits.softmax(dim=-1) @ self.memory  # B×N×C
        return dataset_features.transpose(1, 2).reshape(b, -1, h, w)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (enriched features, class logits, the features the memory is updated from)."""
        features = self.project(x)
        class_logits = self.class_head(x)
        enriched = self.fuse(torch.cat((x, self.read(features, class_logits)), dim=1))
        return enriched, class_logits, features

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, momentum: float) -> None:
        """One training-step update from features (B×C×h×w) and labels (B×H×W); a no-op in eval mode.

        Per class present in the labels: a slot seen for the first time becomes the class's mean feature; otherwise
        slot ← (1 − m)·slot + m·f, f the class's features weighted by (1 − cosine similarity to the slot).
        Under torch.distributed the per-class sums are all-reduced so every process holds the same memory.
        """
        if not self.training:
            return
        num_classes, dim = self.memory.shape
        labels = F.interpolate(labels[:, None].float(), size=features.shape[-2:], mode="nearest")[:, 0].long()
        feats = features.permute(0, 2, 3, 1).reshape(-1, dim).float()
        labels = labels.reshape(-1)
        valid = (labels != self.ignore_index) & (labels >= 0) & (labels < num_classes)
        feats, labels = feats[valid], labels[valid]

        memory = self.memory.float()
        weights = 1.0 - F.cosine_similarity(feats, memory[labels], dim=1)
        # Per class, in one table (one all-reduce): the sum of its features, their count, the weighted sum, the weights.
        rows = torch.cat((feats, torch.ones_like(weights)[:, None], weights[:, None] * feats, weights[:, None]), dim=1)
        stats = torch.zeros(num_classes, 2 * dim + 2, device=feats.device).index_add_(0, labels, rows)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        sums, counts, weighted, weight_total = stats.split((dim, 1, dim, 1), dim=1)

        present = counts[:, 0] > 0
        first = present & ~self.initialized
        seen = present & self.initialized & (weight_total[:, 0] > 0)
        memory[first] = sums[first] / counts[first]
        memory[seen] = (1 - momentum) * memory[seen] + momentum * weighted[seen] / weight_total[seen]
        self.memory.copy_(memory)
        self.initialized |= present
