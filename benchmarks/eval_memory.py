"""Memory and time of evaluation over N generated 1024×2048 images: metric accumulation alone, or the whole pipeline.

Metric accumulation (default): confusion matrix + boundary IoU over N generated (prediction, label) pairs. Peak RSS
after the first image and after the last one should be the same: accumulation keeps only K×(K+1) and 2×K counts,
whatever the number of images.

Pipeline (--pipeline): writes a Cityscapes-layout tree (leftImg8bit images, gtFine labelIds) and one train-id
prediction PNG per image into a temporary folder (in a child process, so that generating does not count), then runs
the real `segrefine.engine.evaluate.evaluate_predictions` over it (dataset, DataLoader, PNG decoding and checks,
metrics). Compare the peak RSS of --images 10 and --images 100: it should not grow with N. With glibc, it creeps
by a few tens of MiB anyway because the allocator's dynamic mmap threshold lets the large per-image buffers
fragment the heap; MALLOC_MMAP_THRESHOLD_=1048576 pins the threshold, and then the peak is flat.

    python benchmarks/eval_memory.py --images 10
    python benchmarks/eval_memory.py --images 100 --classes 171
    python benchmarks/eval_memory.py --pipeline --images 10
    python benchmarks/eval_memory.py --pipeline --images 100
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.meta import CITYSCAPES_PALETTE
from segrefine.data.cityscapes import label_ids as cityscapes_label_ids
from segrefine.engine.evaluate import evaluate_predictions
from segrefine.engine.metrics import SegmentationMetrics


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def make_pair(index: int, height: int, width: int, num_classes: int, device: torch.device):
    """A blocky street-like ground truth with an ignore band, and a prediction that is wrong in ~15% of its blocks."""
    gen = torch.Generator().manual_seed(index)
    coarse = torch.randint(0, num_classes, (1, 1, max(1, height // 128), max(1, width // 128)), generator=gen)
    target = F.interpolate(coarse.float(), size=(height, width), mode="nearest")[0, 0].long()
    target[: height // 16] = 255
    wrong = torch.rand(coarse.shape, generator=gen) < 0.15
    noisy = torch.where(wrong, torch.randint(0, num_classes, coarse.shape, generator=gen), coarse)
    # Shift the prediction by a few pixels so that boundaries disagree as well.
    pred = F.interpolate(noisy.float(), size=(height, width), mode="nearest")[0, 0].long().roll(3, dims=1)
    return pred.to(device), target.to(device)


def write_cityscapes_tree(root: Path, images: int, height: int, width: int) -> Path:
    """A Cityscapes val split of `images` frames (image, labelIds) under `root`, and train-id predictions; returns
    the prediction folder."""
    palette = np.array([*CITYSCAPES_PALETTE, *[(0, 0, 0)] * (256 - len(CITYSCAPES_PALETTE))], np.uint8)[:, ::-1]
    predictions = root / "predictions"
    for folder in (root / "leftImg8bit/val/benchcity", root / "gtFine/val/benchcity", predictions):
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(images):
        pred, target = make_pair(index, height, width, 19, torch.device("cpu"))
        target, pred = target.to(torch.uint8).numpy(), pred.to(torch.uint8).numpy()
        stem = f"benchcity_000000_{index:06d}"
        cv2.imwrite(str(root / f"leftImg8bit/val/benchcity/{stem}_leftImg8bit.png"), palette[target])  # BGR
        cv2.imwrite(str(root / f"gtFine/val/benchcity/{stem}_gtFine_labelIds.png"), cityscapes_label_ids(target))
        cv2.imwrite(str(predictions / f"{stem}_leftImg8bit.png"), pred)
    return predictions


def run_metrics(args: argparse.Namespace, device: torch.device, baseline: float) -> None:
    metrics = SegmentationMetrics(args.classes, boundary_ratio=None if args.no_boundary else 0.02)
    seconds = 0.0
    after_first = 0.0
    for index in range(args.images):
        pred, target = make_pair(index, args.height, args.width, args.classes, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        metrics.update(pred, target)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        if index == 0:
            after_first = peak_rss_mib()
    result = metrics.reduce().compute()

    print(f"images            {args.images} x {args.height}x{args.width}, K={args.classes}, device={device}, "
          f"threads={torch.get_num_threads()}, boundary={'off' if args.no_boundary else 'on'}")
    print(f"time per image    {1000 * seconds / args.images:.1f} ms (update only)")
    print(f"peak RSS          {baseline:.1f} MiB before, {after_first:.1f} MiB after 1 image, "
          f"{peak_rss_mib():.1f} MiB after {args.images}")
    if device.type == "cuda":
        print(f"peak CUDA memory  {torch.cuda.max_memory_allocated(device) / 2**20:.1f} MiB")
    print(f"mIoU {result.mIoU:.4f}  boundary mIoU {result.boundary_mIoU:.4f}  aAcc {result.aAcc:.4f}")


def run_pipeline(args: argparse.Namespace, device: torch.device) -> None:
    with tempfile.TemporaryDirectory(prefix="segrefine-eval-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        # A forked child writes the files: its memory does not count towards this process's peak RSS.
        writer = multiprocessing.get_context("fork").Process(
            target=write_cityscapes_tree, args=(root, args.images, args.height, args.width)
        )
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            sys.exit(f"generating the data failed (exit code {writer.exitcode})")
        generated = time.perf_counter() - start
        baseline = peak_rss_mib()

        start = time.perf_counter()
        dataset = build_dataset("cityscapes", root, "val")
        report = evaluate_predictions(
            root / "predictions", dataset, dataset_meta("cityscapes"), device=device, workers=args.workers,
            progress=False,
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start

    print(f"pipeline          evaluate_predictions on {report['num_images']} Cityscapes-layout images "
          f"{args.height}x{args.width}, device={device}, workers={args.workers}, threads={torch.get_num_threads()}")
    print(f"time              {generated:.1f} s generating, {1000 * seconds / args.images:.1f} ms per image evaluating")
    print(f"peak RSS          {baseline:.1f} MiB before evaluating, {peak_rss_mib():.1f} MiB after {args.images} images"
          + (" (this process only; workers are separate processes)" if args.workers else ""))
    if device.type == "cuda":
        print(f"peak CUDA memory  {torch.cuda.max_memory_allocated(device) / 2**20:.1f} MiB")
    print(f"mIoU {report['mIoU']:.4f}  boundary mIoU {report['boundary_mIoU']:.4f}  aAcc {report['aAcc']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=19, help="metrics only; the pipeline is Cityscapes (19)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-boundary", action="store_true", help="confusion matrix only (metrics only)")
    parser.add_argument("--pipeline", action="store_true", help="run evaluate_predictions on generated PNG files")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (pipeline only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.pipeline:
        run_pipeline(args, device)
    else:
        run_metrics(args, device, baseline=peak_rss_mib())  # baseline: the imports alone


if __name__ == "__main__":
    main()
