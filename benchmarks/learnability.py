"""Learnability benchmark: train `lite` on `toy` on the CPU within a wall-clock budget and print the val mIoU.

    python benchmarks/learnability.py --minutes 10

It times a few real training steps first, sizes the run (poly schedule) to fit the budget including the final
validation, trains through the same code path as `segrefine train`, and prints the measured time and mIoU.
Target (issue 3): at least 60% mIoU within 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from segrefine.data import dataset_meta
from segrefine.engine.config import resolve_config
from segrefine.engine.losses import segmentation_loss
from segrefine.engine.train import train
from segrefine import build_model


def seconds_per_step(crop: tuple[int, int], batch_size: int, num_classes: int, steps: int = 4) -> float:
    model = build_model(variant="lite", num_classes=num_classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch_size, 3, *crop), torch.randint(0, num_classes, (batch_size, *crop))
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = segmentation_loss(model(x), y)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(128, 128))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/learnability")
    args = parser.parse_args()

    num_classes = len(dataset_meta("toy").classes)
    per_step = seconds_per_step(tuple(args.crop), args.batch_size, num_classes)
    budget = args.minutes * 60 * 0.85  # headroom for start-up, data loading and the final validation
    iters = max(10, int(budget / per_step))
    print(f"{per_step:.3f} s per step measured → {iters} iterations for a {args.minutes:g}-minute budget", flush=True)

    config = resolve_config({}, {
        "dataset": "toy", "iters": iters, "batch_size": args.batch_size, "crop": tuple(args.crop), "eval_every": 0,
        "workers": args.workers, "seed": args.seed, "device": "cpu", "out": args.out, "log_every": 50,
    })
    start = time.perf_counter()
    run = train(config, overwrite=True)  # a new measurement replaces the last one
    minutes = (time.perf_counter() - start) / 60
    result = json.loads((Path(run) / "eval.json").read_text())
    print(f"lite on toy: {iters} iterations in {minutes:.1f} min on {torch.get_num_threads()} threads → "
          f"val mIoU {100 * result['mIoU']:.1f}% (mAcc {100 * result['mAcc']:.1f}%, aAcc {100 * result['aAcc']:.1f}%)")


if __name__ == "__main__":
    main()
