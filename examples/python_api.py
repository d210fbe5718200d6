"""Segment an image with the Python API: load weights once, predict, save the colour map and the overlay.

    python examples/python_api.py                      # the shipped lite-camvid model on examples/camvid-street.png
    python examples/python_api.py --weights runs/train/exp --image my.jpg --out runs/api --device cpu

`--weights` takes what `segrefine predict --weights` takes: a training run folder, a checkpoint folder, a
.safetensors file (config.json beside it), a registry name or a Hub repo id owner/name[@revision]; without it the
default model that ships with segrefine is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import segrefine
from segrefine.engine.predictor import read_image, write_image

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="weights reference, e.g. a training run folder (default: the shipped model)")
    parser.add_argument("--image", type=Path, default=HERE / "camvid-street.png")
    parser.add_argument("--out", type=Path, default=Path("runs/api"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args()

    predictor = segrefine.load(args.weights, device=args.device)  # once; then predict as often as needed
    print(predictor.source)  # which model: name, training dataset, number of classes

    image = read_image(args.image)  # H×W×3 uint8 RGB; any such array works (OpenCV after BGR->RGB, np.asarray(PIL))
    label = predictor.predict(image)  # H×W uint8 train ids; predict(path) works too
    write_image(args.out / f"{args.image.stem}_color.png", predictor.colorize(label))
    write_image(args.out / f"{args.image.stem}_overlay.png", predictor.overlay(image, label, alpha=0.5))

    # Several images at once: same-size images share forward passes.
    mirrored = predictor.predict_batch([image, np.ascontiguousarray(image[:, ::-1])])[1]
    agreement = (label == mirrored[:, ::-1]).mean()

    share = np.bincount(label.ravel(), minlength=predictor.num_classes) / label.size
    print(f"{args.image}: {label.shape[1]}×{label.shape[0]}, classes from the checkpoint ({predictor.config.get('dataset', '?')})")
    for name, fraction in zip(predictor.classes, share):
        print(f"  {name:<16} {100 * fraction:5.1f}%")
    print(f"mirrored image agrees on {100 * agreement:.1f}% of pixels; wrote {args.out}/{args.image.stem}_*.png")


if __name__ == "__main__":
    main()
