"""End-to-end speed of `segrefine predict` on a folder of images: decoding, inference and the three PNGs written per
image (label, colour, overlay), through the same `Predictor.predict_files` job as the command, for each backend.

The folder holds toy street scenes of one size (or give --folder with your own images). Each backend predicts the
folder once untimed (warm-up, which also writes the outputs), then once timed with `overwrite=True`.

    python benchmarks/predict_folder.py --onnx lite-512.onnx --onnx lite-512-int8.onnx   # exports of `segrefine export`
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import segrefine
from segrefine.data.toy import render


def toy_folder(folder: Path, images: int, size: tuple[int, int]) -> None:
    """`images` PNG street scenes of `size` (H, W) in `folder`."""
    rng = np.random.default_rng(0)
    for i in range(images):
        image, _ = render(rng, *size)
        cv2.imwrite(str(folder / f"frame{i:03d}.png"), image[:, :, ::-1])


def seconds_per_image(predictor: segrefine.Predictor, images: Path, out: Path) -> float:
    predictor.predict_files(images, out)  # warm-up
    start = time.perf_counter()
    report = predictor.predict_files(images, out, overwrite=True)
    return (time.perf_counter() - start) / report.images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="PyTorch weights (default: the shipped model)")
    parser.add_argument("--onnx", action="append", default=[], help="an exported .onnx file to time as well (repeatable)")
    parser.add_argument("--folder", type=Path, default=None, help="images to predict (default: toy scenes)")
    parser.add_argument("--images", type=int, default=30, help="toy scenes to make")
    parser.add_argument("--size", default="512x1024", help="HxW of the toy scenes")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--short-side", type=int, default=None, help="as predict's --short-side (default: the model's)")
    parser.add_argument("--no-bf16", action="store_true", help="leave out bf16 (slow on CPUs without bf16 arithmetic)")
    parser.add_argument("--no-guided-filter", dest="guided_filter", action="store_false",
                        help="as predict's --no-guided-filter: the network's own labels")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {"torch fp32": dict(ref=args.weights)}
    runs |= {} if args.no_bf16 else {"torch bf16": dict(ref=args.weights, precision="bf16")}
    runs |= {f"onnxruntime {Path(path).name}": dict(ref=path) for path in args.onnx}
    runs = {name: {**settings, "short_side": args.short_side, "guided_filter": args.guided_filter}
            for name, settings in runs.items()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        images = args.folder
        if images is None:
            height, width = (int(v) for v in args.size.lower().split("x"))
            images = Path(tmp, "images")
            images.mkdir()
            toy_folder(images, args.images, (height, width))
        print("| backend | ms per image | images/s |\n|---|---:|---:|")
        for name, settings in runs.items():
            seconds = seconds_per_image(segrefine.load(**settings), images, Path(tmp, "out", name.replace(" ", "-")))
            print(f"| {name} | {1000 * seconds:.0f} | {1 / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
