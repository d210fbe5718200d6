"""The evaluation loop: inference modes, batching, flip pairs, saved predictions and their checks."""

import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.meta import CITYSCAPES_LABEL_TO_TRAIN
from segrefine.data.transforms import eval_transform, normalize
from segrefine.data.cityscapes import label_ids as cityscapes_label_ids
from segrefine.engine.evaluate import LABEL_IDS_DIR, evaluate_model, evaluate_predictions
from segrefine.engine.inference import predict_logits
from segrefine.engine.metrics import SegmentationMetrics, summary
from segrefine.errors import SegrefineError

TOY = dataset_meta("toy")
SCORES = ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU", "per_class", "confusion")


def _pointwise(num_classes: int, seed: int = 0) -> nn.Module:
    """A 1×1 convolution: each pixel's logits depend on that pixel only, and every image gets several classes."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, num_classes, 1).eval()


class _Items(Dataset):
    """An in-memory dataset of ready-made samples."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return dict(self.items[index])


def _item(name, height, width, num_classes, seed, label_size=None):
    gen = torch.Generator().manual_seed(seed)
    label_size = label_size or (height, width)
    label = torch.randint(0, num_classes, label_size, generator=gen)
    label[0] = 255
    image = torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
    return {"image": image, "label": label, "name": name, "path": name}


def _toy(length=3):
    return build_dataset("toy", None, "val", length=length, size=(64, 96))


def _scores(report):
    return {key: report[key] for key in SCORES}


def _numbers(report):
    """Every score as a flat {name: float} (NaN for None), for approximate comparison."""
    flat = {key: report[key] for key in SCORES[:5]}
    for name, scores in report["per_class"].items():
        flat.update({f"{name}/{key}": value for key, value in scores.items()})
    return {key: math.nan if value is None else value for key, value in flat.items()}


@pytest.fixture(scope="module")
def lite():
    from segrefine import build_model

    torch.manual_seed(0)
    return build_model(variant="lite", num_classes=TOY.num_classes).eval()


def test_whole_equals_a_per_image_reference_and_keeps_the_model_mode():
    model = _pointwise(TOY.num_classes).train()
    report = evaluate_model(model, _toy(), TOY, batch_size=2, progress=False)
    assert model.training  # put back as it was

    reference = SegmentationMetrics(TOY.num_classes)
    for sample in _toy():
        logits = predict_logits(model.eval(), normalize(sample["image"])[None], num_classes=TOY.num_classes)
        reference.update(logits.argmax(1)[0], sample["label"])
    assert _scores(report) == summary(reference.compute(), TOY.classes)
    assert report["num_images"] == 3 and report["mode"] == "whole" and report["unit"] == "fraction"
    assert 0 < report["mIoU"] < 1


def test_normalised_float_images_give_the_same_scores():
    model = _pointwise(TOY.num_classes)
    raw = evaluate_model(model, _toy(), TOY, progress=False)
    transformed = build_dataset("toy", None, "val", eval_transform(), length=3, size=(64, 96))
    assert _numbers(evaluate_model(model, transformed, TOY, progress=False)) == pytest.approx(_numbers(raw), nan_ok=True)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "whole"},
        {"mode": "slide", "crop": (48, 48), "stride": (32, 32)},
        {"mode": "whole", "scales": (0.5, 1.25), "flip": True},
        {"mode": "slide", "crop": (64, 64), "scales": (0.5, 1.0), "flip": True},
    ],
    ids=["whole", "slide", "multiscale-flip", "slide-multiscale-flip"],
)
def test_inference_modes_on_the_lite_model(lite, options):
    report = evaluate_model(lite, _toy(1), TOY, progress=False, **options)
    assert report["mode"] == options["mode"] and report["num_images"] == 1
    assert report["flip"] == options.get("flip", False)
    assert report["scales"] == list(options.get("scales", (1.0,)))
    assert report["crop"] == (list(options["crop"]) if "crop" in options else None)
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU"):
        assert 0 <= report[key] <= 1
    assert set(report["per_class"]) == set(TOY.classes)


def test_slide_with_a_crop_larger_than_the_image_equals_whole(lite):
    whole = evaluate_model(lite, _toy(2), TOY, progress=False)
    slide = evaluate_model(lite, _toy(2), TOY, mode="slide", crop=(512, 512), progress=False)
    assert _scores(slide) == _scores(whole)


