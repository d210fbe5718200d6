"""The Python API end to end: build, load, predict (arrays and whole folders), evaluate and train.

    python examples/python_api.py                      # the shipped lite-camvid model on examples/camvid-street.png
    python examples/python_api.py --weights runs/train/exp --images my_photos/ --out runs/api --device cpu

`--weights` takes what `segrefine predict --weights` takes: a training run folder, a checkpoint folder, a
.safetensors or .onnx file, a registry name or a Hub repo id owner/name[@revision]; without it the default model
that ships with segrefine is used. Only public names of `segrefine` are used here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import segrefine
from segrefine.imageio import IMAGE_SUFFIXES

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="weights reference, e.g. a training run folder (default: the shipped model)")
    parser.add_argument("--images", type=Path, default=HERE / "camvid-street.png", help="an image or a folder")
    parser.add_argument("--out", type=Path, default=Path("runs/api"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--train", action="store_true", help="also train a tiny model on the built-in toy scenes")
    args = parser.parse_args()

    # A network is an nn.Module; from_pretrained loads any weights reference strictly (safetensors only).
    # aux=False: the inference network, without the training-only auxiliary head (what `segrefine flops` counts).
    model = segrefine.build_model("lite", 19, srm="full", crm="attention", aux=False)
    print(f"lite with 19 classes: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    # Prediction: load once, then predict arrays, files, folders and videos.
    predictor = segrefine.load(args.weights, device=args.device)
    print(predictor.source)  # which model: name, training dataset, number of classes
    report = predictor.predict_files(args.images, args.out, save=("label", "color", "overlay"), overwrite=True)
    print(f"wrote {len(report.written)} files to {args.out}, {report.images} images, "
          f"{1000 * (report.seconds_per_image or 0):.0f} ms per image, {len(report.failed)} failed")  # fmt: skip

    # The first image (a folder is read recursively, as predict_files did): its share of each class.
    images = [args.images]
    if args.images.is_dir():
        images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if images:
        label = predictor.predict(images[0])  # H×W uint8 train ids (H×W×3 uint8 RGB arrays work too)
        share = np.bincount(label.ravel(), minlength=predictor.num_classes) / label.size
        for name, fraction in zip(predictor.classes, share):
            print(f"  {name:<16} {100 * fraction:5.1f}%")

    if args.train:
        # Training and evaluation take the same settings as the command line, as one TrainConfig.
        config = segrefine.TrainConfig.from_recipe("toy", iters=20, eval_every=0, out=str(args.out / "toy-run"))
        run = segrefine.train(config, overwrite=True)
        scores = segrefine.evaluate(run, "toy", dataset_options={"length": 8})
        print(f"toy run {run}: val mIoU {scores['mIoU']:.3f} (a fraction), boundary mIoU {scores['boundary_mIoU']:.3f}")


if __name__ == "__main__":
    main()
