"""`segrefine visualize`: every picture kind; `report` and `offsets` (on a real photo) through the real entry point."""

import json

import cv2
import numpy as np
import pytest
import torch

from segrefine.cli import main
from segrefine.cli import visualize as visualize_cli
from segrefine.data import build_dataset, dataset_meta
from segrefine.data.transforms import normalize
from segrefine.engine.inference import InferenceOptions, predict_logits
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import save_checkpoint
from segrefine import build_model
from segrefine.visualize import (
    arrows_picture,
    capture,
    channel_picture,
    confusion_picture,
    error_map,
    flow_picture,
    iou_chart,
    memory_picture,
    offsets_picture,
    predict_labels,
    sample_picture,
    slot_similarity,
    spatial_picture,
    to_image_pixels,
)
from segrefine.visualize.attention import spatial_maps
from segrefine.visualize.draw import colorize, overlay, to_rgb, upscale
from segrefine.visualize.samples import CORRECT, IGNORED, WRONG

TOY = dataset_meta("toy")
TOY_DATA = ["--dataset", "toy", "--dataset-option", "length=3", "--dataset-option", "size=64x96"]



def _contains(picture, panel):
    """Whether `panel` appears pixel for pixel somewhere in `picture`."""
    scores = cv2.matchTemplate(picture, panel, cv2.TM_SQDIFF)
    y, x = np.unravel_index(np.argmin(scores), scores.shape)
    return np.array_equal(picture[y : y + panel.shape[0], x : x + panel.shape[1]], panel)


def _png(path):
    picture = cv2.imread(str(path))
    assert picture is not None, f"{path} is not a readable PNG"
    return picture


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A run folder from a two-iteration `segrefine train` on the toy dataset (a weights reference)."""
    run = tmp_path_factory.mktemp("toy") / "run"
    args = ["train", "--dataset", "toy", "--dataset-option", "length=6", "--dataset-option", "size=64x96",
            "--crop", "64x64", "--batch-size", "2", "--iters", "2", "--workers", "0", "--eval-every", "0",
            "--out", str(run)]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    return run


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A checkpoint without attention (crm=off) and without memory."""
    model = build_model(variant="lite", num_classes=TOY.num_classes, crm="off", memory=False)
    return save_checkpoint(model, tmp_path_factory.mktemp("plain"), dataset="toy", classes=TOY.classes, palette=TOY.palette)


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return build_model(variant="lite", num_classes=3).eval()


@pytest.fixture
def image():
    return torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)


# --- SRM offsets -------------------------------------------------------------------------------------------------

def test_untrained_offsets_are_zero_and_their_flow_picture_is_white(untrained, image):
    seen = capture(untrained, image, offsets=True)
    assert list(seen.offsets) == ["c4", "c3", "c2"]
    assert seen.offsets["c2"].shape == (2, 16, 24) and seen.offsets["c4"].shape == (2, 4, 6)
    assert seen.logits.shape == (3, 64, 96)
    for offset in seen.offsets.values():
        assert torch.count_nonzero(offset) == 0
        flow = flow_picture(to_image_pixels(offset, (64, 96)))
        assert flow.shape == (64, 96, 3) and (flow == 255).all()  # zero flow is white
        picture, k = arrows_picture(image, to_image_pixels(offset, (64, 96)))
        assert k == 0.0 and picture.shape == (64, 96, 3)


def test_a_known_offset_field_is_drawn_in_colour_with_arrows(image):
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 24), indexing="ij")
    field = torch.stack((xs, ys))  # radial: every direction appears
    flow = flow_picture(to_image_pixels(field, (64, 96)))
    assert len(np.unique(flow.reshape(-1, 3), axis=0)) > 50
    # rightwards offsets are drawn in a different colour from leftwards ones
    assert not np.array_equal(flow[32, 2], flow[32, -3])
    picture, k = arrows_picture(image, to_image_pixels(field, (64, 96)))
    assert k > 0
    dimmed, _ = arrows_picture(image, torch.zeros(2, 64, 96))
    assert (picture != dimmed).any()  # arrows were drawn

    prediction = torch.zeros(64, 96, dtype=torch.long)
    full = offsets_picture(image, {"c2": field}, prediction=prediction, palette=TOY.palette)
    shown = upscale(to_rgb(image), 256, cv2.INTER_LINEAR)
    assert _contains(full, shown)
    assert _contains(full, upscale(overlay(to_rgb(image), prediction, TOY.palette), 256))
    assert _contains(full, flow_picture(to_image_pixels(field, shown.shape[:2])))
    assert not _contains(full, upscale(to_rgb(image), 256))  # the prediction is drawn over the image, not beside it


