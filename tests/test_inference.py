import numpy as np
import pytest
import torch
from torch import nn

from segrefine.engine.inference import InferenceOptions, predict_logits
from segrefine.errors import SegrefineError, SettingError, worded

K = 4


def _pointwise_model() -> nn.Module:
    """A 1×1 convolution: every pixel's logits depend on that pixel only, so windows cannot change them."""
    model = nn.Conv2d(3, K, 1)
    return model.eval()


class _MirrorPairModel(nn.Module):
    """Channel 1 is channel 0's 3×3 filter mirrored, channels 2-3 use mirror-symmetric filters.

    Hence model(flip(x)) = swap01(flip(model(x))): flip test-time augmentation with the pair (0, 1) is exact.
    """

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        left = torch.randn(3, 3, 3, generator=gen)
        sym = torch.randn(2, 3, 3, 3, generator=gen)
        sym = sym + sym.flip(-1)
        self.register_buffer("weight", torch.stack([left, left.flip(-1), *sym]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, padding=1)


def _images(batch=1, height=19, width=23):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def test_whole_is_log_softmax_of_the_model():
    model, x = _pointwise_model(), _images(2)
    out = predict_logits(model, x, num_classes=K, guided_filter=False)
    assert out.shape == (2, K, 19, 23)
    torch.testing.assert_close(out, model(x).log_softmax(1))


def test_slide_with_overlap_equals_whole():
    model, x = _pointwise_model(), _images(2)
    whole = predict_logits(model, x, num_classes=K)
    slide = predict_logits(model, x, num_classes=K, mode="slide", crop=(8, 8), stride=(5, 6))
    torch.testing.assert_close(slide, whole)


def test_slide_window_sizes_and_count():
    calls = []

    class SizeModel(nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape[-2:]))
            return torch.zeros(x.shape[0], K, *x.shape[-2:])

    predict_logits(SizeModel(), _images(1, 10, 12), num_classes=K, mode="slide", crop=(6, 8), stride=(4, 4))
    # Rows start at 0, 4 (flush with the end); columns at 0, 4 (flush).
    assert calls == [(6, 8)] * 4


def test_slide_crop_larger_than_image():
    model, x = _pointwise_model(), _images(1, 9, 13)
    whole = predict_logits(model, x, num_classes=K)
    slide = predict_logits(model, x, num_classes=K, mode="slide", crop=(64, 64), stride=(32, 32))
    torch.testing.assert_close(slide, whole)
    slide = predict_logits(model, x, num_classes=K, mode="slide", crop=(64, 5))  # default stride
    torch.testing.assert_close(slide, whole)


def test_flip_with_pair_swap_is_exact_for_a_mirror_equivariant_model():
    model, x = _MirrorPairModel(), _images(2)
    plain = predict_logits(model, x, num_classes=K, guided_filter=False)
    flipped = predict_logits(model, x, num_classes=K, flip=True, flip_pairs=[(0, 1)], guided_filter=False)
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)
    unswapped = predict_logits(model, x, num_classes=K, flip=True, guided_filter=False)
    assert not torch.allclose(unswapped, plain, atol=1e-3)


def test_single_scale_one_equals_whole_and_multi_scale_keeps_size():
    model, x = _pointwise_model(), _images(2)
    whole = predict_logits(model, x, num_classes=K)
    torch.testing.assert_close(predict_logits(model, x, num_classes=K, scales=[1.0]), whole)
    multi = predict_logits(model, x, num_classes=K, scales=(0.5, 1.0, 1.75), flip=True)
    assert multi.shape == whole.shape
    torch.testing.assert_close(multi.exp().sum(1), torch.ones(2, 19, 23))


def test_multi_scale_averages_probabilities():
    model = _pointwise_model()
    x = torch.randn(1, 3, 1, 1).expand(1, 3, 16, 20)  # a constant image looks the same at every scale
    whole = predict_logits(model, x, num_classes=K)
    multi = predict_logits(model, x, num_classes=K, scales=(0.5, 0.75, 1.5))
    torch.testing.assert_close(multi, whole)


