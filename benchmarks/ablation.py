"""Ablation on CamVid: every row is one switch setting of `lite` (or one training ingredient), trained with the same
short schedule and seeds, then scored on val and, with --shared, on other cameras' frames.

    python benchmarks/ablation.py --data-root ../shared/data/camvid                 # every row, every seed
    python benchmarks/ablation.py --data-root ../shared/data/camvid --rows srm-bilinear srm-full --seeds 0
    python benchmarks/ablation.py --data-root ../shared/data/camvid --time         # (re)measure latency, quietly
    # the GPU schedule of ablation-camvid-gpu.json (benchmarks/gpu_camera.sh runs it): full frames, four at once
    python benchmarks/ablation.py --data-root CAMVID --shared SHARED --backbone runs/train/camvid-cpu \
        --rows photometric-none photometric-camera photometric-camera-scale2 photometric-camera-scale2-srm-bilinear \
        --iters 300 --crop 360x480 --batch-size 16 --jobs 4 --workers 3 --results benchmarks/results/ablation-camvid-gpu.json
    # IBN-a on the shipped recipe, beside the rows of that file (same schedule and backbone)
    ... --rows photometric-camera-scale2-ibn --iters 300 --crop 360x480 --batch-size 16 --jobs 3 --workers 4 \
        --results benchmarks/results/ablation-camvid-gpu.json
    # IBN-a against the same recipe on this schedule, in fp32 (six paired seeds: 70 minutes on 2 AVX-512 cores)
    python benchmarks/ablation.py --data-root CAMVID --shared SHARED --no-amp --seeds 0 1 2 3 4 5 --device cpu \
        --rows photometric-camera-scale2 photometric-camera-scale2-ibn --results benchmarks/results/ablation-camvid-ibn.json

The schedule fits a 2-core CPU: 300 iterations of batch 8, 160×160 crops of the full-resolution frames (scale
0.5–1.5), lr 0.02, bf16 autocast (`--no-amp` where the CPU has no fast bf16), ENet class weights, poly lr. Every row starts from the same backbone: by default the backbone of the
shipped `lite-camvid` model (standing in for the ImageNet initialisation of the papers, which cannot be downloaded
here), with the decoder, CRM, SRM and memory trained from scratch; `--backbone none` trains everything from scratch.
`--backbone` also takes any weights reference (a run folder, a Hub id), whose backbone is used. Evaluation is on
the val frames at their full 360×480, on the GPU when there is one (latency always on the CPU).

With `--shared ../shared/data` each row is also scored across cameras (benchmarks/cross_camera.py): the mIoU of
every other camera's labelled frames (CamVid classes, cityscapes:camvid class map) and the share of the street
photo's asphalt labelled Road. The two rows of each of PAIRS (the camera recipe with srm=full and srm=bilinear; with
and without IBN-a) get six seeds, and their per-seed differences a 95% t interval.

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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from segrefine.data import build_dataset, dataset_meta
from segrefine.engine.evaluate import evaluate_model
from segrefine.engine.inference import InferenceOptions
from segrefine.hub import build_model, load_model
from segrefine.models import ModelConfig
from segrefine.hub.flops import count_flops

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from cross_camera import other_camera_scores as other_cameras  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ablation-camvid.json"
DEFAULTS = {
    "srm": "full", "srm_kernel": 3, "srm_mask": "softmax", "srm_fusion": False, "srm_local": False, "crm": "attention",
    "memory": False, "ibn": False,
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
    # Instance-batch normalisation (IBN-a) in the first three backbone stages, alone and with the camera recipe.
    "photometric-none-ibn": {"photometric": "none", "ibn": True},
    "photometric-camera-ibn": {"photometric": "camera", "ibn": True},
    "photometric-camera-scale2-ibn": {"photometric": "camera", "scale": [0.5, 2.0], "ibn": True},
    # The SRM question for the camera recipe: the row above against the same training with bilinear upsampling.
    "photometric-camera-scale2-srm-bilinear": {"photometric": "camera", "scale": [0.5, 2.0], "srm": "bilinear"},
    "crm-off": {"crm": "off"},
    "crm-gate": {"crm": "gate"},
    "memory-on": {"memory": True},
}
SEEDS = {
    name: (0, 1, 2) if name.startswith(("srm-bilinear", "srm-flow", "srm-full", "photometric")) else (0, 1)
    for name in ROWS
}
# Each pair is compared seed by seed (six paired seeds: a 95% interval): the SRM question, and IBN-a.
PAIRS = (
    ("photometric-camera-scale2", "photometric-camera-scale2-srm-bilinear"),
    ("photometric-camera-scale2-ibn", "photometric-camera-scale2"),
)
SEEDS.update({name: tuple(range(6)) for pair in PAIRS for name in pair})
TRAIN_SETTINGS = ("photometric", "scale")  # row keys that are training settings, not network switches
SCHEDULE = {"iters": 300, "crop": [160, 160], "batch_size": 8, "lr": 0.02, "scale": [0.5, 1.5]}
TIGHT_BOUNDARY_PX = 3
TIMING_SIZE = (360, 480)
# Every row scores the network's own labels, as every row in the results was scored before the guided filter became
# the default, and other cameras' frames each at its own size (before test-time resizing to the training images'
# side became the default): rows stay comparable.
NETWORK = InferenceOptions(guided_filter=False)
NATIVE = InferenceOptions(short_side=0, guided_filter=False)


def switches(row: str) -> dict:
    return {**DEFAULTS, **{k: v for k, v in ROWS[row].items() if k not in TRAIN_SETTINGS}}


def train_settings(row: str) -> dict:
    """The row's training settings that differ from the schedule's."""
    return {k: v for k, v in ROWS[row].items() if k in TRAIN_SETTINGS}


def switch_flags(values: dict) -> list[str]:
    flags = ["--srm", values["srm"], "--srm-kernel", str(values["srm_kernel"]), "--srm-mask", values["srm_mask"]]
    flags.append("--srm-fusion" if values.get("srm_fusion") else "--no-srm-fusion")
    flags.append("--srm-local" if values.get("srm_local") else "--no-srm-local")
    flags.append("--ibn" if values.get("ibn") else "--no-ibn")
    return [*flags, "--crm", values["crm"], "--memory" if values["memory"] else "--no-memory"]


def backbone_file(reference: str, folder: Path) -> str:
    """`none`, a backbone .safetensors file as given, or the backbone of a weights reference saved alone (once)."""
    if reference == "none" or reference.endswith(".safetensors"):
        return reference
    path = folder / f"backbone-{Path(reference).name}.safetensors"
    if not path.is_file():
        model, _ = load_model(reference)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, path)
    return str(path)


def train_row(row: str, seed: int, schedule: dict, data_root: str, runs: Path, backbone: str, workers: int,
              log: bool) -> Path:
    """Train (or resume) one row's run; with `log`, its output goes to train.log in the run folder."""
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
            "--eval-every", "0", "--save-every", "100", "--log-every", "50", "--workers", str(workers),
            "--out", str(run), *switch_flags(switches(row)),
            *([] if schedule.get("amp") is None else ["--amp" if schedule["amp"] else "--no-amp"]),
        ]  # fmt: skip
    if not log:
        subprocess.run([sys.executable, "-m", "segrefine", *command], check=True)
        return run
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "train.log", "ab") as out:
        subprocess.run([sys.executable, "-m", "segrefine", *command], check=True, stdout=out, stderr=subprocess.STDOUT)
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