def test_mixed_sizes_batch_in_same_size_runs_and_logits_follow_the_label_size(tmp_path):
    k = 5
    items = [_item("a", 32, 40, k, 1), _item("b", 32, 40, k, 2), _item("c", 24, 40, k, 3),
             _item("d", 16, 20, k, 4, label_size=(32, 40)), _item("e", 32, 40, k, 5)]  # fmt: skip
    meta = dataset_meta("folder", _folder(tmp_path, k))
    model = _pointwise(k)
    one = evaluate_model(model, _Items(items), meta, batch_size=1, progress=False)
    out = tmp_path / "preds"
    many = evaluate_model(model, _Items(items), meta, batch_size=4, save_predictions=out, progress=False)
    assert _scores(many) == _scores(one)
    assert cv2.imread(str(out / "d.png"), cv2.IMREAD_UNCHANGED).shape == (32, 40)  # the label's size


def _folder(root: Path, num_classes: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"class{i}\n" for i in range(num_classes)))
    return root


class _SidesModel(nn.Module):
    """LIP logits: left arm (14) on the left half of any input, right arm (15) on the right half.

    Mirror-equivariant with the left/right swap, so flip test-time augmentation must keep its prediction exactly.
    """

    def forward(self, x):
        logits = x.new_zeros(x.shape[0], 20, *x.shape[-2:])
        half = x.shape[-1] // 2
        logits[:, 14, :, :half] = 5
        logits[:, 15, :, half:] = 5
        return logits


def test_lip_flip_swaps_left_and_right_classes():
    lip = dataset_meta("lip")
    assert (14, 15) in lip.flip_pairs
    label = torch.full((24, 32), 14)
    label[:, 16:] = 15
    data = _Items([{"image": torch.zeros(3, 24, 32, dtype=torch.uint8), "label": label, "name": "p", "path": "p"}])
    swapped = evaluate_model(_SidesModel(), data, lip, flip=True, progress=False)
    assert swapped["mIoU"] == 1.0 and swapped["per_class"]["left-arm"]["iou"] == 1.0
    no_pairs = type(lip)(lip.name, lip.classes, lip.palette, flip_pairs=())
    assert evaluate_model(_SidesModel(), data, no_pairs, flip=True, progress=False)["mIoU"] < 0.5