def test_offsets_need_an_srm_with_offsets():
    model = build_model(variant="lite", num_classes=3, srm="bilinear").eval()
    with pytest.raises(SegrefineError, match="srm=bilinear"):
        capture(model, torch.zeros(3, 64, 64, dtype=torch.uint8), offsets=True)


# --- CRM attention -----------------------------------------------------------------------------------------------

def test_attention_pictures(untrained, image):
    seen = capture(untrained, image, attention=True)
    channels = 4 * 128  # four lite stages squeezed to 128 channels
    assert seen.channel.shape == (channels, channels) and seen.grid == (2, 3)
    assert seen.spatial.shape == (6, 6)
    assert torch.allclose(seen.channel.sum(1), torch.ones(channels), atol=1e-4)
    picture = channel_picture(seen.channel)
    assert picture.shape[0] >= 640 and picture.shape[1] >= 640

    points = [(0, 0), (63, 95)]
    maps = spatial_maps(seen.spatial, seen.grid, points, (64, 96))
    assert torch.equal(maps[0].flatten(), seen.spatial[0]) and torch.equal(maps[1].flatten(), seen.spatial[5])
    spatial = spatial_picture(image, seen.spatial, seen.grid, points)
    assert spatial.shape[1] >= 2 * 256
    with pytest.raises(SegrefineError, match="^points: point 64,0 is outside"):
        spatial_picture(image, seen.spatial, seen.grid, [(64, 0)])


