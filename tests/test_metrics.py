import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segrefine.engine.metrics import (
    SegmentationMetrics,
    boundary_radius,
    boundary_region,
    summary,
)
from segrefine.errors import SegrefineError


def _scores(pred, target, num_classes, **kwargs):
    metrics = SegmentationMetrics(num_classes, **kwargs)
    metrics.update(torch.as_tensor(pred), torch.as_tensor(target))
    return metrics, metrics.compute()


def test_hand_computed_confusion_with_ignore_and_absent_class():
    # 255 and 7 (>= K) in the ground truth are dropped, whatever is predicted there; class 3 then appears nowhere.
    target = [[0, 0, 1, 255, 1], [1, 2, 2, 7, 1]]
    pred = [[0, 1, 1, 2, 1], [1, 2, 0, 3, 0]]
    metrics, r = _scores(pred, target, 4)
    expected = [[1, 1, 0, 0], [1, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert metrics.confusion.tolist() == expected
    assert r.confusion.tolist() == expected
    # gt pixels per class 2, 4, 2; predicted 3, 4, 1; true positives 1, 3, 1.
    assert r.iou[:3] == pytest.approx([1 / 4, 3 / 5, 1 / 2])
    assert math.isnan(r.iou[3]) and math.isnan(r.acc[3])
    assert r.acc[:3] == pytest.approx([1 / 2, 3 / 4, 1 / 2])
    assert r.mIoU == pytest.approx((1 / 4 + 3 / 5 + 1 / 2) / 3)
    assert r.mAcc == pytest.approx((1 / 2 + 3 / 4 + 1 / 2) / 3)
    assert r.aAcc == pytest.approx(5 / 8)
    assert r.fwIoU == pytest.approx((2 * 1 / 4 + 4 * 3 / 5 + 2 * 1 / 2) / 8)


def test_class_only_predicted_scores_zero_iou_and_nan_acc():
    _, r = _scores([[0, 1], [0, 0]], [[0, 0], [0, 0]], 3)
    assert r.iou[0] == pytest.approx(3 / 4) and r.iou[1] == 0.0 and math.isnan(r.iou[2])
    assert r.acc[0] == pytest.approx(3 / 4) and math.isnan(r.acc[1])
    assert r.mIoU == pytest.approx((3 / 4 + 0) / 2)
    assert r.mAcc == pytest.approx(3 / 4)


def test_void_prediction_counts_as_a_miss():
    # Cityscapes convention: a void prediction on a valid pixel is a false negative and nobody's false positive.
    metrics, r = _scores([[0, 255], [1, 9]], [[0, 0], [1, 1]], 2)
    assert metrics.confusion.tolist() == [[1, 0], [0, 1]]
    assert r.iou == pytest.approx((1 / 2, 1 / 2))
    assert r.acc == pytest.approx((1 / 2, 1 / 2))
    assert r.aAcc == pytest.approx(2 / 4)


def test_empty_accumulator_is_nan():
    r = SegmentationMetrics(3).compute()
    assert all(math.isnan(x) for x in (r.aAcc, r.mAcc, r.mIoU, r.fwIoU, r.boundary_mIoU))


def test_boundary_radius():
    assert boundary_radius(1024, 2048) == 46  # 0.02 * 2289.7
    assert boundary_radius(8, 8) == 1  # rounds to 0, clamped to 1
    assert boundary_radius(100, 0, ratio=0.1) == 10


def test_boundary_iou_hand_made():
    # 8×8 image, d = 1: a 4×4 square of class 1 (rows 2-5, cols 2-5), predicted one column to the right.
    target = torch.zeros(8, 8, dtype=torch.long)
    target[2:6, 2:6] = 1
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred[2:6, 3:7] = 1
    metrics, r = _scores(pred, target, 2)
    # Class 1: each boundary region is the square's 12-pixel ring; the rings share rows 2 and 5 of columns 3-5.
    # Class 0: gt = image frame (28) + ring around the square (20) = 48; pred = frame (28) + ring around the
    # shifted square without its 6 pixels on column 7 (14) = 42; shared = frame (28) + rows 1 and 6 of cols 2-6.
    assert metrics.boundary_counts.tolist() == [[38, 6], [48 + 42 - 38, 12 + 12 - 6]]
    assert r.boundary_iou == pytest.approx((38 / 52, 6 / 18))
    assert r.boundary_mIoU == pytest.approx((38 / 52 + 6 / 18) / 2)


def _reference_boundary_counts(pred: np.ndarray, target: np.ndarray, num_classes: int, d: int):
    """Per-class boundary regions the way Cheng et al. build them: mask minus its d-fold 3×3 erosion (zero border)."""
    valid = target < num_classes
    kernel = np.ones((3, 3), np.uint8)

    def region(mask):
        padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, kernel, iterations=d)[1:-1, 1:-1]
        return mask & ~eroded.astype(bool) & valid

    inter, union = [], []
    for c in range(num_classes):
        g, p = region(target == c), region(pred == c)
        inter.append(int((g & p).sum()))
        union.append(int((g | p).sum()))
    return [inter, union]


@pytest.mark.parametrize("d", [1, 2, 5])
def test_boundary_counts_match_per_class_erosion(d):
    gen = torch.Generator().manual_seed(d)
    k = 4
    for _ in range(3):
        target = torch.randint(0, k, (1, 1, 6, 8), generator=gen).float()
        target = torch.nn.functional.interpolate(target, size=(30, 41)).long()[0, 0]
        target[torch.rand(30, 41, generator=gen) < 0.05] = 255
        noise = torch.randint(0, k + 1, (30, 41), generator=gen)  # k is a void prediction
        pred = torch.where(torch.rand(30, 41, generator=gen) < 0.2, noise, target)
        ratio = d / math.hypot(30, 41)
        metrics = SegmentationMetrics(k, boundary_ratio=ratio)
        metrics.update(pred, target)
        expected = _reference_boundary_counts(pred.numpy(), target.numpy(), k, d)
        assert metrics.boundary_counts.tolist() == expected


def test_boundary_region_marks_edge_and_label_changes():
    labels = torch.zeros(7, 9, dtype=torch.long)
    labels[:, 6:] = 1
    region = boundary_region(labels, 1)
    expected = torch.zeros(7, 9, dtype=torch.bool)
    expected[[0, -1], :] = True
    expected[:, [0, -1]] = True
    expected[:, 5:7] = True
    assert torch.equal(region, expected)


def test_batched_equals_per_image():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (3, 17, 23), generator=gen)
    target[:, :3] = 255
    pred = torch.randint(0, 5, (3, 17, 23), generator=gen)
    batched = SegmentationMetrics(5)
    batched.update(pred, target)
    single = SegmentationMetrics(5)
    for p, t in zip(pred, target):
        single.update(p, t)
    assert torch.equal(batched.confusion, single.confusion)
    assert torch.equal(batched.boundary_counts, single.boundary_counts)
    assert batched.compute().iou == single.compute().iou


