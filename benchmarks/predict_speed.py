"""Images per second of prediction (the `Predictor` behind `segrefine predict`) for one variant at one size.

The timed path is the whole per-image work of predict except file I/O: uint8 RGB in, normalisation, forward pass,
argmax, label map out as numpy. Weights are random (speed does not depend on them), 19 classes (Cityscapes); the
input is a toy street scene. Each batch size gets warm-up passes, then timed ones.

    python benchmarks/predict_speed.py                                  # lite, 512x1024, CPU, batch 1 and 4
    python benchmarks/predict_speed.py --device cuda --size 1024x2048 --batch-sizes 1,8
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from segrefine.data.meta import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from segrefine.data.toy import render
from segrefine.engine.device import resolve_device
from segrefine.engine.predictor import Predictor
from segrefine import build_model
from segrefine.models import VARIANTS


def images_per_second(predictor: Predictor, image: np.ndarray, batch_size: int, warmup: int, iters: int) -> float:
    batch = [image] * batch_size
    for _ in range(warmup):
        predictor.predict_batch(batch, batch_size=batch_size)
    start = time.perf_counter()
    for _ in range(iters):
        predictor.predict_batch(batch, batch_size=batch_size)  # ends with a device-to-host copy: synchronised
    return iters * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="lite", choices=VARIANTS)
    parser.add_argument("--size", default="512x1024", help="HxW")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per batch size")
    parser.add_argument("--iters", type=int, default=5, help="timed batches per batch size")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)
    model = build_model(variant=args.variant, num_classes=len(CITYSCAPES_CLASSES))
    config = {"model": model.config.to_dict(), "classes": CITYSCAPES_CLASSES, "palette": CITYSCAPES_PALETTE}
    predictor = Predictor(model.to(device), config, device)
    image, _ = render(np.random.default_rng(0), height, width)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{args.variant}, {height}x{width}, {device} ({where}), {torch.get_num_threads()} CPU threads "
          f"of {os.cpu_count()} cores, torch {torch.__version__}")  # fmt: skip
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        rate = images_per_second(predictor, image, batch_size, args.warmup, args.iters)
        print(f"batch {batch_size}: {rate:.2f} images/s ({1000 / rate:.0f} ms per image)")


if __name__ == "__main__":
    main()