def test_out_size():
    out = predict_logits(_pointwise_model(), _images(1, 10, 12), num_classes=K, out_size=(20, 24))
    assert out.shape == (1, K, 20, 24)


def test_batch_equals_single_images():
    model, x = _pointwise_model(), _images(3)
    batch = predict_logits(model, x, num_classes=K, mode="slide", crop=(8, 8), scales=(0.75, 1.0), flip=True)
    single = torch.cat([predict_logits(model, xi[None], num_classes=K, mode="slide", crop=(8, 8),
                                       scales=(0.75, 1.0), flip=True) for xi in x])
    torch.testing.assert_close(batch, single)


@pytest.mark.parametrize("scales", [(), (0.0,), (1.0, -0.5), (float("nan"),)])
def test_bad_scales(scales):
    with pytest.raises(SegrefineError, match="^scales must"):
        predict_logits(_pointwise_model(), _images(), num_classes=K, scales=scales)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mode": "tiles"}, "^mode must be one of"),
        ({"mode": "slide"}, "^crop is required"),
        ({"mode": "slide", "crop": (8, 8), "stride": (9, 4)}, "^stride must be"),
        ({"mode": "slide", "crop": (0, 8)}, "^crop must be positive"),
        ({"flip": True, "flip_pairs": [(0, K)]}, "flip pair"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(SegrefineError, match=match):
        predict_logits(_pointwise_model(), _images(), num_classes=K, **options)


def test_wrong_number_of_classes():
    with pytest.raises(SegrefineError, match="5 classes"):
        predict_logits(_pointwise_model(), _images(), num_classes=5)


def test_predict_logits_builds_no_autograd_graph():
    """Callers outside an inference block (visualize, scripts) get no graph kept alive over their logits."""
    out = predict_logits(_pointwise_model().eval(), torch.randn(1, 3, 8, 8), num_classes=K)
    assert torch.is_inference(out) and not out.requires_grad


@pytest.mark.parametrize(
    ("settings", "message", "flags"),
    [
        ({"mode": "tiles"}, "mode must be one of whole, slide, got 'tiles'", "--mode must be"),
        ({"mode": "slide"}, "crop is required: mode slide needs crop", "--mode slide needs --crop"),
        ({"crop": (8, 8)}, "crop and stride apply only with mode slide", "--crop and --stride apply only with --mode"),
        ({"mode": "slide", "crop": (8, 8), "stride": (9, 4)}, "stride must be positive and at most", "--stride must"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0", "--batch-size must"),
        ({"backend": "tensorrt"}, "backend must be one of torch, onnxruntime", "--backend must"),
        ({"precision": "fp8"}, "precision must be one of fp32, bf16", "--precision must"),
        ({"scales": [1.0, -0.5]}, "scales must be one or more positive numbers", "--scales must"),
    ],
)
def test_inference_options_refuse_bad_combinations_in_python_names(settings, message, flags):
    with pytest.raises(SettingError, match=f"^{message}") as caught:
        InferenceOptions(**settings)
    assert flags in worded(caught.value.args[0])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 2.5}, "batch_size must be an integer or none, got 2.5"),
        ({"scales": 1.0}, "scales must be one or more finite numbers, got 1.0"),
        ({"mode": "slide", "crop": (8,)}, "crop must be 2 integers or none, got [8]"),
        ({"mode": "slide", "crop": (8, 8, 8)}, "crop must be 2 integers or none, got [8, 8, 8]"),
        ({"short_side": "360"}, "short_side must be an integer or none, got '360'"),
        ({"flip": "no"}, "flip must be true or false, got 'no'"),
        ({"guided_filter": 0}, "guided_filter must be true or false, got 0"),
        ({"short_side": 100000}, "short_side must be 0 (each image at its own size) or a number of pixels up to 8192, "
                                 "got 100000"),
    ],
)
def test_inference_options_refuse_values_of_the_wrong_type(settings, message):
    with pytest.raises(SettingError) as caught:
        InferenceOptions(**settings)
    assert str(caught.value) == message


