"""Joint transforms: labels keep their exact values, padding is ignore, LIP flips swap left and right."""

import torch
from torchvision import tv_tensors

from segrefine.data import dataset_meta
from segrefine.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomFlip,
    RandomScale,
    denormalize,
    eval_transform,
    normalize,
    train_transform,
)


def _sample(h: int, w: int, values=(0, 3, 7, 255), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    blocks = torch.tensor(values)[torch.randint(len(values), (h // 4 + 1, w // 4 + 1), generator=g)]
    label = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)[:h, :w].contiguous()
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return {"image": tv_tensors.Image(image), "label": tv_tensors.Mask(label), "name": "x", "path": "x.png"}


def test_train_transform_output_and_exact_label_values():
    values = {0, 3, 7, 255}
    transform = train_transform((48, 40))
    for seed in range(10):
        torch.manual_seed(seed)
        out = transform(_sample(37 + seed, 53, seed=seed))
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 48, 40)
        assert out["label"].dtype == torch.int64 and out["label"].shape == (48, 40)
        assert type(out["image"]) is torch.Tensor and type(out["label"]) is torch.Tensor
        assert set(out["label"].unique().tolist()) <= values
        assert out["name"] == "x" and out["path"] == "x.png"


def test_random_scale_resizes_masks_by_nearest():
    sample = _sample(20, 30, values=(1, 2, 200))
    torch.manual_seed(0)
    for _ in range(5):
        out = RandomScale((0.5, 2.0))(sample)
        h, w = out["label"].shape
        assert out["image"].shape[-2:] == (h, w) and 10 <= h <= 40 and abs(w / h - 1.5) < 0.15
        assert set(out["label"].unique().tolist()) <= {1, 2, 200}
    out = RandomScale((2.0, 2.0))(sample)
    assert torch.equal(out["label"], sample["label"].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_crop_pads_label_with_ignore_and_image_with_zero():
    sample = _sample(20, 30, values=(1, 2))
    out = train_transform(64, scale=(1.0, 1.0), photometric="none")(sample)
    padded = out["label"] == 255
    assert padded.sum() == 64 * 64 - 20 * 30
    zero = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8))
    assert torch.allclose(out["image"][:, padded], zero[:, 0].expand(3, int(padded.sum())))
    inside = ~padded
    assert set(out["label"][inside].unique().tolist()) <= {1, 2}


def test_lip_flip_swaps_left_and_right_classes():
    pairs = dataset_meta("lip").flip_pairs
    label = torch.tensor([[14, 15, 16, 17], [18, 19, 3, 255]])
    image = torch.arange(24, dtype=torch.uint8).view(3, 2, 4)
    out = RandomFlip(p=1.0, flip_pairs=pairs)({"image": tv_tensors.Image(image), "label": tv_tensors.Mask(label)})
    assert out["label"].tolist() == [[16, 17, 14, 15], [255, 3, 18, 19]]
    assert torch.equal(out["image"], image.flip(-1))
    plain = RandomFlip(p=1.0)({"label": tv_tensors.Mask(label)})
    assert torch.equal(plain["label"], label.flip(-1))


def test_normalize_eval_transform_and_denormalize():
    sample = _sample(9, 11)
    image = sample["image"].as_subclass(torch.Tensor)
    x = normalize(image)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x, (image / 255.0 - mean) / std)
    assert torch.equal(denormalize(x), image)
    assert torch.equal(denormalize(normalize(image[None])), image[None])  # batched
    out = eval_transform()(sample)
    assert torch.allclose(out["image"], x, atol=1e-6)
    assert out["label"].dtype == torch.int64 and torch.equal(out["label"], sample["label"].as_subclass(torch.Tensor))
