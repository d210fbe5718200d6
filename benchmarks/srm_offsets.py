"""How large the learned SRM offsets of trained models are, and where: mean |Δ| per decoder level on CamVid val,
the share of positions moved by more than half a pixel, and |Δ| on class boundaries against inside regions.

    python benchmarks/srm_offsets.py --data-root ../shared/data/camvid runs/ablation/srm-full-seed0 lite-camvid

Offsets are in the pixels of each level's (fine) grid, as the network uses them. A boundary position is one whose
3×3 neighbourhood in the label (nearest-resized to the level's grid) holds more than one value. Every `--every`-th
val frame is used (default 10: 11 frames).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from segrefine.data import build_dataset
from segrefine.hub import load_model
from segrefine.visualize.capture import capture


def boundary(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """H×W bool: positions of the `size` grid whose 3×3 neighbourhood in the resized label holds several values."""
    grid = F.interpolate(label.float()[None, None], size=size, mode="nearest")
    return (F.max_pool2d(grid, 3, 1, 1) != -F.max_pool2d(-grid, 3, 1, 1))[0, 0]


def offset_statistics(ref: str, data_root: str, every: int) -> dict[str, dict[str, float]]:
    model, _ = load_model(ref)
    val = build_dataset("camvid", data_root, "val")
    sums: dict[str, list[list[float]]] = {}
    for index in range(0, len(val), every):
        sample = val[index]
        for level, offset in capture(model, sample["image"], offsets=True).offsets.items():
            size = offset.norm(dim=0)
            edge = boundary(sample["label"], tuple(size.shape))
            rows = sums.setdefault(level, [[], [], [], []])
            rows[0].append(size.mean().item())
            rows[1].append((size > 0.5).float().mean().item())
            rows[2].append(size[edge].mean().item())
            rows[3].append(size[~edge].mean().item())
    return {
        level: {key: round(sum(values) / len(values), 3) for key, values in zip(("mean_px", "share_over_half_px", "boundary_px", "inside_px"), rows)}
        for level, rows in sums.items()
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="weights references (run folders, registry names, ...)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--every", type=int, default=10, help="use every N-th val frame")
    args = parser.parse_args()
    print(json.dumps({ref: offset_statistics(ref, args.data_root, args.every) for ref in args.models}, indent=2))


if __name__ == "__main__":
    main()
