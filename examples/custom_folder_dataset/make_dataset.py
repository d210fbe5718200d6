"""Regenerate this tiny `folder` dataset: 3 train and 1 val scenes from segrefine's toy generator, relabelled.

It shows what your own data looks like to `--dataset folder`: images/<split>/<name>.jpg, masks/<split>/<name>.png
holding class ids 0..K-1 (255 = not annotated), and classes.txt naming the classes in id order with their colours.
Here the toy classes are regrouped into 7 classes and poles/signs are left unannotated (255), as in a real
project that labels only what it needs.

    python examples/custom_folder_dataset/make_dataset.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segrefine.data import build_dataset

HERE = Path(__file__).resolve().parent
SIZE = (96, 192)  # H, W
SPLITS = {"train": 3, "val": 1}
# (name, colour) per class, in class-id order: what classes.txt lists.
CLASSES = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("vegetation", (107, 142, 35)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("vehicle", (0, 0, 142)),
)
# toy class id -> ours: road, sidewalk, building, pole (255), traffic sign (255), vegetation, sky, person, car
TOY_TO_OURS = np.array([0, 1, 2, 255, 255, 3, 4, 5, 6], np.uint8)


def main() -> None:
    lines = ["# one class per line in id order (mask value 0, 1, ...): name r,g,b"]
    lines += [f"{name} {r},{g},{b}" for name, (r, g, b) in CLASSES]
    (HERE / "classes.txt").write_text("\n".join(lines) + "\n")
    for split, count in SPLITS.items():
        images, masks = HERE / "images" / split, HERE / "masks" / split
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for index, scene in enumerate(build_dataset("toy", None, split, size=SIZE, length=count)):
            rgb = scene["image"].permute(1, 2, 0).numpy()
            name = f"street_{split}_{index}"
            cv2.imwrite(str(images / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            cv2.imwrite(str(masks / f"{name}.png"), TOY_TO_OURS[scene["label"].numpy()])
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png", ".txt"))
    print(f"wrote {HERE} ({total // 1024} KiB of data)")


if __name__ == "__main__":
    main()
