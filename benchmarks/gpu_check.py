"""The CUDA paths in one short run, printing one table: bf16 AMP training through `segrefine train`, NCCL with
SyncBatchNorm under `torchrun --nproc-per-node 1`, `segrefine eval` on CUDA, and prediction throughput of `lite` at
1024×2048 (fp32, bf16, and torch.compile + bf16; channels-last). Needs a CUDA GPU; uses toy data and random weights,
so nothing is downloaded. A failing step is reported in its row and the others still run; the exit code is 1 then.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

TOY_TRAIN = ["--dataset", "toy", "--dataset-option", "length=64", "--dataset-option", "size=256x512"]
TRAIN_ITERS = 30
DDP_STEPS = 20
PREDICT_SIZE = (1024, 2048)
CLASSES = 19


def segrefine(*args: str) -> subprocess.CompletedProcess:
    """Run the segrefine command line of this checkout."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "segrefine", *args], capture_output=True, text=True, env=env)


def checked(result: subprocess.CompletedProcess) -> str:
    """stdout of a command that must succeed; its last stderr line otherwise."""
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no message)"]
        raise RuntimeError(f"exit {result.returncode}: {lines[-1]}")
    return result.stdout


def train(folder: Path) -> str:
    """A few dozen iterations of bf16 AMP training on CUDA through the CLI."""
    start = time.perf_counter()
    checked(segrefine(
        "train", *TOY_TRAIN, "--crop", "256x512", "--iters", str(TRAIN_ITERS), "--batch-size", "8", "--device", "cuda",
        "--amp", "--pretrained-backbone", "none", "--eval-every", "0", "--log-every", "10", "--workers", "2",
        "--out", str(folder / "run"),
    ))  # fmt: skip
    seconds = time.perf_counter() - start
    log = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    return f"{TRAIN_ITERS} iters, batch 8 at 256x512 in {seconds:.0f} s (with start-up); loss {losses[0]:.3f} → {losses[-1]:.3f}"


def ddp() -> str:
    """NCCL + SyncBatchNorm + DDP with bf16 autocast, in a torchrun child process."""
    out = checked(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", __file__, "--ddp-child"],
        capture_output=True, text=True,
    ))  # fmt: skip
    return out.strip().splitlines()[-1]


def ddp_child() -> None:
    """Body of the torchrun process: a few DDP steps of `lite` with SyncBatchNorm over NCCL."""
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from segrefine import build_model

    dist.init_process_group("nccl")
    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model(variant="lite", num_classes=CLASSES)).cuda()
    model = DistributedDataParallel(model.to(memory_format=torch.channels_last), device_ids=[rank])
    synced = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(4, 3, 256, 512, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, CLASSES, (4, 256, 512), device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(DDP_STEPS):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = model(images)
            # Every head in the loss: DDP refuses parameters that take no part in it.
            loss = F.cross_entropy(outputs["out"], labels) + 0.4 * F.cross_entropy(outputs["aux"], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    dist.barrier()
    print(f"backend {dist.get_backend()}, {synced} SyncBatchNorm layers, {DDP_STEPS} steps at 4x256x512: "
          f"{1000 * seconds / DDP_STEPS:.0f} ms per step, loss {loss.item():.3f}")  # fmt: skip
    dist.destroy_process_group()


def evaluate(folder: Path) -> str:
    """`segrefine eval` on CUDA with the weights just trained."""
    start = time.perf_counter()
    report = json.loads(checked(segrefine(
        "eval", "--dataset", "toy", "--dataset-option", "length=16", "--dataset-option", "size=512x1024",
        "--weights", str(folder / "run"), "--device", "cuda", "--workers", "2", "--json",
    )))  # fmt: skip
    return f"{report['num_images']} images at 512x1024 in {time.perf_counter() - start:.0f} s; mIoU {report['mIoU']:.3f}"


def predict_rates(warmup: int, iters: int) -> dict[str, str]:
    """Images per second of the Predictor (uint8 in, labels on the host out) at 1024x2048, batch 1."""
    from segrefine.data.meta import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from segrefine.data.toy import render
    from segrefine.engine.backends import Autocast
    from segrefine.engine.predictor import Predictor
    from segrefine import build_model

    image, _ = render(np.random.default_rng(0), *PREDICT_SIZE)
    device = torch.device("cuda")
    config = {"classes": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in CITYSCAPES_PALETTE]}
    variants: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
        "fp32": lambda m: m,
        "bf16": Autocast,
        "compile + bf16": lambda m: Autocast(torch.compile(m)),
    }
    rates = {}
    for name, wrap in variants.items():
        try:
            model = build_model(variant="lite", num_classes=CLASSES, aux=False).to(device).eval()
            model = model.to(memory_format=torch.channels_last)
            predictor = Predictor(wrap(model), {**config, "model": model.config.to_dict()}, device, batch_size=1)
            for _ in range(warmup):
                predictor.predict(image)
            start = time.perf_counter()
            for _ in range(iters):
                predictor.predict(image)  # ends with a device-to-host copy: synchronised
            rate = iters / (time.perf_counter() - start)
            rates[f"predict {name}"] = f"{rate:.1f} images/s ({1000 / rate:.0f} ms per image)"
        except Exception as e:  # noqa: BLE001 - a check script reports each failure and carries on
            rates[f"predict {name}"] = f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=5, help="untimed predictions per variant")
    parser.add_argument("--iters", type=int, default=20, help="timed predictions per variant")
    args = parser.parse_args()
    if args.ddp_child:
        ddp_child()
        return
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    rows: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, step in (("train bf16 AMP", lambda: train(Path(tmp))), ("torchrun NCCL SyncBatchNorm", ddp),
                           ("eval", lambda: evaluate(Path(tmp)))):  # fmt: skip
            try:
                rows[name] = step()
            except Exception as e:  # noqa: BLE001 - a check script reports each failure and carries on
                rows[name] = f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
            print(f"{name}: {rows[name]}", flush=True)
        rows.update(predict_rates(args.warmup, args.iters))
    name = torch.cuda.get_device_name()
    print(f"\n{name}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    print("| check | result |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value} |")
    sys.exit(1 if any(v.startswith("FAILED") for v in rows.values()) else 0)


if __name__ == "__main__":
    main()
