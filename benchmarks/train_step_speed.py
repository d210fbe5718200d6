"""Seconds per training step of `lite` on this machine: fp32 vs bf16 autocast, contiguous vs channels-last.

    python benchmarks/train_step_speed.py                    # batch 8 at 256×256, 11 classes, the camvid-cpu setting
    python benchmarks/train_step_speed.py --size 360x480

Forward, loss (main + auxiliary head), backward and an SGD step on random data; the best of 3 steps after one warm-up.
Run it on a quiet machine: anything else on the cores changes the numbers.
"""

from __future__ import annotations

import argparse
import time

import torch

from segrefine.engine.losses import segmentation_loss
from segrefine import build_model


def step_seconds(model, optimizer, batch: int, size: tuple[int, int], bf16: bool, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    images = torch.randn(batch, 3, *size).to(memory_format=fmt)
    labels = torch.randint(0, model.config.num_classes, (batch, *size))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = segmentation_loss(model(images), labels)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="256x256", help="HxW")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    model = build_model("lite", 11).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    print(f"lite, batch {args.batch} at {size[0]}×{size[1]}, {torch.get_num_threads()} threads")
    for bf16 in (False, True):
        for channels_last in (False, True):
            seconds = step_seconds(model, optimizer, args.batch, size, bf16, channels_last)
            print(f"  {'bf16' if bf16 else 'fp32'} {'channels-last' if channels_last else 'contiguous   '}  {seconds:.2f} s/step")


if __name__ == "__main__":
    main()
