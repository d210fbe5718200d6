"""How CamVid models hold up on photos from other cameras: one table per model.

    python benchmarks/cross_camera.py --camvid-root ../shared/data/camvid --shared ../shared/data
    python benchmarks/cross_camera.py --weights lite-camvid runs/train/exp --camvid-root ... --shared ...

Columns, every score a fraction (mIoU, boundary mIoU) or a share of pixels:
- CamVid val (101 frames, CamVid's own camera);
- every labelled frame from another camera found under `--shared`: Cityscapes-layout folders (`leftImg8bit/val`)
  and KITTI-layout folders (`training/semantic` or `labelIds/`), scored in CamVid's 11 classes through the built-in
  cityscapes:camvid class map (`segrefine eval --class-map`), one column each;
- the street photo (`images/street-cityscapes-512x1024.png`): the share of its asphalt (rows 300-430, columns
  200-800) predicted Road, and of its sky band (rows 0-60, columns 480-640) predicted Sky.

Whole-image, single-scale, fp32 inference on the CPU, as `segrefine predict` and `segrefine eval` run by default:
each image resized to the short side of the model's training images (360 for CamVid), or at its own size with
`--short-side 0`, and the class boundaries snapped to the image's edges by the guided filter (the network's own labels
with `--no-guided-filter`; `--device auto` for a quick look on a GPU).
Results go to benchmarks/results/cross-camera.json (`--results`), keyed by weights reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from torch import nn

from segrefine import Predictor
from segrefine.data import build_dataset, dataset_meta
from segrefine.data.class_map import cross_taxonomy, load_class_map
from segrefine.engine.device import model_device, resolve_device
from segrefine.engine.evaluate import model_meta, evaluate_model
from segrefine.engine.inference import InferenceOptions, at_model_scale
from segrefine.hub import load_model

RESULTS = Path(__file__).resolve().parent / "results" / "cross-camera.json"
STREET_PHOTO = Path("images") / "street-cityscapes-512x1024.png"
ASPHALT = (slice(300, 430), slice(200, 800))  # rows, columns: all road in the street photo
SKY_BAND = (slice(0, 60), slice(480, 640))
CLASS_MAP = "cityscapes:camvid"


def other_cameras(shared: Path) -> dict[str, tuple[str, Path, str]]:
    """Column name -> (dataset adapter, root, split) for each labelled set from another camera under `shared`."""
    found = {}
    for folder in sorted(p for p in shared.iterdir() if p.is_dir()):
        if (folder / "leftImg8bit" / "val").is_dir():
            found[folder.name] = ("cityscapes", folder, "val")
        elif (folder / "training" / "semantic").is_dir() or (folder / "labelIds").is_dir():
            found[folder.name] = ("kitti", folder, "train")
    return found


def other_camera_scores(
    weights: str, shared: Path, device: str = "cpu", options: InferenceOptions = InferenceOptions()
) -> dict:
    """Each other-camera set under `shared` (mIoU, boundary mIoU, per class) and the street photo's shares."""
    model, config = load_model(weights, resolve_device(device))
    return model_other_camera_scores(model, config, shared, options)


def model_other_camera_scores(
    model: nn.Module, config: dict, shared: Path, options: InferenceOptions = InferenceOptions()
) -> dict:
    """`other_camera_scores` of a loaded model (its checkpoint `config`), on the model's device; `options` as
    `segrefine eval` takes them (by default the model's own scale, as there)."""
    row: dict = {}
    meta = model_meta(config)
    options = at_model_scale(options, config)
    for name, (dataset, root, split) in other_cameras(shared).items():
        labels = dataset_meta(dataset, root)
        report = evaluate_model(
            model, build_dataset(dataset, root, split), labels, options=options, progress=False,
            scoring=cross_taxonomy(load_class_map(CLASS_MAP), meta, labels),
        )  # fmt: skip
        row[name] = {
            "mIoU": report["mIoU"], "boundary_mIoU": report["boundary_mIoU"], "images": report["num_images"],
            "per_class": {c: s["iou"] for c, s in report["per_class"].items()},
        }  # fmt: skip
    photo = shared / STREET_PHOTO
    if photo.is_file():
        label = Predictor(model, config, model_device(model), options).predict(photo)
        road, sky = meta.classes.index("Road"), meta.classes.index("Sky")
        row["street-photo"] = {
            "asphalt_road": float(np.mean(label[ASPHALT] == road)),
            "sky_band_sky": float(np.mean(label[SKY_BAND] == sky)),
        }
    return row


def scores(weights: str, camvid_root: Path, shared: Path, device: str = "cpu", options: InferenceOptions = InferenceOptions()) -> dict:
    """One model's row: CamVid val, then each other-camera set and the street photo."""
    model, config = load_model(weights, resolve_device(device))
    return model_scores(model, config, camvid_root, shared, options)


def model_scores(
    model: nn.Module, config: dict, camvid_root: Path, shared: Path, options: InferenceOptions = InferenceOptions()
) -> dict:
    """`scores` of a loaded model (its checkpoint `config`), on the model's device."""
    options = at_model_scale(options, config)
    camvid = build_dataset("camvid", camvid_root, "val")
    report = evaluate_model(model, camvid, dataset_meta("camvid"), options=options, progress=False)
    val = {"mIoU": report["mIoU"], "boundary_mIoU": report["boundary_mIoU"], "images": report["num_images"],
           "per_class": {c: s["iou"] for c, s in report["per_class"].items()}}  # fmt: skip
    return {"camvid-val": val, **model_other_camera_scores(model, config, shared, options)}


def print_table(weights: str, row: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{weights}: across cameras (fractions)")
    for column in ("set", "images", "mIoU", "boundary mIoU"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, entry in row.items():
        if "mIoU" in entry:
            table.add_row(name, str(entry["images"]), f"{entry['mIoU']:.4f}", f"{entry['boundary_mIoU']:.4f}")
    if "street-photo" in row:
        photo = row["street-photo"]
        table.add_row("street photo: asphalt as Road", "1", f"{photo['asphalt_road']:.4f}", "")
        table.add_row("street photo: sky band as Sky", "1", f"{photo['sky_band_sky']:.4f}", "")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["lite-camvid"], help="weights references (default: shipped)")
    parser.add_argument("--camvid-root", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True, help="folder of other cameras' labelled sets")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu", help="cpu (the published figures), cuda or auto")
    parser.add_argument("--short-side", type=int, help="as `segrefine eval --short-side` (default: the model's own)")
    parser.add_argument("--no-guided-filter", dest="guided_filter", action="store_false",
                        help="as `segrefine eval --no-guided-filter`: the network's own labels")
    args = parser.parse_args()
    options = InferenceOptions(short_side=args.short_side, guided_filter=args.guided_filter)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for weights in args.weights:
        row = scores(weights, args.camvid_root, args.shared, args.device, options)
        flags = ([f"--short-side {args.short_side}"] if args.short_side is not None else []) + (
            [] if args.guided_filter else ["--no-guided-filter"])
        name = " ".join([weights, *flags])
        print_table(name, row)
        results[name] = row
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