def score_row(row: str, seed: int, run: Path, schedule: dict, data_root: str, shared: Path | None, device: str) -> dict:
    model, config = load_model(run / "checkpoints" / "last")
    meta = dataset_meta("camvid")
    val = build_dataset("camvid", data_root, "val")
    report = evaluate_model(model, val, meta, options=NETWORK, device=device, progress=False)
    tight = TIGHT_BOUNDARY_PX / math.hypot(*TIMING_SIZE)
    tight_report = evaluate_model(model, val, meta, options=NETWORK, boundary_ratio=tight, device=device, progress=False)
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
        **({"cross_camera": other_cameras(str(run / "checkpoints" / "last"), shared, device, NATIVE)} if shared else {}),
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
    """Markdown table: mean ± half the range over seeds, per row; a column per other camera's set when scored."""
    thin = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist", "Fence")
    sets = sorted({k for r in rows for k, v in r.get("cross_camera", {}).items() if "mIoU" in v})
    photo = any("street-photo" in r.get("cross_camera", {}) for r in rows)
    columns = [f"{s} mIoU" for s in sets] + (["asphalt → Road", "sky band → Sky"] if photo else [])
    lines = [
        "| row | seeds | mIoU | boundary mIoU | boundary mIoU (3 px) | " + " | ".join(thin) + " | GMACs | ms |"
        + "".join(f" {c} |" for c in columns),
        "|---|---|---|---|---|" + "---|" * (len(thin) + 2 + len(columns)),
    ]

    def cell(values: list[float]) -> str:
        if not values:
            return ""
        mean, spread = statistics.fmean(values), (max(values) - min(values)) / 2
        return f"{100 * mean:.1f} ± {100 * spread:.1f}"

    for name in ROWS:
        group = [r for r in rows if r["row"] == name]
        if not group:
            continue
        scores = [cell([r[k] for r in group]) for k in ("mIoU", "boundary_mIoU", "boundary_mIoU_3px")]
        per_class = [cell([r["per_class"][c] for r in group]) for c in thin]
        scored = [r["cross_camera"] for r in group if "cross_camera" in r]
        cameras = [cell([c[s]["mIoU"] for c in scored if s in c]) for s in sets]
        if photo:
            shots = [c["street-photo"] for c in scored if "street-photo" in c]
            cameras += [cell([p["asphalt_road"] for p in shots]), cell([p["sky_band_sky"] for p in shots])]
        lines.append(
            f"| {name} | {len(group)} | " + " | ".join(scores + per_class)
            + f" | {group[0]['gmacs']:.2f} | {statistics.median(r['ms'] for r in group):.0f} |"
            + "".join(f" {c} |" for c in cameras)
        )
    return "\n".join(lines)


