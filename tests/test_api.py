"""The Python prediction API: `segrefine.load(...)` -> Predictor on arrays, files and batches."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import segrefine
from segrefine.data import build_dataset, dataset_meta
from segrefine.engine.predictor import Predictor, load
from segrefine.imageio import UnreadableInput, read_image, write_image
from segrefine.errors import SegrefineError
from segrefine.hub import save_checkpoint
from segrefine import build_model
from trained_looking import trained_looking

META = dataset_meta("toy")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    model = build_model(variant="lite", num_classes=META.num_classes)
    return save_checkpoint(model, folder, dataset="toy", classes=META.classes, palette=META.palette)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load(checkpoint, "cpu")


@pytest.fixture(scope="module")
def scenes():
    """Three toy scenes, two of one size and one of another (H×W×3 uint8 RGB)."""
    small = build_dataset("toy", None, "val", size=(64, 96), length=2)
    other = build_dataset("toy", None, "val", size=(48, 64), length=1)
    return [s["image"].permute(1, 2, 0).numpy().copy() for s in (small[0], other[0], small[1])]


def test_top_level_load_is_the_api():
    assert segrefine.load is load
    assert segrefine.Predictor is Predictor


def test_labels_and_palette_come_from_the_checkpoint(predictor):
    assert predictor.classes == META.classes
    assert predictor.palette == META.palette
    assert predictor.num_classes == META.num_classes
    assert predictor.config["dataset"] == "toy"
    assert not predictor.model.training


def test_predict_array_gives_a_label_map(predictor, scenes):
    label = predictor.predict(scenes[0])
    assert label.shape == (64, 96) and label.dtype == np.uint8
    assert label.max() < META.num_classes


def test_predict_file_equals_array(predictor, scenes, tmp_path):
    path = tmp_path / "scene.png"
    write_image(path, scenes[0])
    assert np.array_equal(read_image(path), scenes[0])
    assert np.array_equal(predictor.predict(path), predictor.predict(scenes[0]))
    assert np.array_equal(predictor.predict(str(path)), predictor.predict(scenes[0]))


def test_batch_equals_singles(predictor, scenes):
    singles = [predictor.predict(image) for image in scenes]
    batched = predictor.predict_batch(scenes, batch_size=2)
    assert [b.shape for b in batched] == [(64, 96), (48, 64), (64, 96)]
    for one, many in zip(singles, batched):
        assert np.array_equal(one, many)


def test_grey_and_rgba_inputs(predictor, scenes):
    grey = cv2.cvtColor(scenes[0], cv2.COLOR_RGB2GRAY)
    assert predictor.predict(grey).shape == (64, 96)
    rgba = np.dstack([scenes[0], np.full((64, 96), 255, np.uint8)])
    assert np.array_equal(predictor.predict(rgba), predictor.predict(scenes[0]))
    with pytest.raises(SegrefineError, match="uint8"):
        predictor.predict(scenes[0].astype(np.float32))
    photo = Image.fromarray(scenes[0])  # Pillow images of any mode are read as their RGB colours
    for mode in ("P", "CMYK", "L"):
        assert np.array_equal(predictor.predict(photo.convert(mode)), predictor.predict(photo.convert(mode).convert("RGB")))
    with pytest.raises(SegrefineError, match="cannot read"):
        predictor.predict("no/such/image.png")


def test_colorize_uses_the_palette(predictor):
    label = np.array([[0, 1, 2], [6, 8, 255]], np.uint8)
    color = predictor.colorize(label)
    assert color.shape == (2, 3, 3) and color.dtype == np.uint8
    for value, rgb in ((0, META.palette[0]), (1, META.palette[1]), (2, META.palette[2]), (6, META.palette[6]), (8, META.palette[8])):
        assert tuple(color[label == value][0]) == rgb
    assert tuple(color[1, 2]) == (0, 0, 0)  # 255 (ignore) is no class


def test_overlay_blends_with_alpha(predictor, scenes):
    image = scenes[0]
    label = np.zeros(image.shape[:2], np.uint8)
    label[:8] = 255
    assert np.array_equal(predictor.overlay(image, label, alpha=0.0), image)
    full = predictor.overlay(image, label, alpha=1.0)
    assert np.array_equal(full[8:], np.broadcast_to(np.array(META.palette[0], np.uint8), full[8:].shape))
    assert np.array_equal(full[:8], image[:8])  # ignore pixels keep the image
    half = predictor.overlay(image, label, alpha=0.5).astype(int)
    expected = (image[8:].astype(int) + np.array(META.palette[0])) / 2
    assert np.abs(half[8:] - expected).max() <= 1
    with pytest.raises(SegrefineError, match="^alpha"):
        predictor.overlay(image, label, alpha=1.5)


def test_inference_modes(checkpoint, scenes):
    tta = load(checkpoint, "cpu", mode="slide", crop=(64, 64), flip=True)
    label = tta.predict(scenes[0])
    assert label.shape == (64, 96) and label.max() < META.num_classes
    with pytest.raises(SegrefineError, match="crop"):
        load(checkpoint, "cpu", mode="slide")
    with pytest.raises(SegrefineError, match="^scales must"):
        load(checkpoint, "cpu", scales=(0.0,))


def test_predict_video(predictor, scenes, tmp_path):
    source, target = tmp_path / "in.avi", tmp_path / "out" / "in_overlay.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (96, 64))
    for image in (scenes[0], scenes[2], scenes[0]):
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    batches = []
    assert predictor.predict_video(source, target, batch_size=2, on_frames=batches.append) == 3
    assert batches == [2, 1]
    video = cv2.VideoCapture(str(target))
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(4.0) and video.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["in_overlay.mp4"]  # no temporary file left
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(UnreadableInput, match="empty.mp4"):
        predictor.predict_video(tmp_path / "empty.mp4", tmp_path / "out" / "empty_overlay.mp4")
    assert not (tmp_path / "out" / "empty_overlay.mp4").exists()


def test_a_video_cut_short_in_writing_is_not_put_in_place(predictor, scenes, tmp_path, monkeypatch):
    source, target = tmp_path / "in.avi", tmp_path / "out" / "in_overlay.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (96, 64))
    writer.write(cv2.cvtColor(scenes[0], cv2.COLOR_RGB2BGR))
    writer.release()
    encode = Predictor._encode_overlays

    def disk_full(self, source, tmp, *args):  # what a full disk leaves: the file's start, without its index
        frames = encode(self, source, tmp, *args)
        tmp.write_bytes(tmp.read_bytes()[:48])
        return frames

    monkeypatch.setattr(Predictor, "_encode_overlays", disk_full)
    with pytest.raises(SegrefineError, match="in_overlay.mp4: the video written does not read back whole"):
        predictor.predict_video(source, target)
    assert not target.exists() and not list(target.parent.iterdir())


def test_bad_device():
    with pytest.raises(SegrefineError, match="^device"):
        load("whatever", "tpu9")


def _varied_model():
    """A random `lite` whose labels vary over the image (a freshly built one predicts one class everywhere)."""
    torch.manual_seed(0)
    model = trained_looking(build_model(variant="lite", num_classes=5, aux=False), seed=0)
    with torch.no_grad():
        torch.nn.init.normal_(model.classifier[1].weight, std=1.0)
    return model


def _labels_before(model, image, guided_filter=True):
    """Labels as the predictor computed them before its device pipeline: float logits (through `predict_logits`
    where the guided filter is on), argmax on the host."""
    from segrefine.data.transforms import normalize
    from segrefine.engine.inference import class_labels, predict_logits

    with torch.inference_mode():
        x = normalize(torch.from_numpy(image)[None].permute(0, 3, 1, 2))
        logits = predict_logits(model, x, num_classes=5) if guided_filter else model(x)
    return class_labels(logits.float()).to(torch.uint8)[0].numpy()


@pytest.mark.parametrize("guided_filter", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_device_pipeline_keeps_the_labels(precision, guided_filter):
    """uint8 upload, normalisation and argmax on the device, bf16 logits without a float copy: the same labels."""
    from segrefine.engine.backends import Autocast

    model = Autocast(_varied_model()) if precision == "bf16" else _varied_model()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((64, 96, 3), (48, 64, 3), (64, 96, 3))]
    predictor = Predictor(model, {"model": {"num_classes": 5}}, torch.device("cpu"), guided_filter=guided_filter)
    for image, label in zip(images, predictor.predict_batch(images)):
        assert label.dtype == np.uint8 and len(np.unique(label)) > 1
        np.testing.assert_array_equal(label, _labels_before(model, image, guided_filter))


def test_compiled_step_gives_the_same_labels(monkeypatch):
    """`compile` traces normalisation, network and argmax as one graph (here with dynamo's aot_eager backend: no C++
    compiler needed, and the same ahead-of-time tracing as inductor) and gives the eager step's labels."""
    modes = []

    def eager_compile(fn, mode=None, dynamic=None):
        modes.append(mode)
        return torch._dynamo.optimize("aot_eager", nopython=True)(fn)

    monkeypatch.setattr(torch, "compile", eager_compile)
    model = _varied_model()
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    compiled = Predictor(model, {"model": {"num_classes": 5}}, torch.device("cpu"), compile=True)
    np.testing.assert_array_equal(compiled.predict(image), _labels_before(model, image))
    assert modes == [None]  # CUDA graphs on CUDA only
    torch._dynamo.reset()