def test_inference_options_take_any_sequence_and_compare_by_value():
    options = InferenceOptions(mode="slide", crop=[8, 8], scales=[1, 0.5])
    assert options == InferenceOptions(mode="slide", crop=(8, 8), scales=(1.0, 0.5)) and options.scales == (1.0, 0.5)
    assert InferenceOptions(mode="slide", crop=np.array([8, 8]), scales=np.array([1, 0.5], np.float32)) == options


def test_options_or_their_fields_not_both():
    model, x, options = _pointwise_model(), _images(), InferenceOptions(mode="slide", crop=(8, 8), scales=(0.5, 1.0))
    given = predict_logits(model, x, options, num_classes=K)
    torch.testing.assert_close(given, predict_logits(model, x, num_classes=K, mode="slide", crop=(8, 8), scales=(0.5, 1.0)))
    assert not torch.allclose(given, predict_logits(model, x, num_classes=K))  # the options did change the result
    with pytest.raises(SettingError, match="^give options or its fields as keywords, not both"):
        predict_logits(model, x, options, num_classes=K, flip=False)


# --- the model's own scale (short_side) ----------------------------------------------------------------------------

class _SizeSpy(nn.Module):
    """A 1×1 convolution that records the size of every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _pointwise_model()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_short_side_runs_the_image_at_that_side_and_answers_at_full_size():
    model, x = _SizeSpy(), _images(1, 40, 60)
    out = predict_logits(model, x, num_classes=K, short_side=20, scales=(1.0, 1.5))
    assert model.sizes == [(20, 30), (30, 45)] and out.shape == (1, K, 40, 60)
    model.sizes.clear()
    same = predict_logits(model, x, num_classes=K, short_side=40)  # already that side: not resampled at all
    assert model.sizes == [(40, 60)]
    torch.testing.assert_close(same, predict_logits(model, x, num_classes=K, short_side=0))
    assert InferenceOptions(short_side=360).input_size(1024, 2048) == (360, 720)
    assert InferenceOptions(short_side=360).input_size(1080, 810) == (480, 360)


def test_short_side_enlarges_a_strip_only_to_a_longer_side_of_four_times_it():
    options = InferenceOptions(short_side=360)
    assert options.input_size(240, 320) == (360, 480) and options.input_size(720, 960) == (360, 480)
    assert options.input_size(2, 200) == (14, 1440)  # not 360×36000
    assert options.input_size(200, 1600) == (200, 1600)  # already longer than that: left as it is, not shrunk


def test_short_side_defaults_to_the_side_of_the_models_training_images():
    from segrefine.engine.inference import at_model_scale

    assert at_model_scale(InferenceOptions(), {"dataset": "camvid"}).short_side == 360
    assert at_model_scale(InferenceOptions(), {"dataset": "cityscapes"}).short_side == 1024
    for config in ({"dataset": "ade20k"}, {"dataset": "folder"}, {"dataset": "my-own"}, {}):  # sizes vary or unknown
        assert at_model_scale(InferenceOptions(), config).short_side == 0
    assert at_model_scale(InferenceOptions(short_side=0), {"dataset": "camvid"}).short_side == 0
    with pytest.raises(SettingError, match="short_side"):
        InferenceOptions(short_side=-1)


@pytest.mark.parametrize("flip", [False, True])  # one pass (the predictor's own path) and predict_logits
def test_the_predictor_runs_a_photo_at_the_models_scale(flip):
    import numpy as np

    from segrefine.data.meta import CAMVID
    from segrefine.engine.predictor import Predictor

    config = {"model": {"num_classes": K}, "dataset": "camvid", "classes": CAMVID.classes[:K], "palette": CAMVID.palette[:K]}
    image = np.random.default_rng(0).integers(0, 256, (720, 960, 3), np.uint8)
    model = _SizeSpy()
    labels = Predictor(model, config, flip=flip).predict(image)
    assert set(model.sizes) == {(360, 480)} and labels.shape == (720, 960)
    model.sizes.clear()
    assert Predictor(model, config, flip=flip, short_side=0).predict(image).shape == (720, 960)
    assert set(model.sizes) == {(720, 960)}
