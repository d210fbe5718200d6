"""The guided filter of the class probabilities: boundaries follow the image's edges, probabilities still sum to one."""

import torch
import torch.nn.functional as F

from segrefine.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segrefine.engine.guided import guided_probs
from segrefine.engine.inference import InferenceOptions


def _normalised(gray: torch.Tensor) -> torch.Tensor:
    """A 1×3×H×W network input of an H×W gray image in [0, 1]."""
    rgb = gray.expand(1, 3, *gray.shape)
    return (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _bar_scene(size=64, bar=(30, 32)):
    """A dark two-pixel bar on a bright image, and the probabilities a network with 4-pixel cells gives it: the bar's
    cell confident, its neighbours not, bilinearly upsampled as the logits are."""
    gray = torch.full((size, size), 0.9)
    gray[:, bar[0] : bar[1]] = 0.1
    coarse = torch.full((1, 1, size // 4, size // 4), 0.1)
    coarse[..., bar[0] // 4] = 0.9
    bar_prob = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    truth = torch.zeros(size, size, dtype=torch.bool)
    truth[:, bar[0] : bar[1]] = True
    return _normalised(gray), torch.cat([1 - bar_prob, bar_prob], 1), truth


def _iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return ((pred & truth).sum() / (pred | truth).sum()).item()


def test_a_thin_object_keeps_its_width():
    image, probs, truth = _bar_scene()
    before = probs.argmax(1)[0] == 1
    after = guided_probs(probs, image, (64, 64)).argmax(1)[0] == 1
    assert _iou(before, truth) <= 0.5  # upsampling drew the bar one cell (4 pixels) wide
    assert _iou(after, truth) == 1.0


def test_probabilities_still_sum_to_one_and_flat_ones_stay():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 40, 56, generator=generator)
    probs = torch.randn(2, 5, 40, 56, generator=generator).softmax(1)
    torch.testing.assert_close(guided_probs(probs, image, (20, 28)).sum(1), torch.ones(2, 40, 56))
    flat = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 4, 1, 1).expand(2, 4, 40, 56)
    torch.testing.assert_close(guided_probs(flat, image, (40, 56)), flat)


def test_the_guide_is_resized_to_the_probabilities():
    """A guide at half the size steers the boundary as the full-size one does (the bar is 4 pixels wide here)."""
    image, probs, truth = _bar_scene(bar=(28, 32))
    small = F.interpolate(image, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(guided_probs(probs, small, (64, 64)).argmax(1)[0] == 1, truth)


def test_the_filter_turns_the_single_pass_shortcut_off():
    assert InferenceOptions(guided_filter=False).single_pass
    assert not InferenceOptions().single_pass
