"""Ablation on CamVid: every row is one switch setting of `lite` (or one training ingredient), trained with the same
short schedule and seeds, then scored on val and, with --shared, on other cameras' frames.

    python benchmarks/ablation.py --data-root ../shared/data/camvid                 # every row, every seed
    python benchmarks/ablation.py --data-root ../shared/data/camvid --rows srm-bilinear srm-full --seeds 0
    python benchmarks/ablation.py --data-root ../shared/data/camvid --time         # (re)measure latency, quietly

The schedule fits a 2-core CPU: 300 iterations of batch 8, 160×160 crops of the full-resolution frames (scale
0.5–1.5), lr 0.02, bf16 autocast, ENet class weights, poly lr. Every row starts from the same backbone: by default the backbone of the
shipped `lite-camvid` model (standing in for the ImageNet initialisation of the papers, which cannot be downloaded
here), with the decoder, CRM, SRM and memory trained from scratch; `--backbone none` trains everything from scratch.
Evaluation is on the val frames at their full 360×480.

With `--shared ../shared/data` each row is also scored across cameras (benchmarks/cross_camera.py): the mIoU of
every other camera's labelled frames (CamVid classes, cityscapes:camvid class map) and the share of the street
photo's asphalt labelled Road.

Results go to benchmarks/results/ablation-camvid.json (`--results` to change it): {"schedule": {...}, "rows":
[{"row", "dataset", "switches", "seed", "iters", "crop", "mIoU", "boundary_mIoU", "boundary_mIoU_3px", "per_class",
"params", "gmacs", "ms", "train_s"}]}. Rows already there are kept (delete one to rerun it), an interrupted
training run resumes from its last checkpoint, and a results file made with another schedule is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from segrefine.data import build_dataset, dataset_meta
from segrefine.engine.evaluate import evaluate_model
from segrefine.hub import build_model, load_model
from segrefine.models import ModelConfig
from segrefine.models.flops import count_flops

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from cross_camera import other_camera_scores as other_cameras  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ablation-camvid.json"
DEFAULTS = {
    "srm": "full", "srm_kernel": 3, "srm_mask": "softmax", "srm_fusion": False, "srm_local": False, "crm": "attention",
    "memory": False,
}  # fmt: skip
# Each row changes the defaults above; the SRM rows get a third seed because their differences are the smallest.
ROWS: dict[str, dict] = {
    "srm-bilinear": {"srm": "bilinear"},
    "srm-flow": {"srm": "flow"},
    "srm-full": {},
    "srm-sigmoid": {"srm_mask": "sigmoid"},
    "srm-k5": {"srm_kernel": 5},
    # SFNet also aligns the coarser pyramid levels before the fusion; without it three of the four fused inputs
    # are plain bilinear upsamplings.
    "srm-full-fusion": {"srm_fusion": True},
    # Trained offsets form smooth, image-wide shifts larger inside regions than on boundaries
    # (benchmarks/srm_offsets.py): bounding them to one coarse cell keeps the module to alignment.
    "srm-full-local": {"srm_local": True},
    # Training ingredients for photos from other cameras (model switches at their defaults).
    "photometric-none": {"photometric": "none"},
    "photometric-camera": {"photometric": "camera"},
    "photometric-camera-scale2": {"photometric": "camera", "scale": [0.5, 2.0]},
    "crm-off": {"crm": "off"},
    "crm-gate": {"crm": "gate"},
    "memory-on": {"memory": True},
}
SEEDS = {
    name: (0, 1, 2) if name.startswith(("srm-bilinear", "srm-flow", "srm-full", "photometric")) else (0, 1)
    for name in ROWS
}
TRAIN_SETTINGS = ("photometric", "scale")  # row keys that are training settings, not network switches
SCHEDULE = {"iters": 300, "crop": [160, 160], "batch_size": 8, "lr": 0.02, "scale": [0.5, 1.5]}
TIGHT_BOUNDARY_PX = 3
TIMING_SIZE = (360, 480)


def switches(row: str) -> dict:
    return {**DEFAULTS, **{k: v for k, v in ROWS[row].items() if k not in TRAIN_SETTINGS}}


def train_settings(row: str) -> dict:
    """The row's training settings that differ from the schedule's."""
    return {k: v for k, v in ROWS[row].items() if k in TRAIN_SETTINGS}


def switch_flags(values: dict) -> list[str]:
    flags = ["--srm", values["srm"], "--srm-kernel", str(values["srm_kernel"]), "--srm-mask", values["srm_mask"]]
    flags.append("--srm-fusion" if values.get("srm_fusion") else "--no-srm-fusion")
    flags.append("--srm-local" if values.get("srm_local") else "--no-srm-local")
    return [*flags, "--crm", values["crm"], "--memory" if values["memory"] else "--no-memory"]


def shipped_backbone(folder: Path) -> Path:
    """The backbone of the shipped default model as a standalone .safetensors file (made once)."""
    path = folder / "backbone-lite-camvid.safetensors"
    if not path.is_file():
        model, _ = load_model("lite-camvid")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, path)
    return path


def train_row(row: str, seed: int, schedule: dict, data_root: str, runs: Path, backbone: str) -> Path:
    run = runs / f"{row}-seed{seed}"
    if (run / "eval.json").is_file():
        return run
    if (run / "config.json").is_file():
        command = ["train", "--resume", "--out", str(run)]
    else:
        settings = train_settings(row)
        command = [
            "train", "--dataset", "camvid", "--recipe", "camvid-cpu", "--data-root", data_root,
            "--iters", str(schedule["iters"]), "--crop", "{}x{}".format(*schedule["crop"]),
            "--batch-size", str(schedule["batch_size"]), "--lr", str(schedule["lr"]),
            "--scale", "{},{}".format(*settings.get("scale", schedule["scale"])),
            "--photometric", settings.get("photometric", "jitter"),
            "--pretrained-backbone", backbone, "--seed", str(seed),
            "--eval-every", "0", "--save-every", "100", "--log-every", "50", "--workers", "1", "--out", str(run),
            *switch_flags(switches(row)),
        ]  # fmt: skip
    subprocess.run([sys.executable, "-m", "segrefine", *command], check=True)
    return run


def latency_ms(values: dict, repeats: int = 5) -> float:
    """Median eval-mode forward time of `lite` with these switches at TIMING_SIZE, batch 1, fp32, on the CPU."""
    torch.manual_seed(0)
    model = build_model("lite", 11, aux=False, **values).eval()
    image = torch.randn(1, 3, *TIMING_SIZE)
    times = []
    with torch.inference_mode():
        model(image)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(image)
            times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 1)


def score_row(row: str, seed: int, run: Path, schedule: dict, data_root: str, shared: Path | None) -> dict:
    report = json.loads((run / "eval.json").read_text())
    model, config = load_model(run / "checkpoints" / "last")
    meta = dataset_meta("camvid")
    val = build_dataset("camvid", data_root, "val")
    tight = TIGHT_BOUNDARY_PX / math.hypot(*TIMING_SIZE)
    tight_report = evaluate_model(model, val, meta, boundary_ratio=tight, progress=False)
    flops = count_flops(replace(ModelConfig.from_dict(config["model"]), aux=False), TIMING_SIZE)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    times = [r["time"] for r in log if "time" in r]  # wall clock of each logged step: training time, not eval
    return {
        "row": row, "dataset": "camvid", "switches": switches(row), "seed": seed, "iters": schedule["iters"],
        "crop": schedule["crop"], "mIoU": report["mIoU"], "boundary_mIoU": report["boundary_mIoU"],
        "boundary_mIoU_3px": tight_report["boundary_mIoU"],
        "per_class": {name: c["iou"] for name, c in report["per_class"].items()},
        "params": flops.params, "gmacs": round(flops.gmacs, 3), "ms": latency_ms(switches(row)),
        "train_s": round(times[-1] - times[0], 1) if times else None, "settings": train_settings(row),
        **({"cross_camera": other_cameras(str(run / "checkpoints" / "last"), shared)} if shared else {}),
    }  # fmt: skip


def load_results(path: Path, schedule: dict) -> dict:
    if not path.is_file():
        return {"schedule": schedule, "timing": {"size": list(TIMING_SIZE), "threads": torch.get_num_threads()},
                "rows": []}  # fmt: skip
    results = json.loads(path.read_text())
    if results["schedule"] != schedule:
        sys.exit(f"{path} holds rows of another schedule ({results['schedule']}); move it away or match it")
    return results


def save_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def table(rows: list[dict]) -> str:
    """Markdown table: mean ± half the range over seeds, per row."""
    thin = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist", "Fence")
    lines = [
        "| row | seeds | mIoU | boundary mIoU | boundary mIoU (3 px) | " + " | ".join(thin)
        + " | GMACs | ms | other cameras mIoU | asphalt → Road |",
        "|---|---|---|---|---|" + "---|" * len(thin) + "---|---|---|---|",
    ]
    for name in ROWS:
        group = [r for r in rows if r["row"] == name]
        if not group:
            continue

        def cell(values: list[float]) -> str:
            mean, spread = statistics.fmean(values), (max(values) - min(values)) / 2
            return f"{100 * mean:.1f} ± {100 * spread:.1f}"

        scores = [cell([r[k] for r in group]) for k in ("mIoU", "boundary_mIoU", "boundary_mIoU_3px")]
        per_class = [cell([r["per_class"][c] for r in group]) for c in thin]
        scored = [r["cross_camera"] for r in group if "cross_camera" in r]
        cameras = [
            cell([statistics.fmean(e["mIoU"] for e in c.values() if "mIoU" in e) for c in scored]) if scored else "",
            cell([c["street-photo"]["asphalt_road"] for c in scored if "street-photo" in c]) if scored else "",
        ]
        lines.append(
            f"| {name} | {len(group)} | " + " | ".join(scores + per_class)
            + f" | {group[0]['gmacs']:.2f} | {statistics.median(r['ms'] for r in group):.0f} | "
            + " | ".join(cameras) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, help="only these seeds (default: each row's own)")
    parser.add_argument("--iters", type=int, default=SCHEDULE["iters"])
    parser.add_argument("--crop", type=int, default=SCHEDULE["crop"][0], help="square training crop side")
    parser.add_argument("--backbone", default="lite-camvid", help="lite-camvid, none, or a .safetensors file")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"), help="where the run folders go")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--time", action="store_true", help="only remeasure the ms of every row already done")
    parser.add_argument("--shared", type=Path, help="also score each row on other cameras' frames in this folder")
    args = parser.parse_args(argv)

    schedule = {**SCHEDULE, "iters": args.iters, "crop": [args.crop, args.crop], "backbone": args.backbone}
    results = load_results(args.results, schedule)
    if args.time:
        for row in results["rows"]:
            row["ms"] = latency_ms(row["switches"])
        save_results(results, args.results)
    else:
        backbone = str(shipped_backbone(args.runs)) if args.backbone == "lite-camvid" else args.backbone
        done = {(r["row"], r["seed"]) for r in results["rows"]}
        # Seed by seed, so that a partial run already holds every row once.
        todo = [(row, seed) for seed in (0, 1, 2) for row in args.rows if seed in SEEDS[row]]
        for row, seed in todo:
            if (row, seed) in done or (args.seeds is not None and seed not in args.seeds):
                continue
            run = train_row(row, seed, schedule, args.data_root, args.runs, backbone)
            results["rows"].append(score_row(row, seed, run, schedule, args.data_root, args.shared))
            save_results(results, args.results)
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