def crop_size(text: str) -> list[int]:
    """`H` (square) or `HxW`."""
    sides = [int(v) for v in text.lower().split("x")]
    return sides * 2 if len(sides) == 1 else sides


def run_rows(todo: list[tuple[str, int]], args: argparse.Namespace, schedule: dict, backbone: str,
             results: dict) -> list[str]:
    """Train `todo` in order, `args.jobs` at a time, scoring each as it finishes; what failed or was not started."""
    start = time.monotonic()

    def train(row: str, seed: int) -> Path | None:
        if args.deadline is not None and time.monotonic() - start > args.deadline:
            return None  # past the deadline: start nothing new
        return train_row(row, seed, schedule, args.data_root, args.runs, backbone, args.workers, log=args.jobs > 1)

    missed = []
    with ThreadPoolExecutor(args.jobs) as pool:  # runs the submissions in order
        futures = {pool.submit(train, row, seed): (row, seed) for row, seed in todo}
        for future in as_completed(futures):
            row, seed = futures[future]
            try:
                run = future.result()
            except subprocess.CalledProcessError:
                missed.append(f"{row} seed {seed} (failed; see {args.runs / f'{row}-seed{seed}'})")
                continue
            if run is None:
                missed.append(f"{row} seed {seed} (not started: past the deadline)")
                continue
            results["rows"].append(score_row(row, seed, run, schedule, args.data_root, args.shared, args.device))
            save_results(results, args.results)
    return missed


# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy dependency for eleven numbers).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def row_scores(row: dict) -> dict[str, float]:
    """The scores a paired comparison reports for one trained row."""
    scores = {"CamVid val mIoU": row["mIoU"], "CamVid val boundary mIoU": row["boundary_mIoU"]}
    for name, entry in row.get("cross_camera", {}).items():  # each set alone: they differ in size and camera
        if "mIoU" in entry:
            scores[f"{name} mIoU"] = entry["mIoU"]
            scores[f"{name} boundary mIoU"] = entry["boundary_mIoU"]
    return scores


def paired_differences(rows: list[dict], a: str, b: str) -> dict[str, tuple[float, float, int]]:
    """Score name -> (mean of a - b over the seeds both have, half-width of its 95% t interval, seeds)."""
    by_seed = {name: {r["seed"]: row_scores(r) for r in rows if r["row"] == name} for name in (a, b)}
    seeds = sorted(by_seed[a].keys() & by_seed[b].keys())
    if len(seeds) < 2:
        return {}
    out = {}
    for key in by_seed[a][seeds[0]]:
        diffs = [by_seed[a][s][key] - by_seed[b][s][key] for s in seeds if key in by_seed[b][s]]
        if len(diffs) >= 2:
            half = T_975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
            out[key] = (statistics.fmean(diffs), half, len(diffs))
    return out


def paired_table(rows: list[dict], a: str, b: str) -> str:
    diffs = paired_differences(rows, a, b)
    if not diffs:
        return ""
    lines = [f"Paired by seed, `{a}` minus `{b}`, points (95% t interval):", "",
             "| score | seeds | difference | 95% interval |", "|---|---|---|---|"]  # fmt: skip
    for key, (mean, half, n) in diffs.items():
        lines.append(f"| {key} | {n} | {100 * mean:+.2f} | [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, help="only these seeds (default: each row's own)")
    parser.add_argument("--iters", type=int, default=SCHEDULE["iters"])
    parser.add_argument("--crop", type=crop_size, default=SCHEDULE["crop"], help="training crop, H or HxW")
    parser.add_argument("--batch-size", type=int, default=SCHEDULE["batch_size"])
    parser.add_argument("--lr", type=float, default=SCHEDULE["lr"])
    parser.add_argument("--backbone", default="lite-camvid", help="a weights reference, none, or a .safetensors file")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"), help="where the run folders go")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--time", action="store_true", help="only remeasure the ms of every row already done")
    parser.add_argument("--shared", type=Path, help="also score each row on other cameras' frames in this folder")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (each logs to its run's train.log)")
    parser.add_argument("--workers", type=int, default=1, help="data-loading workers per training")
    parser.add_argument("--deadline", type=float, help="start no training after this many seconds")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction,
                        help="bf16 autocast in training (default: the recipe's, on; --no-amp on a CPU without bf16)")
    parser.add_argument("--device", default="auto", help="where rows are scored: auto (CUDA if available), cpu, cuda")
    args = parser.parse_args(argv)

    schedule = {**SCHEDULE, "iters": args.iters, "crop": args.crop, "batch_size": args.batch_size, "lr": args.lr,
                "backbone": args.backbone, **({} if args.amp is None else {"amp": args.amp})}  # fmt: skip
    results = load_results(args.results, schedule)
    missed = []
    if args.time:
        for row in results["rows"]:
            row["ms"] = latency_ms(row["switches"])
        save_results(results, args.results)
    else:
        backbone = backbone_file(args.backbone, args.runs)
        done = {(r["row"], r["seed"]) for r in results["rows"]}
        # Seed by seed, so that a partial run already holds every row once.
        todo = [
            (row, seed) for seed in range(max(len(SEEDS[r]) for r in args.rows)) for row in args.rows
            if seed in SEEDS[row] and (row, seed) not in done and (args.seeds is None or seed in args.seeds)
        ]  # fmt: skip
        missed = run_rows(todo, args, schedule, backbone, results)
    print(table(results["rows"]))
    for a, b in PAIRS:
        print(paired_table(results["rows"], a, b))
    if missed:
        sys.exit("not scored: " + "; ".join(missed))


if __name__ == "__main__":
    main()
