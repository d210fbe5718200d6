"""Our IoUs agree with the official Cityscapes pixel-level evaluation on the same label-id PNGs."""

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segrefine.data.meta import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN
from segrefine.engine.metrics import SegmentationMetrics

cs_eval = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

LABEL_IDS = np.arange(34)
VOID_IDS = [i for i in LABEL_IDS if CITYSCAPES_LABEL_TO_TRAIN[i] == 255]
TRAIN_LUT = np.array([CITYSCAPES_LABEL_TO_TRAIN[i] for i in LABEL_IDS] + [255] * (256 - 34), np.uint8)
NEVER = {"bus": 28, "train": 31}  # absent from the ground truth; train is absent from the predictions too
ONLY_PREDICTED = 32  # motorcycle: predicted, never in the ground truth


def _paint_blobs(label: np.ndarray, ids, count: int, rng: np.random.Generator) -> None:
    h, w = label.shape
    for _ in range(count):
        value = int(rng.choice(ids))
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(2, w // 4)), int(rng.integers(2, h // 4)))
            cv2.ellipse(label, center, axes, float(rng.uniform(0, 180)), 0, 360, value, -1)
        else:
            corner = (center[0] + int(rng.integers(2, w // 3)), center[1] + int(rng.integers(2, h // 3)))
            cv2.rectangle(label, center, corner, value, -1)


def _prediction_for(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ground truth with wrong blobs painted over it, void ids included, and bus only on void ground truth."""
    pred = gt.copy()
    _paint_blobs(pred, [i for i in LABEL_IDS if i not in NEVER.values()], 8, rng)
    noise = rng.random(gt.shape) < 0.03
    pred[noise] = rng.choice(VOID_IDS, size=int(noise.sum()))
    on_void = np.isin(gt, VOID_IDS) & (rng.random(gt.shape) < 0.5)
    pred[on_void] = NEVER["bus"]
    return pred


def _write(path: Path, label: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label)
    return str(path)


def _official(predictions: list[str], ground_truths: list[str], monkeypatch) -> dict:
    args = cs_eval.args
    for name, value in {"evalInstLevelScore": False, "evalPixelAccuracy": False, "JSONOutput": False,
                        "quiet": True, "colorized": False}.items():
        monkeypatch.setattr(args, name, value)
    return cs_eval.evaluateImgLists(predictions, ground_truths, args)


def _ours(predictions: list[str], ground_truths: list[str]):
    metrics = SegmentationMetrics(len(CITYSCAPES_CLASSES))
    for pred_path, gt_path in zip(predictions, ground_truths):
        pred = TRAIN_LUT[cv2.imread(pred_path, cv2.IMREAD_UNCHANGED)]
        gt = TRAIN_LUT[cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)]
        metrics.update(torch.from_numpy(pred).long(), torch.from_numpy(gt).long())
    return metrics.compute()


def _assert_agree(official: dict, ours) -> None:
    for train_id, name in enumerate(CITYSCAPES_CLASSES):
        theirs = official["classScores"][name]
        if math.isnan(theirs):
            assert math.isnan(ours.iou[train_id]), name
        else:
            assert ours.iou[train_id] == pytest.approx(theirs, abs=1e-6), name
    assert ours.mIoU == pytest.approx(official["averageScoreClasses"], abs=1e-6)


def test_agrees_with_cityscapesscripts_on_generated_label_ids(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    predictions, ground_truths = [], []
    for i in range(3):
        stem = f"testcity_000000_{i:06d}"
        gt = np.full((60, 120), int(rng.choice(VOID_IDS)), np.uint8)
        _paint_blobs(gt, [i for i in LABEL_IDS if i not in (*NEVER.values(), ONLY_PREDICTED)], 30, rng)
        pred = _prediction_for(gt, rng)
        pred[:5, :5] = ONLY_PREDICTED
        gt[:5, :5] = 7  # road, so that the motorcycle pixels count
        ground_truths.append(_write(tmp_path / "gtFine/val/testcity" / f"{stem}_gtFine_labelIds.png", gt))
        predictions.append(_write(tmp_path / "results" / f"{stem}_pred.png", pred))

    official = _official(predictions, ground_truths, monkeypatch)
    ours = _ours(predictions, ground_truths)
    _assert_agree(official, ours)
    # The generated data exercises every case: NaN classes, a predicted-only class, void predictions.
    assert math.isnan(ours.iou[CITYSCAPES_CLASSES.index("train")])
    assert math.isnan(ours.iou[CITYSCAPES_CLASSES.index("bus")])
    assert ours.iou[CITYSCAPES_CLASSES.index("motorcycle")] == 0.0
    assert 0.3 < ours.mIoU < 0.95


def test_agrees_with_cityscapesscripts_on_a_real_frame(shared_data, tmp_path, monkeypatch):
    gt_paths = sorted((shared_data / "cityscapes-mini/gtFine/val").glob("*/*_gtFine_labelIds.png"))
    assert gt_paths
    rng = np.random.default_rng(1)
    predictions = []
    for gt_path in gt_paths:
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED)
        stem = gt_path.name.removesuffix("_gtFine_labelIds.png")
        predictions.append(_write(tmp_path / f"{stem}_pred.png", _prediction_for(gt, rng)))
    ground_truths = [str(p) for p in gt_paths]
    _assert_agree(_official(predictions, ground_truths, monkeypatch), _ours(predictions, ground_truths))
