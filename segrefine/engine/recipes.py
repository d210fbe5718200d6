"""Named training recipes: each dataset's default (mmsegmentation / SFNet conventions) plus named variants of it,
such as the CPU recipe that produced the shipped CamVid model. Every setting can be overridden by a flag."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    dataset: str
    crop: tuple[int, int]
    batch_size: int  # total over all processes
    iters: int
    loss: str  # "ohem" | "ce"
    eval_every: int
    lr: float = 0.01
    weight_decay: float = 5e-4
    scale: tuple[float, float] = (0.5, 2.0)
    pretrained_backbone: str = "imagenet"
    class_weight: str = "none"
    train_split: str = "train"
    val_split: str = "val"
    amp: bool | None = None  # None: on for CUDA, off on CPU
    photometric: str = "jitter"
    init_weights: str = "none"


RECIPES: dict[str, Recipe] = {
    "cityscapes": Recipe("cityscapes", crop=(1024, 1024), batch_size=16, iters=80_000, loss="ohem", eval_every=8_000),
    "bdd100k": Recipe("bdd100k", crop=(769, 769), batch_size=16, iters=80_000, loss="ohem", eval_every=8_000),
    "ade20k": Recipe("ade20k", crop=(512, 512), batch_size=16, iters=160_000, loss="ce", eval_every=16_000),
    "lip": Recipe("lip", crop=(473, 473), batch_size=16, iters=80_000, loss="ce", eval_every=8_000),
    "cocostuff": Recipe("cocostuff", crop=(512, 512), batch_size=16, iters=80_000, loss="ce", eval_every=8_000),
    # The papers' CamVid protocol (BiSeNet, SFNet, DDRNet): ImageNet backbone, train on train+val at full
    # resolution, evaluate on test.
    "camvid": Recipe("camvid", crop=(360, 480), batch_size=8, iters=10_000, loss="ohem", eval_every=1_000,
                     lr=0.01, scale=(0.5, 2.0), train_split="trainval", val_split="test"),
    # What trained the shipped `lite-camvid` model from scratch on a 2-core CPU in under two hours (bf16
    # autocast); see weights/lite-camvid/README.md for how it was chosen.
    "camvid-cpu": Recipe("camvid", crop=(256, 256), batch_size=8, iters=6_000, loss="ce", eval_every=2_000,
                         lr=0.05, scale=(0.5, 1.5), pretrained_backbone="none", class_weight="enet", amp=True),
    # Fine-tunes a camvid-cpu network (`init_weights`: its run folder) for photos from any camera: camera-style
    # photometric distortion and a wider scale range, at a fine-tuning learning rate; fp32 (bf16 is slow on CPUs
    # without AVX-512), 1.3-2 images/s on a 2-core CPU: about 2 hours. See benchmarks/cross_camera.py.
    "camvid-cpu-camera": Recipe("camvid", crop=(256, 256), batch_size=8, iters=1_200, loss="ce", eval_every=400,
                                lr=0.01, scale=(0.5, 2.0), pretrained_backbone="none", class_weight="enet",
                                photometric="camera"),
    # The same fine-tuning on a GPU: full 360×480 frames, batch 16, bf16 autocast (benchmarks/gpu_camera.sh).
    "camvid-camera": Recipe("camvid", crop=(360, 480), batch_size=16, iters=2_000, loss="ce", eval_every=500,
                            lr=0.01, scale=(0.5, 2.0), pretrained_backbone="none", class_weight="enet",
                            photometric="camera"),
    # Continues `camvid-camera` (`init_weights`: its run folder) on train and val together, as the papers' protocol
    # trains (val is then no longer held out), at half the learning rate; bf16, full frames, batch 8: 1200 iterations
    # take 45 minutes on a 2-core CPU with AVX-512 BF16. `--train-split train` is its held-out twin.
    "camvid-camera-trainval": Recipe("camvid", crop=(360, 480), batch_size=8, iters=1_200, loss="ce", eval_every=0,
                                     lr=0.005, scale=(0.5, 2.0), pretrained_backbone="none", class_weight="enet",
                                     photometric="camera", amp=True, train_split="trainval"),
    "folder": Recipe("folder", crop=(512, 512), batch_size=8, iters=20_000, loss="ce", eval_every=2_000),
    # About 9 minutes on 2 CPU cores, ~87% val mIoU for `lite`: see benchmarks/learnability.py.
    "toy": Recipe("toy", crop=(128, 128), batch_size=8, iters=600, loss="ce", eval_every=200, scale=(0.75, 1.5),
                  lr=0.02, pretrained_backbone="none"),
}


def dataset_recipes(dataset: str) -> dict[str, Recipe]:
    """The recipes for one dataset, its default (named after the dataset) first."""
    return {name: r for name, r in sorted(RECIPES.items(), key=lambda kv: kv[0] != dataset) if r.dataset == dataset}
