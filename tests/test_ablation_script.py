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
