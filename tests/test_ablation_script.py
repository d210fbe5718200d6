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
    ablation.TIMING_SIZE = (64, 96)  # latency, FLOPs and the tight boundary at a smoke test's size
    results = tmp_path / "ablation.json"
    argv = ["--data-root", str(_camvid(tmp_path / "camvid")), "--rows", "photometric-camera-scale2",
            "--seeds", "0", "--iters", "2", "--crop", "64", "--batch-size", "2", "--backbone", "none", "--runs", str(tmp_path / "runs"),
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
    ablation.TIMING_SIZE = (64, 96)  # latency, FLOPs and the tight boundary at a smoke test's size
    results = tmp_path / "ablation.json"
    argv = ["--data-root", str(_camvid(tmp_path / "camvid")), "--rows", "srm-bilinear", "srm-full-local",
            "--seeds", "0", "--iters", "2", "--crop", "64", "--batch-size", "2", "--backbone", "none", "--runs", str(tmp_path / "runs"),
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


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_difference_is_the_mean_with_a_t_interval():
    ablation = _load(SCRIPT, "ablation")
    a, b = ablation.PAIRS[0]

    def row(name, seed, miou):
        return {"row": name, "seed": seed, "mIoU": miou, "boundary_mIoU": 0.5}

    rows = [row(a, s, 0.60 + d) for s, d in enumerate((0.01, 0.02, 0.03))] + [row(b, s, 0.60) for s in range(3)]
    rows.append(row(a, 7, 0.9))  # a seed without its pair is left out
    mean, half, seeds = ablation.paired_differences(rows, a, b)["CamVid val mIoU"]
    assert seeds == 3 and abs(mean - 0.02) < 1e-12
    assert abs(half - 4.303 * 0.01 / 3**0.5) < 1e-9  # t(0.975, 2 df) · sd / sqrt(n)
    assert "| CamVid val mIoU | 3 | +2.00 | [-0.48, +4.48] |" in ablation.paired_table(rows, a, b)
    assert "`" + a + "` minus `" + b + "`" in ablation.paired_table(rows, a, b)
    assert ablation.paired_table(rows[:1], a, b) == ""  # one seed: no interval
    assert ablation.crop_size("360x480") == [360, 480] and ablation.crop_size("64") == [64, 64]


def test_past_the_deadline_nothing_starts_and_the_rows_are_named(tmp_path, capsys):
    ablation = _load(SCRIPT, "ablation")
    argv = ["--data-root", str(_camvid(tmp_path / "camvid")), "--rows", "srm-bilinear", "--seeds", "0", "1",
            "--iters", "2", "--crop", "64", "--backbone", "none", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "ablation.json"), "--jobs", "2", "--deadline", "0"]  # fmt: skip
    try:
        ablation.main(argv)
    except SystemExit as e:
        assert "srm-bilinear seed 0 (not started: past the deadline)" in str(e.code)
    else:
        raise AssertionError("a run past its deadline must be reported")
    assert not (tmp_path / "runs" / "srm-bilinear-seed0").exists()


def test_device_transfer_splits_and_joins_a_run(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    device_data = _load(SCRIPT.parent / "device_data.py", "device_data")
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    tensors = {f"w{i}": torch.randn(8 + i, 16) for i in range(9)}
    save_file(tensors, run / device_data.WEIGHTS, metadata={"format": "pt"})
    for name in ("config.json", "log.jsonl", "eval.json"):
        (run / name).write_text(name)
    device_data.split(run, tmp_path / "out")
    parts = sorted((tmp_path / "out").glob("weights-*.safetensors"))
    assert len(parts) == device_data.PARTS
    sizes = [p.stat().st_size for p in parts]
    assert max(sizes) < 1.6 * min(sizes)  # balanced, so that none passes a per-file limit first
    device_data.join(tmp_path / "out", tmp_path / "back")
    back = load_file(tmp_path / "back" / device_data.WEIGHTS)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert (tmp_path / "back" / "log.jsonl").read_text() == "log.jsonl"