def test_update_rejects_mismatched_sizes_and_scores():
    metrics = SegmentationMetrics(3)
    with pytest.raises(SegrefineError, match="does not match"):
        metrics.update(torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long))
    with pytest.raises(TypeError):
        metrics.update(torch.zeros(4, 5), torch.zeros(4, 5, dtype=torch.long))


def test_summary_is_json_with_nulls():
    _, r = _scores([[0, 1], [0, 0]], [[0, 0], [0, 0]], 3)
    out = summary(r, ["road", "car", "sky"])
    text = json.dumps(out, allow_nan=False)
    assert set(out) == {"mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU", "per_class", "confusion"}
    assert out["confusion"] == [[3, 1, 0], [0, 0, 0], [0, 0, 0]]  # rows = ground truth
    assert out["per_class"]["sky"] == {"iou": None, "acc": None, "boundary_iou": None}
    assert out["per_class"]["car"]["iou"] == 0.0 and out["per_class"]["car"]["acc"] is None
    assert json.loads(text)["mIoU"] == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        summary(r, ["road"])


def _rank_data(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)
    target = torch.randint(0, 4, (2, 9, 11), generator=gen)
    target[:, 0] = 255
    return torch.randint(0, 4, (2, 9, 11), generator=gen), target


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics = SegmentationMetrics(4)
        metrics.update(*_rank_data(rank))
        metrics.reduce()
        torch.save({"confusion": metrics.confusion, "boundary": metrics.boundary_counts}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_reduce_sums_across_two_gloo_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = SegmentationMetrics(4)
    for rank in range(2):
        expected.update(*_rank_data(rank))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["confusion"], expected.confusion)
        assert torch.equal(got["boundary"], expected.boundary_counts)
    assert expected.confusion.sum() > 0


def test_reduce_without_process_group_is_a_no_op():
    metrics, _ = _scores([[0, 1]], [[0, 0]], 2)
    before = metrics.confusion.clone()
    assert metrics.reduce() is metrics and torch.equal(metrics.confusion, before)