@pytest.mark.parametrize(("points", "message"), [
    ("1,2;3", "--points must be y,x pairs"), ("1,2,3", "--points must be y,x pairs"), ("a,b", "--points must be y,x pairs"),
    ("64,0", "--points: point 64,0 is outside"),
])  # fmt: skip
def test_the_cli_words_bad_points_as_its_flag(tmp_path, capsys, points, message):
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SystemExit) as done:
        main(["visualize", "attention", str(path), "--points", points, "--weights", "never-loaded", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith(f"segrefine: error: {message}") and err.count("\n") == 1


def test_attention_on_a_model_without_attention_is_one_clear_error(plain_checkpoint, tmp_path, image, capsys):
    model = build_model(variant="lite", num_classes=3, crm="off").eval()
    with pytest.raises(SegrefineError, match="crm=attention"):
        capture(model, image, attention=True)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SystemExit) as done:
        main(["visualize", "attention", str(path), "--weights", str(plain_checkpoint), "--device", "cpu", "--out", str(tmp_path)])
    error = capsys.readouterr().err.splitlines()[-1]
    assert done.value.code == 2 and error.startswith(f"segrefine: error: --weights {plain_checkpoint}: ") and "crm=off" in error
    assert not list(tmp_path.glob("*attention*.png"))


# --- MCIBI memory ------------------------------------------------------------------------------------------------

def test_memory_similarity_of_known_slots():
    model = build_model(variant="lite", num_classes=4, memory=True, memory_dim=8)
    slots = torch.zeros(4, 8)
    slots[0, 0] = 1.0
    slots[1, 0] = 3.0  # same direction as slot 0
    slots[2, 1] = -2.0  # orthogonal
    model.memory.memory.copy_(slots)
    model.memory.initialized.copy_(torch.tensor([True, True, True, False]))  # slot 3 never filled
    similarity, filled = slot_similarity(model)
    assert filled.tolist() == [True, True, True, False]
    assert similarity[0, 1] == pytest.approx(1.0) and similarity[0, 2] == pytest.approx(0.0)
    assert np.isnan(similarity[3]).all() and np.isnan(similarity[:, 3]).all()
    picture = memory_picture(model, ["a", "b", "c", "d"])
    assert picture.shape[0] >= 300 and picture.shape[1] >= 300


def test_memory_on_a_model_without_memory_is_one_clear_error(plain_checkpoint, tmp_path):
    with pytest.raises(SegrefineError, match="no class memory"):
        slot_similarity(build_model(variant="lite", num_classes=3))
    with pytest.raises(SettingError, match=r"^weights .*memory=off"):  # the CLI says --weights
        visualize_cli.memory(weights=str(plain_checkpoint), out=tmp_path)


# --- eval reports ------------------------------------------------------------------------------------------------

def _report(confusion=True):
    names = ["road", "car", "sky"]
    report = {
        "mIoU": 0.5, "mAcc": 0.6, "aAcc": 0.7, "fwIoU": 0.6, "boundary_mIoU": 0.3, "num_images": 2, "mode": "whole",
        "per_class": {n: {"iou": v, "acc": v, "boundary_iou": v} for n, v in zip(names, (0.9, 0.2, None))},
    }  # fmt: skip
    if confusion:
        report["confusion"] = [[90, 10, 0], [5, 20, 0], [0, 0, 0]]
    return report


def test_report_pictures(cli, tmp_path, capsys):
    chart = iou_chart(_report())
    assert chart.shape[1] >= 640 and chart.shape[0] >= 3 * 25
    matrix = confusion_picture(_report()["confusion"], ["road", "car", "sky"])
    assert matrix.shape[0] >= 300

    path = tmp_path / "eval.json"
    path.write_text(json.dumps(_report()))
    result = cli("visualize", "report", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert [p.rsplit("/", 1)[-1] for p in result.stdout.split()] == ["eval-iou.png", "eval-confusion.png"]
    assert _png(tmp_path / "out" / "eval-confusion.png").shape[0] >= 300

    path.write_text(json.dumps(_report(confusion=False)))
    visualize_cli.report(eval_json=path, out=tmp_path / "only")
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["eval-iou.png"]
    assert "no \"confusion\"" in capsys.readouterr().err

    path.write_text(json.dumps({"mIoU": 0.5}))
    with pytest.raises(SegrefineError, match="per_class"):
        visualize_cli.report(eval_json=path, out=tmp_path)
    path.write_text(json.dumps({**_report(), "confusion": [[1, 2], [3, 4]]}))
    with pytest.raises(SegrefineError, match="3×3"):
        visualize_cli.report(eval_json=path, out=tmp_path)
    for iou in ("abc", 5.0, 1e400):  # an edited report: one line, not a traceback or a bar off the chart
        report = _report()
        report["per_class"]["road"]["iou"] = iou
        path.write_text(json.dumps(report))
        with pytest.raises(SegrefineError, match="the \"iou\" of class 'road' must be a fraction in \\[0, 1\\] or null"):
            visualize_cli.report(eval_json=path, out=tmp_path)


# --- dataset samples and errors ----------------------------------------------------------------------------------

def test_dataset_mode_writes_one_picture_per_sample(tmp_path, capsys):
    visualize_cli.dataset(dataset="toy", split="val", num=2, dataset_option=TOY_DATA[3::2], out=tmp_path)
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["dataset-toy_val_000000.png", "dataset-toy_val_000002.png"]
    picture = _png(written[0])
    assert picture.shape[0] >= 256 and picture.shape[1] >= 3 * 384  # small images are enlarged side by side
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_the_library_yields_the_pictures_and_reports_unreadable_images(tmp_path, plain_checkpoint):
    from segrefine.visualize import dataset_pictures, memory_pictures, read_images

    pictures = dict(dataset_pictures("toy", split="val", num=2, dataset_options={"length": 3, "size": (64, 96)}))
    assert list(pictures) == ["dataset-toy_val_000000", "dataset-toy_val_000002"]
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in pictures.values())
    assert not list(tmp_path.iterdir())  # the caller writes them
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 12, 3), np.uint8))
    skipped = []
    images = read_images([tmp_path / "a.png", tmp_path / "missing.png"], on_skip=skipped.append)
    assert list(images) == [tmp_path / "a.png"] and images[tmp_path / "a.png"].shape == (3, 8, 12)
    assert len(skipped) == 1 and "missing.png" in skipped[0]
    with pytest.raises(SettingError, match="memory=off"):  # checked at the first picture, before any is made
        next(memory_pictures(plain_checkpoint))


def test_sample_picture_shows_image_and_label():
    item = build_dataset("toy", None, "val", length=1, size=(64, 96))[0]
    picture = sample_picture(item["image"], item["label"], TOY.classes, TOY.palette, "toy")
    rgb, label = to_rgb(item["image"]), item["label"].numpy()
    blend = overlay(rgb, label, TOY.palette)
    assert (blend != rgb).any(-1).mean() > 0.9  # every pixel has a class: the colours are drawn over nearly all
    for panel in (rgb, colorize(label, TOY.palette), blend):
        assert _contains(picture, upscale(panel, 256))
    swatches = {tuple(c) for c in picture.reshape(-1, 3)}
    assert {tuple(TOY.palette[c]) for c in np.unique(label)} <= swatches
    assert not _contains(np.full_like(picture, 255), upscale(rgb, 256))  # a blank canvas would fail


def test_error_map_colours():
    image = np.full((2, 2, 3), 128, np.uint8)
    label = np.array([[0, 1], [255, 1]])
    pred = np.array([[0, 0], [1, 1]])
    colours = error_map(image, label, pred, alpha=1.0)
    assert tuple(colours[0, 0]) == CORRECT and tuple(colours[0, 1]) == WRONG
    assert tuple(colours[1, 0]) == IGNORED and tuple(colours[1, 1]) == CORRECT


