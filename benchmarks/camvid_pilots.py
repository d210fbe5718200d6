"""Short pilot runs on CamVid that chose the `camvid-cpu` recipe: each row is the recipe with a few flags changed,
trained for a short schedule from scratch, then scored on val.

    python benchmarks/camvid_pilots.py --data-root ../shared/data/camvid            # all rows, 300 iterations each
    python benchmarks/camvid_pilots.py --data-root ../shared/data/camvid --rows enet-lr05 ce-lr05

Rows already in the results file are kept (delete a row to rerun it); the results file is
benchmarks/results/camvid-pilots.json: {"iters", "rows": [{"name", "flags", "mIoU", "boundary_mIoU", "aAcc",
"per_class", "images_per_s"}]}. About 5 minutes per row on a quiet 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "camvid-pilots.json"

# Flags on top of `--recipe camvid-cpu`; the recipe's own settings are class_weight enet, lr 0.05, ce.
ROWS: dict[str, list[str]] = {
    "ce-lr05": ["--class-weight", "none"],
    "enet-lr05": [],
    "enet-lr01": ["--lr", "0.01"],
    "ohem-lr05": ["--class-weight", "none", "--loss", "ohem"],
}


def run_row(name: str, flags: list[str], data_root: str, iters: int, runs: Path) -> dict:
    run = runs / f"pilot-{name}"
    if not (run / "eval.json").is_file():
        command = [
            sys.executable, "-m", "segrefine", "train", "--dataset", "camvid", "--recipe", "camvid-cpu",
            "--data-root", data_root, "--iters", str(iters), "--eval-every", str(iters), "--log-every", "50",
            "--workers", "1", "--out", str(run), *flags,
        ]  # fmt: skip
        if (run / "config.json").is_file():
            command = [sys.executable, "-m", "segrefine", "train", "--resume", "--out", str(run)]
        subprocess.run(command, check=True)
    report = json.loads((run / "eval.json").read_text())
    speeds = [json.loads(line).get("images_per_s") for line in (run / "log.jsonl").read_text().splitlines()]
    speeds = [s for s in speeds if s]
    return {
        "name": name, "flags": flags, "mIoU": report["mIoU"], "boundary_mIoU": report["boundary_mIoU"],
        "aAcc": report["aAcc"], "per_class": {k: v["iou"] for k, v in report["per_class"].items()},
        "images_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--runs", type=Path, default=Path("runs/pilots"), help="where the pilot run folders go")
    args = parser.parse_args()

    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"iters": args.iters, "rows": []}
    if results["iters"] != args.iters:
        sys.exit(f"{RESULTS} holds {results['iters']}-iteration rows; pass --iters {results['iters']} or move it away")
    done = {row["name"] for row in results["rows"]}
    for name in args.rows:
        if name in done:
            continue
        results["rows"].append(run_row(name, ROWS[name], args.data_root, args.iters, args.runs))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["rows"]:
        print(f"{row['name']:>10}  mIoU {100 * row['mIoU']:.1f}  boundary {100 * row['boundary_mIoU']:.1f}  {' '.join(row['flags'])}")


if __name__ == "__main__":
    main()
