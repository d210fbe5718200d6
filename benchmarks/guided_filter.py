"""The guided filter of `eval` and `predict`: each model's scores with it (the default) and without it (the network's
own labels, `--no-guided-filter`), paired differences over seeds, and its cost.

    python benchmarks/guided_filter.py --camvid-root ../shared/data/camvid --shared ../shared/data \
        --weights lite-camvid --seeds runs/ablation/photometric-camera-scale2-seed{0,1,2,3,4,5}

Scores as benchmarks/cross_camera.py gives them (CamVid val, the other cameras' frames, the street photo), every image
at the model's own scale, whole image, single scale, fp32 on the CPU. `--weights` rows each get both scores, and one
more per `--fit-stride` (the filter's fits made on cells of that many input pixels instead of `FIT_STRIDE`'s); the
`--seeds` runs (checkpoints/last of each, one training seed each) give the paired difference, filter minus none, with
a 95% t interval. `--time` adds the filter's milliseconds per image beside the softmax it follows (run it alone).
Results go to benchmarks/results/guided-filter.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from segrefine.engine import guided
from segrefine.engine.guided import guided_probs
from segrefine.engine.inference import InferenceOptions
from segrefine.hub import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from ablation import paired_table  # noqa: E402
from cross_camera import model_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "guided-filter.json"
ROWS = {"guided filter": True, "network alone": False}
# Sizes timed: a 512×1024 street photo and a Cityscapes frame, each run at CamVid's 360-pixel side, with CamVid's
# 11 and Cityscapes' 19 classes.
TIMED = (((512, 1024), (360, 720), 11), ((1024, 2048), (360, 720), 19))


def both_scores(weights: str, camvid_root: Path, shared: Path, fit_strides: tuple[int, ...] = ()) -> dict[str, dict]:
    """`cross_camera.scores` of one model with and without the filter, and with the filter's fits on cells of each
    of `fit_strides` input pixels."""
    model, config = load_model(weights, "cpu")
    rows = {row: model_scores(model, config, camvid_root, shared, InferenceOptions(guided_filter=on))
            for row, on in ROWS.items()}  # fmt: skip
    shipped = guided.FIT_STRIDE
    try:
        for stride in fit_strides:
            guided.FIT_STRIDE = stride  # read by guided_probs at each call
            rows[f"guided filter, {stride}-pixel fit cells"] = model_scores(model, config, camvid_root, shared)
    finally:
        guided.FIT_STRIDE = shipped
    return rows


def ablation_rows(seed: int, scores: dict[str, dict]) -> list[dict]:
    """One seed's two rows in benchmarks/ablation.py's layout, for its paired table."""
    rows = []
    for row, row_scores in scores.items():
        val = row_scores["camvid-val"]
        cameras = {k: v for k, v in row_scores.items() if k != "camvid-val" and "mIoU" in v}
        rows.append({"row": row, "seed": seed, "mIoU": val["mIoU"], "boundary_mIoU": val["boundary_mIoU"],
                     "cross_camera": cameras})  # fmt: skip
    return rows


def filter_ms(repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median milliseconds of the softmax and of the filter on one image's probabilities, per timed size."""
    out = {}
    for (height, width), net_size, classes in TIMED:
        logits = torch.randn(1, classes, height, width)
        image = torch.randn(1, 3, height, width)
        times: dict[str, list[float]] = {"softmax": [], "guided filter": []}
        for _ in range(repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            probs = logits.softmax(1)
            middle = time.perf_counter()
            guided_probs(probs, image, net_size)
            times["softmax"].append(1000 * (middle - start))
            times["guided filter"].append(1000 * (time.perf_counter() - middle))
        out[f"{height}x{width}, {classes} classes"] = {k: round(statistics.median(v[1:]), 1) for k, v in times.items()}
    return out


def print_tables(results: dict) -> None:
    print("| model | row | CamVid val mIoU | boundary mIoU | Pole IoU | " + " | ".join(results["cameras"])
          + " | asphalt → Road | sky band → Sky |")
    for weights, scores in results["models"].items():
        for row, s in scores.items():
            cameras = " | ".join(f"{100 * s[name]['mIoU']:.1f}" for name in results["cameras"])
            photo, val = s.get("street-photo", {}), s["camvid-val"]
            print(f"| {weights} | {row} | {100 * val['mIoU']:.2f} | {100 * val['boundary_mIoU']:.2f} | "
                  f"{100 * val['per_class']['Pole']:.1f} | {cameras} | {100 * photo.get('asphalt_road', float('nan')):.1f} | "
                  f"{100 * photo.get('sky_band_sky', float('nan')):.1f} |")
    if results["seeds"]:
        rows = [r for seed, scores in enumerate(results["seeds"].values()) for r in ablation_rows(seed, scores)]
        print("\n" + paired_table(rows, *ROWS))
        photos = [s for s in results["seeds"].values() if "street-photo" in s["guided filter"]]
        if photos:
            bands = {row: statistics.fmean(s[row]["street-photo"]["sky_band_sky"] for s in photos) for row in ROWS}
            print("\nsky band → Sky, mean of the seeds: " + ", ".join(f"{row} {100 * v:.1f}%" for row, v in bands.items()))
    for size, ms in results.get("ms", {}).items():
        print(f"\n{size}: softmax {ms['softmax']} ms, guided filter {ms['guided filter']} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid-root", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True, help="folder of other cameras' labelled sets")
    parser.add_argument("--weights", nargs="*", default=["lite-camvid"], help="models scored with and without it")
    parser.add_argument("--seeds", nargs="*", type=Path, default=[], help="training runs that differ in seed only")
    parser.add_argument("--fit-stride", type=int, nargs="*", default=[], help="more rows for --weights: fits on cells "
                        f"of this many input pixels (the shipped filter: {guided.FIT_STRIDE})")
    parser.add_argument("--time", action="store_true", help="also time the filter (nothing else running)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.weights and not args.seeds:
        parser.error("give --weights or --seeds")
    results = {
        "models": {w: both_scores(w, args.camvid_root, args.shared, tuple(args.fit_stride)) for w in args.weights},
        "seeds": {str(run): both_scores(str(run / "checkpoints" / "last"), args.camvid_root, args.shared)
                  for run in args.seeds},
    }  # fmt: skip
    first = next(iter([*results["models"].values(), *results["seeds"].values()]))["guided filter"]
    results["cameras"] = [k for k, v in first.items() if k != "camvid-val" and "mIoU" in v]
    if args.time:
        results["ms"] = filter_ms()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print_tables(results)


if __name__ == "__main__":
    main()