def test_saved_predictions_round_trip(tmp_path):
    model = _pointwise(TOY.num_classes)
    report = evaluate_model(model, _toy(), TOY, save_predictions=tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{sample['name']}.png" for sample in _toy()]
    saved = cv2.imread(str(tmp_path / files[0]), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint8 and saved.shape == (64, 96) and saved.max() < TOY.num_classes
    again = evaluate_predictions(tmp_path, _toy(), TOY, progress=False)
    assert _scores(again) == _scores(report)
    assert again["mode"] == "predictions" and again["num_images"] == 3


def test_cityscapes_label_ids_invert_the_train_id_table():
    train_ids = np.arange(19, dtype=np.uint8)
    label_ids = cityscapes_label_ids(train_ids)
    assert [CITYSCAPES_LABEL_TO_TRAIN[int(i)] for i in label_ids] == list(range(19))
    assert label_ids.tolist() == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert cityscapes_label_ids(np.array([255], np.uint8)).tolist() == [0]  # unlabeled: not evaluated


def _cityscapes_tree(root: Path, frames: int = 2) -> list[Path]:
    rng = np.random.default_rng(0)
    gts = []
    for i in range(frames):
        stem = f"testcity_000000_{i:06d}"
        image_path = root / "leftImg8bit/val/testcity" / f"{stem}_leftImg8bit.png"
        gt_path = root / "gtFine/val/testcity" / f"{stem}_gtFine_labelIds.png"
        for path in (image_path, gt_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image_path), rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
        gt = rng.integers(0, 34, (4, 8), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        cv2.imwrite(str(gt_path), gt)
        gts.append(gt_path)
    return gts


def test_cityscapes_label_ids_are_what_the_official_evaluation_reads(tmp_path, monkeypatch):
    cs_eval = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    gts = _cityscapes_tree(tmp_path / "cityscapes")
    meta = dataset_meta("cityscapes")
    data = build_dataset("cityscapes", tmp_path / "cityscapes", "val")
    out = tmp_path / "preds"
    report = evaluate_model(_pointwise(19), data, meta, save_predictions=out, progress=False)

    for sample in data:
        train_ids = cv2.imread(str(out / f"{sample['name']}.png"), cv2.IMREAD_UNCHANGED)
        label_ids = cv2.imread(str(out / LABEL_IDS_DIR / f"{sample['name']}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(np.vectorize(CITYSCAPES_LABEL_TO_TRAIN.get)(label_ids), train_ids)

    args = cs_eval.args
    settings = {"evalInstLevelScore": False, "evalPixelAccuracy": False, "JSONOutput": False, "quiet": True,
                "colorized": False, "predictionPath": str(out / LABEL_IDS_DIR), "predictionWalk": None}  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setattr(args, name, value)
    predictions = [cs_eval.getPrediction(args, str(gt)) for gt in gts]  # the official file matching
    official = cs_eval.evaluateImgLists(predictions, [str(gt) for gt in gts], args)
    assert report["mIoU"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    for name, scores in report["per_class"].items():
        theirs = official["classScores"][name]
        assert (scores["iou"] is None) if math.isnan(theirs) else scores["iou"] == pytest.approx(theirs, abs=1e-9)


@pytest.fixture
def saved(tmp_path):
    evaluate_model(_pointwise(TOY.num_classes), _toy(), TOY, save_predictions=tmp_path, progress=False)
    return tmp_path


def test_missing_predictions_are_listed(saved):
    names = [sample["name"] for sample in _toy()]
    for name in names[:2]:
        (saved / f"{name}.png").unlink()
    with pytest.raises(SegrefineError, match=f"2 of 3 images have no prediction.*{names[0]}, {names[1]}"):
        evaluate_predictions(saved, _toy(), TOY, progress=False)


@pytest.mark.parametrize(
    "content, match",
    [
        (np.zeros((64, 95), np.uint8), r"is 64×95 but its label is 64×96"),
        (np.full((64, 96), TOY.num_classes, np.uint8), rf"values {TOY.num_classes} outside the train ids 0\.\.8"),
        (np.zeros((64, 96, 3), np.uint8), "single-channel"),
    ],
    ids=["wrong-size", "out-of-range", "colour"],
)
def test_bad_prediction_file_is_named(saved, content, match):
    bad = saved / f"{_toy()[1]['name']}.png"
    cv2.imwrite(str(bad), content)
    with pytest.raises(SegrefineError, match=f"prediction file {bad} .*{match}"):
        evaluate_predictions(saved, _toy(), TOY, workers=1, progress=False)


def test_ignore_value_in_a_prediction_counts_as_a_miss(saved):
    first = _toy()[0]["name"]
    cv2.imwrite(str(saved / f"{first}.png"), np.full((64, 96), 255, np.uint8))
    reference = SegmentationMetrics(TOY.num_classes)
    for sample in _toy():
        pred = cv2.imread(str(saved / f"{sample['name']}.png"), cv2.IMREAD_UNCHANGED)
        reference.update(torch.from_numpy(pred).long(), sample["label"])
    report = evaluate_predictions(saved, _toy(), TOY, progress=False)
    assert _scores(report) == summary(reference.compute(), TOY.classes)
    assert reference.compute().confusion.sum() < 3 * 64 * 96  # the first image's pixels matched no class


def test_class_count_mismatch_names_both_numbers():
    model = _pointwise(19)
    model.config = SimpleNamespace(num_classes=19)
    with pytest.raises(SegrefineError, match=r"predicts 19 classes but dataset toy has 9"):
        evaluate_model(model, _toy(), TOY, progress=False)


class _Broken(_Items):
    def __getitem__(self, index):
        raise SegrefineError("label file x.png is broken")


def test_a_dataset_error_in_a_worker_stays_one_line():
    with pytest.raises(SegrefineError) as info:
        evaluate_model(_pointwise(3), _Broken([None, None]), TOY, workers=1, progress=False)
    assert str(info.value) == "label file x.png is broken"
