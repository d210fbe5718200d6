"""Camera-style photometric distortion: image-only, deterministic under the seed, each step doing what it says."""

import pytest
import torch
from torchvision import tv_tensors

from segrefine.data.transforms import (
    PHOTOMETRIC,
    RandomGamma,
    RandomJpeg,
    RandomSensorNoise,
    RandomVignette,
    RandomWhiteBalance,
    photometric_steps,
    train_transform,
)

STEPS = [
    RandomWhiteBalance(max_gain=1.5, p=1.0),
    RandomGamma(max_gamma=1.5, p=1.0),
    RandomSensorNoise(max_sigma=0.05, p=1.0),
    RandomVignette(max_strength=0.5, p=1.0),
    RandomJpeg((10, 20), p=1.0),
    *photometric_steps("camera"),
]


def _sample(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(30, 220, (3, 24, 32), dtype=torch.uint8, generator=g)
    label = torch.randint(0, 11, (24, 32), generator=g)
    label[:3] = 255
    return {"image": tv_tensors.Image(image), "label": tv_tensors.Mask(label), "name": "x", "path": "x.png"}


@pytest.mark.parametrize("step", STEPS, ids=lambda s: type(s).__name__)
def test_photometric_steps_leave_labels_and_shape_alone(step):
    sample = _sample()
    for seed in range(8):
        torch.manual_seed(seed)
        out = step(sample)
        assert torch.equal(out["label"], sample["label"]) and type(out["label"]) is tv_tensors.Mask
        assert out["image"].shape == sample["image"].shape and out["image"].dtype == torch.uint8
        assert type(out["image"]) is tv_tensors.Image


@pytest.mark.parametrize("kind", PHOTOMETRIC)
def test_train_transform_is_deterministic_under_the_seed(kind):
    transform = train_transform((20, 20), scale=(0.8, 1.2), photometric=kind)
    torch.manual_seed(3)
    first = transform(_sample())
    torch.manual_seed(3)
    again = transform(_sample())
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    torch.manual_seed(4)
    other = transform(_sample())
    assert not torch.equal(first["image"], other["image"])


def test_camera_style_changes_colour_but_never_labels_through_the_whole_pipeline():
    plain = train_transform((24, 32), scale=(1.0, 1.0), photometric="none")
    camera = train_transform((24, 32), scale=(1.0, 1.0), photometric="camera")
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        a = plain(_sample())
        torch.manual_seed(seed)
        b = camera(_sample())
        assert torch.equal(a["label"], b["label"])  # same crop and flip draws come first, labels untouched after
        changed += not torch.allclose(a["image"], b["image"])
    assert changed >= 9


def test_white_balance_multiplies_each_channel_by_its_own_gain():
    image = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    torch.manual_seed(0)
    out = RandomWhiteBalance(max_gain=2.0, p=1.0)({"image": tv_tensors.Image(image)})["image"]
    gains = out[:, 0, 0].float() / 100
    assert torch.all((gains >= 0.5 - 0.01) & (gains <= 2.0 + 0.01))
    assert gains.max() - gains.min() > 0.05  # a cast, not a brightness change
    assert torch.equal(out, out[:, :1, :1].expand_as(out))  # uniform over the image


def test_gamma_keeps_black_and_white_and_moves_midtones():
    image = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 3).expand(3, 1, 3).contiguous()
    torch.manual_seed(1)
    out = RandomGamma(max_gamma=2.0, p=1.0)({"image": tv_tensors.Image(image)})["image"]
    assert out[:, 0, 0].tolist() == [0, 0, 0] and out[:, 0, 2].tolist() == [255, 255, 255]
    assert out[0, 0, 1] != 128


def test_vignette_darkens_corners_not_the_centre():
    image = torch.full((3, 21, 21), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    out = RandomVignette(max_strength=0.5, p=1.0)({"image": tv_tensors.Image(image)})["image"]
    assert out[0, 10, 10] == 200 and out[0, 0, 0] < 200


def test_jpeg_compresses_noise_away_but_keeps_flat_areas():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
    flat = torch.full((3, 32, 32), 90, dtype=torch.uint8)
    torch.manual_seed(0)
    step = RandomJpeg((10, 10), p=1.0)
    assert (step({"image": tv_tensors.Image(noise)})["image"].int() - noise.int()).abs().float().mean() > 10
    assert (step({"image": tv_tensors.Image(flat)})["image"].int() - 90).abs().max() <= 2


def test_probability_zero_is_the_identity():
    sample = _sample()
    for step in (RandomWhiteBalance(p=0.0), RandomGamma(p=0.0), RandomSensorNoise(p=0.0), RandomVignette(p=0.0), RandomJpeg(p=0.0)):
        assert torch.equal(step(sample)["image"], sample["image"])


def test_unknown_photometric_kind_is_refused():
    with pytest.raises(ValueError, match="photometric must be one of none, jitter, camera"):
        photometric_steps("sepia")
