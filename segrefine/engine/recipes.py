"""Per-dataset training defaults (DESIGN §8: mmsegmentation / SFNet conventions); every flag overrides them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    crop: tuple[int, int]
    batch_size: int  # total over all processes
    iters: int
    loss: str  # "ohem" | "ce"
    eval_every: int
    lr: float = 0.01
    weight_decay: float = 5e-4
    scale: tuple[float, float] = (0.5, 2.0)
    pretrained_backbone: str = "imagenet"


RECIPES: dict[str, Recipe] = {
    "cityscapes": Recipe(crop=(1024, 1024), batch_size=16, iters=80_000, loss="ohem", eval_every=8_000),
    "bdd100k": Recipe(crop=(769, 769), batch_size=16, iters=80_000, loss="ohem", eval_every=8_000),
    "ade20k": Recipe(crop=(512, 512), batch_size=16, iters=160_000, loss="ce", eval_every=16_000),
    "lip": Recipe(crop=(473, 473), batch_size=16, iters=80_000, loss="ce", eval_every=8_000),
    "cocostuff": Recipe(crop=(512, 512), batch_size=16, iters=80_000, loss="ce", eval_every=8_000),
    "folder": Recipe(crop=(512, 512), batch_size=8, iters=20_000, loss="ce", eval_every=2_000),
    # About 9 minutes on 2 CPU cores, ~87% val mIoU for `lite`: see benchmarks/learnability.py.
    "toy": Recipe(crop=(128, 128), batch_size=8, iters=600, loss="ce", eval_every=200, scale=(0.75, 1.5),
                  lr=0.02, pretrained_backbone="none"),
}