def test_predict_labels_takes_inference_options():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 5, padding=2).eval()  # not mirror-symmetric: flipping changes its labels
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    options = InferenceOptions(mode="slide", crop=(32, 32), flip=True)
    expected = predict_logits(model, normalize(image[None]), options, num_classes=3, flip_pairs=[(0, 1)]).argmax(1)[0]
    assert not torch.equal(predict_labels(model, image, num_classes=3), expected)
    assert torch.equal(predict_labels(model, image, options, num_classes=3, flip_pairs=[(0, 1)]), expected)
    labels = predict_labels(model, image, mode="slide", crop=(32, 32), flip=True, num_classes=3, flip_pairs=[(0, 1)])
    assert torch.equal(labels, expected)
    assert predict_labels(model, image, num_classes=3, out_size=(20, 30)).shape == (20, 30)
    with pytest.raises(SegrefineError, match="not both"):
        predict_labels(model, image, options, num_classes=3, flip=True)


def test_errors_mode_with_a_trained_checkpoint(toy_run, tmp_path, capsys):
    visualize_cli.errors(weights=str(toy_run), dataset="toy", num=1, dataset_option=TOY_DATA[3::2], device="cpu", out=tmp_path)
    (path,) = capsys.readouterr().out.split()
    assert _png(path).shape[1] >= 2 * 384
    root = tmp_path / "two-classes"  # a `folder` dataset whose classes do not match the checkpoint
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("ground\nthing\n")
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(root / "masks" / "a.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(SegrefineError, match="9 classes but dataset folder has 2"):
        visualize_cli.errors(weights=str(toy_run), dataset="folder", data_root=root, device="cpu", out=tmp_path)


def test_errors_mode_takes_the_inference_flags(cli, toy_run, tmp_path, monkeypatch):
    import segrefine.visualize.pictures

    seen = []
    real = segrefine.visualize.pictures.predict_labels
    monkeypatch.setattr(segrefine.visualize.pictures, "predict_labels", lambda *a, **k: seen.append(a[2]) or real(*a, **k))
    args = ("visualize", "errors", *TOY_DATA, "--num", "1", "--weights", toy_run, "--device", "cpu", "--out", tmp_path)
    result = cli(*args, "--mode", "slide", "--crop", "32x48", "--flip")
    assert result.returncode == 0, result.stderr
    assert seen == [InferenceOptions(mode="slide", crop=(32, 48), flip=True, short_side=0)]  # toy: any size
    result = cli(*args, "--mode", "slide")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--crop is required" in result.stderr, result.stderr


# --- a real photograph, and the real entry point -----------------------------------------------------------------


def test_predict_and_visualize_a_real_street_photo(cli, shared_data, toy_run, tmp_path, capsys):
    street = shared_data / "images" / "street-cityscapes-512x1024.png"
    if not street.is_file():
        pytest.skip(f"{street} is not present")
    out = tmp_path / "pictures"
    result = cli("visualize", "offsets", str(street), "--weights", str(toy_run), "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (written,) = result.stdout.split()
    offsets = _png(written)
    assert offsets.shape[1] >= 2 * 1024 and offsets.shape[0] >= 4 * 512  # image row + three levels

    visualize_cli.attention(images=[street], weights=str(toy_run), points=[(100, 200), (400, 900)], device="cpu", out=out)
    channel, spatial = capsys.readouterr().out.split()
    assert channel.endswith("street-cityscapes-512x1024-channel-attention.png")
    assert _png(channel).shape[0] >= 640
    assert _png(spatial).shape[1] >= 2 * 1024
    with pytest.raises(SegrefineError, match="outside the 512"):
        visualize_cli.attention(images=[street], weights="never-loaded", points=[(600, 10)], device="cpu", out=out)


def test_images_of_one_file_name_are_drawn_once_and_the_second_is_skipped(tmp_path):
    from segrefine.visualize.pictures import read_images

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.png"), np.zeros((8, 8, 3), np.uint8))
    skipped = []
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    images = read_images([first, second, first], on_skip=skipped.append)  # the same file twice is one image
    assert list(images) == [first]
    assert skipped == [f"{second}: its pictures would replace those of {first}, named alike; draw it in a run of its own"]


@pytest.mark.parametrize("size", [(4, 300), (1, 300), (300, 1)])
def test_arrows_over_an_image_thinner_than_their_spacing(size):
    picture, _ = arrows_picture(np.zeros((*size, 3), np.uint8), torch.ones(2, *size))
    assert picture.shape[:2] == size
