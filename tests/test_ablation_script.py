"""benchmarks/ablation.py end to end, two iterations per row on a tiny generated CamVid tree."""

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
FIELDS = {"row", "dataset", "switches", "seed", "iters", "crop", "mIoU", "boundary_mIoU", "boundary_mIoU_3px",
          "per_class", "params", "gmacs", "ms", "train_s"}  # fmt: skip


def _camvid(root: Path) -> Path:
    """Four training and two val frames of 64×96 with labels 0-10 and void (11)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(count):
            cv2.imwrite(str(root / split / f"f{i}.png"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
            label = np.repeat(np.arange(12, dtype=np.uint8), 8)[None].repeat(64, 0)  # vertical stripes of every id
            cv2.imwrite(str(root / f"{split}annot" / f"f{i}.png"), label)
    return root


def _other_camera(root: Path) -> Path:
    """A KITTI-layout folder of two frames (Cityscapes label ids) and a street photo, as ../shared/data holds them."""
    rng = np.random.default_rng(1)
    for folder in ("images", "labelIds"):
        (root / "kitti-like" / folder).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / "kitti-like" / "images" / f"k{i}.png"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        label = np.array([7, 8, 11, 21, 23, 26], np.uint8).repeat(16)[None].repeat(64, 0)
        cv2.imwrite(str(root / "kitti-like" / "labelIds" / f"k{i}.png"), label)
    (root / "images").mkdir()
    photo = rng.integers(0, 255, (512, 1024, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "images" / "street-cityscapes-512x1024.png"), photo)
    return root


def test_training_ingredient_rows_are_scored_across_cameras(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    results = tmp_path / "ablation.json"
    argv = ["--data-root", str(_camvid(tmp_path / "camvid")), "--rows", "photometric-camera-scale2",
            "--seeds", "0", "--iters", "2", "--crop", "64", "--backbone", "none", "--runs", str(tmp_path / "runs"),
            "--results", str(results), "--shared", str(_other_camera(tmp_path / "shared"))]  # fmt: skip
    ablation.main(argv)
    (row,) = json.loads(results.read_text())["rows"]
    assert row["settings"] == {"photometric": "camera", "scale": [0.5, 2.0]}
    train = json.loads((tmp_path / "runs" / "photometric-camera-scale2-seed0" / "config.json").read_text())["train"]
    assert train["photometric"] == "camera" and train["scale"] == [0.5, 2.0]
    cameras = row["cross_camera"]
    assert set(cameras) == {"kitti-like", "street-photo"} and cameras["kitti-like"]["images"] == 2
    assert 0 <= cameras["kitti-like"]["mIoU"] <= 1 and 0 <= cameras["street-photo"]["asphalt_road"] <= 1
    assert "| photometric-camera-scale2 | 1 |" in capsys.readouterr().out


def test_two_iteration_smoke_run_writes_resumable_rows(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    results = tmp_path / "ablation.json"
    argv = ["--data-root", str(_camvid(tmp_path / "camvid")), "--rows", "srm-bilinear", "srm-full-local",
            "--seeds", "0", "--iters", "2", "--crop", "64", "--backbone", "none", "--runs", str(tmp_path / "runs"),
            "--results", str(results)]  # fmt: skip
    ablation.main(argv)
    rows = json.loads(results.read_text())["rows"]
    assert [(r["row"], r["seed"]) for r in rows] == [("srm-bilinear", 0), ("srm-full-local", 0)]
    for row in rows:
        assert FIELDS <= row.keys() and row["iters"] == 2 and row["crop"] == [64, 64] and row["dataset"] == "camvid"
        assert 0 <= row["mIoU"] <= 1 and len(row["per_class"]) == 11 and row["gmacs"] > 0 and row["ms"] > 0
    assert rows[1]["switches"]["srm_local"] and rows[0]["switches"]["srm"] == "bilinear"
    assert rows[1]["gmacs"] > rows[0]["gmacs"]
    table = capsys.readouterr().out
    assert "| srm-bilinear | 1 |" in table and "| srm-full-local | 1 |" in table

    ablation.main(argv)  # done rows are kept, not trained again
    assert json.loads(results.read_text())["rows"] == rows
